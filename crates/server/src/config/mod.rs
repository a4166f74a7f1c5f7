//! The TOML configuration. Every key has a default (SPEC 1 dev defaults), so a file needs
//! only the keys it changes; `vouchmail.example.toml` documents each one.

pub mod values;

use crate::support::error::{Error, ErrorKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use values::ServerTrust;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Our host name: greeting, EHLO, Received and Authentication-Results.
    pub hostname: String,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// tracing filter, e.g. "info" or "vouchmail_server=debug".
    pub log: String,
    pub listeners: Listeners,
    pub smtp: Smtp,
    pub tls: Tls,
    pub auth: Auth,
    pub pop3: Pop3,
    pub imap: Imap,
    pub bootstrap: Bootstrap,
    /// How long sessions may run on after SIGTERM before they are cut off.
    pub shutdown_grace_secs: u64,
    /// Delivery of queued remote mail (SPEC 5).
    pub outbound: Outbound,
    pub odmr: Odmr,
    /// The resolver every part of the server shares.
    pub dns: Dns,
    /// The Authentication Server of AuthKeys (SPEC 7.1).
    pub authkey: AuthKey,
    /// The Messenger federation (SPEC 8): this server as a client of its peers, and the
    /// delivery of tracking records (8.3).
    pub messenger: Messenger,
    /// Which store, and where (SPEC 11).
    pub store: StoreConfig,
    /// The sending domain's SPF, DKIM, DMARC and iprev on the MX (SPEC 13).
    pub dmarc: Dmarc,
    /// The admin HTTP listener (SPEC 12).
    pub admin: Admin,
}

/// The admin HTTP listener (SPEC 12): metrics, health, the JSON API, the web console.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// `/metrics` and `/healthz/*` answer without a token to clients on loopback (other
    /// clients always need one).
    pub open_metrics: bool,
    /// Largest request body, in octets (larger: 413).
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request's header, and a request may take in all.
    pub request_timeout_secs: u64,
    /// Simultaneous connections in total, and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            open_metrics: true,
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            max_connections: 100,
            max_connections_per_ip: 20,
        }
    }
}

/// SPF, DKIM, DMARC and iprev of MX mail (SPEC 13).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dmarc {
    /// Check every MX message that no other method authenticated: its Authentication-Results
    /// carries the results, and a DMARC pass authenticates it where the domain counts it.
    pub verify: bool,
    /// Seconds the checks of one message may take; what has not answered is `temperror`.
    pub timeout_secs: u64,
    /// Count the results for the domains that ask for aggregate reports (`rua=`) and send
    /// them each a report once a day (RFC 7489 7.2).
    pub reports: bool,
}

impl Default for Dmarc {
    fn default() -> Self {
        Dmarc { verify: true, timeout_secs: 20, reports: true }
    }
}

/// The store (SPEC 11): the embedded SQLite in `data_dir`, or a PostgreSQL database that
/// several nodes share.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// PostgreSQL: `postgres://user@host:port/database`, with `?sslmode=require` or
    /// `verify-full` for TLS. Never a password (it would show in `ps` and in logs).
    pub url: Option<String>,
    /// PostgreSQL: the file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// PostgreSQL over TLS: PEM CA certificates the server's certificate is verified
    /// against, beside the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `<data_dir>/vouchmail.db`: one node.
    #[default]
    Sqlite,
    /// `store.url`: several nodes on one database.
    Postgres,
}

/// DNS (issue 10): one resolver, with its cache, for outbound, ETRN, the ODMR customer and
/// the lookups of AuthKeys and the Messenger federation.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// Name servers (`ip:port`); empty: `outbound.nameservers`, else /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("./vouchmail-data"),
            log: "info".into(),
            listeners: Listeners::default(),
            smtp: Smtp::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            pop3: Pop3::default(),
            imap: Imap::default(),
            bootstrap: Bootstrap::default(),
            shutdown_grace_secs: 10,
            outbound: Outbound::default(),
            odmr: Odmr::default(),
            dns: Dns::default(),
            authkey: AuthKey::default(),
            messenger: Messenger::default(),
            store: StoreConfig::default(),
            dmarc: Dmarc::default(),
            admin: Admin::default(),
        }
    }
}

/// Listen addresses per role; an empty list turns the role off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// SMTP MX: mail from other servers (standard port 25).
    pub mx: Vec<SocketAddr>,
    /// Submission with STARTTLS (standard port 587).
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (standard port 465, RFC 8314).
    pub submissions: Vec<SocketAddr>,
    /// On-Demand Mail Relay provider (standard port 366, RFC 2645).
    pub odmr: Vec<SocketAddr>,
    /// POP3 mailbox download with STLS (standard port 110, SPEC 9).
    pub pop3: Vec<SocketAddr>,
    /// POP3 over implicit TLS (standard port 995, RFC 8314).
    pub pop3s: Vec<SocketAddr>,
    /// IMAP with STARTTLS (standard port 143, SPEC 9).
    pub imap: Vec<SocketAddr>,
    /// IMAP over implicit TLS (standard port 993, RFC 8314).
    pub imaps: Vec<SocketAddr>,
    /// AuthKey VERIFY, TCP and UDP on each address (standard port 2884, SPEC 7.2). Off by
    /// default.
    pub authkey: Vec<SocketAddr>,
    /// The Messenger port: federation and secure-messaging clients (standard port 21025,
    /// SPEC 8).
    pub messenger: Vec<SocketAddr>,
    /// Admin HTTP (SPEC 12): metrics, health, the JSON API and the web console. TLS with
    /// the server's certificate on any address but loopback.
    pub admin: Vec<SocketAddr>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mx: vec![([127, 0, 0, 1], 2525).into()],
            submission: vec![([127, 0, 0, 1], 2587).into()],
            submissions: vec![([127, 0, 0, 1], 2465).into()],
            odmr: vec![([127, 0, 0, 1], 3366).into()],
            pop3: vec![([127, 0, 0, 1], 2110).into()],
            pop3s: vec![([127, 0, 0, 1], 2995).into()],
            imap: vec![([127, 0, 0, 1], 2143).into()],
            imaps: vec![([127, 0, 0, 1], 2993).into()],
            authkey: Vec::new(),
            messenger: vec![([127, 0, 0, 1], 21025).into()],
            admin: vec![([127, 0, 0, 1], 8025).into()],
        }
    }
}

/// SMTP limits and timeouts (SPEC 3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Smtp {
    /// Largest message accepted, in octets (advertised as SIZE, RFC 1870).
    pub max_message_size: usize,
    /// Recipients per message (RFC 5321 4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Received fields before a message counts as looping (RFC 5321 6.3).
    pub max_hops: usize,
    /// Negative replies before a session is closed with 421.
    pub max_errors: u32,
    /// Seconds to wait for a command (RFC 5321 4.5.3.2.7: at least 300).
    pub command_timeout_secs: u64,
    /// Seconds to wait for the next block of message data (RFC 5321 4.5.3.2.5: 180).
    pub data_timeout_secs: u64,
    /// Simultaneous connections on each SMTP listener role (MX, submission, submissions,
    /// ODMR each have their own count, so a flood on the MX leaves submission usable).
    pub max_connections: usize,
    /// Simultaneous connections from one IP address, per listener role.
    pub max_connections_per_ip: usize,
    /// Octets of message data all SMTP sessions together keep in memory (input and the
    /// part of each body not yet spooled to disk); beyond it DATA gets 452 4.3.1.
    pub max_inflight_bytes: usize,
    /// Octets of one message body kept in memory; the rest is spooled to
    /// `<data_dir>/spool` while it arrives.
    pub memory_body_limit: usize,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_hops: 50,
            max_errors: 20,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            max_connections: 2000,
            max_connections_per_ip: 50,
            max_inflight_bytes: 256 * 1024 * 1024,
            memory_body_limit: 128 * 1024,
        }
    }
}

/// On-Demand Mail Relay (RFC 2645) and ETRN (RFC 1985).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Odmr {
    /// A second ATRN by the same account within this many seconds gets 450.
    pub atrn_interval_secs: u64,
    /// Timeout around ATRN and in the reversed session (RFC 2645: at least 600).
    pub timeout_secs: u64,
    /// Accept ETRN on the MX listener for held domains with an ETRN host.
    pub etrn: bool,
    /// ETRN commands one MX session may send; past it each gets 458 and counts as an error
    /// (`smtp.max_errors` then closes the session).
    pub max_etrn_per_session: u32,
    /// Scheduled customer fetches from ODMR providers (`[[odmr.fetch]]`).
    pub fetch: Vec<ScheduledFetch>,
}

impl Default for Odmr {
    fn default() -> Self {
        Odmr { atrn_interval_secs: 30, timeout_secs: 600, etrn: true, max_etrn_per_session: 10, fetch: Vec::new() }
    }
}

/// One provider this server fetches from as an ODMR customer, every `interval_secs`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFetch {
    /// host:port of the provider's ODMR service.
    pub provider: String,
    pub user: String,
    /// File whose first line is the CRAM-MD5 password.
    pub password_file: Option<PathBuf>,
    /// Client certificate and key for SASL EXTERNAL instead.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// ATRN domains; empty for all the account may take.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Relay to this SMTP host instead of our own store.
    pub smtphost: Option<String>,
    /// STARTTLS; the provider's certificate must be valid for its host name under the
    /// system's CAs, unless one of the three below says otherwise (each implies TLS).
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificates that issued the provider's certificate.
    pub tls_ca: Option<PathBuf>,
    /// SHA-256 fingerprint of the provider's certificate (hex, colons allowed): pinned,
    /// names and dates not checked.
    pub tls_fingerprint: Option<String>,
    /// Accept any certificate: encrypted, not authenticated, so the mail is not from a
    /// trusted relay (SPEC 2) and meets the domain's sender policy.
    #[serde(default)]
    pub tls_insecure: bool,
    #[serde(default = "default_fetch_interval")]
    pub interval_secs: u64,
}

impl ScheduledFetch {
    /// How the provider's certificate is checked.
    pub fn trust(&self) -> Result<ServerTrust, Error> {
        ServerTrust::from_options(self.tls_ca.as_deref(), self.tls_fingerprint.as_deref(), self.tls_insecure)
    }
}

fn default_fetch_interval() -> u64 {
    600
}

/// TLS (SPEC 3, RFC 3207, RFC 8314).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain; with `key`. Unset: a self-signed certificate for `hostname`
    /// is made on first start in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// PEM CA certificates that client certificates are verified against (for SASL
    /// EXTERNAL mapped by subject or fingerprint).
    pub client_ca: Option<PathBuf>,
    /// Without `client_ca`: still ask for a client certificate and accept any, to be mapped
    /// by its fingerprint only.
    pub request_client_cert: bool,
}

/// SMTP AUTH (SPEC 4, RFC 4954).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Mechanisms offered, strongest first. PLAIN and LOGIN only inside TLS unless
    /// `allow_plaintext_passwords`; -PLUS only with TLS 1.3; EXTERNAL only with a mapped
    /// client certificate.
    pub mechanisms: Vec<String>,
    /// Allow PLAIN and LOGIN without TLS (else 538 5.7.11).
    pub allow_plaintext_passwords: bool,
    /// Keep CRAM-MD5 secrets (precomputed HMAC-MD5 states) for new passwords and offer the
    /// mechanism. ODMR needs it.
    pub cram_md5: bool,
    /// SCRAM-SHA-256 iteration count for new passwords (at least 4096).
    pub scram_iterations: u32,
    /// Also offer AUTH on the MX listener.
    pub on_mx: bool,
    /// Failed AUTH attempts from one client address (IPv6: its /64), and for one account,
    /// within `failure_window_secs` before further attempts get 454 4.7.0. The account's
    /// limit does not hold for addresses that logged in to it in the last 30 days.
    pub max_failures_per_ip: u32,
    pub max_failures_per_account: u32,
    pub failure_window_secs: u64,
    /// SPEC 8.2 step 3: failed X-RCRAM-VERIFY exchanges (wrong answers and cancels) one
    /// verifier (by its network, as a client's) may relay within `failure_window_secs`;
    /// past it, every X-RCRAM-VERIFY from it gets 454 4.7.0, whatever the address. A
    /// verifier is never familiar to an account, so this is its only allowance.
    pub max_failures_per_verifier: u32,
    /// Accounts trusted to assert another identity with MAIL FROM AUTH= (RFC 4954 5).
    pub trusted_relays: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN", "EXTERNAL"]
                .map(String::from)
                .to_vec(),
            allow_plaintext_passwords: false,
            cram_md5: true,
            scram_iterations: 4096,
            on_mx: false,
            max_failures_per_ip: 10,
            max_failures_per_account: 10,
            failure_window_secs: 900,
            max_failures_per_verifier: 50,
            trusted_relays: Vec::new(),
        }
    }
}

impl Auth {
    /// The configured mechanisms that this site allows.
    pub fn mechanisms(&self) -> Result<Vec<vouchmail_proto::sasl::Mechanism>, Error> {
        let mut out = Vec::new();
        for name in &self.mechanisms {
            let mechanism = vouchmail_proto::sasl::Mechanism::from_name(name)
                .ok_or_else(|| Error::new(ErrorKind::Config, format!("auth.mechanisms: unknown mechanism {name}")))?;
            if mechanism == vouchmail_proto::sasl::Mechanism::CramMd5 && !self.cram_md5 {
                continue;
            }
            out.push(mechanism);
        }
        Ok(out)
    }

    /// Which secrets `user add` and `user passwd` store.
    pub fn secrets_policy(&self) -> vouchmail_proto::sasl::SecretsPolicy {
        vouchmail_proto::sasl::SecretsPolicy { cram_md5: self.cram_md5, scram_iterations: self.scram_iterations }
    }
}

/// POP3 mailbox download (SPEC 9, RFC 1939). Authentication uses the `[auth]` mechanisms
/// and failure limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3 {
    /// USER/PASS, and SASL PLAIN and LOGIN, on a connection without TLS (RFC 2595 2.1).
    pub allow_plaintext_user_pass: bool,
    /// Seconds without a command before the session is dropped, deleting nothing
    /// (RFC 1939 3: at least 600).
    pub idle_timeout_secs: u64,
    /// Longest command line in octets, CRLF included (RFC 2449 4: 255).
    pub max_line_length: usize,
    /// Longest AUTH command or SASL response line (RFC 5034 4 lifts the 255 limit).
    pub max_auth_line_length: usize,
    /// Negative replies in one session before it is closed.
    pub max_errors: u32,
    /// Simultaneous POP3 connections in total, and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Seconds a maildrop lock (RFC 1939 8) holds unless its session renews it (every
    /// third of this): the locks of a node that died free after this (SPEC 11).
    pub lock_lease_secs: u64,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            allow_plaintext_user_pass: false,
            idle_timeout_secs: 600,
            max_line_length: vouchmail_proto::pop3::session::MAX_COMMAND_LINE,
            max_auth_line_length: vouchmail_proto::pop3::session::MAX_AUTH_LINE,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 20,
            lock_lease_secs: 120,
        }
    }
}

/// IMAP (SPEC 9): limits and timeouts of the `imap` and `imaps` listeners.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Imap {
    /// LOGIN, and SASL PLAIN and LOGIN, on a connection without TLS (RFC 9051 6.2.3:
    /// LOGINDISABLED otherwise). For loopback and tests only.
    pub allow_plaintext_login: bool,
    /// Seconds without a command (or, in IDLE, without DONE) before the session is closed
    /// (RFC 9051 5.4: at least 30 minutes; less counts as 30 minutes).
    pub autologout_secs: u64,
    /// BAD responses and failed logins in one session before `* BYE`.
    pub max_errors: u32,
    /// Simultaneous IMAP connections in total, and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// How often a session with a mailbox selected looks for changes made elsewhere (other
    /// sessions, POP3, deliveries, other nodes), in milliseconds (SPEC 9: within a second).
    pub watch_interval_ms: u64,
    /// Longest command line, literals excluded (RFC 7162 4: at least 8192 octets).
    pub max_line_length: usize,
    /// Largest message APPEND takes, in octets (0: `smtp.max_message_size`).
    pub max_append_size: u64,
    /// Most octets of one command's lines and its literals other than an APPEND message.
    pub max_command_size: usize,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            allow_plaintext_login: false,
            autologout_secs: 1800,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 20,
            watch_interval_ms: 500,
            max_line_length: vouchmail_proto::imap::command::Limits::default().max_line,
            max_append_size: 0,
            max_command_size: vouchmail_proto::imap::command::Limits::default().max_command,
        }
    }
}

/// The Authentication Server of AuthKeys (SPEC 7.1, seeds 001/002): key generation for
/// the accounts of the local domains and the answers to VERIFY (`listeners.authkey`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthKey {
    /// Generate keys for every account of the local domains.
    pub server: bool,
    /// AGI and AVT of addresses with no settings of their own or of their domain.
    pub default_agi_secs: u64,
    pub default_avt_secs: u64,
    /// How often the generator looks for keys that are due (at least 1).
    pub tick_secs: u64,
    /// UDP: requests per second one source IP may send, and the burst above that.
    pub udp_rate_per_sec: u32,
    pub udp_burst: u32,
    /// TCP: simultaneous connections in total and from one IP, and the idle timeout.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout_secs: u64,
    /// Answer VERIFY over UDP as well as TCP on each `listeners.authkey` address.
    pub udp: bool,
    /// Mail each new key to its address with `X-New-Auth-Key` (SPEC 7.3); off: this
    /// server's sender side reads the newest key directly (SPEC 7.3, same server).
    pub mail_keys: bool,
    /// The From of key mail; empty: `authkey@<hostname>`.
    pub key_mail_from: String,
    /// Sender side (SPEC 7.4): keep key mail in the mailbox (phase II) instead of dropping it.
    pub keep_key_mail: bool,
    /// Sender side: stamp `X-Auth-Key` on mail local users send from an address with a key.
    pub stamp: bool,
    /// Recipient side (SPEC 7.5): check `X-Auth-Key` on mail arriving at the MX.
    pub verify: bool,
    /// Recipient side: the wait for each of the UDP tries, the number of tries, and the
    /// TCP exchange's deadline.
    pub udp_timeout_ms: u64,
    pub udp_tries: u32,
    pub tcp_timeout_secs: u64,
    /// Recipient side: how long a key seen valid is reused without asking (at most 3600).
    pub cache_secs: u64,
}

impl Default for AuthKey {
    fn default() -> Self {
        AuthKey {
            server: false,
            // The seed's example: 7200 and 2880 minutes.
            default_agi_secs: 7200 * 60,
            default_avt_secs: 2880 * 60,
            tick_secs: 5,
            udp_rate_per_sec: 20,
            udp_burst: 40,
            max_connections: 200,
            max_connections_per_ip: 10,
            idle_timeout_secs: 60,
            udp: true,
            mail_keys: false,
            key_mail_from: String::new(),
            keep_key_mail: false,
            stamp: true,
            verify: true,
            udp_timeout_ms: 1000,
            udp_tries: 3,
            tcp_timeout_secs: 10,
            cache_secs: 3600,
        }
    }
}

/// The Messenger federation (SPEC 8): how this server calls its peers (CERT relay, Entity
/// Index pulls), how its own Messenger listener is limited, and the NOTIFY outbox (8.3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Messenger {
    /// The name this server gives in EHLO to peers, and by which they find its addresses
    /// (SPEC 8, 8.2); empty: `hostname`.
    pub hostname: String,
    /// The local address calls to peers are made from, so that a peer can check it is an
    /// address of `hostname`; unset: the system's choice.
    pub source_address: Option<std::net::IpAddr>,
    /// Domains whose home servers' Entity Index entries are pulled (SPEC 8.4); every home
    /// server this server talks to is added.
    pub peers: Vec<String>,
    /// Seconds between pulls of the peers' `ENTITIES`; 0 turns the scheduled pull off.
    pub pull_interval_secs: u64,
    /// Port of the MX and address fallbacks of home-server discovery (SPEC 8: 21025).
    pub port: u16,
    /// With `peer_tls = "insecure"`: STARTTLS with peers that offer it; turn off only for
    /// tests. With "verify" STARTTLS is always required.
    pub starttls: bool,
    /// Seconds to wait for a TCP connection to a peer, and for each of its replies.
    pub connect_timeout_secs: u64,
    pub command_timeout_secs: u64,
    /// SPEC 8 "Trust between servers": `verify` (STARTTLS required, the peer's certificate
    /// verified for the host name discovery gave, against the system's roots plus
    /// `ca_file`) or `insecure` (labs only: any certificate, STARTTLS when offered; warned
    /// at every start).
    pub peer_tls: String,
    /// Extra CA certificates (PEM) the peers' certificates are verified against.
    pub ca_file: Option<PathBuf>,
    /// Seconds one federation call may take in all (SPEC 8: a peer that trickles a byte
    /// now and then, never hitting the per-read timeout, delays only its own call).
    pub call_deadline_secs: u64,
    /// Seconds an idle connection to a peer is kept for the next call; 0: none is kept.
    pub idle_secs: u64,
    /// Idle connections kept per peer, by each session thread (one per core) and by the
    /// jobs: a connection is reused on the thread that opened it.
    pub max_idle_per_peer: usize,
    /// The Messenger listener's own connection limits (in total, and from one IP).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Seconds before the first retry of a NOTIFY whose home server did not take it; the
    /// wait doubles each time up to `notify_retry_max_secs`.
    pub notify_retry_min_secs: u64,
    pub notify_retry_max_secs: u64,
    /// A tracking record not delivered within this many seconds is dropped, with a log
    /// line (SPEC 8.3: up to 5 days).
    pub notify_lifetime_secs: u64,
    /// Receiving NOTIFY (SPEC 8.3): at most this many records a day (UTC, by arrival) from
    /// one recipient domain's home server for one local sender; past it `452 4.5.3`.
    pub notify_max_per_day: u64,
    /// SPEC 8.2 step 6: when a home server does not offer X-RCRAM-VERIFY, proxy its plain
    /// `AUTH CRAM-MD5` instead of answering 454 4.7.0. Off by default: an unbound challenge
    /// is what the relay attack of issue 12 uses (the client's check refuses it anyway).
    pub legacy_rcram: bool,
    /// SPEC 8.2 step 7: seconds a client has to answer a relayed RCRAM-MD5 challenge while
    /// this server, as verifier, holds a link to the home server for it; then the session
    /// closes and the link is freed.
    pub rcram_answer_timeout_secs: u64,
}

impl Default for Messenger {
    fn default() -> Self {
        Messenger {
            hostname: String::new(),
            source_address: None,
            peers: Vec::new(),
            pull_interval_secs: 300,
            port: 21025,
            starttls: true,
            connect_timeout_secs: 10,
            command_timeout_secs: 30,
            call_deadline_secs: 60,
            peer_tls: "verify".into(),
            ca_file: None,
            idle_secs: 60,
            max_idle_per_peer: 4,
            max_connections: 500,
            max_connections_per_ip: 20,
            notify_retry_min_secs: 60,
            notify_retry_max_secs: 3600,
            notify_lifetime_secs: 5 * 86400,
            notify_max_per_day: 10_000,
            legacy_rcram: false,
            rcram_answer_timeout_secs: 30,
        }
    }
}

/// What the first start creates in an empty store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Bootstrap {
    /// The first local domain; empty for none.
    pub domain: String,
    /// Its sender policy (SPEC 2): one action for both cases, or
    /// `unauthenticated=ACTION,forged=ACTION`. The dev default `unauthenticated=junk,
    /// forged=reject` delivers a first unauthenticated test message into Junk, marked `none`.
    pub policy: String,
    /// Create postmaster@<domain> with a generated password, printed once.
    pub postmaster: bool,
    /// Make an Ed25519 and an RSA-2048 DKIM key for the domain (SPEC 13) and print the DNS
    /// records to publish.
    pub dkim: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            domain: "localhost".into(),
            policy: "unauthenticated=junk,forged=reject".into(),
            postmaster: true,
            dkim: true,
        }
    }
}

/// Outbound delivery: routing, the SMTP client, retries and bounces (SPEC 5).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Outbound {
    /// Deliver queued remote mail while `serve` runs.
    pub enabled: bool,
    /// Old name of `dns.nameservers`, used when that is empty.
    pub nameservers: Vec<SocketAddr>,
    /// TCP port of MX hosts (RFC 5321 4.5.4: 25).
    pub port: u16,
    /// Our name in EHLO; empty: `hostname`.
    pub helo_name: String,
    /// STARTTLS to MX hosts: "none", "may" (when offered), "encrypt" (required, any
    /// certificate) or "verify" (required, certificate valid for the host name).
    pub tls: String,
    /// PEM CA certificates for "verify"; empty: the system's bundle.
    pub ca_file: Option<PathBuf>,
    /// Simultaneous SMTP connections in total, and to one destination.
    pub max_connections: usize,
    pub max_connections_per_destination: usize,
    /// Recipients per transaction (RFC 5321 4.5.3.1.8: servers take at least 100).
    pub max_recipients_per_transaction: usize,
    /// Messages sent over one connection before it is closed; 0: no limit.
    pub max_messages_per_connection: usize,
    /// Seconds an idle connection is kept for more mail to the same destination.
    pub connection_idle_secs: u64,
    /// Seconds before the first retry; the wait doubles each time up to `retry_max_secs`.
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    /// Seconds a message may wait in the queue before it is returned to its sender.
    pub lifetime_secs: u64,
    /// Seconds after which the sender is told the message is delayed (once); 0: never.
    pub delay_warning_secs: u64,
    /// Seconds to wait for a TCP connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a reply to a command (RFC 5321 4.5.3.2: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds to wait for the reply to the end of the data (RFC 5321 4.5.3.2.6: 10 minutes).
    pub data_timeout_secs: u64,
    /// Seconds a queue entry stays leased to a deliverer; renewed while it works. An entry
    /// whose deliverer died is retried after this.
    pub lease_secs: u64,
    /// How often the queue is checked for due mail, in milliseconds.
    pub poll_interval_ms: u64,
    /// Try IPv6 addresses of a host before IPv4 ones.
    pub prefer_ipv6: bool,
    /// A smart host for all remote mail (Postfix's relayhost), unless a route matches.
    pub relay: Option<Route>,
    /// Static routes by recipient domain (Postfix's transport map), `[[outbound.route]]`.
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            enabled: true,
            nameservers: Vec::new(),
            port: 25,
            helo_name: String::new(),
            tls: "may".into(),
            ca_file: None,
            max_connections: 100,
            max_connections_per_destination: 20,
            max_recipients_per_transaction: 50,
            max_messages_per_connection: 0,
            connection_idle_secs: 2,
            retry_min_secs: 300,
            retry_max_secs: 4 * 3600,
            lifetime_secs: 5 * 86400,
            delay_warning_secs: 4 * 3600,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            lease_secs: 300,
            poll_interval_ms: 500,
            prefer_ipv6: false,
            relay: None,
            routes: Vec::new(),
        }
    }
}

/// Where mail for some domains (or, as `relay`, all remote mail) goes instead of the MX.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    /// The recipient domain; `.example.org` also matches its subdomains. Unused for `relay`.
    pub domain: String,
    /// `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port` (port 25 if absent).
    pub host: String,
    /// Look up the MX records of `host` instead of its addresses.
    pub mx: bool,
    /// STARTTLS for this route, as `outbound.tls`; empty: `outbound.tls`.
    pub tls: String,
    /// Authenticate (RFC 4954) with these.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The password from the first line of a file instead.
    pub password_file: Option<PathBuf>,
    /// Allow PLAIN and LOGIN without TLS.
    pub allow_cleartext_auth: bool,
}

/// One timeout key, for the checks of `validate` and `warnings`.
struct Timeout {
    key: &'static str,
    value: u64,
    unit: &'static str,
    /// The RFC minimum and where it is written.
    minimum: Option<(u64, &'static str)>,
}

/// What a PEM file named in the config must hold.
enum Pem {
    Certificates,
    PrivateKey,
}

/// `key`'s file is readable and holds at least one certificate, or a private key, read with
/// rustls-pki-types (as `tls::Tls::from_config` and the clients read them later).
fn check_pem(key: &str, path: &Path, kind: Pem) -> Result<(), Error> {
    use rustls_pki_types::pem::{Error as PemError, PemObject};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let shown = path.display();
    std::fs::File::open(path).map_err(|e| Error::new(ErrorKind::Config, format!("{key}: cannot read {shown}: {e}")))?;
    match kind {
        Pem::Certificates => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::new(ErrorKind::Config, format!("{key}: cannot read {shown}: {e}")))?;
            let certs = certs
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::new(ErrorKind::Config, format!("{key}: {shown}: bad PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::new(ErrorKind::Config, format!("{key}: {shown} holds no PEM certificate")));
            }
        }
        Pem::PrivateKey => match PrivateKeyDer::from_pem_file(path) {
            Ok(_) => {}
            Err(PemError::NoItemsFound) => {
                return Err(Error::new(ErrorKind::Config, format!("{key}: {shown} holds no PEM private key")))
            }
            Err(e) => return Err(Error::new(ErrorKind::Config, format!("{key}: {shown}: bad PEM: {e}"))),
        },
    }
    Ok(())
}

impl Config {
    /// Reads a config file, or the defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", path.display())))?;
        let mut config =
            Config::parse(&text).map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))?;
        // Relative paths in a config file mean the file's folder, whatever the working
        // directory of the command (an admin command run elsewhere must open the same
        // store, not make an empty one).
        if let Some(base) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            config.resolve_paths(base);
        }
        config.check_files().map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The files the config names can be read and hold what their key needs (issue 9:
    /// checked before anything is created, naming the key).
    pub fn check_files(&self) -> Result<(), Error> {
        use Pem::{Certificates, PrivateKey};
        let mut files = vec![
            ("tls.cert".to_string(), &self.tls.cert, Certificates),
            ("tls.key".to_string(), &self.tls.key, PrivateKey),
            ("tls.client_ca".to_string(), &self.tls.client_ca, Certificates),
            ("outbound.ca_file".to_string(), &self.outbound.ca_file, Certificates),
            ("messenger.ca_file".to_string(), &self.messenger.ca_file, Certificates),
            ("store.ca_file".to_string(), &self.store.ca_file, Certificates),
        ];
        for (n, fetch) in self.odmr.fetch.iter().enumerate() {
            files.push((format!("odmr.fetch[{n}].cert"), &fetch.cert, Certificates));
            files.push((format!("odmr.fetch[{n}].key"), &fetch.key, PrivateKey));
            files.push((format!("odmr.fetch[{n}].tls_ca"), &fetch.tls_ca, Certificates));
        }
        for (key, path, kind) in files {
            if let Some(path) = path {
                check_pem(&key, path, kind)?;
            }
        }
        let fetches = self.odmr.fetch.iter().enumerate();
        let mut secrets: Vec<_> =
            fetches.map(|(n, f)| (format!("odmr.fetch[{n}].password_file"), &f.password_file)).collect();
        let routes = self.outbound.routes.iter().enumerate();
        secrets.extend(routes.map(|(n, r)| (format!("outbound.route[{n}].password_file"), &r.password_file)));
        secrets.extend(self.outbound.relay.iter().map(|r| ("outbound.relay.password_file".into(), &r.password_file)));
        secrets.push(("store.password_file".into(), &self.store.password_file));
        for (key, path) in secrets {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|e| {
                    Error::new(ErrorKind::Config, format!("{key}: cannot read {}: {e}", path.display()))
                })?;
            }
        }
        Ok(())
    }

    /// Every timeout key: its value, its unit, and the minimum an RFC asks for, if any.
    fn timeouts(&self) -> [Timeout; 16] {
        const SMTP_SERVER: &str = "RFC 5321 4.5.3.2.7, server timeout";
        const SMTP_DATA_BLOCK: &str = "RFC 5321 4.5.3.2.5, data block";
        const SMTP_CLIENT: &str = "RFC 5321 4.5.3.2.1-3, 220 greeting, MAIL and RCPT; 4.5.3.2.4: 120 for DATA";
        const SMTP_DATA_TERM: &str = "RFC 5321 4.5.3.2.6, DATA termination";
        let (s, o, m, a) = (&self.smtp, &self.outbound, &self.messenger, &self.authkey);
        let t = |key, value, unit, minimum| Timeout { key, value, unit, minimum };
        [
            t("smtp.command_timeout_secs", s.command_timeout_secs, "seconds", Some((300, SMTP_SERVER))),
            t("smtp.data_timeout_secs", s.data_timeout_secs, "seconds", Some((180, SMTP_DATA_BLOCK))),
            t(
                "pop3.idle_timeout_secs",
                self.pop3.idle_timeout_secs,
                "seconds",
                Some((600, "RFC 1939 3, autologout timer")),
            ),
            t("pop3.lock_lease_secs", self.pop3.lock_lease_secs, "seconds", None),
            // Shorter values are raised to 600 where it is used (jobs/held.rs, jobs/odmr_fetch.rs).
            t(
                "odmr.timeout_secs",
                self.odmr.timeout_secs,
                "seconds",
                Some((600, "RFC 2645 5.2.1, around ATRN; 600 is used")),
            ),
            t("outbound.connect_timeout_secs", o.connect_timeout_secs, "seconds", None),
            t("outbound.command_timeout_secs", o.command_timeout_secs, "seconds", Some((300, SMTP_CLIENT))),
            t("outbound.data_timeout_secs", o.data_timeout_secs, "seconds", Some((600, SMTP_DATA_TERM))),
            t("messenger.connect_timeout_secs", m.connect_timeout_secs, "seconds", None),
            t("messenger.command_timeout_secs", m.command_timeout_secs, "seconds", None),
            t("messenger.call_deadline_secs", m.call_deadline_secs, "seconds", None),
            t("messenger.rcram_answer_timeout_secs", m.rcram_answer_timeout_secs, "seconds", None),
            t("authkey.idle_timeout_secs", a.idle_timeout_secs, "seconds", None),
            t("dmarc.timeout_secs", self.dmarc.timeout_secs, "seconds", None),
            t("authkey.udp_timeout_ms", a.udp_timeout_ms, "milliseconds", None),
            t("authkey.tcp_timeout_secs", a.tcp_timeout_secs, "seconds", None),
        ]
    }

    /// What is allowed but not advised: each timeout below its RFC minimum (short timeouts
    /// are for tests and lab setups). `serve` logs these at start, `init` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .timeouts()
            .iter()
            .filter_map(|t| {
                let (minimum, rule) = t.minimum?;
                (t.value < minimum).then(|| {
                    format!("{} = {} is below the RFC minimum of {minimum} {} ({rule})", t.key, t.value, t.unit)
                })
            })
            .collect();
        // SPEC 8: said at every start, so a lab setting does not go to production unseen.
        if self.messenger.peer_tls == "insecure" {
            warnings.push(
                "messenger.peer_tls = \"insecure\": peers' certificates are not verified, and anyone on the path \
                 can answer for a home server (labs only)"
                    .into(),
            );
        }
        warnings
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        let tls = &mut self.tls;
        for path in [
            &mut tls.cert,
            &mut tls.key,
            &mut tls.client_ca,
            &mut self.outbound.ca_file,
            &mut self.messenger.ca_file,
            &mut self.store.password_file,
            &mut self.store.ca_file,
        ] {
            path.iter_mut().for_each(resolve);
        }
        for fetch in &mut self.odmr.fetch {
            for path in [&mut fetch.password_file, &mut fetch.cert, &mut fetch.key, &mut fetch.tls_ca] {
                path.iter_mut().for_each(resolve);
            }
        }
        for route in self.outbound.routes.iter_mut().chain(self.outbound.relay.as_mut()) {
            route.password_file.iter_mut().for_each(resolve);
        }
    }

    pub fn parse(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let text = e.to_string();
            let text = if text.contains("invalid socket address") || text.contains("invalid IP address") {
                format!("{text}\nlistener and name server addresses are IP:PORT; host names are not allowed here")
            } else {
                text
            };
            Error::new(ErrorKind::Config, text)
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(Error::new(ErrorKind::Config, "hostname must be a host name"));
        }
        if self.smtp.max_recipients < 1 {
            return Err(Error::new(ErrorKind::Config, "smtp.max_recipients must be at least 1"));
        }
        if self.imap.max_line_length < 8192 || self.imap.max_command_size < self.imap.max_line_length {
            return Err(Error::new(
                ErrorKind::Config,
                "imap.max_line_length must be at least 8192 (RFC 7162 4) and imap.max_command_size at least that",
            ));
        }
        if self.smtp.max_message_size == 0 {
            return Err(Error::new(ErrorKind::Config, "smtp.max_message_size must be more than 0"));
        }
        // RFC 5321 4.5.3.2, RFC 1939 3, RFC 2645: shorter than the RFC minimum is allowed
        // (tests, lab setups) and warned of at start (`warnings`), but 0 would drop every
        // peer at once.
        for t in self.timeouts() {
            if t.value == 0 {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{} must be at least 1 (0 would time out at once)", t.key),
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(Error::new(ErrorKind::Config, "tls.cert and tls.key must be set together"));
        }
        if self.smtp.max_inflight_bytes < self.smtp.memory_body_limit {
            return Err(Error::new(
                ErrorKind::Config,
                "smtp.max_inflight_bytes must be at least smtp.memory_body_limit",
            ));
        }
        self.auth.mechanisms()?;
        if self.pop3.max_line_length < vouchmail_proto::pop3::session::MAX_COMMAND_LINE {
            return Err(Error::new(ErrorKind::Config, "pop3.max_line_length must be at least 255 (RFC 2449 4)"));
        }
        if self.pop3.max_auth_line_length < self.pop3.max_line_length {
            return Err(Error::new(
                ErrorKind::Config,
                "pop3.max_auth_line_length must be at least pop3.max_line_length",
            ));
        }
        if self.auth.scram_iterations < vouchmail_proto::sasl::secrets::MIN_SCRAM_ITERATIONS {
            return Err(Error::new(ErrorKind::Config, "auth.scram_iterations must be at least 4096 (RFC 7677 4)"));
        }
        self.validate_outbound()?;
        self.validate_messenger()?;
        self.validate_store()?;
        let m = &self.messenger;
        if m.notify_retry_min_secs == 0 || m.notify_retry_max_secs < m.notify_retry_min_secs {
            return Err(Error::new(
                ErrorKind::Config,
                "messenger.notify_retry_min_secs must be at least 1 and at most notify_retry_max_secs",
            ));
        }
        if m.notify_lifetime_secs == 0 {
            return Err(Error::new(ErrorKind::Config, "messenger.notify_lifetime_secs must be at least 1"));
        }
        if m.notify_max_per_day == 0 {
            return Err(Error::new(ErrorKind::Config, "messenger.notify_max_per_day must be at least 1"));
        }
        for fetch in &self.odmr.fetch {
            fetch
                .trust()
                .map_err(|e| Error::new(ErrorKind::Config, format!("odmr.fetch for {}: {e}", fetch.provider)))?;
        }
        if let Err(e) = self.bootstrap.policy.parse::<vouchmail_store::SenderPolicy>() {
            return Err(Error::new(ErrorKind::Config, format!("bootstrap.policy '{}': {e}", self.bootstrap.policy)));
        }
        if self.authkey.udp_tries > 10 {
            return Err(Error::new(ErrorKind::Config, "authkey.udp_tries must be at most 10 (SPEC 7.2 asks for 3)"));
        }
        if self.authkey.cache_secs > 3600 {
            return Err(Error::new(
                ErrorKind::Config,
                "authkey.cache_secs must be at most 3600 (SPEC 7.5: at most 1 hour)",
            ));
        }
        Ok(())
    }

    fn validate_messenger(&self) -> Result<(), Error> {
        let m = &self.messenger;
        if m.hostname.contains(char::is_whitespace) {
            return Err(Error::new(ErrorKind::Config, "messenger.hostname must be a host name"));
        }
        if m.port == 0 {
            return Err(Error::new(ErrorKind::Config, "messenger.port must be at least 1"));
        }
        if m.peer_tls != "verify" && m.peer_tls != "insecure" {
            return Err(Error::config("messenger.peer_tls", format!("'{}' must be verify or insecure", m.peer_tls)));
        }
        if m.max_connections == 0 || m.max_connections_per_ip == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "messenger.max_connections and max_connections_per_ip must be at least 1",
            ));
        }
        for peer in &m.peers {
            if peer.is_empty() || peer.contains(|c: char| c.is_whitespace() || c == '@' || c == ':') {
                return Err(Error::new(ErrorKind::Config, format!("messenger.peers: '{peer}' must be a domain name")));
            }
        }
        Ok(())
    }

    /// The name this server gives its Messenger peers (SPEC 8).
    pub fn messenger_hostname(&self) -> &str {
        if self.messenger.hostname.is_empty() {
            &self.hostname
        } else {
            &self.messenger.hostname
        }
    }

    fn validate_outbound(&self) -> Result<(), Error> {
        let o = &self.outbound;
        let tls_ok = |t: &str| matches!(t, "none" | "may" | "encrypt" | "verify");
        if !tls_ok(&o.tls) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("outbound.tls '{}' must be none, may, encrypt or verify", o.tls),
            ));
        }
        if o.max_connections == 0 || o.max_connections_per_destination == 0 || o.max_recipients_per_transaction == 0 {
            return Err(Error::new(ErrorKind::Config, "outbound connection and recipient limits must be at least 1"));
        }
        if o.retry_min_secs == 0 || o.retry_max_secs < o.retry_min_secs {
            return Err(Error::new(
                ErrorKind::Config,
                "outbound.retry_min_secs must be at least 1 and at most retry_max_secs",
            ));
        }
        if o.lease_secs == 0 {
            return Err(Error::new(ErrorKind::Config, "outbound.lease_secs must be at least 1"));
        }
        if let Some(n) = o.routes.iter().position(|r| r.domain.is_empty()) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("outbound.route[{n}].domain: every [[outbound.route]] needs a domain"),
            ));
        }
        // The key of each field, and which route it is.
        let routes = o
            .routes
            .iter()
            .enumerate()
            .map(|(n, r)| (format!("outbound.route[{n}]"), format!(" (for {})", r.domain), r));
        for (key, which, route) in routes.chain(o.relay.iter().map(|r| ("outbound.relay".into(), String::new(), r))) {
            // The parser the router uses, so that what loads also routes.
            values::split_host_port(&route.host)
                .map_err(|e| Error::new(ErrorKind::Config, format!("{key}.host{which}: {e}")))?;
            if !route.tls.is_empty() && !tls_ok(&route.tls) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{key}.tls{which}: '{}' must be none, may, encrypt or verify", route.tls),
                ));
            }
            let has_password = route.password.is_some() || route.password_file.is_some();
            if route.username.is_some() != has_password {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{key}{which}: username and password (or password_file) go together"),
                ));
            }
        }
        Ok(())
    }

    /// `[store]`: the keys of the backend in use, and a URL the PostgreSQL store can use
    /// (SPEC 11), checked with the store's own reading of it.
    fn validate_store(&self) -> Result<(), Error> {
        let store = &self.store;
        match store.backend {
            StoreBackend::Sqlite => {
                let set = [
                    ("url", store.url.is_some()),
                    ("password_file", store.password_file.is_some()),
                    ("ca_file", store.ca_file.is_some()),
                ];
                if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("store.{key} is only for backend = \"postgres\" (store.backend is \"sqlite\")"),
                    ));
                }
            }
            StoreBackend::Postgres => {
                let url = store.url.as_deref().ok_or_else(|| {
                    Error::new(ErrorKind::Config, "store.url is needed with store.backend = \"postgres\"")
                })?;
                vouchmail_store::PostgresOptions::check_url(url)
                    .map_err(|e| Error::new(ErrorKind::Config, format!("store.url: {e}")))?;
            }
        }
        Ok(())
    }

    /// The SQLite store's file (`store.backend = "sqlite"`).
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("vouchmail.db")
    }

    /// How to reach the PostgreSQL store (`store.backend = "postgres"`), with the password
    /// read from `store.password_file`; None for SQLite.
    pub fn postgres_options(&self) -> Result<Option<vouchmail_store::PostgresOptions>, Error> {
        let store = &self.store;
        let (StoreBackend::Postgres, Some(url)) = (store.backend, &store.url) else {
            return Ok(None);
        };
        postgres_options(url, store.password_file.as_deref(), store.ca_file.clone())
            .map(Some)
            .map_err(|e| e.about("store.password_file"))
    }

    /// The name servers of the shared resolver: `dns.nameservers`, else the older
    /// `outbound.nameservers`; empty means the system's.
    pub fn nameservers(&self) -> &[SocketAddr] {
        if self.dns.nameservers.is_empty() {
            &self.outbound.nameservers
        } else {
            &self.dns.nameservers
        }
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp.command_timeout_secs)
    }

    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp.data_timeout_secs)
    }
}

/// How to reach a PostgreSQL store at `url` (no password in it), with the password from
/// `password_file` (its first line) and extra CA certificates: for `[store]` and for
/// `vouchmail store migrate --to`.
pub fn postgres_options(
    url: &str,
    password_file: Option<&Path>,
    ca_file: Option<PathBuf>,
) -> Result<vouchmail_store::PostgresOptions, Error> {
    let mut options = vouchmail_store::PostgresOptions::new(url);
    if let Some(path) = password_file {
        options.password = Some(crate::support::files::read_password_file(path)?);
    }
    options.ca_file = ca_file;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (text, expected) in [
            ("[smtp]\nmax_message_size = 0\n", "smtp.max_message_size"),
            ("[imap]\nmax_line_length = 1000\n", "imap.max_line_length"),
            ("[smtp]\ncommand_timeout_secs = 0\n", "smtp.command_timeout_secs"),
            ("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n", "tls.cert: cannot read"),
            ("[listeners]\nmx = [\"mx.example.org:25\"]\n", "host names are not allowed here"),
        ] {
            let error = Config::parse(text).and_then(|c| c.check_files()).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vouchmail.toml");
        let cert = dir.path().join("c.pem");
        let (cert_pem, key_pem) = pem_pair();
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(dir.path().join("k.pem"), key_pem).unwrap();
        let text = format!("data_dir = \"data\"\n[tls]\ncert = \"{}\"\nkey = \"k.pem\"\n", cert.display());
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.tls.key, Some(dir.path().join("k.pem")));
        assert_eq!(config.tls.cert, Some(cert));
    }

    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.test".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Issue 9: each TLS file key is checked at load for PEM of its kind, naming the key.
    #[test]
    fn tls_files_must_hold_pem_of_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (cert, key, junk) = (write("cert.pem", &cert), write("key.pem", &key), write("junk.pem", "not PEM\n"));
        let fetch = "[[odmr.fetch]]\nprovider = \"p:366\"\nuser = \"u\"\n";
        let load = |text: String| {
            let file = dir.path().join("vouchmail.toml");
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file))
        };
        load(format!("[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{cert}\"\n")).unwrap();
        for (text, expected) in [
            (
                format!("[tls]\ncert = \"{junk}\"\nkey = \"{key}\"\n"),
                format!("tls.cert: {junk} holds no PEM certificate"),
            ),
            (format!("[tls]\ncert = \"{key}\"\nkey = \"{key}\"\n"), "tls.cert: ".to_string()),
            (
                format!("[tls]\ncert = \"{cert}\"\nkey = \"{cert}\"\n"),
                format!("tls.key: {cert} holds no PEM private key"),
            ),
            (format!("[tls]\ncert = \"{cert}\"\nkey = \"nokey.pem\"\n"), "tls.key: cannot read ".into()),
            (format!("[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{junk}\"\n"), "tls.client_ca: ".into()),
            (format!("[outbound]\nca_file = \"{junk}\"\n"), "outbound.ca_file: ".into()),
            (format!("{fetch}cert = \"{junk}\"\nkey = \"{key}\"\n"), "odmr.fetch[0].cert: ".into()),
            (format!("{fetch}cert = \"{cert}\"\nkey = \"{junk}\"\n"), "odmr.fetch[0].key: ".into()),
            (format!("{fetch}password_file = \"pw\"\ntls_ca = \"{junk}\"\n"), "odmr.fetch[0].tls_ca: ".into()),
            (format!("{fetch}password_file = \"pw\"\n"), "odmr.fetch[0].password_file: cannot read ".into()),
            (format!("[tls]\ncert = \"{cert}\"\n"), "tls.cert and tls.key must be set together".into()),
        ] {
            let error = load(text.clone()).unwrap_err().to_string();
            assert!(error.contains(&expected), "{text}: {error}");
        }
    }

    /// Issue 9: route and relay hosts parse at load, with the router's parser, naming the key.
    #[test]
    fn route_hosts_are_parsed_at_load_naming_the_key() {
        let error = Config::parse("[outbound.relay]\nhost = \"relay.example:notaport\"\n").unwrap_err().to_string();
        assert_eq!(error, "outbound.relay.host: 'relay.example:notaport' is not host[:port]");
        let routes = "[[outbound.route]]\ndomain = \"a.example\"\nhost = \"10.0.0.1:25\"\n\
                      [[outbound.route]]\ndomain = \"b.example\"\nhost = \"[::1\"\n";
        let error = Config::parse(routes).unwrap_err().to_string();
        assert!(error.starts_with("outbound.route[1].host (for b.example): '[::1'"), "{error}");
        let error = Config::parse("[outbound.relay]\nhost = \"\"\n").unwrap_err().to_string();
        assert!(error.starts_with("outbound.relay.host: "), "{error}");
        let error =
            Config::parse("[outbound.relay]\nhost = \"r.example\"\nusername = \"u\"\n").unwrap_err().to_string();
        assert!(error.starts_with("outbound.relay: username and password"), "{error}");
        Config::parse("[outbound.relay]\nhost = \"[2001:db8::1]:587\"\n").unwrap();
    }

    /// Issue 9, RFC 5321 4.5.3.2, RFC 1939 3, RFC 2645: 0 is refused for every timeout;
    /// below the RFC minimum is a warning naming the key, the value and the rule.
    #[test]
    fn timeouts_zero_is_refused_short_is_warned() {
        let config = Config::default();
        assert_eq!(config.warnings(), Vec::<String>::new());
        for t in config.timeouts() {
            let (section, name) = t.key.split_once('.').unwrap();
            let error = Config::parse(&format!("[{section}]\n{name} = 0\n")).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{} must be at least 1", t.key)), "{error}");
            let short = Config::parse(&format!("[{section}]\n{name} = 2\n")).unwrap();
            let warnings = short.warnings();
            match t.minimum {
                Some((minimum, rule)) => {
                    assert_eq!(warnings.len(), 1, "{warnings:?}");
                    let expected = format!("{} = 2 is below the RFC minimum of {minimum} seconds ({rule})", t.key);
                    assert_eq!(warnings[0], expected);
                }
                None => assert!(warnings.is_empty(), "{warnings:?}"),
            }
        }
        let warnings = Config::parse("[smtp]\ncommand_timeout_secs = 2\n").unwrap().warnings();
        let expected = "smtp.command_timeout_secs = 2 is below the RFC minimum of 300 seconds (RFC 5321 4.5.3.2.7, server timeout)";
        assert_eq!(warnings, [expected]);
        let warnings = Config::parse("[pop3]\nidle_timeout_secs = 60\n").unwrap().warnings();
        assert!(warnings[0].contains("RFC 1939 3") && warnings[0].contains("600 seconds"), "{warnings:?}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::parse("hostname = \"mx.example.org\"\n[smtp]\nmax_recipients = 500\n").unwrap();
        assert_eq!(config.hostname, "mx.example.org");
        assert_eq!(config.smtp.max_recipients, 500);
        assert_eq!(config.smtp.max_hops, 50);
        assert_eq!(config.listeners, Listeners::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse("hostnme = \"x\"").unwrap_err().to_string().contains("hostnme"));
        assert!(Config::parse("[listeners]\nmx = [\"nonsense\"]").is_err());
        assert!(Config::parse("[bootstrap]\npolicy = \"maybe\"").unwrap_err().to_string().contains("maybe"));
        assert!(Config::parse("[pop3]\nmax_line_length = 100").unwrap_err().to_string().contains("255"));
        assert!(Config::parse("[pop3]\nidle_timeout_secs = 0").is_err());
        let fetch = "[[odmr.fetch]]\nprovider = \"p:366\"\nuser = \"u\"\n";
        assert!(Config::parse(&format!("{fetch}tls_fingerprint = \"12:34\""))
            .unwrap_err()
            .to_string()
            .contains("fingerprint"));
        assert!(Config::parse(&format!("{fetch}tls_insecure = true\ntls_ca = \"ca.pem\"")).is_err());
        let pinned = Config::parse(&format!("{fetch}tls_fingerprint = \"{}\"", "AB:".repeat(31) + "AB")).unwrap();
        assert_eq!(pinned.odmr.fetch[0].trust().unwrap(), ServerTrust::Fingerprint([0xab; 32]));
    }

    #[test]
    fn messenger_notify_keys() {
        let config = Config::parse("[messenger]\nnotify_retry_min_secs = 5\nnotify_retry_max_secs = 50\n").unwrap();
        assert_eq!((config.messenger.notify_retry_min_secs, config.messenger.notify_retry_max_secs), (5, 50));
        assert_eq!(Config::default().messenger.notify_lifetime_secs, 5 * 86400);
        assert!(Config::parse("[messenger]\nnotify_retry_min_secs = 0").is_err());
        assert!(Config::parse("[messenger]\nnotify_retry_min_secs = 10\nnotify_retry_max_secs = 5").is_err());
        assert!(Config::parse("[messenger]\nnotify_lifetime_secs = 0").is_err());
        assert_eq!(Config::default().messenger.notify_max_per_day, 10_000);
        assert_eq!(Config::parse("[messenger]\nnotify_max_per_day = 3").unwrap().messenger.notify_max_per_day, 3);
        assert!(Config::parse("[messenger]\nnotify_max_per_day = 0").is_err());
    }

    #[test]
    fn example_file_parses() {
        let example = include_str!("../../../../vouchmail.example.toml");
        Config::parse(example).unwrap();
    }

    #[test]
    fn outbound_routes_relay_and_checks() {
        let config = Config::parse(
            "[outbound]\nnameservers = [\"127.0.0.1:5353\"]\nretry_min_secs = 1\n\
             [outbound.relay]\nhost = \"smtp.example:587\"\nusername = \"u\"\npassword = \"p\"\n\
             [[outbound.route]]\ndomain = \".corp.example\"\nhost = \"10.0.0.25\"\ntls = \"none\"\n",
        )
        .unwrap();
        assert_eq!(config.outbound.nameservers, vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        assert_eq!(config.outbound.relay.unwrap().host, "smtp.example:587");
        assert_eq!(config.outbound.routes[0].domain, ".corp.example");
        assert_eq!(config.outbound.lifetime_secs, 5 * 86400);
        assert!(Config::parse("[outbound]\ntls = \"sometimes\"").unwrap_err().to_string().contains("sometimes"));
        assert!(Config::parse("[[outbound.route]]\nhost = \"x\"").unwrap_err().to_string().contains("domain"));
        assert!(Config::parse("[outbound]\nretry_min_secs = 10\nretry_max_secs = 5").is_err());
    }

    /// SPEC 11, issue 21: `[store]` picks the backend; a PostgreSQL password only ever
    /// comes from a file.
    #[test]
    fn store_backend_url_and_password_file() {
        assert_eq!(Config::default().store.backend, StoreBackend::Sqlite);
        assert!(Config::default().postgres_options().unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.pass"), "s3cret\nignored\n").unwrap();
        let file = dir.path().join("vouchmail.toml");
        let text = "[store]\nbackend = \"postgres\"\nurl = \"postgres://mail@db.example:5432/vouchmail?sslmode=verify-full\"\n\
                    password_file = \"pg.pass\"\n";
        std::fs::write(&file, text).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.store.password_file, Some(dir.path().join("pg.pass")), "relative to the file");
        let options = config.postgres_options().unwrap().unwrap();
        assert_eq!(options.url, "postgres://mail@db.example:5432/vouchmail?sslmode=verify-full");
        assert_eq!(options.password.as_deref(), Some("s3cret"));

        for (text, expected) in [
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://mail:s3cret@db.example/vouchmail\"\n",
                "store.url: must not hold a password: put it in the file named by store.password_file",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://mail@db.example/v?password=s3cret\"\n",
                "store.url: must not hold a password",
            ),
            ("[store]\nbackend = \"postgres\"\n", "store.url is needed with store.backend = \"postgres\""),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://mail@db.example/v?sslmode=prefer\"\n",
                "store.url: sslmode=prefer is not supported",
            ),
            ("[store]\nurl = \"postgres://mail@db.example/v\"\n", "store.url is only for backend = \"postgres\""),
            ("[store]\nca_file = \"ca.pem\"\n", "store.ca_file is only for backend = \"postgres\""),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("s3cret"), "the password is not repeated: {error}");
        }
        let error = Config::parse("[store]\nbackend = \"mysql\"\n").unwrap_err().to_string();
        assert!(error.contains("unknown variant `mysql`, expected `sqlite` or `postgres`"), "{error}");
        assert!(Config::parse("[store]\nbakend = \"sqlite\"\n").unwrap_err().to_string().contains("bakend"));
        let missing = "[store]\nbackend = \"postgres\"\nurl = \"postgres://m@db.example/v\"\npassword_file = \"/nonexistent/pg.pass\"\n";
        let error = Config::parse(missing).and_then(|c| c.check_files()).unwrap_err().to_string();
        assert!(error.starts_with("store.password_file: cannot read /nonexistent/pg.pass"), "{error}");
    }

    #[test]
    fn peer_tls_is_verify_or_insecure_and_insecure_is_warned_of() {
        assert_eq!(Config::default().messenger.peer_tls, "verify");
        assert!(Config::default().warnings().iter().all(|w| !w.contains("peer_tls")));
        let error = Config::parse("[messenger]\npeer_tls = \"sometimes\"\n").unwrap_err().to_string();
        assert!(error.starts_with("messenger.peer_tls: "), "{error}");
        let lab = Config::parse("[messenger]\npeer_tls = \"insecure\"\n").unwrap();
        assert!(
            lab.warnings().iter().any(|w| w.starts_with("messenger.peer_tls = \"insecure\"")),
            "{:?}",
            lab.warnings()
        );
    }
}
