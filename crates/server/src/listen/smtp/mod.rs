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
        run_connection(stream, peer, &self, shutdown).await;
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
    let mut session: SmtpSession = Session::new(Arc::clone(&context.session_config), fresh);
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
    let mut session: SmtpSession = Session::new(Arc::clone(&context.session_config), fresh);
    if let Some(info) = tls {
        // The trace fields then say ESMTPS (RFC 3848), as for any session inside TLS.
        session.tls_started(info);
    }
    let (_never, shutdown) = watch::channel(false);
    run_session(MaybeTls::Other(stream), peer, context, session, shutdown).await
}

/// Drives one SMTP session over a connection until it ends: each event goes to its stage
/// (a file each), then the output is written and the next input read.
async fn run_session(
    stream: MaybeTls,
    peer: SocketAddr,
    context: &SmtpContext,
    mut session: SmtpSession,
    mut shutdown: watch::Receiver<bool>,
) -> u64 {
    let mut buffer = vec![0u8; 8192];
    let mut shutting_down = *shutdown.borrow();
    let mut conn = Connection::new(stream, peer, context);
    let mut deadline = ReadDeadline::new(session.read_timeout());
    tracing::debug!(%peer, "session started");
    loop {
        session.set_memory_pressure(context.memory.is_exhausted());
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = match event {
                Event::CheckRecipient { path, .. } => {
                    conn.check_recipient(&mut session, path).await;
                    None
                }
                Event::CheckSender { from } => {
                    conn.check_sender(&mut session, from).await;
                    None
                }
                Event::BodyChunk { offset, chunk } => {
                    conn.body_chunk(&mut session, offset, chunk).await;
                    None
                }
                Event::Message(envelope) => {
                    conn.message(&mut session, envelope).await;
                    None
                }
                Event::StartTls => {
                    if !conn.start_tls(&mut session).await {
                        return end(&session, peer);
                    }
                    None
                }
                Event::LookupSecrets { authcid } => match conn.lookup_secrets(session, authcid).await {
                    Some((returned, event)) => {
                        session = returned;
                        event
                    }
                    None => return 0,
                },
                Event::AuthFinished { authcid, success, via_verifier } => {
                    conn.auth_finished(authcid, success, via_verifier, session.auth_mechanism()).await;
                    None
                }
                Event::Atrn { domains } => {
                    conn.atrn(&mut session, domains).await;
                    None
                }
                Event::Etrn { node } => {
                    conn.etrn(&mut session, node).await;
                    None
                }
                Event::Messenger(request) => conn.messenger(&mut session, request).await,
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
        conn = match conn.reverse_if_granted(&mut session).await {
            Ok(()) => return session.messages_accepted(),
            Err(conn) => conn,
        };
        if session.is_closed() {
            let _ = conn.stream.shutdown().await;
            break;
        }
        let stream = &mut conn.stream;
        if !read_input(&mut session, stream, &mut buffer, &deadline, &mut shutdown, &mut shutting_down, peer).await {
            break;
        }
    }
    end(&session, peer)
}

fn end(session: &SmtpSession, peer: SocketAddr) -> u64 {
    tracing::debug!(%peer, messages = session.messages_accepted(), "session ended");
    session.messages_accepted()
}
