//! The Messenger federation (SPEC 8, seed 000), server side: the answers the Messenger
//! listener's sessions get for CERT, PUBCERT, ENTITIES and BOOK, and the scheduled pull
//! of peers' Entity Index entries.
//!
//! The listener is the ordinary SMTP driver (`inbound`) with the `Messenger` session
//! profile; each Messenger verb reaches [`Messenger::answer`] as an event.
//!
//! - `discovery`: home-server discovery (SRV, MX, address).
//! - `client`: the federation client (also for part 2: RCRAM-MD5, NOTIFY, `client`).
//! - `cert`: CERT, local and relayed, and PUBCERT.
//! - `entities`: ENTITIES, BOOK, and the pull of peers.
//! - `rcram`: RCRAM-MD5 as verifier and as home server (SPEC 8.2).
//! - `notify`: NOTIFY, RECEIPT and TRACK answers, and the NOTIFY sender over the
//!   federation client (SPEC 8.3).
//! - `x509`: the checks of a user's certificate.

pub mod cert;
pub mod entities;
pub mod notify;
pub mod rcram;
/// The user-certificate checks live with the rest of certificate parsing.
pub use crate::net::x509;

use crate::support::time::unix_now as now;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use vouchmail_proto::smtp::session::{MessengerAnswer, MessengerRequest};
use vouchmail_store::Store;

use crate::config::Config;
use crate::net::federation::FederationClient;
use crate::support::metrics::Metrics;

/// What every Messenger session of one server shares.
pub struct Messenger {
    store: Arc<dyn Store>,
    client: Arc<FederationClient>,
    /// Domains already recorded as peers in this run (SPEC 8.4: "every home server it has
    /// talked to"), so a relayed CERT costs no store write after the first.
    noted_peers: Mutex<HashSet<String>>,
    /// The name given as verifier and in issued challenges (`[messenger] hostname`).
    hostname: String,
    /// `[messenger] legacy_rcram`.
    legacy_rcram: bool,
    /// `[messenger] notify_max_per_day` (SPEC 8.3).
    notify_max_per_day: u64,
    /// Challenges issued as home server, each accepted once (SPEC 8.2); shared with the
    /// sessions' links, which give back a challenge never answered.
    registry: Arc<Mutex<vouchmail_proto::messenger::rcram::ChallengeRegistry>>,
    /// Unfinished RCRAM-MD5 exchanges as verifier, by client and home domain (SPEC 8.2
    /// step 7).
    exchanges: Arc<Mutex<Exchanges>>,
    /// Rung when a RECEIPT queues a record for NOTIFY (SPEC 8.3).
    outbox_bell: crate::rules::tracking::OutboxBell,
    /// The server's counters: CERT lookups and NOTIFY records received (SPEC 12).
    metrics: Arc<Metrics>,
}

/// The unfinished RCRAM-MD5 exchanges this server holds as verifier, by client network and
/// by home domain (SPEC 8.2 step 7; `rcram.rs` keeps the counts).
#[derive(Debug, Default)]
struct Exchanges {
    by_client: std::collections::HashMap<std::net::IpAddr, usize>,
    by_home: std::collections::HashMap<String, usize>,
}

impl Messenger {
    /// A Messenger counting into a registry of its own (tests, tools).
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Messenger>, crate::support::error::Error> {
        Messenger::with_metrics(config, store, Arc::new(Metrics::new()))
    }

    /// A Messenger counting into the server's registry.
    pub fn with_metrics(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Messenger>, crate::support::error::Error> {
        let client = Arc::new(FederationClient::from_config(config)?);
        Ok(Arc::new(Messenger {
            store,
            client,
            noted_peers: Mutex::new(HashSet::new()),
            hostname: config.messenger_hostname().to_string(),
            legacy_rcram: config.messenger.legacy_rcram,
            notify_max_per_day: config.messenger.notify_max_per_day,
            registry: Arc::new(Mutex::new(vouchmail_proto::messenger::rcram::ChallengeRegistry::default())),
            exchanges: Arc::default(),
            outbox_bell: crate::rules::tracking::OutboxBell::default(),
            metrics,
        }))
    }

    /// What rings the NOTIFY outbox; the server's outbox and POP3 share it.
    pub fn outbox_bell(&self) -> &crate::rules::tracking::OutboxBell {
        &self.outbox_bell
    }

    pub fn client(&self) -> &Arc<FederationClient> {
        &self.client
    }

    /// Answers one Messenger verb of a session. `authenticated`: the session's
    /// authenticated identity, if any.
    pub async fn answer(
        &self,
        request: MessengerRequest,
        authenticated: Option<&str>,
        peer: SocketAddr,
    ) -> MessengerAnswer {
        match request {
            MessengerRequest::Cert(target) => {
                let answer = self.cert(&target, authenticated).await;
                let (code, result) = match &answer {
                    MessengerAnswer::Reply(r) => (r.code, cert_result(r)),
                    MessengerAnswer::Relayed { code, .. } => (*code, "relayed"),
                };
                self.metrics.cert_lookups.with_label_values(&[result]).inc();
                tracing::info!(%peer, user = ?authenticated, %target, code, "CERT");
                answer
            }
            MessengerRequest::Pubcert { pem } => {
                let user = authenticated.unwrap_or_default();
                let reply = self.pubcert(user, &pem).await;
                tracing::info!(%peer, %user, reply = %reply, "PUBCERT");
                MessengerAnswer::Reply(reply)
            }
            MessengerRequest::Entities { since } => MessengerAnswer::Reply(self.entities(since).await),
            MessengerRequest::Book { query } => MessengerAnswer::Reply(self.book(&query).await),
            MessengerRequest::Notify(record) => {
                let reply = self.notify(record, peer).await;
                // RFC 5321 4.2.1: stored on 2yz; a 4yz the sender retries; a 5yz never.
                let result = match reply.code {
                    200..=299 => "stored",
                    400..=499 => "deferred",
                    _ => "refused",
                };
                self.metrics.notify_received.with_label_values(&[result]).inc();
                MessengerAnswer::Reply(reply)
            }
            MessengerRequest::Receipt(receipt) => {
                let user = authenticated.unwrap_or_default();
                let reply = crate::rules::tracking::receipt_reply(
                    self.store.as_ref(),
                    user,
                    &receipt,
                    &self.hostname,
                    &self.outbox_bell,
                )
                .await;
                tracing::info!(%peer, %user, message_id = %receipt.message_id, reply = %reply, "RECEIPT");
                MessengerAnswer::Reply(reply)
            }
            MessengerRequest::Track { since } => {
                let user = authenticated.unwrap_or_default();
                MessengerAnswer::Reply(crate::rules::tracking::track_reply(self.store.as_ref(), user, since).await)
            }
            // The RCRAM steps are answered by `rcram.rs` (they need the session's link).
            other => {
                tracing::error!(%peer, request = ?other, "RCRAM request without its exchange");
                MessengerAnswer::Reply(vouchmail_proto::smtp::reply::Reply::local_error("Local error in processing"))
            }
        }
    }

    /// Remembers a domain whose home server answered a verified call, for the Entity Index
    /// pulls (SPEC 8.4: only after a verified call; with `peer_tls = "insecure"` no call
    /// is, and only the configured peers are pulled).
    async fn note_peer(&self, domain: &str) {
        if !self.client.options().verify_peers {
            return;
        }
        let first = self.noted_peers.lock().unwrap_or_else(|p| p.into_inner()).insert(domain.to_string());
        if first {
            if let Err(e) = self.store.note_messenger_peer(domain, false, Some(now())).await {
                tracing::warn!(%domain, error = %e, "cannot record the Messenger peer");
                self.noted_peers.lock().unwrap_or_else(|p| p.into_inner()).remove(domain);
            }
        }
    }
}

/// The `result` label of a CERT answered here (SPEC 8.1 replies): found or none in our
/// store is `local`, no such mailbox `unknown`, a remote lookup without AUTH `refused`,
/// anything temporary (the store, the home server unreachable) `error`.
fn cert_result(reply: &vouchmail_proto::smtp::reply::Reply) -> &'static str {
    use vouchmail_proto::smtp::reply::EnhancedCode;
    match (reply.code, reply.enhanced) {
        (200..=299, _) | (_, Some(EnhancedCode(5, 3, 0))) => "local",
        (_, Some(EnhancedCode(5, 1, 1))) => "unknown",
        (530, _) => "refused",
        _ => "error",
    }
}

#[cfg(test)]
mod tests;
