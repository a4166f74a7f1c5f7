# Shell functions shared by the SMTP benchmarks (bench/inbound.sh, bench/postgres.sh).
# Sourced, not run: it defines functions and HZ, and starts nothing. The functions use the
# caller's globals where named: ROOT (the checkout), TMP (the temp dir), SESSIONS, MSG_LEN,
# FROM, RCPT (the load), and set DISTURBED, OTHERS, SOURCE_FAILS as described below.
# shellcheck shell=bash disable=SC2034,SC2120

die() { echo "setup failed: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port seconds [host]: 0 once something accepts on host:port
    python3 - "$1" "$2" "${3:-127.0.0.1}" <<'EOF'
import socket, sys, time
port, limit, host = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
end = time.time() + limit
while time.time() < end:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# Stops a process we started: SIGTERM, up to 10 s for it to exit, then SIGKILL.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- build
# cargo build --release -p vouchmail, retried while another edit may be in progress.
# Unless NO_BUILD=1. Sets VM to the binary: VM_BIN when set (a copy that a concurrent build
# in the same target dir cannot replace mid-run; implies no build), else the release build.
build_vouchmail() {
    if [ -n "${VM_BIN:-}" ]; then
        VM=$(cd "$(dirname "$VM_BIN")" && pwd)/$(basename "$VM_BIN")
        [ -x "$VM" ] || die "VM_BIN=$VM_BIN is not an executable"
        return 0
    fi
    if [ "${NO_BUILD:-0}" != 1 ]; then
        echo "== building vouchmail (release)"
        local ok=0 attempt
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
}

# ---------------------------------------------------------------- vouchmail
# Only the MX listener: every other role the example config knows is turned off, so the
# benchmark neither competes for the dev ports nor serves anything else.
listeners_off() {
    awk '/^\[/ { inl = ($0 == "[listeners]") } inl && /^[a-z0-9_]+ *=/ { print $1 }' \
        "$ROOT/vouchmail.example.toml" 2>/dev/null | grep -vx -e mx -e submission | sed 's/$/ = []/'
}
# The benchmark's vouchmail config on stdout: $1 = data_dir, $2 = MX address (ip:port),
# $3 = whether to write [dmarc] (yes, no; default: when this checkout's example config has
# the section); bench.example with policy accept; generous connection and error limits.
# Append sections to it as needed.
# [dmarc] verify = false: the checks of internet senders (SPEC 13, on by default) would look
# up SPF, DKIM and DMARC records of client.example and the PTR of 127.0.0.1 in the system's
# DNS for every message, so the benchmark would measure the resolver (and send queries off
# loopback) instead of acceptance, which is what every earlier figure measured. A build from
# before SPEC 13 refuses the unknown section: `vm_knows_dmarc` tells.
vm_config() {
    local dmarc=${3:-auto}
    if [ "$dmarc" = auto ]; then
        dmarc=no; grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null && dmarc=yes
    fi
    cat <<EOF
hostname = "bench.example"
data_dir = "$1"
log = "warn"

[listeners]
mx = ["$2"]
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
    if [ "$dmarc" = yes ]; then printf '\n[dmarc]\nverify = false\n'; fi
}
# Whether a vouchmail binary ($1) takes a [dmarc] section: an older one names it in its
# refusal of the config file ($2, written with it).
vm_knows_dmarc() {
    local refusal
    refusal=$("$1" --config "$2" user list 2>&1 >/dev/null || true)
    [[ $refusal != *'unknown field `dmarc`'* ]]
}
# Messages in RCPT's account from `user list` (binary, config); -1 when not found.
vm_user_count() {
    # Columns: ADDRESS MESSAGES USED QUOTA, under a header row.
    "$1" --config "$2" user list | awk -v r="$RCPT" '$1 == r { print $2; found = 1 } END { if (!found) print -1 }' \
        || echo -1
}

# ---------------------------------------------------------------- private Postfix
# A private Postfix instance under $PF (own config, queue and data directories) whose smtpd
# listens on 127.0.0.1:$1 and delivers RCPT through virtual(8) to a Maildir under $PF/mail
# (owned by NOBODY_UID:NOBODY_GID). Sets PF_STARTED=1 and PF_MAILDIR. Needs root.
pf_start() {
    local port=$1
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
127.0.0.1:$port inet n - n - - smtpd
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
    wait_port "$port" 20 || { cat "$PF/maillog" >&2; die "Postfix did not listen on 127.0.0.1:$port"; }
    PF_MAILDIR=$PF/mail/bench
}
# Stops the private Postfix (for a cleanup trap): postfix stop, then its master if it lingers.
pf_stop() {
    [ "${PF_STARTED:-0}" = 1 ] || return 0
    postfix -c "$PF/etc" stop >/dev/null 2>&1
    local mpid
    mpid=$(tr -dc 0-9 < "$PF/queue/pid/master.pid" 2>/dev/null)
    if [ -n "$mpid" ]; then
        for _ in $(seq 1 100); do kill -0 "$mpid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$mpid" 2>/dev/null
    fi
    return 0
}
pf_count() { # messages in the Maildir
    local n=0 d
    for d in new cur; do
        [ -d "$PF_MAILDIR/$d" ] && n=$((n + $(ls -U "$PF_MAILDIR/$d" | wc -l)))
    done
    echo $n
}
pf_queue_empty() { postqueue -c "$PF/etc" -p 2>/dev/null | grep -q 'Mail queue is empty'; }

# ---------------------------------------------------------------- measuring
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }'; }
cpu_sample() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5, $6 }' /proc/stat; } # busy idle iowait
cpu_report() { # before after -> "busy% iowait%"
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1]-x[1]; idle = y[2]-x[2]; io = y[3]-x[3]; tot = busy+idle+io;
        if (tot > 0) printf "cpu busy %.0f%%, iowait %.0f%%", 100*busy/tot, 100*io/tot }'
}
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime+stime in clock ticks
# CHILD_TICKS: CPU ticks of this shell's finished children, from the `times` builtin's
# second line. Call it directly, not in a command substitution (that would be a fresh
# subshell's).
mark_children() {
    times >"$TMP/times"
    CHILD_TICKS=$(awk -v hz="$HZ" 'NR == 2 { t = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
        printf "%.0f", t * hz }' "$TMP/times")
}
HZ=$(getconf CLK_TCK)

# smtp-source with the common load: $1 = port, $2 = mode flag ("" or -d), $3 = count,
# $4 = host (127.0.0.1), $5 = sessions ($SESSIONS), $6 = name of its files in $TMP (source:
# source.out, source.err, source.time with its user and system CPU seconds).
load() {
    local port=$1 flag=$2 count=$3 host=${4:-127.0.0.1} sessions=${5:-$SESSIONS} name=${6:-source}
    local TIMEFORMAT='%U %S'
    # shellcheck disable=SC2086
    { time smtp-source $flag -s "$sessions" -l "$MSG_LEN" -m "$count" -f "$FROM" -t "$RCPT" \
        "$host:$port" >"$TMP/$name.out" 2>"$TMP/$name.err"; } 2>"$TMP/$name.time"
}
source_ticks() { awk -v hz="$HZ" '{ printf "%.0f", ($1 + $2) * hz }' "$TMP/${1:-source}.time"; }
DISTURBED=0
# Share of the machine used by processes other than the server under test and smtp-source:
# other engineers' builds on a shared machine make a run meaningless. $1 $2 = cpu_sample
# before/after, $3 = server CPU ticks in the run, $4 = smtp-source CPU ticks (default: the
# last load's). Sets OTHERS (text) and counts DISTURBED.
others() {
    local pct
    pct=$(awk -v a="$1" -v b="$2" -v srv="$3" -v src="${4:-$(source_ticks)}" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1]-x[1]; tot = busy + (y[2]-x[2]) + (y[3]-x[3]);
        o = (tot > 0) ? 100 * (busy - srv - src) / tot : 0; if (o < 0) o = 0; printf "%.0f", o }')
    if [ "$pct" -gt 10 ]; then
        DISTURBED=$((DISTURBED + 1)); OTHERS="other processes ${pct}% (DISTURBED)"
    else
        OTHERS="other processes ${pct}%"
    fi
}
SOURCE_FAILS=0
# load, with a failure or anything on smtp-source's stderr printed and counted.
load_checked() {
    local name=${6:-source}
    if ! load "$@"; then
        SOURCE_FAILS=$((SOURCE_FAILS + 1))
        echo "   ! smtp-source failed:"; head -5 "$TMP/$name.err" | sed 's/^/     /'
    elif [ -s "$TMP/$name.err" ]; then
        echo "   ! smtp-source stderr:"; head -5 "$TMP/$name.err" | sed 's/^/     /'
    fi
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else print "n/a" }'; }
meets() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t) ? "met" : "MISSED" }'; }

# How busy the machine is before the runs (over 2 s), with a warning and the busiest
# processes when others keep it 20% busy or more.
busy_report() {
    local c0 c1 busy
    c0=$(cpu_sample); sleep 2; c1=$(cpu_sample)
    echo "== before the runs: load average $(cut -d' ' -f1-3 /proc/loadavg); machine over the last 2 s: $(cpu_report "$c0" "$c1")"
    busy=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = (y[1]-x[1]) + (y[2]-x[2]) + (y[3]-x[3]); print (t > 0) ? int(100 * (y[1]-x[1]) / t) : 0 }')
    if [ "$busy" -ge 20 ]; then
        echo "== WARNING: other processes keep the machine ${busy}% busy; the figures will be noisy. Busiest:"
        ps -eo pcpu=,comm= --sort=-pcpu | head -3 | sed 's/^/   /'
    fi
}
