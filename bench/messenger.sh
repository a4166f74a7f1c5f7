#!/usr/bin/env bash
# Messenger CERT lookups per second (SPEC 8.1), with the Messenger session reused:
#  - local: a client asks lrsupport.test's server for its own mailbox's certificate;
#  - relayed one hop: glen@galkam.test asks galkam's server, which relays CERT to
#    lrsupport's server over the federation client's kept connection (STARTTLS) and
#    passes the reply on unchanged;
# each over one session, then over SESSIONS sessions at once.
# The servers (127.0.0.2, 127.0.0.3) and the DNS holding their SRV records run in the
# test process (crates/vouchmail/tests/messenger.rs, bench_cert_lookups, release build);
# every reply is compared with the home server's octet for octet.
# Environment (defaults): N=2000 lookups per session, SESSIONS=8.
set -euo pipefail
cd "$(dirname "$0")/.."
export N="${N:-2000}" SESSIONS="${SESSIONS:-8}"
cargo test --release -q -p vouchmail --test messenger bench_cert_lookups -- --ignored --nocapture 2>&1 \
    | grep -E '^BENCH|panicked|FAILED|error' || { echo "benchmark failed" >&2; exit 1; }
