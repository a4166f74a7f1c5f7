//! Steps every protocol driver (SMTP, POP3) takes the same way: the STARTTLS/STLS upgrade,
//! fetching an account's secrets under the AUTH failure limits, and running CPU-heavy
//! session work (Argon2id) off the async workers.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::sasl::Secrets;
use vouchmail_proto::smtp::session::TlsInfo;
use vouchmail_store::Store;

use crate::auth_limit::{client_network, AuthLimiter};
use crate::inbound::handshake;
use crate::tasks::TaskTracker;
use crate::tls::{MaybeTls, Tls};

/// Pending connections the kernel keeps for each listener (Postfix asks for far more than
/// the 128 of many defaults; the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket with address reuse and a deep backlog.
pub(crate) fn listen(addr: SocketAddr) -> Result<TcpListener, String> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    let bound = socket.and_then(|socket| {
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    });
    bound.map_err(|e| format!("cannot listen on {addr}: {e}"))
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

/// Writes `pending` (the 220 / +OK to STARTTLS or STLS) and runs the TLS handshake on the
/// connection, replacing it in place. None: the connection is unusable and must be closed.
pub(crate) async fn upgrade(
    stream: &mut MaybeTls,
    pending: &[u8],
    tls: Option<&Tls>,
    store: &dyn Store,
) -> Option<TlsInfo> {
    stream.write_all(pending).await.ok()?;
    let tls = tls?;
    let MaybeTls::Plain(tcp) = std::mem::replace(stream, MaybeTls::Closed) else { return None };
    let (tls_stream, info) = handshake(tls, tcp, store).await?;
    *stream = MaybeTls::Tls(tls_stream);
    Some(info)
}

/// How long a client network stays familiar to an account after a successful login
/// (SPEC 3: strangers' failures must not lock the owner out).
const FAMILIAR_FOR: i64 = 30 * 24 * 3600;
/// A remembered login is written again at most this often, so that a client logging in
/// every few minutes costs a read, not a durable write, each time.
const REFRESH_LOGIN_AFTER: i64 = 24 * 3600;

fn unix_now() -> i64 {
    vouchmail_proto::time::unix_seconds(SystemTime::now())
}

/// Unix time for the sessions' AUTH exchanges (the proto state machines read no clock).
pub(crate) fn sasl_clock() -> u64 {
    u64::try_from(unix_now()).unwrap_or(0)
}

/// The clock and a seed from the OS random source for a session's AUTH challenges and
/// nonces (the proto state machines read neither). None when the random source fails.
pub(crate) fn sasl_fresh() -> Option<vouchmail_proto::sasl::Fresh> {
    let mut seed = [0u8; vouchmail_proto::sasl::SEED_LEN];
    getrandom::getrandom(&mut seed).ok()?;
    Some(vouchmail_proto::sasl::Fresh::new(sasl_clock(), seed))
}

/// How a client network is named in the store's login records: its IPv4 address, or its
/// IPv6 /64.
fn login_client(ip: IpAddr) -> String {
    match client_network(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Why a SASL exchange gets no secrets; both answer 454 4.7.0 / `-ERR [SYS/TEMP]` and
/// neither counts as a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthRefusal {
    /// The client network, or (for a client new to it) the account, hit the failure limit.
    Blocked,
    /// The store could not answer.
    Unavailable,
}

/// One connection's side of the AUTH failure limits (SPEC 3).
#[derive(Debug, Default)]
pub(crate) struct AuthGuard {
    /// An account this connection's client network is known to have logged in to.
    familiar_to: Option<String>,
}

impl AuthGuard {
    /// The account's stored secrets for a SASL exchange; `Ok(None)` for an unknown account
    /// (the mechanism then fails as for a wrong password). The per-account limit holds only
    /// for client networks that never logged in to the account within FAMILIAR_FOR.
    pub(crate) async fn secrets(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        authcid: &str,
    ) -> Result<Option<Secrets>, AuthRefusal> {
        self.admit(store, limiter, peer, authcid).await?;
        match store.get_account(authcid).await {
            Ok(account) => Ok(account.map(|a| a.secrets)),
            Err(e) => {
                tracing::error!(error = %e, "store error during authentication");
                Err(AuthRefusal::Unavailable)
            }
        }
    }

    /// Whether an attempt for `account` may start: not while the client network is over
    /// its failure limit, nor while the account is over its limit, unless this network has
    /// logged in to it within FAMILIAR_FOR (SPEC 3: strangers cannot lock the owner out).
    /// For SASL here and for RCRAM-MD5 and X-RCRAM-VERIFY (SPEC 8.2) alike.
    pub(crate) async fn admit(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        account: &str,
    ) -> Result<(), AuthRefusal> {
        if limiter.ip_blocked(peer.ip()) {
            tracing::warn!(%peer, %account, "authentication refused: too many recent failures from this network");
            return Err(AuthRefusal::Blocked);
        }
        // One indexed read, and only while the account is over its limit.
        if limiter.account_blocked(account) && !self.is_familiar(store, peer, account).await? {
            tracing::warn!(%peer, %account, "authentication refused: too many recent failures for this account");
            return Err(AuthRefusal::Blocked);
        }
        Ok(())
    }

    /// [`AuthGuard::admit`] for a verifier's X-RCRAM-VERIFY (SPEC 8.2): also refused,
    /// for the addresses it is not familiar with, once it has relayed its budget of
    /// failures ([`AuthLimiter::verifier_blocked`]).
    pub(crate) async fn admit_verifier(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        account: &str,
    ) -> Result<(), AuthRefusal> {
        self.admit(store, limiter, peer, account).await?;
        if limiter.verifier_blocked(peer.ip()) && !self.is_familiar(store, peer, account).await? {
            tracing::warn!(%peer, %account, "X-RCRAM-VERIFY refused: this verifier relayed too many recent failures");
            return Err(AuthRefusal::Blocked);
        }
        Ok(())
    }

    async fn is_familiar(&mut self, store: &dyn Store, peer: SocketAddr, account: &str) -> Result<bool, AuthRefusal> {
        if self.familiar_to.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(account)) {
            return Ok(true);
        }
        let last = store.last_login_from(account, &login_client(peer.ip())).await.map_err(|e| {
            tracing::error!(error = %e, "store error reading the login record");
            AuthRefusal::Unavailable
        })?;
        let familiar = last.is_some_and(|t| t >= unix_now() - FAMILIAR_FOR);
        if familiar {
            self.familiar_to = Some(account.to_string());
        }
        Ok(familiar)
    }

    /// An exchange ended: a success is remembered for the client network, a failure is
    /// counted. Returns how long to wait before the failure reply. `via_verifier`: an
    /// X-RCRAM-VERIFY answer, whose failure counts for the account only (SPEC 8.2; see
    /// [`AuthLimiter::record_relayed_failure`]).
    pub(crate) async fn finished(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        authcid: Option<&str>,
        success: bool,
        via_verifier: bool,
    ) -> Duration {
        match authcid {
            Some(account) if success => {
                self.remember_login(store, peer, account).await;
                self.familiar_to = Some(account.to_string());
                Duration::ZERO
            }
            _ if success => Duration::ZERO,
            _ => {
                let familiar =
                    authcid.is_some_and(|a| self.familiar_to.as_deref().is_some_and(|f| f.eq_ignore_ascii_case(a)));
                match authcid {
                    Some(account) if via_verifier => limiter.record_relayed_failure(peer.ip(), account, familiar),
                    _ => limiter.record_failure(peer.ip(), authcid, familiar),
                }
            }
        }
    }

    /// Awaited, so the login is on record before the session goes on: a failure here only
    /// costs the client its familiarity, never the login.
    async fn remember_login(&self, store: &dyn Store, peer: SocketAddr, account: &str) {
        let client = login_client(peer.ip());
        let now = unix_now();
        let last = match store.last_login_from(account, &client).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the login record");
                None
            }
        };
        if last.is_some_and(|t| t > now - REFRESH_LOGIN_AFTER) {
            return;
        }
        if let Err(e) = store.remember_login(account, &client, now, now - FAMILIAR_FOR).await {
            tracing::warn!(error = %e, %account, %client, "cannot record the login");
        }
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
