#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ once, then runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]        # default 60 s per target
#
# Environment:
#   FUZZ_TARGETS="config verify"     run only these (default: every target, `cargo fuzz list`)
#   FUZZ_WORK_DIR=DIR                where the growing corpora live (default fuzz/.work, ignored
#                                    by git); the committed seeds in fuzz/corpus/<target>/ are
#                                    read but never written
#   CARGO_TARGET_DIR                 honoured as usual (default fuzz/target)
#
# Needs cargo-fuzz (installed here when missing). It runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1, which lets stable rustc take the -Z sanitizer flags cargo-fuzz passes.
# Exits non-zero when any target crashes, leaks, times out or runs out of memory; the input
# is then in fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it.
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
work="${FUZZ_WORK_DIR:-$root/fuzz/.work}"

# One build for every target; `cargo fuzz run` below then finds it up to date.
# -a: debug assertions and overflow checks on, so arithmetic overflow is a crash too.
cargo fuzz build -a

failed=()
for target in $targets; do
  mkdir -p "$work/$target" "$root/fuzz/artifacts/$target"
  args=(
    -max_total_time="$seconds"
    -timeout=10
    -rss_limit_mb=2048
    -max_len=16384
    -print_final_stats=1
  )
  if [ -f "dict/$target.dict" ]; then
    args+=(-dict="dict/$target.dict")
  fi
  echo "fuzz: $target for ${seconds}s" >&2
  # The first corpus folder receives new inputs; the committed seeds are only read.
  if ! cargo fuzz run -a "$target" "$work/$target" "corpus/$target" -- "${args[@]}"; then
    failed+=("$target")
    echo "fuzz: $target FAILED; inputs in fuzz/artifacts/$target/:" >&2
    ls -1 "$root/fuzz/artifacts/$target" >&2 || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash: $targets" >&2
