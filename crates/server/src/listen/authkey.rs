//! The VERIFY listeners of the Authentication Server (SPEC 7.2): TCP and UDP on each
//! address, thin tokio shells around the sans-I/O codec and session of
//! `vouchmail_proto::authkey`, answering from the store.

use crate::support::error::{Error, ErrorKind};
use crate::support::time::unix_now;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vouchmail_proto::authkey::{parse_datagram, udp_reply, Event, Request, Response, Session, Verdict};
use vouchmail_store::{Store, StoreResult, VerifyLogEntry};

use crate::config;
use crate::listen::limits::ConnectionLimiter;
use crate::listen::limits::Refusal;
use crate::listen::Service;
use crate::support::metrics::{ListenerMetrics, Metrics};
use prometheus::IntCounter;

/// Per-source-IP token buckets for UDP: a spoofed flood costs one map entry per source,
/// and the map is bounded.
#[derive(Debug)]
pub struct UdpRateLimit {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Sources tracked at most; past this, full buckets are forgotten, and if none is, new
/// sources are refused until some are.
const MAX_TRACKED_SOURCES: usize = 10_000;

impl UdpRateLimit {
    pub fn new(rate_per_sec: u32, burst: u32) -> UdpRateLimit {
        UdpRateLimit {
            rate: f64::from(rate_per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED_SOURCES {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the VERIFY listeners share.
pub struct VerifyContext {
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub udp_limit: UdpRateLimit,
    pub idle_timeout: Duration,
    keys: KeyCache,
    /// To the VERIFY log writer; full: the entry is dropped (the tracing line remains).
    log: mpsc::Sender<VerifyLogEntry>,
    /// The server's counters (SPEC 12): TCP sessions, and every request by result.
    metrics: ListenerMetrics,
    verified: VerifyCounters,
}

/// The VERIFY counters by result, looked up once (SPEC 12).
struct VerifyCounters {
    valid: IntCounter,
    invalid: IntCounter,
    /// A malformed request, answered ERROR.
    error: IntCounter,
    /// The store failed: no answer (UDP) or the connection closed (TCP).
    unavailable: IntCounter,
}

impl VerifyCounters {
    fn new(metrics: &Metrics) -> VerifyCounters {
        let counter = |result| metrics.verify_requests.with_label_values(&[result]);
        VerifyCounters {
            valid: counter("valid"),
            invalid: counter("invalid"),
            error: counter("error"),
            unavailable: counter("unavailable"),
        }
    }
}

/// An address's unexpired keys, as read from the store at most `KEY_CACHE_TTL` ago: a busy
/// sender's VERIFYs need no store read each. A key made by `vouchmail authkey rotate` (in
/// another process) answers VALIDKEY within that time; expiry is checked on every answer.
#[derive(Default)]
struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, Keys)>>,
}

/// Keys with their expiry (Unix time).
type Keys = Arc<Vec<(String, i64)>>;

const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Addresses cached at most; past it the cache starts over (a flood of made-up addresses
/// costs store reads, never memory).
const KEY_CACHE_MAX: usize = 65_536;

fn verdict(keys: &[(String, i64)], key: &str, now: i64) -> Verdict {
    vouchmail_proto::authkey::check_key(keys.iter().map(|(k, expires_at)| (k.as_str(), *expires_at)), key, now)
}

impl KeyCache {
    /// The address's keys if read less than `KEY_CACHE_TTL` ago.
    fn cached(&self, address: &str) -> Option<Keys> {
        let entries = self.lock();
        let (at, keys) = entries.get(address).or_else(|| entries.get(&address.to_lowercase()))?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| Arc::clone(keys))
    }

    async fn get(&self, store: &dyn Store, address: &str, now: i64) -> StoreResult<Keys> {
        if let Some(keys) = self.cached(address) {
            return Ok(keys);
        }
        let address = address.to_lowercase();
        let fresh = Instant::now();
        let keys: Keys =
            Arc::new(store.authkeys(&address, now).await?.into_iter().map(|k| (k.key, k.expires_at)).collect());
        let mut entries = self.lock();
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(address, (fresh, Arc::clone(&keys)));
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Keys)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Entries waiting for the VERIFY log writer at most.
const LOG_QUEUE: usize = 4096;
/// Log writes in flight at once (they share group commits), and rows per write at most.
const LOG_WRITES: usize = 4;
const LOG_BATCH: usize = 1024;

impl VerifyContext {
    /// The context, and the VERIFY log writer to run until the senders are gone.
    pub fn new(
        config: &config::AuthKey,
        store: Arc<dyn Store>,
        metrics: &Arc<Metrics>,
    ) -> (Arc<VerifyContext>, impl std::future::Future<Output = ()>) {
        let (log, rx) = mpsc::channel(LOG_QUEUE);
        let context = Arc::new(VerifyContext {
            store: Arc::clone(&store),
            limiter: ConnectionLimiter::new(config.max_connections, config.max_connections_per_ip),
            udp_limit: UdpRateLimit::new(config.udp_rate_per_sec, config.udp_burst),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            keys: KeyCache::default(),
            log,
            metrics: ListenerMetrics::new(metrics, "authkey"),
            verified: VerifyCounters::new(metrics),
        });
        (context, log_writer(store, rx))
    }

    /// SPEC 7.2: VALIDKEY when the key is one of the address's unexpired keys. Every key
    /// is compared in constant time, with no early exit.
    async fn verify(&self, request: &Request) -> StoreResult<Verdict> {
        let now = unix_now();
        let keys = self.keys.get(self.store.as_ref(), request.address(), now).await?;
        Ok(verdict(&keys, request.key(), now))
    }

    /// The answer from the key cache alone, when it holds the address (no store read).
    fn cached_verify(&self, request: &Request) -> Option<Verdict> {
        let now = unix_now();
        self.keys.cached(request.address()).map(|keys| verdict(&keys, request.key(), now))
    }

    /// SPEC 7.1: every VERIFY is logged for reports.
    fn record(&self, transport: &str, peer: SocketAddr, address: &str, result: &str) {
        tracing::info!(transport, %peer, %address, result, "VERIFY");
        match result {
            "VALIDKEY" => self.verified.valid.inc(),
            "INVALIDKEY" => self.verified.invalid.inc(),
            _ => self.verified.error.inc(),
        }
        let entry = VerifyLogEntry {
            at: unix_now(),
            peer: format!("{transport} {peer}"),
            address: address.into(),
            result: result.into(),
        };
        if self.log.try_send(entry).is_err() {
            tracing::warn!(%peer, "VERIFY log queue full; entry dropped");
        }
    }
}

async fn log_writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<VerifyLogEntry>) {
    let mut writes = tokio::task::JoinSet::new();
    while let Some(first) = rx.recv().await {
        // What queued up meanwhile goes in the same transaction: one fsync for many rows.
        let mut entries = vec![first];
        while entries.len() < LOG_BATCH {
            match rx.try_recv() {
                Ok(entry) => entries.push(entry),
                Err(_) => break,
            }
        }
        while writes.len() >= LOG_WRITES {
            writes.join_next().await;
        }
        let store = Arc::clone(&store);
        writes.spawn(async move {
            if let Err(e) = store.log_verify(entries).await {
                tracing::warn!(error = %e, "cannot write the VERIFY log");
            }
        });
    }
    while writes.join_next().await.is_some() {}
}

/// Binds the UDP socket of a VERIFY address (the TCP listener's, so port 0 gets one port).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let socket = std::net::UdpSocket::bind(addr)
        .map_err(|e| Error::new(ErrorKind::Network, format!("cannot bind UDP {addr}: {e}")))?;
    socket.set_nonblocking(true).map_err(|e| Error::new(ErrorKind::Network, e.to_string()))?;
    UdpSocket::from_std(socket).map_err(|e| Error::new(ErrorKind::Network, format!("UDP {addr}: {e}")))
}

/// UDP: one datagram in, at most one out (SPEC 7.2, the codec's `udp_reply` rule).
pub async fn serve_udp(socket: UdpSocket, context: Arc<VerifyContext>, mut shutdown: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    // Requests are answered concurrently (each waits for the store), at most this many at
    // once; past it the loop stops reading and the kernel's buffer holds the rest.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(UDP_IN_FLIGHT));
    // Larger than 512 octets, so that an oversized datagram is seen as such.
    let mut buf = vec![0u8; 2048];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (n, peer) = match received {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "VERIFY recv failed");
                continue;
            }
        };
        if !context.udp_limit.allow(peer.ip(), Instant::now()) {
            tracing::debug!(%peer, "VERIFY datagram over the rate limit; dropped");
            continue;
        }
        let datagram = &buf[..n];
        let Some(parsed) = parse_datagram(datagram) else {
            tracing::debug!(%peer, len = n, "VERIFY datagram over 512 octets; no reply");
            continue;
        };
        let request = match parsed {
            Ok(request) => request,
            Err(e) => {
                context.record("udp", peer, "-", &format!("ERROR {}", e.reason().as_str()));
                send_udp_reply(&socket, datagram, &Response::Error(e.reply()), peer).await;
                continue;
            }
        };
        // The common case, a sender seen within the last second: answered at once.
        if let Some(verdict) = context.cached_verify(&request) {
            context.record("udp", peer, request.address(), verdict.as_str());
            send_udp_reply(&socket, datagram, &Response::Reply(request.reply(verdict)), peer).await;
            continue;
        }
        let permit = tokio::select! {
            p = Arc::clone(&in_flight).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (socket, context, datagram) = (Arc::clone(&socket), Arc::clone(&context), datagram.to_vec());
        tokio::spawn(async move {
            let _permit = permit;
            match context.verify(&request).await {
                Ok(verdict) => {
                    context.record("udp", peer, request.address(), verdict.as_str());
                    send_udp_reply(&socket, &datagram, &Response::Reply(request.reply(verdict)), peer).await;
                }
                // No answer: the asking server retries, then tries TCP (temperror).
                Err(e) => {
                    context.verified.unavailable.inc();
                    tracing::error!(error = %e, %peer, "store error answering VERIFY");
                }
            }
        });
    }
}

/// VERIFY answers in flight at once on one UDP socket.
const UDP_IN_FLIGHT: usize = 64;

/// SPEC 7.2: the reply, only when the codec's size rule allows it.
async fn send_udp_reply(socket: &UdpSocket, datagram: &[u8], answer: &Response, peer: SocketAddr) {
    if let Some(reply) = udp_reply(datagram, answer) {
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::debug!(error = %e, %peer, "VERIFY reply not sent");
        }
    }
}

/// VERIFY over TCP, within the connection limits.
impl Service for VerifyContext {
    fn limiter(&self) -> &Arc<ConnectionLimiter> {
        &self.limiter
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
        run_connection(stream, peer, &self, shutdown).await;
    }

    async fn refuse(self: Arc<Self>, _stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        tracing::warn!(%peer, ?refusal, "VERIFY connection refused");
    }
}

async fn run_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    context: &VerifyContext,
    mut shutdown: watch::Receiver<bool>,
) {
    // SPEC 12: open and total VERIFY sessions over TCP.
    let _counted = context.metrics.session();
    let mut session = Session::new();
    let mut buf = vec![0u8; 4096];
    let mut deadline = Instant::now() + context.idle_timeout;
    loop {
        let mut answered = false;
        while let Some(Event::Verify(request)) = session.poll_event() {
            let verdict = match context.verify(&request).await {
                Ok(verdict) => verdict,
                Err(e) => {
                    context.verified.unavailable.inc();
                    tracing::error!(error = %e, %peer, "store error answering VERIFY; closing");
                    let _ = stream.write_all(&session.take_output()).await;
                    return;
                }
            };
            context.record("tcp", peer, request.address(), verdict.as_str());
            if session.answer(verdict).is_err() {
                return;
            }
            answered = true;
        }
        for error in session.take_errors() {
            context.record("tcp", peer, "-", &error);
        }
        let output = session.take_output();
        if !output.is_empty() {
            answered = true;
            if stream.write_all(&output).await.is_err() {
                return;
            }
        }
        if answered {
            deadline = Instant::now() + context.idle_timeout;
        }
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(%peer, "VERIFY: no complete request within the timeout; closing");
                return;
            }
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => session.feed(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_rate_limit_refills() {
        let limit = UdpRateLimit::new(1, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!(limit.allow(ip, t));
        assert!(limit.allow(ip, t));
        assert!(!limit.allow(ip, t));
        assert!(limit.allow("192.0.2.2".parse().unwrap(), t));
        assert!(limit.allow(ip, t + Duration::from_secs(1)));
    }
}
