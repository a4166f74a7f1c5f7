//! DMARC results waiting for their aggregate report in PostgreSQL (RFC 7489 7.2), with
//! SQLite's semantics (`sqlite/dmarc.rs`).

use super::base::db_error;
use super::pool::PostgresStore;
use crate::error::{StoreFuture, StoreResult};
use crate::interface::DmarcReportStore;
use crate::types::DmarcResultCount;

impl DmarcReportStore for PostgresStore {
    fn count_dmarc_result(&self, period: i64, domain: &str, record: &str, policy: &str) -> StoreFuture<'_, ()> {
        let (domain, record, policy) = (domain.to_ascii_lowercase(), record.to_string(), policy.to_string());
        Box::pin(async move {
            let conn = self.conn().await?;
            conn.execute(
                "INSERT INTO dmarc_results (period, domain, record, policy, count) VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (period, domain, record) \
                 DO UPDATE SET count = dmarc_results.count + 1, policy = excluded.policy",
                &[&period, &domain, &record, &policy],
            )
            .await
            .map_err(db_error)?;
            Ok(())
        })
    }

    fn take_dmarc_results(&self, up_to_period: i64) -> StoreFuture<'_, Vec<DmarcResultCount>> {
        Box::pin(async move {
            let conn = self.conn().await?;
            // One statement: of two nodes taking at once, each row goes to one of them.
            let rows = conn
                .query(
                    "DELETE FROM dmarc_results WHERE period <= $1 RETURNING period, domain, record, policy, count",
                    &[&up_to_period],
                )
                .await
                .map_err(db_error)?;
            let mut taken = rows
                .iter()
                .map(|row| {
                    Ok(DmarcResultCount {
                        period: row.try_get(0).map_err(db_error)?,
                        domain: row.try_get(1).map_err(db_error)?,
                        record: row.try_get(2).map_err(db_error)?,
                        policy: row.try_get(3).map_err(db_error)?,
                        count: row.try_get(4).map_err(db_error)?,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            taken.sort_by(|a, b| (a.period, &a.domain, &a.record).cmp(&(b.period, &b.domain, &b.record)));
            Ok(taken)
        })
    }
}
