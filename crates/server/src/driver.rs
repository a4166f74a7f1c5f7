//! Steps every protocol driver (SMTP, POP3) takes the same way: the STARTTLS/STLS upgrade,
//! fetching an account's secrets under the AUTH failure limits, and running CPU-heavy
//! session work (Argon2id) off the async workers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::sasl::Secrets;
use vouchmail_proto::smtp::session::TlsInfo;
use vouchmail_store::Store;

use crate::auth_limit::AuthLimiter;
use crate::inbound::handshake;
use crate::tasks::TaskTracker;
use crate::tls::{MaybeTls, Tls};

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

/// An account's stored secrets for a SASL exchange: `Err(())` when the client or account
/// has hit the failure limit (the session answers 454 / `-ERR [SYS/TEMP]`); `Ok(None)` for
/// an unknown account (the mechanism then fails as for a wrong password).
pub(crate) async fn secrets_for_auth(
    store: &dyn Store,
    limiter: &AuthLimiter,
    peer: SocketAddr,
    authcid: &str,
) -> Result<Option<Secrets>, ()> {
    if limiter.ip_blocked(peer.ip()) || limiter.account_blocked(authcid) {
        tracing::warn!(%peer, %authcid, "authentication refused: too many recent failures");
        return Err(());
    }
    match store.get_account(authcid).await {
        Ok(account) => Ok(account.map(|a| a.secrets)),
        Err(e) => {
            tracing::error!(error = %e, "store error during authentication");
            Ok(None)
        }
    }
}

/// Runs `work` on a blocking thread, moving the session there and back: verifying an
/// Argon2id hash takes tens of milliseconds of CPU that must not stall other sessions.
/// None if the task failed (the session is lost; close the connection).
pub(crate) async fn off_async<S, T, F>(session: S, work: F) -> Option<(S, T)>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut S) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut session = session;
        let out = work(&mut session);
        (session, out)
    })
    .await
    .ok()
}
