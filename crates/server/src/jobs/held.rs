//! On-Demand Mail Relay, provider side (RFC 2645), and ETRN (RFC 1985): handing a held
//! domain's queued mail to its customer.
//!
//! The ODMR listener runs the ordinary SMTP session in its `Odmr` profile; this module
//! decides ATRN, then runs the provider's SMTP client over the same connection once the
//! roles are reversed. ETRN on the MX listener delivers to the domain's configured host.

use crate::support::error::Error;
use crate::support::time::unix_now as now;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::Store;

use crate::config::Config;
use crate::jobs::outbound::HeldDelivery;
use crate::net::route::Target;
use crate::net::stream::Stream;

/// How often expired held mail is looked for, at most.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// A held domain with an ETRN delivery under way; dropping it ends the claim.
struct EtrnRunning {
    odmr: Arc<Odmr>,
    domain: String,
}

impl EtrnRunning {
    fn claim(odmr: &Arc<Odmr>, domain: &str) -> Option<EtrnRunning> {
        let mut running = odmr.etrn_running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(domain.to_string()).then(|| EtrnRunning { odmr: Arc::clone(odmr), domain: domain.to_string() })
    }
}

impl Drop for EtrnRunning {
    fn drop(&mut self) {
        self.odmr.etrn_running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.domain);
    }
}

/// Shared by every ODMR and MX session of one server.
pub struct Odmr {
    store: Arc<dyn Store>,
    delivery: HeldDelivery,
    /// Held domains with an ETRN delivery running.
    etrn_running: Mutex<HashSet<String>>,
    atrn_interval: Duration,
    lease: i64,
    /// The server's shared resolver, for ETRN delivery hosts.
    dns: Arc<crate::net::dns::Dns>,
}

impl Odmr {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Odmr>, Error> {
        // RFC 2645 5.2.1: the timeout for ATRN and the reversed session is at least 10 minutes.
        let timeout = Duration::from_secs(config.odmr.timeout_secs.max(600));
        Ok(Arc::new(Odmr {
            delivery: HeldDelivery::new(config, Arc::clone(&store))?.with_min_timeout(timeout),
            store,
            etrn_running: Mutex::new(HashSet::new()),
            atrn_interval: Duration::from_secs(config.odmr.atrn_interval_secs),
            lease: (config.odmr.timeout_secs.max(600) * 2) as i64,
            dns: crate::net::dns::Dns::for_config(config)?,
        }))
    }

    /// Decides an ATRN (RFC 2645 5.2.1); Ok carries the domains whose mail goes out.
    pub async fn check_atrn(&self, account: &str, requested: &[String]) -> Result<Vec<String>, Reply> {
        let allowed = self.store.held_domains_for(account).await.map_err(|e| {
            tracing::error!(error = %e, "ODMR: cannot read the held domains");
            Reply::atrn_unavailable()
        })?;
        // No domains: every domain the account may take.
        let domains: Vec<String> = if requested.is_empty() { allowed.clone() } else { requested.to_vec() };
        if domains.is_empty() {
            return Err(Reply::atrn_refused("no domains are held for you"));
        }
        // Any domain not allowed: refuse the whole request, send nothing.
        if let Some(denied) = domains.iter().find(|d| !allowed.contains(d)) {
            tracing::warn!(%account, domain = %denied, "ODMR: ATRN for a domain the account may not take");
            return Err(Reply::atrn_refused(&format!("not authorized for {denied}")));
        }
        let pending = self.store.count_held(&domains).await.map_err(|e| {
            tracing::error!(error = %e, "ODMR: cannot count held mail");
            Reply::atrn_unavailable()
        })?;
        if pending == 0 {
            return Err(Reply::atrn_no_mail());
        }
        // RFC 2645 5.2.1: at most one ATRN per interval for an account, on any node (SPEC
        // 11: the mark is in the store, set only when this one is granted).
        let now = now();
        let interval = self.atrn_interval.as_secs() as i64;
        let granted = self.store.mark_if_older(&format!("atrn:{account}"), now, now - interval).await.map_err(|e| {
            tracing::error!(error = %e, "ODMR: cannot record the ATRN");
            Reply::atrn_unavailable()
        })?;
        if !granted {
            return Err(Reply::atrn_refused("too soon after the previous ATRN, try again later"));
        }
        Ok(domains)
    }

    /// The reversed session (RFC 2645 5.3): wait for the customer's greeting, then deliver
    /// every held message of `domains` as an SMTP client, then QUIT.
    pub async fn reverse(
        &self,
        stream: Box<dyn Stream>,
        unread: Vec<u8>,
        peer: SocketAddr,
        account: &str,
        domains: &[String],
        tls: bool,
    ) {
        let entries = match self.store.lease_held(domains, now(), now() + self.lease).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "ODMR: cannot lease held mail");
                return;
            }
        };
        let count = entries.len();
        let target = Target { host: format!("odmr:{account}"), addr: peer };
        let done = self.delivery.deliver_over(stream, &unread, &target, entries, tls).await;
        tracing::info!(%account, %peer, ?domains, tls, recipients = count, delivered = done.delivered, deferred = done.deferred, bounced = done.bounced, "ODMR session done");
    }

    /// ETRN (RFC 1985 5): deliver a held domain's mail to its configured host. Any peer may
    /// send it, so only reads answer it until there is mail to start: the domain, then
    /// the count of its held mail; the lease (a write transaction) comes last, and not
    /// while an ETRN delivery for the domain is running already.
    pub async fn etrn(self: &Arc<Self>, node: &str) -> Reply {
        // RFC 1985 5.3: `#name` is a queue name; there are no named queues here.
        if node.starts_with('#') {
            return Reply::etrn_unknown_queue(node);
        }
        let domain = node.trim_start_matches('@').to_ascii_lowercase();
        let record = match self.store.get_domain(&domain).await {
            Ok(Some(record)) => record,
            Ok(None) => return Reply::etrn_not_allowed(node, "no mail is held here for it"),
            Err(e) => {
                tracing::error!(error = %e, "ETRN: cannot read the domain");
                return Reply::etrn_unable(node);
            }
        };
        let Some(host) = record.etrn_host.filter(|_| !record.held_for.is_empty()) else {
            return Reply::etrn_not_allowed(node, "no mail is held here for it");
        };
        let domains = vec![domain.clone()];
        match self.store.count_held(&domains).await {
            Ok(0) => return Reply::etrn_nothing_waiting(node),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "ETRN: cannot count held mail");
                return Reply::etrn_unable(node);
            }
        }
        // One ETRN delivery per domain at a time; the guard ends with the delivery task.
        let Some(running) = EtrnRunning::claim(self, &domain) else {
            return Reply::etrn_queuing(node);
        };
        let entries = match self.store.lease_held(&domains, now(), now() + self.lease).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "ETRN: cannot lease held mail");
                return Reply::etrn_unable(node);
            }
        };
        // Pending but none leasable: all of it is being delivered (an ATRN, another node).
        if entries.is_empty() {
            return Reply::etrn_nothing_waiting(node);
        }
        let count = entries.len();
        let odmr = Arc::clone(self);
        tokio::spawn(async move {
            let _running = running;
            let resolved = odmr.dns.socket_addrs(&host, 25).await;
            let addr = match resolved.as_ref().ok().and_then(|a| a.first().copied()) {
                Some(addr) => addr,
                None => {
                    tracing::warn!(%host, error = ?resolved.err(), "ETRN: cannot resolve the delivery host");
                    let reply = Reply::new(451, EnhancedCode(4, 4, 0), format!("Cannot resolve {host}"));
                    odmr.delivery.conclude(entries, reply).await;
                    return;
                }
            };
            let target = Target { host: host.clone(), addr };
            match tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let done = odmr.delivery.deliver_over(Box::new(stream), &[], &target, entries, false).await;
                    tracing::info!(%host, delivered = done.delivered, "ETRN delivery done");
                }
                _ => {
                    let reply = Reply::new(421, EnhancedCode(4, 4, 1), format!("Cannot connect to {host}"));
                    odmr.delivery.conclude(entries, reply).await;
                }
            }
        });
        Reply::etrn_pending(count, node)
    }

    /// Bounces held mail nobody collected within the queue lifetime (SPEC 6: held mail
    /// expires with a DSN like any queued mail). Runs until shutdown.
    pub async fn sweep_expired(self: Arc<Self>, lifetime: i64, mut shutdown: watch::Receiver<bool>) {
        // A short lifetime (tests, small sites) is checked more often.
        let every = EXPIRY_SWEEP.min(Duration::from_secs((lifetime / 4).max(1) as u64));
        loop {
            let before = now().saturating_sub(lifetime);
            match self.store.lease_expired_held(before, now(), now() + self.lease).await {
                Ok(entries) if !entries.is_empty() => {
                    tracing::info!(count = entries.len(), "held mail expired without ATRN");
                    let reply =
                        Reply::new(450, EnhancedCode(4, 4, 7), "Held for its ODMR customer, who never collected it");
                    self.delivery.conclude(entries, reply).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot look for expired held mail"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
