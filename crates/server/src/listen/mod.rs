//! Steps every protocol driver (SMTP, POP3) takes the same way: the STARTTLS/STLS upgrade,
//! fetching an account's secrets under the AUTH failure limits, and running CPU-heavy
//! session work (Argon2id) off the async workers.

pub mod authkey;
pub mod limits;
pub mod pop3;
pub mod smtp;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use vouchmail_proto::sasl::Secrets;
use vouchmail_store::Store;

use crate::auth::guard::{AuthGuard, AuthRefusal};
use crate::auth::limits::AuthLimiter;
use crate::support::error::{Error, ErrorKind};
use crate::support::tasks::TaskTracker;

/// Pending connections the kernel keeps for each listener (Postfix asks for far more than
/// the 128 of many defaults; the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket with address reuse and a deep backlog.
pub(crate) fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let bound = socket.and_then(|socket| {
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    });
    bound.map_err(|e| Error::new(ErrorKind::Network, format!("cannot listen on {addr}: {e}")))
}

/// Accepts connections until shutdown and runs `handle` for each in its own tracked task.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(handle(stream, peer, shutdown.clone()));
    }
}

/// Runs `work` on a blocking thread, moving the session there and back: verifying an
/// Argon2id hash takes tens of milliseconds of CPU that must not stall other sessions.
/// At most [`verification_slots`] run at once (each Argon2id verification takes about
/// 19 MiB), so a burst of AUTH can neither exhaust memory nor take every blocking thread
/// from the store's reads; the others wait their turn.
/// None if the task failed (the session is lost; close the connection).
pub(crate) async fn off_async<S, T, F>(session: S, work: F) -> Option<(S, T)>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut S) -> T + Send + 'static,
{
    let _slot = verification_pool().acquire().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let mut session = session;
        let out = work(&mut session);
        (session, out)
    })
    .await
    .ok()
}

/// What a session state machine with SASL AUTH answers once its account's secrets are
/// looked up (SMTP and POP3 alike).
pub(crate) trait SecretsConsumer: Send + 'static {
    type Event: Send + 'static;
    /// The network or the account is over its failure limit (SPEC 3).
    fn auth_blocked(&mut self);
    /// The store could not be asked: a temporary failure.
    fn auth_unavailable(&mut self);
    /// The verification (Argon2id and the like: CPU-heavy).
    fn provide_secrets(&mut self, secrets: Option<&Secrets>) -> Option<Self::Event>;
}

/// The AUTH step every listener takes the same way: the secrets fetched under the failure
/// limits, then verified off the async workers. The session back with the event the
/// verification produced; None when the verification task failed (close the connection).
pub(crate) async fn lookup_secrets<S: SecretsConsumer>(
    auth: &mut AuthGuard,
    store: &dyn Store,
    limiter: &AuthLimiter,
    peer: SocketAddr,
    authcid: &str,
    mut session: S,
) -> Option<(S, Option<S::Event>)> {
    match Box::pin(auth.secrets(store, limiter, peer, authcid)).await {
        Err(AuthRefusal::Blocked) => session.auth_blocked(),
        Err(AuthRefusal::Unavailable) => session.auth_unavailable(),
        Ok(secrets) => {
            let verified = off_async(session, move |s| s.provide_secrets(secrets.as_ref())).await;
            if verified.is_none() {
                tracing::error!(%peer, "AUTH verification task failed; closing the session");
            }
            return verified;
        }
    }
    Some((session, None))
}

/// Concurrent AUTH verifications: one per core, at least two.
pub(crate) fn verification_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

fn verification_pool() -> &'static tokio::sync::Semaphore {
    static POOL: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    POOL.get_or_init(|| tokio::sync::Semaphore::new(verification_slots()))
}

/// When the peer must have sent its next complete unit of input (a command line, a block
/// of message data): `timeout` after its last one, or after our last reply. A deadline
/// rather than a gap between reads, so that a client sending a byte at a time cannot
/// hold a connection for longer than the timeout (RFC 5321 4.5.3.2; Postfix's
/// smtpd_per_record_deadline).
#[derive(Debug)]
pub(crate) struct ReadDeadline {
    at: tokio::time::Instant,
    progress: u64,
}

impl ReadDeadline {
    pub(crate) fn new(timeout: Duration) -> ReadDeadline {
        ReadDeadline { at: tokio::time::Instant::now() + timeout, progress: 0 }
    }

    /// Restarts the deadline when the session took a complete unit of input (`progress`
    /// changed) or we just replied.
    pub(crate) fn refresh(&mut self, progress: u64, replied: bool, timeout: Duration) {
        if replied || progress != self.progress {
            self.progress = progress;
            self.at = tokio::time::Instant::now() + timeout;
        }
    }

    pub(crate) fn at(&self) -> tokio::time::Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_moves_only_with_progress_or_a_reply() {
        let timeout = Duration::from_secs(5);
        let mut deadline = ReadDeadline::new(timeout);
        let first = deadline.at();
        tokio::time::advance(Duration::from_secs(2)).await;
        // Bytes arrived but no complete line: the deadline stays.
        deadline.refresh(0, false, timeout);
        assert_eq!(deadline.at(), first);
        deadline.refresh(1, false, timeout);
        assert_eq!(deadline.at(), first + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(1)).await;
        deadline.refresh(1, true, timeout);
        assert_eq!(deadline.at(), first + Duration::from_secs(3));
    }
}
