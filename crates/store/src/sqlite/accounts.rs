//! Domains, accounts, aliases, held domains and client-certificate mappings in SQLite.

use rusqlite::{params, OptionalExtension};

use super::base::*;
use super::writer::SqliteStore;
use crate::error::{StoreError, StoreFuture};
use crate::interface::AccountStore;
use crate::types::*;
use vouchmail_proto::sasl::secrets::Secrets;

impl AccountStore for SqliteStore {
    fn add_domain(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write_accounts(move |conn| {
            conn.execute(
                "INSERT INTO domains (name, unauthenticated, forged, dmarc_counts, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, policy.unauthenticated.as_str(), policy.forged.as_str(), policy.dmarc_counts, now()],
            )
            .map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Conflict(format!("domain {name} exists already"))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn remove_domain(&self, name: &str) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write_accounts(move |conn| {
            // Its aliases go with it; its accounts must have gone first (the foreign key
            // refuses otherwise; the rule is `rules::accounts::remove_domain`). The
            // domain is compared as a suffix, not a LIKE pattern: `_` in a name is no
            // wildcard (removing a_b.test leaves axb.test's aliases).
            conn.execute(
                "DELETE FROM aliases WHERE substr(alias, length(alias) - length(?1)) = '@' || ?1",
                params![name],
            )
            .map_err(db_error)?;
            let removed = conn.execute("DELETE FROM domains WHERE name = ?1", params![name]).map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Conflict(format!("domain {name} still has accounts"))
                } else {
                    db_error(e)
                }
            })?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
    }

    fn get_domain(&self, name: &str) -> StoreFuture<'_, Option<Domain>> {
        let name = name.to_ascii_lowercase();
        self.read(move |conn| lookup_domain(conn, &name))
    }

    fn list_domains(&self) -> StoreFuture<'_, Vec<Domain>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name")).map_err(db_error)?;
            let rows = stmt.query_map([], row_to_domain).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_domain_policy(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.write_accounts(move |conn| {
            let n = conn
                .execute(
                    "UPDATE domains SET unauthenticated = ?2, forged = ?3, dmarc_counts = ?4 WHERE name = ?1",
                    params![name, policy.unauthenticated.as_str(), policy.forged.as_str(), policy.dmarc_counts],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
    }

    fn set_catch_all(&self, name: &str, account: Option<&str>) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        let account = account.map(str::to_lowercase);
        self.write_accounts(move |conn| {
            if let Some(account) = &account {
                let exists: Option<i64> = conn
                    .query_row("SELECT id FROM accounts WHERE address = ?1", params![account], |r| r.get(0))
                    .optional()
                    .map_err(db_error)?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account {account}")));
                }
            }
            let n = conn
                .execute("UPDATE domains SET catch_all = ?2 WHERE name = ?1", params![name, account])
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
    }

    fn add_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        self.write_accounts(move |conn| {
            let address = account.address.to_lowercase();
            let domain = crate::rules::account_domain(&address)?.to_string();
            let known: Option<String> = conn
                .query_row("SELECT name FROM domains WHERE name = ?1", params![domain], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            if known.is_none() {
                return Err(StoreError::Invalid(format!("domain {domain} is not a local domain (add it with 'vouchmail domain add {domain}')")));
            }
            let (argon2, scram, cram) = secrets_to_columns(&account.secrets);
            conn.execute(
                "INSERT INTO accounts (address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![address, domain, argon2, scram, cram, account.quota_bytes as i64, now()],
            )
            .map_err(|e| if is_constraint_violation(&e) { StoreError::Conflict(format!("user {address} exists already")) } else { db_error(e) })?;
            let id = conn.last_insert_rowid();
            super::folder_rows::create_default_folders(conn, id)?;
            Ok(id)
        })
    }

    fn remove_account(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write_accounts(move |conn| {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(id) = id else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            let message_ids: Vec<i64> = {
                let mut stmt =
                    conn.prepare("SELECT DISTINCT message_id FROM mailbox WHERE account_id = ?1").map_err(db_error)?;
                let rows = stmt.query_map(params![id], |r| r.get(0)).map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            conn.execute("DELETE FROM mailbox WHERE account_id = ?1", params![id]).map_err(db_error)?;
            conn.execute("UPDATE domains SET catch_all = NULL WHERE catch_all = ?1", params![address])
                .map_err(db_error)?;
            conn.execute("DELETE FROM accounts WHERE id = ?1", params![id]).map_err(db_error)?;
            conn.execute("DELETE FROM login_clients WHERE account = ?1", params![address]).map_err(db_error)?;
            super::messenger::forget_account(conn, &address)?;
            for message_id in message_ids {
                delete_if_orphan(conn, message_id)?;
            }
            Ok(())
        })
    }

    fn get_account(&self, address: &str) -> StoreFuture<'_, Option<Account>> {
        let address = address.to_lowercase();
        self.read(move |conn| lookup_account(conn, &address))
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY domain, address"))
                .map_err(db_error)?;
            let rows = stmt.query_map([], row_to_account).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_secrets(&self, address: &str, secrets: Secrets) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write_accounts(move |conn| {
            let (argon2, scram, cram) = secrets_to_columns(&secrets);
            let n = conn
                .execute(
                    "UPDATE accounts SET secret_argon2 = ?2, secret_scram_sha256 = ?3, secret_cram_md5 = ?4 WHERE address = ?1",
                    params![address, argon2, scram, cram],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn set_quota(&self, address: &str, quota_bytes: u64) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.write_accounts(move |conn| {
            let n = conn
                .execute(
                    "UPDATE accounts SET quota_bytes = ?2 WHERE address = ?1",
                    params![address, quota_bytes as i64],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn add_alias(&self, alias: &str, targets: &[String]) -> StoreFuture<'_, ()> {
        // The checks (a local domain, not an account, no loop) are `rules::accounts`'.
        let alias = alias.to_lowercase();
        let targets: Vec<String> = targets.iter().map(|t| t.to_lowercase()).collect();
        self.write_accounts(move |conn| {
            for target in &targets {
                conn.execute("INSERT OR IGNORE INTO aliases (alias, target) VALUES (?1, ?2)", params![alias, target])
                    .map_err(db_error)?;
            }
            Ok(())
        })
    }

    fn remove_alias(&self, alias: &str, target: Option<&str>) -> StoreFuture<'_, ()> {
        let alias = alias.to_lowercase();
        let target = target.map(str::to_lowercase);
        self.write_accounts(move |conn| {
            let n = match &target {
                Some(t) => conn.execute("DELETE FROM aliases WHERE alias = ?1 AND target = ?2", params![alias, t]),
                None => conn.execute("DELETE FROM aliases WHERE alias = ?1", params![alias]),
            }
            .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {alias}")));
            }
            Ok(())
        })
    }

    fn alias_targets(&self, alias: &str) -> StoreFuture<'_, Vec<String>> {
        let alias = alias.to_lowercase();
        self.read(move |conn| lookup_alias_targets(conn, &alias))
    }

    fn send_as(&self, account: &str) -> StoreFuture<'_, Vec<String>> {
        let account = account.to_lowercase();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT s.address FROM send_as s JOIN accounts a ON a.id = s.account_id
                     WHERE a.address = ?1 ORDER BY s.position",
                )
                .map_err(db_error)?;
            let rows = stmt.query_map(params![account], |r| r.get(0)).map_err(db_error)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(db_error)
        })
    }

    fn set_send_as(&self, account: &str, addresses: &[String]) -> StoreFuture<'_, ()> {
        let account = account.to_lowercase();
        let addresses: Vec<String> = addresses.iter().map(|a| a.to_lowercase()).collect();
        self.write_accounts(move |conn| {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![account], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let id = id.ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
            conn.execute("DELETE FROM send_as WHERE account_id = ?1", params![id]).map_err(db_error)?;
            for (position, address) in addresses.iter().enumerate() {
                conn.execute(
                    "INSERT OR IGNORE INTO send_as (account_id, address, position) VALUES (?1, ?2, ?3)",
                    params![id, address, position as i64],
                )
                .map_err(db_error)?;
            }
            Ok(())
        })
    }

    fn lookup_recipient(&self, address: &str) -> StoreFuture<'_, crate::types::RecipientRecord> {
        let address = address.to_lowercase();
        // Issue 25: the hot path of RCPT; the rule of what is kept is `recipient_cache`'s.
        if let Some(record) = self.recipients.get(&address) {
            return Box::pin(async move { Ok(record) });
        }
        let generation = self.recipients.generation();
        let key = address.clone();
        let read = self.read(move |conn| {
            let domain_name = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let domain = lookup_domain(conn, domain_name)?;
            let account = match &domain {
                Some(_) => lookup_account(conn, &address)?,
                None => None,
            };
            let alias_targets = match (&domain, &account) {
                (Some(_), None) => lookup_alias_targets(conn, &address)?,
                _ => Vec::new(),
            };
            Ok(crate::types::RecipientRecord { domain, account, alias_targets })
        });
        Box::pin(async move {
            let record = read.await?;
            self.recipients.keep(generation, key, &record);
            Ok(record)
        })
    }

    fn list_aliases(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT alias, target FROM aliases ORDER BY alias, target").map_err(db_error)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn add_cert_mapping(&self, address: &str, kind: CertMatch, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let value = kind.normalize(value);
        self.write_accounts(move |conn| {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM accounts WHERE address = ?1", params![address], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let Some(id) = id else { return Err(StoreError::NotFound(format!("user {address}"))) };
            conn.execute(
                "INSERT INTO cert_map (account_id, kind, value) VALUES (?1, ?2, ?3)",
                params![id, kind.as_str(), value],
            )
            .map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Conflict(format!("that certificate {} is mapped already", kind.as_str()))
                } else {
                    db_error(e)
                }
            })?;
            Ok(())
        })
    }

    fn remove_cert_mapping(&self, address: &str, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let values = [CertMatch::Fingerprint.normalize(value), CertMatch::Subject.normalize(value)];
        let given = value.trim().to_string();
        self.write_accounts(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM cert_map WHERE value IN (?2, ?3)
                       AND account_id = (SELECT id FROM accounts WHERE address = ?1)",
                    params![address, values[0], values[1]],
                )
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("certificate mapping '{given}' of {address}")));
            }
            Ok(())
        })
    }

    fn cert_mapping_account(&self, fingerprint: &str, subject: Option<&str>) -> StoreFuture<'_, Option<String>> {
        let fingerprint = CertMatch::Fingerprint.normalize(fingerprint);
        let subject = subject.map(|s| CertMatch::Subject.normalize(s));
        self.read(move |conn| {
            conn.query_row(
                "SELECT a.address FROM cert_map c JOIN accounts a ON a.id = c.account_id
                 WHERE (c.kind = 'fingerprint' AND c.value = ?1) OR (c.kind = 'subject' AND c.value = ?2)
                 ORDER BY c.kind LIMIT 1",
                params![fingerprint, subject],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_error)
        })
    }

    fn list_cert_mappings(&self) -> StoreFuture<'_, Vec<CertMapping>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT a.address, c.kind, c.value FROM cert_map c JOIN accounts a ON a.id = c.account_id ORDER BY a.address")
                .map_err(db_error)?;
            let rows = stmt
                .query_map([], |r| {
                    let kind: String = r.get(1)?;
                    Ok(CertMapping {
                        address: r.get(0)?,
                        kind: if kind == "subject" { CertMatch::Subject } else { CertMatch::Fingerprint },
                        value: r.get(2)?,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        })
    }

    fn set_domain_held(&self, name: &str, accounts: &[String], etrn_host: Option<&str>) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        // Lower-cased here and on lookup: account names compare case-insensitively.
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_lowercase()).filter(|a| !a.is_empty()).collect();
        let etrn_host = etrn_host.map(str::to_string);
        self.write_accounts(move |conn| super::held::set_domain_held(conn, &name, &accounts, etrn_host.as_deref()))
    }

    fn held_domains_for(&self, account: &str) -> StoreFuture<'_, Vec<String>> {
        let account = account.to_lowercase();
        self.read(move |conn| super::held::domains_for(conn, &account))
    }
}
