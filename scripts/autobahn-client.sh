#!/usr/bin/env bash
# RFC 6455 conformance of the Rust client: the Autobahn TestSuite's fuzzing server
# (wstest -m fuzzingserver) against crates/wshub-client/examples/autobahn.rs, which echoes
# every message of every case. Each case is compared with autobahn/expected-client-results.json
# by scripts/autobahn_compare.py (a regression fails the run).
#
#   scripts/autobahn-client.sh            # case groups 1 to 11
#   scripts/autobahn-client.sh 9          # some groups
#   scripts/autobahn-client.sh --record   # run, then record the results
#
# Installs wstest like scripts/autobahn.sh; bounded by AUTOBAHN_TIMEOUT seconds (1800).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

NAME=autobahn-client
# shellcheck source=scripts/autobahn-common.sh
. "$ROOT/scripts/autobahn-common.sh"
for arg in "$@"; do
  case "$arg" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
done
autobahn_args "$@"

out="$ROOT/target/autobahn"
reports="$out/clients"
expected="$ROOT/autobahn/expected-client-results.json"
mkdir -p "$out"
rm -rf "$reports"

wstest_pid=""
cleanup() {
  if [ -n "$wstest_pid" ] && kill -0 "$wstest_pid" 2>/dev/null; then
    kill "$wstest_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$wstest_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$wstest_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

autobahn_install

echo "autobahn-client: building the client example (release)"
timeout -k 10 "$(remaining)" cargo build --release --quiet -p wshub-client --example autobahn
client_bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/autobahn"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
spec="$out/fuzzingserver.json"
cat >"$spec" <<JSON
{"url": "ws://127.0.0.1:$port", "outdir": "$reports",
 "cases": $(autobahn_cases_json), "exclude-cases": [], "exclude-agent-cases": {}}
JSON
wstest_log="$out/wstest-server.log"
# --webport 0: no status page (it would take port 8080, which a developer's server may hold).
"${wstest[@]}" -m fuzzingserver --webport 0 -s "$spec" >"$wstest_log" 2>&1 &
wstest_pid=$!
for _ in $(seq 100); do   # at most 10 s for the fuzzing server to listen
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  kill -0 "$wstest_pid" 2>/dev/null || { cat "$wstest_log" >&2; exit 1; }
  sleep 0.1
done

echo "autobahn-client: running case groups ${groups[*]} against the fuzzing server on port $port"
started=$SECONDS
timeout -k 10 "$(remaining)" "$client_bin" "ws://127.0.0.1:$port" wshub-client
echo "autobahn-client: the run took $(( SECONDS - started ))s"
[ -f "$reports/index.json" ] || { echo "autobahn-client: no report written" >&2; tail -n 30 "$wstest_log" >&2; exit 1; }

compare=(python3 "$ROOT/scripts/autobahn_compare.py" --agent wshub-client "$reports/index.json" "$expected")
(( record )) && compare+=(--record)
echo "autobahn-client: reports in ${reports#"$ROOT"/}/index.html"
"${compare[@]}"
