//! DMARC results waiting for their aggregate report in SQLite (RFC 7489 7.2).

use rusqlite::params;

use super::base::*;
use super::writer::SqliteStore;
use crate::error::StoreFuture;
use crate::interface::DmarcReportStore;
use crate::types::DmarcResultCount;

impl DmarcReportStore for SqliteStore {
    fn count_dmarc_result(&self, period: i64, domain: &str, record: &str, policy: &str) -> StoreFuture<'_, ()> {
        let (domain, record, policy) = (domain.to_ascii_lowercase(), record.to_string(), policy.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO dmarc_results (period, domain, record, policy, count) VALUES (?1, ?2, ?3, ?4, 1) \
                 ON CONFLICT (period, domain, record) DO UPDATE SET count = count + 1, policy = excluded.policy",
                params![period, domain, record, policy],
            )
            .map_err(db_error)?;
            Ok(())
        })
    }

    fn take_dmarc_results(&self, up_to_period: i64) -> StoreFuture<'_, Vec<DmarcResultCount>> {
        // One writer job: the rows read are the rows deleted.
        self.write(move |conn| {
            let mut stmt = conn
                .prepare(
                    "DELETE FROM dmarc_results WHERE period <= ?1 \
                     RETURNING period, domain, record, policy, count",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![up_to_period], |row| {
                    Ok(DmarcResultCount {
                        period: row.get(0)?,
                        domain: row.get(1)?,
                        record: row.get(2)?,
                        policy: row.get(3)?,
                        count: row.get(4)?,
                    })
                })
                .map_err(db_error)?;
            let mut taken = rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?;
            taken.sort_by(|a, b| (a.period, &a.domain, &a.record).cmp(&(b.period, &b.domain, &b.record)));
            Ok(taken)
        })
    }
}
