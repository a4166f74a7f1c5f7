//! Delivery notifications over the federation (SPEC 8.3): receiving `NOTIFY <record>`
//! (only from an address of the home server of the record's recipient domain), and the
//! [`NotifySender`] the NOTIFY outbox uses: discovery of the sender domain's home server,
//! one connection, `NOTIFY <record>` per record.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use vouchmail_proto::messenger::tracking::{self, NotifyOutcome, Record};
use vouchmail_proto::smtp::reply::Reply;

use super::Messenger;
use crate::net::discovery::{home_addresses, DiscoveryError};
use crate::net::federation::{FederationClient, SMALL_REPLY};
use crate::rules::tracking::NotifySender;
use crate::support::metrics::Metrics;
use crate::support::time::unix_now as now;

impl Messenger {
    /// `NOTIFY <record>` from `peer` (SPEC 8.3): `550 5.7.1` unless the peer's IP is an
    /// address of the home server of the record's recipient domain; then stored once.
    pub(super) async fn notify(&self, record: Record, peer: SocketAddr) -> Reply {
        let domain = record.recipient_domain().to_ascii_lowercase();
        let port = self.client.options().port;
        let addresses = match home_addresses(self.client.dns(), &domain, port).await {
            Ok(addresses) => addresses,
            Err(DiscoveryError::None(_)) => Vec::new(),
            // A DNS failure is no verdict: the sender keeps the record and tries again.
            Err(DiscoveryError::Temporary(why)) => {
                tracing::warn!(%peer, %domain, %why, "NOTIFY: cannot find the recipient domain's home server now");
                return Reply::local_error("Cannot check your address now, try again later");
            }
        };
        if !addresses.contains(&peer.ip()) {
            tracing::warn!(%peer, %domain, sender = %record.sender, "NOTIFY refused: not from the recipient domain's home server");
            return Reply::notify_not_home_server(&domain);
        }
        crate::rules::tracking::notify_reply(self.store.as_ref(), record, self.notify_max_per_day, now()).await
    }
}

/// The outbox's [`NotifySender`] over the federation client (SPEC 8.3).
pub struct FederationNotifySender {
    client: Arc<FederationClient>,
    /// Each record's outcome is counted (SPEC 12).
    metrics: Arc<Metrics>,
}

impl FederationNotifySender {
    pub fn new(client: Arc<FederationClient>, metrics: Arc<Metrics>) -> FederationNotifySender {
        FederationNotifySender { client, metrics }
    }

    /// SPEC 12: NOTIFY records sent, by outcome.
    fn count(&self, outcomes: &[NotifyOutcome]) {
        for outcome in outcomes {
            let result = match outcome {
                NotifyOutcome::Delivered => "delivered",
                NotifyOutcome::Temporary(_) => "deferred",
                NotifyOutcome::Permanent(_) => "failed",
            };
            self.metrics.notify_sent.with_label_values(&[result]).inc();
        }
    }

    async fn send_all(&self, domain: &str, records: &[String]) -> Vec<NotifyOutcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        let (mut connection, mut reused) = match self.client.checkout(domain).await {
            Ok(pair) => pair,
            Err(e) => {
                let why = e.to_string();
                return records.iter().map(|_| NotifyOutcome::Temporary(why.clone())).collect();
            }
        };
        let mut broken: Option<String> = None;
        for record in records {
            if let Some(why) = &broken {
                outcomes.push(NotifyOutcome::Temporary(why.clone()));
                continue;
            }
            // A record that is not one valid line is never sent (it cannot become one).
            if tracking::Record::parse(record).is_err() {
                outcomes.push(NotifyOutcome::Permanent("not a valid record".into()));
                continue;
            }
            let line = tracking::notify_command_line(record);
            let mut answer = connection.command(&line, SMALL_REPLY).await;
            if answer.is_err() && std::mem::take(&mut reused) {
                // A kept connection the peer closed meanwhile: once more on a new one.
                match self.client.connect(domain).await {
                    Ok(fresh) => {
                        connection = fresh;
                        answer = connection.command(&line, SMALL_REPLY).await;
                    }
                    Err(e) => answer = Err(e),
                }
            }
            reused = false;
            match answer {
                Ok(reply) => {
                    let text = format!("{} {}", reply.code, reply.last_line());
                    // RFC 5321 4.2.1: 2yz done, 5yz permanent, anything else later.
                    outcomes.push(match reply.code {
                        200..=299 => NotifyOutcome::Delivered,
                        500..=599 => NotifyOutcome::Permanent(text.clone()),
                        _ => NotifyOutcome::Temporary(text.clone()),
                    });
                    if reply.code == 421 {
                        broken = Some(text);
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    outcomes.push(NotifyOutcome::Temporary(why.clone()));
                    broken = Some(why);
                }
            }
        }
        if broken.is_none() {
            self.client.checkin(connection);
        }
        outcomes
    }
}

impl NotifySender for FederationNotifySender {
    fn send<'a>(
        &'a self,
        domain: &'a str,
        records: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Vec<NotifyOutcome>> + Send + 'a>> {
        Box::pin(async move {
            let outcomes = self.send_all(domain, records).await;
            self.count(&outcomes);
            outcomes
        })
    }
}
