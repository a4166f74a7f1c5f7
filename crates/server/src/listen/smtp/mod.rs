//! The SMTP listeners (MX, submission, submissions): a thin tokio shell around the session
//! state machine of `vouchmail_proto::smtp::session`.

mod auth;
mod context;
mod data;
mod mail;
mod messenger;
mod rcpt;
pub mod spool;
mod starttls;
mod turn;

pub use context::SmtpContext;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{Event, Session, TlsInfo};

use crate::auth::guard::sasl_fresh;
use crate::listen::limits::ConnectionLimiter;
use crate::listen::limits::Refusal;
use crate::listen::{open_stream, read_input, ReadDeadline, Service};
use crate::net::tls::MaybeTls;
use context::{Connection, SmtpSession};

impl Service for SmtpContext {
    fn limiter(&self) -> &Arc<ConnectionLimiter> {
        &self.limiter
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
        // Boxed (issue 25: memory per idle connection): the task around this future
        // (`TaskTracker::spawn`) keeps a second copy of what it awaits, so the session's
        // state lives once, in this box, and the task itself stays a few hundred octets.
        Box::pin(run_connection(stream, peer, &self, shutdown)).await;
    }

    async fn refuse(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr, refusal: Refusal) {
        let text = match refusal {
            Refusal::TooManyTotal => "Too many connections, try again later",
            Refusal::TooManyFromIp => "Too many connections from your address, try again later",
        };
        let reply = Reply::too_many(format!("{} {text}", self.session_config.hostname));
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    }
}

async fn run_connection(stream: TcpStream, peer: SocketAddr, context: &SmtpContext, shutdown: watch::Receiver<bool>) {
    // SPEC 12: open and total sessions of this listener, closed however the session ends.
    let _counted = context.metrics.session();
    let Some(fresh) = sasl_fresh() else {
        tracing::error!(%peer, "no OS random source; connection closed");
        return;
    };
    let mut session = new_session(context, fresh);
    let Some((stream, tls)) =
        Box::pin(open_stream(stream, context.implicit_tls, context.tls.as_ref(), context.store.as_ref())).await
    else {
        return;
    };
    if let Some(info) = tls {
        session.tls_started(info);
    }
    run_session(stream, peer, context, session, shutdown).await;
}

/// The ODMR customer's reversed session (RFC 2645 5.3), kept in our own store.
impl crate::jobs::odmr_fetch::ReversedServer for SmtpContext {
    fn serve<'a>(
        &'a self,
        stream: Box<dyn crate::net::stream::Stream>,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send + 'a>> {
        Box::pin(serve_stream(stream, peer, self, tls))
    }

    fn trusts_provider(&self) -> bool {
        self.session_config.trusted_relay
    }
}

/// Serves an SMTP session over a stream the caller set up (the ODMR customer's reversed
/// session, inside the TLS the caller started when `tls` says so); returns the number of
/// messages accepted.
pub async fn serve_stream(
    stream: Box<dyn crate::net::stream::Stream>,
    peer: SocketAddr,
    context: &SmtpContext,
    tls: Option<TlsInfo>,
) -> u64 {
    let _counted = context.metrics.session();
    let Some(fresh) = sasl_fresh() else {
        tracing::error!(%peer, "no OS random source; connection closed");
        return 0;
    };
    let mut session = new_session(context, fresh);
    if let Some(info) = tls {
        // The trace fields then say ESMTPS (RFC 3848), as for any session inside TLS.
        session.tls_started(info);
    }
    let (_never, shutdown) = watch::channel(false);
    run_session(MaybeTls::Other(stream), peer, context, session, shutdown).await
}

/// A new session, boxed (issue 25): the futures that hand it on (`run_connection` to
/// `run_session`) each keep room for what they were given, so the session itself is
/// kept once, on the heap, and they keep a pointer.
fn new_session(context: &SmtpContext, fresh: vouchmail_proto::sasl::Fresh) -> Box<SmtpSession> {
    Box::new(Session::new(Arc::clone(&context.session_config), fresh))
}

/// Drives one SMTP session over a connection until it ends: each event goes to its stage
/// (a file each), then the output is written and the next input read.
async fn run_session(
    stream: MaybeTls,
    peer: SocketAddr,
    context: &SmtpContext,
    mut session: Box<SmtpSession>,
    mut shutdown: watch::Receiver<bool>,
) -> u64 {
    let mut shutting_down = *shutdown.borrow();
    let mut conn = Connection::new(stream, peer, context);
    let mut deadline = ReadDeadline::new(session.read_timeout());
    tracing::debug!(%peer, "session started");
    loop {
        session.set_memory_pressure(context.memory.is_exhausted());
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = match event {
                // Each step boxed (issue 25): a future awaited here takes room in this
                // session's state for as long as the connection lasts, idle or not; boxed,
                // only while it runs.
                Event::CheckRecipient { path, .. } => {
                    Box::pin(conn.check_recipient(&mut session, path)).await;
                    None
                }
                Event::CheckSender { from } => {
                    Box::pin(conn.check_sender(&mut session, from)).await;
                    None
                }
                Event::BodyChunk { offset, chunk } => {
                    Box::pin(conn.body_chunk(&mut session, offset, chunk)).await;
                    None
                }
                Event::Message(envelope) => {
                    Box::pin(conn.message(&mut session, envelope)).await;
                    None
                }
                Event::StartTls => {
                    if !Box::pin(conn.start_tls(&mut session)).await {
                        return end(&session, peer);
                    }
                    None
                }
                Event::LookupSecrets { authcid } => match Box::pin(conn.lookup_secrets(*session, authcid)).await {
                    Some((returned, event)) => {
                        *session = returned;
                        event
                    }
                    None => return 0,
                },
                Event::AuthFinished { authcid, success, via_verifier } => {
                    let mechanism = session.auth_mechanism();
                    Box::pin(conn.auth_finished(authcid, success, via_verifier, mechanism)).await;
                    None
                }
                Event::Atrn { domains } => {
                    Box::pin(conn.atrn(&mut session, domains)).await;
                    None
                }
                Event::Etrn { node } => {
                    Box::pin(conn.etrn(&mut session, node)).await;
                    None
                }
                Event::Messenger(request) => Box::pin(conn.messenger(&mut session, request)).await,
            };
            if next.is_none() {
                next = session.poll_event();
            }
        }
        // SPEC 12: what the session refused by its own rules; the driver's own verdicts
        // were counted where they were made.
        for reply in session.take_refusals() {
            context.metrics.refused_reply(&reply);
        }
        if shutting_down && session.is_idle() {
            session.on_shutdown();
        }
        // Issue 14: what the session holds counts against the shared budget; past it, the
        // message being received is dropped and answered 452 4.3.1.
        if !conn.memory.set(session.buffered_len()) {
            tracing::info!(%peer, in_flight = context.memory.used(), "message memory budget exhausted");
            session.memory_exhausted();
            conn.memory.set(session.buffered_len());
        }
        let output = session.take_output();
        if !output.is_empty() && conn.stream.write_all(&output).await.is_err() {
            break;
        }
        deadline.refresh(session.progress(), !output.is_empty(), session.read_timeout());
        if conn.reversed.is_some() {
            conn = match Box::pin(conn.reverse_if_granted(&mut session)).await {
                Ok(()) => return session.messages_accepted(),
                Err(conn) => conn,
            };
        }
        if session.is_closed() {
            let _ = conn.stream.shutdown().await;
            break;
        }
        // Issue 25: what the session holds while it waits for the client is trimmed, and
        // the read needs no buffer of its own (`read_input`).
        session.release_idle_buffers();
        let stream = &mut conn.stream;
        if !read_input(&mut *session, stream, &deadline, &mut shutdown, &mut shutting_down, peer).await {
            break;
        }
    }
    end(&session, peer)
}

fn end(session: &SmtpSession, peer: SocketAddr) -> u64 {
    tracing::debug!(%peer, messages = session.messages_accepted(), "session ended");
    session.messages_accepted()
}
