//! What every session of one POP3 listener shares, the maildrop locks (RFC 1939 8), and
//! what one connection holds while its session runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use vouchmail_proto::pop3::session::{Session, SessionConfig};
use vouchmail_store::Store;

use crate::auth::guard::AuthGuard;
use crate::auth::limits::AuthLimiter;
use crate::listen::limits::ConnectionLimiter;
use crate::net::tls::{MaybeTls, Tls};

/// What every session of one listener shares.
pub struct Pop3Context {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub auth_limiter: Arc<AuthLimiter>,
    /// Shared by every POP3 listener of the server: one session per maildrop.
    pub locks: Arc<MailboxLocks>,
    pub tls: Option<Tls>,
    /// Port 995: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// Rung when a download queues a tracking record for NOTIFY (SPEC 8.3).
    pub outbox_bell: crate::rules::tracking::OutboxBell,
}

/// The maildrops open in a session on this node (RFC 1939 8: exclusive access). One node
/// needs no more than this map; a shared store would need a lease in the store.
#[derive(Debug, Default)]
pub struct MailboxLocks {
    held: Mutex<HashSet<String>>,
}

impl MailboxLocks {
    /// Takes the maildrop of `user`, or None when another session holds it.
    pub fn try_lock(self: &Arc<Self>, user: &str) -> Option<MailboxLock> {
        let key = user.to_lowercase();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(key.clone()).then(|| MailboxLock { locks: Arc::clone(self), key })
    }

    pub fn is_locked(&self, user: &str) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).contains(&user.to_lowercase())
    }
}

/// Held while a session has the maildrop open; released on drop.
#[derive(Debug)]
pub struct MailboxLock {
    locks: Arc<MailboxLocks>,
    key: String,
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        self.locks.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// The open maildrop of a session: the lock and the mailbox entry id of each message
/// number.
pub struct OpenMaildrop {
    pub user: String,
    pub ids: Vec<i64>,
    pub _lock: MailboxLock,
}

/// One connection's driver: what the stages act on besides the session.
pub struct Connection<'a> {
    pub stream: MaybeTls,
    pub peer: SocketAddr,
    pub context: &'a Pop3Context,
    /// AUTH failure accounting of this connection (SPEC 3).
    pub auth: AuthGuard,
    /// The maildrop once the session is in the TRANSACTION state.
    pub maildrop: Option<OpenMaildrop>,
}

impl<'a> Connection<'a> {
    pub fn new(stream: MaybeTls, peer: SocketAddr, context: &'a Pop3Context) -> Connection<'a> {
        Connection { stream, peer, context, auth: AuthGuard::default(), maildrop: None }
    }

    pub fn store(&self) -> &'a dyn Store {
        self.context.store.as_ref()
    }
}

crate::listen::session_shell!(Session, vouchmail_proto::pop3::session::Event);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_maildrop_released_on_drop() {
        let locks = Arc::new(MailboxLocks::default());
        let lock = locks.try_lock("User@x").unwrap();
        assert!(locks.try_lock("user@X").is_none());
        assert!(locks.is_locked("USER@x"));
        let other = locks.try_lock("other@x").unwrap();
        drop(lock);
        assert!(!locks.is_locked("user@x"));
        assert!(locks.try_lock("user@x").is_some());
        drop(other);
    }
}
