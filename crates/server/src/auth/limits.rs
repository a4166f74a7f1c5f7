//! Failed-AUTH accounting per client network and per account (SPEC 3): a growing delay on
//! each failure, and 454 4.7.0 once the limit within the window is reached.
//!
//! The keys are chosen by whoever connects (any address of an IPv6 /64, any account name),
//! so both maps have a hard cap: expired entries are swept regularly, and when a map is
//! still full the entries nearest to expiry make room.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vouchmail_store::{Store, StoreError};

use crate::support::time::unix_now;

/// Longest delay before a failure reply.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Entries each map keeps at most.
pub const MAX_ENTRIES: usize = 10_000;
/// Expired entries are swept at least this often (more often with a shorter window).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The network a client is counted by: its IPv4 address, or the /64 of its IPv6 address,
/// since one IPv6 host usually has a whole /64 to pick addresses from (RFC 4291 2.5.1).
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Start of the window the count belongs to.
    since: Instant,
}

/// Failure counts by key, at most `capacity` of them.
#[derive(Debug)]
struct Counts<K> {
    map: HashMap<K, Failures>,
    capacity: usize,
    last_sweep: Instant,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(capacity: usize) -> Counts<K> {
        Counts { map: HashMap::new(), capacity: capacity.max(1), last_sweep: Instant::now() }
    }

    fn current(&self, key: &K, window: Duration) -> u32 {
        self.map.get(key).filter(|f| f.since.elapsed() < window).map(|f| f.count).unwrap_or(0)
    }

    fn bump(&mut self, key: K, window: Duration) -> u32 {
        if self.last_sweep.elapsed() >= window.min(SWEEP_EVERY) {
            self.sweep(window);
        }
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.sweep(window);
            if self.map.len() >= self.capacity {
                self.evict_oldest();
            }
        }
        let entry = self.map.entry(key).or_insert(Failures { count: 0, since: Instant::now() });
        if entry.since.elapsed() >= window {
            *entry = Failures { count: 0, since: Instant::now() };
        }
        entry.count = entry.count.saturating_add(1);
        entry.count
    }

    fn sweep(&mut self, window: Duration) {
        self.map.retain(|_, f| f.since.elapsed() < window);
        self.last_sweep = Instant::now();
    }

    /// Drops the eighth of the entries whose windows started first (they expire first):
    /// one scan makes room for many new keys.
    fn evict_oldest(&mut self) {
        let mut starts: Vec<Instant> = self.map.values().map(|f| f.since).collect();
        let nth = (starts.len() / 8).min(starts.len().saturating_sub(1));
        let (_, cutoff, _) = starts.select_nth_unstable(nth);
        let cutoff = *cutoff;
        self.map.retain(|_, f| f.since > cutoff);
    }
}

pub struct AuthLimiter {
    max_per_ip: u32,
    max_per_account: u32,
    /// `[auth] max_failures_per_verifier` (SPEC 8.2 step 3).
    max_per_verifier: u32,
    window: Duration,
    by_ip: Mutex<Counts<IpAddr>>,
    /// Keyed by a keyed hash of the lower-cased name: fixed-size keys however long the
    /// names a client sends, and collisions nobody can aim for.
    by_account: Mutex<Counts<u64>>,
    /// Failures relayed by each verifier's network (X-RCRAM-VERIFY, SPEC 8.2 step 3): a
    /// budget of its own, since a verifier speaks for many users.
    by_verifier: Mutex<Counts<IpAddr>>,
    hasher: RandomState,
    /// Where the failures of every node are counted too (SPEC 11): this node's are
    /// written there, and an attempt is refused when the nodes together reach a limit.
    shared: Option<Arc<dyn Store>>,
}

/// `[auth] max_failures_per_verifier` by default (SPEC 8.2 step 3: 50 per window).
pub const DEFAULT_MAX_PER_VERIFIER: u32 = 50;
/// How many of a verifier's relayed failures weigh as one of a client's in the delay
/// before a failure reply (it speaks for many clients, which it slows itself).
const VERIFIER_DELAY_FACTOR: u32 = 10;

impl AuthLimiter {
    pub fn new(max_per_ip: u32, max_per_account: u32, window: Duration) -> AuthLimiter {
        AuthLimiter::with_capacity(max_per_ip, max_per_account, window, MAX_ENTRIES)
    }

    /// As `new`, keeping at most `capacity` entries per map.
    pub fn with_capacity(max_per_ip: u32, max_per_account: u32, window: Duration, capacity: usize) -> AuthLimiter {
        AuthLimiter {
            max_per_ip,
            max_per_account,
            max_per_verifier: DEFAULT_MAX_PER_VERIFIER,
            window,
            by_ip: Mutex::new(Counts::new(capacity)),
            by_account: Mutex::new(Counts::new(capacity)),
            by_verifier: Mutex::new(Counts::new(capacity)),
            hasher: RandomState::new(),
            shared: None,
        }
    }

    /// Sets `[auth] max_failures_per_verifier` (SPEC 8.2 step 3).
    pub fn with_max_per_verifier(mut self, max_per_verifier: u32) -> AuthLimiter {
        self.max_per_verifier = max_per_verifier;
        self
    }

    /// Counts failures in `store` too, with every node that uses it (SPEC 11).
    pub fn shared_through(mut self, store: Arc<dyn Store>) -> AuthLimiter {
        self.shared = Some(store);
        self
    }

    /// Writes this failure where every node counts it; the attempt's reply does not wait
    /// for it (a store that is down leaves the local counts, which still hold).
    fn share(&self, names: Vec<String>) {
        let (Some(store), Ok(runtime)) = (&self.shared, tokio::runtime::Handle::try_current()) else { return };
        let store = Arc::clone(store);
        let now = unix_now();
        let forget_before = now - self.window.as_secs() as i64;
        runtime.spawn(async move {
            if let Err(e) = store.add_events(names, now, forget_before).await {
                tracing::warn!(error = %e, "cannot record a failed AUTH for the other nodes");
            }
        });
    }

    /// Whether the client's network, and the account, are over their limits counting the
    /// failures of every node (SPEC 11): (network, account). Both false without a shared
    /// store.
    pub async fn shared_blocked(&self, ip: IpAddr, account: &str) -> Result<(bool, bool), StoreError> {
        let Some(store) = &self.shared else { return Ok((false, false)) };
        let since = unix_now() - self.window.as_secs() as i64;
        let counts = store.count_events(vec![network_name(ip), account_name(account)], since).await?;
        let over = |n: usize, max: u32| counts.get(n).is_some_and(|c| *c >= u64::from(max));
        Ok((over(0, self.max_per_ip), over(1, self.max_per_account)))
    }

    fn account_key(&self, account: &str) -> u64 {
        self.hasher.hash_one(account.to_lowercase())
    }

    /// Whether the client's network has hit its failure limit: every attempt from it is
    /// refused for now.
    pub fn ip_blocked(&self, ip: IpAddr) -> bool {
        let counts = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        counts.current(&client_network(ip), self.window) >= self.max_per_ip
    }

    /// Whether the account has hit its failure limit. It holds only for client addresses
    /// that never logged in to the account (the caller knows the familiar ones), so that
    /// strangers' guesses cannot lock its owner out.
    pub fn account_blocked(&self, account: &str) -> bool {
        let key = self.account_key(account);
        let counts = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        counts.current(&key, self.window) >= self.max_per_account
    }

    /// Records a failed attempt; returns how long to wait before answering it. A client
    /// familiar to the account waits by its own failures only, not by strangers'.
    ///
    /// Successes reset nothing: not the network's count (a guesser that owns an account
    /// must not reset its own limit), and not the account's (its owner logging in from a
    /// familiar address would otherwise hand strangers a fresh set of guesses).
    pub fn record_failure(&self, ip: IpAddr, account: Option<&str>, familiar: bool) -> Duration {
        let ip_count = self.by_ip.lock().unwrap_or_else(|p| p.into_inner()).bump(client_network(ip), self.window);
        let account_count = match account {
            Some(account) => {
                let key = self.account_key(account);
                self.by_account.lock().unwrap_or_else(|p| p.into_inner()).bump(key, self.window)
            }
            None => 0,
        };
        let mut shared = vec![network_name(ip)];
        shared.extend(account.map(account_name));
        self.share(shared);
        let count = if familiar { ip_count } else { ip_count.max(account_count) };
        delay_after(count)
    }

    /// Records a failed X-RCRAM-VERIFY exchange (a wrong answer or a cancel, SPEC 8.2
    /// step 3): for the account, and against the verifier's own budget, not the client
    /// limit of its network. The verifier stands for all its clients, which it counts by
    /// their own IPs; counting it as one client would let one stranger there block every
    /// user of it. A verifier is never familiar to an account, so it always waits.
    pub fn record_relayed_failure(&self, verifier: IpAddr, account: &str) -> Duration {
        let key = self.account_key(account);
        let account_count = self.by_account.lock().unwrap_or_else(|p| p.into_inner()).bump(key, self.window);
        let verifier_count =
            self.by_verifier.lock().unwrap_or_else(|p| p.into_inner()).bump(client_network(verifier), self.window);
        self.share(vec![account_name(account)]);
        delay_after(account_count.max(verifier_count / VERIFIER_DELAY_FACTOR))
    }

    /// Whether a verifier has relayed `max_failures_per_verifier` failures within the
    /// window: every X-RCRAM-VERIFY from it is refused for now, whatever the address
    /// (SPEC 8.2 step 3).
    pub fn verifier_blocked(&self, verifier: IpAddr) -> bool {
        let counts = self.by_verifier.lock().unwrap_or_else(|p| p.into_inner());
        counts.current(&client_network(verifier), self.window) >= self.max_per_verifier
    }

    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        let ips = self.by_ip.lock().unwrap_or_else(|p| p.into_inner()).map.len();
        let accounts = self.by_account.lock().unwrap_or_else(|p| p.into_inner()).map.len();
        (ips, accounts)
    }
}

/// The shared store's name for a network's failures.
fn network_name(ip: IpAddr) -> String {
    format!("auth:net:{}", client_network(ip))
}

/// The shared store's name for an account's failures: a digest of the lower-cased name, a
/// fixed size however long the name a client sent, and the same on every node.
fn account_name(account: &str) -> String {
    let digest = Sha256::digest(account.to_lowercase().as_bytes());
    format!("auth:account:{}", crate::net::tls::hex(&digest[..16]))
}

/// The wait before answering the `count`th failure: 250 ms, 500 ms, 1 s, ... up to
/// MAX_DELAY.
fn delay_after(count: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << count.saturating_sub(1).min(10))).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {

    /// SPEC 11: two nodes on one store. Failures on node A put the network and the account
    /// over their limits on node B too, which counted none itself.
    #[tokio::test]
    async fn failures_on_one_node_count_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(vouchmail_store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let window = Duration::from_secs(60);
        let a = AuthLimiter::new(3, 2, window).shared_through(Arc::clone(&store));
        let b = AuthLimiter::new(3, 2, window).shared_through(Arc::clone(&store));
        let (client, other) = (ip("192.0.2.1"), ip("192.0.2.9"));
        a.record_failure(client, Some("U@x.test"), false);
        a.record_failure(other, Some("u@x.test"), false);
        let mut seen = (false, false);
        for _ in 0..100 {
            seen = b.shared_blocked(other, "u@X.TEST").await.unwrap();
            if seen.1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen, (false, true), "the account is over its limit on node B");
        assert!(!b.account_blocked("u@x.test"), "node B counted nothing itself");
        a.record_failure(client, None, false);
        a.record_failure(client, None, false);
        for _ in 0..100 {
            if b.shared_blocked(client, "v@x.test").await.unwrap().0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the network's failures on node A did not count on node B");
    }
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_per_ip_and_per_account_with_growing_delay() {
        let limiter = AuthLimiter::new(3, 2, Duration::from_secs(60));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!(!limiter.ip_blocked(a) && !limiter.account_blocked("u@x"));
        let first = limiter.record_failure(a, Some("u@x"), false);
        let second = limiter.record_failure(b, Some("u@x"), false);
        assert!(second > first);
        // Two failures for the account, from any IP: the account is blocked.
        assert!(limiter.account_blocked("U@x"));
        assert!(!limiter.account_blocked("other@x"));
        assert!(!limiter.ip_blocked(b));
        limiter.record_failure(a, Some("v@x"), false);
        assert!(!limiter.ip_blocked(a));
        limiter.record_failure(a, None, false);
        assert!(limiter.ip_blocked(a));
        assert!(limiter.record_failure(a, None, false) <= MAX_DELAY);
    }

    #[test]
    fn a_verifiers_relayed_failures_count_for_the_account_and_against_the_verifier() {
        let limiter = AuthLimiter::new(2, 2, Duration::from_secs(60)).with_max_per_verifier(6);
        let verifier = ip("192.0.2.1");
        for account in ["u@x", "v@x", "w@x"] {
            assert!(limiter.record_relayed_failure(verifier, account) > Duration::ZERO);
        }
        // One failure each: no account over its limit, and the verifier's network is no
        // client over its limit either.
        assert!(["u@x", "v@x", "w@x"].iter().all(|a| !limiter.account_blocked(a)));
        assert!(!limiter.ip_blocked(verifier) && !limiter.verifier_blocked(verifier));
        limiter.record_relayed_failure(verifier, "u@x");
        assert!(limiter.account_blocked("u@x"));
        assert_eq!(limiter.entries().0, 0, "no client network counted");
        // Never familiar: always slowed, by the account's failures.
        assert!(limiter.record_relayed_failure(verifier, "u@x") >= Duration::from_secs(1));
        // Its own budget, max_failures_per_verifier: the sixth failure blocks it.
        assert!(!limiter.verifier_blocked(verifier));
        limiter.record_relayed_failure(verifier, "spray@x");
        assert!(limiter.verifier_blocked(verifier) && !limiter.verifier_blocked(ip("198.51.100.1")));
        assert!(!limiter.ip_blocked(verifier), "as a client it is not blocked");
        assert_eq!(AuthLimiter::new(2, 2, Duration::from_secs(60)).max_per_verifier, DEFAULT_MAX_PER_VERIFIER);
    }

    #[test]
    fn a_familiar_client_waits_by_its_own_failures() {
        let limiter = AuthLimiter::new(100, 100, Duration::from_secs(60));
        for n in 1..=6 {
            limiter.record_failure(ip(&format!("192.0.2.{n}")), Some("u@x"), false);
        }
        let stranger = limiter.record_failure(ip("192.0.2.7"), Some("u@x"), false);
        let familiar = limiter.record_failure(ip("198.51.100.1"), Some("u@x"), true);
        assert_eq!(stranger, MAX_DELAY);
        assert_eq!(familiar, Duration::from_millis(250));
    }

    #[test]
    fn window_expires() {
        let limiter = AuthLimiter::new(1, 1, Duration::from_millis(10));
        let a = ip("192.0.2.1");
        limiter.record_failure(a, Some("u@x"), false);
        assert!(limiter.ip_blocked(a) && limiter.account_blocked("u@x"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!limiter.ip_blocked(a) && !limiter.account_blocked("u@x"));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let limiter = AuthLimiter::new(2, 100, Duration::from_secs(60));
        limiter.record_failure(ip("2001:db8:1:2::1"), None, false);
        limiter.record_failure(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), None, false);
        assert!(limiter.ip_blocked(ip("2001:db8:1:2::42")));
        assert!(!limiter.ip_blocked(ip("2001:db8:1:3::1")));
        // An IPv4 client on a dual-stack socket is counted by its IPv4 address.
        limiter.record_failure(ip("::ffff:192.0.2.9"), None, false);
        limiter.record_failure(ip("192.0.2.9"), None, false);
        assert!(limiter.ip_blocked(ip("192.0.2.9")) && limiter.ip_blocked(ip("::ffff:192.0.2.9")));
        assert!(!limiter.ip_blocked(ip("192.0.2.10")));
        assert_eq!(client_network(ip("2001:db8::1:2:3:4")), ip("2001:db8::"));
        assert_eq!(client_network(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let limiter = AuthLimiter::with_capacity(1, 1, Duration::from_secs(3600), 100);
        let long_name = "x".repeat(10_000);
        for n in 0..5_000u32 {
            let client = IpAddr::V6(Ipv6Addr::from(u128::from(n) << 64));
            limiter.record_failure(client, Some(&format!("{n}{long_name}@x")), false);
            let (ips, accounts) = limiter.entries();
            assert!(ips <= 100 && accounts <= 100, "{ips} {accounts}");
        }
        // The newest entries are kept: the last client and account are still blocked.
        assert!(limiter.ip_blocked(IpAddr::V6(Ipv6Addr::from(4_999u128 << 64))));
        assert!(limiter.account_blocked(&format!("4999{long_name}@x")));
        assert!(!limiter.ip_blocked(IpAddr::V6(Ipv6Addr::from(0u128))));
    }

    #[test]
    fn expired_entries_are_swept() {
        let limiter = AuthLimiter::new(5, 5, Duration::from_millis(10));
        for n in 0..50 {
            limiter.record_failure(ip(&format!("192.0.2.{n}")), Some(&format!("u{n}@x")), false);
        }
        assert_eq!(limiter.entries(), (50, 50));
        std::thread::sleep(Duration::from_millis(20));
        limiter.record_failure(ip("198.51.100.1"), Some("v@x"), false);
        assert_eq!(limiter.entries(), (1, 1));
    }
}
