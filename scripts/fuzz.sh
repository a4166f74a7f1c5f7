#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 10; use e.g.
# FUZZ_SECONDS=3600 for a long run). Installs cargo-fuzz when missing. cargo-fuzz needs
# nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
#
# Every finding fails the run: a crash (panic, failed assertion, sanitizer report), an
# input that takes more than FUZZ_TIMEOUT seconds (default 10), more than FUZZ_RSS_LIMIT_MB
# of memory (default 2048; a single larger allocation counts too) or a leak. The run
# fails when libFuzzer exits non-zero or leaves any artifact (crash-*, oom-*, timeout-*,
# leak-*, ...) in fuzz/artifacts/<target>/; slow-unit-* files are only hints. Every target
# runs; the failures are listed at the end, one line per target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
timeout="${FUZZ_TIMEOUT:-10}"
rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failures=()
for target in $(cargo fuzz list); do
    echo "fuzz: $target for ${seconds}s"
    mkdir -p "artifacts/$target"
    # Artifacts older than this run are from earlier runs; only new ones are findings.
    touch "$logs/$target.start"
    status=0
    cargo fuzz run "$target" -- -max_total_time="$seconds" -timeout="$timeout" \
        -rss_limit_mb="$rss_limit_mb" >"$logs/$target.log" 2>&1 || status=$?
    grep -E "^Done|SUMMARY|panicked|ERROR: libFuzzer|==ERROR" "$logs/$target.log" || true
    found=()
    while IFS= read -r artifact; do
        found+=("$artifact")
    done < <(find "artifacts/$target" -maxdepth 1 -type f -newer "$logs/$target.start" ! -name 'slow-unit-*' | sort)
    if ((${#found[@]})); then
        for artifact in "${found[@]}"; do
            name="$(basename "$artifact")"
            case "$name" in
                crash-*) kind="crash" ;;
                oom-*) kind="out of memory" ;;
                timeout-*) kind="timeout" ;;
                leak-*) kind="memory leak" ;;
                *) kind="${name%%-*}" ;;
            esac
            echo "fuzz: FAILED: $target: $kind, input fuzz/$artifact (libFuzzer exit status $status)"
            failures+=("$target: $kind (fuzz/$artifact)")
        done
    elif ((status != 0)); then
        echo "fuzz: FAILED: $target: libFuzzer exited with status $status and no artifact; last lines:"
        tail -n 20 "$logs/$target.log"
        failures+=("$target: exit status $status")
    fi
done
if ((${#failures[@]})); then
    echo "fuzz: ${#failures[@]} finding(s):"
    printf 'fuzz:   %s\n' "${failures[@]}"
    echo "fuzz: reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>"
    exit 1
fi
echo "fuzz: all targets passed"
