//! Held domains for On-Demand Mail Relay (RFC 2645): their mail stays queued, out of the
//! scheduler's reach, until a customer account takes it with ATRN (or ETRN).

use rusqlite::{params, params_from_iter, Connection};

use super::base::{db_error, row_to_queue_entry, QUEUE_COLUMNS};
use crate::error::{StoreError, StoreResult};
use crate::types::LeasedEntry;

/// Replaces the accounts a domain is held for (lower-cased by the caller), one row each.
pub(super) fn set_domain_held(
    conn: &Connection,
    name: &str,
    accounts: &[String],
    etrn_host: Option<&str>,
) -> StoreResult<()> {
    for account in accounts {
        let exists: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM accounts WHERE address = ?1)", params![account], |r| r.get(0))
            .map_err(db_error)?;
        if !exists {
            return Err(StoreError::NotFound(format!("account {account}")));
        }
    }
    let n = conn
        .execute("UPDATE domains SET etrn_host = ?2 WHERE name = ?1", params![name, etrn_host])
        .map_err(db_error)?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("domain {name}")));
    }
    conn.execute("DELETE FROM held_accounts WHERE domain = ?1", params![name]).map_err(db_error)?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO held_accounts (domain, account) VALUES (?1, ?2)")
        .map_err(db_error)?;
    for account in accounts {
        insert.execute(params![name, account]).map_err(db_error)?;
    }
    Ok(())
}

/// The held domains of an account (lower-cased by the caller). RFC 2645 5.2.1: ATRN may
/// only release mail held for this very account, so the comparison is exact equality,
/// never a pattern.
pub(super) fn domains_for(conn: &Connection, account: &str) -> StoreResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT domain FROM held_accounts WHERE account = ?1 ORDER BY domain").map_err(db_error)?;
    let rows = stmt.query_map(params![account], |r| r.get(0)).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn placeholders(n: usize, first: usize) -> String {
    (0..n).map(|i| format!("?{}", first + i)).collect::<Vec<_>>().join(",")
}

pub(super) fn count(conn: &Connection, domains: &[String]) -> StoreResult<usize> {
    if domains.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM queue WHERE held_domain IN ({}) AND state IN ('queued','deferred','inflight')",
        placeholders(domains.len(), 1)
    );
    conn.query_row(&sql, params_from_iter(domains.iter()), |r| r.get::<_, i64>(0)).map(|n| n as usize).map_err(db_error)
}

/// Leases the entries matching `condition` (SQL over `queue`, parameters from ?3 on).
fn lease_where(
    conn: &Connection,
    condition: &str,
    extra: Vec<rusqlite::types::Value>,
    now: i64,
    lease_until: i64,
) -> StoreResult<Vec<LeasedEntry>> {
    let sql = format!(
        "UPDATE queue SET state = 'inflight', lease_until = ?2, updated_at = ?1
         WHERE held_domain IS NOT NULL AND {condition}
           AND (state IN ('queued','deferred') OR (state = 'inflight' AND (lease_until IS NULL OR lease_until <= ?1)))
         RETURNING id"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![now.into(), lease_until.into()];
    values.extend(extra);
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare(&sql).map_err(db_error)?;
        let rows = stmt.query_map(params_from_iter(values.iter()), |r| r.get(0)).map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)?
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {QUEUE_COLUMNS}, q.delay_warned FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.id = ?1"
        ))
        .map_err(db_error)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let leased = stmt
            .query_row(params![id], |row| {
                Ok(LeasedEntry { entry: row_to_queue_entry(row)?, delay_warned: row.get::<_, i64>(13)? != 0 })
            })
            .map_err(db_error)?;
        out.push(leased);
    }
    out.sort_by_key(|l| (l.entry.message_id, l.entry.id));
    Ok(out)
}

pub(super) fn lease(
    conn: &Connection,
    domains: &[String],
    now: i64,
    lease_until: i64,
) -> StoreResult<Vec<LeasedEntry>> {
    if domains.is_empty() {
        return Ok(Vec::new());
    }
    let condition = format!("held_domain IN ({})", placeholders(domains.len(), 3));
    let values = domains.iter().map(|d| rusqlite::types::Value::from(d.clone())).collect();
    lease_where(conn, &condition, values, now, lease_until)
}

pub(super) fn lease_expired(
    conn: &Connection,
    created_before: i64,
    now: i64,
    lease_until: i64,
) -> StoreResult<Vec<LeasedEntry>> {
    lease_where(conn, "created_at < ?3", vec![created_before.into()], now, lease_until)
}
