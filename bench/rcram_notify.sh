#!/usr/bin/env bash
# Messenger part 2 (issue 12):
#  - RCRAM-MD5 logins per second (SPEC 8.2) through one verifier (lrsupport.test's server,
#    127.0.0.3) to one home server (galkam.test's, 127.0.0.2): every login is a new client
#    session and a new verifier-to-home connection (EHLO, STARTTLS, X-RCRAM-VERIFY, the
#    relayed answer), first from one client session at a time, then from SESSIONS at once;
#  - NOTIFY records delivered per second (SPEC 8.3) from lrsupport's outbox to galkam:
#    NOTIFY_N records queued while lrsupport is stopped, timed from its restart until
#    galkam's store holds every one.
# The servers and the DNS holding their SRV records run in the test process
# (crates/vouchmail/tests/messenger.rs, bench_rcram_logins_and_notify_records, release build).
# Environment (defaults): RCRAM_N=200 logins per session, SESSIONS=2, NOTIFY_N=1000.
# SESSIONS is at most 2: the verifier holds at most two unfinished exchanges per client
# network (SPEC 8.2 step 7, federation::rcram::MAX_EXCHANGES_PER_CLIENT), and every client
# here is on 127.0.0.1; more at once are refused with 454 4.7.0, as they should be.
set -euo pipefail
cd "$(dirname "$0")/.."
export RCRAM_N="${RCRAM_N:-200}" SESSIONS="${SESSIONS:-2}" NOTIFY_N="${NOTIFY_N:-1000}"
cargo test --release -q -p vouchmail --test messenger bench_rcram_logins_and_notify_records -- --ignored --nocapture 2>&1 \
    | grep -E '^BENCH|panicked|FAILED|error' || { echo "benchmark failed" >&2; exit 1; }
