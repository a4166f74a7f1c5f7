#!/usr/bin/env bash
# Runs the whole vouchmail test suite on a fresh Debian machine with Rust.
# Installs the third-party tools the interop tests drive (swaks, Postfix's smtp-source and
# smtp-sink, Python 3, fetchmail for POP3 and IMAP, the IMAP clients mbsync, offlineimap and
# neomutt, tmux to give neomutt a terminal, and Chromium with its WebDriver and selenium for
# the web console) and PostgreSQL (the store's second backend) with apt-get when they are
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have swaks || need+=(swaks)
# swaks needs these Perl modules for TLS and CRAM-MD5 (only "recommended" by the package).
perl -MNet::SSLeay -e1 2>/dev/null || need+=(libnet-ssleay-perl)
perl -MDigest::HMAC_MD5 -e1 2>/dev/null || need+=(libdigest-hmac-perl)
have msmtp || need+=(msmtp)
[ -d /usr/share/doc/gsasl-common ] || need+=(gsasl-common)
have fetchmail || need+=(fetchmail)
# tests/imap_clients.rs drives these IMAP clients (neomutt in a tmux pane).
have mbsync || need+=(isync)
have offlineimap || need+=(offlineimap3)
have neomutt || need+=(neomutt)
have tmux || need+=(tmux)
# tests/console.rs drives the web console in headless Chromium through selenium.
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' 2>/dev/null || need+=(python3-selenium)
have smtp-source || need+=(postfix)
have openssl || need+=(openssl)
have python3 || need+=(python3)
# SPEC 13's tests sign with dkimpy (Ed25519 through PyNaCl) and read our
# Authentication-Results with authres, both in Debian's Python (/usr/bin/python3).
/usr/bin/python3 -c 'import dkim, nacl.signing' 2>/dev/null || need+=(python3-dkim python3-nacl)
/usr/bin/python3 -c 'import authres' 2>/dev/null || need+=(python3-authres)
# pyspf cross-checks our SPF results; lxml validates the DMARC aggregate report's XML
# against RFC 7489 Appendix C's schema.
/usr/bin/python3 -c 'import spf' 2>/dev/null || need+=(python3-spf)
/usr/bin/python3 -c 'import lxml.etree' 2>/dev/null || need+=(python3-lxml)
# tests/metrics.rs parses /metrics with the Prometheus client's own parser. (promtool, in
# Debian's 100 MB prometheus package, is not installed: the test uses it only where present.)
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || need+=(python3-prometheus-client)
# The store tests run on PostgreSQL too, each test process in a throwaway cluster of its
# own made with these binaries (crates/testkit/src/pg.rs); Debian's cluster is not used.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Postfix asks how to configure itself; the tests run their own instances.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [[ " ${need[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null; then
        # The package may have started a cluster of its own: the tests do not need it.
        pg_lsclusters --no-header | while read -r version cluster _; do
            $SUDO pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
        done
    fi
fi
# With PostgreSQL installed, its tests must run: a cluster that cannot start fails them
# rather than letting them pass as skipped.
export VOUCHMAIL_REQUIRE_POSTGRES=1
export PATH="$PATH:/usr/sbin"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# SPEC 11, one suite on both backends: the store tests ran on both above; now the server
# tests again, every test server on a database of its own in a throwaway PostgreSQL cluster.
VOUCHMAIL_TEST_STORE=postgres cargo test -p vouchmail --test smtp --test pop3 --test auth --test authkey \
    --test client --test messenger --test odmr --test outbound --test tracking --test sender_auth --test imap \
    --test imap_clients --test console --test admin --test admin_api --test metrics
bash scripts/fuzz.sh
