//! Domains, accounts, aliases, held domains and client-certificate mappings in
//! PostgreSQL: the semantics of `sqlite/accounts.rs` and `sqlite/held.rs`, statement for
//! statement, with one transaction where SQLite's writer ran one job.

use tokio_postgres::error::SqlState;

use super::base::{db_error, now};
use super::messages::delete_if_orphan;
use super::pool::PostgresStore;
use super::rows::*;
use crate::error::{StoreError, StoreFuture};
use crate::interface::AccountStore;
use crate::types::*;
use vouchmail_proto::sasl::secrets::Secrets;

impl PostgresStore {
    /// A change to domains, accounts, aliases or held domains: once it has ended, the
    /// recipient cache forgets what it kept (a change whose caller stopped waiting is seen
    /// within the cache's time, as another node's).
    fn changing<'a, T: Send + 'a>(
        &'a self,
        change: impl std::future::Future<Output = crate::error::StoreResult<T>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let result = change.await;
            self.recipients.changed();
            result
        })
    }
}

impl AccountStore for PostgresStore {
    fn add_domain(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.changing(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "INSERT INTO domains (name, unauthenticated, forged, dmarc_counts, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .await
                .map_err(db_error)?;
            conn.execute(
                &statement,
                &[&name, &policy.unauthenticated.as_str(), &policy.forged.as_str(), &policy.dmarc_counts, &now()],
            )
            .await
            .map_err(|e| {
                if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
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
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // Its aliases go with it; its accounts must have gone first (the foreign key
            // refuses otherwise; the rule is `rules::accounts::remove_domain`). A suffix
            // comparison rather than LIKE: `_` in a name is no wildcard.
            let aliases = tx
                .prepare_cached("DELETE FROM aliases WHERE substr(alias, length(alias) - length($1)) = '@' || $1")
                .await
                .map_err(db_error)?;
            tx.execute(&aliases, &[&name]).await.map_err(db_error)?;
            let domain = tx.prepare_cached("DELETE FROM domains WHERE name = $1").await.map_err(db_error)?;
            let removed = tx.execute(&domain, &[&name]).await.map_err(|e| {
                if refused_with(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::Conflict(format!("domain {name} still has accounts"))
                } else {
                    db_error(e)
                }
            })?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn get_domain(&self, name: &str) -> StoreFuture<'_, Option<Domain>> {
        let name = name.to_ascii_lowercase();
        Box::pin(async move { lookup_domain(&self.conn().await?, &name).await })
    }

    fn list_domains(&self) -> StoreFuture<'_, Vec<Domain>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(&format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name"), &[])
                .await
                .map_err(db_error)?;
            rows.iter().map(to_domain).collect()
        })
    }

    fn set_domain_policy(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        self.changing(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute(
                    "UPDATE domains SET unauthenticated = $2, forged = $3, dmarc_counts = $4 WHERE name = $1",
                    &[&name, &policy.unauthenticated.as_str(), &policy.forged.as_str(), &policy.dmarc_counts],
                )
                .await
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
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            if let Some(account) = &account {
                if account_id(&tx, account).await?.is_none() {
                    return Err(StoreError::NotFound(format!("account {account}")));
                }
            }
            let n = tx
                .execute("UPDATE domains SET catch_all = $2 WHERE name = $1", &[&name, &account])
                .await
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn add_account(&self, account: NewAccount) -> StoreFuture<'_, i64> {
        self.changing(async move {
            let address = account.address.to_lowercase();
            let domain = crate::rules::account_domain(&address)?.to_string();
            let not_local = || {
                StoreError::Invalid(format!(
                    "domain {domain} is not a local domain (add it with 'vouchmail domain add {domain}')"
                ))
            };
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let known = tx.query_opt("SELECT name FROM domains WHERE name = $1", &[&domain]).await.map_err(db_error)?;
            if known.is_none() {
                return Err(not_local());
            }
            let fields = account.secrets.to_fields();
            let quota = account.quota_bytes as i64;
            let row = tx
                .query_one(
                    "INSERT INTO accounts (address, domain, secret_argon2, secret_scram_sha256, secret_cram_md5, quota_bytes, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&address, &domain, &fields.argon2, &fields.scram_sha256, &fields.cram_md5, &quota, &now()],
                )
                .await
                .map_err(|e| {
                    if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
                        StoreError::Conflict(format!("user {address} exists already"))
                    } else if refused_with(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                        // The domain was removed by another node since we looked.
                        not_local()
                    } else {
                        db_error(e)
                    }
                })?;
            let id: i64 = row.try_get(0).map_err(db_error)?;
            super::folder_rows::create_default_folders(&tx, id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(id)
        })
    }

    fn remove_account(&self, address: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            // Locked first: a commit delivering into this mailbox right now holds a key
            // share on the row, so this waits for it and then sees its mailbox entries
            // (their messages are checked below); a later one finds the account gone.
            // Without the lock, the cascade of the accounts row would drop entries this
            // transaction never saw, and their messages would stay, referenced by nothing.
            let id: Option<i64> = tx
                .query_opt("SELECT id FROM accounts WHERE address = $1 FOR UPDATE", &[&address])
                .await
                .map_err(db_error)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(db_error)?;
            let Some(id) = id else {
                return Err(StoreError::NotFound(format!("user {address}")));
            };
            // In ascending order: the order every transaction locks messages in.
            let message_ids: Vec<i64> = tx
                .query("SELECT DISTINCT message_id FROM mailbox WHERE account_id = $1 ORDER BY message_id", &[&id])
                .await
                .map_err(db_error)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db_error)?;
            tx.execute("DELETE FROM mailbox WHERE account_id = $1", &[&id]).await.map_err(db_error)?;
            tx.execute("UPDATE domains SET catch_all = NULL WHERE catch_all = $1", &[&address])
                .await
                .map_err(db_error)?;
            tx.execute("DELETE FROM accounts WHERE id = $1", &[&id]).await.map_err(db_error)?;
            tx.execute("DELETE FROM login_clients WHERE account = $1", &[&address]).await.map_err(db_error)?;
            super::messenger::forget_account(&tx, &address).await?;
            for message_id in message_ids {
                delete_if_orphan(&tx, message_id).await?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn get_account(&self, address: &str) -> StoreFuture<'_, Option<Account>> {
        let address = address.to_lowercase();
        Box::pin(async move { lookup_account(&self.conn().await?, &address).await })
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY domain, address"), &[])
                .await
                .map_err(db_error)?;
            rows.iter().map(to_account).collect()
        })
    }

    fn set_secrets(&self, address: &str, secrets: Secrets) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.changing(async move {
            let fields = secrets.to_fields();
            let conn = self.conn().await?;
            let n = conn
                .execute(
                    "UPDATE accounts SET secret_argon2 = $2, secret_scram_sha256 = $3, secret_cram_md5 = $4 WHERE address = $1",
                    &[&address, &fields.argon2, &fields.scram_sha256, &fields.cram_md5],
                )
                .await
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn set_quota(&self, address: &str, quota_bytes: u64) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        self.changing(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute("UPDATE accounts SET quota_bytes = $2 WHERE address = $1", &[&address, &(quota_bytes as i64)])
                .await
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
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let insert = tx
                .prepare_cached("INSERT INTO aliases (alias, target) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .await
                .map_err(db_error)?;
            for target in &targets {
                tx.execute(&insert, &[&alias, target]).await.map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn remove_alias(&self, alias: &str, target: Option<&str>) -> StoreFuture<'_, ()> {
        let alias = alias.to_lowercase();
        let target = target.map(str::to_lowercase);
        self.changing(async move {
            let conn = self.conn().await?;
            let n = match &target {
                Some(t) => conn.execute("DELETE FROM aliases WHERE alias = $1 AND target = $2", &[&alias, t]).await,
                None => conn.execute("DELETE FROM aliases WHERE alias = $1", &[&alias]).await,
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
        Box::pin(async move { lookup_alias_targets(&self.conn().await?, &alias).await })
    }

    fn send_as(&self, account: &str) -> StoreFuture<'_, Vec<String>> {
        let account = account.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(
                    "SELECT s.address FROM send_as s JOIN accounts a ON a.id = s.account_id
                     WHERE a.address = $1 ORDER BY s.position",
                    &[&account],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(|r| r.try_get(0).map_err(db_error)).collect()
        })
    }

    fn set_send_as(&self, account: &str, addresses: &[String]) -> StoreFuture<'_, ()> {
        let account = account.to_lowercase();
        let addresses: Vec<String> = addresses.iter().map(|a| a.to_lowercase()).collect();
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            let id =
                account_id(&tx, &account).await?.ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
            tx.execute("DELETE FROM send_as WHERE account_id = $1", &[&id]).await.map_err(db_error)?;
            for (position, address) in addresses.iter().enumerate() {
                tx.execute(
                    "INSERT INTO send_as (account_id, address, position) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&id, address, &(position as i64)],
                )
                .await
                .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn lookup_recipient(&self, address: &str) -> StoreFuture<'_, RecipientRecord> {
        let address = address.to_lowercase();
        // Issue 25: the hot path of RCPT; the rule of what is kept is `recipient_cache`'s.
        if let Some(record) = self.recipients.get(&address) {
            return Box::pin(async move { Ok(record) });
        }
        let generation = self.recipients.generation();
        Box::pin(async move {
            let conn = self.conn().await?;
            let domain_name = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let domain = lookup_domain(&conn, domain_name).await?;
            let account = match &domain {
                Some(_) => lookup_account(&conn, &address).await?,
                None => None,
            };
            let alias_targets = match (&domain, &account) {
                (Some(_), None) => lookup_alias_targets(&conn, &address).await?,
                _ => Vec::new(),
            };
            let record = RecipientRecord { domain, account, alias_targets };
            self.recipients.keep(generation, address, &record);
            Ok(record)
        })
    }

    fn list_aliases(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows =
                conn.query("SELECT alias, target FROM aliases ORDER BY alias, target", &[]).await.map_err(db_error)?;
            rows.iter().map(|r| Ok((r.try_get(0).map_err(db_error)?, r.try_get(1).map_err(db_error)?))).collect()
        })
    }

    fn add_cert_mapping(&self, address: &str, kind: CertMatch, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let value = kind.normalize(value);
        self.changing(async move {
            let conn = self.conn().await?;
            // One statement: the account's id and the mapping together, nothing when
            // there is no such account.
            let n = conn
                .execute(
                    "INSERT INTO cert_map (account_id, kind, value) SELECT id, $2, $3 FROM accounts WHERE address = $1",
                    &[&address, &kind.as_str(), &value],
                )
                .await
                .map_err(|e| {
                    if refused_with(&e, &SqlState::UNIQUE_VIOLATION) {
                        StoreError::Conflict(format!("that certificate {} is mapped already", kind.as_str()))
                    } else {
                        db_error(e)
                    }
                })?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {address}")));
            }
            Ok(())
        })
    }

    fn remove_cert_mapping(&self, address: &str, value: &str) -> StoreFuture<'_, ()> {
        let address = address.to_lowercase();
        let values = [CertMatch::Fingerprint.normalize(value), CertMatch::Subject.normalize(value)];
        let given = value.trim().to_string();
        self.changing(async move {
            let conn = self.conn().await?;
            let n = conn
                .execute(
                    "DELETE FROM cert_map WHERE value IN ($2, $3)
                       AND account_id = (SELECT id FROM accounts WHERE address = $1)",
                    &[&address, &values[0], &values[1]],
                )
                .await
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
        Box::pin(async move {
            let conn = self.conn().await?;
            let statement = conn
                .prepare_cached(
                    "SELECT a.address FROM cert_map c JOIN accounts a ON a.id = c.account_id
                     WHERE (c.kind = 'fingerprint' AND c.value = $1) OR (c.kind = 'subject' AND c.value = $2)
                     ORDER BY c.kind LIMIT 1",
                )
                .await
                .map_err(db_error)?;
            let row = conn.query_opt(&statement, &[&fingerprint, &subject]).await.map_err(db_error)?;
            row.map(|r| r.try_get(0)).transpose().map_err(db_error)
        })
    }

    fn list_cert_mappings(&self) -> StoreFuture<'_, Vec<CertMapping>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            let rows = conn
                .query(
                    "SELECT a.address, c.kind, c.value FROM cert_map c JOIN accounts a ON a.id = c.account_id ORDER BY a.address",
                    &[],
                )
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    let kind: String = r.try_get(1).map_err(db_error)?;
                    Ok(CertMapping {
                        address: r.try_get(0).map_err(db_error)?,
                        kind: if kind == "subject" { CertMatch::Subject } else { CertMatch::Fingerprint },
                        value: r.try_get(2).map_err(db_error)?,
                    })
                })
                .collect()
        })
    }

    fn set_domain_held(&self, name: &str, accounts: &[String], etrn_host: Option<&str>) -> StoreFuture<'_, ()> {
        let name = name.to_ascii_lowercase();
        // Lower-cased here and on lookup: account names compare case-insensitively.
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_lowercase()).filter(|a| !a.is_empty()).collect();
        let etrn_host = etrn_host.map(str::to_string);
        self.changing(async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db_error)?;
            for account in &accounts {
                if account_id(&tx, account).await?.is_none() {
                    return Err(StoreError::NotFound(format!("account {account}")));
                }
            }
            let n = tx
                .execute("UPDATE domains SET etrn_host = $2 WHERE name = $1", &[&name, &etrn_host])
                .await
                .map_err(db_error)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            tx.execute("DELETE FROM held_accounts WHERE domain = $1", &[&name]).await.map_err(db_error)?;
            let insert = tx
                .prepare_cached("INSERT INTO held_accounts (domain, account) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .await
                .map_err(db_error)?;
            for account in &accounts {
                tx.execute(&insert, &[&name, account]).await.map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn held_domains_for(&self, account: &str) -> StoreFuture<'_, Vec<String>> {
        let account = account.to_lowercase();
        Box::pin(async move {
            let conn = self.conn().await?;
            // RFC 2645 5.2.1: ATRN may only release mail held for this very account, so
            // the comparison is exact equality, never a pattern.
            let statement = conn
                .prepare_cached("SELECT domain FROM held_accounts WHERE account = $1 ORDER BY domain")
                .await
                .map_err(db_error)?;
            let rows = conn.query(&statement, &[&account]).await.map_err(db_error)?;
            rows.iter().map(|r| r.try_get(0).map_err(db_error)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use vouchmail_testkit::pg::database_for;

    use super::*;
    use crate::postgres::PostgresOptions;

    /// What `FederationStore` keeps about an account goes with it, and a published entry's
    /// withdrawal is logged for the peers (SPEC 8.4), as on SQLite; looked at behind the
    /// store's back, since this file does not need `FederationStore`.
    #[tokio::test]
    async fn removing_an_account_withdraws_its_directory_entry() {
        let Some(url) = database_for("removing_an_account_withdraws_its_directory_entry") else { return };
        let store = PostgresStore::connect(PostgresOptions::new(url)).await.unwrap();
        store.add_domain("lrsupport.test", SenderPolicy::REJECT).await.unwrap();
        for address in ["abc@lrsupport.test", "other@lrsupport.test"] {
            let account = NewAccount { address: address.into(), secrets: Secrets::default(), quota_bytes: 0 };
            store.add_account(account).await.unwrap();
        }
        let conn = store.conn().await.unwrap();
        conn.batch_execute(
            "INSERT INTO directory (address, name, organisation, role, published, updated_at) VALUES
               ('abc@lrsupport.test', 'Ann', 'LR', 'GP', TRUE, 1), ('other@lrsupport.test', 'O', 'LR', 'GP', TRUE, 1);
             INSERT INTO directory_ids (published_id, address) VALUES
               ('X9', 'abc@lrsupport.test'), ('A1', 'abc@lrsupport.test'), ('O1', 'other@lrsupport.test');
             INSERT INTO certificates (address, der, not_before, not_after, fingerprint, stored_at) VALUES
               ('abc@lrsupport.test', '\\x01', 0, 1, 'ab', 0), ('other@lrsupport.test', '\\x02', 0, 1, 'cd', 0);",
        )
        .await
        .unwrap();
        store.remove_account("ABC@lrsupport.test").await.unwrap();
        let changes: Vec<(String, String, String)> = conn
            .query("SELECT op, published_id, mailbox FROM entity_changes ORDER BY serial", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let del = |id: &str| ("DEL".to_string(), id.to_string(), "abc@lrsupport.test".to_string());
        assert_eq!(changes, [del("A1"), del("X9")]);
        let left = |table: &str| format!("SELECT address FROM {table} ORDER BY address");
        for table in ["directory", "directory_ids", "certificates"] {
            let rows = conn.query(&left(table), &[]).await.unwrap();
            let addresses: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(addresses, ["other@lrsupport.test"], "{table}");
        }
    }
}
