//! Queue ids: what a `250 ... queued as ID` reply, our Received fields and the logs name a
//! message by.

use std::time::SystemTime;

/// Sixteen hex digits from the OS random source, like Postfix's long queue ids.
pub fn new_queue_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Never expected; the time keeps ids distinct enough, and the store refuses duplicates.
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = (nanos as u64).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
