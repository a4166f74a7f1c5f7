//! Outbound delivery (SPEC 5): a scheduler over the store's queue that delivers remote mail
//! over SMTP, retries with exponential backoff, and tells the sender about failures,
//! delays and (NOTIFY=SUCCESS) relays.
//!
//! The scheduler leases due queue entries (they become `inflight` until a lease expiry it
//! keeps renewing), groups them into transactions (one message, one domain, up to
//! `max_recipients_per_transaction` recipients) and hands them to per-destination queues.
//! Connection workers take transactions from their destination's queue over one SMTP
//! session (connection reuse), within the per-destination and total connection limits, and
//! record every outcome durably, together with any notice it causes, in one transaction.
//!
//! Delivery is at least once: an entry is marked delivered only after the remote's 250, so a
//! crash (or a lost connection after the final "." but before the reply, RFC 1047) between
//! the two leaves it in flight until its lease ends, and it is sent again.

use crate::support::live::Live;
use crate::support::time::unix_now as now;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use vouchmail_proto::dsn::{Action, RecipientStatus, Return};
use vouchmail_proto::smtp::client::{ClientConfig, OutboundMessage, OutboundRecipient, Timeouts, TlsMode};
use vouchmail_proto::smtp::command::{xtext_decode, DsnReturn};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::{LeasedEntry, NewMessage, QueueState, QueueUpdate, Store, StoreError, StoredMessage};

use crate::config::Config;
use crate::net::client_tls::Connectors;
use crate::net::route::{Destination, Router, Target, TlsPolicy};
use crate::net::smtp_client::Session;
use crate::rules::dsn::{enhanced_of, NotifyWanted};
use crate::support::error::Error;
use crate::support::metrics::Metrics;
use crate::support::tasks::TaskTracker;
use crate::support::time::unix_time;

/// Entries leased at once.
const LEASE_BATCH: usize = 500;
/// Entries held in memory (leased, not yet recorded) at most.
const MAX_IN_MEMORY: usize = 2000;

/// Settings derived from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    hostname: String,
    helo_name: String,
    timeouts: Timeouts,
    connect_timeout: Duration,
    retry_min: i64,
    retry_max: i64,
    lifetime: i64,
    delay_warning: i64,
    lease: i64,
    poll_interval: Duration,
    max_per_destination: usize,
    max_recipients: usize,
    max_messages_per_connection: usize,
    idle: Duration,
    /// SPEC 7.4: stamp X-Auth-Key on local users' mail as it leaves (`authkey.stamp`).
    stamp_authkeys: bool,
}

/// The SMTP client's reply timeouts from `[outbound]` (RFC 5321 4.5.3.2); the ODMR
/// customer's relay to its `--smtphost` uses them too.
pub fn client_timeouts(o: &crate::config::Outbound) -> Timeouts {
    let command = Duration::from_secs(o.command_timeout_secs.max(1));
    Timeouts {
        greeting: command,
        command,
        mail: command,
        rcpt: command,
        // RFC 5321 4.5.3.2.4: 2 minutes for the 354.
        data_init: command.min(Duration::from_secs(120)),
        data_term: Duration::from_secs(o.data_timeout_secs.max(1)),
    }
}

impl Settings {
    fn from_config(config: &Config) -> Settings {
        let o = &config.outbound;
        Settings {
            hostname: config.hostname.clone(),
            helo_name: if o.helo_name.is_empty() { config.hostname.clone() } else { o.helo_name.clone() },
            timeouts: client_timeouts(o),
            connect_timeout: Duration::from_secs(o.connect_timeout_secs.max(1)),
            retry_min: o.retry_min_secs as i64,
            retry_max: o.retry_max_secs as i64,
            lifetime: o.lifetime_secs as i64,
            delay_warning: o.delay_warning_secs as i64,
            lease: o.lease_secs as i64,
            poll_interval: Duration::from_millis(o.poll_interval_ms.max(10)),
            max_per_destination: o.max_connections_per_destination,
            max_recipients: o.max_recipients_per_transaction,
            max_messages_per_connection: o.max_messages_per_connection,
            idle: Duration::from_secs(o.connection_idle_secs),
            stamp_authkeys: config.authkey.stamp,
        }
    }

    /// RFC 5321 4.5.4.1: the wait before the next try grows (here it doubles) from the
    /// minimum to the maximum.
    fn backoff(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_min.saturating_mul(1i64 << doublings).min(self.retry_max)
    }
}

/// One transaction's worth of work: recipients of one message in one domain.
struct Job {
    domain: String,
    message_id: i64,
    entries: Vec<LeasedEntry>,
    /// Also counts this job's outcomes (one reversed session's, beside the engine's).
    tally: Option<Arc<Stats>>,
    /// How long its SMTP transaction took, once it was tried over a connection.
    elapsed: Option<Duration>,
}

/// Transactions waiting for a connection to one destination.
struct DestQueue {
    key: String,
    jobs: Mutex<VecDeque<Job>>,
    /// Workers running for it.
    active: AtomicUsize,
    /// Workers holding an idle connection, waiting for work.
    idle: AtomicUsize,
    arrived: Notify,
}

impl DestQueue {
    fn pop(&self) -> Option<Job> {
        self.jobs.lock().ok()?.pop_front()
    }

    fn len(&self) -> usize {
        self.jobs.lock().map(|j| j.len()).unwrap_or(0)
    }
}

/// Counters of recorded outcomes.
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub bounced: AtomicU64,
    pub deferred: AtomicU64,
}

impl Stats {
    fn add(&self, delivered: u64, bounced: u64, deferred: u64) {
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.bounced.fetch_add(bounced, Ordering::Relaxed);
        self.deferred.fetch_add(deferred, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Progress {
        Progress {
            delivered: self.delivered.load(Ordering::Relaxed),
            bounced: self.bounced.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub delivered: u64,
    pub bounced: u64,
    pub deferred: u64,
}

impl Progress {
    pub fn done(&self) -> u64 {
        self.delivered + self.bounced + self.deferred
    }
}

struct Engine {
    settings: Settings,
    store: Arc<dyn Store>,
    /// Replaced by a reload (SIGHUP): deliveries started keep the routes they began with.
    router: Live<Router>,
    tls: Connectors,
    connections: Arc<Semaphore>,
    destinations: Mutex<HashMap<String, Arc<DestQueue>>>,
    /// Entries leased and not yet recorded.
    leased: Mutex<HashSet<i64>>,
    stopping: AtomicBool,
    /// A flush (`vouchmail queue flush`) whose scheduler found nothing more due: a worker
    /// whose destination queue is empty leaves at once instead of holding its connection
    /// for `connection_idle_secs`, since the flush ends only when every worker has (that
    /// wait was half of bench/outbound.sh's time, see docs/profiles.md). A job leased
    /// later still gets a worker: `dispatch` starts one when none is active.
    drained: AtomicBool,
    stats: Stats,
    workers: TaskTracker,
    /// Outcomes recorded or workers finished: the scheduler may lease more.
    wake: Notify,
    /// The server's registry (SPEC 12): attempts by result and their duration.
    metrics: Arc<Metrics>,
}

/// Starts the scheduler; it runs until `shutdown` turns true, then hands back the work it
/// has not started and lets running transactions finish.
pub fn spawn(
    config: &Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    tasks: &TaskTracker,
) -> Result<Routes, Error> {
    let engine = Engine::with_metrics(config, store, metrics)?;
    let routes = Routes(engine.router.clone());
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tasks.spawn(async move {
        engine.run(shutdown, false, grace).await;
    });
    Ok(routes)
}

/// The running delivery's routes, which a reload replaces (`[outbound]` relay, routes,
/// port, tls, helo_name, prefer_ipv6).
#[derive(Clone)]
pub struct Routes(Live<Router>);

impl Routes {
    pub fn reload(&self, config: &Config) -> Result<(), Error> {
        let router = self.0.get().reconfigured(&config.outbound, &config.hostname).map_err(|e| e.about("outbound"))?;
        self.0.set(router);
        Ok(())
    }
}

/// Delivers everything pending now, in this process (`vouchmail queue flush`): makes every
/// queued and deferred entry due, then runs until nothing due is left. `progress` is called
/// now and then with the counts so far. Entries a running server already holds are left to it.
pub async fn flush(
    config: &Config,
    store: Arc<dyn Store>,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Progress, Error> {
    store.retry_queued(None, now()).await?;
    let engine = Engine::new(config, store)?;
    let (_stop, shutdown) = watch::channel(false);
    let reporter = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            loop {
                progress(engine.progress());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let grace = Duration::from_secs(config.shutdown_grace_secs.max(30));
    Arc::clone(&engine).run(shutdown, true, grace).await;
    reporter.abort();
    Ok(engine.progress())
}

/// Delivery of held mail over a connection opened by someone else: the ODMR provider's
/// reversed session (RFC 2645 5.3), or an ETRN delivery host. Outcomes are recorded exactly
/// as the scheduler records them (2xx done, 4xx stays queued, 5xx bounces with a DSN).
pub struct HeldDelivery {
    engine: Arc<Engine>,
    /// Every client timeout is at least this (RFC 2645 5.2.1: 10 minutes around ATRN).
    min_timeout: Duration,
}

impl HeldDelivery {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Result<HeldDelivery, Error> {
        Ok(HeldDelivery { engine: Engine::new(config, store)?, min_timeout: Duration::ZERO })
    }

    pub fn with_min_timeout(mut self, min: Duration) -> HeldDelivery {
        self.min_timeout = min;
        self
    }

    /// Runs the SMTP client over `stream` (the peer's greeting may already be in
    /// `prebuffered`; `tls`: the stream is inside TLS) and delivers every leased entry, then
    /// QUIT. Returns the counts.
    pub async fn deliver_over(
        &self,
        stream: Box<dyn crate::net::stream::Stream>,
        prebuffered: &[u8],
        target: &Target,
        entries: Vec<LeasedEntry>,
        tls: bool,
    ) -> Progress {
        let engine = &self.engine;
        // This session's own counts, exact also while other reversed sessions run.
        let tally = Arc::new(Stats::default());
        let jobs = jobs_of(entries, engine.settings.max_recipients.max(1), Some(Arc::clone(&tally)));
        // No STARTTLS inside the reversed session: it is already inside TLS if the
        // customer started it, and the customer cannot ask us to.
        let t = engine.settings.timeouts;
        let at_least = |d: Duration| d.max(self.min_timeout);
        let timeouts = Timeouts {
            greeting: at_least(t.greeting),
            command: at_least(t.command),
            mail: at_least(t.mail),
            rcpt: at_least(t.rcpt),
            data_init: at_least(t.data_init),
            data_term: at_least(t.data_term),
        };
        let config = ClientConfig {
            helo_name: engine.settings.helo_name.clone(),
            tls: TlsMode::Never,
            credentials: None,
            allow_cleartext_auth: false,
            timeouts,
            ..ClientConfig::new(engine.settings.helo_name.clone())
        };
        let mut pending = jobs.into_iter();
        match Session::over(stream, prebuffered, target, config, tls).await {
            Ok(mut session) => {
                for job in pending.by_ref() {
                    if engine.deliver(&mut session, job).await {
                        break;
                    }
                }
                let rest: Vec<Job> = pending.collect();
                if rest.is_empty() {
                    // Every outcome is durable before QUIT, so when the customer sees the
                    // session end, the provider's queue already says what was taken.
                    engine.workers.wait(Duration::from_secs(60)).await;
                    session.quit().await;
                } else {
                    let reply = Reply::new(421, EnhancedCode(4, 4, 2), "Connection lost during delivery");
                    for job in rest {
                        let replies = vec![reply.clone(); job.entries.len()];
                        engine.conclude(job, None, replies, Some(&target.host), false).await;
                    }
                }
            }
            Err(e) => {
                tracing::info!(host = %target.host, reason = %e.reply, "held delivery: session failed");
                for job in pending {
                    let replies = vec![e.reply.clone(); job.entries.len()];
                    engine.conclude(job, None, replies, Some(&target.host), false).await;
                }
            }
        }
        // Outcomes of the other paths are recorded in the background; wait for them too.
        engine.workers.wait(Duration::from_secs(60)).await;
        tally.snapshot()
    }

    /// Concludes entries without a delivery attempt (held mail whose lifetime is over).
    pub async fn conclude(&self, entries: Vec<LeasedEntry>, reply: Reply) -> Progress {
        for job in jobs_of(entries, usize::MAX, None) {
            let replies = vec![reply.clone(); job.entries.len()];
            self.engine.conclude(job, None, replies, None, false).await;
        }
        self.engine.progress()
    }
}

/// Groups leased entries into transactions: one message, at most `max` recipients.
fn jobs_of(entries: Vec<LeasedEntry>, max: usize, tally: Option<Arc<Stats>>) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for leased in entries {
        let domain = leased.entry.recipient.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        match jobs.last_mut() {
            Some(job) if job.message_id == leased.entry.message_id && job.entries.len() < max => {
                job.entries.push(leased)
            }
            _ => jobs.push(Job {
                domain,
                message_id: leased.entry.message_id,
                entries: vec![leased],
                tally: tally.clone(),
                elapsed: None,
            }),
        }
    }
    jobs
}

impl Engine {
    /// An engine counting into a registry of its own (a flush from the CLI, held mail).
    fn new(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Engine>, Error> {
        Engine::with_metrics(config, store, Arc::new(Metrics::new()))
    }

    fn with_metrics(config: &Config, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Result<Arc<Engine>, Error> {
        let o = &config.outbound;
        let dns = crate::net::dns::Dns::for_config(config).map_err(|e| e.about("nameservers"))?;
        Ok(Arc::new(Engine {
            settings: Settings::from_config(config),
            router: Live::new(Router::new(o, &config.hostname, dns).map_err(|e| e.about("outbound"))?),
            tls: Connectors::new(o.ca_file.as_deref()).map_err(|e| e.about("outbound.ca_file"))?,
            store,
            connections: Arc::new(Semaphore::new(o.max_connections)),
            destinations: Mutex::new(HashMap::new()),
            leased: Mutex::new(HashSet::new()),
            stopping: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            stats: Stats::default(),
            workers: TaskTracker::default(),
            wake: Notify::new(),
            metrics,
        }))
    }

    fn progress(&self) -> Progress {
        self.stats.snapshot()
    }

    fn leased_count(&self) -> usize {
        self.leased.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// The scheduler loop. `drain`: stop once nothing is due and all work is recorded.
    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>, drain: bool, grace: Duration) {
        let renewer = tokio::spawn(Arc::clone(&self).renew_leases());
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut wait = self.settings.poll_interval;
            let room = MAX_IN_MEMORY.saturating_sub(self.leased_count()).min(LEASE_BATCH);
            let now = now();
            let due = match self.store.next_due().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "outbound: cannot read the queue");
                    None
                }
            };
            let mut leased_now = 0;
            if room > 0 && due.is_some_and(|d| d <= now) {
                match self.store.lease_due(now, now + self.settings.lease, room).await {
                    Ok(entries) => {
                        leased_now = entries.len();
                        if leased_now > 0 {
                            self.drained.store(false, Ordering::SeqCst);
                        }
                        self.dispatch(entries);
                    }
                    Err(e) => tracing::error!(error = %e, "outbound: cannot lease queue entries"),
                }
            } else if let Some(due) = due.filter(|d| *d > now) {
                wait = wait.min(Duration::from_secs((due - now) as u64));
            }
            if leased_now == room && room > 0 {
                continue; // More may be due.
            }
            if drain && leased_now == 0 && room > 0 && due.is_none_or(|d| d > now) {
                self.drained.store(true, Ordering::SeqCst);
                self.wake_idle_workers();
            }
            if drain && leased_now == 0 && self.leased_count() == 0 && self.workers.running() == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.hand_back().await;
        let left = self.workers.wait(grace).await;
        if left > 0 {
            tracing::warn!(left, "outbound: deliveries still running at shutdown; their entries retry after the lease");
        }
        renewer.abort();
    }

    /// Keeps the leases of entries in memory from running out while they wait or travel.
    async fn renew_leases(self: Arc<Self>) {
        let every = Duration::from_secs((self.settings.lease / 3).max(1) as u64);
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<i64> = self.leased.lock().map(|l| l.iter().copied().collect()).unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            // A failed renewal is tried again at once (a few times): a lease that runs out
            // under a live delivery lets another node send the message too.
            for attempt in 1..=3 {
                match self.store.renew_leases(ids.clone(), now() + self.settings.lease).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %e, attempt, "outbound: cannot renew leases"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Groups leased entries into transactions and queues them by destination.
    fn dispatch(self: &Arc<Self>, entries: Vec<LeasedEntry>) {
        if let Ok(mut leased) = self.leased.lock() {
            leased.extend(entries.iter().map(|e| e.entry.id));
        }
        let mut jobs: Vec<Job> = Vec::new();
        for entry in entries {
            let domain =
                entry.entry.recipient.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
            let open = jobs.iter_mut().find(|j| {
                j.message_id == entry.entry.message_id
                    && j.domain == domain
                    && j.entries.len() < self.settings.max_recipients
            });
            match open {
                Some(job) => job.entries.push(entry),
                None => jobs.push(Job {
                    domain,
                    message_id: entry.entry.message_id,
                    entries: vec![entry],
                    tally: None,
                    elapsed: None,
                }),
            }
        }
        for job in jobs {
            let key = self.router.get().destination_key(&job.domain);
            let queue = {
                let Ok(mut map) = self.destinations.lock() else { return };
                Arc::clone(map.entry(key.clone()).or_insert_with(|| {
                    Arc::new(DestQueue {
                        key,
                        jobs: Mutex::new(VecDeque::new()),
                        active: AtomicUsize::new(0),
                        idle: AtomicUsize::new(0),
                        arrived: Notify::new(),
                    })
                }))
            };
            if let Ok(mut q) = queue.jobs.lock() {
                q.push_back(job);
            }
            if queue.idle.load(Ordering::SeqCst) > 0 {
                queue.arrived.notify_one();
            } else if queue.active.load(Ordering::SeqCst) < self.settings.max_per_destination {
                queue.active.fetch_add(1, Ordering::SeqCst);
                let engine = Arc::clone(self);
                self.workers.spawn(engine.worker(queue));
            }
        }
    }

    /// At shutdown: entries not yet started go back to the queue, due now.
    async fn hand_back(&self) {
        let queues: Vec<Arc<DestQueue>> =
            self.destinations.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        let mut updates = Vec::new();
        for queue in queues {
            while let Some(job) = queue.pop() {
                for leased in job.entries {
                    let state = if leased.entry.attempts > 0 { QueueState::Deferred } else { QueueState::Queued };
                    updates.push(QueueUpdate {
                        id: leased.entry.id,
                        state,
                        last_reply: None,
                        next_attempt: leased.entry.next_attempt,
                        attempted: false,
                        delay_warned: false,
                    });
                }
            }
        }
        if updates.is_empty() {
            return;
        }
        let ids: Vec<i64> = updates.iter().map(|u| u.id).collect();
        if let Err(e) = self.store.record_delivery(updates, Vec::new()).await {
            tracing::warn!(error = %e, "outbound: cannot hand back queue entries; they retry after the lease");
        }
        self.release(&ids);
    }

    fn release(&self, ids: &[i64]) {
        if let Ok(mut leased) = self.leased.lock() {
            for id in ids {
                leased.remove(id);
            }
        }
        self.wake.notify_one();
    }

    /// A connection worker for a destination: runs sessions while there is work.
    async fn worker(self: Arc<Self>, queue: Arc<DestQueue>) {
        let _permit = Arc::clone(&self.connections).acquire_owned().await;
        loop {
            self.sessions(&queue).await;
            queue.active.fetch_sub(1, Ordering::SeqCst);
            // A job may have arrived while this worker was leaving.
            if queue.len() > 0 && !self.stopping.load(Ordering::SeqCst) {
                queue.active.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            break;
        }
        // Forget idle destinations. A job queued meanwhile is not lost: whoever queued it
        // saw no active worker and started one on this queue.
        if let Ok(mut map) = self.destinations.lock() {
            if queue.active.load(Ordering::SeqCst) == 0
                && queue.len() == 0
                && map.get(&queue.key).is_some_and(|q| Arc::ptr_eq(q, &queue))
            {
                map.remove(&queue.key);
            }
        }
        self.wake.notify_one();
    }

    /// Connects, then sends transactions until the queue stays empty for the idle time;
    /// reconnects when a session breaks.
    async fn sessions(self: &Arc<Self>, queue: &DestQueue) {
        'connect: while !self.stopping.load(Ordering::SeqCst) {
            let Some(first) = queue.pop() else { break };
            let router = self.router.get();
            let destination = match router.resolve(&first.domain).await {
                Ok(d) => d,
                Err(reply) => {
                    self.fail_queue(queue, first, &reply, None).await;
                    continue;
                }
            };
            let mut session = match self.open(&destination).await {
                Ok(s) => s,
                Err(reply) => {
                    let remote = destination.targets.last().map(|t| t.host.clone());
                    self.fail_queue(queue, first, &reply, remote.as_deref()).await;
                    continue;
                }
            };
            let mut job = Some(first);
            let mut sent = 0usize;
            loop {
                let next = match job.take() {
                    Some(j) => Some(j),
                    None if self.stopping.load(Ordering::SeqCst) => None,
                    None => match queue.pop() {
                        Some(j) => Some(j),
                        None => self.wait_for_job(queue).await,
                    },
                };
                let Some(current) = next else {
                    session.quit().await;
                    break 'connect;
                };
                let broken = self.deliver(&mut session, current).await;
                sent += 1;
                if broken {
                    continue 'connect;
                }
                let limit = self.settings.max_messages_per_connection;
                if limit > 0 && sent >= limit {
                    session.quit().await;
                    continue 'connect;
                }
            }
        }
    }

    /// Wakes the workers waiting for work with an idle connection (they see `drained`).
    fn wake_idle_workers(&self) {
        let queues: Vec<Arc<DestQueue>> =
            self.destinations.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for queue in queues {
            queue.arrived.notify_waiters();
        }
    }

    /// Keeps the connection for a while in case more mail for the destination comes.
    async fn wait_for_job(&self, queue: &DestQueue) -> Option<Job> {
        if self.settings.idle.is_zero() {
            return None;
        }
        queue.idle.fetch_add(1, Ordering::SeqCst);
        // Made before `drained` is read: a wake-up sent after the read still reaches it.
        let arrived = queue.arrived.notified();
        let job = match queue.pop() {
            Some(j) => Some(j),
            None if self.drained.load(Ordering::SeqCst) => None,
            None => {
                let _ = tokio::time::timeout(self.settings.idle, arrived).await;
                queue.pop()
            }
        };
        queue.idle.fetch_sub(1, Ordering::SeqCst);
        job
    }

    /// RFC 5321 5.1: try the destination's addresses in order until one gives a session.
    async fn open(&self, destination: &Destination) -> Result<Session, Reply> {
        let mut last = Reply::new(451, EnhancedCode(4, 4, 4), "No host to deliver to");
        for target in &destination.targets {
            let config = self.client_config(destination, destination.tls.mode());
            let connector = self.tls.for_policy(destination.tls);
            match Session::open(target, config, connector, self.settings.connect_timeout).await {
                Ok(session) => return Ok(session),
                Err(e) if e.tls_handshake.is_some() && destination.tls == TlsPolicy::May => {
                    // Opportunistic TLS that fails its handshake: like Postfix, try in the clear.
                    tracing::info!(host = %target.host, reason = %e.reply, "TLS handshake failed; retrying without TLS");
                    let config = self.client_config(destination, TlsMode::Never);
                    match Session::open(target, config, None, self.settings.connect_timeout).await {
                        Ok(session) => return Ok(session),
                        Err(e) => last = e.reply,
                    }
                }
                Err(e) => {
                    tracing::debug!(host = %target.host, addr = %target.addr, reason = %e.reply, "cannot use host");
                    last = e.reply;
                }
            }
        }
        Err(last)
    }

    fn client_config(&self, destination: &Destination, tls: TlsMode) -> ClientConfig {
        ClientConfig {
            helo_name: self.settings.helo_name.clone(),
            tls,
            credentials: destination.credentials.clone(),
            allow_cleartext_auth: destination.allow_cleartext_auth,
            timeouts: self.settings.timeouts,
            ..ClientConfig::new(self.settings.helo_name.clone())
        }
    }

    /// The destination cannot be reached: `first` and every job waiting for the same
    /// destination get `reply` (deferred, or bounced when it is permanent).
    async fn fail_queue(&self, queue: &DestQueue, first: Job, reply: &Reply, remote: Option<&str>) {
        // A refused login or a TLS requirement is our configuration, not the message's fault.
        let reply = if matches!(reply.code, 530 | 534 | 535 | 538) {
            Reply::new(454, EnhancedCode(4, 7, 0), format!("Cannot authenticate to the relay: {reply}"))
        } else {
            reply.clone()
        };
        tracing::info!(domain = %first.domain, reason = %reply, "destination not reachable");
        let mut jobs = vec![first];
        while let Some(job) = queue.pop() {
            jobs.push(job);
        }
        for job in jobs {
            let replies = vec![reply.clone(); job.entries.len()];
            self.conclude(job, None, replies, remote, false).await;
        }
    }

    /// Sends one transaction and records its outcome. Returns true when the session broke.
    async fn deliver(self: &Arc<Self>, session: &mut Session, job: Job) -> bool {
        let message = match self.store.get_message(job.message_id).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                // Deleted meanwhile (queue delete): nothing to do.
                let ids: Vec<i64> = job.entries.iter().map(|e| e.entry.id).collect();
                self.release(&ids);
                return false;
            }
            Err(e) => {
                let reply = Reply::new(451, EnhancedCode(4, 3, 0), format!("Local problem reading the queue: {e}"));
                let replies = vec![reply; job.entries.len()];
                self.conclude(job, None, replies, None, false).await;
                return false;
            }
        };
        let message = self.stamp(message).await;
        let outbound = outbound_message(&message, &job.entries);
        let started = std::time::Instant::now();
        let (result, broken) = match session.send_message(outbound).await {
            Ok(result) => (result, false),
            Err((result, _)) => (result, true),
        };
        let remote = session.target.host.clone();
        tracing::info!(
            queue_id = %message.queue_id,
            to = %job.entries.iter().map(|e| e.entry.recipient.as_str()).collect::<Vec<_>>().join(","),
            relay = %format!("{}[{}]", remote, session.target.addr),
            tls = session.tls,
            delay_ms = started.elapsed().as_millis() as u64,
            reply = %result.replies.first().map(|r| r.to_string()).unwrap_or_default(),
            "delivery attempt"
        );
        let mut job = job;
        job.elapsed = Some(started.elapsed());
        // Record in the background: the connection goes on with the next message meanwhile.
        let engine = Arc::clone(self);
        self.workers.spawn(async move {
            let message = Arc::new(message);
            engine.conclude(job, Some(message), result.replies, Some(&remote), result.dsn_relayed).await;
        });
        broken
    }

    /// SPEC 7.4: mail a local user sent (the envelope says who authenticated) leaves with
    /// the sender address's current AuthKey, unless it carries one. Added here, on the copy
    /// that goes out, so a local recipient's copy never holds the sender's key, and the key
    /// is the current one however long the message waited. Forwarded, relayed and bounce
    /// messages have no authenticated sender and are never stamped.
    async fn stamp(&self, mut message: StoredMessage) -> StoredMessage {
        if !self.settings.stamp_authkeys || message.envelope.authenticated_as.is_none() {
            return message;
        }
        let sender = message.envelope.sender.clone();
        match crate::auth::authkey::sender::stamp_fields(self.store.as_ref(), &sender, &message.data).await {
            Ok(fields) if !fields.is_empty() => {
                let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
                message.data = vouchmail_proto::headers::insert_after_trace(&fields, &message.data);
            }
            Ok(_) => {}
            // The message still goes; unstamped, the recipient judges it by its policy.
            Err(e) => tracing::warn!(error = %e, %sender, "cannot read the sender's AuthKey; sent without"),
        }
        message
    }

    /// Turns replies into queue updates and notices, and records them durably.
    async fn conclude(
        &self,
        job: Job,
        message: Option<Arc<StoredMessage>>,
        replies: Vec<Reply>,
        remote: Option<&str>,
        dsn_relayed: bool,
    ) {
        let now = now();
        let s = &self.settings;
        let mut updates = Vec::with_capacity(job.entries.len());
        let mut failed: Vec<RecipientStatus> = Vec::new();
        let mut delayed: Vec<RecipientStatus> = Vec::new();
        let mut relayed: Vec<RecipientStatus> = Vec::new();
        // (delivered, bounced, deferred) of this job.
        let mut counts = (0u64, 0u64, 0u64);
        let status = |entry: &vouchmail_store::QueueEntry, action, code, reply: Option<&Reply>, until: Option<i64>| {
            RecipientStatus {
                final_recipient: entry.recipient.clone(),
                original_recipient: entry.dsn.orcpt.clone(),
                action,
                status: code,
                // RFC 3464 2.3.5, 2.3.6: the remote MTA and its diagnostic only when a server
                // replied; otherwise our own words say what happened.
                remote_mta: remote.filter(|_| reply.is_some_and(|r| r.from_peer)).map(str::to_string),
                diagnostic: reply.filter(|r| r.from_peer).map(|r| r.to_string()),
                detail: reply.filter(|r| !r.from_peer).map(|r| r.text.to_string()),
                last_attempt: Some(unix_time(now)),
                will_retry_until: until.map(unix_time),
            }
        };
        for (leased, reply) in job.entries.iter().zip(replies) {
            let entry = &leased.entry;
            let wanted = NotifyWanted::from_stored(entry.dsn.notify.as_deref());
            let attempts = entry.attempts + 1;
            let expires = entry.created_at.saturating_add(s.lifetime);
            let mut update = QueueUpdate {
                id: entry.id,
                state: QueueState::Deferred,
                last_reply: Some(reply.to_string()),
                next_attempt: now,
                attempted: true,
                delay_warned: false,
            };
            if reply.is_positive() {
                update.state = QueueState::Delivered;
                // RFC 3461 6.2.2: to a server without DSN, the notice is ours to send.
                if wanted.success && !dsn_relayed {
                    relayed.push(status(entry, Action::Relayed, EnhancedCode(2, 0, 0), Some(&reply), None));
                }
                counts.0 += 1;
            } else if !reply.is_temporary() {
                update.state = QueueState::Bounced;
                if wanted.failure {
                    failed.push(status(entry, Action::Failed, enhanced_of(&reply), Some(&reply), None));
                }
                counts.1 += 1;
            } else if now >= expires {
                // RFC 3463 X.4.7: delivery time expired; the last reply says why.
                update.state = QueueState::Bounced;
                update.last_reply = Some(format!("{reply} (gave up after {} attempts)", attempts));
                if wanted.failure {
                    failed.push(status(entry, Action::Failed, EnhancedCode(5, 4, 7), Some(&reply), None));
                }
                counts.1 += 1;
            } else {
                update.next_attempt = now.saturating_add(s.backoff(attempts)).min(expires);
                let warn_at = entry.created_at.saturating_add(s.delay_warning);
                if s.delay_warning > 0 && !leased.delay_warned && now >= warn_at && wanted.delay {
                    delayed.push(status(entry, Action::Delayed, enhanced_of(&reply), Some(&reply), Some(expires)));
                    update.delay_warned = true;
                }
                counts.2 += 1;
            }
            updates.push(update);
        }
        for stats in std::iter::once(&self.stats).chain(job.tally.as_deref()) {
            stats.add(counts.0, counts.1, counts.2);
        }
        self.count_attempts(counts, job.elapsed);
        let ids: Vec<i64> = updates.iter().map(|u| u.id).collect();
        let wants_notice = !(failed.is_empty() && delayed.is_empty() && relayed.is_empty());
        let message = match (message, wants_notice) {
            (Some(m), _) => Some(m),
            (None, true) => self.store.get_message(job.message_id).await.ok().flatten().map(Arc::new),
            (None, false) => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let notices = match &message {
                Some(m) if wants_notice => self.notices(m, &failed, &delayed, &relayed, now).await,
                _ => Vec::new(),
            };
            match self.store.record_delivery(updates.clone(), notices).await {
                Ok(()) => break,
                // A notice's queue id collided: draw new ones.
                Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                Err(e) if attempt < 5 => {
                    tracing::warn!(error = %e, "outbound: cannot record delivery outcomes; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbound: cannot record delivery outcomes; they retry after the lease");
                    break;
                }
            }
        }
        self.release(&ids);
    }

    /// SPEC 12: each recipient tried is an attempt, by its result; one tried over a
    /// connection also adds its transaction's duration to the histogram.
    fn count_attempts(&self, (delivered, bounced, deferred): (u64, u64, u64), elapsed: Option<Duration>) {
        for (result, n) in [("delivered", delivered), ("bounced", bounced), ("deferred", deferred)] {
            if n == 0 {
                continue;
            }
            self.metrics.delivery_attempts.with_label_values(&[result]).inc_by(n);
            if let Some(elapsed) = elapsed {
                let histogram = self.metrics.delivery_duration.with_label_values(&[result]);
                for _ in 0..n {
                    histogram.observe(elapsed.as_secs_f64());
                }
            }
        }
    }

    async fn notices(
        &self,
        message: &StoredMessage,
        failed: &[RecipientStatus],
        delayed: &[RecipientStatus],
        relayed: &[RecipientStatus],
        now: i64,
    ) -> Vec<NewMessage> {
        // RFC 3461 4.3: RET=HDRS asks for headers only; delays and successes send headers.
        let full = if message.envelope.dsn_ret.as_deref() == Some("HDRS") { Return::Headers } else { Return::Full };
        let mut out = Vec::new();
        for (statuses, ret) in [(failed, full), (delayed, Return::Headers), (relayed, Return::Headers)] {
            if statuses.is_empty() {
                continue;
            }
            match crate::rules::dsn::notice(self.store.as_ref(), &self.settings.hostname, message, statuses, ret, now)
                .await
            {
                Ok(Some(notice)) => {
                    tracing::info!(queue_id = %message.queue_id, notice = %notice.queue_id, to = %message.envelope.sender, "delivery status notification");
                    out.push(notice);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "outbound: cannot address a delivery notice"),
            }
        }
        out
    }
}

/// The client's view of a stored message and the recipients of one transaction.
fn outbound_message(message: &StoredMessage, entries: &[LeasedEntry]) -> OutboundMessage {
    let env = &message.envelope;
    // SPEC 3: AUTH=<identity> for mail we authenticated: the identity a trusted client
    // asserted, else the user who logged in; AUTH=<> when the client sent (or was reduced
    // to) AUTH=<>, and for everything else.
    let auth = match env.auth_param.as_deref() {
        Some("<>") => None,
        Some(asserted) => xtext_decode(asserted),
        None => env.authenticated_as.clone(),
    };
    OutboundMessage {
        sender: env.sender.clone(),
        recipients: entries
            .iter()
            .map(|l| OutboundRecipient {
                address: l.entry.recipient.clone(),
                notify: l.entry.dsn.notify.clone(),
                orcpt: l.entry.dsn.orcpt.clone(),
            })
            .collect(),
        data: Arc::new(message.data.clone()),
        ret: match env.dsn_ret.as_deref() {
            Some("FULL") => Some(DsnReturn::Full),
            Some("HDRS") => Some(DsnReturn::Headers),
            _ => None,
        },
        envid: env.dsn_envid.clone(),
        auth,
        smtputf8: env.smtputf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let settings = Settings::from_config(&Config::default());
        let waits: Vec<i64> = (1..=8).map(|n| settings.backoff(n)).collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]);
        assert_eq!(settings.backoff(u32::MAX), 14400);
    }

    #[test]
    fn notify_defaults_to_failure_and_delay() {
        let default = NotifyWanted::from_stored(None);
        assert!(default.failure && default.delay && !default.success);
        let never = NotifyWanted::from_stored(Some("NEVER"));
        assert!(!never.failure && !never.delay && !never.success);
        let success = NotifyWanted::from_stored(Some("SUCCESS,DELAY"));
        assert!(success.success && success.delay && !success.failure);
    }

    /// Two reversed sessions at once (two ODMR customers): each reports its own counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_held_deliveries_count_their_own_outcomes() {
        use vouchmail_store::{Delivery, Envelope, NewMessage, RecipientDsn, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let held = |n: usize, domain: &str| NewMessage {
            queue_id: format!("Q{domain}{n}"),
            envelope: Envelope { sender: "s@remote.test".into(), auth_results: "none".into(), ..Default::default() },
            received_at: now(),
            data: format!("Subject: {n}\r\n\r\nx\r\n").into_bytes(),
            spooled: None,
            deliveries: vec![(
                Delivery::Held { recipient: format!("u@{domain}"), domain: domain.into() },
                RecipientDsn::default(),
            )],
        };
        for (domain, count) in [("a.test", 5), ("b.test", 1)] {
            for n in 0..count {
                store.commit_message(held(n, domain)).await.unwrap();
            }
        }
        let delivery = HeldDelivery::new(&Config::default(), Arc::clone(&store)).unwrap();
        let session = |domain: &'static str| {
            let (store, delivery) = (Arc::clone(&store), &delivery);
            async move {
                let peer = vouchmail_testkit::smtp_peer::Peer::builder("127.0.0.1").start();
                let entries = store.lease_held(&[domain.to_string()], now(), now() + 60).await.unwrap();
                let stream = tokio::net::TcpStream::connect(peer.addr()).await.unwrap();
                let target = Target { host: format!("odmr:{domain}"), addr: peer.addr() };
                delivery.deliver_over(Box::new(stream), &[], &target, entries, false).await
            }
        };
        let (a, b) = tokio::join!(session("a.test"), session("b.test"));
        assert_eq!(a, Progress { delivered: 5, bounced: 0, deferred: 0 });
        assert_eq!(b, Progress { delivered: 1, bounced: 0, deferred: 0 });
        assert_eq!(delivery.engine.progress().delivered, 6, "the engine counts both");
    }

    #[test]
    fn auth_identity_for_the_next_hop() {
        let mut message = StoredMessage {
            id: 1,
            queue_id: "Q".into(),
            envelope: vouchmail_store::Envelope { sender: "a@x.test".into(), ..Default::default() },
            received_at: 0,
            data: b"x\r\n".to_vec(),
        };
        assert_eq!(outbound_message(&message, &[]).auth, None);
        message.envelope.authenticated_as = Some("alice@x.test".into());
        assert_eq!(outbound_message(&message, &[]).auth.as_deref(), Some("alice@x.test"));
        message.envelope.auth_param = Some("<>".into());
        assert_eq!(outbound_message(&message, &[]).auth, None);
        message.envelope.auth_param = Some("e+3Dmc2@x.test".into());
        assert_eq!(outbound_message(&message, &[]).auth.as_deref(), Some("e=mc2@x.test"));
    }
}
