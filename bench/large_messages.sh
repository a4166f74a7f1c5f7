#!/usr/bin/env bash
# Memory under concurrent large messages: SESSIONS sessions each send one MSG_LEN-octet
# message to vouchmail at once (Postfix's smtp-source), and the server's peak resident
# memory (VmHWM) is compared with the ceiling that buffering every message whole would
# need (SESSIONS x MSG_LEN) and with the bound the spool is meant to keep
# (smtp.max_inflight_bytes plus the baseline). Every message must be accepted (250) and
# stored whole.
# Environment (defaults): SESSIONS=50 MSG_LEN=20971520 NO_BUILD=0 KEEP_TMP=0
# Needs smtp-source (Postfix) and python3. Traffic is on 127.0.0.1 only.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SESSIONS=${SESSIONS:-50}
MSG_LEN=${MSG_LEN:-20971520}

die() { echo "setup failed: $*" >&2; exit 1; }
for t in smtp-source python3 awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t"
done
ulimit -n 8192 2>/dev/null || true

[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q -p vouchmail
BIN="$ROOT/target/release/vouchmail"
[ -x "$BIN" ] || die "no $BIN"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
TMP=$(mktemp -d /tmp/vouchmail-bench-large.XXXXXX)
VM_PID=""
cleanup() {
    [ -n "$VM_PID" ] && kill "$VM_PID" 2>/dev/null && wait "$VM_PID" 2>/dev/null || true
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TMP"
}
trap cleanup EXIT

cat > "$TMP/vouchmail.toml" <<EOF
hostname = "mx.bench.example"
data_dir = "$TMP/data"
log = "warn"
[listeners]
mx = ["127.0.0.1:$PORT"]
submission = []
submissions = []
odmr = []
pop3 = []
pop3s = []
imap = []
imaps = []
admin = []
messenger = []
[smtp]
max_message_size = $((MSG_LEN + 1048576))
[bootstrap]
domain = "bench.example"
policy = "accept"
[outbound]
enabled = false
EOF
# As in bench/lib.sh's vm_config: without it, each message taken waits on the system's DNS
# for the sender's SPF, DKIM and DMARC records (SPEC 13), off loopback.
if grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null; then printf '\n[dmarc]\nverify = false\n' >>"$TMP/vouchmail.toml"; fi
"$BIN" --config "$TMP/vouchmail.toml" serve > "$TMP/serve.out" 2> "$TMP/serve.err" &
VM_PID=$!
for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    sleep 0.1
done
kib() { awk -v k="$1" "/^$2:/ { print \$2 }" "/proc/$VM_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
base=$(kib x VmRSS)

start=$(date +%s.%N)
smtp-source -c -s "$SESSIONS" -m "$SESSIONS" -l "$MSG_LEN" -f sender@client.example \
    -t postmaster@bench.example "127.0.0.1:$PORT" > "$TMP/source.out" 2>&1 || die "smtp-source failed: $(tail -3 "$TMP/source.out")"
end=$(date +%s.%N)
peak=$(kib x VmHWM)
stored=$("$BIN" --config "$TMP/vouchmail.toml" mailbox list postmaster@bench.example | tail -n +2 | wc -l)

inflight_mib=$(awk -v s="$SESSIONS" -v l="$MSG_LEN" 'BEGIN { printf "%.0f", s * l / 1048576 }')
grown=$(( peak - base ))
printf 'vouchmail: %d sessions x %d MiB at once (%s MiB of message data), %s s\n' \
    "$SESSIONS" "$((MSG_LEN / 1048576))" "$inflight_mib" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
printf '   VmRSS before: %s MiB; peak (VmHWM) during: %s MiB; growth %s MiB\n' "$(mib "$base")" "$(mib "$peak")" "$(mib "$grown")"
printf '   ceiling if every message were held in memory: %s MiB; growth is %s%% of it\n' \
    "$inflight_mib" "$(awk -v g="$grown" -v c="$inflight_mib" 'BEGIN { printf "%.1f", 100 * g / 1024 / c }')"
printf '   messages stored: %s of %s\n' "$stored" "$SESSIONS"
target=$(awk -v g="$grown" 'BEGIN { print (g < 128 * 1024) ? "met" : "MISSED" }')
echo "   target growth < 128 MiB: $target"
