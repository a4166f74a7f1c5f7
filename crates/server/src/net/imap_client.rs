//! An IMAP client over any async stream: a thin tokio shell around
//! `vouchmail_proto::imap::client`, for the tests and the benchmarks. Plain TCP, STARTTLS
//! ([`ImapClient::starttls`], then [`ImapClient::resume`] on the TLS stream) and implicit
//! TLS ([`connect_tls`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vouchmail_server::net::imap_client::ImapClientError> {
//! use vouchmail_server::net::imap_client::ImapClient;
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:2143").await?;
//! let (mut imap, _greeting) = ImapClient::connect(tcp).await?;
//! imap.login("user@localhost", "secret").await?;
//! let inbox = imap.select("INBOX").await?;
//! for fetch in imap.fetch(&format!("1:{}", inbox.exists.max(1)), "(UID BODY.PEEK[HEADER])").await? {
//!     println!("{:?}: {} header octets", fetch.uid(), fetch.body("HEADER").map_or(0, |h| h.len()));
//! }
//! imap.logout().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vouchmail_proto::imap::client::{
    decode_challenge, Client, ClientError, Completion, Fetch, ListEntry, LiteralMode, MailboxStatus, Request, Response,
    StatusText, Untagged,
};
use vouchmail_proto::imap::{NameEncoding, Status, Tag};
use vouchmail_proto::sasl::{self, ClientSession, Credentials, Mechanism, SaslError};

/// Most numbers an ESEARCH `ALL` may expand to (a server's `1:4294967295` must not make
/// the client allocate without bound).
const MAX_SEARCH_RESULTS: u64 = 10_000_000;

/// Why a client operation failed.
#[derive(Debug)]
pub enum ImapClientError {
    Io(std::io::Error),
    /// No response in time.
    Timeout,
    /// The server broke the protocol.
    Protocol(ClientError),
    /// The server answered NO or BAD (with its response code, if any).
    Server(Completion),
    /// The greeting was BYE (RFC 9051 7.1.5).
    Refused(StatusText),
    /// The SASL exchange failed on our side.
    Sasl(SaslError),
}

impl fmt::Display for ImapClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapClientError::Io(e) => write!(f, "IMAP connection: {e}"),
            ImapClientError::Timeout => f.write_str("IMAP server did not answer in time"),
            ImapClientError::Protocol(e) => write!(f, "{e}"),
            ImapClientError::Server(c) => write!(f, "IMAP server: {} {}", c.status.as_str(), c.text),
            ImapClientError::Refused(s) => write!(f, "IMAP server refused the connection: {}", s.text),
            ImapClientError::Sasl(e) => write!(f, "IMAP authentication: {e}"),
        }
    }
}

impl std::error::Error for ImapClientError {}

impl From<std::io::Error> for ImapClientError {
    fn from(e: std::io::Error) -> Self {
        ImapClientError::Io(e)
    }
}

impl From<ClientError> for ImapClientError {
    fn from(e: ClientError) -> Self {
        ImapClientError::Protocol(e)
    }
}

pub type ImapResult<T> = Result<T, ImapClientError>;

/// A completed command: the untagged responses that came while it ran, and its
/// completion.
#[derive(Debug, Clone)]
pub struct Reply {
    pub untagged: Vec<Untagged>,
    pub completion: Completion,
}

/// What SELECT or EXAMINE said of the mailbox (RFC 9051 6.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    pub exists: u32,
    pub flags: Vec<String>,
    pub uid_validity: Option<u32>,
    pub uid_next: Option<u32>,
    /// RFC 7162 3.1.2.1.
    pub highest_modseq: Option<u64>,
    pub read_only: bool,
}

/// One IMAP connection.
pub struct ImapClient<S> {
    stream: S,
    client: Client,
    buffer: Vec<u8>,
    /// The latest capability list the server sent (greeting, CAPABILITY, LOGIN's code).
    capabilities: Vec<String>,
    /// How mailbox names go out (modified UTF-7 to IMAP4rev1 servers, RFC 3501 5.1.3).
    pub encoding: NameEncoding,
    /// How long to wait for each read.
    pub timeout: Duration,
}

/// RFC 8314: implicit TLS (imaps), then the greeting.
pub async fn connect_tls(
    tcp: TcpStream,
    connector: &TlsConnector,
    name: ServerName<'static>,
) -> ImapResult<(ImapClient<TlsStream<TcpStream>>, StatusText)> {
    let stream = connector.connect(name, tcp).await?;
    ImapClient::connect(stream).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> ImapClient<S> {
    /// Reads the greeting on a fresh connection (or on an imaps one after the handshake);
    /// a BYE greeting is an error.
    pub async fn connect(stream: S) -> ImapResult<(ImapClient<S>, StatusText)> {
        let mut imap = ImapClient::resume(stream);
        match imap.next_response().await? {
            Response::Untagged(Untagged::Status(greeting)) if greeting.status == Status::Bye => {
                Err(ImapClientError::Refused(greeting))
            }
            Response::Untagged(Untagged::Status(greeting)) => Ok((imap, greeting)),
            other => Err(unexpected(other)),
        }
    }

    /// Continues on a stream wrapped in TLS after [`ImapClient::starttls`]; no greeting
    /// comes (RFC 9051 6.2.1).
    pub fn resume(stream: S) -> ImapClient<S> {
        ImapClient {
            stream,
            client: Client::new(),
            buffer: vec![0; 64 * 1024],
            capabilities: Vec::new(),
            encoding: NameEncoding::ModifiedUtf7,
            timeout: Duration::from_secs(600),
        }
    }

    /// The capabilities the server last announced.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// How the client sends literals now (RFC 7888, from the capabilities).
    pub fn literal_mode(&self) -> LiteralMode {
        self.client.literal_mode()
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(name))
    }

    /// Queues a command without sending it (see [`ImapClient::flush`]): for pipelining.
    pub fn send(&mut self, request: &Request) -> Tag {
        self.client.send(request)
    }

    /// Sends one command and reads until its completion; NO and BAD are errors.
    pub async fn command(&mut self, request: &Request) -> ImapResult<Reply> {
        let tag = self.client.send(request);
        self.flush().await?;
        let reply = self.until_done(&tag).await?;
        if reply.completion.status == Status::Ok {
            Ok(reply)
        } else {
            Err(ImapClientError::Server(reply.completion))
        }
    }

    /// Reads responses until the completion of `tag`, keeping the untagged ones.
    pub async fn until_done(&mut self, tag: &Tag) -> ImapResult<Reply> {
        let mut untagged = Vec::new();
        loop {
            match self.next_response().await? {
                Response::Untagged(u) => untagged.push(u),
                Response::Done(completion) if completion.tag == *tag => return Ok(Reply { untagged, completion }),
                // Another pipelined command's completion: the caller did not ask to see it.
                Response::Done(_) => {}
                other => return Err(unexpected(other)),
            }
        }
    }

    /// RFC 9051 6.1.1.
    pub async fn capability(&mut self) -> ImapResult<Vec<String>> {
        self.command(&Request::new("CAPABILITY")).await?;
        Ok(self.capabilities.clone())
    }

    /// RFC 9051 6.2.1: sends STARTTLS and hands back the stream for the TLS handshake;
    /// continue with [`ImapClient::resume`] on the TLS stream.
    pub async fn starttls(mut self) -> ImapResult<S> {
        self.command(&Request::new("STARTTLS")).await?;
        Ok(self.stream)
    }

    /// RFC 9051 6.2.3 LOGIN.
    pub async fn login(&mut self, user: &str, password: &str) -> ImapResult<Completion> {
        let request = Request::new("LOGIN").astring(user.as_bytes()).astring(password.as_bytes());
        Ok(self.command(&request).await?.completion)
    }

    /// RFC 9051 6.2.2 AUTHENTICATE with one of the shared SASL mechanisms, with an initial
    /// response when the server takes SASL-IR (RFC 4959).
    pub async fn authenticate(&mut self, mechanism: Mechanism, credentials: Credentials) -> ImapResult<Completion> {
        // RFC 5802 5.1: a SCRAM client nonce from the OS random source.
        let mut random = [0u8; sasl::NONCE_RANDOM_LEN];
        getrandom::getrandom(&mut random).map_err(|_| ImapClientError::Sasl(SaslError::Temporary))?;
        let mut session = ClientSession::new(mechanism, credentials).with_random_nonce(&random);
        let initial = session.initial_response().map_err(ImapClientError::Sasl)?;
        let mut request = Request::new("AUTHENTICATE").arg(session.mechanism().name());
        if let (Some(initial), true) = (&initial, self.has_capability("SASL-IR")) {
            request = request.arg(&sasl::encode_initial_response(initial));
        }
        let tag = self.client.send(&request.expect_continuation());
        self.flush().await?;
        let mut initial = if self.has_capability("SASL-IR") { None } else { initial };
        loop {
            match self.next_response().await? {
                Response::Continuation(text) => {
                    let answer = match initial.take() {
                        Some(first) => Ok(first),
                        None => decode_challenge(&text)
                            .map_err(ImapClientError::Protocol)
                            .and_then(|challenge| session.step(&challenge).map_err(ImapClientError::Sasl)),
                    };
                    match answer {
                        Ok(answer) => self.client.send_sasl_response(&answer),
                        Err(e) => {
                            // RFC 9051 6.2.2: `*` cancels; the server's BAD ends the exchange.
                            self.client.cancel_sasl();
                            self.flush().await?;
                            self.until_done(&tag).await?;
                            return Err(e);
                        }
                    }
                    self.flush().await?;
                }
                Response::Untagged(_) => {}
                Response::Done(completion) if completion.tag == tag => {
                    if !completion.is_ok() {
                        return Err(ImapClientError::Server(completion));
                    }
                    session.finish(None).map_err(ImapClientError::Sasl)?;
                    return Ok(completion);
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// RFC 9051 6.3.2 SELECT.
    pub async fn select(&mut self, mailbox: &str) -> ImapResult<Selected> {
        self.open("SELECT", mailbox).await
    }

    /// RFC 9051 6.3.3 EXAMINE.
    pub async fn examine(&mut self, mailbox: &str) -> ImapResult<Selected> {
        self.open("EXAMINE", mailbox).await
    }

    async fn open(&mut self, command: &str, mailbox: &str) -> ImapResult<Selected> {
        let reply = self.command(&Request::new(command).mailbox(mailbox, self.encoding)).await?;
        let mut selected = Selected::default();
        for untagged in &reply.untagged {
            if let Some(n) = untagged.exists() {
                selected.exists = n;
            } else if let Some(flags) = untagged.flags() {
                selected.flags = flags;
            } else if let Untagged::Status(StatusText { code: Some(code), .. }) = untagged {
                let small = || code.number().and_then(|n| u32::try_from(n).ok());
                match code.name.as_str() {
                    "UIDVALIDITY" => selected.uid_validity = small(),
                    "UIDNEXT" => selected.uid_next = small(),
                    "HIGHESTMODSEQ" => selected.highest_modseq = code.number(),
                    _ => {}
                }
            }
        }
        selected.read_only = reply.completion.code.as_ref().is_some_and(|c| c.name == "READ-ONLY");
        Ok(selected)
    }

    /// RFC 9051 6.4.5 FETCH: `set` a sequence set, `items` an item or a parenthesised list
    /// (`(UID FLAGS BODY.PEEK[])`). The FETCH responses that came, in order.
    pub async fn fetch(&mut self, set: &str, items: &str) -> ImapResult<Vec<Fetch>> {
        self.fetches(Request::new("FETCH").arg(set).arg(items)).await
    }

    /// RFC 9051 6.4.9 UID FETCH.
    pub async fn uid_fetch(&mut self, set: &str, items: &str) -> ImapResult<Vec<Fetch>> {
        self.fetches(Request::new("UID FETCH").arg(set).arg(items)).await
    }

    /// RFC 9051 6.4.6 STORE, e.g. `store("1:*", "+FLAGS.SILENT (\\Seen)")`; the FETCH
    /// responses it caused.
    pub async fn store(&mut self, set: &str, action: &str) -> ImapResult<Vec<Fetch>> {
        self.fetches(Request::new("STORE").arg(set).arg(action)).await
    }

    /// RFC 9051 6.4.9 UID STORE.
    pub async fn uid_store(&mut self, set: &str, action: &str) -> ImapResult<Vec<Fetch>> {
        self.fetches(Request::new("UID STORE").arg(set).arg(action)).await
    }

    async fn fetches(&mut self, request: Request) -> ImapResult<Vec<Fetch>> {
        let reply = self.command(&request).await?;
        Ok(reply.untagged.into_iter().filter_map(Untagged::into_fetch).collect())
    }

    /// RFC 9051 6.4.4 SEARCH with the criteria as written (`UNSEEN`, `SUBJECT "x"`): the
    /// numbers of SEARCH (IMAP4rev1) or ESEARCH ALL (IMAP4rev2) responses.
    pub async fn search(&mut self, criteria: &str) -> ImapResult<Vec<u32>> {
        self.searches(Request::new("SEARCH").arg(criteria)).await
    }

    /// RFC 9051 6.4.9 UID SEARCH.
    pub async fn uid_search(&mut self, criteria: &str) -> ImapResult<Vec<u32>> {
        self.searches(Request::new("UID SEARCH").arg(criteria)).await
    }

    async fn searches(&mut self, request: Request) -> ImapResult<Vec<u32>> {
        let reply = self.command(&request).await?;
        let mut found = Vec::new();
        for untagged in &reply.untagged {
            if let Some(numbers) = untagged.search() {
                found.extend(numbers);
            } else if let Some(ranges) = untagged.esearch().and_then(|e| e.all()) {
                let total: u64 = ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum();
                if total > MAX_SEARCH_RESULTS {
                    return Err(ClientError(format!("an ESEARCH result of {total} numbers")).into());
                }
                found.extend(ranges.into_iter().flat_map(|(a, b)| a..=b));
            }
        }
        Ok(found)
    }

    /// RFC 9051 6.3.12 APPEND, with flags (`(\\Seen)`) if given; the message goes as a
    /// literal (synchronizing unless the server has LITERAL+ or LITERAL-). The APPENDUID
    /// of UIDPLUS (RFC 4315 3), when the server gave it.
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: Option<&str>,
        message: &[u8],
    ) -> ImapResult<Option<(u32, u32)>> {
        let reply = self.command(&append_request(mailbox, self.encoding, flags, message)).await?;
        Ok(reply.completion.code.as_ref().and_then(|c| c.append_uid()))
    }

    /// RFC 2177 IDLE: sends it and waits for the server's `+`; the untagged responses that
    /// came before it.
    pub async fn idle_start(&mut self) -> ImapResult<(Tag, Vec<Untagged>)> {
        let tag = self.client.send(&Request::new("IDLE").expect_continuation());
        self.flush().await?;
        let mut untagged = Vec::new();
        loop {
            match self.next_response().await? {
                Response::Continuation(_) => return Ok((tag, untagged)),
                Response::Untagged(u) => untagged.push(u),
                Response::Done(completion) if completion.tag == tag => {
                    return Err(ImapClientError::Server(completion));
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// In IDLE: the next untagged response, or None when `wait` passes first.
    pub async fn idle_wait(&mut self, wait: Duration) -> ImapResult<Option<Untagged>> {
        match tokio::time::timeout(wait, self.next_response()).await {
            Err(_) => Ok(None),
            Ok(Ok(Response::Untagged(u))) => Ok(Some(u)),
            Ok(Ok(other)) => Err(unexpected(other)),
            Ok(Err(e)) => Err(e),
        }
    }

    /// RFC 2177 3: DONE, then the untagged responses until IDLE's completion.
    pub async fn idle_done(&mut self, tag: &Tag) -> ImapResult<Vec<Untagged>> {
        self.client.idle_done();
        self.flush().await?;
        let reply = self.until_done(tag).await?;
        match reply.completion.status {
            Status::Ok => Ok(reply.untagged),
            _ => Err(ImapClientError::Server(reply.completion)),
        }
    }

    /// RFC 9051 6.3.9 LIST.
    pub async fn list(&mut self, reference: &str, pattern: &str) -> ImapResult<Vec<ListEntry>> {
        let request = Request::new("LIST").mailbox(reference, self.encoding).mailbox(pattern, self.encoding);
        Ok(self.command(&request).await?.untagged.iter().filter_map(Untagged::list).collect())
    }

    /// RFC 9051 6.3.11 STATUS, `items` as a parenthesised list (`(MESSAGES UIDNEXT)`).
    pub async fn status(&mut self, mailbox: &str, items: &str) -> ImapResult<MailboxStatus> {
        let request = Request::new("STATUS").mailbox(mailbox, self.encoding).arg(items);
        let reply = self.command(&request).await?;
        let status = reply.untagged.iter().find_map(Untagged::status);
        status.ok_or_else(|| ClientError("STATUS without a STATUS response".into()).into())
    }

    /// RFC 9051 6.1.2 NOOP: the untagged responses it brought (new mail, expunges).
    pub async fn noop(&mut self) -> ImapResult<Vec<Untagged>> {
        Ok(self.command(&Request::new("NOOP")).await?.untagged)
    }

    /// RFC 9051 6.1.3: ends the session.
    pub async fn logout(mut self) -> ImapResult<Completion> {
        Ok(self.command(&Request::new("LOGOUT")).await?.completion)
    }

    /// The underlying stream (e.g. to drop the connection without LOGOUT).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Sends what the client queued.
    pub async fn flush(&mut self) -> ImapResult<()> {
        let output = self.client.take_output();
        if !output.is_empty() {
            self.stream.write_all(&output).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// The next response, reading as needed (and sending the literals a `+` released).
    pub async fn next_response(&mut self) -> ImapResult<Response> {
        loop {
            if let Some(response) = self.client.poll_response()? {
                if let Some(capabilities) = capabilities_in(&response) {
                    self.capabilities = capabilities;
                }
                return Ok(response);
            }
            // A `+` for one of our literals may have released octets.
            self.flush().await?;
            let read = tokio::time::timeout(self.timeout, self.stream.read(&mut self.buffer))
                .await
                .map_err(|_| ImapClientError::Timeout)??;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.client.feed(&self.buffer[..read]);
        }
    }
}

/// RFC 9051 6.3.12: `APPEND mailbox [flags] literal`.
pub fn append_request(mailbox: &str, encoding: NameEncoding, flags: Option<&str>, message: &[u8]) -> Request {
    let mut request = Request::new("APPEND").mailbox(mailbox, encoding);
    if let Some(flags) = flags {
        request = request.arg(flags);
    }
    request.literal(message)
}

fn capabilities_in(response: &Response) -> Option<Vec<String>> {
    match response {
        Response::Untagged(u) => u.capabilities(),
        Response::Done(c) => c.code.as_ref()?.capabilities(),
        Response::Continuation(_) => None,
    }
}

fn unexpected(response: Response) -> ImapClientError {
    ImapClientError::Protocol(ClientError(format!("unexpected response {response:?}")))
}
