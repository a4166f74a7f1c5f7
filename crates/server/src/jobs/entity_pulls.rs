//! The scheduled pull of the peers' Entity Index entries (SPEC 8.4): every interval, each
//! peer's changes since the last pull, kept by the rules of `federation::entities`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::federation::Messenger;

/// Pulls every `interval` until shutdown.
pub async fn run(
    messenger: Arc<Messenger>,
    configured: Vec<String>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    messenger.note_configured_peers(&configured).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = messenger.pull_all() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
