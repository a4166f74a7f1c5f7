//! The SMTP listeners (MX, submission, submissions): a thin tokio shell around the session
//! state machine of `vouchmail_proto::smtp::session`.

pub mod commit;
pub mod policy;
pub mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vouchmail_proto::sasl::SaslError;
use vouchmail_proto::smtp::address::{Address, ReversePath};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_proto::smtp::session::{
    sasl_reply, Event, MessengerAnswer, MessengerRequest, RcramVerdict, Session, SessionConfig, TlsInfo,
};
use vouchmail_store::Store;

use crate::auth_limit::AuthLimiter;
use crate::authkey::AuthKeys;
use crate::driver::{accept_loop, off_async, upgrade, AuthGuard, AuthRefusal, ReadDeadline};
use crate::limits::{ConnectionLimiter, Refusal};
use crate::odmr::Odmr;
use crate::spool::{MemoryBudget, MemoryCharge, Spool};
use crate::tasks::TaskTracker;
use crate::tls::{self, MaybeTls, Tls};
use commit::{commit_message, ClientInfo};
use policy::Decision;
use resolve::{resolve_recipient, store_reply, Resolved, SenderContext};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// What every session of one listener shares.
pub struct SmtpContext {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub auth_limiter: Arc<AuthLimiter>,
    /// Where `RCPT TO:<postmaster>` goes.
    pub postmaster: Address,
    pub tls: Option<Tls>,
    /// Port 465: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// ATRN and ETRN decisions and the reversed session.
    pub odmr: Arc<Odmr>,
    /// Where large message bodies are spooled while they arrive (`<data_dir>/spool`).
    pub spool_dir: std::path::PathBuf,
    /// In-flight message memory, shared by every SMTP listener (`smtp.max_inflight_bytes`).
    pub memory: Arc<MemoryBudget>,
    /// AuthKeys: stamping on the sender side, verification on the recipient side.
    pub authkeys: Arc<AuthKeys>,
    /// The Messenger verbs' answers (SPEC 8); None where the listener is not a Messenger one.
    pub messenger: Option<Arc<crate::messenger::Messenger>>,
}

/// Accepts connections until shutdown; each runs in its own task.
pub async fn serve_listener(
    listener: TcpListener,
    context: Arc<SmtpContext>,
    shutdown: watch::Receiver<bool>,
    tasks: TaskTracker,
) {
    accept_loop(listener, shutdown, tasks, move |stream, peer, shutdown| {
        let context = Arc::clone(&context);
        async move {
            match context.limiter.try_acquire(peer.ip()) {
                Ok(_slot) => run_connection(stream, peer, &context, shutdown).await,
                Err(refusal) => refuse(stream, &context, refusal).await,
            }
        }
    })
    .await
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

async fn run_connection(stream: TcpStream, peer: SocketAddr, context: &SmtpContext, shutdown: watch::Receiver<bool>) {
    let Some(fresh) = crate::driver::sasl_fresh() else {
        tracing::error!(%peer, "no OS random source; connection closed");
        return;
    };
    let mut session: Session<Resolved> = Session::new(Arc::clone(&context.session_config), fresh);
    let stream = if context.implicit_tls {
        let Some(tls) = &context.tls else { return };
        // RFC 8314 3.3: the handshake comes first, then the greeting inside TLS.
        match Box::pin(handshake(tls, stream, context.store.as_ref())).await {
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

/// Serves an SMTP session over a stream the caller set up (the ODMR customer's reversed
/// session, inside the TLS the caller started when `tls` says so); returns the number of
/// messages accepted.
pub async fn serve_stream(
    stream: Box<dyn crate::stream::Stream>,
    peer: SocketAddr,
    context: &SmtpContext,
    tls: Option<TlsInfo>,
) -> u64 {
    let Some(fresh) = crate::driver::sasl_fresh() else {
        tracing::error!(%peer, "no OS random source; connection closed");
        return 0;
    };
    let mut session: Session<Resolved> = Session::new(Arc::clone(&context.session_config), fresh);
    if let Some(info) = tls {
        // The trace fields then say ESMTPS (RFC 3848), as for any session inside TLS.
        session.tls_started(info);
    }
    let (_never, shutdown) = watch::channel(false);
    run_session(MaybeTls::Other(stream), peer, context, session, shutdown).await
}

/// Runs the server side of a TLS handshake and gathers what the session needs to know.
pub(crate) async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    store: &dyn Store,
) -> Option<(Box<tokio_rustls::server::TlsStream<TcpStream>>, TlsInfo)> {
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    let (version, cipher) = tls::describe(&stream);
    let mut external_identity = None;
    if let Some(cert) = tls.client_certificate(&stream) {
        // A name is trusted only when a configured CA vouched for it.
        let subject = cert.ca_verified.then_some(cert.subject.as_str());
        match store.cert_mapping_account(&cert.fingerprint, subject).await {
            Ok(account) => external_identity = account,
            Err(e) => tracing::warn!(error = %e, "cannot look up the client certificate mapping"),
        }
        tracing::debug!(fingerprint = %cert.fingerprint, subject = %cert.subject, account = ?external_identity, "client certificate");
    }
    let info = TlsInfo { version, cipher, channel_binding: tls::channel_binding(&stream), external_identity };
    Some((Box::new(stream), info))
}

/// Drives one SMTP session over a connection until it ends.
async fn run_session(
    mut stream: MaybeTls,
    peer: SocketAddr,
    context: &SmtpContext,
    mut session: Session<Resolved>,
    mut shutdown: watch::Receiver<bool>,
) -> u64 {
    let mut buffer = vec![0u8; 8192];
    let mut auth = AuthGuard::default();
    let mut shutting_down = *shutdown.borrow();
    let mut reversed: Option<(String, Vec<String>)> = None;
    let mut spool = Spool::new(&context.spool_dir);
    let mut memory = MemoryCharge::new(&context.memory);
    let mut deadline = ReadDeadline::new(session.read_timeout());
    let mut rcram_link = crate::messenger::rcram::RcramLink::default();
    tracing::debug!(%peer, "session started");
    'session: loop {
        session.set_memory_pressure(context.memory.is_exhausted());
        let mut next = session.poll_event();
        while let Some(event) = next {
            next = None;
            match event {
                Event::CheckRecipient { path, .. } => {
                    let sender = SenderContext {
                        authenticated: session.authenticated(),
                        remote_auth: session.is_remote_authenticated(),
                        declared_size: session.mail_params().and_then(|p| p.size).unwrap_or(0),
                        trusted_relay: context.session_config.trusted_relay,
                        later_methods: context.authkeys.verify,
                        transaction_policy: session.recipients().iter().find_map(|r| r.resolved.policy),
                    };
                    let verdict =
                        Box::pin(resolve_recipient(context.store.as_ref(), &context.postmaster, &path, sender)).await;
                    session.recipient_verdict(verdict);
                }
                Event::BodyChunk { offset, chunk } => {
                    if let Err(e) = spool.write(offset, chunk).await {
                        tracing::error!(%peer, error = %e, "cannot spool message data");
                        session.spill_failed();
                    }
                }
                Event::Message(mut envelope) => {
                    let spooled = match envelope.spilled {
                        0 => Ok(None),
                        len => spool.take(len).map(Some).ok_or(()),
                    };
                    let greeting = session.greeting().cloned();
                    let client = ClientInfo {
                        peer_ip: peer.ip(),
                        helo: greeting.as_ref().map(|g| g.name.as_str()).unwrap_or("unknown"),
                        extended: greeting.as_ref().is_some_and(|g| g.extended),
                        tls: session.is_tls(),
                        authenticated: session.authenticated(),
                        remote_auth: session.is_remote_authenticated(),
                        service: context.session_config.service,
                        trusted_relay: context.session_config.trusted_relay,
                    };
                    // Boxed: the big futures of rare steps stay off every idle session's task.
                    let hostname = &context.session_config.hostname;
                    let verdict = match spooled {
                        Ok(spooled) => {
                            let store = context.store.as_ref();
                            let decision =
                                Box::pin(policy::decide(&context.authkeys, store, hostname, &client, &mut envelope))
                                    .await;
                            match decision {
                                Decision::Deliver { auth, folder } => {
                                    Box::pin(commit_message(store, hostname, &client, envelope, spooled, auth, folder))
                                        .await
                                }
                                Decision::KeyRecorded => Ok("key recorded".to_string()),
                                Decision::Refuse(reply) => Err(reply),
                            }
                        }
                        Err(()) => {
                            tracing::error!(%peer, "the spooled message data is incomplete");
                            Err(Reply::local_error("Local error in processing, try again later"))
                        }
                    };
                    session.message_verdict(verdict);
                }
                Event::CheckSender { from } => {
                    let user = session.authenticated().unwrap_or_default().to_string();
                    let verdict = Box::pin(check_sender(context.store.as_ref(), &user, &from)).await;
                    session.sender_verdict(verdict);
                }
                Event::StartTls => {
                    let pending = session.take_output();
                    match Box::pin(upgrade(&mut stream, &pending, context.tls.as_ref(), context.store.as_ref())).await {
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
                                tracing::error!(%peer, "AUTH verification task failed; closing the session");
                                return 0;
                            };
                            session = returned;
                            next = event;
                            continue;
                        }
                    }
                }
                Event::Atrn { domains } => {
                    let account = session.authenticated().unwrap_or_default().to_string();
                    let verdict = Box::pin(context.odmr.check_atrn(&account, &domains)).await;
                    tracing::info!(%peer, %account, ?domains, verdict = ?verdict.as_ref().map_err(|r| r.to_string()), "ATRN");
                    match verdict {
                        Ok(granted) => {
                            session.atrn_verdict(Ok(()));
                            reversed = Some((account, granted));
                        }
                        Err(reply) => session.atrn_verdict(Err(reply)),
                    }
                }
                Event::Messenger(request) if request.is_rcram() => {
                    // SPEC 8.2: the RCRAM steps, with this session's exchange (verifier)
                    // and the AUTH limits.
                    let Some(messenger) = &context.messenger else {
                        session.messenger_verdict(MessengerAnswer::Reply(Reply::not_implemented(
                            "Command not implemented",
                        )));
                        continue;
                    };
                    let (store, limiter) = (context.store.as_ref(), context.auth_limiter.as_ref());
                    let verdict = match request {
                        // SPEC 8.2 / SPEC 3: the AUTH limits hold for remote logins too, with
                        // the same exemption for familiar clients (at the home server, the
                        // verifier is the client).
                        MessengerRequest::RcramStart { address }
                            if Box::pin(auth.admit(store, limiter, peer, &address)).await.is_err() =>
                        {
                            rcram_link.cancel();
                            Some(RcramVerdict::Unavailable(sasl_reply(SaslError::Temporary)))
                        }
                        MessengerRequest::VerifyStart { address, .. }
                            if Box::pin(auth.admit_verifier(store, limiter, peer, &address)).await.is_err() =>
                        {
                            Some(RcramVerdict::Unavailable(sasl_reply(SaslError::Temporary)))
                        }
                        MessengerRequest::RcramStart { address } => {
                            Some(Box::pin(messenger.rcram_start(&mut rcram_link, &address, peer)).await)
                        }
                        MessengerRequest::RcramAnswer { address, line } => {
                            Some(Box::pin(messenger.rcram_answer(&mut rcram_link, &address, &line, peer)).await)
                        }
                        MessengerRequest::VerifyStart { address, verifier } => {
                            Some(Box::pin(messenger.verify_start(&address, &verifier, peer, limiter)).await)
                        }
                        MessengerRequest::VerifyAnswer { address, challenge, response } => {
                            Some(Box::pin(messenger.verify_answer(&address, &challenge, &response, peer)).await)
                        }
                        _ => {
                            rcram_link.cancel();
                            None
                        }
                    };
                    if let Some(verdict) = verdict {
                        next = session.rcram_verdict(verdict);
                        if next.is_some() {
                            continue;
                        }
                    }
                }
                Event::Messenger(request) => {
                    let user = session.authenticated().map(str::to_string);
                    let answer = match &context.messenger {
                        Some(messenger) => Box::pin(messenger.answer(request, user.as_deref(), peer)).await,
                        None => MessengerAnswer::Reply(Reply::not_implemented("Command not implemented")),
                    };
                    session.messenger_verdict(answer);
                }
                Event::Etrn { node } => {
                    let reply = Box::pin(context.odmr.etrn(&node)).await;
                    tracing::info!(%peer, %node, reply = %reply, "ETRN");
                    session.etrn_verdict(reply);
                }
                Event::AuthFinished { authcid, success, via_verifier } => {
                    let store = context.store.as_ref();
                    let limiter = &context.auth_limiter;
                    let delay =
                        Box::pin(auth.finished(store, limiter, peer, authcid.as_deref(), success, via_verifier)).await;
                    if success && via_verifier {
                        tracing::info!(%peer, user = ?authcid, "verified for a verifier (X-RCRAM-VERIFY)");
                    } else if success {
                        tracing::info!(%peer, user = ?authcid, "authenticated");
                    } else {
                        tracing::warn!(%peer, user = ?authcid, "authentication failed");
                        // The growing delay slows password guessing (SPEC 3).
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            if next.is_none() {
                next = session.poll_event();
            }
        }
        if shutting_down && session.is_idle() {
            session.on_shutdown();
        }
        // Issue 14: what the session holds counts against the shared budget; past it, the
        // message being received is dropped and answered 452 4.3.1.
        if !memory.set(session.buffered_len()) {
            tracing::info!(%peer, in_flight = context.memory.used(), "message memory budget exhausted");
            session.memory_exhausted();
            memory.set(session.buffered_len());
        }
        let output = session.take_output();
        if !output.is_empty() && stream.write_all(&output).await.is_err() {
            break;
        }
        deadline.refresh(session.progress(), !output.is_empty(), session.read_timeout());
        if let Some((account, domains)) = reversed.take().filter(|_| session.is_reversed()) {
            // RFC 2645 5.3: the roles reverse on this connection, inside TLS if started.
            let unread = session.take_unread_input();
            let tls = session.is_tls();
            Box::pin(context.odmr.reverse(Box::new(stream), unread, peer, &account, &domains, tls)).await;
            return session.messages_accepted();
        }
        if session.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        tokio::select! {
            read = tokio::time::timeout_at(deadline.at(), stream.read(&mut buffer)) => match read {
                Err(_elapsed) => {
                    tracing::info!(%peer, "no complete command or data block within the timeout; closing");
                    session.on_timeout();
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    session.set_clock(crate::driver::sasl_clock());
                    session.feed(&buffer[..n]);
                }
            },
            _ = shutdown.wait_for(|s| *s), if !shutting_down => shutting_down = true,
        }
    }
    tracing::debug!(%peer, messages = session.messages_accepted(), "session ended");
    session.messages_accepted()
}

/// Submission: MAIL FROM must be an address the user owns, its own or an alias that leads
/// to it (553 5.7.1 otherwise). The null sender is allowed (auto-replies, receipts).
async fn check_sender(store: &dyn Store, user: &str, from: &ReversePath) -> Result<(), Reply> {
    let ReversePath::Mailbox(address) = from else { return Ok(()) };
    let address = address.to_string().to_lowercase();
    if address.eq_ignore_ascii_case(user) {
        return Ok(());
    }
    let targets = store.alias_targets(&address).await.map_err(|e| store_reply(&e))?;
    if targets.iter().any(|t| t.eq_ignore_ascii_case(user)) {
        return Ok(());
    }
    Err(Reply::new(553, EnhancedCode(5, 7, 1), format!("Sender address <{address}> is not owned by {user}")))
}
