//! The IMAP listeners (imap with STARTTLS, imaps with implicit TLS, SPEC 9): a thin tokio
//! shell around the session state machine of `vouchmail_proto::imap::session`, serving
//! every folder of the account from the store. One file per stage: `auth` (STARTTLS,
//! LOGIN, AUTHENTICATE), `mailboxes` (the authenticated state's folder commands),
//! `messages` (the selected state), `changes` (changes made elsewhere, for IDLE and the
//! next command).

mod auth;
mod changes;
mod contents;
mod context;
mod mailboxes;
mod messages;

pub use context::ImapContext;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use vouchmail_proto::imap::session::{Event, Session};

use crate::auth::guard::sasl_fresh;
use crate::listen::limits::{ConnectionLimiter, Refusal};
use crate::listen::{open_stream, read_into, ReadDeadline, Service};
use crate::net::tls::MaybeTls;
use crate::support::metrics::GaugeGuard;
use context::Connection;

impl Service for ImapContext {
    fn limiter(&self) -> &Arc<ConnectionLimiter> {
        &self.limiter
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
        // Boxed: the task that runs this future keeps a copy of it (issue 25: memory per
        // idle connection).
        Box::pin(run_connection(stream, peer, &self, shutdown)).await;
    }

    async fn refuse(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr, refusal: Refusal) {
        // RFC 9051 7.1.5: BYE at once, with the reason.
        let text = match refusal {
            Refusal::TooManyTotal => "* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
            Refusal::TooManyFromIp => "* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n",
        };
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

async fn run_connection(stream: TcpStream, peer: SocketAddr, context: &ImapContext, shutdown: watch::Receiver<bool>) {
    // SPEC 12: open and total sessions of this listener, closed however the session ends.
    let _counted = context.metrics.session();
    let Some(fresh) = sasl_fresh() else {
        tracing::error!(%peer, "IMAP: no OS random source; connection closed");
        return;
    };
    // Boxed: the TLS handshake's future would otherwise take room in every session's.
    let Some((stream, tls)) =
        Box::pin(open_stream(stream, context.implicit_tls, context.tls.as_ref(), context.store.as_ref())).await
    else {
        return;
    };
    // Boxed once: the futures it passes through then hold a pointer, not a copy.
    let session = Box::new(Session::new(Arc::clone(&context.session_config), fresh, tls));
    run_session(stream, peer, context, session, shutdown).await;
}

/// Drives one IMAP session until it ends: each event goes to its stage, the output is
/// written, then the next input is read, or (with a folder selected) the folder looked at
/// for changes made elsewhere.
async fn run_session(
    stream: MaybeTls,
    peer: SocketAddr,
    context: &ImapContext,
    mut session: Box<Session>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut shutting_down = *shutdown.borrow();
    let mut conn = Connection::new(stream, peer, context);
    let mut deadline = ReadDeadline::new(session.read_timeout());
    let mut ticks = tokio::time::interval(context.watch_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(%peer, "IMAP session started");
    loop {
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = match event {
                // The session goes to a blocking thread to verify the password and back.
                Event::LookupSecrets { authcid } => match Box::pin(conn.lookup_secrets(*session, authcid)).await {
                    Some((returned, follow_up)) => {
                        *session = returned;
                        follow_up
                    }
                    None => return,
                },
                event => {
                    // Each step's future is boxed while it runs: the session's own future,
                    // held by every idle connection, then holds none of them (issue 25).
                    if !Box::pin(handle(&mut conn, &mut session, event)).await {
                        return;
                    }
                    // A FETCH batch of bodies waiting for their `downloaded` events is let
                    // out on its own as soon as they are recorded, not with the session's
                    // whole output buffer (SPEC 9).
                    if !conn.downloads.is_empty() {
                        break;
                    }
                    None
                }
            };
            if next.is_none() {
                next = session.poll_event();
            }
        }
        if shutting_down && session.is_idle() {
            session.on_shutdown();
        }
        // SPEC 9: a body goes out once its `downloaded` event is recorded.
        let going_on = session.is_running_command();
        let output = conn.releasable_output(session.take_output(), going_on).await;
        if !output.is_empty() && conn.stream.write_all(&output).await.is_err() {
            break;
        }
        deadline.refresh(session.progress(), !output.is_empty(), session.read_timeout());
        if session.is_closed() {
            let _ = conn.stream.shutdown().await;
            break;
        }
        // Commands left for after a large write: run them before reading more. Only after
        // a write: `has_buffered_command` is also true for a command still incomplete (a
        // literal on its way), which only more input completes.
        if !output.is_empty() && session.has_buffered_command() {
            continue;
        }
        // The next batch of a FETCH while the last one's events are written.
        if going_on && !conn.held.is_empty() {
            continue;
        }
        session.release_idle_buffers();
        // A batch read ahead for a job that ended early (a failure) is not wanted now.
        if let Some(ahead) = conn.read_ahead.take() {
            ahead.cancel();
        }
        let watching = conn.selected.is_some();
        let mut look = false;
        tokio::select! {
            // Read into the worker thread's buffer and fed at once: an idle session holds
            // no read buffer of its own.
            read = tokio::time::timeout_at(deadline.at(), read_into(&mut *session, &mut conn.stream)) => match read {
                Err(_elapsed) => {
                    tracing::info!(%peer, "IMAP autologout timer expired; closing");
                    session.on_timeout();
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
            },
            _ = ticks.tick(), if watching => look = true,
            _ = shutdown.wait_for(|s| *s), if !shutting_down => shutting_down = true,
        }
        // Outside the select: its shutdown branch's value may not live across an await.
        if look {
            Box::pin(conn.watch(&mut session)).await;
        }
    }
    tracing::debug!(%peer, "IMAP session ended");
}

/// One event to its stage. False: the connection must close.
async fn handle(conn: &mut Connection<'_>, session: &mut Session, event: Event) -> bool {
    match event {
        Event::StartTls => return conn.start_tls(session).await,
        // Handled by the loop, which owns the session it moves.
        Event::LookupSecrets { .. } => {}
        Event::AuthFinished { authcid, success } => {
            conn.auth_finished(authcid, success, session.auth_mechanism()).await;
            if success {
                conn.user = session.user().map(str::to_lowercase);
            }
        }
        Event::Select { mailbox, .. } => conn.select(session, mailbox).await,
        Event::MailboxClosed => conn.closed(),
        Event::Create { mailbox, special_use } => conn.create(session, mailbox, special_use).await,
        Event::Delete { mailbox } => conn.delete(session, mailbox).await,
        Event::Rename { from, to } => conn.rename(session, from, to).await,
        Event::Subscribe { mailbox, subscribe } => conn.subscribe(session, mailbox, subscribe).await,
        Event::ListMailboxes { status } => conn.list(session, status).await,
        Event::Status { mailbox } => conn.status(session, mailbox).await,
        Event::Append { mailbox, flags, date, message } => conn.append(session, mailbox, flags, date, message).await,
        Event::Quota => conn.quota(session).await,
        // SPEC 12: the IDLE gauge, held by the connection so that a session dropped while
        // idling counts down too.
        Event::Idle => conn.idling = Some(GaugeGuard::new(&conn.context.metrics.metrics.imap_idle)),
        Event::IdleDone => conn.idling = None,
        Event::Fetch { uids, content, mark_seen, next } => conn.fetch(session, uids, content, mark_seen, next).await,
        Event::Downloaded { uids } => conn.downloaded(uids),
        Event::Store { uids, mode, flags, unchanged_since } => {
            conn.store_flags(session, uids, mode, flags, unchanged_since).await
        }
        Event::Copy { uids, target, is_move } => conn.copy(session, uids, target.as_str().to_string(), is_move).await,
        Event::Expunge { uids } => conn.expunge(session, uids).await,
    }
    true
}
