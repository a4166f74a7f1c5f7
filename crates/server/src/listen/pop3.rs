//! The POP3 listeners (pop3 with STLS, pop3s with implicit TLS): a thin tokio shell around
//! the session state machine of `vouchmail_proto::pop3::session`, serving each account's
//! INBOX from the store (SPEC 9).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::pop3::reply::Reply;
use vouchmail_proto::pop3::session::{Event, MessageInfo, Session, SessionConfig};
use vouchmail_store::{Folder, Store, StoreError};

use crate::auth::guard::{AuthGuard, AuthRefusal};
use crate::auth::limits::AuthLimiter;
use crate::listen::limits::{ConnectionLimiter, Refusal};
use crate::listen::{accept_loop, off_async, ReadDeadline};
use crate::net::tls::{handshake, upgrade};
use crate::net::tls::{MaybeTls, Tls};
use crate::support::tasks::TaskTracker;

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

/// Accepts connections until shutdown; each runs in its own task.
pub async fn serve_listener(
    listener: TcpListener,
    context: Arc<Pop3Context>,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
) {
    accept_loop(listener, shutdown, tasks, move |stream, peer, shutdown| {
        let context = Arc::clone(&context);
        async move {
            match context.limiter.try_acquire(peer.ip()) {
                Ok(_slot) => run_connection(stream, peer, &context, shutdown).await,
                Err(refusal) => refuse(stream, refusal).await,
            }
        }
    })
    .await
}

async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let reply = match refusal {
        Refusal::TooManyTotal => Reply::sys_temp("Too many connections, try again later"),
        Refusal::TooManyFromIp => Reply::sys_temp("Too many connections from your address, try again later"),
    };
    let _ = stream.write_all(&reply.to_wire()).await;
    let _ = stream.shutdown().await;
}

async fn run_connection(stream: TcpStream, peer: SocketAddr, context: &Pop3Context, shutdown: watch::Receiver<bool>) {
    let Some(fresh) = crate::auth::guard::sasl_fresh() else {
        tracing::error!(%peer, "POP3: no OS random source; connection closed");
        return;
    };
    let mut session = Session::new(Arc::clone(&context.session_config), fresh);
    let stream = if context.implicit_tls {
        let Some(tls) = &context.tls else { return };
        // RFC 8314 3.3: the handshake comes first, then the greeting inside TLS.
        match handshake(tls, stream, context.store.as_ref()).await {
            Some((stream, info)) => {
                session.tls_started(info);
                MaybeTls::Tls(stream)
            }
            None => return,
        }
    } else {
        MaybeTls::Plain(stream)
    };
    run_session(stream, peer, context, session, shutdown).await;
}

/// The open maildrop of a session: the lock and the mailbox entry id of each message
/// number.
struct OpenMaildrop {
    user: String,
    ids: Vec<i64>,
    _lock: MailboxLock,
}

/// Drives one POP3 session over a connection until it ends.
async fn run_session(
    mut stream: MaybeTls,
    peer: SocketAddr,
    context: &Pop3Context,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 8192];
    let mut auth = AuthGuard::default();
    let mut shutting_down = *shutdown.borrow();
    let mut maildrop: Option<OpenMaildrop> = None;
    let mut deadline = ReadDeadline::new(session.read_timeout());
    tracing::debug!(%peer, "POP3 session started");
    'session: loop {
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = None;
            match event {
                Event::StartTls => {
                    let pending = session.take_output();
                    match upgrade(&mut stream, &pending, context.tls.as_ref(), context.store.as_ref()).await {
                        Some(info) => session.tls_started(info),
                        None => break 'session,
                    }
                }
                Event::LookupSecrets { authcid } => {
                    match Box::pin(auth.secrets(context.store.as_ref(), &context.auth_limiter, peer, &authcid)).await {
                        Err(AuthRefusal::Blocked) => session.auth_blocked(),
                        Err(AuthRefusal::Unavailable) => session.auth_unavailable(),
                        Ok(secrets) => {
                            let Some((returned, event)) =
                                off_async(session, move |s| s.provide_secrets(secrets.as_ref())).await
                            else {
                                tracing::error!(%peer, "POP3 login verification task failed; closing the session");
                                return;
                            };
                            session = returned;
                            next = event;
                            continue;
                        }
                    }
                }
                Event::AuthFinished { authcid, success } => {
                    let store = context.store.as_ref();
                    let limiter = &context.auth_limiter;
                    let delay = Box::pin(auth.finished(store, limiter, peer, authcid.as_deref(), success, false)).await;
                    if !success {
                        tracing::warn!(%peer, user = ?authcid, "POP3 authentication failed");
                        // The growing delay slows password guessing (SPEC 3).
                        tokio::time::sleep(delay).await;
                    }
                }
                Event::OpenMailbox { user } => {
                    let result = open_maildrop(context, &user).await;
                    session.mailbox_opened(result.map(|(open, infos)| {
                        tracing::info!(%peer, %user, messages = infos.len(), "POP3 maildrop opened");
                        maildrop = Some(open);
                        infos
                    }));
                }
                Event::Fetch { number, top } => {
                    let result = match maildrop_entry(&maildrop, number) {
                        Some((user, id)) => match context.store.get_mailbox_message(user, id).await {
                            Ok(Some((_, data))) => Ok(data),
                            Ok(None) => Err(Reply::message_gone()),
                            Err(e) => {
                                tracing::error!(error = %e, "store error reading a message for POP3");
                                Err(Reply::mailbox_unavailable())
                            }
                        },
                        None => Err(Reply::message_gone()),
                    };
                    tracing::debug!(%peer, number, ?top, ok = result.is_ok(), "POP3 fetch");
                    session.message_loaded(result);
                }
                Event::Downloaded { number } => {
                    if let Some((user, id)) = maildrop_entry(&maildrop, number) {
                        // SPEC 8.3, 9: the `downloaded` event once per message, and its
                        // tracking record routed to the sender. The message went out;
                        // failing to note it must not fail RETR (it is logged).
                        let event = vouchmail_store::NewTrackingEvent {
                            recipient: user.to_string(),
                            subject: vouchmail_store::TrackingSubject::Mailbox(id),
                            kind: vouchmail_store::TrackingKind::Downloaded,
                            at: vouchmail_proto::time::unix_seconds(std::time::SystemTime::now()),
                            reporting_server: context.session_config.hostname.clone(),
                        };
                        crate::rules::tracking::record_event(context.store.as_ref(), event, &context.outbox_bell).await;
                    }
                }
                Event::Update { deleted } => {
                    let result = match &maildrop {
                        Some(open) if !deleted.is_empty() => {
                            let ids: Vec<i64> = deleted
                                .iter()
                                .filter_map(|n| n.checked_sub(1).and_then(|i| open.ids.get(i)).copied())
                                .collect();
                            match context.store.delete_mailbox_entries(&open.user, &ids).await {
                                Ok(removed) => {
                                    tracing::info!(%peer, user = %open.user, removed, "POP3 update");
                                    Ok(())
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "store error in the POP3 UPDATE state");
                                    Err(Reply::update_failed())
                                }
                            }
                        }
                        _ => Ok(()),
                    };
                    // RFC 1939 6: release the maildrop, then answer; a client that
                    // reconnects at once finds it free.
                    maildrop = None;
                    session.update_done(result);
                }
            }
            if next.is_none() {
                next = session.poll_event();
            }
        }
        if shutting_down && session.is_idle() {
            session.on_shutdown();
        }
        let output = session.take_output();
        if !output.is_empty() && stream.write_all(&output).await.is_err() {
            break;
        }
        deadline.refresh(session.progress(), !output.is_empty(), session.read_timeout());
        if session.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        // Commands left for after a large write: run them before reading more.
        if session.has_buffered_command() {
            continue;
        }
        tokio::select! {
            read = tokio::time::timeout_at(deadline.at(), stream.read(&mut buffer)) => match read {
                Err(_elapsed) => {
                    tracing::info!(%peer, "POP3: no complete command within the autologout timer; closing");
                    session.on_timeout();
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    session.set_clock(crate::auth::guard::sasl_clock());
                    session.feed(&buffer[..n]);
                }
            },
            _ = shutdown.wait_for(|s| *s), if !shutting_down => shutting_down = true,
        }
    }
    // A dropped connection never reaches UPDATE: nothing is deleted (RFC 1939 6).
    drop(maildrop);
    tracing::debug!(%peer, "POP3 session ended");
}

/// Locks and lists the user's INBOX.
async fn open_maildrop(context: &Pop3Context, user: &str) -> Result<(OpenMaildrop, Vec<MessageInfo>), Reply> {
    let lock = context.locks.try_lock(user).ok_or_else(Reply::in_use)?;
    let entries = context.store.list_mailbox(user, Some(Folder::Inbox)).await.map_err(|e| match e {
        StoreError::NotFound(_) => Reply::no_maildrop(),
        e => {
            tracing::error!(error = %e, "store error opening a POP3 maildrop");
            Reply::mailbox_unavailable()
        }
    })?;
    let infos = entries.iter().map(|e| MessageInfo { uid: e.unique_id(), size: e.size }).collect();
    let ids = entries.iter().map(|e| e.id).collect();
    Ok((OpenMaildrop { user: user.to_lowercase(), ids, _lock: lock }, infos))
}

fn maildrop_entry(maildrop: &Option<OpenMaildrop>, number: usize) -> Option<(&str, i64)> {
    let open = maildrop.as_ref()?;
    let id = *open.ids.get(number.checked_sub(1)?)?;
    Some((open.user.as_str(), id))
}

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
