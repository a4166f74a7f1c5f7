#!/usr/bin/env bash
# ODMR drain-rate benchmark (RFC 2645): N held MSG_LEN-byte messages taken by one ATRN
# into Postfix's smtp-sink.
#
# vouchmail `serve` holds the domain held.example for the account cust@local.test; smtp-source
# loads N messages for it through the MX (they stay queued); then `vouchmail odmr fetch`
# (the customer) authenticates with CRAM-MD5, sends one ATRN and relays the reversed session
# to smtp-sink (--smtphost). Timed: the fetch command, from connect to QUIT; checked: the
# provider's queue is empty afterwards (outcomes are committed before the provider's QUIT).
# Environment (defaults): N=10000 MSG_LEN=4096 SESSIONS=20 NO_BUILD=0
# Needs Postfix's smtp-source and smtp-sink, python3.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${N:-10000}
MSG_LEN=${MSG_LEN:-4096}
SESSIONS=${SESSIONS:-20}

die() { echo "setup failed: $*" >&2; exit 1; }
for t in smtp-source smtp-sink python3; do command -v "$t" >/dev/null 2>&1 || die "missing $t"; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MX=$(free_port); ODMR=$(free_port); SINK=$(free_port)

TMP=$(mktemp -d /tmp/vouchmail-odmrbench.XXXXXX)
chmod 755 "$TMP"
VM_PID="" SINK_PID=""
cleanup() {
    set +e
    [ -n "$VM_PID" ] && kill -TERM "$VM_PID" 2>/dev/null && wait "$VM_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p vouchmail
fi
VM="$ROOT/target/release/vouchmail"
cat > "$TMP/vouchmail.toml" <<TOML
hostname = "provider.example"
data_dir = "$TMP/data"
log = "warn"
[listeners]
mx = ["127.0.0.1:$MX"]
odmr = ["127.0.0.1:$ODMR"]
submission = []
submissions = []
pop3 = []
pop3s = []
imap = []
imaps = []
admin = []
messenger = []
[smtp]
max_connections = 5000
max_connections_per_ip = 5000
max_errors = 1000
[bootstrap]
domain = "local.test"
policy = "accept"
postmaster = false
[outbound]
enabled = false
TOML
# As in bench/lib.sh's vm_config: without it, each message taken waits on the system's DNS
# for the sender's SPF, DKIM and DMARC records (SPEC 13), off loopback.
if grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null; then printf '\n[dmarc]\nverify = false\n' >>"$TMP/vouchmail.toml"; fi
cat > "$TMP/customer.toml" <<TOML
hostname = "customer.example"
data_dir = "$TMP/customer-data"
TOML
echo "odmr secret" > "$TMP/password"

"$VM" --config "$TMP/vouchmail.toml" serve > "$TMP/serve.log" 2>&1 &
VM_PID=$!
for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$MX))" 2>/dev/null && break; sleep 0.1; done
"$VM" --config "$TMP/vouchmail.toml" user add cust@local.test --password-stdin < "$TMP/password" > /dev/null
"$VM" --config "$TMP/vouchmail.toml" domain add held.example --policy accept --held-for cust@local.test > /dev/null

echo "== loading $N held messages of $MSG_LEN bytes ($SESSIONS sessions)"
smtp-source -s "$SESSIONS" -m "$N" -l "$MSG_LEN" -f sender@client.example -t rcpt@held.example "127.0.0.1:$MX"
held=$("$VM" --config "$TMP/vouchmail.toml" queue list 2>/dev/null | grep -c "rcpt@held.example" || true)
[ "$held" = "$N" ] || die "expected $N held entries, found $held"

smtp-sink $( [ "$(id -u)" = 0 ] && echo "-u nobody" ) -c "127.0.0.1:$SINK" 1000 > "$TMP/sink.log" 2>&1 &
SINK_PID=$!
sleep 0.3

echo "== one ATRN: $N messages into smtp-sink"
start=$(date +%s.%N)
"$VM" --config "$TMP/customer.toml" odmr fetch --provider "127.0.0.1:$ODMR" --user cust@local.test \
    --password-file "$TMP/password" --smtphost "127.0.0.1:$SINK" --domains held.example
end=$(date +%s.%N)
# Outcomes are committed before the provider's QUIT; the queue must be empty now.
left=$("$VM" --config "$TMP/vouchmail.toml" queue list 2>/dev/null | grep -c "rcpt@held.example" || true)
secs=$(python3 -c "print(f'{$end - $start:.3f}')")
rate=$(python3 -c "print(int($N / ($end - $start)))")
echo "   drained $N held messages in $secs s: $rate msg/s; left in the queue: $left"
[ "$left" = 0 ] || die "$left entries left in the queue"
