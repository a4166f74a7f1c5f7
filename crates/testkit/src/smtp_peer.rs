//! A scripted SMTP server for tests: answers every command with a default positive reply
//! unless the test's script says otherwise, and records what it received.
//!
//! ```no_run
//! # async fn demo() {
//! use vouchmail_testkit::smtp_peer::{Peer, Stage};
//! // Refuse the first message with 451, accept the next.
//! let peer = Peer::builder("127.0.0.2")
//!     .script(|stage, n| match stage {
//!         Stage::DataEnd(_) if n.data_ends == 1 => Some("451 4.3.0 try again".into()),
//!         _ => None,
//!     })
//!     .start();
//! peer.wait_for_messages(1, std::time::Duration::from_secs(10)).await;
//! # }
//! ```
//!
//! Each connection runs on its own thread with blocking I/O, so a script may block (to
//! hold a reply back while the test does something).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Where a session stands when the script is asked for a reply.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A new connection: the greeting (default `220`).
    Connect,
    /// The EHLO/HELO line (default: 250 with the extensions).
    Ehlo(String),
    /// The whole MAIL command line.
    Mail(String),
    /// The whole RCPT command line.
    Rcpt(String),
    /// DATA (default `354`).
    Data,
    /// The end of the data (default `250`); a 2xx reply records the message.
    DataEnd(Message),
}

/// Counters the script can look at (taken just before it is called).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Connections so far, this one included.
    pub connections: usize,
    /// Messages whose data was received, this one included.
    pub data_ends: usize,
}

/// A message the peer received.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The MAIL command line.
    pub mail_from: String,
    /// The RCPT command lines the peer accepted.
    pub rcpt_to: Vec<String>,
    /// The data, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
    /// The EHLO/HELO line of the session.
    pub helo: String,
    /// The user an `AUTH PLAIN` authenticated as.
    pub authenticated: Option<String>,
    /// Which connection (1-based) carried it.
    pub connection: usize,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The addresses of the accepted RCPTs.
    pub fn recipients(&self) -> Vec<String> {
        self.rcpt_to
            .iter()
            .filter_map(|l| {
                let start = l.find('<')? + 1;
                let end = l.get(start..)?.find('>')? + start;
                l.get(start..end).map(str::to_string)
            })
            .collect()
    }
}

type Script = Arc<dyn Fn(&Stage, Counts) -> Option<String> + Send + Sync>;

/// Configures a [`Peer`].
pub struct PeerBuilder {
    ip: IpAddr,
    port: u16,
    name: String,
    extensions: Vec<String>,
    script: Option<Script>,
    auth_plain: Option<(String, String)>,
}

impl PeerBuilder {
    /// Port (default: ephemeral).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// EHLO extension lines, replacing the default `PIPELINING`, `8BITMIME`, `DSN`,
    /// `SMTPUTF8`, `ENHANCEDSTATUSCODES`, `SIZE 52428800`.
    pub fn extensions(mut self, extensions: &[&str]) -> Self {
        self.extensions = extensions.iter().map(|e| e.to_string()).collect();
        self
    }

    /// The script: return `Some(reply line)` to override the default reply.
    pub fn script(mut self, f: impl Fn(&Stage, Counts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.script = Some(Arc::new(f));
        self
    }

    /// Offer `AUTH PLAIN` and accept only these credentials (mail needs no AUTH, though).
    pub fn auth_plain(mut self, user: &str, password: &str) -> Self {
        self.auth_plain = Some((user.to_string(), password.to_string()));
        if !self.extensions.iter().any(|e| e.starts_with("AUTH")) {
            self.extensions.push("AUTH PLAIN".into());
        }
        self
    }

    pub fn start(self) -> Peer {
        let listener = TcpListener::bind((self.ip, self.port)).expect("bind the SMTP peer");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("peer address");
        let shared = Arc::new(Shared {
            name: self.name,
            extensions: self.extensions,
            script: self.script,
            auth_plain: self.auth_plain,
            messages: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            data_ends: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, accept_shared));
        Peer { addr, shared }
    }
}

struct Shared {
    name: String,
    extensions: Vec<String>,
    script: Option<Script>,
    auth_plain: Option<(String, String)>,
    messages: Mutex<Vec<Message>>,
    commands: Mutex<Vec<String>>,
    connections: AtomicUsize,
    data_ends: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn counts(&self) -> Counts {
        Counts {
            connections: self.connections.load(Ordering::SeqCst),
            data_ends: self.data_ends.load(Ordering::SeqCst),
        }
    }

    fn reply(&self, stage: &Stage, default: String) -> String {
        self.script.as_ref().and_then(|s| s(stage, self.counts())).unwrap_or(default)
    }
}

/// A running peer; it stops accepting when dropped.
pub struct Peer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Peer {
    /// A peer on `ip` (e.g. "127.0.0.2"; any 127/8 address works on Linux).
    pub fn builder(ip: &str) -> PeerBuilder {
        PeerBuilder {
            ip: ip.parse().expect("peer IP"),
            port: 0,
            name: "peer.test".into(),
            extensions: ["PIPELINING", "8BITMIME", "DSN", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 52428800"]
                .iter()
                .map(|e| e.to_string())
                .collect(),
            script: None,
            auth_plain: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Messages accepted (2xx after the data) so far.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Every command line received, in order, from all connections.
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Waits until at least `n` messages were accepted; panics after `limit`.
    pub async fn wait_for_messages(&self, n: usize, limit: Duration) -> Vec<Message> {
        let end = Instant::now() + limit;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() > end {
                panic!(
                    "the peer got {} message(s) in {limit:?}, expected {n}; commands: {:?}",
                    messages.len(),
                    self.commands()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = session(stream, &shared);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn write_reply(out: &mut TcpStream, reply: &str) -> std::io::Result<()> {
    let mut text = reply.trim_end_matches(['\r', '\n']).replace("\r\n", "\n");
    text = text.replace('\n', "\r\n");
    text.push_str("\r\n");
    out.write_all(text.as_bytes())
}

fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let greeting = shared.reply(&Stage::Connect, format!("220 {} ESMTP test peer", shared.name));
    write_reply(&mut out, &greeting)?;
    if !greeting.starts_with('2') {
        return Ok(());
    }
    let mut helo = String::new();
    let mut authenticated = None;
    let mut current: Option<Message> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if let Ok(mut c) = shared.commands.lock() {
            c.push(line.clone());
        }
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                helo = line.clone();
                current = None;
                let default = if verb == "EHLO" && !shared.extensions.is_empty() {
                    let mut r = format!("250-{}", shared.name);
                    for (i, e) in shared.extensions.iter().enumerate() {
                        let sep = if i + 1 == shared.extensions.len() { ' ' } else { '-' };
                        r.push_str(&format!("\n250{sep}{e}"));
                    }
                    r
                } else {
                    format!("250 {}", shared.name)
                };
                write_reply(&mut out, &shared.reply(&Stage::Ehlo(line.clone()), default))?;
            }
            "AUTH" => {
                let words: Vec<&str> = line.split(' ').collect();
                let ok = match (&shared.auth_plain, words.get(1), words.get(2)) {
                    (Some((user, password)), Some(m), Some(b64)) if m.eq_ignore_ascii_case("PLAIN") => {
                        let expected = format!("\0{user}\0{password}");
                        STANDARD.decode(b64).ok().as_deref() == Some(expected.as_bytes())
                    }
                    _ => false,
                };
                if ok {
                    authenticated = shared.auth_plain.as_ref().map(|(u, _)| u.clone());
                    write_reply(&mut out, "235 2.7.0 Authentication successful")?;
                } else {
                    write_reply(&mut out, "535 5.7.8 Authentication credentials invalid")?;
                }
            }
            "MAIL" => {
                let reply = shared.reply(&Stage::Mail(line.clone()), "250 2.1.0 Ok".into());
                if reply.starts_with('2') {
                    current = Some(Message {
                        mail_from: line.clone(),
                        helo: helo.clone(),
                        authenticated: authenticated.clone(),
                        connection,
                        ..Message::default()
                    });
                }
                write_reply(&mut out, &reply)?;
            }
            "RCPT" => {
                let reply = match current.as_mut() {
                    None => "503 5.5.1 Error: need MAIL command".to_string(),
                    Some(m) => {
                        let reply = shared.reply(&Stage::Rcpt(line.clone()), "250 2.1.5 Ok".into());
                        if reply.starts_with('2') {
                            m.rcpt_to.push(line.clone());
                        }
                        reply
                    }
                };
                write_reply(&mut out, &reply)?;
            }
            "DATA" => {
                let Some(mut message) = current.take().filter(|m| !m.rcpt_to.is_empty()) else {
                    write_reply(&mut out, "554 5.5.1 Error: no valid recipients")?;
                    continue;
                };
                let reply = shared.reply(&Stage::Data, "354 End data with <CR><LF>.<CR><LF>".into());
                write_reply(&mut out, &reply)?;
                if !reply.starts_with('3') {
                    continue;
                }
                message.data = read_data(&mut reader)?;
                shared.data_ends.fetch_add(1, Ordering::SeqCst);
                let n = shared.counts().data_ends;
                let reply = shared.reply(&Stage::DataEnd(message.clone()), format!("250 2.0.0 Ok: queued as {n}"));
                if reply.starts_with('2') {
                    if let Ok(mut m) = shared.messages.lock() {
                        m.push(message);
                    }
                }
                write_reply(&mut out, &reply)?;
            }
            "RSET" => {
                current = None;
                write_reply(&mut out, "250 2.0.0 Ok")?;
            }
            "NOOP" => write_reply(&mut out, "250 2.0.0 Ok")?,
            "STARTTLS" => write_reply(&mut out, "454 4.7.0 TLS not available")?,
            "QUIT" => {
                write_reply(&mut out, "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => write_reply(&mut out, "502 5.5.2 Error: command not recognized")?,
        }
    }
}

/// Reads up to CRLF "." CRLF and undoes the dot-stuffing.
fn read_data(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in DATA"));
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
    }
}
