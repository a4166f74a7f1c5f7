//! Connection limits, in total and per client IP (SPEC 3), and the moment a burst of
//! connections is over (issue 25: when memory they freed can go back to the system).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Called when a burst of connections is over; see [`on_quiet`].
static QUIET_HOOK: OnceLock<fn()> = OnceLock::new();
/// The connections of every listener.
static ALL: Bursts = Bursts::new();

/// Sets the function called when the connections open over all listeners have fallen to
/// half of the most open at once since its last call, from at least [`Bursts::MIN_PEAK`]:
/// the memory the closed sessions freed is then worth giving back to the system, which
/// the allocator would otherwise keep. Called on the thread that closed a connection, so
/// it must only signal. Set once; false if it was set already.
pub fn on_quiet(hook: fn()) -> bool {
    QUIET_HOOK.set(hook).is_ok()
}

/// Connections open and the most open at once, to tell when a burst is over.
#[derive(Debug)]
struct Bursts {
    open: AtomicUsize,
    /// The most open at once since the last burst ended.
    peak: AtomicUsize,
}

impl Bursts {
    /// A smaller peak is not worth a call: about 64 sessions' memory (a few hundred KiB).
    const MIN_PEAK: usize = 64;

    const fn new() -> Bursts {
        Bursts { open: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    fn opened(&self) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    /// True when this closing ends a burst: the open connections are down to half the
    /// peak. The peak then starts over from them, and only one closing gets true for it.
    fn closed(&self) -> bool {
        let open = self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let peak = self.peak.load(Ordering::Relaxed);
        peak >= Self::MIN_PEAK
            && open <= peak / 2
            && self.peak.compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Counts open connections; a [`ConnectionSlot`] is held for each and frees itself on drop.
#[derive(Debug)]
pub struct ConnectionLimiter {
    /// Changed by a reload (SIGHUP); connections open beyond a lowered limit stay.
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyTotal,
    TooManyFromIp,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// New limits for the connections accepted from now on (a reload).
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.0 >= self.max_total.load(Ordering::Relaxed) {
            return Err(Refusal::TooManyTotal);
        }
        let from_ip = open.1.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip.load(Ordering::Relaxed) {
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        open.0 += 1;
        ALL.opened();
        Ok(ConnectionSlot { limiter: Arc::clone(self), ip })
    }

    pub fn open_connections(&self) -> usize {
        self.open.lock().map(|o| o.0).unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        drop(open);
        if ALL.closed() {
            if let Some(hook) = QUIET_HOOK.get() {
                hook();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limiter.try_acquire(a).unwrap();
        let _s2 = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.try_acquire(a).unwrap_err(), Refusal::TooManyFromIp);
        let _s3 = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(b).unwrap_err(), Refusal::TooManyTotal);
        drop(s1);
        assert_eq!(limiter.open_connections(), 2);
        limiter.try_acquire(a).unwrap();
    }

    #[test]
    fn a_burst_ends_when_half_its_peak_has_closed() {
        let bursts = Bursts::new();
        // Too few to count as a burst.
        for _ in 0..Bursts::MIN_PEAK - 1 {
            bursts.opened();
        }
        assert!((0..Bursts::MIN_PEAK - 1).all(|_| !bursts.closed()));
        for _ in 0..100 {
            bursts.opened();
        }
        // 100 open at the peak: the 50th closing ends it, once.
        let ends: Vec<bool> = (0..100).map(|_| bursts.closed()).collect();
        assert_eq!(ends.iter().filter(|&&end| end).count(), 1);
        assert!(ends[49]);
        // The peak started over from 50: under the minimum, no more calls.
        for _ in 0..20 {
            bursts.opened();
        }
        assert!((0..20).all(|_| !bursts.closed()));
        assert_eq!(bursts.open.load(Ordering::Relaxed), 0);
    }
}
