//! The daily DMARC aggregate reports (RFC 7489 7.2): soon after each UTC midnight, the
//! days that ended are taken from the store and their reports queued
//! (`rules::dmarc_report`). With several nodes, whichever takes a day's results sends them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vouchmail_store::Store;

use crate::auth::sending_domain::DomainVerifier;
use crate::rules::dmarc_report::{period_of, send_reports, Reporter, PERIOD_SECS};
use crate::support::time::unix_now;

/// How often the job looks for ended days: a day's report goes out within this of its end.
const TICK: Duration = Duration::from_secs(600);

pub async fn run(
    store: Arc<dyn Store>,
    verifier: Arc<DomainVerifier>,
    reporter: Reporter,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = unix_now();
        // Every period before the current one has ended.
        let ended = period_of(now) - PERIOD_SECS;
        if let Err(e) = send_reports(store.as_ref(), &verifier, &reporter, ended, now).await {
            tracing::warn!(error = %e, "cannot take the DMARC results; trying again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}
