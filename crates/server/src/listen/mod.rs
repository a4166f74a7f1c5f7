//! Steps every protocol driver (SMTP, POP3) takes the same way: the STARTTLS/STLS upgrade,
//! fetching an account's secrets under the AUTH failure limits, and running CPU-heavy
//! session work (Argon2id) off the async workers.

pub mod admin;
pub mod authkey;
pub mod imap;
pub mod limits;
pub mod pop3;
pub mod smtp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::smtp::session::TlsInfo;

use vouchmail_proto::sasl::Secrets;
use vouchmail_store::Store;

use crate::auth::guard::{sasl_clock, AuthGuard, AuthRefusal};
use crate::auth::limits::AuthLimiter;
use crate::net::tls::{handshake, upgrade, MaybeTls, Tls};
use crate::support::error::{Error, ErrorKind};
use crate::support::session_threads::Dispatch;
use crate::support::tasks::TaskTracker;
use limits::{ConnectionLimiter, Refusal};

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

/// What a TCP listener serves (SMTP, POP3, VERIFY): each connection within its limits,
/// and the refusal of one over them.
pub trait Service: Send + Sync + 'static {
    /// Connections in total and per client IP (SPEC 3).
    fn limiter(&self) -> &Arc<ConnectionLimiter>;

    /// Serves one accepted connection until it ends.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;

    /// Answers a connection over the limits, then drops it.
    fn refuse(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        refusal: Refusal,
    ) -> impl Future<Output = ()> + Send;
}

/// Accepts connections until shutdown; each runs in its own task on a session thread
/// (`support::session_threads`), holding its slot of the connection limits while it runs.
/// Every session thread accepts from the listener (the kernel wakes them all and one
/// takes the connection) and keeps what it accepted, unless it has more sessions open
/// than another: then the connection goes to the thread with the fewest.
pub async fn serve_listener<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
    sessions: Dispatch,
) {
    if sessions.threads() == 0 {
        return accept_loop(listener, service, shutdown, tasks, sessions, None).await;
    }
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listener to the session threads");
            return;
        }
    };
    let mut loops = Vec::with_capacity(sessions.threads());
    for here in 0..sessions.threads() {
        let listener = match listener.try_clone() {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the listener with a session thread");
                continue;
            }
        };
        let (service, shutdown, tasks) = (Arc::clone(&service), shutdown.clone(), tasks.clone());
        let accepting = sessions.clone();
        loops.push(sessions.spawn_on(here, async move {
            // Registered with the reactor of the thread it runs on.
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, service, shutdown, tasks, accepting, Some(here)).await,
                Err(e) => tracing::error!(error = %e, "a session thread cannot listen"),
            }
        }));
    }
    for accepting in loops.into_iter().flatten() {
        let _ = accepting.await;
    }
}

/// Accepts until shutdown on the current runtime: session thread `here`, or the caller's.
async fn accept_loop<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
    sessions: Dispatch,
    here: Option<usize>,
) {
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
        let (service, shutdown) = (Arc::clone(&service), shutdown.clone());
        match here {
            Some(here) if !sessions.crowded(here) => {
                sessions.spawn_here(here, tasks.track(serve_accepted(service, stream, peer, shutdown)));
            }
            Some(_) => {
                // Out of this thread's reactor, into the least busy thread's.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand over an accepted connection");
                        continue;
                    }
                };
                sessions.spawn(tasks.track(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve_accepted(service, stream, peer, shutdown).await,
                        Err(e) => tracing::warn!(error = %e, "a session thread cannot take a connection"),
                    }
                }));
            }
            None => tasks.spawn(serve_accepted(service, stream, peer, shutdown)),
        }
    }
}

/// One accepted connection, within the connection limits or refused.
async fn serve_accepted<S: Service>(
    service: Arc<S>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    match service.limiter().try_acquire(peer.ip()) {
        Ok(_slot) => service.serve(stream, peer, shutdown).await,
        Err(refusal) => service.refuse(stream, peer, refusal).await,
    }
}

/// Runs `work` on a blocking thread, moving the session there and back: verifying an
/// Argon2id hash takes tens of milliseconds of CPU that must not stall other sessions.
/// At most [`verification_slots`] run at once (each Argon2id verification takes about
/// 19 MiB), so a burst of AUTH can neither exhaust memory nor take every blocking thread
/// from the store's reads; the others wait their turn.
/// None if the task failed (the session is lost; close the connection).
async fn off_async<S, T, F>(session: S, work: F) -> Option<(S, T)>
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

/// What the shells need of a protocol session state machine (SMTP and POP3 alike): the
/// answers to its AUTH secrets lookup, and the input side. [`session_shell!`] implements
/// it by forwarding to the session's own methods of the same names.
pub(crate) trait SessionShell: Send + 'static {
    type Event: Send + 'static;
    /// The network or the account is over its failure limit (SPEC 3).
    fn auth_blocked(&mut self);
    /// The store could not be asked: a temporary failure.
    fn auth_unavailable(&mut self);
    /// The verification (Argon2id and the like: CPU-heavy).
    fn provide_secrets(&mut self, secrets: Option<&Secrets>) -> Option<Self::Event>;
    /// Bytes from the client.
    fn feed(&mut self, bytes: &[u8]);
    /// No complete command within the session's timeout.
    fn on_timeout(&mut self);
    /// The time for AUTH challenges (the state machines read no clock).
    fn set_clock(&mut self, unix: u64);
    /// The replies queued for the client.
    fn take_output(&mut self) -> Vec<u8>;
    /// The TLS handshake of STARTTLS/STLS succeeded.
    fn tls_started(&mut self, info: TlsInfo);
}

/// `impl SessionShell for $session` forwarding to its inherent methods.
macro_rules! session_shell {
    ($session:ty, $event:ty) => {
        impl $crate::listen::SessionShell for $session {
            type Event = $event;
            fn auth_blocked(&mut self) {
                <$session>::auth_blocked(self)
            }
            fn auth_unavailable(&mut self) {
                <$session>::auth_unavailable(self)
            }
            fn provide_secrets(&mut self, secrets: Option<&vouchmail_proto::sasl::Secrets>) -> Option<$event> {
                <$session>::provide_secrets(self, secrets)
            }
            fn feed(&mut self, bytes: &[u8]) {
                <$session>::feed(self, bytes)
            }
            fn on_timeout(&mut self) {
                <$session>::on_timeout(self)
            }
            fn set_clock(&mut self, unix: u64) {
                <$session>::set_clock(self, unix)
            }
            fn take_output(&mut self) -> Vec<u8> {
                <$session>::take_output(self)
            }
            fn tls_started(&mut self, info: vouchmail_proto::smtp::session::TlsInfo) {
                <$session>::tls_started(self, info)
            }
        }
    };
}
pub(crate) use session_shell;

/// Waits for the client's next bytes and gives them to the session, or tells it of the
/// timeout (RFC 5321 4.5.3.2, RFC 1939 3); notes a shutdown. False: the connection closed.
/// The bytes are read into a buffer of the worker thread and given to the session at once,
/// so a session waiting for its client holds no read buffer of its own (issue 25: 8 KiB
/// of each idle connection's memory).
pub(crate) async fn read_input<S: SessionShell>(
    session: &mut S,
    stream: &mut MaybeTls,
    deadline: &ReadDeadline,
    shutdown: &mut watch::Receiver<bool>,
    shutting_down: &mut bool,
    peer: SocketAddr,
) -> bool {
    tokio::select! {
        read = tokio::time::timeout_at(deadline.at(), read_into(session, stream)) => match read {
            Err(_elapsed) => {
                tracing::info!(%peer, "no complete command or data block within the timeout; closing");
                session.on_timeout();
            }
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(_)) => {}
        },
        _ = shutdown.wait_for(|s| *s), if !*shutting_down => *shutting_down = true,
    }
    true
}

/// Octets one read takes at most (as the 8 KiB buffers of the drivers).
const SCRATCH_LEN: usize = 8192;

thread_local! {
    /// The read buffer of the sessions run on this thread: a read fills it and empties it
    /// into its session within one poll, so it is never held across an await.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; SCRATCH_LEN].into_boxed_slice());
}

/// Reads what the client sent into the thread's buffer and feeds it to the session (with
/// the clock, as [`read_input`]); the number of octets, 0 at the end of the stream.
pub(crate) async fn read_into<S: SessionShell>(session: &mut S, stream: &mut MaybeTls) -> std::io::Result<usize> {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            // Never borrowed twice (a poll does not poll another inside it); were it so,
            // the read would take a buffer of its own rather than fail.
            let mut own;
            let mut borrowed = scratch.try_borrow_mut();
            let buffer: &mut [u8] = match borrowed.as_mut() {
                Ok(shared) => &mut shared[..],
                Err(_) => {
                    own = vec![0u8; SCRATCH_LEN];
                    &mut own
                }
            };
            let mut read = tokio::io::ReadBuf::new(buffer);
            match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let bytes = read.filled();
                    if !bytes.is_empty() {
                        session.set_clock(sasl_clock());
                        session.feed(bytes);
                    }
                    Poll::Ready(Ok(bytes.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// The stream a new connection is served over: for implicit TLS (RFC 8314 3.3) the
/// handshake comes first, then the greeting inside TLS. None: the handshake failed.
pub(crate) async fn open_stream(
    stream: TcpStream,
    implicit_tls: bool,
    tls: Option<&Tls>,
    store: &dyn Store,
) -> Option<(MaybeTls, Option<TlsInfo>)> {
    if !implicit_tls {
        return Some((MaybeTls::Plain(stream), None));
    }
    let (stream, info) = handshake(tls?, stream, store).await?;
    Some((MaybeTls::Tls(stream), Some(info)))
}

/// STARTTLS (RFC 3207, RFC 2595 4, RFC 9051 6.2.1) as every listener takes it: the OK the
/// session queued goes out in the clear, then the handshake (`net::tls::upgrade`). False:
/// the handshake failed and the connection must close.
pub(crate) async fn start_tls<S: SessionShell>(
    session: &mut S,
    stream: &mut MaybeTls,
    tls: Option<&Tls>,
    store: &dyn Store,
) -> bool {
    let pending = session.take_output();
    match Box::pin(upgrade(stream, &pending, tls, store)).await {
        Some(info) => {
            session.tls_started(info);
            true
        }
        None => false,
    }
}

/// The end of a POP3 or IMAP login, counted against the AUTH failure limits SMTP shares
/// (SPEC 3); a failure is logged and waited out with the growing delay that slows
/// password guessing.
pub(crate) async fn mailbox_login_finished(
    auth: &mut AuthGuard,
    store: &dyn Store,
    limiter: &AuthLimiter,
    peer: SocketAddr,
    authcid: Option<String>,
    success: bool,
    protocol: &'static str,
) {
    let delay = Box::pin(auth.finished(store, limiter, peer, authcid.as_deref(), success, false)).await;
    if success {
        tracing::info!(%peer, user = ?authcid, protocol, "mailbox login");
    } else {
        tracing::warn!(%peer, user = ?authcid, protocol, "authentication failed");
        tokio::time::sleep(delay).await;
    }
}

/// The AUTH step every listener takes the same way: the secrets fetched under the failure
/// limits, then verified off the async workers. The session back with the event the
/// verification produced; None when the verification task failed (close the connection).
pub(crate) async fn lookup_secrets<S: SessionShell>(
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
