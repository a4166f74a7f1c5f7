//! The scheduled pull of the peers' Entity Index entries (SPEC 8.4): every interval, each
//! peer's changes since the last pull, kept by the rules of `federation::entities`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::federation::Messenger;
use crate::support::tasks::run_bounded;

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
            _ = pull_all(&messenger) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Peers pulled at once.
const PARALLEL_PEERS: usize = 8;

/// Every peer once, several at once: each pull has the federation client's call deadline,
/// so a peer that trickles delays only its own pull (SPEC 8, issue 19 item 7).
async fn pull_all(messenger: &Arc<Messenger>) {
    run_bounded(messenger.peers_to_pull().await, PARALLEL_PEERS, |peer| {
        let messenger = Arc::clone(messenger);
        async move { messenger.pull_and_record(&peer).await }
    })
    .await;
}
