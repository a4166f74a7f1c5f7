//! What every session of one POP3 listener shares (the maildrop locks of RFC 1939 8 are
//! `rules::maildrop_lock`), and what one connection holds while its session runs.

use std::net::SocketAddr;
use std::sync::Arc;

use vouchmail_proto::pop3::session::{Session, SessionConfig};
use vouchmail_store::Store;

use crate::auth::guard::AuthGuard;
use crate::auth::limits::AuthLimiter;
use crate::listen::limits::ConnectionLimiter;
use crate::net::tls::{MaybeTls, Tls};
use crate::rules::maildrop_lock::{MaildropLock, MaildropLocks};

/// What every session of one listener shares.
pub struct Pop3Context {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub auth_limiter: Arc<AuthLimiter>,
    /// Shared by every POP3 listener of the server: one session per maildrop, on any node.
    pub locks: Arc<MaildropLocks>,
    pub tls: Option<Tls>,
    /// Port 995: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// Rung when a download queues a tracking record for NOTIFY (SPEC 8.3).
    pub outbox_bell: crate::rules::tracking::OutboxBell,
    /// This listener's counters in the server's registry (SPEC 12).
    pub metrics: crate::support::metrics::ListenerMetrics,
}

/// The open maildrop of a session: the lock and the mailbox entry id of each message
/// number.
pub struct OpenMaildrop {
    pub user: String,
    pub ids: Vec<i64>,
    pub lock: MaildropLock,
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

    /// Gives the maildrop back, if the session holds it, and waits for the store: done
    /// before the QUIT answer and before the session ends, so a client that reconnects,
    /// or the server's shutdown that closes the store next, finds it free.
    pub async fn close_maildrop(&mut self) {
        if let Some(mut open) = self.maildrop.take() {
            open.lock.release().await;
        }
    }
}

crate::listen::session_shell!(Session, vouchmail_proto::pop3::session::Event);
