#!/usr/bin/env bash
# Soak test of the release `wshub` binary: thousands of clients connect, subscribe, publish
# and leave in churn for a few minutes (wshub-bench's `soak` scenario); then the server's
# memory, open file descriptors and threads must be back near where they were.
#
#   scripts/soak.sh                 2000 clients, 20 s warm-up, 150 s of churn
#   SOAK_CLIENTS=4000 SOAK_SECONDS=300 scripts/soak.sh
#
# Readings, from /proc/PID of the server and its /stats and /metrics:
#   start     right after the server is up, before any client
#   warm      after a 20 s warm-up of the same churn, once every client has left: the
#             allocator and the runtime have reached their working size
#   end       after the soak, once every client has left (bounded wait)
# It fails (exit 1) when, at the end, /stats still counts clients, wshub_connections is not
# 0, the open file descriptors are more than 4 above the start, the threads more than the
# warm reading, any soak session failed, or VmRSS is above warm + 25% + 8 MiB (memory the
# allocator keeps for reuse is fine; growth with the number of sessions is a leak).
# Not part of CI: it takes minutes. Figures go to BENCHMARKS.md ("Soak").
#
# Environment:
#   SOAK_CLIENTS      clients connected at once (default 2000)
#   SOAK_SECONDS      seconds of churn after the warm-up (default 150)
#   SOAK_ROOMS        rooms the clients pick from (default 50)
#   SOAK_PORT         the server's port (default 18480)
#   CARGO_TARGET_DIR  as usual for cargo
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

clients="${SOAK_CLIENTS:-2000}"
seconds="${SOAK_SECONDS:-150}"
rooms="${SOAK_ROOMS:-50}"
port="${SOAK_PORT:-18480}"
target="${CARGO_TARGET_DIR:-$ROOT/target}"

timeout 1200 cargo build --release -p wshub-server -p wshub-bench
ulimit -n "$(ulimit -Hn)"

log="$target/soak-server.log"
# Every client comes from 127.0.0.1: lift the bounds per client address.
WSHUB_LOG_LEVEL=warn "$target/release/wshub" --listen "127.0.0.1:$port" \
  --max-connections-per-ip 1000000 --max-http-connections-per-ip 1024 \
  --rate-limit-per-ip off >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

get() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read().decode())
EOF
}

for _ in $(seq 100); do
  get "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
get "http://127.0.0.1:$port/healthz" >/dev/null

# One reading: "rss_kib fds threads clients metric_connections".
reading() {
  local rss fds threads clients gauge
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$server/status")
  fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 | wc -l)
  clients=$(get "http://127.0.0.1:$port/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients"])')
  gauge=$(get "http://127.0.0.1:$port/metrics" | awk '$1 == "wshub_connections" {print $2}')
  echo "$rss $fds $threads $clients $gauge"
}

# Waits (at most 60 s) until the server counts no client.
settle() {
  for _ in $(seq 600); do
    [[ "$(get "http://127.0.0.1:$port/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients"])')" == 0 ]] && break
    sleep 0.1
  done
  sleep 2
}

bench() {
  timeout $(( $1 + 120 )) "$target/release/wshub-bench" --url "ws://127.0.0.1:$port/ws" \
    --server-pid "$server" --threads 2 --connect-concurrency 128 --deadline $(( $1 + 90 )) \
    soak --clients "$clients" --duration "$1" --rooms "$rooms"
}

read -r s_rss s_fds s_threads s_clients s_gauge <<<"$(reading)"
echo "== warm-up: $clients clients, 20 s"
bench 20 | tail -n 8
settle
read -r w_rss w_fds w_threads w_clients w_gauge <<<"$(reading)"

echo "== soak: $clients clients, $seconds s"
started=$(date +%s)
peak_rss=0
bench "$seconds" >"$target/soak-bench.log" 2>&1 &
load=$!
while kill -0 "$load" 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")
  (( rss > peak_rss )) && peak_rss=$rss
  sleep 1
done
wait "$load" || { echo "soak: the load generator failed"; tail -n 20 "$target/soak-bench.log"; exit 1; }
tail -n 8 "$target/soak-bench.log"
failed=$(awk '/failed sessions/ {print $3}' "$target/soak-bench.log")
settle
read -r e_rss e_fds e_threads e_clients e_gauge <<<"$(reading)"
took=$(( $(date +%s) - started ))

printf '\n%-8s %10s %6s %8s %8s %12s\n' "" "VmRSS KiB" "fds" "threads" "clients" "connections"
printf '%-8s %10s %6s %8s %8s %12s\n' start "$s_rss" "$s_fds" "$s_threads" "$s_clients" "$s_gauge"
printf '%-8s %10s %6s %8s %8s %12s\n' warm "$w_rss" "$w_fds" "$w_threads" "$w_clients" "$w_gauge"
printf '%-8s %10s %6s %8s %8s %12s\n' end "$e_rss" "$e_fds" "$e_threads" "$e_clients" "$e_gauge"
echo "peak VmRSS during the soak: $peak_rss KiB; soak phase took $took s"

problems=()
(( e_clients == 0 )) || problems+=("/stats still counts $e_clients clients")
[[ "$e_gauge" == 0 ]] || problems+=("wshub_connections is $e_gauge")
(( e_fds <= s_fds + 4 )) || problems+=("open fds $s_fds -> $e_fds")
(( e_threads <= w_threads )) || problems+=("threads $w_threads -> $e_threads")
(( e_rss <= w_rss + w_rss / 4 + 8192 )) || problems+=("VmRSS $w_rss -> $e_rss KiB")
[[ "${failed:-0}" == 0 ]] || problems+=("$failed soak sessions failed")
if (( ${#problems[@]} > 0 )); then
  printf 'soak: FAILED: %s\n' "${problems[@]}"
  exit 1
fi
echo "soak: OK (back to baseline)"
