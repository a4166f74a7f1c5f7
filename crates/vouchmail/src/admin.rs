//! Admin subcommands. They work on the same store as a running server (SQLite in WAL mode
//! allows both), and every bad input gets one clear line and a non-zero exit.

use crate::error::CliError;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use vouchmail_proto::authkey::Verdict;
use vouchmail_proto::headers;
use vouchmail_proto::sasl::{Secrets, SecretsPolicy};
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::time::rfc3339;
use vouchmail_server::auth::authkey::verifier;
use vouchmail_server::rules::{folders, tracking_folder};
use vouchmail_store::{AuthKey, AuthKeySettings, CertMatch, Folder, NewAccount, SenderPolicy, Store};

use crate::listing::{print_json, write_stdout, Listing};
use crate::progress::ProgressBar;

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Add a local domain.
    Add {
        /// The domain name; an internationalized one is stored as A-labels (xn--...).
        name: String,
        /// Sender policy for both cases (SPEC 2): accept, junk, reject, reject-notify-sender,
        /// reject-notify-recipient or reject-notify-both (require = reject, tag = junk).
        #[arg(long, default_value = "reject")]
        policy: String,
        /// The action for mail no method authenticated (overrides --policy for this case).
        #[arg(long, value_name = "ACTION")]
        unauthenticated: Option<String>,
        /// The action for mail whose X-Auth-Key its Authentication Server called invalid.
        #[arg(long, value_name = "ACTION")]
        forged: Option<String>,
        /// Hold the domain's mail for these ODMR customer accounts (RFC 2645) instead of
        /// delivering it: they take it with ATRN.
        #[arg(long, value_delimiter = ',', value_name = "ACCOUNT[,ACCOUNT]")]
        held_for: Vec<String>,
        /// host:port that ETRN for this held domain delivers to (RFC 1985).
        #[arg(long, value_name = "HOST:PORT", requires = "held_for")]
        etrn_host: Option<String>,
        /// Allow an IP address or a single label other than localhost as the name.
        #[arg(long)]
        allow_unusual: bool,
    },
    /// Make a domain held for ODMR customer accounts, or (with no accounts) not held.
    Held {
        /// A local domain.
        name: String,
        /// The customer accounts that take its mail with ATRN; none: not held any more.
        #[arg(value_delimiter = ',', value_name = "ACCOUNT[,ACCOUNT]")]
        accounts: Vec<String>,
        /// host:port that ETRN for this held domain delivers to (RFC 1985).
        #[arg(long, value_name = "HOST:PORT")]
        etrn_host: Option<String>,
    },
    /// Print the DNS records the domain should publish (SPEC 13): SPF, its DKIM keys,
    /// DMARC, and AS= when this server is an Authentication Server.
    Dns {
        /// A local domain.
        name: String,
    },
    /// List local domains: name, sender policy, catch-all, held for, ETRN host.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Remove a local domain (it must have no accounts left).
    Remove {
        /// The local domain.
        name: String,
    },
    /// Change a domain's sender policy (SPEC 2): one action for both cases, or each case
    /// with --unauthenticated and --forged.
    #[command(arg_required_else_help = true)]
    Policy {
        /// A local domain.
        name: String,
        /// accept, junk, reject, reject-notify-sender, reject-notify-recipient or
        /// reject-notify-both, for both cases.
        #[arg(required_unless_present_any = ["unauthenticated", "forged", "dmarc_counts"])]
        policy: Option<String>,
        /// The action for mail no method authenticated.
        #[arg(long, value_name = "ACTION")]
        unauthenticated: Option<String>,
        /// The action for mail with an X-Auth-Key its Authentication Server called invalid.
        #[arg(long, value_name = "ACTION")]
        forged: Option<String>,
        /// Whether a DMARC pass (an aligned SPF or DKIM pass of the From domain)
        /// authenticates the sender (SPEC 2, 13; true by default). false: only the
        /// address-level methods count (SMTP AUTH, RCRAM-MD5, AuthKeys, trusted relays).
        #[arg(long, value_name = "true|false")]
        dmarc_counts: Option<bool>,
    },
    /// Set (or with --off clear) the account that receives mail for unknown addresses.
    CatchAll {
        /// A local domain.
        name: String,
        /// The account that receives the mail for the domain's unknown addresses.
        #[arg(conflicts_with = "off", required_unless_present = "off")]
        account: Option<String>,
        /// No catch-all: mail for unknown addresses is refused (550 5.1.1).
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an account. Without --password-stdin a password is generated and printed once.
    Add {
        /// The account's address, in a local domain.
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Mailbox quota in bytes; 0 (the default) means no quota.
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        quota: u64,
    },
    /// List accounts: address, messages, bytes used, quota.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show, set or clear the addresses an account may send as besides its own and its
    /// aliases' (SPEC 3 may_send_as): on submission, MAIL FROM and the From header.
    SendAs {
        /// The account.
        address: String,
        /// The addresses it may send as (replacing the list); none: show the list.
        #[arg(conflicts_with = "clear")]
        send_as: Vec<String>,
        /// Empty the list.
        #[arg(long)]
        clear: bool,
    },
    /// Remove an account and its mailbox.
    Remove {
        /// The account.
        address: String,
        /// Also remove what still points at it (alias targets, held domains, catch-alls).
        #[arg(long)]
        force: bool,
    },
    /// Set a new password (and so every stored secret kind).
    Passwd {
        /// The account.
        address: String,
        /// Read the new password from the first line of standard input (else one is
        /// generated and printed once).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set the mailbox quota in bytes (0: none).
    ///
    /// A message that would take the mailbox over its quota is refused for now (452
    /// 4.2.2), at RCPT when the client declared its SIZE, else at the end of DATA; the
    /// sender keeps it and retries, and it is accepted once mail has been deleted (POP3
    /// DELE) or the quota raised. Tracking records do not count.
    Quota {
        /// The account.
        address: String,
        /// The quota in bytes; 0 means no quota.
        bytes: u64,
    },
    /// Map a TLS client certificate to the account, for SASL EXTERNAL.
    CertMap {
        /// The account the certificate logs in as.
        address: String,
        /// Subject DN (RFC 4514), trusted only for certificates verified by tls.client_ca.
        #[arg(long, group = "what")]
        subject: Option<String>,
        /// SHA-256 fingerprint of the certificate (hex, colons allowed).
        #[arg(long, group = "what")]
        fingerprint: Option<String>,
        /// A PEM certificate file: its fingerprint is mapped.
        #[arg(long, group = "what")]
        cert: Option<std::path::PathBuf>,
    },
    /// Remove a certificate mapping (by its subject or fingerprint).
    CertUnmap {
        /// The account.
        address: String,
        /// The mapping's subject DN or fingerprint, as `user cert-maps` shows it.
        value: String,
    },
    /// List certificate mappings: account, kind, subject DN or fingerprint.
    CertMaps {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Make ALIAS deliver to every TARGET (local accounts, other aliases or remote addresses).
    Add {
        /// The alias address (in a local domain).
        alias: String,
        /// Where its mail goes; local targets must exist, and none may lead back to ALIAS.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Accept local targets that do not exist yet (created later).
        #[arg(long)]
        allow_missing: bool,
    },
    /// List aliases, one line per target.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Remove an alias, or only one of its targets.
    Remove {
        /// The alias address.
        alias: String,
        /// Only this target of it.
        target: Option<String>,
        /// When the alias goes away, also remove what still points at it (other aliases'
        /// targets, held domains, catch-alls).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// One line per message: id, date, folder, from, subject, size; the Tracking folder's
    /// records after them (ids T1, T2, ...).
    List {
        /// The account.
        address: String,
        /// INBOX, Junk or Tracking (default: all folders).
        #[arg(long)]
        folder: Option<String>,
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// The account's folders (SPEC 9): name, special use, messages, UIDVALIDITY, UIDNEXT,
    /// HIGHESTMODSEQ.
    Folders {
        /// The account.
        address: String,
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Print one message as stored.
    Show {
        /// The account.
        address: String,
        /// The message's id, as `mailbox list` shows it.
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum DmarcCommand {
    /// Queue the aggregate reports (RFC 7489 7.2) of the days that ended and not yet sent
    /// (the server does this soon after each UTC midnight); prints one line per report.
    Report {
        /// Close the current day too, and send its reports now.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Make a DKIM key for a local domain; it signs from now on. Prints its TXT record.
    New {
        /// A local domain.
        domain: String,
        /// The selector (default: rsaYYYYMMDD or edYYYYMMDD).
        #[arg(long)]
        selector: Option<String>,
        /// rsa-sha256 (2048 bits, verified everywhere) or ed25519-sha256 (RFC 8463).
        #[arg(long, default_value = "rsa-sha256")]
        algorithm: String,
    },
    /// List the keys: domain, selector, algorithm, whether it signs, when it was made.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// New keys sign for the domain (one per algorithm it signs with); the old ones stay
    /// published until retired. Prints the new TXT records.
    Rotate {
        /// A local domain.
        domain: String,
    },
    /// Remove a key that no longer signs (after rotate); its TXT record can then go.
    Retire {
        /// A local domain.
        domain: String,
        /// The key's selector (`dkim list`).
        selector: String,
    },
}

#[derive(Subcommand)]
pub enum TrackingCommand {
    /// The Tracking folder of a local user (SPEC 8.3), or of every user, oldest first: one
    /// line per record (time, event, Message-ID, recipient, reporting server; the sender
    /// first when listing every user), or with --csv the records as TRACK sends them, after
    /// a CSV header line.
    List {
        /// The sender whose records to show (default: every local user's).
        address: Option<String>,
        /// Only records at or after this time (RFC 3339, e.g. 2026-12-01T10:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// Print the records in their CSV form (RFC 4180).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Entries not yet delivered: queue id, state, attempts, next attempt, size, sender, recipient.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// A message's entries (any state), then its header.
    Show {
        /// A queue id, as `queue list` shows it.
        queue_id: String,
    },
    /// Delete the pending entries of messages (or with --all, of every message).
    Delete {
        /// Queue ids, as `queue list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        queue_ids: Vec<String>,
        /// Every message with pending entries.
        #[arg(long)]
        all: bool,
    },
    /// Make deferred messages due now (or with --all, every one); a running server sends them.
    Retry {
        /// Queue ids, as `queue list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        queue_ids: Vec<String>,
        /// Every deferred message.
        #[arg(long)]
        all: bool,
    },
    /// Deliver everything pending now, from this process, and wait for the outcome.
    Flush,
}

/// An address, its domain in the stored form (A-labels) so `bücher.example` and
/// `xn--bcher-kva.example` name the same accounts.
fn parse_address(text: &str) -> Result<Address, CliError> {
    let address =
        Address::parse(text).map_err(|e| CliError::failed(format!("'{text}' is not a valid address: {e}")))?;
    match vouchmail_server::rules::accounts::ascii_domain(address.domain()) {
        Some(ascii) => {
            Address::from_parts(address.local(), &ascii).map_err(|e| CliError::failed(format!("'{text}': {e}")))
        }
        None => Ok(address),
    }
}

/// A domain name as stored (A-labels); names an existing domain, so unusual forms pass.
fn parse_domain(text: &str) -> Result<String, CliError> {
    Ok(vouchmail_server::rules::accounts::normalize_domain(text, true)?)
}

/// `NAME (U-LABELS)` for an internationalized name, else NAME.
fn domain_text(ascii: &str) -> String {
    match vouchmail_server::rules::accounts::unicode_name(ascii) {
        Some(unicode) => format!("{ascii} ({unicode})"),
        None => ascii.to_string(),
    }
}

/// What a sender policy means for mail from the internet, in one sentence.
fn policy_meaning(policy: &SenderPolicy) -> String {
    let what = |action: vouchmail_store::PolicyAction| match action {
        vouchmail_store::PolicyAction::Accept => "delivered",
        vouchmail_store::PolicyAction::Junk => "delivered to Junk",
        _ => "refused (550 5.7.1)",
    };
    format!(
        "mail from the internet whose sender no method authenticated is {}, with a forged AuthKey {}",
        what(policy.unauthenticated),
        what(policy.forged)
    )
}

fn parse_accounts(accounts: &[String]) -> Result<Vec<String>, CliError> {
    accounts
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| parse_address(a).map(|a| a.to_string().to_lowercase()))
        .collect()
}

fn check_etrn_host(host: Option<&str>) -> Result<(), CliError> {
    match host {
        Some(h) if h.rsplit_once(':').is_none_or(|(name, port)| name.is_empty() || port.parse::<u16>().is_err()) => {
            Err(CliError::failed(format!("'{h}' is not host:port")))
        }
        _ => Ok(()),
    }
}

fn read_password_stdin() -> Result<String, CliError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CliError::failed(format!("cannot read the password from standard input: {e}")))?;
    let password = input.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(CliError::failed("the password on standard input is empty"));
    }
    Ok(password)
}

fn secrets_for(password: &str, policy: &SecretsPolicy) -> Result<Secrets, CliError> {
    let mut salts = [0u8; vouchmail_proto::sasl::SALTS_LEN];
    getrandom::getrandom(&mut salts).map_err(|e| CliError::failed(format!("random source: {e}")))?;
    Secrets::from_password_with(password, policy, &salts).map_err(|e| CliError::failed(e.to_string()))
}

/// SHA-256 fingerprint (hex) of the first certificate in a PEM file.
fn pem_fingerprint(path: &std::path::Path) -> Result<String, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
    let der = vouchmail_server::net::x509::first_pem_certificate(&text)
        .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    use sha2::Digest;
    Ok(sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect())
}

/// A policy with the cases given on the command line replaced.
fn with_cases(
    mut policy: SenderPolicy,
    unauthenticated: Option<String>,
    forged: Option<String>,
) -> Result<SenderPolicy, CliError> {
    if let Some(action) = unauthenticated {
        policy.unauthenticated = action.parse().map_err(|e| CliError::failed(format!("--unauthenticated: {e}")))?;
    }
    if let Some(action) = forged {
        policy.forged = action.parse().map_err(|e| CliError::failed(format!("--forged: {e}")))?;
    }
    Ok(policy)
}

/// The DNS records `domain` should publish (SPEC 13), with `AS=` naming this server when
/// it is an Authentication Server (its hostname, and the VERIFY port unless 2884).
pub async fn records_to_publish(
    store: &dyn Store,
    config: &vouchmail_server::config::Config,
    domain: &str,
) -> Result<Vec<vouchmail_server::rules::dkim::DnsRecord>, CliError> {
    let authentication_server = match config.listeners.authkey.first() {
        Some(addr) if config.authkey.server && addr.port() == 2884 => Some(config.hostname.clone()),
        Some(addr) if config.authkey.server => Some(format!("{}:{}", config.hostname, addr.port())),
        _ => None,
    };
    let records = vouchmail_server::rules::dkim::records_to_publish(
        store,
        domain,
        &config.hostname,
        authentication_server.as_deref(),
    )
    .await?;
    Ok(records)
}

pub async fn domain(
    store: &dyn Store,
    command: DomainCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    match command {
        DomainCommand::Dns { name } => {
            let name = parse_domain(&name)?;
            for record in records_to_publish(store, config, &name).await? {
                println!("{record}");
            }
        }
        DomainCommand::Add { name, policy, unauthenticated, forged, held_for, etrn_host, allow_unusual } => {
            let name = vouchmail_server::rules::accounts::normalize_domain(&name, allow_unusual)?;
            let policy = with_cases(policy.parse()?, unauthenticated, forged)?;
            let held_for = parse_accounts(&held_for)?;
            check_etrn_host(etrn_host.as_deref())?;
            store.add_domain(&name, policy).await.map_err(|e| CliError::failed(e.to_string()))?;
            if !held_for.is_empty() {
                if let Err(e) = store.set_domain_held(&name, &held_for, etrn_host.as_deref()).await {
                    // Leave nothing half-made behind.
                    let _ = store.remove_domain(&name).await;
                    return Err(CliError::failed(e.to_string()));
                }
                println!(
                    "added domain {} (policy {policy}), held for {}: {}",
                    domain_text(&name),
                    held_for.join(", "),
                    policy_meaning(&policy)
                );
            } else {
                println!("added domain {} (policy {policy})", domain_text(&name));
            }
        }
        DomainCommand::Held { name, accounts, etrn_host } => {
            let name = parse_domain(&name)?;
            let accounts = parse_accounts(&accounts)?;
            check_etrn_host(etrn_host.as_deref())?;
            store
                .set_domain_held(&name, &accounts, etrn_host.as_deref())
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            if accounts.is_empty() {
                println!("domain {} is no longer held", domain_text(&name));
            } else {
                println!("domain {} is held for {}", domain_text(&name), accounts.join(", "));
            }
        }
        DomainCommand::List { json } => {
            let mut listing = Listing::new(&["DOMAIN", "POLICY", "DMARC", "CATCH-ALL", "HELD-FOR", "ETRN-HOST"]);
            for d in store.list_domains().await.map_err(|e| CliError::failed(e.to_string()))? {
                let object = serde_json::json!({
                    "domain": d.name,
                    "unicode": vouchmail_server::rules::accounts::unicode_name(&d.name),
                    "policy": d.policy.to_string(),
                    "unauthenticated": d.policy.unauthenticated.to_string(),
                    "forged": d.policy.forged.to_string(),
                    "dmarc_counts": d.policy.dmarc_counts,
                    "catch_all": d.catch_all,
                    "held_for": d.held_for,
                    "etrn_host": d.etrn_host,
                });
                let cells = vec![
                    domain_text(&d.name),
                    d.policy.to_string(),
                    if d.policy.dmarc_counts { "counts" } else { "-" }.to_string(),
                    d.catch_all.unwrap_or_default(),
                    d.held_for.join(","),
                    d.etrn_host.unwrap_or_default(),
                ];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
        DomainCommand::Remove { name } => {
            let name = parse_domain(&name)?;
            vouchmail_server::rules::accounts::remove_domain(store, &name).await?;
            println!("removed domain {}", domain_text(&name));
        }
        DomainCommand::Policy { name, policy, unauthenticated, forged, dmarc_counts } => {
            let name = parse_domain(&name)?;
            let domain = store.get_domain(&name).await.map_err(|e| CliError::failed(e.to_string()))?;
            let stored = domain.ok_or_else(|| CliError::failed(format!("no local domain {name}")))?.policy;
            let mut current: SenderPolicy = match policy {
                Some(policy) => policy.parse()?,
                None => stored,
            };
            current.dmarc_counts = dmarc_counts.unwrap_or(stored.dmarc_counts);
            let policy = with_cases(current, unauthenticated, forged)?;
            store.set_domain_policy(&name, policy).await.map_err(|e| CliError::failed(e.to_string()))?;
            let dmarc = if policy.dmarc_counts { "counts" } else { "does not count" };
            println!("domain {} now has policy {policy}; a DMARC pass {dmarc}", domain_text(&name));
        }
        DomainCommand::CatchAll { name, account, off } => {
            let name = parse_domain(&name)?;
            let account = match (account, off) {
                (Some(a), false) => Some(parse_address(&a)?.to_string()),
                _ => None,
            };
            store.set_catch_all(&name, account.as_deref()).await.map_err(|e| CliError::failed(e.to_string()))?;
            match account {
                Some(a) => println!("mail for unknown addresses at {} goes to {a}", domain_text(&name)),
                None => println!("domain {} has no catch-all", domain_text(&name)),
            }
        }
    }
    Ok(())
}

pub async fn user(store: &dyn Store, command: UserCommand, policy: &SecretsPolicy) -> Result<(), CliError> {
    match command {
        UserCommand::Add { address, password_stdin, quota } => {
            let address = parse_address(&address)?.to_string().to_lowercase();
            let (password, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (vouchmail_server::rules::bootstrap::generate_password(20)?, true)
            };
            let secrets = secrets_for(&password, policy)?;
            store
                .add_account(NewAccount { address: address.clone(), secrets, quota_bytes: quota })
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            if generated {
                println!("added user {address} with password {password}");
            } else {
                println!("added user {address}");
            }
        }
        UserCommand::List { json } => {
            let mut listing = Listing::new(&["ADDRESS", "MESSAGES", "USED", "QUOTA"]);
            for a in store.list_accounts().await.map_err(|e| CliError::failed(e.to_string()))? {
                // 0 means no quota, everywhere: "none" here, null in JSON.
                let quota = (a.quota_bytes > 0).then_some(a.quota_bytes);
                let object = serde_json::json!({
                    "address": a.address,
                    "messages": a.message_count,
                    "used_bytes": a.used_bytes,
                    "quota_bytes": quota,
                });
                let cells = vec![
                    a.address,
                    a.message_count.to_string(),
                    a.used_bytes.to_string(),
                    quota.map_or("none".to_string(), |q| q.to_string()),
                ];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
        UserCommand::Remove { address, force } => {
            let address = parse_address(&address)?.to_string();
            let refs = vouchmail_server::rules::accounts::remove_account(store, &address, force).await?;
            if refs.is_empty() {
                println!("removed user {address}");
            } else {
                println!("removed user {address} and its use by {}", refs.describe());
            }
        }
        UserCommand::Passwd { address, password_stdin } => {
            let address = parse_address(&address)?.to_string();
            if store.get_account(&address).await.map_err(|e| CliError::failed(e.to_string()))?.is_none() {
                return Err(CliError::failed(format!("user {address} not found")));
            }
            let (password, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (vouchmail_server::rules::bootstrap::generate_password(20)?, true)
            };
            store
                .set_secrets(&address, secrets_for(&password, policy)?)
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            if generated {
                println!("new password for {address}: {password}");
            } else {
                println!("password of {address} changed");
            }
        }
        UserCommand::CertMap { address, subject, fingerprint, cert } => {
            let address = parse_address(&address)?.to_string();
            let (kind, value) = match (subject, fingerprint, cert) {
                (Some(subject), _, _) => (CertMatch::Subject, subject),
                (_, Some(fingerprint), _) => (CertMatch::Fingerprint, fingerprint),
                (_, _, Some(path)) => (CertMatch::Fingerprint, pem_fingerprint(&path)?),
                _ => return Err(CliError::failed("give --subject, --fingerprint or --cert")),
            };
            if kind == CertMatch::Fingerprint && CertMatch::Fingerprint.normalize(&value).len() != 64 {
                return Err(CliError::failed(format!("'{value}' is not a SHA-256 fingerprint (64 hex digits)")));
            }
            store.add_cert_mapping(&address, kind, &value).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("{} {} now authenticates as {address} with EXTERNAL", kind.as_str(), kind.normalize(&value));
        }
        UserCommand::CertUnmap { address, value } => {
            let address = parse_address(&address)?.to_string();
            store.remove_cert_mapping(&address, &value).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("removed the certificate mapping of {address}");
        }
        UserCommand::CertMaps { json } => {
            let mut listing = Listing::new(&["ADDRESS", "KIND", "VALUE"]);
            for m in store.list_cert_mappings().await.map_err(|e| CliError::failed(e.to_string()))? {
                let object = serde_json::json!({"address": m.address, "kind": m.kind.as_str(), "value": m.value});
                listing.push(vec![m.address, m.kind.as_str().to_string(), m.value], object);
            }
            listing.print(json)?;
        }
        UserCommand::SendAs { address, send_as, clear } => {
            let address = parse_address(&address)?.to_string();
            if clear || !send_as.is_empty() {
                let list =
                    send_as.iter().map(|a| parse_address(a).map(|a| a.to_string())).collect::<Result<Vec<_>, _>>()?;
                store.set_send_as(&address, &list).await.map_err(|e| CliError::failed(e.to_string()))?;
            }
            let list = store.send_as(&address).await.map_err(|e| CliError::failed(e.to_string()))?;
            match list.is_empty() {
                true => println!("{address} sends only as itself and its aliases"),
                false => println!("{address} may also send as {}", list.join(", ")),
            }
        }
        UserCommand::Quota { address, bytes } => {
            let address = parse_address(&address)?.to_string();
            store.set_quota(&address, bytes).await.map_err(|e| CliError::failed(e.to_string()))?;
            if bytes == 0 {
                println!("{address} has no quota now");
            } else {
                println!("quota of {address} is now {bytes} bytes");
            }
        }
    }
    Ok(())
}

pub async fn alias(store: &dyn Store, command: AliasCommand) -> Result<(), CliError> {
    match command {
        AliasCommand::Add { alias, targets, allow_missing } => {
            let alias = parse_address(&alias)?.to_string();
            let targets =
                targets.iter().map(|t| parse_address(t).map(|a| a.to_string())).collect::<Result<Vec<_>, _>>()?;
            vouchmail_server::rules::accounts::check_new_alias(store, &alias, &targets, allow_missing).await?;
            store.add_alias(&alias, &targets).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("{alias} -> {}", targets.join(", "));
        }
        AliasCommand::List { json } => {
            let mut listing = Listing::new(&["ALIAS", "TARGET"]);
            for (alias, target) in store.list_aliases().await.map_err(|e| CliError::failed(e.to_string()))? {
                let object = serde_json::json!({"alias": alias, "target": target});
                listing.push(vec![alias, target], object);
            }
            listing.print(json)?;
        }
        AliasCommand::Remove { alias, target, force } => {
            let alias = parse_address(&alias)?.to_string();
            let refs = vouchmail_server::rules::accounts::remove_alias(store, &alias, target.as_deref(), force).await?;
            let also = if refs.is_empty() { String::new() } else { format!(" and its use by {}", refs.describe()) };
            println!("removed {alias}{}{also}", target.map(|t| format!(" -> {t}")).unwrap_or_default());
        }
    }
    Ok(())
}

pub fn time_text(unix: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

/// A header value for one-line display: encoded words decoded, tabs and newlines gone.
fn display_header(message: &[u8], name: &str) -> String {
    let value = headers::first_value(message, name).unwrap_or_default();
    let decoded = headers::decode_encoded_words(&value);
    decoded.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

pub async fn mailbox(store: &dyn Store, command: MailboxCommand) -> Result<(), CliError> {
    match command {
        MailboxCommand::Folders { address, json } => {
            let address = parse_address(&address)?.to_string();
            const COLUMNS: [&str; 6] = ["FOLDER", "SPECIAL-USE", "MESSAGES", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"];
            let mut listing = Listing::new(&COLUMNS);
            for mut folder in store.list_folders(&address).await.map_err(|e| CliError::failed(e.to_string()))? {
                // SPEC 9: the Tracking folder's messages are the account's records.
                if folders::is_tracking(&folder.name) {
                    let records = store
                        .tracking_records(&address, None, tracking_folder::SHOWN_RECORDS)
                        .await
                        .map_err(|e| CliError::failed(e.to_string()))?;
                    folder = tracking_folder::folder_state(folder, &records);
                }
                let object = serde_json::json!({
                    "folder": folder.name,
                    "special_use": folder.special_use,
                    "messages": folder.messages,
                    "uid_validity": folder.uid_validity,
                    "uid_next": folder.uid_next,
                    "highest_modseq": folder.highest_modseq,
                    "subscribed": folder.subscribed,
                });
                let cells = vec![
                    folder.name,
                    folder.special_use.unwrap_or_else(|| "-".into()),
                    folder.messages.to_string(),
                    folder.uid_validity.to_string(),
                    folder.uid_next.to_string(),
                    folder.highest_modseq.to_string(),
                ];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
        MailboxCommand::List { address, folder, json } => {
            let address = parse_address(&address)?.to_string();
            let folder = folder.map(|f| f.parse::<Folder>().map_err(CliError::from)).transpose()?;
            let mut listing = Listing::new(&["ID", "RECEIVED", "FOLDER", "FROM", "SUBJECT", "SIZE"]);
            for entry in store.list_mailbox(&address, folder).await.map_err(|e| CliError::failed(e.to_string()))? {
                let message =
                    store.get_mailbox_message(&address, entry.id).await.map_err(|e| CliError::failed(e.to_string()))?;
                let data = message.map(|(_, data)| data).unwrap_or_default();
                let from = display_header(&data, "From");
                let subject = display_header(&data, "Subject");
                let object = serde_json::json!({
                    "id": entry.id,
                    "uid": entry.uid,
                    "received": time_text(entry.received_at),
                    "folder": entry.folder.to_string(),
                    "from": from,
                    "subject": subject,
                    "size": entry.size,
                });
                let cells = vec![
                    entry.id.to_string(),
                    time_text(entry.received_at),
                    entry.folder.to_string(),
                    from,
                    subject,
                    entry.size.to_string(),
                ];
                listing.push(cells, object);
            }
            // SPEC 8.3: the Tracking folder holds the user's tracking records (rows, not
            // messages): listed after the messages, ids prefixed with T. Its FROM is the
            // server that reported the event, its SUBJECT the event, recipient and
            // Message-ID, its SIZE that of the record's CSV line.
            if folder.is_none() || folder == Some(Folder::Tracking) {
                for stored in store
                    .tracking_records(&address, None, usize::MAX)
                    .await
                    .map_err(|e| CliError::failed(e.to_string()))?
                {
                    let r = stored.record;
                    let size = r.to_line().map(|line| line.len()).unwrap_or_default();
                    // Not "id": a record is no message for `mailbox show`.
                    let object = serde_json::json!({
                        "tracking_id": stored.id,
                        "received": time_text(r.timestamp),
                        "folder": Folder::Tracking.to_string(),
                        "event": r.event.to_string(),
                        "recipient": r.recipient,
                        "message_id": r.message_id,
                        "reporting_server": r.reporting_server,
                        "size": size,
                    });
                    let cells = vec![
                        format!("T{}", stored.id),
                        time_text(r.timestamp),
                        Folder::Tracking.to_string(),
                        r.reporting_server,
                        format!("{} {} {}", r.event, r.recipient, r.message_id),
                        size.to_string(),
                    ];
                    listing.push(cells, object);
                }
            }
            listing.print(json)?;
        }
        MailboxCommand::Show { address, id } => {
            let address = parse_address(&address)?.to_string();
            let Some((_, data)) =
                store.get_mailbox_message(&address, id).await.map_err(|e| CliError::failed(e.to_string()))?
            else {
                return Err(CliError::failed(format!("no message {id} in the mailbox of {address}")));
            };
            use std::io::Write;
            std::io::stdout().write_all(&data).map_err(|e| CliError::failed(e.to_string()))?;
        }
    }
    Ok(())
}

/// `vouchmail tracking` (SPEC 8.3, 12).
pub async fn tracking(store: &dyn Store, command: TrackingCommand) -> Result<(), CliError> {
    match command {
        TrackingCommand::List { address, since, csv, json } => {
            let since = since
                .map(|s| {
                    vouchmail_proto::time::parse_rfc3339(&s).ok_or_else(|| {
                        CliError::failed(format!("--since '{s}' is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)"))
                    })
                })
                .transpose()?;
            let every = address.is_none();
            let owners = match address {
                Some(address) => {
                    let address = parse_address(&address)?.to_string();
                    if store.get_account(&address).await.map_err(|e| CliError::failed(e.to_string()))?.is_none() {
                        return Err(CliError::failed(format!("no user {address}")));
                    }
                    vec![address]
                }
                None => store
                    .list_accounts()
                    .await
                    .map_err(|e| CliError::failed(e.to_string()))?
                    .into_iter()
                    .map(|a| a.address)
                    .collect(),
            };
            let mut csv_text = format!("{}\n", vouchmail_proto::messenger::tracking::CSV_HEADER);
            // The sender column only when listing every user's records.
            let headers: &'static [&'static str] = if every {
                &["SENDER", "TIME", "EVENT", "MESSAGE-ID", "RECIPIENT", "REPORTED-BY"]
            } else {
                &["TIME", "EVENT", "MESSAGE-ID", "RECIPIENT", "REPORTED-BY"]
            };
            let mut listing = Listing::new(headers);
            for owner in owners {
                let records = store
                    .tracking_records(&owner, since, usize::MAX)
                    .await
                    .map_err(|e| CliError::failed(e.to_string()))?;
                for stored in records {
                    let r = stored.record;
                    if csv {
                        csv_text.push_str(&r.to_line().map_err(|e| CliError::failed(e.to_string()))?);
                        csv_text.push('\n');
                        continue;
                    }
                    let object = serde_json::json!({
                        "owner": owner,
                        "sender": r.sender,
                        "timestamp": time_text(r.timestamp),
                        "event": r.event.to_string(),
                        "message_id": r.message_id,
                        "recipient": r.recipient,
                        "reporting_server": r.reporting_server,
                    });
                    let mut cells = if every { vec![owner.clone()] } else { Vec::new() };
                    cells.extend([time_text(r.timestamp), r.event.to_string(), r.message_id, r.recipient]);
                    cells.push(r.reporting_server);
                    listing.push(cells, object);
                }
            }
            if csv {
                write_stdout(&csv_text)?;
            } else {
                listing.print(json)?;
            }
        }
    }
    Ok(())
}

pub async fn queue(
    store: std::sync::Arc<dyn Store>,
    command: QueueCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    let store_ref = store.as_ref();
    match command {
        QueueCommand::List { json } => {
            let entries = store.list_queue().await.map_err(|e| CliError::failed(e.to_string()))?;
            let mut listing =
                Listing::new(&["QUEUE-ID", "STATE", "ATTEMPTS", "NEXT-ATTEMPT", "SIZE", "SENDER", "RECIPIENT"]);
            for e in entries {
                let object = serde_json::json!({
                    "queue_id": e.queue_id,
                    "state": e.state.to_string(),
                    "attempts": e.attempts,
                    "next_attempt": time_text(e.next_attempt),
                    "size": e.size,
                    "sender": e.sender,
                    "recipient": e.recipient,
                    "last_reply": e.last_reply,
                });
                // The null sender of a DSN shows as <>.
                let sender = if e.sender.is_empty() { "<>".to_string() } else { e.sender };
                let cells = vec![
                    e.queue_id,
                    e.state.to_string(),
                    e.attempts.to_string(),
                    time_text(e.next_attempt),
                    e.size.to_string(),
                    sender,
                    e.recipient,
                ];
                listing.push(cells, object);
            }
            let count = listing.len();
            listing.print(json)?;
            eprintln!("{count} queued recipient(s)");
        }
        QueueCommand::Show { queue_id } => {
            let Some((entries, data)) =
                store.get_queued_message(&queue_id).await.map_err(|e| CliError::failed(e.to_string()))?
            else {
                return Err(CliError::failed(format!("queue id {queue_id} not found")));
            };
            for e in &entries {
                let reply = e.last_reply.as_deref().unwrap_or("-");
                println!(
                    "{}\t{}\tattempts={}\tnext={}\t{}",
                    e.recipient,
                    e.state,
                    e.attempts,
                    time_text(e.next_attempt),
                    reply
                );
            }
            println!();
            let end = headers::header_end(&data);
            use std::io::Write;
            std::io::stdout().write_all(&data[..end.min(data.len())]).map_err(|e| CliError::failed(e.to_string()))?;
        }
        QueueCommand::Delete { queue_ids, all } => {
            let queue_ids = if all { pending_queue_ids(store_ref).await? } else { queue_ids };
            let single = !all && queue_ids.len() == 1;
            let mut bar = ProgressBar::new("delete", queue_ids.len() as u64);
            let mut total = 0;
            for (i, queue_id) in queue_ids.iter().enumerate() {
                let deleted =
                    store.delete_queued_message(queue_id).await.map_err(|e| CliError::failed(e.to_string()))?;
                total += deleted;
                if single {
                    println!("deleted {deleted} pending entr{} of {queue_id}", if deleted == 1 { "y" } else { "ies" });
                }
                bar.set(i as u64 + 1, queue_id);
            }
            bar.finish();
            if !single {
                println!(
                    "deleted {total} pending entr{} of {} message(s)",
                    if total == 1 { "y" } else { "ies" },
                    queue_ids.len()
                );
            }
        }
        QueueCommand::Retry { queue_ids, all } => {
            let now = vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
            if all {
                let n = store.retry_queued(None, now).await.map_err(|e| CliError::failed(e.to_string()))?;
                println!("{n} entr{} due now", if n == 1 { "y" } else { "ies" });
            } else {
                let mut bar = ProgressBar::new("retry", queue_ids.len() as u64);
                let mut total = 0;
                for (i, queue_id) in queue_ids.iter().enumerate() {
                    total +=
                        store.retry_queued(Some(queue_id), now).await.map_err(|e| CliError::failed(e.to_string()))?;
                    bar.set(i as u64 + 1, queue_id);
                }
                bar.finish();
                println!("{total} entr{} due now", if total == 1 { "y" } else { "ies" });
            }
        }
        QueueCommand::Flush => {
            let counts = store.queue_counts().await.map_err(|e| CliError::failed(e.to_string()))?;
            let total = counts.queued + counts.deferred;
            let bar = std::sync::Arc::new(std::sync::Mutex::new(ProgressBar::new("flush", total)));
            let shown = std::sync::Arc::clone(&bar);
            let result = vouchmail_server::jobs::outbound::flush(config, store, move |p| {
                if let Ok(mut bar) = shown.lock() {
                    let detail = format!("delivered {} deferred {} bounced {}", p.delivered, p.deferred, p.bounced);
                    bar.set(p.done(), &detail);
                }
            })
            .await?;
            if let Ok(mut bar) = bar.lock() {
                let detail =
                    format!("delivered {} deferred {} bounced {}", result.delivered, result.deferred, result.bounced);
                bar.set(result.done(), &detail);
                bar.finish();
            }
            println!(
                "flushed {} of {total} entr{}: delivered {}, deferred {}, bounced {}",
                result.done(),
                if total == 1 { "y" } else { "ies" },
                result.delivered,
                result.deferred,
                result.bounced
            );
        }
    }
    Ok(())
}

/// The queue ids with pending entries, each once.
async fn pending_queue_ids(store: &dyn Store) -> Result<Vec<String>, CliError> {
    let mut ids: Vec<String> = Vec::new();
    for entry in store.list_queue().await.map_err(|e| CliError::failed(e.to_string()))? {
        if ids.last() != Some(&entry.queue_id) && !ids.contains(&entry.queue_id) {
            ids.push(entry.queue_id);
        }
    }
    Ok(ids)
}

#[derive(Subcommand)]
pub enum AuthKeyCommand {
    /// Set the AGI and AVT of an address, or of a domain (the default of its addresses).
    Set {
        /// An address, or a domain (the default for its addresses).
        target: String,
        /// Key generation interval: seconds, or with s, m, h or d (e.g. 7200m).
        #[arg(long)]
        agi: String,
        /// Validity after the next key, same units (e.g. 2880m).
        #[arg(long)]
        avt: String,
    },
    /// Every account's settings and newest key, or one address's (as `show`).
    List {
        /// Only this address, shown as `show` does.
        address: Option<String>,
        /// Print JSON instead (for scripts): an array of objects, or with ADDRESS one
        /// object as `show --json`.
        #[arg(long)]
        json: bool,
    },
    /// An address's settings, unexpired keys, and the key its sender side stamps.
    Show {
        /// A local address.
        address: String,
        /// Print one JSON object instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Make a new key for the address now.
    Rotate {
        /// A local address.
        address: String,
    },
    /// The VERIFY log: time, peer, address, result.
    Log {
        /// Only entries at or after this Unix time.
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// The DNS TXT record naming this server as the domain's Authentication Server.
    Dns {
        /// The domain whose senders' keys this server vouches for.
        domain: String,
    },
    /// Ask an Authentication Server whether KEY is valid for ADDRESS (SPEC 7.2: UDP, 3
    /// tries, then TCP). Without --server, the one the address's domain names in DNS.
    /// Exit 0 for VALIDKEY, 1 for INVALIDKEY or no answer.
    Verify {
        /// The sender address the key is for.
        address: String,
        /// The key: 64 characters of A-Z, a-z and 0-9, as an X-Auth-Key field carries it.
        key: String,
        /// The Authentication Server to ask (default port 2884).
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
    },
}

/// `7200m`, `2h`, `30` (seconds).
fn parse_interval(text: &str) -> Result<u64, CliError> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, 's'),
    };
    let n: u64 =
        digits.parse().map_err(|_| CliError::failed(format!("bad interval {text:?}: a number with s, m, h or d")))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(CliError::failed(format!("bad interval {text:?}: the unit is s, m, h or d"))),
    };
    n.checked_mul(scale).ok_or_else(|| CliError::failed(format!("interval {text:?} is too large")))
}

/// `text` as the address of an existing account (the keys are its, SPEC 7.1).
async fn local_account(store: &dyn Store, text: &str) -> Result<String, CliError> {
    let address = parse_address(text)?.to_string();
    match store.get_account(&address).await.map_err(|e| CliError::failed(e.to_string()))? {
        Some(account) => Ok(account.address),
        None => Err(CliError::failed(format!("no user {address}"))),
    }
}

/// `text` as a local domain's stored name.
async fn local_domain(store: &dyn Store, text: &str) -> Result<String, CliError> {
    let name = parse_domain(text)?;
    match store.get_domain(&name).await.map_err(|e| CliError::failed(e.to_string()))? {
        Some(domain) => Ok(domain.name),
        None => Err(CliError::failed(format!("no local domain {name}"))),
    }
}

/// An address's AGI and AVT, and where they come from: `address`, `domain` or `default`
/// (the configuration's).
async fn settings_of(
    store: &dyn Store,
    config: &vouchmail_server::config::Config,
    address: &str,
) -> Result<(AuthKeySettings, String), CliError> {
    Ok(match store.authkey_settings(address).await.map_err(|e| CliError::failed(e.to_string()))? {
        Some((s, source)) => (s, format!("{source:?}").to_lowercase()),
        None => (
            AuthKeySettings { agi_secs: config.authkey.default_agi_secs, avt_secs: config.authkey.default_avt_secs },
            "default".to_string(),
        ),
    })
}

/// SPEC 7.1 settings and keys, the VERIFY log, and the SPEC 7.3 TXT record.
pub async fn authkey(
    store_arc: Arc<dyn Store>,
    command: AuthKeyCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    let now = vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
    let store = store_arc.as_ref();
    match command {
        AuthKeyCommand::Set { target, agi, avt } => {
            let target = if target.contains('@') {
                local_account(store, &target).await?
            } else {
                local_domain(store, &target).await?
            };
            let settings = AuthKeySettings { agi_secs: parse_interval(&agi)?, avt_secs: parse_interval(&avt)? };
            store.set_authkey_settings(&target, Some(settings)).await?;
            println!("{target}: AGI {}s, AVT {}s", settings.agi_secs, settings.avt_secs);
        }
        AuthKeyCommand::List { address: None, json } => {
            let mut listing =
                Listing::new(&["ADDRESS", "AGI", "AVT", "SETTINGS", "KEYS", "NEWEST-CREATED", "NEWEST-EXPIRES"]);
            for account in store.list_accounts().await? {
                let (s, source) = settings_of(store, config, &account.address).await?;
                let keys = store.authkeys(&account.address, now).await?;
                let newest = keys.first();
                let object = serde_json::json!({
                    "address": account.address,
                    "agi_secs": s.agi_secs,
                    "avt_secs": s.avt_secs,
                    "settings": source,
                    "keys": keys.len(),
                    "newest_created": newest.map(|k| time_text(k.created_at)),
                    "newest_expires": newest.map(|k| time_text(k.expires_at)),
                });
                let cells = vec![
                    account.address,
                    format!("{}s", s.agi_secs),
                    format!("{}s", s.avt_secs),
                    source,
                    keys.len().to_string(),
                    newest.map(|k| time_text(k.created_at)).unwrap_or_default(),
                    newest.map(|k| time_text(k.expires_at)).unwrap_or_default(),
                ];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
        AuthKeyCommand::List { address: Some(address), json } | AuthKeyCommand::Show { address, json } => {
            let address = local_account(store, &address).await?;
            let (s, source) = settings_of(store, config, &address).await?;
            let keys = store.authkeys(&address, now).await?;
            let received = store.sender_key(&address).await?;
            if json {
                let keys: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "key": k.key,
                            "created": time_text(k.created_at),
                            "expires": time_text(k.expires_at),
                        })
                    })
                    .collect();
                let received = received.map(
                    |k| serde_json::json!({"key": k.key, "received": time_text(k.received_at), "source": k.source}),
                );
                return print_json(&serde_json::json!({
                    "address": address,
                    "agi_secs": s.agi_secs,
                    "avt_secs": s.avt_secs,
                    "settings": source,
                    "keys": keys,
                    "received_key": received,
                }));
            }
            let mut listing = Listing::new(&["KEY", "CREATED", "EXPIRES"]);
            for k in keys {
                let cells = vec![k.key, time_text(k.created_at), time_text(k.expires_at)];
                listing.push(cells, serde_json::Value::Null);
            }
            let received = match received {
                Some(k) => format!("received key {}\tat {}\tfrom {}", k.key, time_text(k.received_at), k.source),
                None => "no key received by mail".to_string(),
            };
            let settings = format!("AGI {}s, AVT {}s ({source})", s.agi_secs, s.avt_secs);
            write_stdout(&format!("{settings}\n{}{received}\n", listing.text()))?;
        }
        AuthKeyCommand::Rotate { address } => {
            let address = local_account(store, &address).await?;
            let (settings, _) = settings_of(store, config, &address).await?;
            let key = vouchmail_server::auth::authkey::generate_key()
                .map_err(|e| CliError::failed(format!("OS random source: {e}")))?;
            let span = settings.agi_secs.saturating_add(settings.avt_secs).min(i64::MAX as u64 / 2) as i64;
            let expires_at = now.saturating_add(span);
            store
                .add_authkey(AuthKey { address: address.clone(), key: key.clone(), created_at: now, expires_at })
                .await?;
            println!("{address}\t{key}\texpires {}", time_text(expires_at));
        }
        AuthKeyCommand::Log { since, json } => {
            let mut listing = Listing::new(&["TIME", "PEER", "ADDRESS", "RESULT"]);
            for e in store.verify_log(since, usize::MAX).await? {
                let object = serde_json::json!({
                    "time": time_text(e.at),
                    "peer": e.peer,
                    "address": e.address,
                    "result": e.result,
                });
                listing.push(vec![time_text(e.at), e.peer, e.address, e.result], object);
            }
            listing.print(json)?;
        }
        AuthKeyCommand::Dns { domain } => {
            let domain = local_domain(store, &domain).await?;
            let port = config.listeners.authkey.first().map_or(2884, |a| a.port());
            // SPEC 7.3: the port may be left out when it is 2884.
            let host = if port == 2884 { config.hostname.clone() } else { format!("{}:{port}", config.hostname) };
            println!("{domain}. IN TXT \"AS={host}\"");
        }
        AuthKeyCommand::Verify { address, key, server } => {
            let address = parse_address(&address)?.to_string();
            if !vouchmail_proto::authkey::codec::is_valid_key(key.as_bytes()) {
                return Err(CliError::failed("KEY must be 64 characters of A-Z, a-z and 0-9 (SPEC 7.1)"));
            }
            let dns = vouchmail_server::net::dns::Dns::for_config(config)?;
            let servers = match server {
                Some(text) => dns.socket_addrs(&text, verifier::DEFAULT_PORT).await?,
                None => {
                    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                    let records = dns.txt(domain).await.map_err(|e| CliError::failed(format!("TXT {domain}: {e}")))?;
                    let (host, port) = verifier::parse_as_record(&records).ok_or_else(|| {
                        CliError::failed(format!("{domain} publishes no AS= TXT record; pass --server HOST:PORT"))
                    })?;
                    dns.socket_addrs(&format!("{host}:{port}"), port).await?
                }
            };
            let verifier = verifier::Verifier::new(&config.authkey, dns, store_arc);
            match verifier.ask(&servers, &address, &key).await {
                Some((Verdict::Valid, via)) => println!("VALIDKEY\t{address}\t{via}"),
                Some((Verdict::Invalid, via)) => {
                    println!("INVALIDKEY\t{address}\t{via}");
                    return Err(CliError::failed(format!("the key is not valid for {address}")));
                }
                None => {
                    let tried: Vec<String> = servers.iter().map(ToString::to_string).collect();
                    return Err(CliError::failed(format!("no answer from {} (UDP and TCP)", tried.join(", "))));
                }
            }
        }
    }
    Ok(())
}

pub async fn dmarc(
    store: &dyn Store,
    command: DmarcCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    use vouchmail_server::rules::dmarc_report::{period_of, send_reports, Reporter, PERIOD_SECS};
    let DmarcCommand::Report { now: close_today } = command;
    let now = vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
    let up_to = if close_today { period_of(now) } else { period_of(now) - PERIOD_SECS };
    let verifier = vouchmail_server::dmarc_verifier(config)?;
    let reporter = Reporter { hostname: config.hostname.clone() };
    let queued = send_reports(store, &verifier, &reporter, up_to, now).await?;
    for report in &queued {
        println!(
            "queued {}\t{}\t{} records\tto {}",
            report.queue_id,
            report.domain,
            report.records,
            report.to.join(", ")
        );
    }
    if queued.is_empty() {
        println!("no DMARC aggregate report to send");
    }
    Ok(())
}

pub async fn dkim(store: &dyn Store, command: DkimCommand) -> Result<(), CliError> {
    use vouchmail_server::rules::dkim;
    let print_record = |key: &vouchmail_store::DkimKey| {
        let (name, value) = dkim::txt_record(key);
        let record = dkim::DnsRecord {
            name,
            value,
            purpose: format!("DKIM (RFC 6376) {} key {} of {}", key.algorithm, key.selector, key.domain),
        };
        println!("{record}");
    };
    match command {
        DkimCommand::New { domain, selector, algorithm } => {
            let domain = parse_domain(&domain)?;
            let algorithm = dkim::Algorithm::parse(&algorithm)?;
            let key = dkim::new_key(store, &domain, algorithm, selector.as_deref()).await?;
            print_record(&key);
        }
        DkimCommand::List { json } => {
            let mut listing = Listing::new(&["DOMAIN", "SELECTOR", "ALGORITHM", "SIGNS", "CREATED"]);
            for key in store.list_dkim_keys().await? {
                let created = rfc3339(UNIX_EPOCH + Duration::from_secs(key.created_at.max(0) as u64));
                let object = serde_json::json!({
                    "domain": key.domain,
                    "selector": key.selector,
                    "algorithm": key.algorithm,
                    "active": key.active,
                    "created": created,
                    "public_key": key.public_key,
                });
                let signs = if key.active { "yes" } else { "no" }.to_string();
                listing.push(vec![key.domain, key.selector, key.algorithm, signs, created], object);
            }
            listing.print(json)?;
        }
        DkimCommand::Rotate { domain } => {
            let domain = parse_domain(&domain)?;
            for key in dkim::rotate(store, &domain).await? {
                print_record(&key);
            }
        }
        DkimCommand::Retire { domain, selector } => {
            let domain = parse_domain(&domain)?;
            dkim::retire(store, &domain, &selector).await?;
            println!("retired DKIM selector {selector} of {}; its TXT record can go", domain_text(&domain));
        }
    }
    Ok(())
}
