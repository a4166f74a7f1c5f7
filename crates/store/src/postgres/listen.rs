//! What other nodes announce (SPEC 11: "changes other nodes must hear about use
//! PostgreSQL LISTEN/NOTIFY, with polling as the fallback"). One connection of its own per
//! store LISTENs on the `vouchmail` channel; each notification's payload is a topic (e.g.
//! `notify_outbox`), handed to every subscriber. A lost connection is made again after a
//! pause; whatever was announced meanwhile is found by the subscribers' own polling.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Socket};

use super::options::Target;
use super::tls;
use crate::error::StoreResult;

/// The one channel; the payload says what changed.
pub(super) const CHANNEL: &str = "vouchmail";
/// Announcements kept for a subscriber that is behind (it then polls anyway).
const BACKLOG: usize = 256;
/// The pause before the listening connection is made again.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// The listening task and its subscribers' channel.
pub(super) struct Announcements {
    sender: broadcast::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcements {
    /// Starts listening in the background (connecting, and reconnecting, on its own).
    pub(super) fn start(target: &Target, ca_file: Option<&std::path::Path>) -> StoreResult<Announcements> {
        let (sender, _) = broadcast::channel(BACKLOG);
        let config = target.config.clone();
        let forward = sender.clone();
        let task = if target.tls {
            let tls = tls::connector(ca_file)?;
            tokio::spawn(listen_forever(config, tls, forward))
        } else {
            tokio::spawn(listen_forever(config, tokio_postgres::NoTls, forward))
        };
        Ok(Announcements { sender, task })
    }

    /// The topics announced from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen_forever<T>(config: tokio_postgres::Config, tls: T, forward: broadcast::Sender<String>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + 'static,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
{
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                // The connection must be polled for the LISTEN to be sent and answered.
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let forward = forward.clone();
                let pump = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                                // No subscriber is no error: nobody waits for this topic.
                                let _ = forward.send(n.payload().to_string());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "PostgreSQL: the listening connection failed");
                                break;
                            }
                            None => break,
                        }
                    }
                    let _ = done_tx.send(());
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "PostgreSQL: cannot LISTEN for other nodes' announcements");
                    pump.abort();
                } else {
                    let _ = done_rx.await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL: cannot connect to LISTEN; other nodes' changes are polled")
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}
