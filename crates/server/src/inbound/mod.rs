//! The SMTP listeners (MX and submission): a thin tokio shell around the session state
//! machine of `vouchmail_proto::smtp::session`.

pub mod commit;
pub mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{Event, Session, SessionConfig};
use vouchmail_store::{Delivery, Store};

use crate::limits::{ConnectionLimiter, Refusal};
use crate::tasks::TaskTracker;
use commit::{commit_message, ClientInfo};
use resolve::{resolve_recipient, SenderContext};

/// What every session of one listener shares.
pub struct SmtpContext {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    /// Where `RCPT TO:<postmaster>` goes.
    pub postmaster: Address,
}

/// Accepts connections until shutdown; each runs in its own task.
pub async fn serve_listener(
    listener: TcpListener,
    context: Arc<SmtpContext>,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
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
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let context = Arc::clone(&context);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            match context.limiter.try_acquire(peer.ip()) {
                Ok(_slot) => run_session(stream, peer, &context, shutdown).await,
                Err(refusal) => refuse(stream, &context, refusal).await,
            }
        });
    }
}

async fn refuse(mut stream: TcpStream, context: &SmtpContext, refusal: Refusal) {
    let text = match refusal {
        Refusal::TooManyTotal => "Too many connections, try again later",
        Refusal::TooManyFromIp => "Too many connections from your address, try again later",
    };
    let reply = Reply::too_many(format!("{} {text}", context.session_config.hostname));
    let _ = stream.write_all(&reply.to_wire()).await;
    let _ = stream.shutdown().await;
}

/// Drives one SMTP session over a byte stream until it ends.
pub async fn run_session<S>(
    mut stream: S,
    peer: SocketAddr,
    context: &SmtpContext,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session: Session<Vec<Delivery>> = Session::new(Arc::clone(&context.session_config));
    let mut buffer = vec![0u8; 8192];
    let mut shutting_down = *shutdown.borrow();
    tracing::debug!(%peer, "session started");
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::CheckRecipient { path, .. } => {
                    let sender = SenderContext {
                        authenticated: session.authenticated(),
                        declared_size: session.mail_params().and_then(|p| p.size).unwrap_or(0),
                    };
                    let verdict = resolve_recipient(
                        context.store.as_ref(),
                        &context.postmaster,
                        &path,
                        sender,
                    )
                    .await;
                    session.recipient_verdict(verdict);
                }
                Event::Message(envelope) => {
                    let greeting = session.greeting().cloned();
                    let client = ClientInfo {
                        peer_ip: peer.ip(),
                        helo: greeting
                            .as_ref()
                            .map(|g| g.name.as_str())
                            .unwrap_or("unknown"),
                        extended: greeting.as_ref().is_some_and(|g| g.extended),
                        tls: session.is_tls(),
                        authenticated: session.authenticated(),
                    };
                    let verdict = commit_message(
                        context.store.as_ref(),
                        &context.session_config.hostname,
                        &client,
                        envelope,
                    )
                    .await;
                    session.message_verdict(verdict);
                }
            }
        }
        if shutting_down && session.is_idle() {
            session.on_shutdown();
        }
        let output = session.take_output();
        if !output.is_empty() && stream.write_all(&output).await.is_err() {
            break;
        }
        if session.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        let timeout = session.read_timeout();
        tokio::select! {
            read = tokio::time::timeout(timeout, stream.read(&mut buffer)) => match read {
                Err(_elapsed) => session.on_timeout(),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => session.feed(&buffer[..n]),
            },
            _ = shutdown.wait_for(|s| *s), if !shutting_down => shutting_down = true,
        }
    }
    tracing::debug!(%peer, messages = session.messages_accepted(), "session ended");
}
