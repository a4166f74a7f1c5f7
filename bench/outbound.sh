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
#   VM_BIN (a vouchmail binary to run instead of building target/release/vouchmail: a copy
#   that a build by someone else in the same target dir cannot replace mid-run)
#   PERF=1 records `perf record $PERF_ARGS` of each vouchmail flush into $TMP/perf.N.data
#   (with KEEP_TMP=1 to keep them); the figures of a recorded run are not comparable.
#   PERF_ARGS defaults to `-F 2000 --call-graph dwarf,32768`: the release build has no frame
#   pointers, so plain -g cuts most stacks at the first Rust frame.
# Target (issue 25 item 4): vouchmail at least 4x Postfix. A run during which other processes
# (not vouchmail, smtp-sink or Postfix) kept more than 10% of the CPU busy is flagged
# DISTURBED: run again.
# Needs root (the private Postfix runs its daemons as the postfix user), Postfix (smtp-source,
# smtp-sink, postfix, postsuper, postqueue), python3.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

N=${N:-10000}
MSG_LEN=${MSG_LEN:-4096}
REPEAT=${REPEAT:-3}
SESSIONS=${SESSIONS:-20}
FROM=sender@client.example

[ "$(id -u)" -eq 0 ] || die "run as root (the private Postfix needs it)"
for t in smtp-source smtp-sink postfix postsuper postqueue python3 awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t"
done
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
NOBODY_UID=$(id -u nobody)
NOBODY_GID=$(id -g nobody)

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

build_vouchmail

# ---------------------------------------------------------------- smtp-sink
smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$TMP/sink.out" 2>"$TMP/sink.err" &
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
# As in bench/lib.sh's vm_config: without it, queueing each message waits on the system's
# DNS for client.example's SPF, DKIM and DMARC records (SPEC 13), off loopback.
if grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null; then printf '\n[dmarc]\nverify = false\n' >>"$VM_CONF"; fi
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
load() { # port
    smtp-source -s "$SESSIONS" -l "$MSG_LEN" -m "$N" -f "$FROM" -t bench@bench.example "127.0.0.1:$1" \
        >"$TMP/source.out" 2>"$TMP/source.err" || { head -5 "$TMP/source.err"; die "smtp-source to port $1"; }
}
# CPU ticks of the private Postfix: its master with the children it has reaped, and the
# children still running.
pf_ticks() {
    local master
    master=$(head -1 "$PF/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
    [ -n "$master" ] || { echo 0; return; }
    { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$master/stat" 2>/dev/null
      for c in $(ps -o pid= --ppid "$master" 2>/dev/null); do proc_cpu "$c" 2>/dev/null; done
    } | awk '{ t += $1 } END { print t + 0 }'
}
# Messages smtp-sink has taken so far (its -c counter; a message delivered twice counts twice).
sink_count() { tr '\r' '\n' <"$TMP/sink.out" 2>/dev/null | grep -o '[0-9]\+' | tail -1 || echo 0; }
declare -a VMR PFR
CHECKS_OK=1
DISTURBED=0
echo "== machine: $(nproc) cores, kernel $(uname -r); N=$N messages of $MSG_LEN bytes, $SESSIONS connections, $REPEAT runs"
echo "== vouchmail: $VM"
busy_report
for rep in $(seq 1 "$REPEAT"); do
    echo
    echo "== run $rep of $REPEAT"
    # vouchmail: queue N with delivery off, stop, then flush.
    start_vm
    load "$VM_PORT"
    stop_vm
    queued=$("$VM" --config "$VM_CONF" queue list 2>&1 >/dev/null | grep -o '^[0-9]*')
    sink0=$(sink_count); s0=$(proc_cpu "$SINK_PID"); c0=$(cpu_sample)
    if [ "${PERF:-0}" = 1 ]; then
        # shellcheck disable=SC2206
        FLUSH=(perf record ${PERF_ARGS:--F 2000 --call-graph dwarf,32768} -o "$TMP/perf.$rep.data" --
               "$VM" --config "$VM_CONF" queue flush)
    else
        FLUSH=("$VM" --config "$VM_CONF" queue flush)
    fi
    TIMEFORMAT='%U %S'
    t0=$(now)
    out=$( { time "${FLUSH[@]}" 2>/dev/null; } 2>"$TMP/flush.time")
    t1=$(now)
    c1=$(cpu_sample); s1=$(proc_cpu "$SINK_PID")
    sleep 0.3 # smtp-sink's counter is written as messages end
    el=$(elapsed "$t0" "$t1")
    VMR+=("$(rate "$N" "$el")")
    vmticks=$(awk -v hz="$HZ" '{ printf "%.0f", ($1 + $2) * hz }' "$TMP/flush.time")
    others "$c0" "$c1" "$vmticks" $((s1 - s0))
    sunk=$(( $(sink_count) - sink0 ))
    left=$("$VM" --config "$VM_CONF" queue list 2>&1 >/dev/null | grep -o '^[0-9]*' || true)
    cpums=$(awk -v t="$vmticks" -v hz="$HZ" -v n="$N" 'BEGIN { printf "%.3f", 1000 * t / hz / n }')
    echo "   vouchmail: $queued queued; $out; the sink took $sunk; ${left:-0} left queued; $el s, ${VMR[-1]} msg/s;" \
        "$cpums CPU-ms/msg; $(cpu_report "$c0" "$c1"); $OTHERS"
    echo "$out" | grep -q "delivered $N," || { echo "   ! CHECK FAILED: vouchmail did not deliver $N"; CHECKS_OK=0; }
    [ "$sunk" -eq "$N" ] || { echo "   ! CHECK FAILED: smtp-sink took $sunk messages, expected $N"; CHECKS_OK=0; }
    [ "${left:-0}" -eq 0 ] || { echo "   ! CHECK FAILED: $left entries left in vouchmail's queue"; CHECKS_OK=0; }

    # Postfix: queue N on hold, release, wait for an empty queue.
    sent0=$(pf_sent)
    load "$PF_PORT"
    for _ in $(seq 1 600); do [ "$(pf_held)" -ge "$N" ] && break; sleep 0.1; done
    held=$(pf_held)
    sink0=$(sink_count); s0=$(proc_cpu "$SINK_PID"); p0=$(pf_ticks); c0=$(cpu_sample)
    # postsuper, postqueue and the polling below are this script's, not other processes:
    # they were a sixth of the machine and flagged every Postfix run DISTURBED.
    mark_children; k0=$CHILD_TICKS
    t0=$(now)
    # -H moves them to the deferred queue; -f makes the queue manager take them now.
    postsuper -c "$PF/etc" -H ALL >/dev/null 2>&1
    postqueue -c "$PF/etc" -f
    while ! pf_queue_empty; do sleep 0.05; done
    t1=$(now)
    c1=$(cpu_sample); p1=$(pf_ticks); s1=$(proc_cpu "$SINK_PID"); mark_children; k1=$CHILD_TICKS
    sleep 0.3
    el=$(elapsed "$t0" "$t1")
    PFR+=("$(rate "$N" "$el")")
    others "$c0" "$c1" $((p1 - p0 + k1 - k0)) $((s1 - s0))
    sent=$(( $(pf_sent) - sent0 ))
    sunk=$(( $(sink_count) - sink0 ))
    echo "   postfix:   $held held; released, $sent sent; the sink took $sunk; $el s, ${PFR[-1]} msg/s;" \
        "$(cpu_report "$c0" "$c1"); $OTHERS"
    [ "$sent" -eq "$N" ] || { echo "   ! CHECK FAILED: Postfix sent $sent, expected $N"; CHECKS_OK=0; }
    [ "$sunk" -eq "$N" ] || { echo "   ! CHECK FAILED: smtp-sink took $sunk messages from Postfix, expected $N"; CHECKS_OK=0; }
done

vm=$(median "${VMR[@]}"); pf=$(median "${PFR[@]}")
r=$(ratio "$vm" "$pf")
echo
echo "== results (median of $REPEAT; each run: vouchmail ${VMR[*]} | postfix ${PFR[*]})"
printf '%-10s %10s %10s %8s  %s\n' "" vouchmail postfix vm/pf "target: at least 4x Postfix"
printf '%-10s %10s %10s %8s  %s\n' "msg/s" "$vm" "$pf" "$r" "$(meets "$r" 4)"
if [ "$DISTURBED" -gt 0 ]; then
    echo "== WARNING: $DISTURBED runs shared the CPU with other processes (>10%, DISTURBED above): run again"
fi
[ "$CHECKS_OK" = 1 ] && echo "== all delivery checks passed" || echo "== SOME CHECKS FAILED (see above)"
exit 0
