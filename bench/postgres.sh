#!/usr/bin/env bash
# The PostgreSQL store against the SQLite one and Postfix (issue 21, "how it is checked").
#
# Inbound, durable acceptance with local delivery: Postfix's smtp-source, SESSIONS parallel
# sessions, MSG_LEN-byte messages to bench@bench.example, N messages per run, once with a new
# connection per message and once with connection reuse (smtp-source -d), to:
#   sqlite   one vouchmail on SQLite (as bench/inbound.sh), on 127.0.0.1
#   pg1      one vouchmail node on PostgreSQL, on 127.0.0.2
#   pg3      three vouchmail nodes on one PostgreSQL database (each `vouchmail serve` with
#            the same config but its own data_dir), on 127.0.0.2, 127.0.0.3 and 127.0.0.4;
#            the load split across them: three smtp-source processes at once, each with a
#            third of the sessions and of the messages
#   postfix  a private Postfix (as bench/inbound.sh), its rate to completion (the last
#            message in the Maildir) and [to acceptance]
# A vouchmail 250 means the message is committed (SQLite: synchronous=FULL; PostgreSQL:
# synchronous_commit=on, fsync=on), so its acceptance is completion. Checked: `vouchmail
# user list` shows N more messages after each run (every message stored exactly once).
#
# Outbound: N messages queued for a remote address (an alias to sink@sink.test, sent through
# [outbound.relay] to smtp-sink on 127.0.0.1, tls = "none") with delivery off, the nodes
# stopped; then timed from starting the nodes (one, or three on 127.0.0.2-4) with delivery
# on until the queue is empty. Checked: the queue is empty and smtp-sink counted exactly N
# more messages (none sent twice by two nodes).
#
# PostgreSQL is a throwaway cluster (initdb into the temp dir, as the postgres user when
# run as root; pg_ctl on a free port on 127.0.0.1, fsync=on, synchronous_commit=on, otherwise
# default settings), stopped and removed at exit. Each configuration (pg1, pg3, and the two
# outbound ones) gets a fresh database. The nodes of a PostgreSQL configuration are started
# for each run and stopped after it: idle nodes of the other configurations neither load the
# database nor blur its figures, and a stopped node's backends have flushed their statistics.
#
# For every PostgreSQL run the script reports msg/s; the CPU milliseconds per message of the
# vouchmail nodes (utime+stime deltas from /proc/PID/stat) and of PostgreSQL (the postmaster's
# utime+stime+cutime+cstime plus its live children's utime+stime, deltas: exited backends
# are counted through the postmaster's cutime/cstime); and commits per second
# (pg_stat_database.xact_commit of the configuration's database, from before its nodes
# start to after they stopped: so it includes their start and stop, a few dozen, and
# excludes the script's own queries). Target printed: one node on PostgreSQL at least 2x
# Postfix to completion.
#
# Each measurement is repeated REPEAT times, interleaved (inbound: sqlite, pg1, pg3, postfix;
# new connections then reuse; and again; then outbound: pg1, pg3; and again), after an
# uncounted warm-up of WARMUP messages per configuration; the tables show medians.
# Environment (defaults): N=10000 REPEAT=3 SESSIONS=20 MSG_LEN=4096 WARMUP=200
#   DRAIN_TIMEOUT=120 (seconds for Postfix's queue, and for an outbound queue, to empty)
#   KEEP_TMP=0 NO_BUILD=0 VOUCHMAIL_PG_BIN (default: the highest /usr/lib/postgresql/*/bin)
# Needs root (the private Postfix runs its daemons as the postfix user; initdb and pg_ctl
# then run as postgres), Postfix (smtp-source, smtp-sink, postfix), PostgreSQL's server
# binaries, python3. Traffic is on loopback addresses only.
# Exit status is non-zero only when setup fails; a failed check is printed, not fatal.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

N=${N:-10000}
SESSIONS=${SESSIONS:-20}
MSG_LEN=${MSG_LEN:-4096}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
WARMUP=${WARMUP:-200}
REPEAT=${REPEAT:-3}
RCPT=bench@bench.example
FROM=sender@client.example
NODE_IPS=(127.0.0.2 127.0.0.3 127.0.0.4)

[ "$(id -u)" -eq 0 ] || die "run as root (the private Postfix needs it)"
for t in smtp-source smtp-sink postfix postconf postqueue python3 awk runuser pgrep; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t"
done
id postfix >/dev/null 2>&1 || die "no postfix user"
id postgres >/dev/null 2>&1 || die "no postgres user (initdb refuses root; Debian's package makes it)"
getent group postdrop >/dev/null 2>&1 || die "no postdrop group"
NOBODY_UID=$(id -u nobody) || die "no nobody user"
NOBODY_GID=$(id -g nobody)
PG_BIN=${VOUCHMAIL_PG_BIN:-$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)}
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/psql" ] \
    || die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql) or in VOUCHMAIL_PG_BIN"
[ "$SESSIONS" -ge 3 ] || die "SESSIONS must be at least 3 (split across three nodes)"

ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || ulimit -n 4096 || die "cannot raise ulimit -n"

# Ports: one for the nodes (free on all three addresses), the rest on 127.0.0.1.
node_port() {
    python3 - "${NODE_IPS[@]}" <<'EOF'
import socket, sys
for _ in range(50):
    s = socket.socket(); s.bind((sys.argv[1], 0)); port = s.getsockname()[1]
    try:
        for ip in sys.argv[2:]:
            t = socket.socket(); t.bind((ip, port)); t.close()
    except OSError:
        continue
    finally:
        s.close()
    print(port); sys.exit(0)
sys.exit(1)
EOF
}
PORTS=()
unique_port() { # a free port on 127.0.0.1 not yet handed out
    local p
    while :; do p=$(free_port); case " ${PORTS[*]} " in *" $p "*) ;; *) break ;; esac; done
    echo "$p"
}
NODE_PORT=$(node_port) || die "no port free on ${NODE_IPS[*]}"
PORTS+=("$NODE_PORT")
VM_PORT=$(unique_port); PORTS+=("$VM_PORT")
PF_PORT=$(unique_port); PORTS+=("$PF_PORT")
SINK_PORT=$(unique_port); PORTS+=("$SINK_PORT")
PG_PORT=$(unique_port); PORTS+=("$PG_PORT")

# ---------------------------------------------------------------- temp dir and cleanup
TMP=$(mktemp -d /tmp/vouchmail-pgbench.XXXXXX)
chmod 755 "$TMP"
VM_PID="" SINK_PID="" PF_STARTED=0 PG_STARTED=0
PF=$TMP/pf
PGDIR=$TMP/pg
declare -a NODE_PIDS=()
pg_stop() {
    [ "$PG_STARTED" = 1 ] || return 0
    timeout 70 runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w -t 60 stop >/dev/null 2>&1
    local pm
    pm=$(head -1 "$PGDIR/data/postmaster.pid" 2>/dev/null || true)
    if [ -n "$pm" ] && kill -0 "$pm" 2>/dev/null; then kill -KILL "$pm" 2>/dev/null; fi
    PG_STARTED=0
}
cleanup() {
    set +e
    local p
    for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
    stop_pid "$VM_PID"
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    pf_stop
    pg_stop
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
build_vouchmail

# ---------------------------------------------------------------- PostgreSQL
mkdir -p "$PGDIR/sock"
chown -R postgres: "$PGDIR"
# --no-sync: only initdb's own final flush, irrelevant for a cluster thrown away; the server
# itself runs with fsync=on.
timeout 120 runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync >"$PGDIR/initdb.log" 2>&1 || { cat "$PGDIR/initdb.log" >&2; die "initdb"; }
PG_STARTED=1
if ! timeout 70 runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='$PGDIR/sock' \
        -c fsync=on -c synchronous_commit=on -c max_connections=200" start >/dev/null 2>&1; then
    cat "$PGDIR/server.log" >&2
    die "pg_ctl start"
fi
POSTMASTER=$(head -1 "$PGDIR/data/postmaster.pid")
psql_db() { # database, then psql arguments
    local db=$1; shift
    timeout 30 "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" -X -At -v ON_ERROR_STOP=1 "$@"
}
PG_VERSION=$(psql_db postgres -c 'SHOW server_version')
[ "$(psql_db postgres -c 'SHOW fsync')" = on ] && [ "$(psql_db postgres -c 'SHOW synchronous_commit')" = on ] \
    || die "PostgreSQL is not running with fsync=on and synchronous_commit=on"
# CPU ticks of the whole cluster: the postmaster with its exited children, and the live ones.
pg_cpu() {
    {
        awk '{ print $14 + $15 + $16 + $17 }' "/proc/$POSTMASTER/stat"
        local c
        for c in $(pgrep -P "$POSTMASTER"); do awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || true; done
    } | awk '{ s += $1 } END { print s + 0 }'
}
xact_commit() { psql_db postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }
# Waits (at most 15 s) until no session is connected to the database: a backend flushes its
# statistics when it exits.
wait_db_idle() {
    local end=$((SECONDS + 15))
    while [ "$(psql_db postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1'")" != 0 ]; do
        [ $SECONDS -lt $end ] || { echo "   ! sessions to $1 still open after 15 s"; return 0; }
        sleep 0.05
    done
}

# ---------------------------------------------------------------- vouchmail on SQLite
mkdir -p "$TMP/sqlite"
VM_CONF=$TMP/sqlite/vouchmail.toml
vm_config "$TMP/sqlite/data" "127.0.0.1:$VM_PORT" > "$VM_CONF"
"$VM" --config "$VM_CONF" serve > "$TMP/sqlite/server.log" 2>&1 &
VM_PID=$!
wait_port "$VM_PORT" 20 || { cat "$TMP/sqlite/server.log" >&2; die "vouchmail did not listen on 127.0.0.1:$VM_PORT"; }
echo "benchpassword" | "$VM" --config "$VM_CONF" user add "$RCPT" --password-stdin >/dev/null \
    || die "vouchmail user add $RCPT"
[ "$(vm_user_count "$VM" "$VM_CONF")" = 0 ] || die "vouchmail user list does not show 0 messages for $RCPT"

# ---------------------------------------------------------------- smtp-sink (outbound)
# -c: a running count of messages received ("mesg=N"), the outbound check.
smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$TMP/sink.count" 2>"$TMP/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT" 20 || { cat "$TMP/sink.err" >&2; die "smtp-sink did not listen on 127.0.0.1:$SINK_PORT"; }
sink_count() { tail -c 200 "$TMP/sink.count" | tr '\r' '\n' | awk -F'mesg=' 'NF > 1 { n = $2 + 0 } END { print n + 0 }'; }
sink_wait() { # until smtp-sink's count reaches $1, at most $2 seconds
    python3 - "$TMP/sink.count" "$1" "$2" <<'EOF'
import os, re, sys, time
path, target, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + limit
with open(path, "rb") as f:
    while time.time() < end:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 200))
        counts = re.findall(rb"mesg=(\d+)", f.read())
        if counts and int(counts[-1]) >= target:
            sys.exit(0)
        time.sleep(0.02)
sys.exit(1)
EOF
}

# ---------------------------------------------------------------- vouchmail on PostgreSQL
# A configuration: its database, its nodes' configs ($TMP/<cfg>/node<i>.toml, and for
# outbound node<i>.queue.toml with delivery off), started and stopped as a whole.
# $1 = name, $2 = nodes, $3 = in|out.
declare -A CFG_NODES
pg_config() {
    local cfg=$1 nodes=$2 kind=$3 i dir
    CFG_NODES[$cfg]=$nodes
    psql_db postgres -q -c "CREATE DATABASE $cfg" || die "CREATE DATABASE $cfg"
    for i in $(seq 1 "$nodes"); do
        dir=$TMP/$cfg/node$i
        mkdir -p "$dir"
        {
            vm_config "$dir/data" "${NODE_IPS[$((i - 1))]}:$NODE_PORT"
            printf '\n[store]\nbackend = "postgres"\nurl = "postgres://postgres@127.0.0.1:%s/%s"\n' "$PG_PORT" "$cfg"
        } > "$dir.base.toml"
        if [ "$kind" = in ]; then
            cp "$dir.base.toml" "$TMP/$cfg/node$i.toml"
        else
            for on in true false; do
                {
                    cat "$dir.base.toml"
                    printf '\n[outbound]\nenabled = %s\ntls = "none"\nmax_connections_per_destination = %s\n' "$on" "$SESSIONS"
                    printf '\n[outbound.relay]\nhost = "127.0.0.1:%s"\ntls = "none"\n' "$SINK_PORT"
                } > "$TMP/$cfg/node$i.$([ $on = true ] && echo toml || echo queue.toml)"
            done
        fi
    done
    # The store's first start (migrations, bootstrap of bench.example) by one process.
    "$VM" --config "$(node_conf "$cfg" 1)" init >/dev/null || die "vouchmail init ($cfg)"
    if [ "$kind" = in ]; then
        echo "benchpassword" | "$VM" --config "$(node_conf "$cfg" 1)" user add "$RCPT" --password-stdin >/dev/null \
            || die "vouchmail user add $RCPT ($cfg)"
        [ "$(vm_user_count "$VM" "$(node_conf "$cfg" 1)")" = 0 ] || die "user list ($cfg) does not show 0 messages"
    else
        "$VM" --config "$(node_conf "$cfg" 1)" alias add "$RCPT" sink@sink.test >/dev/null || die "alias add ($cfg)"
    fi
}
node_conf() { echo "$TMP/$1/node$2.${3:-toml}"; } # cfg, node, [queue.toml]
# Starts the nodes ($1 = cfg, $2 = how many, $3 = toml or queue.toml) and waits (at most
# 20 s) until every one listens; NODE_PIDS holds them, NODES_UP the seconds each took.
start_nodes() {
    local cfg=$1 count=$2 which=${3:-toml} i t0
    NODE_PIDS=()
    t0=$(now)
    for i in $(seq 1 "$count"); do
        "$VM" --config "$(node_conf "$cfg" "$i" "$which")" serve >>"$TMP/$cfg/node$i.log" 2>&1 &
        NODE_PIDS+=($!)
    done
    if ! NODES_UP=$(python3 - "$t0" "$NODE_PORT" "${NODE_IPS[@]:0:$count}" <<'EOF'
import socket, sys, time
t0, port, ips = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
up = {}
while len(up) < len(ips) and time.time() < t0 + 20:
    for ip in ips:
        if ip in up:
            continue
        try:
            socket.create_connection((ip, port), timeout=1).close()
            up[ip] = time.time() - t0
        except OSError:
            pass
    time.sleep(0.01)
print(" ".join("%.2f" % up[ip] if ip in up else "never" for ip in ips))
sys.exit(0 if len(up) == len(ips) else 1)
EOF
    ); then
        tail -5 "$TMP/$cfg"/node*.log >&2
        die "the nodes of $cfg did not all listen on :$NODE_PORT within 20 s (seconds each: $NODES_UP)"
    fi
}
# Stops the nodes (all at once) and waits until their database sessions are gone.
stop_nodes() {
    local p
    for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
    NODE_PIDS=()
    wait_db_idle "$1"
}
nodes_cpu() { local p s=0; for p in "${NODE_PIDS[@]}"; do s=$((s + $(proc_cpu "$p"))); done; echo $s; }
# Each node's share of the nodes' CPU since $1 (ticks per node, space-separated), "" for one.
node_shares() {
    [ "${#NODE_PIDS[@]}" -gt 1 ] || return 0
    local -a before now_=()
    local p i tot=0
    read -r -a before <<< "$1"
    for p in "${NODE_PIDS[@]}"; do now_+=("$(proc_cpu "$p")"); done
    for i in "${!now_[@]}"; do tot=$((tot + now_[i] - ${before[i]:-0})); done
    printf ' (shares'
    for i in "${!now_[@]}"; do printf ' %s%%' "$(awk -v a=$((now_[i] - ${before[i]:-0})) -v t=$tot 'BEGIN { printf "%.0f", (t > 0) ? 100 * a / t : 0 }')"; done
    printf ')'
}
node_ticks() { local p; for p in "${NODE_PIDS[@]}"; do printf '%s ' "$(proc_cpu "$p")"; done; }

# smtp-source split across $4 nodes: node i gets an equal share of the sessions and messages
# (the first ones the remainders); all at once. $1 = port, $2 = flag, $3 = count.
# Sets SRC_TICKS to their CPU.
load_split() {
    local port=$1 flag=$2 count=$3 k=$4 i n s pids=()
    for i in $(seq 1 "$k"); do
        n=$((count / k + (i <= count % k ? 1 : 0)))
        s=$((SESSIONS / k + (i <= SESSIONS % k ? 1 : 0)))
        load "$port" "$flag" "$n" "${NODE_IPS[$((i - 1))]}" "$s" "source$i" &
        pids+=($!)
    done
    SRC_TICKS=0
    for i in $(seq 1 "$k"); do
        if ! wait "${pids[$((i - 1))]}"; then
            SOURCE_FAILS=$((SOURCE_FAILS + 1))
            echo "   ! smtp-source to node $i failed:"; head -5 "$TMP/source$i.err" | sed 's/^/     /'
        elif [ -s "$TMP/source$i.err" ]; then
            echo "   ! smtp-source to node $i stderr:"; head -5 "$TMP/source$i.err" | sed 's/^/     /'
        fi
        SRC_TICKS=$((SRC_TICKS + $(source_ticks "source$i")))
    done
}

ms_per_msg() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.3f", 1000 * t / hz / n }'; }
per_s() { awk -v c="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.0f", c / t; else print "n/a" }'; }
declare -A R    # R[cfg,mode,rep] msg/s; C[...] node CPU ms/msg; G[...] PostgreSQL CPU ms/msg;
declare -A C G X XM # X[...] commits/s, XM[...] commits per message
declare -A D    # D[cfg,mode,rep]=1: the run was DISTURBED (others, after the run's others call)
mark() { if [[ $OTHERS == *DISTURBED* ]]; then D[$1,$2,$rep]=1; fi; }
CHECKS_OK=1

# One inbound run on a PostgreSQL configuration ($1 = cfg, $2 = count, $3 = record or not),
# in $mode with $flag.
pg_in_run() {
    local cfg=$1 count=$2 record=$3 k=${CFG_NODES[$1]} conf before after stored x0 x1
    local c0 c1 p0 p1 g0 g1 t0 t1 el
    conf=$(node_conf "$cfg" 1)
    before=$(vm_user_count "$VM" "$conf")
    wait_db_idle "$cfg"
    x0=$(xact_commit "$cfg")
    start_nodes "$cfg" "$k"
    sleep 1
    c0=$(cpu_sample); p0=$(nodes_cpu); g0=$(pg_cpu); local ticks0 shares
    ticks0=$(node_ticks)
    t0=$(now); load_split "$NODE_PORT" "$flag" "$count" "$k"; t1=$(now)
    c1=$(cpu_sample); p1=$(nodes_cpu); g1=$(pg_cpu)
    shares=$(node_shares "$ticks0")
    stop_nodes "$cfg"
    x1=$(xact_commit "$cfg")
    after=$(vm_user_count "$VM" "$conf"); stored=$((after - before))
    [ "$record" = record ] || return 0
    el=$(elapsed "$t0" "$t1")
    R[$cfg,$mode,$rep]=$(rate "$count" "$el")
    C[$cfg,$mode,$rep]=$(ms_per_msg $((p1 - p0)) "$count")
    G[$cfg,$mode,$rep]=$(ms_per_msg $((g1 - g0)) "$count")
    X[$cfg,$mode,$rep]=$(per_s $((x1 - x0)) "$el")
    XM[$cfg,$mode,$rep]=$(awk -v c=$((x1 - x0)) -v n="$count" 'BEGIN { printf "%.2f", c / n }')
    others "$c0" "$c1" $((p1 - p0 + g1 - g0)) "$SRC_TICKS"
    mark "$cfg" "$mode"
    printf '   %-8s %s s, %s msg/s; stored %s; CPU ms/msg: nodes %s%s, PostgreSQL %s; %s commits (%s/s, %s per message); %s; %s\n' \
        "$cfg:" "$el" "${R[$cfg,$mode,$rep]}" "$stored" "${C[$cfg,$mode,$rep]}" "$shares" "${G[$cfg,$mode,$rep]}" \
        $((x1 - x0)) "${X[$cfg,$mode,$rep]}" "${XM[$cfg,$mode,$rep]}" "$(cpu_report "$c0" "$c1")" "$OTHERS"
    if [ "$stored" -ne "$count" ]; then echo "   ! CHECK FAILED: $cfg stored $stored, expected $count"; CHECKS_OK=0; fi
}

pending() { psql_db "$1" -c "SELECT count(*) FROM queue WHERE state NOT IN ('delivered','bounced')"; }
# One outbound run ($1 = cfg, $2 = count, $3 = record or not): queue $2 messages through
# node 1 with delivery off, stop it; then start the nodes with delivery on and time until
# the queue is empty.
pg_out_run() {
    local cfg=$1 count=$2 record=$3 k=${CFG_NODES[$1]} queued s0 s1 x0 x1 polls=0 left
    local c0 c1 p1 g0 g1 t0 t1 el end up=""
    start_nodes "$cfg" 1 queue.toml
    load "$NODE_PORT" -d "$count" "${NODE_IPS[0]}" "$SESSIONS" source1 \
        || { head -5 "$TMP/source1.err"; die "smtp-source to $cfg (queueing)"; }
    stop_nodes "$cfg"
    queued=$(pending "$cfg")
    [ "$queued" = "$count" ] || { echo "   ! CHECK FAILED: $cfg queued $queued, expected $count"; CHECKS_OK=0; }
    wait_db_idle "$cfg"
    x0=$(xact_commit "$cfg"); s0=$(sink_count)
    c0=$(cpu_sample); g0=$(pg_cpu); local k0 k1
    k0=$(proc_cpu "$SINK_PID")
    t0=$(now)
    start_nodes "$cfg" "$k"
    up=$NODES_UP
    end=$((SECONDS + DRAIN_TIMEOUT))
    # Until smtp-sink has them all (one process reading its counter every 20 ms: a loop of
    # tail and awk would cost the run 10-15% of this machine), then until the queue is empty.
    sink_wait $((s0 + count)) "$DRAIN_TIMEOUT" || true
    while :; do
        left=$(pending "$cfg"); polls=$((polls + 1))
        [ "$left" = 0 ] || [ $SECONDS -ge $end ] && break
        sleep 0.02
    done
    t1=$(now)
    c1=$(cpu_sample); p1=$(nodes_cpu); g1=$(pg_cpu); k1=$(proc_cpu "$SINK_PID")
    local shares; shares=$(node_shares "")
    stop_nodes "$cfg"
    x1=$(xact_commit "$cfg"); s1=$(sink_count)
    [ "$record" = record ] || return 0
    el=$(elapsed "$t0" "$t1")
    local commits=$((x1 - x0 - polls))
    R[$cfg,out,$rep]=$(rate "$count" "$el")
    C[$cfg,out,$rep]=$(ms_per_msg "$p1" "$count")
    G[$cfg,out,$rep]=$(ms_per_msg $((g1 - g0)) "$count")
    X[$cfg,out,$rep]=$(per_s "$commits" "$el")
    XM[$cfg,out,$rep]=$(awk -v c="$commits" -v n="$count" 'BEGIN { printf "%.2f", c / n }')
    others "$c0" "$c1" $((p1 + g1 - g0 + k1 - k0)) 0   # smtp-sink is part of this run
    mark "$cfg" out
    printf '   %-8s %s s (nodes listening after %s s), %s msg/s; smtp-sink got %s, %s left in the queue; CPU ms/msg: nodes %s%s, PostgreSQL %s; %s commits (%s/s, %s per message); %s; %s\n' \
        "$cfg:" "$el" "$up" "${R[$cfg,out,$rep]}" $((s1 - s0)) "$left" "${C[$cfg,out,$rep]}" "$shares" "${G[$cfg,out,$rep]}" \
        "$commits" "${X[$cfg,out,$rep]}" "${XM[$cfg,out,$rep]}" "$(cpu_report "$c0" "$c1")" "$OTHERS"
    if [ "$left" != 0 ] || [ $((s1 - s0)) -ne "$count" ]; then
        echo "   ! CHECK FAILED: $cfg: smtp-sink got $((s1 - s0)) of $count, $left left in the queue"; CHECKS_OK=0
    fi
}

# The SQLite vouchmail ($mode, $flag, $rep), as bench/inbound.sh.
sqlite_run() {
    local before after stored c0 c1 p0 p1 t0 t1 el
    before=$(vm_user_count "$VM" "$VM_CONF"); c0=$(cpu_sample); p0=$(proc_cpu "$VM_PID")
    t0=$(now); load_checked "$VM_PORT" "$flag" "$N"; t1=$(now)
    c1=$(cpu_sample); p1=$(proc_cpu "$VM_PID")
    el=$(elapsed "$t0" "$t1")
    R[sqlite,$mode,$rep]=$(rate "$N" "$el")
    C[sqlite,$mode,$rep]=$(ms_per_msg $((p1 - p0)) "$N")
    after=$(vm_user_count "$VM" "$VM_CONF"); stored=$((after - before))
    others "$c0" "$c1" $((p1 - p0))
    mark sqlite "$mode"
    printf '   %-8s %s s, %s msg/s; stored %s; CPU ms/msg: vouchmail %s; %s; %s\n' "sqlite:" "$el" \
        "${R[sqlite,$mode,$rep]}" "$stored" "${C[sqlite,$mode,$rep]}" "$(cpu_report "$c0" "$c1")" "$OTHERS"
    if [ "$stored" -ne "$N" ]; then echo "   ! CHECK FAILED: sqlite stored $stored, expected $N"; CHECKS_OK=0; fi
}

# The private Postfix ($mode, $flag, $rep), as bench/inbound.sh: to acceptance and completion.
postfix_run() {
    local before delivered c0 c1 t0 t1 t2 end el elc
    before=$(pf_count); c0=$(cpu_sample)
    t0=$(now); load_checked "$PF_PORT" "$flag" "$N"; t1=$(now)
    end=$(( $(date +%s) + DRAIN_TIMEOUT ))
    while [ "$(pf_count)" -lt $((before + N)) ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
    t2=$(now); c1=$(cpu_sample)
    while ! pf_queue_empty && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
    delivered=$(( $(pf_count) - before ))
    el=$(elapsed "$t0" "$t1"); elc=$(elapsed "$t0" "$t2")
    R[pfa,$mode,$rep]=$(rate "$N" "$el")
    R[postfix,$mode,$rep]=$(rate "$N" "$elc")
    printf '   %-8s accepted in %s s (%s msg/s), all delivered in %s s (%s msg/s); delivered %s; %s\n' "postfix:" \
        "$el" "${R[pfa,$mode,$rep]}" "$elc" "${R[postfix,$mode,$rep]}" "$delivered" "$(cpu_report "$c0" "$c1")"
    if [ "$delivered" -ne "$N" ]; then
        echo "   ! CHECK FAILED: Postfix delivered $delivered, expected $N (queue: $(postqueue -c "$PF/etc" -p | tail -1))"
        CHECKS_OK=0
    fi
    pf_queue_empty || { echo "   ! CHECK FAILED: Postfix queue not empty after ${DRAIN_TIMEOUT}s"; CHECKS_OK=0; }
}

# ---------------------------------------------------------------- setup of the rest
pf_start "$PF_PORT"
pg_config pg1 1 in
pg_config pg3 3 in
pg_config out1 1 out
pg_config out3 3 out

echo "== machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo), kernel $(uname -r)"
busy_report
echo "== PostgreSQL $PG_VERSION ($PG_BIN) on 127.0.0.1:$PG_PORT, fsync=on, synchronous_commit=on; Postfix $(postconf -dh mail_version)"
echo "== N=$N messages per run, $REPEAT runs per figure (median), $SESSIONS sessions, $MSG_LEN-byte messages, to $RCPT"
echo "== ports: sqlite 127.0.0.1:$VM_PORT, nodes ${NODE_IPS[*]} :$NODE_PORT, postfix $PF_PORT, smtp-sink $SINK_PORT; temp dir $TMP"

BENCH_START=$SECONDS
# Warm-up (not counted): one small run per configuration, so that no run pays for first use.
mode=warmup flag="" rep=0
load_checked "$VM_PORT" "" "$WARMUP"
load_checked "$PF_PORT" "" "$WARMUP"
pg_in_run pg1 "$WARMUP" no
pg_in_run pg3 "$WARMUP" no
pg_out_run out1 "$WARMUP" no
pg_out_run out3 "$WARMUP" no
end=$(( $(date +%s) + DRAIN_TIMEOUT ))
while { [ "$(pf_count)" -lt "$WARMUP" ] || ! pf_queue_empty; } && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done

for rep in $(seq 1 "$REPEAT"); do
    for mode in new reuse; do
        flag=""; [ $mode = reuse ] && flag="-d"
        label="new connection per message"; [ $mode = reuse ] && label="connection reuse (-d)"
        echo
        echo "== inbound run $rep of $REPEAT, mode: $label"
        sleep 1; sqlite_run
        sleep 1; pg_in_run pg1 "$N" record
        sleep 1; pg_in_run pg3 "$N" record
        sleep 1; postfix_run
    done
done
mode=out
for rep in $(seq 1 "$REPEAT"); do
    echo
    echo "== outbound run $rep of $REPEAT: $N queued messages to smtp-sink"
    sleep 1; pg_out_run out1 "$N" record
    sleep 1; pg_out_run out3 "$N" record
done

# ---------------------------------------------------------------- medians
runs() { # each run's value of R/C/G/X/XM ($1 = array name, $2 = cfg, $3 = mode)
    local -n arr=$1
    local vals=() r
    for r in $(seq 1 "$REPEAT"); do vals+=("${arr[$2,$3,$r]:-0}"); done
    echo "${vals[*]}"
}
starred() { # each run's msg/s, a * after those DISTURBED
    local vals=() r
    for r in $(seq 1 "$REPEAT"); do vals+=("${R[$1,$2,$r]:-0}${D[$1,$2,$r]:+*}"); done
    echo "${vals[*]}"
}
med() { # their median
    # shellcheck disable=SC2046
    printf '%s\n' $(runs "$@") | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}
fmt_rate() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }

echo
echo "== inbound results (medians of $REPEAT runs; postfix: to the last delivery into the Maildir [to acceptance])"
printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' mode config "msg/s" "each run" "node CPU" "PG CPU" "commits/s" "commits"
printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' "" "" "" "" "ms/msg" "ms/msg" "" "per msg"
for mode in new reuse; do
    for cfg in sqlite pg1 pg3 postfix; do
        m=$(fmt_rate "$(med R $cfg $mode)"); each=$(starred $cfg $mode)
        case $cfg in
            sqlite) printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' "$mode" "$cfg" "$m" "$each" "$(med C $cfg $mode)" - - - ;;
            postfix)
                a=$(fmt_rate "$(med R pfa $mode)")
                printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' "$mode" "$cfg" "$m" "$each" - - - -
                printf '%-6s %-8s %9s  %-20s\n' "" "[acc]" "[$a]" "[$(runs R pfa $mode)]" ;;
            *) printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' "$mode" "$cfg" "$m" "$each" "$(med C $cfg $mode)" \
                   "$(med G $cfg $mode)" "$(fmt_rate "$(med X $cfg $mode)")" "$(med XM $cfg $mode)" ;;
        esac
    done
done
echo
echo "== outbound results (medians of $REPEAT runs; timed from starting the nodes to an empty queue)"
printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' mode config "msg/s" "each run" "node CPU" "PG CPU" "commits/s" "commits"
for cfg in out1 out3; do
    printf '%-6s %-8s %9s  %-20s %9s %9s %9s %9s\n' out "$cfg" "$(fmt_rate "$(med R $cfg out)")" "$(starred $cfg out)" \
        "$(med C $cfg out)" "$(med G $cfg out)" "$(fmt_rate "$(med X $cfg out)")" "$(med XM $cfg out)"
done
echo
echo "== ratios and target (one node on PostgreSQL >= 2x Postfix to completion)"
TARGETS_OK=1
for mode in new reuse; do
    pg1=$(med R pg1 $mode); pg3=$(med R pg3 $mode); sq=$(med R sqlite $mode); pf=$(med R postfix $mode)
    r=$(ratio "$pg1" "$pf"); t=$(meets "$r" 2); [ "$t" = met ] || TARGETS_OK=0
    printf '   %-6s pg1/postfix %s (%s); pg1/sqlite %s; pg3/pg1 %s; pg3/postfix %s\n' "$mode" "$r" "$t" \
        "$(ratio "$pg1" "$sq")" "$(ratio "$pg3" "$pg1")" "$(ratio "$pg3" "$pf")"
done
printf '   out    out3/out1 %s\n' "$(ratio "$(med R out3 out)" "$(med R out1 out)")"
echo "(* after a run's msg/s: DISTURBED, other processes used more than 10% of the machine during it)"

echo
if [ "$DISTURBED" -gt 0 ]; then
    echo "== WARNING: $DISTURBED runs shared the CPU with other processes (>10%);" \
        "rerun on a quiet machine for figures to trust"
fi
echo "== benchmark took $((SECONDS - BENCH_START)) s (after the build and setup)"
[ "$CHECKS_OK" = 1 ] && [ "$SOURCE_FAILS" = 0 ] && echo "== all delivery checks passed" \
    || echo "== SOME CHECKS FAILED (see above)"
[ "$TARGETS_OK" = 1 ] && echo "== target met" || echo "== target missed"
for log in "$TMP"/sqlite/server.log "$TMP"/*/node*.log; do
    [ -s "$log" ] || continue
    echo "== ${log#"$TMP"/} (warnings and errors, first 5 lines):"
    head -5 "$log" | sed 's/^/   /'
done
exit 0
