//! Queue ids: what a `250 ... queued as ID` reply, our Received fields and the logs name a
//! message by.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

/// Bits of an id taken by the sequence number; the other 40 are the time in milliseconds
/// since [`EPOCH_MILLIS`], which lasts until 2058.
const SEQUENCE_BITS: u32 = 24;
/// 2024-01-01T00:00:00Z.
const EPOCH_MILLIS: u128 = 1_704_067_200_000;

/// Sixteen hex digits that sort by time, like Postfix's long queue ids: the milliseconds
/// since 2024 (40 bits), then a sequence number (24 bits) that starts at random in each
/// process. Ids made one after the other
/// sort one after the other, so the store's indexes keyed by queue id (the message's, the
/// tracking events') take them at their end instead of on a random page each (issue 25:
/// every message dirtied a page of its own). Two processes (nodes sharing a store) collide
/// only if their sequences meet within the same millisecond; the store refuses a duplicate.
pub fn new_queue_id() -> String {
    static SEQUENCE: OnceLock<AtomicU32> = OnceLock::new();
    let sequence = SEQUENCE.get_or_init(|| {
        let mut start = [0u8; 4];
        let _ = getrandom::getrandom(&mut start);
        AtomicU32::new(u32::from_be_bytes(start))
    });
    let millis = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let millis = (millis.saturating_sub(EPOCH_MILLIS) as u64) & ((1 << (64 - SEQUENCE_BITS)) - 1);
    let next = u64::from(sequence.fetch_add(1, Ordering::Relaxed)) & ((1 << SEQUENCE_BITS) - 1);
    let id = (millis << SEQUENCE_BITS) | next;
    format!("{id:016X}")
}

#[cfg(test)]
mod tests {
    use super::new_queue_id;

    /// Sixteen upper-case hex digits, each id after the one before.
    #[test]
    fn ids_are_sixteen_hex_digits_in_the_order_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_queue_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // The sequence may wrap once in a run; past that point the order holds again.
        let out_of_order = ids.windows(2).filter(|w| w[0] >= w[1]).count();
        assert!(out_of_order <= 1, "{out_of_order} ids sorted before the one made before them");
    }
}
