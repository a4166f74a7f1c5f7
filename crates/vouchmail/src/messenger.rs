//! Admin commands of the Messenger federation (SPEC 8.1, 8.4, 12): users' certificates
//! and the directory whose published IDs make this server's Entity Index.

use crate::error::CliError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use vouchmail_proto::messenger::replies::pem_from_der;
use vouchmail_proto::messenger::PublishedId;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::time::{rfc3339, unix_seconds};
use vouchmail_server::federation::x509;
use vouchmail_store::{DirectoryRecord, Store, StoredCertificate};

use crate::listing::{print_json, write_stdout, Listing};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Store a user's certificate (PEM). It must parse, be current, and name the address
    /// in subjectAltName rfc822Name, as for PUBCERT.
    Import {
        /// The local user.
        address: String,
        /// The PEM certificate file.
        file: std::path::PathBuf,
    },
    /// Print a user's certificate (PEM) to standard output.
    Show {
        /// The local user.
        address: String,
    },
    /// Remove a user's certificate: CERT lookups for it find none.
    Remove {
        /// The local user.
        address: String,
    },
    /// Every stored certificate: address, end of validity, SHA-256 fingerprint, state.
    List {
        /// Print a JSON array of objects instead (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Set a local user's directory details; the IDs replace the earlier ones. Whether
    /// the entry is published does not change.
    Set {
        /// The local user.
        address: String,
        /// The person's name, as BOOK shows it.
        #[arg(long)]
        name: String,
        /// The organisation.
        #[arg(long = "org")]
        organisation: String,
        /// The person's role in it.
        #[arg(long)]
        role: String,
        /// A published ID (e.g. a provider number); repeat for several.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
    },
    /// Publish the entry: BOOK lists it and its IDs go into the Entity Index.
    Publish {
        /// The local user.
        address: String,
    },
    /// Withdraw it (peers drop its IDs at their next pull).
    Unpublish {
        /// The local user.
        address: String,
    },
    /// Published IDs claimed for more than one mailbox (SPEC 8.4): the binding CERT answers
    /// with (the local directory, else the first mailbox learnt) and the later claims.
    Conflicts {
        /// Print JSON instead (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Settle a conflict: ID names MAILBOX; the other claims are forgotten (a peer that
    /// sends one again makes it a new conflict, never the binding).
    Resolve {
        /// The published ID.
        id: String,
        /// The mailbox it names.
        mailbox: String,
    },
    /// The directory; with --index also the entries learnt from peers, and the peers.
    List {
        /// Also the Entity Index learnt from peers, and the peers.
        #[arg(long)]
        index: bool,
        /// Print JSON instead (for scripts): an array of the entries, or with --index an
        /// object with "directory", "learnt" and "peers".
        #[arg(long)]
        json: bool,
    },
}

fn time_text(unix: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

fn address_text(text: &str) -> Result<String, CliError> {
    Address::parse(text).map(|a| a.to_string().to_lowercase()).map_err(|e| CliError::failed(format!("{text}: {e}")))
}

fn field(name: &str, value: &str) -> Result<String, CliError> {
    if value.chars().any(char::is_control) || value.chars().count() > 200 {
        return Err(CliError::failed(format!("--{name}: at most 200 characters, no control characters")));
    }
    Ok(value.trim().to_string())
}

pub async fn cert(store: &dyn Store, command: CertCommand) -> Result<(), CliError> {
    match command {
        CertCommand::Import { address, file } => {
            let address = address_text(&address)?;
            let pem = std::fs::read_to_string(&file)
                .map_err(|e| CliError::failed(format!("cannot read {}: {e}", file.display())))?;
            let now = unix_seconds(SystemTime::now());
            let checked = x509::check_pem_for(&pem, &address, now)
                .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
            let fingerprint = checked.fingerprint.clone();
            let not_after = checked.not_after;
            store
                .put_certificate(StoredCertificate {
                    address: address.clone(),
                    der: checked.der,
                    not_before: checked.not_before,
                    not_after: checked.not_after,
                    fingerprint: checked.fingerprint,
                    stored_at: now,
                })
                .await
                .map_err(|e| CliError::failed(e.to_string()))?;
            println!(
                "stored the certificate of {address} (valid until {}, SHA-256 {fingerprint})",
                time_text(not_after)
            );
        }
        CertCommand::Show { address } => {
            let address = address_text(&address)?;
            let cert = store.get_certificate(&address).await.map_err(|e| CliError::failed(e.to_string()))?;
            let cert = cert.ok_or_else(|| CliError::failed(format!("no certificate for {address}")))?;
            print!("{}", pem_from_der(&cert.der));
        }
        CertCommand::Remove { address } => {
            let address = address_text(&address)?;
            store.remove_certificate(&address).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("removed the certificate of {address}");
        }
        CertCommand::List { json } => {
            let now = unix_seconds(SystemTime::now());
            let mut listing = Listing::new(&["ADDRESS", "VALID-UNTIL", "SHA-256", "STATE"]);
            for cert in store.list_certificates().await.map_err(|e| CliError::failed(e.to_string()))? {
                let state = if now > cert.not_after { "expired" } else { "current" };
                let object = serde_json::json!({
                    "address": cert.address,
                    "valid_until": time_text(cert.not_after),
                    "sha256": cert.fingerprint,
                    "state": state,
                });
                let cells = vec![cert.address, time_text(cert.not_after), cert.fingerprint, state.to_string()];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
    }
    Ok(())
}

pub async fn directory(store: &dyn Store, command: DirectoryCommand) -> Result<(), CliError> {
    match command {
        DirectoryCommand::Set { address, name, organisation, role, ids } => {
            let address = address_text(&address)?;
            let mut parsed = Vec::new();
            for id in &ids {
                let id = PublishedId::parse(id.trim()).ok_or_else(|| {
                    CliError::failed(format!("--id {id}: 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'"))
                })?;
                parsed.push(id.to_string());
            }
            let record = DirectoryRecord {
                address: address.clone(),
                name: field("name", &name)?,
                organisation: field("org", &organisation)?,
                role: field("role", &role)?,
                ids: parsed,
                ..Default::default()
            };
            store.set_directory_entry(record).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("directory entry of {address} set");
        }
        DirectoryCommand::Publish { address } => {
            let address = address_text(&address)?;
            store.set_directory_published(&address, true).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("published {address}");
        }
        DirectoryCommand::Unpublish { address } => {
            let address = address_text(&address)?;
            store.set_directory_published(&address, false).await.map_err(|e| CliError::failed(e.to_string()))?;
            println!("withdrew {address}");
        }
        DirectoryCommand::List { index, json } => {
            let mut directory = Listing::new(&["ADDRESS", "STATE", "NAME", "ORGANISATION", "ROLE", "IDS"]);
            for r in store.list_directory().await.map_err(|e| CliError::failed(e.to_string()))? {
                let state = if r.published { "published" } else { "unpublished" };
                let object = serde_json::json!({
                    "address": r.address,
                    "published": r.published,
                    "name": r.name,
                    "organisation": r.organisation,
                    "role": r.role,
                    "ids": r.ids,
                });
                let cells = vec![r.address, state.to_string(), r.name, r.organisation, r.role, r.ids.join(";")];
                directory.push(cells, object);
            }
            if !index {
                return directory.print(json);
            }
            let mut learnt = Listing::new(&["ID", "MAILBOX", "FROM-PEER", "LEARNT"]);
            for e in store.list_learnt_entities().await.map_err(|e| CliError::failed(e.to_string()))? {
                let object = serde_json::json!({
                    "id": e.published_id,
                    "mailbox": e.mailbox,
                    "peer": e.peer,
                    "learnt": time_text(e.learnt_at),
                });
                learnt.push(vec![e.published_id, e.mailbox, e.peer, time_text(e.learnt_at)], object);
            }
            let mut peers = Listing::new(&["PEER", "ORIGIN", "SERIAL", "PULLED", "LAST-ERROR"]);
            for p in store.list_messenger_peers().await.map_err(|e| CliError::failed(e.to_string()))? {
                let origin = if p.configured { "configured" } else { "talked to" };
                let object = serde_json::json!({
                    "domain": p.domain,
                    "configured": p.configured,
                    "serial": p.last_serial,
                    "pulled": p.last_pull.map(time_text),
                    "last_error": p.last_error,
                });
                let pulled = p.last_pull.map(time_text).unwrap_or_else(|| "never".into());
                let cells = vec![p.domain, origin.to_string(), p.last_serial.to_string(), pulled];
                peers.push([cells, vec![p.last_error.unwrap_or_default()]].concat(), object);
            }
            if json {
                return print_json(&serde_json::json!({
                    "directory": directory.into_json(),
                    "learnt": learnt.into_json(),
                    "peers": peers.into_json(),
                }));
            }
            let text = format!(
                "{}\nlearnt from peers (the Entity Index)\n{}\npeers\n{}",
                directory.text(),
                learnt.text(),
                peers.text()
            );
            write_stdout(&text)?;
        }
        DirectoryCommand::Conflicts { json } => {
            let mut listing = Listing::new(&["ID", "BOUND-TO", "BY", "CLAIMED-FOR", "FROM-PEER", "LEARNT"]);
            // The same rows the admin API sends (GET /api/v1/directory/conflicts).
            let rows = vouchmail_server::ops::directory::conflicts(store).await.map_err(CliError::from)?;
            for row in rows {
                let object = vouchmail_server::ops::to_object(&row);
                let cells = vec![row.id, row.bound_to, row.bound_by, row.claimed_for, row.peer, row.learnt];
                listing.push(cells, object);
            }
            listing.print(json)?;
        }
        DirectoryCommand::Resolve { id, mailbox } => {
            let forgotten = vouchmail_server::rules::entity_index::resolve(store, &id, &mailbox).await?;
            println!(
                "{} names {}; {forgotten} other claim(s) forgotten",
                id.to_ascii_uppercase(),
                mailbox.to_lowercase()
            );
        }
    }
    Ok(())
}
