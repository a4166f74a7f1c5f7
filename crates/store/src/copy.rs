//! `vouchmail store migrate --to postgres://...` (issue 21 item 5): an embedded SQLite
//! store copied into an empty PostgreSQL database, table by table, so that a server that
//! outgrows one machine keeps everything (SPEC 11).
//!
//! Both backends name their tables and columns alike (the PostgreSQL schema test checks
//! it), so the copy is by name: for each table, in the order SQLite created them (a table
//! only references earlier ones), every row goes over with `COPY ... FROM STDIN BINARY`,
//! each value converted to the PostgreSQL column's type. Everything happens in one
//! transaction: a copy that fails leaves the target empty. The identity sequences then
//! continue after the copied ids.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{StoreError, StoreResult};
use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;

/// Rows held in memory at once while a table is copied.
const BATCH_ROWS: usize = 256;

/// How far a copy has come: the table being copied, its rows copied, its rows in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyProgress {
    pub table: String,
    pub copied: u64,
    pub total: u64,
    /// Rows copied so far in all tables, and in the whole store.
    pub all_copied: u64,
    pub all_total: u64,
}

/// What a copy did, per table: (name, rows).
pub type CopyReport = Vec<(String, u64)>;

/// One PostgreSQL column a SQLite value goes into.
struct Column {
    name: String,
    pg_type: Type,
    /// SQLite keeps this column implicitly (a table's `rowid`).
    implicit_rowid: bool,
}

/// Copies the SQLite store at `sqlite_path` into `target`, which must hold no data yet.
/// The SQLite file is first brought to the current schema (as opening it in a server
/// would), then read while nothing writes to it: stop the server first.
pub async fn sqlite_to_postgres(
    sqlite_path: &Path,
    target: &PostgresStore,
    mut progress: impl FnMut(&CopyProgress),
) -> StoreResult<CopyReport> {
    if !sqlite_path.exists() {
        return Err(StoreError::NotFound(format!("no store at {}", sqlite_path.display())));
    }
    SqliteStore::open(sqlite_path)?.shutdown().await;
    let source = Connection::open_with_flags(sqlite_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", sqlite_path.display())))?;
    let tables = source_tables(&source)?;
    let mut conn = target.conn().await?;
    let tx = conn.transaction().await.map_err(pg_error)?;
    let mut plan = Vec::new();
    for table in &tables {
        let columns = target_columns(&tx, table, &source).await?;
        if columns.is_empty() {
            return Err(StoreError::Invalid(format!("the PostgreSQL schema has no table {table}")));
        }
        let has_rows: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(pg_error)?;
        if has_rows {
            return Err(StoreError::Conflict(format!(
                "the target database is not empty (table {table} has rows); migrate into a new database"
            )));
        }
        let rows = count_rows(&source, table)?;
        plan.push((table.clone(), columns, rows));
    }
    let all_total: u64 = plan.iter().map(|(_, _, rows)| rows).sum();
    let mut all_copied = 0;
    let mut report = Vec::new();
    for (table, columns, total) in plan {
        let copied = copy_table(&source, &tx, &table, &columns, total, all_copied, all_total, &mut progress).await?;
        all_copied += copied;
        report.push((table, copied));
    }
    reset_identities(&tx).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(report)
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    crate::postgres::db_error(e)
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The store's tables in the order their migrations made them.
fn source_tables(source: &Connection) -> StoreResult<Vec<String>> {
    let mut stmt = source
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
        .map_err(sqlite_error)?;
    let names = stmt.query_map([], |r| r.get(0)).map_err(sqlite_error)?;
    names.collect::<Result<_, _>>().map_err(sqlite_error)
}

fn count_rows(source: &Connection, table: &str) -> StoreResult<u64> {
    source
        .query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(sqlite_error)
}

/// The target table's columns that the source has too (by name), with their types.
async fn target_columns(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    source: &Connection,
) -> StoreResult<Vec<Column>> {
    let mut source_columns = Vec::new();
    {
        let stmt = source.prepare(&format!("SELECT * FROM \"{table}\" LIMIT 0")).map_err(sqlite_error)?;
        source_columns.extend(stmt.column_names().into_iter().map(str::to_string));
    }
    let rows = tx
        .query(
            "SELECT a.attname, a.atttypid FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = $1 AND n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(pg_error)?;
    let mut columns = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(pg_error)?;
        let oid: u32 = row.try_get(1).map_err(pg_error)?;
        let pg_type = Type::from_oid(oid)
            .ok_or_else(|| StoreError::Invalid(format!("{table}.{name}: a column type the copy does not know")))?;
        let in_source = source_columns.iter().any(|c| c == &name);
        // SQLite's implicit rowid, which PostgreSQL keeps as a column (held_accounts'
        // order).
        let implicit_rowid = !in_source && name == "rowid";
        if in_source || implicit_rowid {
            columns.push(Column { name, pg_type, implicit_rowid });
        }
    }
    Ok(columns)
}

/// One SQLite value as the PostgreSQL column's type.
fn convert(value: ValueRef<'_>, column: &Column, table: &str) -> StoreResult<Box<dyn ToSql + Send + Sync>> {
    let mismatch = || StoreError::Invalid(format!("{table}.{}: a value of another type", column.name));
    Ok(match (value, &column.pg_type) {
        (ValueRef::Null, _) => match column.pg_type {
            Type::INT8 => Box::new(None::<i64>),
            Type::INT4 => Box::new(None::<i32>),
            Type::BOOL => Box::new(None::<bool>),
            Type::BYTEA => Box::new(None::<Vec<u8>>),
            _ => Box::new(None::<String>),
        },
        (ValueRef::Integer(n), &Type::INT8) => Box::new(n),
        (ValueRef::Integer(n), &Type::INT4) => Box::new(i32::try_from(n).map_err(|_| mismatch())?),
        (ValueRef::Integer(n), &Type::BOOL) => Box::new(n != 0),
        (ValueRef::Integer(n), &Type::TEXT) => Box::new(n.to_string()),
        (ValueRef::Text(t), &Type::TEXT) => Box::new(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Text(t), &Type::BYTEA) | (ValueRef::Blob(t), &Type::BYTEA) => Box::new(t.to_vec()),
        (ValueRef::Blob(t), &Type::TEXT) => Box::new(String::from_utf8(t.to_vec()).map_err(|_| mismatch())?),
        (ValueRef::Real(f), &Type::INT8) => Box::new(f as i64),
        _ => return Err(mismatch()),
    })
}

#[allow(clippy::too_many_arguments)]
async fn copy_table(
    source: &Connection,
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &[Column],
    total: u64,
    all_before: u64,
    all_total: u64,
    progress: &mut impl FnMut(&CopyProgress),
) -> StoreResult<u64> {
    let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| if c.implicit_rowid { "rowid".to_string() } else { format!("\"{}\"", c.name) })
        .collect();
    let sink = tx.copy_in(&format!("COPY {table} ({}) FROM STDIN BINARY", names.join(", "))).await.map_err(pg_error)?;
    let types: Vec<Type> = columns.iter().map(|c| c.pg_type.clone()).collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    // In the order the rows were made, where the table keeps one (WITHOUT ROWID tables
    // have none, and no order to keep).
    let has_rowid = source.prepare(&format!("SELECT rowid FROM \"{table}\" LIMIT 0")).is_ok();
    let order = if has_rowid { " ORDER BY rowid" } else { "" };
    let mut stmt =
        source.prepare(&format!("SELECT {} FROM \"{table}\"{order}", select.join(", "))).map_err(sqlite_error)?;
    let mut rows = stmt.query([]).map_err(sqlite_error)?;
    let mut copied = 0u64;
    let mut report = CopyProgress { table: table.to_string(), copied: 0, total, all_copied: all_before, all_total };
    progress(&report);
    loop {
        // Read a batch (the SQLite cursor is not Send: no await while it is borrowed).
        let mut batch: Vec<Vec<Box<dyn ToSql + Send + Sync>>> = Vec::with_capacity(BATCH_ROWS);
        while batch.len() < BATCH_ROWS {
            let Some(row) = rows.next().map_err(sqlite_error)? else { break };
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(convert(row.get_ref(i).map_err(sqlite_error)?, column, table)?);
            }
            batch.push(values);
        }
        if batch.is_empty() {
            break;
        }
        for values in &batch {
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.map_err(pg_error)?;
        }
        copied += batch.len() as u64;
        report.copied = copied;
        report.all_copied = all_before + copied;
        progress(&report);
    }
    writer.finish().await.map_err(pg_error)?;
    Ok(copied)
}

/// Every identity column continues after the highest id copied.
async fn reset_identities(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<()> {
    let rows = tx
        .query(
            "SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .await
        .map_err(pg_error)?;
    for row in rows {
        let (table, column): (String, String) = (row.try_get(0).map_err(pg_error)?, row.try_get(1).map_err(pg_error)?);
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE(MAX(\"{column}\"), 0) + 1, false)
                 FROM {table}"
            ),
            &[],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}
