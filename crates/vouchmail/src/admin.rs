//! Admin subcommands. They work on the same store as a running server (SQLite in WAL mode
//! allows both), and every bad input gets one clear line and a non-zero exit.

use crate::error::CliError;
use std::io::Read;
use std::sync::Arc;

use clap::Subcommand;
use vouchmail_proto::authkey::Verdict;
use vouchmail_proto::sasl::SecretsPolicy;
use vouchmail_proto::smtp::address::Address;
use vouchmail_server::auth::authkey::verifier;
use vouchmail_server::ops::mailboxes::MailboxItem;
use vouchmail_server::ops::queue::QueueFilter;
use vouchmail_server::ops::{self, domain_text, OpError, Settings};
use vouchmail_store::{AuthKey, CertMatch, Store};

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
        /// Only entries in this state: queued, inflight or deferred.
        #[arg(long)]
        state: Option<String>,
        /// Only recipients in this domain.
        #[arg(long)]
        domain: Option<String>,
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
    /// Make deferred messages due now (or with --all, every one; with --domain, those to
    /// one domain); a running server sends them.
    Retry {
        /// Queue ids, as `queue list` shows them.
        #[arg(required_unless_present_any = ["all", "domain"], conflicts_with_all = ["all", "domain"])]
        queue_ids: Vec<String>,
        /// Every deferred message.
        #[arg(long, conflicts_with = "domain")]
        all: bool,
        /// Flush one domain: every message with a waiting recipient there.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Deliver everything pending now, from this process, and wait for the outcome.
    Flush,
}

/// An operation's refusal as the CLI says it: one line, exit 1. The operations name a
/// field as the API does (`forged: ...`); the CLI's words for it are its flags.
impl From<OpError> for CliError {
    fn from(error: OpError) -> CliError {
        let message = error.to_string();
        for field in ["unauthenticated", "forged", "since"] {
            let prefix = format!("{field}: ");
            if let Some(rest) = message.strip_prefix(&prefix) {
                return CliError::failed(format!("--{field}: {rest}"));
            }
            if let Some(rest) = message.strip_prefix(&format!("{field} '")) {
                return CliError::failed(format!("--{field} '{rest}"));
            }
        }
        CliError::failed(message)
    }
}

fn parse_address(text: &str) -> Result<Address, CliError> {
    Ok(ops::parse_address(text)?)
}

fn parse_domain(text: &str) -> Result<String, CliError> {
    Ok(ops::parse_domain(text)?)
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

/// SHA-256 fingerprint (hex) of the first certificate in a PEM file.
fn pem_fingerprint(path: &std::path::Path) -> Result<String, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::failed(format!("cannot read {}: {e}", path.display())))?;
    let der = vouchmail_server::net::x509::first_pem_certificate(&text)
        .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    use sha2::Digest;
    Ok(sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect())
}

use ops::to_object as object;

/// The DNS records `domain` should publish (SPEC 13), with `AS=` naming this server when
/// it is an Authentication Server (its hostname, and the VERIFY port unless 2884).
pub async fn records_to_publish(
    store: &dyn Store,
    config: &vouchmail_server::config::Config,
    domain: &str,
) -> Result<Vec<vouchmail_server::rules::dkim::DnsRecord>, CliError> {
    Ok(ops::domains::records_to_publish(store, &Settings::from_config(config), domain).await?)
}

pub async fn domain(
    store: &dyn Store,
    command: DomainCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    match command {
        DomainCommand::Dns { name } => {
            for record in records_to_publish(store, config, &name).await? {
                println!("{record}");
            }
        }
        DomainCommand::Add { name, policy, unauthenticated, forged, held_for, etrn_host, allow_unusual } => {
            let new = ops::domains::NewDomain {
                name,
                policy: Some(policy),
                unauthenticated,
                forged,
                dmarc_counts: None,
                held_for,
                etrn_host,
                allow_unusual,
            };
            let added = ops::domains::add(store, new).await?;
            let policy = added.policy;
            if !added.held_for.is_empty() {
                println!(
                    "added domain {} (policy {policy}), held for {}: {}",
                    domain_text(&added.name),
                    added.held_for.join(", "),
                    ops::domains::policy_meaning(&policy)
                );
            } else {
                println!("added domain {} (policy {policy})", domain_text(&added.name));
            }
        }
        DomainCommand::Held { name, accounts, etrn_host } => {
            let (name, accounts) = ops::domains::set_held(store, &name, &accounts, etrn_host.as_deref()).await?;
            if accounts.is_empty() {
                println!("domain {} is no longer held", domain_text(&name));
            } else {
                println!("domain {} is held for {}", domain_text(&name), accounts.join(", "));
            }
        }
        DomainCommand::List { json } => {
            let mut listing = Listing::new(&["DOMAIN", "POLICY", "DMARC", "CATCH-ALL", "HELD-FOR", "ETRN-HOST"]);
            for d in ops::domains::list(store).await? {
                let info = ops::domains::DomainInfo::from(&d);
                let cells = vec![
                    domain_text(&d.name),
                    info.policy.clone(),
                    if info.dmarc_counts { "counts" } else { "-" }.to_string(),
                    info.catch_all.clone().unwrap_or_default(),
                    info.held_for.join(","),
                    info.etrn_host.clone().unwrap_or_default(),
                ];
                listing.push(cells, object(&info));
            }
            listing.print(json)?;
        }
        DomainCommand::Remove { name } => {
            let name = ops::domains::remove(store, &name).await?;
            println!("removed domain {}", domain_text(&name));
        }
        DomainCommand::Policy { name, policy, unauthenticated, forged, dmarc_counts } => {
            let change = ops::domains::PolicyChange { policy, unauthenticated, forged, dmarc_counts };
            let domain = ops::domains::set_policy(store, &name, change).await?;
            let policy = domain.policy;
            let dmarc = if policy.dmarc_counts { "counts" } else { "does not count" };
            println!("domain {} now has policy {policy}; a DMARC pass {dmarc}", domain_text(&domain.name));
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
            let password = if password_stdin { Some(read_password_stdin()?) } else { None };
            let new = ops::users::NewUser { address, password, quota_bytes: quota };
            let added = ops::users::add(store, policy, new).await?;
            match added.password {
                Some(password) => println!("added user {} with password {password}", added.address),
                None => println!("added user {}", added.address),
            }
        }
        UserCommand::List { json } => {
            let mut listing = Listing::new(&["ADDRESS", "MESSAGES", "USED", "QUOTA"]);
            for a in ops::users::list(store).await? {
                // 0 means no quota, everywhere: "none" here, null in JSON.
                let cells = vec![
                    a.address.clone(),
                    a.messages.to_string(),
                    a.used_bytes.to_string(),
                    a.quota_bytes.map_or("none".to_string(), |q| q.to_string()),
                ];
                listing.push(cells, object(&a));
            }
            listing.print(json)?;
        }
        UserCommand::Remove { address, force } => {
            let (address, refs) = ops::users::remove(store, &address, force).await?;
            if refs.is_empty() {
                println!("removed user {address}");
            } else {
                println!("removed user {address} and its use by {}", refs.describe());
            }
        }
        UserCommand::Passwd { address, password_stdin } => {
            // Unknown users are refused before the password is read.
            ops::users::get(store, &address).await?;
            let password = if password_stdin { Some(read_password_stdin()?) } else { None };
            let changed = ops::users::set_password(store, policy, &address, password).await?;
            match changed.password {
                Some(password) => println!("new password for {}: {password}", changed.address),
                None => println!("password of {} changed", changed.address),
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
            let address = ops::users::set_quota(store, &address, bytes).await?;
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
            let (alias, targets) =
                ops::aliases::add(store, ops::aliases::NewAlias { alias, targets, allow_missing }).await?;
            println!("{alias} -> {}", targets.join(", "));
        }
        AliasCommand::List { json } => {
            let mut listing = Listing::new(&["ALIAS", "TARGET"]);
            for row in ops::aliases::list(store).await? {
                listing.push(vec![row.alias.clone(), row.target.clone()], object(&row));
            }
            listing.print(json)?;
        }
        AliasCommand::Remove { alias, target, force } => {
            let (alias, refs) = ops::aliases::remove(store, &alias, target.as_deref(), force).await?;
            let also = if refs.is_empty() { String::new() } else { format!(" and its use by {}", refs.describe()) };
            println!("removed {alias}{}{also}", target.map(|t| format!(" -> {t}")).unwrap_or_default());
        }
    }
    Ok(())
}

pub fn time_text(unix: i64) -> String {
    ops::time_text(unix)
}

pub async fn mailbox(store: &dyn Store, command: MailboxCommand) -> Result<(), CliError> {
    match command {
        MailboxCommand::Folders { address, json } => {
            const COLUMNS: [&str; 6] = ["FOLDER", "SPECIAL-USE", "MESSAGES", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"];
            let mut listing = Listing::new(&COLUMNS);
            for folder in ops::mailboxes::folders(store, &address).await? {
                let cells = vec![
                    folder.folder.clone(),
                    folder.special_use.clone().unwrap_or_else(|| "-".into()),
                    folder.messages.to_string(),
                    folder.uid_validity.to_string(),
                    folder.uid_next.to_string(),
                    folder.highest_modseq.to_string(),
                ];
                listing.push(cells, object(&folder));
            }
            listing.print(json)?;
        }
        MailboxCommand::List { address, folder, json } => {
            let folder = folder.map(|f| ops::mailboxes::parse_folder(&f)).transpose()?;
            let mut listing = Listing::new(&["ID", "RECEIVED", "FOLDER", "FROM", "SUBJECT", "SIZE"]);
            for item in ops::mailboxes::list(store, &address, folder).await? {
                // SPEC 8.3: the Tracking folder's records come after the messages, ids
                // prefixed with T. Its FROM is the server that reported the event, its
                // SUBJECT the event, recipient and Message-ID, its SIZE that of the
                // record's CSV line.
                let cells = match &item {
                    MailboxItem::Message(m) => vec![
                        m.id.to_string(),
                        m.received.clone(),
                        m.folder.clone(),
                        m.from.clone(),
                        m.subject.clone(),
                        m.size.to_string(),
                    ],
                    MailboxItem::Tracking(t) => vec![
                        format!("T{}", t.tracking_id),
                        t.received.clone(),
                        t.folder.clone(),
                        t.reporting_server.clone(),
                        format!("{} {} {}", t.event, t.recipient, t.message_id),
                        t.size.to_string(),
                    ],
                };
                listing.push(cells, object(&item));
            }
            listing.print(json)?;
        }
        MailboxCommand::Show { address, id } => {
            let data = ops::mailboxes::message(store, &address, id).await?;
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
            let since = since.map(|s| ops::tracking::parse_since(&s)).transpose()?;
            let every = address.is_none();
            let records = ops::tracking::list(store, address.as_deref(), since).await?;
            let mut csv_text = format!("{}\n", vouchmail_proto::messenger::tracking::CSV_HEADER);
            // The sender column only when listing every user's records.
            let headers: &'static [&'static str] = if every {
                &["SENDER", "TIME", "EVENT", "MESSAGE-ID", "RECIPIENT", "REPORTED-BY"]
            } else {
                &["TIME", "EVENT", "MESSAGE-ID", "RECIPIENT", "REPORTED-BY"]
            };
            let mut listing = Listing::new(headers);
            for (owner, stored) in records {
                if csv {
                    csv_text.push_str(&stored.record.to_line().map_err(|e| CliError::failed(e.to_string()))?);
                    csv_text.push('\n');
                    continue;
                }
                let row = ops::tracking::TrackingRow::new(&owner, &stored);
                let mut cells = if every { vec![owner.clone()] } else { Vec::new() };
                cells.extend([row.timestamp.clone(), row.event.clone(), row.message_id.clone(), row.recipient.clone()]);
                cells.push(row.reporting_server.clone());
                listing.push(cells, object(&row));
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
        QueueCommand::List { json, state, domain } => {
            let filter = QueueFilter::parse(state.as_deref(), domain.as_deref())?;
            let mut listing =
                Listing::new(&["QUEUE-ID", "STATE", "ATTEMPTS", "NEXT-ATTEMPT", "SIZE", "SENDER", "RECIPIENT"]);
            for e in ops::queue::list(store_ref, &filter).await? {
                let row = ops::queue::QueueRow::from(&e);
                // The null sender of a DSN shows as <>.
                let sender = if e.sender.is_empty() { "<>".to_string() } else { e.sender };
                let cells = vec![
                    e.queue_id,
                    row.state.clone(),
                    e.attempts.to_string(),
                    row.next_attempt.clone(),
                    e.size.to_string(),
                    sender,
                    e.recipient,
                ];
                listing.push(cells, object(&row));
            }
            let count = listing.len();
            listing.print(json)?;
            eprintln!("{count} queued recipient(s)");
        }
        QueueCommand::Show { queue_id } => {
            let (message, header) = ops::queue::show(store_ref, &queue_id).await?;
            for e in &message.entries {
                let reply = e.last_reply.as_deref().unwrap_or("-");
                println!("{}\t{}\tattempts={}\tnext={}\t{}", e.recipient, e.state, e.attempts, e.next_attempt, reply);
            }
            println!();
            use std::io::Write;
            std::io::stdout().write_all(&header).map_err(|e| CliError::failed(e.to_string()))?;
        }
        QueueCommand::Delete { queue_ids, all } => {
            let queue_ids =
                if all { ops::queue::pending_queue_ids(store_ref, &QueueFilter::default()).await? } else { queue_ids };
            let single = !all && queue_ids.len() == 1;
            let mut bar = ProgressBar::new("delete", queue_ids.len() as u64);
            let mut total = 0;
            for (i, queue_id) in queue_ids.iter().enumerate() {
                let deleted = ops::queue::delete(store_ref, queue_id).await?;
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
        QueueCommand::Retry { queue_ids, all, domain } => {
            if let Some(domain) = domain {
                let flushed = ops::queue::flush_domain(store_ref, &domain).await?;
                let n = flushed.entries;
                println!(
                    "{n} entr{} of {} message(s) to {} due now",
                    if n == 1 { "y" } else { "ies" },
                    flushed.messages,
                    flushed.domain
                );
            } else if all {
                let n = ops::queue::retry_all(store_ref).await?;
                println!("{n} entr{} due now", if n == 1 { "y" } else { "ies" });
            } else {
                let mut bar = ProgressBar::new("retry", queue_ids.len() as u64);
                let mut total = 0;
                for (i, queue_id) in queue_ids.iter().enumerate() {
                    total += ops::queue::retry(store_ref, queue_id).await?;
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

/// SPEC 7.1 settings and keys, the VERIFY log, and the SPEC 7.3 TXT record.
pub async fn authkey(
    store_arc: Arc<dyn Store>,
    command: AuthKeyCommand,
    config: &vouchmail_server::config::Config,
) -> Result<(), CliError> {
    let now = vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
    let store = store_arc.as_ref();
    let settings = Settings::from_config(config);
    match command {
        AuthKeyCommand::Set { target, agi, avt } => {
            let change = ops::authkeys::SettingsChange {
                agi: ops::authkeys::Interval::Text(agi),
                avt: ops::authkeys::Interval::Text(avt),
            };
            let (target, settings) = ops::authkeys::set(store, &target, &change).await?;
            println!("{target}: AGI {}s, AVT {}s", settings.agi_secs, settings.avt_secs);
        }
        AuthKeyCommand::List { address: None, json } => {
            let mut listing =
                Listing::new(&["ADDRESS", "AGI", "AVT", "SETTINGS", "KEYS", "NEWEST-CREATED", "NEWEST-EXPIRES"]);
            for account in store.list_accounts().await? {
                let (s, source) = ops::authkeys::settings_of(store, &settings, &account.address).await?;
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
            let shown = ops::authkeys::show(store, &settings, &address).await?;
            if json {
                return print_json(&object(&shown));
            }
            let mut listing = Listing::new(&["KEY", "CREATED", "EXPIRES"]);
            for k in shown.keys {
                listing.push(vec![k.key, k.created, k.expires], serde_json::Value::Null);
            }
            let received = match shown.received_key {
                Some(k) => format!("received key {}\tat {}\tfrom {}", k.key, k.received, k.source),
                None => "no key received by mail".to_string(),
            };
            let settings = format!("AGI {}s, AVT {}s ({})", shown.agi_secs, shown.avt_secs, shown.settings);
            write_stdout(&format!("{settings}\n{}{received}\n", listing.text()))?;
        }
        AuthKeyCommand::Rotate { address } => {
            let address = ops::local_account(store, &address).await?;
            let (settings, _) = ops::authkeys::settings_of(store, &settings, &address).await?;
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
            let domain = ops::local_domain(store, &domain).await?;
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
    match command {
        DkimCommand::New { domain, selector, algorithm } => {
            let new = ops::dkim::NewKey { selector, algorithm: Some(algorithm) };
            let key = ops::dkim::new_key(store, &domain, &new).await?;
            println!("{}", ops::dkim::record_of(&key));
        }
        DkimCommand::List { json } => {
            let mut listing = Listing::new(&["DOMAIN", "SELECTOR", "ALGORITHM", "SIGNS", "CREATED"]);
            for key in ops::dkim::list(store).await? {
                let signs = if key.active { "yes" } else { "no" }.to_string();
                let cells =
                    vec![key.domain.clone(), key.selector.clone(), key.algorithm.clone(), signs, key.created.clone()];
                listing.push(cells, object(&key));
            }
            listing.print(json)?;
        }
        DkimCommand::Rotate { domain } => {
            for key in ops::dkim::rotate(store, &domain).await? {
                println!("{}", ops::dkim::record_of(&key));
            }
        }
        DkimCommand::Retire { domain, selector } => {
            let domain = ops::dkim::retire(store, &domain, &selector).await?;
            println!("retired DKIM selector {selector} of {}; its TXT record can go", domain_text(&domain));
        }
    }
    Ok(())
}
