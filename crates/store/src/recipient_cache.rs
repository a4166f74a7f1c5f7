//! RCPT's lookups (`lookup_recipient`), kept for a moment by each backend (issue 25: a store
//! read per RCPT, a hop to a blocking thread and two statements each, was a third of the
//! cost of accepting a message).
//!
//! The rule: a record is reused for at most [`RECIPIENT_TTL`] after it was read, and only
//! when it names an account without a quota in one of our domains. Every change this store
//! makes to domains, accounts, aliases or held domains empties the cache once it is
//! committed, so what this process changes (the admin API, the server's own rules) is seen
//! at once (on PostgreSQL, a change whose caller stopped waiting before it ended is seen
//! as another node's). A change made elsewhere (the CLI, another node on the same PostgreSQL database,
//! SPEC 11) is seen at most [`RECIPIENT_TTL`] late, with nothing to invalidate across
//! processes: a new account, domain or alias and an unknown address are always read from
//! the database (nothing refused is remembered); an account removed elsewhere may pass
//! RCPT within that second, but the commit refuses its message (its mailbox rows need the
//! account), so no 250 is given for it; a policy or quota set elsewhere applies up to a
//! second late. An account with a quota is always read fresh: its `used_bytes` changes
//! with every delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::RecipientRecord;

/// How long a looked-up recipient is reused without asking the database again.
const RECIPIENT_TTL: Duration = Duration::from_secs(1);

/// Addresses kept at most; past it, the expired ones go, and if that is not enough, all.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct RecipientCache {
    entries: Mutex<HashMap<String, (Instant, RecipientRecord)>>,
    /// Counts the changes committed: a record read before one is not kept after it.
    generation: AtomicU64,
}

impl RecipientCache {
    /// The record of `address` (lowercase) while it is fresh.
    pub(crate) fn get(&self, address: &str) -> Option<RecipientRecord> {
        let entries = self.entries.lock().ok()?;
        let (read, record) = entries.get(address)?;
        (read.elapsed() < RECIPIENT_TTL).then(|| record.clone())
    }

    /// To pass to [`RecipientCache::keep`] with what is read from now on.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `record`, read at `generation` (taken before the read began), if the rule allows
    /// it and nothing changed since.
    pub(crate) fn keep(&self, generation: u64, address: String, record: &RecipientRecord) {
        let reusable = record.domain.is_some() && record.account.as_ref().is_some_and(|a| a.quota_bytes == 0);
        if !reusable {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        // Under the lock, as `changed` empties under it: a record read before a change
        // either goes in before the change empties the cache, or not at all.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (read, _)| read.elapsed() < RECIPIENT_TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(address, (Instant::now(), record.clone()));
    }

    /// A change to domains, accounts, aliases or held domains was committed (or may have
    /// been: called after a failed write too).
    pub(crate) fn changed(&self) {
        let entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = entries {
            entries.clear();
        }
    }
}
