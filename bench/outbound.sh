#!/usr/bin/env bash
# Outbound throughput benchmark: N queued MSG_LEN-byte messages delivered to Postfix's
# smtp-sink, by vouchmail and by a private Postfix instance, on 127.0.0.1.
#
# Each run first queues N messages in both servers with delivery held back, then times the
# delivery alone:
#   vouchmail  `serve` with [outbound] enabled = false takes the messages (smtp-source to its
#              MX; an alias sends them to sink@sink.test, routed to the sink); the server is
#              stopped and `vouchmail queue flush` delivers the queue (the same delivery engine
#              `serve` runs) and reports delivered/deferred/bounced. Timed: the flush command.
#   Postfix    smtpd puts every message on hold (check_client_access static:HOLD); relayhost is
#              the sink. `postsuper -H ALL` and `postqueue -f` release them. Timed: release
#              until the queue is empty; checked: N "status=sent" lines in its log.
# Both use 20 connections to the destination (Postfix's default_destination_concurrency_limit
# and vouchmail's max_connections_per_destination) and reuse connections.
# Environment (defaults): N=10000 MSG_LEN=4096 REPEAT=3 SESSIONS=20 KEEP_TMP=0 NO_BUILD=0
# Needs root (the private Postfix runs its daemons as the postfix user), Postfix (smtp-source,
# smtp-sink, postfix, postsuper, postqueue), python3.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)

N=${N:-10000}
MSG_LEN=${MSG_LEN:-4096}
REPEAT=${REPEAT:-3}
SESSIONS=${SESSIONS:-20}
FROM=sender@client.example

die() { echo "setup failed: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (the private Postfix needs it)"
for t in smtp-source smtp-sink postfix postsuper postqueue python3 awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t"
done
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
NOBODY_UID=$(id -u nobody)
NOBODY_GID=$(id -g nobody)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
VM_PORT=$(free_port); PF_PORT=$(free_port); SINK_PORT=$(free_port)
while [ "$PF_PORT" = "$VM_PORT" ]; do PF_PORT=$(free_port); done
while [ "$SINK_PORT" = "$VM_PORT" ] || [ "$SINK_PORT" = "$PF_PORT" ]; do SINK_PORT=$(free_port); done

TMP=$(mktemp -d /tmp/vouchmail-outbench.XXXXXX)
chmod 755 "$TMP"
VM_PID="" SINK_PID="" PF_STARTED=0
stop_vm() {
    [ -n "$VM_PID" ] || return 0
    kill -TERM "$VM_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VM_PID" 2>/dev/null || true
    wait "$VM_PID" 2>/dev/null || true
    VM_PID=""
}
cleanup() {
    set +e
    stop_vm
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ "$PF_STARTED" = 1 ]; then
        postfix -c "$TMP/pf/etc" stop >/dev/null 2>&1
        sleep 1
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port seconds
    python3 - "$1" "$2" <<'EOF'
import socket, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + limit
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "== building vouchmail (release)"
    ok=0
    for attempt in 1 2 3 4 5; do
        if cargo build --release -p vouchmail >"$TMP/build.log" 2>&1; then ok=1; break; fi
        tail -5 "$TMP/build.log"
        echo "build failed (attempt $attempt of 5); another edit may be in progress, retrying in 60 s"
        sleep 60
    done
    [ $ok = 1 ] || die "cargo build --release -p vouchmail"
fi
VM=$ROOT/target/release/vouchmail
[ -x "$VM" ] || die "no $VM"

# ---------------------------------------------------------------- smtp-sink
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>"$TMP/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT" 20 || { cat "$TMP/sink.err" >&2; die "smtp-sink did not listen"; }

# ---------------------------------------------------------------- vouchmail
mkdir -p "$TMP/vm"
VM_CONF=$TMP/vm/vouchmail.toml
cat > "$VM_CONF" <<EOF
hostname = "bench.example"
data_dir = "$TMP/vm/data"
log = "warn"

[listeners]
mx = ["127.0.0.1:$VM_PORT"]
submission = []
submissions = []
odmr = []
pop3 = []
pop3s = []
imap = []
imaps = []
admin = []
messenger = []

[bootstrap]
domain = "bench.example"
policy = "accept"
postmaster = false

[smtp]
max_connections = 5000
max_connections_per_ip = 5000

[outbound]
enabled = false
max_connections_per_destination = $SESSIONS
tls = "none"

[[outbound.route]]
domain = "sink.test"
host = "127.0.0.1:$SINK_PORT"
EOF
start_vm() {
    "$VM" --config "$VM_CONF" serve >>"$TMP/vm/server.log" 2>&1 &
    VM_PID=$!
    wait_port "$VM_PORT" 20 || { cat "$TMP/vm/server.log" >&2; die "vouchmail did not listen"; }
}
start_vm
"$VM" --config "$VM_CONF" alias add bench@bench.example sink@sink.test >/dev/null || die "alias add"
stop_vm

# ---------------------------------------------------------------- private Postfix
PF=$TMP/pf
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $TMP
maillog_file = $PF/maillog
myhostname = postfix.bench.example
mydomain = bench.example
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
smtp_tls_security_level = none
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
default_destination_concurrency_limit = $SESSIONS
EOF
cat > "$PF/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
if ! postfix -c "$PF/etc" start >/dev/null 2>&1; then
    script -qc "postfix -c $PF/etc start" /dev/null >&2 2>&1 || true
    cat "$PF/maillog" >&2 2>/dev/null || true
    die "postfix -c $PF/etc start"
fi
PF_STARTED=1
wait_port "$PF_PORT" 20 || die "Postfix did not listen"
pf_queue_empty() { postqueue -c "$PF/etc" -p 2>/dev/null | grep -q 'Mail queue is empty'; }
pf_sent() { awk '/status=sent/ { n++ } END { print n + 0 }' "$PF/maillog" 2>/dev/null || echo 0; }
pf_held() { postqueue -c "$PF/etc" -p 2>/dev/null | grep -c '^[0-9A-F]\{6,\}!' || true; }

# ---------------------------------------------------------------- measuring
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }'; }
load() { # port
    smtp-source -s "$SESSIONS" -l "$MSG_LEN" -m "$N" -f "$FROM" -t bench@bench.example "127.0.0.1:$1" \
        >"$TMP/source.out" 2>"$TMP/source.err" || { head -5 "$TMP/source.err"; die "smtp-source to port $1"; }
}
declare -a VMR PFR
CHECKS_OK=1
echo "== machine: $(nproc) cores, kernel $(uname -r); N=$N messages of $MSG_LEN bytes, $SESSIONS connections, $REPEAT runs"
for rep in $(seq 1 "$REPEAT"); do
    echo
    echo "== run $rep of $REPEAT"
    # vouchmail: queue N with delivery off, stop, then flush.
    start_vm
    load "$VM_PORT"
    stop_vm
    queued=$("$VM" --config "$VM_CONF" queue list 2>&1 >/dev/null | grep -o '^[0-9]*')
    t0=$(now)
    out=$("$VM" --config "$VM_CONF" queue flush 2>/dev/null)
    t1=$(now)
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    VMR+=("$(rate "$N" "$el")")
    echo "   vouchmail: $queued queued; $out; $el s, ${VMR[-1]} msg/s"
    echo "$out" | grep -q "delivered $N," || { echo "   ! CHECK FAILED: vouchmail did not deliver $N"; CHECKS_OK=0; }

    # Postfix: queue N on hold, release, wait for an empty queue.
    sent0=$(pf_sent)
    load "$PF_PORT"
    for _ in $(seq 1 600); do [ "$(pf_held)" -ge "$N" ] && break; sleep 0.1; done
    held=$(pf_held)
    t0=$(now)
    # -H moves them to the deferred queue; -f makes the queue manager take them now.
    postsuper -c "$PF/etc" -H ALL >/dev/null 2>&1
    postqueue -c "$PF/etc" -f
    while ! pf_queue_empty; do sleep 0.05; done
    t1=$(now)
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    PFR+=("$(rate "$N" "$el")")
    sent=$(( $(pf_sent) - sent0 ))
    echo "   postfix:   $held held; released, $sent sent; $el s, ${PFR[-1]} msg/s"
    [ "$sent" -eq "$N" ] || { echo "   ! CHECK FAILED: Postfix sent $sent, expected $N"; CHECKS_OK=0; }
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
vm=$(median "${VMR[@]}"); pf=$(median "${PFR[@]}")
ratio=$(awk -v a="$vm" -v b="$pf" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
echo
echo "== results (median of $REPEAT; each run: vouchmail ${VMR[*]} | postfix ${PFR[*]})"
printf '%-10s %10s %10s %8s  %s\n' "" vouchmail postfix vm/pf "target: faster than Postfix"
printf '%-10s %10s %10s %8s  %s\n' "msg/s" "$vm" "$pf" "$ratio" \
    "$(awk -v r="$ratio" 'BEGIN { print (r + 0 > 1) ? "met" : "MISSED" }')"
[ "$CHECKS_OK" = 1 ] && echo "== all delivery checks passed" || echo "== SOME CHECKS FAILED (see above)"
exit 0
