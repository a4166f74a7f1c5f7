//! The POP3 listeners (pop3 with STLS, pop3s with implicit TLS): a thin tokio shell around
//! the session state machine of `vouchmail_proto::pop3::session`, serving each account's
//! INBOX from the store (SPEC 9).

mod auth;
mod context;
mod maildrop;

pub use context::Pop3Context;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use vouchmail_proto::pop3::reply::Reply;
use vouchmail_proto::pop3::session::{Event, Session};

use crate::auth::guard::sasl_fresh;
use crate::listen::limits::ConnectionLimiter;
use crate::listen::limits::Refusal;
use crate::listen::{open_stream, read_input, ReadDeadline, Service};
use crate::net::tls::MaybeTls;
use context::Connection;

impl Service for Pop3Context {
    fn limiter(&self) -> &Arc<ConnectionLimiter> {
        &self.limiter
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>) {
        run_connection(stream, peer, &self, shutdown).await;
    }

    async fn refuse(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr, refusal: Refusal) {
        let reply = match refusal {
            Refusal::TooManyTotal => Reply::sys_temp("Too many connections, try again later"),
            Refusal::TooManyFromIp => Reply::sys_temp("Too many connections from your address, try again later"),
        };
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    }
}

async fn run_connection(stream: TcpStream, peer: SocketAddr, context: &Pop3Context, shutdown: watch::Receiver<bool>) {
    // SPEC 12: open and total sessions of this listener, closed however the session ends.
    let _counted = context.metrics.session();
    let Some(fresh) = sasl_fresh() else {
        tracing::error!(%peer, "POP3: no OS random source; connection closed");
        return;
    };
    let mut session = Session::new(Arc::clone(&context.session_config), fresh);
    let Some((stream, tls)) =
        open_stream(stream, context.implicit_tls, context.tls.as_ref(), context.store.as_ref()).await
    else {
        return;
    };
    if let Some(info) = tls {
        session.tls_started(info);
    }
    run_session(stream, peer, context, session, shutdown).await;
}

/// Drives one POP3 session over a connection until it ends: each event goes to its stage
/// (`auth.rs`, `maildrop.rs`), then the output is written and the next command read.
async fn run_session(
    stream: MaybeTls,
    peer: SocketAddr,
    context: &Pop3Context,
    session: Session,
    shutdown: watch::Receiver<bool>,
) {
    let mut conn = Connection::new(stream, peer, context);
    tracing::debug!(%peer, "POP3 session started");
    drive(&mut conn, session, shutdown).await;
    // A dropped connection never reaches UPDATE: nothing is deleted (RFC 1939 6). The
    // maildrop goes back before the session counts as ended, so a shutdown that waits for
    // sessions and then closes the store leaves no lease behind.
    conn.close_maildrop().await;
    tracing::debug!(%peer, "POP3 session ended");
}

/// The command loop of one session, until the session closes, the peer goes or the
/// connection fails.
async fn drive(conn: &mut Connection<'_>, mut session: Session, mut shutdown: watch::Receiver<bool>) {
    let mut shutting_down = *shutdown.borrow();
    let mut deadline = ReadDeadline::new(session.read_timeout());
    loop {
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = match event {
                Event::StartTls => {
                    if !conn.start_tls(&mut session).await {
                        return;
                    }
                    None
                }
                Event::LookupSecrets { authcid } => match conn.lookup_secrets(session, authcid).await {
                    Some((returned, event)) => {
                        session = returned;
                        event
                    }
                    None => return,
                },
                Event::AuthFinished { authcid, success } => {
                    conn.auth_finished(authcid, success, session.auth_mechanism()).await;
                    None
                }
                Event::OpenMailbox { user } => {
                    conn.open_mailbox(&mut session, user).await;
                    None
                }
                Event::Fetch { number, top } => {
                    conn.fetch(&mut session, number, top).await;
                    None
                }
                Event::Downloaded { number } => {
                    conn.downloaded(number).await;
                    None
                }
                Event::Update { deleted } => {
                    conn.update(&mut session, deleted).await;
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
        let output = session.take_output();
        if !output.is_empty() && conn.stream.write_all(&output).await.is_err() {
            break;
        }
        deadline.refresh(session.progress(), !output.is_empty(), session.read_timeout());
        if session.is_closed() {
            let _ = conn.stream.shutdown().await;
            break;
        }
        // Commands left for after a large write: run them before reading more.
        if session.has_buffered_command() {
            continue;
        }
        let (stream, peer) = (&mut conn.stream, conn.peer);
        if !read_input(&mut session, stream, &deadline, &mut shutdown, &mut shutting_down, peer).await {
            break;
        }
    }
}
