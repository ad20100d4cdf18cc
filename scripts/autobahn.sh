#!/usr/bin/env bash
# RFC 6455 conformance of the server side: runs the Autobahn TestSuite's fuzzing client
# (`wstest -m fuzzingclient`) against crates/wshub/examples/echo.rs and compares every case
# with autobahn/expected-results.json, so that a conformance regression fails the run.
#
#   scripts/autobahn.sh                 case groups 1 to 11 (what CI runs)
#   scripts/autobahn.sh 12 13           only the compression groups (permessage-deflate)
#   scripts/autobahn.sh --record [N..]  run, then merge the results into the expected file
#
# Reports (HTML per case, index.json) go to target/autobahn/servers/; the generated spec, the
# wstest log and the echo server's log to target/autobahn/. A summary table per group is
# printed (OK / NON-STRICT / INFORMATIONAL / UNIMPLEMENTED / FAILED, and closes that were not
# clean), then every case that differs from the expected results. The exit status is 1 on a
# regression: a case that was clean (behavior and behaviorClose OK or INFORMATIONAL) and is
# not now, or a case newly FAILED, NON-STRICT or closing uncleanly. Improvements are listed.
#
# Environment:
#   AUTOBAHN_DIR      the shared, ready-to-install TestSuite (default ../shared/autobahn
#                     beside the repository); when absent, scripts/autobahn-setup.sh installs
#                     the same pinned wstest (autobahn/requirements-py27.txt) itself
#   AUTOBAHN_HOME     where the Python 2.7 tree with wstest lives (~/.cache/autobahn-py27)
#   AUTOBAHN_TIMEOUT  seconds for the whole run, install and build included (default 1800;
#                     groups 1 to 11 take 1.5 to 3.5 minutes from a fresh clone; 12 and 13
#                     a second while deflate is declined, about 30 min once it is negotiated)
#   CARGO_TARGET_DIR  as usual for cargo
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

NAME=autobahn
# shellcheck source=scripts/autobahn-common.sh
. "$ROOT/scripts/autobahn-common.sh"
for arg in "$@"; do
  case "$arg" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
done
autobahn_args "$@"

out="$ROOT/target/autobahn"
reports="$out/servers"
expected="$ROOT/autobahn/expected-results.json"
mkdir -p "$out"
rm -rf "$reports"

server_pid=""
child_pid=""
# Runs a command under `timeout`, in the background and waited for, so that a signal to this
# script is handled at once (bash runs traps only between foreground commands).
bounded() {
  local secs=$1 rc=0
  shift
  timeout -k 10 "$secs" "$@" &
  child_pid=$!
  wait "$child_pid" || rc=$?
  child_pid=""
  return "$rc"
}
cleanup() {
  if [ -n "$child_pid" ]; then
    kill "$child_pid" 2>/dev/null || true   # timeout passes the signal on to its command
    wait "$child_pid" 2>/dev/null || true
  fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    # Bounded: the echo server stops on SIGTERM at once; SIGKILL it after 5 s if not.
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. wstest (Python 2.7): the shared installer if it is beside the repository, else ours.
autobahn_install

echo "autobahn: building examples/echo (release)"
left=$(remaining)
build_started=$SECONDS
bounded "$left" cargo build --release --quiet -p wshub --example echo
echo "autobahn: build took $(( SECONDS - build_started ))s"
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
echo_bin="$target_dir/release/examples/echo"
[ -x "$echo_bin" ] || { echo "autobahn: no binary at $echo_bin" >&2; exit 1; }

# Port 0: the kernel picks a free port and the example prints the address it bound.
server_log="$out/echo.log"
"$echo_bin" 127.0.0.1:0 >"$server_log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 100); do   # at most 10 s
  addr=$(sed -n 's|^echo: ws://\([^/]*\)/.*|\1|p' "$server_log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "autobahn: the echo server did not report its address; its log:" >&2
  cat "$server_log" >&2
  exit 1
fi
echo "autobahn: echo server (pid $server_pid) on ws://$addr/"

# 3. The fuzzing client, with a spec made for this run.
cases_json=$(autobahn_cases_json)
spec="$out/fuzzingclient.json"
cat >"$spec" <<EOF
{
  "options": {"failByDrop": false},
  "outdir": "$reports",
  "servers": [{"agent": "wshub", "url": "ws://$addr"}],
  "cases": $cases_json,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
wstest_log="$out/wstest.log"
echo "autobahn: running case groups ${groups[*]} (log: ${wstest_log#"$ROOT"/})"
started=$SECONDS
status=0
left=$(remaining)
bounded "$left" "${wstest[@]}" -m fuzzingclient -s "$spec" >"$wstest_log" 2>&1 || status=$?
echo "autobahn: wstest took $(( SECONDS - started ))s"
if (( status != 0 )); then
  if (( status == 124 || status == 137 )); then
    echo "autobahn: wstest did not finish within the run's budget (AUTOBAHN_TIMEOUT=${timeout_s}s)" >&2
  else
    echo "autobahn: wstest exited with status $status" >&2
  fi
  tail -n 30 "$wstest_log" >&2
  exit 1
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "autobahn: the echo server died during the run; its log:" >&2
  tail -n 30 "$server_log" >&2
  exit 1
fi

# 4. Summary and comparison with the recorded results.
compare=(python3 "$ROOT/scripts/autobahn_compare.py" "$reports/index.json" "$expected")
(( record )) && compare+=(--record)
echo "autobahn: reports in ${reports#"$ROOT"/}/index.html"
"${compare[@]}"
