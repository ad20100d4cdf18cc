#!/usr/bin/env bash
# The JavaScript client's tests, as CI runs them on a fresh machine (as root):
#   1. npm ci (playwright-core, ws, react, react-test-renderer, typescript: package-lock.json);
#   2. Debian's chromium when /usr/bin/chromium is missing (playwright cannot download its
#      own browser here);
#   3. the wshub server binary (cargo build; the page and client it serves are compiled in)
#      and the library's echo example (a plain hub, for the plain WebSocket client), and its
#      monitor, notifications and chat examples (their pages are checked in Chromium);
#   4. tsc against the declarations, then node --test: unit tests (fake WebSocket), tests
#      against the real server (one on a Redis backplane: needs redis-server) and the echo
#      hub, the React hooks, and the end-to-end tests in Chromium.
# Every test bounds its own waits; every server it starts listens on 127.0.0.1 and is
# killed by its `after` hook. Screenshots of failed e2e tests: clients/js/test-results/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "test.sh: $chromium is missing; install Debian's chromium or set CHROMIUM" >&2
    exit 1
  fi
fi
export CHROMIUM="$chromium"

(cd "$repo" && cargo build -p wshub-server --bin wshub \
  && cargo build -p wshub --example echo --example monitor --example notifications \
     --example chat)
export WSHUB_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/wshub"
export ECHO_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/examples/echo"

npm run --silent typecheck
# One file at a time: the e2e test restarts a server on a fixed port, and each file
# starts its own servers; the whole run stays well under a minute.
node --test --test-concurrency=1 --test-timeout=180000 \
  test/client.test.mjs test/websocket.test.mjs test/declarations.test.mjs \
  test/server.test.mjs test/websocket.server.test.mjs test/backplane.test.mjs \
  test/react.test.mjs test/e2e.test.mjs test/examples.e2e.test.mjs
