#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails on any crash.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh 300              every target, 300 s each
#   scripts/fuzz.sh 30 token utf8_close   only these targets, 30 s each
#
# Installs cargo-fuzz (about a minute) when it is missing. The machine's stable toolchain
# is enough: cargo-fuzz needs nightly flags (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1
# unlocks on stable. The first build of the targets takes about 4 minutes (wshub-server and
# its JWT crypto are compiled with the sanitizer's instrumentation).
#
# Each target starts from the seed corpus in fuzz/corpus/<target>/ (read only) plus a
# working corpus kept in $FUZZ_WORK/<target>/, which grows from run to run and is never
# committed; add an input to the seed corpus by hand when it deserves to stay. A crash
# leaves its input in fuzz/artifacts/<target>/; reproduce it (from fuzz/) with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>
# and minimize it with `cargo fuzz tmin <target> <file>`.
#
# Environment:
#   FUZZ_WORK         working corpora (default target/fuzz-corpus)
#   FUZZ_TARGET_DIR   cargo's target directory for the fuzz build (default fuzz/target,
#                     or $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set)
#   FUZZ_JOBS         libFuzzer workers per target (default 1)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "fuzz.sh: seconds per target must be a positive integer, not '$seconds'" >&2
  exit 2
fi
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  timeout 900 cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}"
target_dir="${target_dir:-$ROOT/fuzz/target}"
work="${FUZZ_WORK:-$ROOT/target/fuzz-corpus}"
jobs="${FUZZ_JOBS:-1}"

cd fuzz
if (( $# > 0 )); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

timeout 1800 cargo fuzz build --target-dir "$target_dir"

extra=()
if (( jobs > 1 )); then
  extra=(-jobs="$jobs" -workers="$jobs")
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "corpus/$target" "artifacts/$target"
  echo "== $target: ${seconds} s"
  log="$work/$target.log"
  # The binary that `cargo fuzz build` made, run directly: `cargo fuzz run` would rebuild
  # (and spend the time budget compiling) whenever a source changed since the build.
  # -max_total_time bounds libFuzzer; the outer timeout bounds everything else (loading a
  # large working corpus). -rss_limit_mb catches runaway memory as a finding.
  if timeout $(( seconds + 120 )) "$target_dir/$triple/release/$target" \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" "${extra[@]}" \
      "$work/$target" "corpus/$target" >"$log" 2>&1; then
    # One line per target: executions, coverage and corpus size at the end.
    grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -n 1 || true
  else
    status=$?
    failed+=("$target")
    echo "!! $target failed (exit $status); the last lines of $log:"
    tail -n 40 "$log"
  fi
done

if (( ${#failed[@]} > 0 )); then
  echo "fuzz.sh: findings or failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no findings"
