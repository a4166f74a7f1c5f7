#!/usr/bin/env bash
# What SPEC 13 costs (issue 22), in one run, both pairs interleaved REPEAT times, medians:
#  - MX acceptance of DKIM-signed (Ed25519 and RSA) MSG_LEN-octet messages from an
#    SPF-authorized host with the SPF/DKIM/DMARC/iprev checks on and off (DNS answers
#    cached by the shared resolver); target: on at least 0.70 of off;
#  - submission by a local user (AUTH PLAIN) to a remote address, with the domain's two
#    DKIM keys signing and with no keys; target: signed at least 0.80 of unsigned.
# The servers, the DNS and the load (SESSIONS sessions x N messages, connection reused) run
# in the test process (crates/vouchmail/tests/sender_auth.rs, bench_sender_authentication,
# release build); every message is checked in the mailbox or the queue afterwards. Then
# what one signature costs alone (our signer, one thread), beside OpenSSL's RSA-2048 on
# the same machine.
# Environment (defaults): N=1000 SESSIONS=8 REPEAT=3 MSG_LEN=4096 REPORTS=1 (0: the checking
# server does not count DMARC results for aggregate reports, to see what counting costs).
# Needs python3 with dkim and nacl (Debian: python3-dkim python3-nacl), openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
export N="${N:-1000}" SESSIONS="${SESSIONS:-8}" REPEAT="${REPEAT:-3}" MSG_LEN="${MSG_LEN:-4096}"
cargo test --release -q -p vouchmail --test sender_auth bench_sender_authentication -- --ignored --nocapture 2>&1 \
    | grep -E '^BENCH|panicked|FAILED|error' || { echo "benchmark failed" >&2; exit 1; }
# The ceiling of the signing cost on this machine: OpenSSL's RSA-2048 private-key operation.
if command -v openssl >/dev/null; then
    openssl speed -seconds 2 rsa2048 2>/dev/null | awk '/^rsa 2048/ { printf "BENCH ceiling: OpenSSL RSA-2048 sign %.0f us (%s/s per core)\n", $4 * 1e6, $6 }'
fi
