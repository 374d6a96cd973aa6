#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on stable Rust and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the time given to each target; TARGETs default to every
# `[[bin]]` in fuzz/Cargo.toml. Corpora live in fuzz/corpus/TARGET, crashes in
# fuzz/artifacts/TARGET; checked-in seeds in fuzz/seeds/TARGET and a dictionary in
# fuzz/dicts/TARGET.dict are used when present. Exits non-zero when a target finds a
# crash.
#
# No nightly is needed: libFuzzer's coverage instrumentation comes from stable `-C`
# flags (`-Cpasses=sancov-module` and LLVM's sanitizer-coverage options), which is what
# `cargo fuzz build --sanitizer none` passes too. Set CARGO_TARGET_DIR to reuse a build
# (default: /work/target-fuzz when it exists, fuzz/target otherwise).
#
# Adding a target: put fuzz_targets/NAME.rs (`#![no_main]` + `libfuzzer_sys::fuzz_target!`)
# and a matching `[[bin]]` in Cargo.toml; this script picks it up by name.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${1:-60}"
shift || true
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^fabric-fuzz$')
fi

if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -d /work/target-fuzz ]]; then
        export CARGO_TARGET_DIR=/work/target-fuzz
    else
        export CARGO_TARGET_DIR="$here/target"
    fi
fi

# The flags `cargo fuzz build -s none` uses: coverage counters, comparison tracing, and
# `cfg(fuzzing)`; debug assertions stay on (see [profile.release] in Cargo.toml).
export RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"

# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (which are not
# linked with libFuzzer), as cargo-fuzz does.
triple="$(rustc -vV | sed -n 's/^host: //p')"
bins=()
for target in "${targets[@]}"; do
    bins+=(--bin "$target")
done
cargo build --release --locked --target "$triple" "${bins[@]}"

status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    # Seeds (checked in, read-only) and a dictionary, when the target has them.
    extra=()
    [[ -d "seeds/$target" ]] && extra+=("seeds/$target")
    [[ -f "dicts/$target.dict" ]] && extra=(-dict="dicts/$target.dict" "${extra[@]}")
    echo "== fuzzing $target for ${seconds}s"
    # -rss_limit_mb: the sandbox's engine reserves address space, not memory; libFuzzer
    # counts RSS only. -timeout: one input running longer than this is a hang.
    # -len_control=0: inputs up to -max_len (4096) from the start, so that wasm-smith
    # has bytes enough for modules with some body in a short run.
    if ! "$CARGO_TARGET_DIR/$triple/release/$target" \
        -max_total_time="$seconds" \
        -timeout=20 \
        -len_control=0 \
        -rss_limit_mb=4096 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" \
        "corpus/$target" "${extra[@]}"; then
        echo "== $target FAILED: see fuzz/artifacts/$target" >&2
        status=1
    fi
done
exit "$status"
