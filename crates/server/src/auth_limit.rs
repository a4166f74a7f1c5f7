//! Failed-AUTH accounting per client IP and per account (SPEC 3): a growing delay on each
//! failure, and 454 4.7.0 once the limit within the window is reached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Debug)]
pub struct AuthLimiter {
    max_per_ip: u32,
    max_per_account: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
    by_account: Mutex<HashMap<String, Failures>>,
}

/// Longest delay before a failure reply.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl AuthLimiter {
    pub fn new(max_per_ip: u32, max_per_account: u32, window: Duration) -> AuthLimiter {
        AuthLimiter {
            max_per_ip,
            max_per_account,
            window,
            by_ip: Mutex::new(HashMap::new()),
            by_account: Mutex::new(HashMap::new()),
        }
    }

    fn current<K: std::hash::Hash + Eq>(&self, map: &Mutex<HashMap<K, Failures>>, key: &K) -> u32 {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|f| f.since.elapsed() < self.window).map(|f| f.count).unwrap_or(0)
    }

    /// Whether another attempt from `ip` for `account` must be refused for now.
    pub fn is_blocked(&self, ip: IpAddr, account: &str) -> bool {
        self.current(&self.by_ip, &ip) >= self.max_per_ip
            || self.current(&self.by_account, &account.to_lowercase()) >= self.max_per_account
    }

    /// Records an outcome; returns how long to wait before answering a failure.
    pub fn record(&self, ip: IpAddr, account: Option<&str>, success: bool) -> Duration {
        if success {
            // A success clears the account's count, not the IP's: a guesser that also owns
            // an account must not reset its own limit.
            if let Some(account) = account {
                self.by_account.lock().unwrap_or_else(|p| p.into_inner()).remove(&account.to_lowercase());
            }
            return Duration::ZERO;
        }
        let ip_count = bump(&self.by_ip, ip, self.window);
        let account_count = account.map(|a| bump(&self.by_account, a.to_lowercase(), self.window)).unwrap_or(0);
        let count = ip_count.max(account_count);
        // 250 ms, 500 ms, 1 s, ... up to MAX_DELAY.
        let delay = Duration::from_millis(250u64.saturating_mul(1u64 << count.saturating_sub(1).min(10)));
        delay.min(MAX_DELAY)
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Failures>>, key: K, window: Duration) -> u32 {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > SWEEP_AT {
        map.retain(|_, f| f.since.elapsed() < window);
    }
    let entry = map.entry(key).or_insert(Failures { count: 0, since: Instant::now() });
    if entry.since.elapsed() >= window {
        *entry = Failures { count: 0, since: Instant::now() };
    }
    entry.count += 1;
    entry.count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_per_ip_and_per_account_with_growing_delay() {
        let limiter = AuthLimiter::new(3, 2, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!limiter.is_blocked(a, "u@x"));
        let first = limiter.record(a, Some("u@x"), false);
        let second = limiter.record(b, Some("u@x"), false);
        assert!(second > first);
        // Two failures for the account, from any IP: the account is blocked.
        assert!(limiter.is_blocked(b, "U@x"));
        assert!(!limiter.is_blocked(b, "other@x"));
        limiter.record(a, Some("v@x"), false);
        limiter.record(a, None, false);
        assert!(limiter.is_blocked(a, "fresh@x"));
        assert!(limiter.record(a, None, false) <= MAX_DELAY);
    }

    #[test]
    fn window_expires() {
        let limiter = AuthLimiter::new(1, 1, Duration::from_millis(10));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        limiter.record(a, Some("u@x"), false);
        assert!(limiter.is_blocked(a, "u@x"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!limiter.is_blocked(a, "u@x"));
    }
}
