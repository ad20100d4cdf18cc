#!/usr/bin/env bash
# Runs client.py, the Python client written from docs/PROTOCOL.md, against the real `wshub`
# binary, as CI does on a fresh machine:
#   1. a venv in target/python-venv with `websockets` from PyPI (Debian's python3-venv is
#      installed first when `python3 -m venv` is missing and we are root);
#   2. the wshub binary (cargo build; a no-op after `cargo test --workspace`);
#   3. the server on a free port of 127.0.0.1 (port 0, the bound address read from its first
#      line), with a throwaway API key;
#   4. client.py, bounded by `timeout`; then the server is stopped.
# Exits non-zero when any step of the client's check fails. About 5 s once built.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/python-venv"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2> /dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "test.sh: python3 -m venv failed; install python3-venv" >&2
      exit 1
    fi
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv > /dev/null
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

(cd "$repo" && cargo build -p wshub-server --bin wshub)

log="$(mktemp)"
api_key="python-example-$RANDOM$RANDOM"
WSHUB_API_KEY="$api_key" "$target/debug/wshub" --listen 127.0.0.1:0 --log-level warn > "$log" 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null || true; wait "$server" 2> /dev/null || true; rm -f "$log"' EXIT

# The server prints "wshub listening on ADDR: ..." once it accepts connections.
addr=""
for _ in $(seq 100); do
  addr="$(sed -n 's/^wshub listening on \([^:]*:[0-9]*\):.*/\1/p' "$log")"
  [ -n "$addr" ] && break
  kill -0 "$server" 2> /dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "test.sh: the server did not start:" >&2
  cat "$log" >&2
  exit 1
fi

timeout 60 "$venv/bin/python" "$here/client.py" \
  --url "ws://$addr/ws" --api "http://$addr" --api-key "$api_key"
