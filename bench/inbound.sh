#!/usr/bin/env bash
# Inbound throughput benchmark: vouchmail vs. a private Postfix instance vs. smtp-sink.
#
# Load generator: Postfix's smtp-source, SESSIONS parallel sessions, MSG_LEN-byte messages to
# bench@bench.example, N messages per run; once with a new connection per message and once
# with connection reuse (smtp-source -d). Both servers deliver locally and durably:
#   vouchmail  a 250 means the message is fsync'd into the mailbox (SQLite, synchronous=FULL)
#   Postfix    a 250 means the message is fsync'd into the queue; the virtual(8) agent then
#              delivers it to a Maildir. Its rate is given to completion (the last message in
#              the Maildir) and, separately, to acceptance (smtp-source done).
#   smtp-sink  accepts and discards: the ceiling of the load generator on this machine.
# Then holds IDLE_CONNS idle connections to vouchmail and reads its VmRSS.
#
# Each measurement is repeated REPEAT times (interleaved: vouchmail, Postfix, smtp-sink, new
# connections then reuse, and again) and the table shows the medians.
# Environment (defaults): N=10000 REPEAT=3 SESSIONS=20 MSG_LEN=4096 IDLE_CONNS=1000
#   DRAIN_TIMEOUT=120 (seconds to wait for Postfix's queue to drain) KEEP_TMP=0 NO_BUILD=0
#   VM_PORT PF_PORT SINK_PORT (default: free ports picked at start)
# Needs root (the private Postfix runs its daemons as the postfix user), Postfix
# (smtp-source, smtp-sink, postfix), python3. Traffic is on 127.0.0.1 only.
# Exit status is non-zero only when setup fails; a failed check is printed, not fatal.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)

N=${N:-10000}
SESSIONS=${SESSIONS:-20}
MSG_LEN=${MSG_LEN:-4096}
IDLE_CONNS=${IDLE_CONNS:-1000}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
WARMUP=${WARMUP:-200}
REPEAT=${REPEAT:-3}
RCPT=bench@bench.example
FROM=sender@client.example

die() { echo "setup failed: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (the private Postfix needs it)"
for t in smtp-source smtp-sink postfix postconf postqueue python3 awk; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t"
done
id postfix >/dev/null 2>&1 || die "no postfix user"
getent group postdrop >/dev/null 2>&1 || die "no postdrop group"
NOBODY_UID=$(id -u nobody) || die "no nobody user"
NOBODY_GID=$(id -g nobody)

# File descriptors for 1000+ connections (vouchmail inherits this limit).
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || ulimit -n 4096 || die "cannot raise ulimit -n"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
VM_PORT=${VM_PORT:-$(free_port)}
PF_PORT=${PF_PORT:-$(free_port)}
SINK_PORT=${SINK_PORT:-$(free_port)}
while [ "$PF_PORT" = "$VM_PORT" ]; do PF_PORT=$(free_port); done
while [ "$SINK_PORT" = "$VM_PORT" ] || [ "$SINK_PORT" = "$PF_PORT" ]; do SINK_PORT=$(free_port); done

# ---------------------------------------------------------------- temp dir and cleanup
TMP=$(mktemp -d /tmp/vouchmail-bench.XXXXXX)
chmod 755 "$TMP"
VM_PID="" SINK_PID="" IDLE_PID="" PF_STARTED=0
cleanup() {
    set +e
    [ -n "$IDLE_PID" ] && kill "$IDLE_PID" 2>/dev/null && wait "$IDLE_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ -n "$VM_PID" ]; then
        kill -TERM "$VM_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$VM_PID" 2>/dev/null
        wait "$VM_PID" 2>/dev/null
    fi
    if [ "$PF_STARTED" = 1 ]; then
        postfix -c "$TMP/pf/etc" stop >/dev/null 2>&1
        local mpid
        mpid=$(tr -dc 0-9 < "$TMP/pf/queue/pid/master.pid" 2>/dev/null)
        if [ -n "$mpid" ]; then
            for _ in $(seq 1 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$mpid" 2>/dev/null
        fi
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
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

# ---------------------------------------------------------------- vouchmail
mkdir -p "$TMP/vm"
VM_CONF=$TMP/vm/vouchmail.toml
# Only the MX listener: every other role the example config knows is turned off, so the
# benchmark neither competes for the dev ports nor serves anything else.
listeners_off() {
    awk '/^\[/ { inl = ($0 == "[listeners]") } inl && /^[a-z0-9_]+ *=/ { print $1 }' \
        "$ROOT/vouchmail.example.toml" 2>/dev/null | grep -vx -e mx -e submission | sed 's/$/ = []/'
}
cat > "$VM_CONF" <<EOF
hostname = "bench.example"
data_dir = "$TMP/vm/data"
log = "warn"

[listeners]
mx = ["127.0.0.1:$VM_PORT"]
submission = []
$(listeners_off)

[bootstrap]
domain = "bench.example"
policy = "accept"
postmaster = false

[smtp]
max_connections = 5000
max_connections_per_ip = 5000
max_errors = 1000
EOF
"$VM" --config "$VM_CONF" serve > "$TMP/vm/server.log" 2>&1 &
VM_PID=$!

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
if ! wait_port "$VM_PORT" 20; then
    cat "$TMP/vm/server.log" >&2
    die "vouchmail did not listen on 127.0.0.1:$VM_PORT"
fi
echo "benchpassword" | "$VM" --config "$VM_CONF" user add "$RCPT" --password-stdin >/dev/null \
    || die "vouchmail user add $RCPT"
vm_count() { # messages in the account, from the CLI (same store as the running server)
    # Columns: ADDRESS MESSAGES USED QUOTA, under a header row.
    "$VM" --config "$VM_CONF" user list | awk -v r="$RCPT" '$1 == r { print $2; found = 1 } END { if (!found) print -1 }' \
        || echo -1
}
[ "$(vm_count)" = 0 ] || die "vouchmail user list does not show 0 messages for $RCPT"

# ---------------------------------------------------------------- private Postfix
PF=$TMP/pf
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$PF/mail"
chown postfix "$PF/data"
chown "$NOBODY_UID:$NOBODY_GID" "$PF/mail"
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
relayhost =
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
virtual_mailbox_domains = bench.example
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:$NOBODY_UID
virtual_gid_maps = static:$NOBODY_GID
virtual_minimum_uid = 1
EOF
echo "$RCPT bench/" > "$PF/etc/vmailbox"   # trailing slash: Maildir
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
local      unix  - n n -     - local
virtual    unix  - n n -     - virtual
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
if ! postfix -c "$PF/etc" start >/dev/null 2>&1; then
    # postfix(1) reports configuration errors on a terminal only; give it one.
    script -qc "postfix -c $PF/etc start" /dev/null >&2 2>&1 || true
    cat "$PF/maillog" >&2 2>/dev/null || true
    die "postfix -c $PF/etc start"
fi
PF_STARTED=1
wait_port "$PF_PORT" 20 || { cat "$PF/maillog" >&2; die "Postfix did not listen on 127.0.0.1:$PF_PORT"; }
PF_MAILDIR=$PF/mail/bench
pf_count() { # messages in the Maildir
    local n=0 d
    for d in new cur; do
        [ -d "$PF_MAILDIR/$d" ] && n=$((n + $(ls -U "$PF_MAILDIR/$d" | wc -l)))
    done
    echo $n
}
pf_queue_empty() { postqueue -c "$PF/etc" -p 2>/dev/null | grep -q 'Mail queue is empty'; }

# ---------------------------------------------------------------- smtp-sink
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>"$TMP/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT" 20 || { cat "$TMP/sink.err" >&2; die "smtp-sink did not listen on 127.0.0.1:$SINK_PORT"; }

# ---------------------------------------------------------------- measuring
now() { date +%s.%N; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }'; }
cpu_sample() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5, $6 }' /proc/stat; } # busy idle iowait
cpu_report() { # before after -> "busy% iowait%"
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1]-x[1]; idle = y[2]-x[2]; io = y[3]-x[3]; tot = busy+idle+io;
        if (tot > 0) printf "cpu busy %.0f%%, iowait %.0f%%", 100*busy/tot, 100*io/tot }'
}
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime+stime in clock ticks
HZ=$(getconf CLK_TCK)

# smtp-source with the common load; $1 = port, $2 = mode flag ("" or -d), $3 = count
load() {
    local port=$1 flag=$2 count=$3
    local TIMEFORMAT='%U %S'
    # shellcheck disable=SC2086
    { time smtp-source $flag -s "$SESSIONS" -l "$MSG_LEN" -m "$count" -f "$FROM" -t "$RCPT" \
        "127.0.0.1:$port" >"$TMP/source.out" 2>"$TMP/source.err"; } 2>"$TMP/source.time"
}
source_ticks() { awk -v hz="$HZ" '{ printf "%.0f", ($1 + $2) * hz }' "$TMP/source.time"; }
DISTURBED=0
# Share of the machine used by processes other than the server under test and smtp-source:
# other engineers' builds on a shared machine make a run meaningless. $1 $2 = cpu_sample
# before/after, $3 = server CPU ticks in the run. Sets OTHERS (text) and counts DISTURBED.
others() {
    local pct
    pct=$(awk -v a="$1" -v b="$2" -v srv="$3" -v src="$(source_ticks)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1]-x[1]; tot = busy + (y[2]-x[2]) + (y[3]-x[3]);
        o = (tot > 0) ? 100 * (busy - srv - src) / tot : 0; if (o < 0) o = 0; printf "%.0f", o }')
    if [ "$pct" -gt 10 ]; then
        DISTURBED=$((DISTURBED + 1)); OTHERS="other processes ${pct}% (DISTURBED)"
    else
        OTHERS="other processes ${pct}%"
    fi
}
SOURCE_FAILS=0
load_checked() {
    if ! load "$@"; then
        SOURCE_FAILS=$((SOURCE_FAILS + 1))
        echo "   ! smtp-source failed:"; head -5 "$TMP/source.err" | sed 's/^/     /'
    elif [ -s "$TMP/source.err" ]; then
        echo "   ! smtp-source stderr:"; head -5 "$TMP/source.err" | sed 's/^/     /'
    fi
}
declare -A R   # results: R[server,mode]
CHECKS_OK=1

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo), kernel $(uname -r)"
c0=$(cpu_sample); sleep 2; c1=$(cpu_sample)
echo "== before the runs: load average $(cut -d' ' -f1-3 /proc/loadavg); machine over the last 2 s: $(cpu_report "$c0" "$c1")"
busy=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = (y[1]-x[1]) + (y[2]-x[2]) + (y[3]-x[3]); print (t > 0) ? int(100 * (y[1]-x[1]) / t) : 0 }')
if [ "$busy" -ge 20 ]; then
    echo "== WARNING: other processes keep the machine ${busy}% busy; the figures will be noisy. Busiest:"
    ps -eo pcpu=,comm= --sort=-pcpu | head -3 | sed 's/^/   /'
fi
echo "== N=$N messages per run, $REPEAT runs per figure (median), $SESSIONS sessions, $MSG_LEN-byte messages, to $RCPT"
echo "== ports: vouchmail $VM_PORT, postfix $PF_PORT, smtp-sink $SINK_PORT; temp dir $TMP"

BENCH_START=$SECONDS
# Warm-up (not counted): one small run per server, so that no run pays for first use.
load_checked "$VM_PORT" "" "$WARMUP"
load_checked "$PF_PORT" "" "$WARMUP"
load_checked "$SINK_PORT" "" "$WARMUP"
end=$(( $(date +%s) + DRAIN_TIMEOUT ))
while { [ "$(pf_count)" -lt "$WARMUP" ] || ! pf_queue_empty; } && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done

for rep in $(seq 1 "$REPEAT"); do
for mode in new reuse; do
    flag=""; [ $mode = reuse ] && flag="-d"
    label="new connection per message"; [ $mode = reuse ] && label="connection reuse (-d)"
    echo
    echo "== run $rep of $REPEAT, mode: $label"

    sleep 1
    # vouchmail: a 250 is durable local delivery, so acceptance is completion.
    before=$(vm_count); c0=$(cpu_sample); p0=$(proc_cpu "$VM_PID")
    t0=$(now); load_checked "$VM_PORT" "$flag" "$N"; t1=$(now)
    c1=$(cpu_sample); p1=$(proc_cpu "$VM_PID")
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    R[vm,$mode,$rep]=$(rate "$N" "$el")
    after=$(vm_count); stored=$((after - before))
    vmcpu=$(awk -v t=$((p1 - p0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
    others "$c0" "$c1" $((p1 - p0))
    printf '   vouchmail: %s s, %s msg/s; stored %s (user list: messages=%s); vouchmail used %s CPU-s; %s; %s\n' \
        "$el" "${R[vm,$mode,$rep]}" "$stored" "$after" "$vmcpu" "$(cpu_report "$c0" "$c1")" "$OTHERS"
    if [ "$stored" -ne "$N" ]; then echo "   ! CHECK FAILED: vouchmail stored $stored, expected $N"; CHECKS_OK=0; fi

    sleep 1
    # Postfix: acceptance (smtp-source returns) and completion (all N in the Maildir).
    before=$(pf_count); c0=$(cpu_sample)
    t0=$(now); load_checked "$PF_PORT" "$flag" "$N"; t1=$(now)
    end=$(( $(date +%s) + DRAIN_TIMEOUT ))
    while [ "$(pf_count)" -lt $((before + N)) ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
    t2=$(now); c1=$(cpu_sample)
    while ! pf_queue_empty && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
    delivered=$(( $(pf_count) - before ))
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    elc=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", b - a }')
    R[pfa,$mode,$rep]=$(rate "$N" "$el")
    R[pf,$mode,$rep]=$(rate "$N" "$elc")
    printf '   postfix:   accepted in %s s (%s msg/s), all delivered in %s s (%s msg/s); delivered %s; %s\n' \
        "$el" "${R[pfa,$mode,$rep]}" "$elc" "${R[pf,$mode,$rep]}" "$delivered" "$(cpu_report "$c0" "$c1")"
    if [ "$delivered" -ne "$N" ]; then
        echo "   ! CHECK FAILED: Postfix delivered $delivered, expected $N (queue: $(postqueue -c "$PF/etc" -p | tail -1))"
        CHECKS_OK=0
    fi
    pf_queue_empty || { echo "   ! CHECK FAILED: Postfix queue not empty after ${DRAIN_TIMEOUT}s"; CHECKS_OK=0; }

    sleep 1
    # smtp-sink: accepts and discards.
    c0=$(cpu_sample); p0=$(proc_cpu "$SINK_PID")
    t0=$(now); load_checked "$SINK_PORT" "$flag" "$N"; t1=$(now)
    c1=$(cpu_sample); p1=$(proc_cpu "$SINK_PID")
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    R[sink,$mode,$rep]=$(rate "$N" "$el")
    others "$c0" "$c1" $((p1 - p0))
    printf '   smtp-sink: %s s, %s msg/s; %s; %s\n' "$el" "${R[sink,$mode,$rep]}" \
        "$(cpu_report "$c0" "$c1")" "$OTHERS"
done
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for mode in new reuse; do
    for k in vm pfa pf sink; do
        vals=()
        for rep in $(seq 1 "$REPEAT"); do vals+=("${R[$k,$mode,$rep]}"); done
        R[$k,$mode]=$(median "${vals[@]}")
        R[$k,$mode,all]="${vals[*]}"
    done
done

# ---------------------------------------------------------------- table
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else print "n/a" }'; }
meets() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t) ? "met" : "MISSED" }'; }
echo
echo "== results, msg/s (Postfix: to the last delivery into the Maildir; [to acceptance only])"
printf '%-6s %10s %17s %7s %7s %10s %8s  %-9s %-9s\n' \
    mode vouchmail "postfix [acc]" vm/pf "[acc]" smtp-sink vm/sink ">=3x pf" ">=1/3 sink"
TARGETS_OK=1
for mode in new reuse; do
    r_pf=$(ratio "${R[vm,$mode]}" "${R[pf,$mode]}")
    r_pfa=$(ratio "${R[vm,$mode]}" "${R[pfa,$mode]}")
    r_sink=$(ratio "${R[vm,$mode]}" "${R[sink,$mode]}" 3)
    t1=$(meets "$r_pf" 3); t2=$(meets "$(ratio "${R[vm,$mode]}" "${R[sink,$mode]}" 6)" 0.333333)
    [ "$t1" = met ] && [ "$t2" = met ] || TARGETS_OK=0
    printf '%-6s %10s %17s %7s %7s %10s %8s  %-9s %-9s\n' "$mode" "${R[vm,$mode]}" \
        "${R[pf,$mode]} [${R[pfa,$mode]}]" "$r_pf" "[$r_pfa]" "${R[sink,$mode]}" "$r_sink" "$t1" "$t2"
done
echo "(new: a new connection per message; reuse: smtp-source -d, several messages per connection)"
if [ "$REPEAT" -gt 1 ]; then
    echo "(medians of $REPEAT interleaved runs; each run's msg/s:"
    for mode in new reuse; do
        printf '   %-6s vouchmail %s | postfix %s [%s] | smtp-sink %s\n' "$mode" "${R[vm,$mode,all]}" \
            "${R[pf,$mode,all]}" "${R[pfa,$mode,all]}" "${R[sink,$mode,all]}"
    done
    echo ")"
fi

# ---------------------------------------------------------------- memory with idle connections
echo
echo "== memory: $IDLE_CONNS idle connections to vouchmail"
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$VM_PID/status"; }
rss0=$(rss_kib)
mkfifo "$TMP/idle.fifo"
python3 - "$VM_PORT" "$IDLE_CONNS" >"$TMP/idle.fifo" 2>"$TMP/idle.err" <<'EOF' &
import resource, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))
socks, greeted, errors = [], 0, 0
for _ in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(512)
            if not chunk:
                break
            buf += chunk
        if buf.startswith(b"220"):
            greeted += 1
        else:
            errors += 1
            sys.stderr.write("unexpected greeting: %r\n" % buf[:100])
        socks.append(s)
    except OSError as e:
        errors += 1
        sys.stderr.write("connect: %s\n" % e)
print("ready %d %d" % (greeted, errors), flush=True)
time.sleep(120)  # held until the benchmark kills this process
EOF
IDLE_PID=$!
line=""
read -r -t 120 line < "$TMP/idle.fifo" || true
greeted=$(echo "$line" | awk '{ print $2 }'); conn_errors=$(echo "$line" | awk '{ print $3 }')
sleep 0.5
rss1=$(rss_kib)
est=$(ss -Htn state established "( sport = :$VM_PORT )" 2>/dev/null | wc -l)
kill "$IDLE_PID" 2>/dev/null; wait "$IDLE_PID" 2>/dev/null || true; IDLE_PID=""
[ -s "$TMP/idle.err" ] && { echo "   idle client errors:"; sort "$TMP/idle.err" | uniq -c | head -5 | sed 's/^/     /'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
mem_ok=$(awk -v k="$rss1" 'BEGIN { print (k < 64 * 1024) ? "met" : "MISSED" }')
printf '   greeted %s of %s (errors %s), %s established on the server side\n' \
    "${greeted:-0}" "$IDLE_CONNS" "${conn_errors:-?}" "$est"
printf '   vouchmail VmRSS: %s MiB before, %s MiB with the connections open (%s KiB per connection)\n' \
    "$(mib "$rss0")" "$(mib "$rss1")" \
    "$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (b - a) / n }')"
echo "   target VmRSS < 64 MiB with $IDLE_CONNS idle connections: $mem_ok"
sleep 1
printf '   VmRSS after closing them: %s MiB\n' "$(mib "$(rss_kib)")"

echo
if [ "$DISTURBED" -gt 0 ]; then
    echo "== WARNING: $DISTURBED vouchmail/smtp-sink runs shared the CPU with other processes (>10%);" \
        "rerun on a quiet machine for figures to trust"
fi
echo "== benchmark took $((SECONDS - BENCH_START)) s (after the build and setup)"
[ "$CHECKS_OK" = 1 ] && [ "$SOURCE_FAILS" = 0 ] && echo "== all delivery checks passed" \
    || echo "== SOME CHECKS FAILED (see above)"
[ "$TARGETS_OK" = 1 ] && [ "$mem_ok" = met ] && echo "== all targets met" || echo "== some targets missed"
if [ -s "$TMP/vm/server.log" ]; then
    echo "== vouchmail log (warnings and errors, first 10 lines):"
    head -10 "$TMP/vm/server.log" | sed 's/^/   /'
fi
exit 0
