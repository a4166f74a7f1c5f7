#!/usr/bin/env bash
# AuthKeys benchmark (SPEC 7): VERIFY requests per second over UDP and over TCP against
# vouchmail's Authentication Server, with the project's load client
# (crates/vouchmail/examples/authkey_load.rs), against a plain UDP echo server on the same
# machine in the same run (the ceiling of one request/answer per datagram); then the cost a
# verified message adds to MX acceptance: smtp-source messages per second with a valid
# X-Auth-Key (cache warm after the first) and without one, into the same server.
#
# Targets (issue 10): VERIFY over UDP at least 50 % of the echo's rate; MX acceptance with
# verification at least 80 % of without.
# Environment (defaults): SECONDS_EACH=5 CONCURRENCY=16 N=3000 SESSIONS=20 REPEAT=3 NO_BUILD=0 KEEP_TMP=0
# Each measurement runs REPEAT times, interleaved; the table shows the medians.
# Needs smtp-source (Postfix) and python3. Traffic is on 127.0.0.1 only; every load loop
# is bounded by SECONDS_EACH or N.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_EACH=${SECONDS_EACH:-5}
CONCURRENCY=${CONCURRENCY:-16}
N=${N:-3000}
REPEAT=${REPEAT:-3}
SESSIONS=${SESSIONS:-20}

die() { echo "setup failed: $*" >&2; exit 1; }
for t in smtp-source python3; do command -v "$t" >/dev/null 2>&1 || die "missing $t"; done
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p vouchmail --bin vouchmail --example authkey_load || die "build failed"
fi
VM=$ROOT/target/release/vouchmail
LOAD=$ROOT/target/release/examples/authkey_load

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d /tmp/vouchmail-authkey.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

MX_PORT=$(free_port)
AS_PORT=$(free_port)
# The test kit's DNS server: galkam.test names this server's AS.
"$LOAD" dns "galkam.test=127.0.0.1:$AS_PORT" > "$TMP/dns.addr" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/dns.addr" ] && break; sleep 0.05; done
DNS=$(cat "$TMP/dns.addr")
[ -n "$DNS" ] || die "the DNS server did not start"

CONF=$TMP/vouchmail.toml
cat > "$CONF" <<EOF
hostname = "bench.test"
data_dir = "$TMP/data"
log = "warn"

[listeners]
mx = ["127.0.0.1:$MX_PORT"]
submission = []
submissions = []
odmr = []
pop3 = []
pop3s = []
imap = []
imaps = []
admin = []
messenger = []
authkey = ["127.0.0.1:$AS_PORT"]

[dns]
nameservers = ["$DNS"]

[bootstrap]
domain = "galkam.test"
policy = "accept"
postmaster = false

[smtp]
max_connections = 5000
max_connections_per_ip = 5000

[authkey]
server = true
# The load client is one source address: no rate limit for the benchmark.
udp_rate_per_sec = 100000000
udp_burst = 100000000
max_connections_per_ip = 1000
EOF
# As in bench/lib.sh's vm_config: without it, each message taken waits on the system's DNS
# for the sender's SPF, DKIM and DMARC records (SPEC 13), off loopback.
if grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null; then printf '\n[dmarc]\nverify = false\n' >>"$CONF"; fi
"$VM" --config "$CONF" init > /dev/null
echo "benchpassword" | "$VM" --config "$CONF" user add glen@galkam.test --password-stdin > /dev/null
"$VM" --config "$CONF" domain add lrsupport.test --policy accept > /dev/null
echo "benchpassword" | "$VM" --config "$CONF" user add abc555@lrsupport.test --password-stdin > /dev/null
KEY=$("$VM" --config "$CONF" authkey rotate glen@galkam.test | cut -f2)
[ ${#KEY} = 64 ] || die "no key: $KEY"
"$VM" --config "$CONF" serve > "$TMP/server.log" 2>&1 &
PIDS+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 1 200); do listening "$MX_PORT" && listening "$AS_PORT" && break; sleep 0.05; done
listening "$MX_PORT" || { cat "$TMP/server.log" >&2; die "vouchmail did not start"; }
"$VM" --config "$CONF" authkey verify glen@galkam.test "$KEY" --server "127.0.0.1:$AS_PORT" > /dev/null \
    || die "the key does not verify"

rate() { sed -n 's/^[a-z]* \([0-9]*\) req\/s.*/\1/p'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
"$LOAD" echo 127.0.0.1:0 > "$TMP/echo.addr" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$TMP/echo.addr" ] && break; sleep 0.05; done
ECHO_ADDR=$(cat "$TMP/echo.addr")
printf 'From: <glen@galkam.test>\r\nTo: <abc555@lrsupport.test>\r\nSubject: bench\r\nX-Auth-Key: %s\r\n\r\nHello\r\n' "$KEY" > "$TMP/with_key.eml"
printf 'From: <glen@galkam.test>\r\nTo: <abc555@lrsupport.test>\r\nSubject: bench\r\n\r\nHello\r\n' > "$TMP/without_key.eml"
mx_rate() { # file
    local start end
    start=$(date +%s.%N)
    smtp-source -c -m "$N" -s "$SESSIONS" -d -F "$1" -f glen@galkam.test -t abc555@lrsupport.test "127.0.0.1:$MX_PORT" > /dev/null
    end=$(date +%s.%N)
    python3 -c "print(round($N / ($end - $start)))"
}
# One message first, so the recipient side's cache is warm.
smtp-source -m 1 -F "$TMP/with_key.eml" -f glen@galkam.test -t abc555@lrsupport.test "127.0.0.1:$MX_PORT" > /dev/null

# Interleaved, REPEAT times each; the table shows medians.
UDPS="" TCPS="" ECHOS="" WITHS="" WITHOUTS=""
for round in $(seq 1 "$REPEAT"); do
    echo "== round $round: VERIFY with $CONCURRENCY clients for ${SECONDS_EACH}s each; MX with $N messages in $SESSIONS sessions"
    line=$("$LOAD" udp "127.0.0.1:$AS_PORT" glen@galkam.test "$KEY" --seconds "$SECONDS_EACH" --concurrency "$CONCURRENCY")
    echo "vouchmail $line"; UDPS="$UDPS $(echo "$line" | rate)"
    line=$("$LOAD" udp "$ECHO_ADDR" glen@galkam.test "$KEY" --seconds "$SECONDS_EACH" --concurrency "$CONCURRENCY")
    echo "echo      $line"; ECHOS="$ECHOS $(echo "$line" | rate)"
    line=$("$LOAD" tcp "127.0.0.1:$AS_PORT" glen@galkam.test "$KEY" --seconds "$SECONDS_EACH" --concurrency "$CONCURRENCY")
    echo "vouchmail $line"; TCPS="$TCPS $(echo "$line" | rate)"
    r=$(mx_rate "$TMP/without_key.eml"); echo "MX without X-Auth-Key: $r msg/s"; WITHOUTS="$WITHOUTS $r"
    r=$(mx_rate "$TMP/with_key.eml"); echo "MX with X-Auth-Key:    $r msg/s"; WITHS="$WITHS $r"
done
UDP=$(echo "$UDPS" | median); TCP=$(echo "$TCPS" | median); ECHO=$(echo "$ECHOS" | median)
WITH=$(echo "$WITHS" | median); WITHOUT=$(echo "$WITHOUTS" | median)
PASSED=$("$VM" --config "$CONF" mailbox list abc555@lrsupport.test | tail -n +2 | wc -l)
echo "stored: $PASSED messages (expected $((2 * N * REPEAT + 1)))"
echo
echo "| measurement | rate | ceiling | ratio | target |"
echo "| --- | --- | --- | --- | --- |"
ratio() { python3 -c "print(f'{100 * $1 / max($2, 1):.0f} %')"; }
echo "| VERIFY over UDP | $UDP req/s | echo $ECHO req/s | $(ratio "$UDP" "$ECHO") | ≥ 50 % |"
echo "| VERIFY over TCP (pipelined) | $TCP req/s | echo $ECHO req/s | $(ratio "$TCP" "$ECHO") | — |"
echo "| MX acceptance with a valid AuthKey | $WITH msg/s | without $WITHOUT msg/s | $(ratio "$WITH" "$WITHOUT") | ≥ 80 % |"
