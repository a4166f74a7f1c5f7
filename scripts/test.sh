#!/usr/bin/env bash
# Runs the whole vouchmail test suite on a fresh Debian machine with Rust.
# Installs the third-party tools the interop tests drive (swaks, Postfix's smtp-source and
# smtp-sink, Python 3, fetchmail for POP3) with apt-get when they are missing.
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
have smtp-source || need+=(postfix)
have openssl || need+=(openssl)
have python3 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Postfix asks how to configure itself; the tests run their own instances.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
bash scripts/fuzz.sh
