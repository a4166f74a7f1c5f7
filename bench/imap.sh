#!/usr/bin/env bash
# IMAP benchmark (issue 23): vouchmail against Dovecot, in one run, through our own Rust
# IMAP client (crates/vouchmail/tests/imap_client.rs, bench_imap, release build):
#  - load: N messages of MSG_LEN octets APPENDed to INBOX of both (100 in flight, LITERAL+
#    to Dovecot, LITERAL- to vouchmail), one in three \Seen;
#  - then REPEAT rounds (after a warm-up round), the servers' order alternating, each on a
#    fresh logged-in connection: SELECT + FETCH of the N messages' headers
#    (BODY.PEEK[HEADER]); FETCH of BODIES whole messages (BODY.PEEK[], a different range
#    each round); SEARCH SUBJECT, TEXT and UNSEEN; STORE +FLAGS.SILENT / -FLAGS.SILENT on
#    all N. Medians; target: every operation at least as fast as Dovecot;
#  - memory: IDLE_CONNS connections logged in with INBOX selected, in IDLE; VmRSS of the
#    vouchmail process before and after, against the RSS summed over every Dovecot process
#    (and PSS, which counts shared pages once); target: at most a tenth of Dovecot's per
#    idle connection.
# vouchmail: the release binary as its own process, its own config and data dir in a temp
# dir, the imap listener only. Dovecot: `dovecot -F` with its own base_dir and config in the
# temp dir, Maildir, passwd-file passdb, static userdb (user nobody: Dovecot refuses mail
# access as root), ssl = no, process and client limits raised for the connections.
# Environment (defaults): N=10000 BODIES=1000 REPEAT=3 MSG_LEN=2048 IDLE_CONNS=1000
#   KEEP_TMP=0 NO_BUILD=0 PERF=0 (1: perf record vouchmail during the run, report at the end)
# Needs root (Dovecot's privilege separation), dovecot-imapd, python3. Loopback only.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

export N=${N:-10000} BODIES=${BODIES:-1000} REPEAT=${REPEAT:-3} MSG_LEN=${MSG_LEN:-2048}
export IDLE_CONNS=${IDLE_CONNS:-1000}
USER_ADDR=bench@bench.example
PASSWORD=benchpassword

[ "$(id -u)" -eq 0 ] || die "run as root (Dovecot's privilege separation needs it)"
command -v dovecot >/dev/null 2>&1 || die "missing dovecot (Debian: dovecot-imapd)"
id dovenull >/dev/null 2>&1 && id dovecot >/dev/null 2>&1 || die "no dovecot/dovenull users"
# Descriptors for IDLE_CONNS connections on both ends (the servers inherit this limit).
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || ulimit -n 4096 || die "cannot raise ulimit -n"

VM_PORT=$(free_port)
DC_PORT=$(free_port)
while [ "$DC_PORT" = "$VM_PORT" ]; do DC_PORT=$(free_port); done

TMP=$(mktemp -d /tmp/vouchmail-imapbench.XXXXXX)
chmod 755 "$TMP"
VM_PID="" DC_PID="" PERF_PID=""
cleanup() {
    set +e
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    stop_pid "$VM_PID"
    stop_pid "$DC_PID"
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_vouchmail
echo "== building the benchmark client (release)"
# The test binary is run directly, so that nothing is rebuilt between the servers' start
# and the run (other edits in the tree would make `cargo test` compile again).
BENCH_BIN=$(cargo test --release -q -p vouchmail --test imap_client --no-run --message-format=json 2>"$TMP/build-test.log" \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "imap_client":
        print(m["executable"])') || true
[ -x "$BENCH_BIN" ] || { tail -20 "$TMP/build-test.log"; die "cargo test --no-run (imap_client)"; }

# ---------------------------------------------------------------- vouchmail
mkdir -p "$TMP/vm"
VM_CONF=$TMP/vm/vouchmail.toml
{
    cat <<EOF
hostname = "bench.example"
data_dir = "$TMP/vm/data"
log = "warn"

[listeners]
$(listeners_off | grep -vx 'imap = \[\]')
mx = []
submission = []
imap = ["127.0.0.1:$VM_PORT"]

[bootstrap]
domain = "bench.example"
policy = "accept"
postmaster = false

[imap]
allow_plaintext_login = true
max_connections = 5000
max_connections_per_ip = 5000
EOF
    if grep -qx '\[dmarc\]' "$ROOT/vouchmail.example.toml" 2>/dev/null; then printf '\n[dmarc]\nverify = false\n'; fi
} >"$VM_CONF"
"$VM" --config "$VM_CONF" serve >"$TMP/vm/server.log" 2>&1 &
VM_PID=$!
wait_port "$VM_PORT" 20 || { cat "$TMP/vm/server.log" >&2; die "vouchmail did not listen on 127.0.0.1:$VM_PORT"; }
echo "$PASSWORD" | "$VM" --config "$VM_CONF" user add "$USER_ADDR" --password-stdin >/dev/null \
    || die "vouchmail user add $USER_ADDR"

# ---------------------------------------------------------------- Dovecot
DC=$TMP/dc
mkdir -p "$DC/run" "$DC/state" "$DC/mail"
chown nobody:nogroup "$DC/mail"
echo "$USER_ADDR:{PLAIN}$PASSWORD" >"$DC/passwd"
cat >"$DC/dovecot.conf" <<EOF
base_dir = $DC/run
state_dir = $DC/state
instance_name = vouchmail-bench-$$
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $DC/dovecot.log
mail_location = maildir:$DC/mail/%u
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DC/mail/%u
}
namespace inbox {
  inbox = yes
}
default_process_limit = 2000
default_client_limit = 8000
default_vsz_limit = 1G
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DC_PORT
  }
  process_limit = 2000
}
service imap {
  process_limit = 2000
}
protocol imap {
  mail_max_userip_connections = 5000
}
EOF
dovecot -F -c "$DC/dovecot.conf" >"$DC/stdout.log" 2>&1 &
DC_PID=$!
wait_port "$DC_PORT" 20 || { cat "$DC/stdout.log" "$DC/dovecot.log" >&2 2>/dev/null; die "Dovecot did not listen on 127.0.0.1:$DC_PORT"; }

# ---------------------------------------------------------------- the run
echo "== $(dovecot --version | cut -d' ' -f1) vs vouchmail $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates || echo ' (+ uncommitted changes in crates/)')"
echo "== N=$N BODIES=$BODIES REPEAT=$REPEAT MSG_LEN=$MSG_LEN IDLE_CONNS=$IDLE_CONNS; $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
busy_report
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
    perf record -g -p "$VM_PID" -o "$TMP/perf.data" >"$TMP/perf.log" 2>&1 &
    PERF_PID=$!
fi
export IMAP_BENCH_VOUCHMAIL=127.0.0.1:$VM_PORT IMAP_BENCH_DOVECOT=127.0.0.1:$DC_PORT
export IMAP_BENCH_USER=$USER_ADDR IMAP_BENCH_PASSWORD=$PASSWORD
export IMAP_BENCH_VOUCHMAIL_PID=$VM_PID IMAP_BENCH_DOVECOT_PID=$DC_PID
status=0
"$BENCH_BIN" bench_imap --ignored --nocapture --test-threads=1 >"$TMP/bench.log" 2>&1 || status=$?
grep -oE 'BENCH.*' "$TMP/bench.log" || true
if [ $status != 0 ]; then
    grep -E 'panicked|FAILED|error' -A3 "$TMP/bench.log" | head -20
    echo "== vouchmail log:"; tail -5 "$TMP/vm/server.log"
    echo "== Dovecot log:"; tail -5 "$DC/dovecot.log"
    die "the benchmark failed"
fi
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""
    echo "== where vouchmail's CPU time went (perf, self time):"
    perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null | grep -E '^ +[0-9]' | head -25
fi
