#!/usr/bin/env bash
# Issue 25: the crash test under the inbound benchmark's load. A release vouchmail takes
# SESSIONS sessions of MSG_LEN-octet messages to one mailbox (bench/inbound.sh's defaults),
# first with a new connection per message, then with connection reuse; once KILL_AFTER
# messages have their 250 it is killed with SIGKILL, restarted, and every acknowledged
# message must be in the mailbox exactly once (at most one a session stored without its
# 250: those in flight at the kill). The load and the checks run in the test process
# (crates/vouchmail/tests/process.rs, bench_sigkill_under_benchmark_load, release build).
# Prints what it saw; exits non-zero if a check fails.
# Environment (defaults): SESSIONS=20 MSG_LEN=4096 KILL_AFTER=20000
set -euo pipefail
cd "$(dirname "$0")/.."
export SESSIONS="${SESSIONS:-20}" MSG_LEN="${MSG_LEN:-4096}" KILL_AFTER="${KILL_AFTER:-20000}"
OUT=$(cargo test --release -q -p vouchmail --test process bench_sigkill_under_benchmark_load -- --ignored --nocapture 2>&1) || true
grep -E '^BENCH|panicked|FAILED|error|test result' <<<"$OUT" || true
grep -q '^test result: ok. 1 passed' <<<"$OUT" || { echo "FAILED: see the lines above" >&2; exit 1; }
