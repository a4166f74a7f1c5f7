//! One session per maildrop (RFC 1939 8: the POP3 server acquires an exclusive-access lock
//! on the maildrop), across every node on the store (SPEC 11): the lock is a lease in the
//! store, renewed while the session lives, so a node that dies frees its maildrops when
//! their leases expire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vouchmail_store::{Store, StoreError};

use super::lease::HeldLease;
use crate::support::time::unix_now;

/// How long a lease holds unless renewed, by default (`pop3.lock_lease_secs`): a dead
/// node's maildrops free after this.
pub const LEASE_SECS: i64 = 120;

/// The maildrop locks of this node.
pub struct MaildropLocks {
    store: Arc<dyn Store>,
    /// This node's name for its leases: unique per process, so that two nodes (or a
    /// restarted one) never take each other's lease for their own.
    node: String,
    sessions: AtomicU64,
    /// Seconds a lease holds; a live session renews it every third of this.
    lease_secs: i64,
}

impl MaildropLocks {
    pub fn new(store: Arc<dyn Store>, lease_secs: u64) -> Arc<MaildropLocks> {
        let mut random = [0u8; 8];
        // Without an OS random source the pid and time still set nodes apart.
        let _ = getrandom::getrandom(&mut random);
        let node = format!("{}-{}-{}", std::process::id(), unix_now(), u64::from_le_bytes(random));
        let lease_secs = i64::try_from(lease_secs.max(1)).unwrap_or(LEASE_SECS);
        Arc::new(MaildropLocks { store, node, sessions: AtomicU64::new(0), lease_secs })
    }

    /// Takes the maildrop of `user` for one session, or None when a session (on any
    /// node) holds it.
    pub async fn try_lock(self: &Arc<Self>, user: &str) -> Result<Option<MaildropLock>, StoreError> {
        let name = format!("pop3:{}", user.to_lowercase());
        let holder = format!("{}/{}", self.node, self.sessions.fetch_add(1, Ordering::Relaxed));
        let now = unix_now();
        let lease_secs = self.lease_secs;
        if !self.store.try_lease(&name, &holder, now, now + lease_secs).await? {
            return Ok(None);
        }
        let (store, renew_name, renew_holder) = (Arc::clone(&self.store), name.clone(), holder.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(lease_secs as u64 * 1000 / 3)).await;
                let now = unix_now();
                match store.try_lease(&renew_name, &renew_holder, now, now + lease_secs).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(lease = %renew_name, "POP3: the maildrop lease was lost to another session");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %renew_name, error = %e, "POP3: cannot renew the maildrop lease"),
                }
            }
        });
        Ok(Some(MaildropLock { lease: HeldLease::new(Arc::clone(&self.store), name, holder), renew }))
    }
}

/// Held while a session has the maildrop open; given back by `release`, or else on drop.
#[derive(Debug)]
pub struct MaildropLock {
    lease: HeldLease,
    renew: tokio::task::JoinHandle<()>,
}

impl MaildropLock {
    /// Stops renewing and gives the maildrop back, waiting for the store (RFC 1939 6: the
    /// QUIT answer comes after it).
    pub async fn release(&mut self) {
        self.renew.abort();
        self.lease.release().await;
    }
}

impl Drop for MaildropLock {
    /// Stops renewing; the lease then goes back as it drops.
    fn drop(&mut self) {
        self.renew.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes on one store: a maildrop open on one is in use on the other, free again
    /// once the session ends, and a lease its dead node left behind frees when it expires.
    #[tokio::test]
    async fn one_session_per_maildrop_across_nodes_and_a_dead_nodes_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(vouchmail_store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let (a, b) = (
            MaildropLocks::new(Arc::clone(&store), LEASE_SECS as u64),
            MaildropLocks::new(Arc::clone(&store), LEASE_SECS as u64),
        );
        let lock = a.try_lock("User@x.test").await.unwrap().expect("free");
        assert!(b.try_lock("user@X.TEST").await.unwrap().is_none(), "in use on the other node");
        assert!(a.try_lock("user@x.test").await.unwrap().is_none(), "in use for another session of the same node");
        let other = b.try_lock("other@x.test").await.unwrap().expect("another maildrop");
        drop(lock);
        let mut again = None;
        for _ in 0..50 {
            again = b.try_lock("user@x.test").await.unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "released when the session ended");
        drop((again, other));

        // A node that died holding a lease: nothing releases it, until it expires.
        let now = unix_now();
        assert!(store
            .try_lease("pop3:dead@x.test", "dead-node/0", now - 2 * LEASE_SECS, now - LEASE_SECS)
            .await
            .unwrap());
        assert!(a.try_lock("dead@x.test").await.unwrap().is_some(), "an expired lease is taken over");
        assert!(store.try_lease("pop3:held@x.test", "dead-node/1", now, now + LEASE_SECS).await.unwrap());
        assert!(a.try_lock("held@x.test").await.unwrap().is_none(), "a live lease holds");
    }
}
