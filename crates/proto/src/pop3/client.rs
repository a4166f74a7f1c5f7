//! The POP3 client side with no I/O: commands go out with [`Client::send`], received
//! bytes come in with [`Client::feed`], and [`Client::poll_response`] hands out each
//! complete response, matched to the command it answers (so commands may be pipelined,
//! RFC 2449 6.6). Helpers parse STAT, LIST, UIDL and CAPA answers.

use std::collections::VecDeque;
use std::fmt;

use super::command::Command;
use super::multiline::{join_lines, Unstuffer};
use super::reply::{Reply, RespCode};
use crate::sasl;

/// Longest response line accepted from a server; a longer one is a protocol error (a
/// hostile server must not make the client buffer without bound).
pub const MAX_RESPONSE_LINE: usize = 1 << 20;

/// One response from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A status line: the greeting, the answer to a single-line command, or a `-ERR` to a
    /// multi-line one.
    Status(Reply),
    /// `+OK` and the lines of a multi-line response, unstuffed (RFC 1939 3).
    Multi { status: Reply, lines: Vec<Vec<u8>> },
    /// RFC 5034 4: a `+ ` challenge inside an AUTH exchange, base64-decoded.
    Continuation(Vec<u8>),
}

impl Response {
    /// The status line, if this response has one.
    pub fn status(&self) -> Option<&Reply> {
        match self {
            Response::Status(status) | Response::Multi { status, .. } => Some(status),
            Response::Continuation(_) => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status().is_some_and(|s| s.positive)
    }

    /// The lines of a multi-line response joined with CRLF (a message for RETR and TOP).
    pub fn body(&self) -> Option<Vec<u8>> {
        match self {
            Response::Multi { lines, .. } => Some(join_lines(lines)),
            _ => None,
        }
    }
}

/// A server that broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "POP3 protocol error: {}", self.0)
    }
}

impl std::error::Error for ClientError {}

/// What the next response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Single,
    Multi,
    /// AUTH or a response inside its exchange: `+ ` challenge or a status line.
    Auth,
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Client {
    input: Vec<u8>,
    output: Vec<u8>,
    expecting: VecDeque<Expect>,
    /// The status and lines so far of a multi-line response being received.
    multi: Option<(Reply, Unstuffer)>,
    /// Octets (plus a per-line overhead) a multi-line response may take in memory.
    max_multiline: usize,
    /// What the multi-line response being received takes so far.
    multi_size: usize,
}

/// Default bound of a multi-line response: a large message (RETR) fits.
pub const DEFAULT_MAX_MULTILINE: usize = 64 * 1024 * 1024;
/// What one stored line costs beyond its octets (its own buffer), so that a flood of empty
/// lines counts too.
const LINE_OVERHEAD: usize = 32;

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A fresh connection: the first response is the greeting (RFC 1939 4).
    pub fn new() -> Client {
        Client { expecting: VecDeque::from([Expect::Greeting]), ..Client::after_greeting() }
    }

    /// Refuses a multi-line response larger than `octets` (a protocol error, so memory
    /// stays bounded whatever the server sends).
    pub fn with_max_multiline(mut self, octets: usize) -> Client {
        self.max_multiline = octets;
        self
    }

    /// A connection whose greeting is behind it: after STLS and the handshake, the client
    /// speaks first (RFC 2595 4).
    pub fn after_greeting() -> Client {
        Client {
            input: Vec::new(),
            output: Vec::new(),
            expecting: VecDeque::new(),
            multi: None,
            max_multiline: DEFAULT_MAX_MULTILINE,
            multi_size: 0,
        }
    }

    /// Queues a command.
    pub fn send(&mut self, command: &Command) {
        self.output.extend_from_slice(command.to_line().as_bytes());
        let expect = match command {
            Command::Auth { mechanism: Some(_), .. } => Expect::Auth,
            c if c.is_multiline() => Expect::Multi,
            _ => Expect::Single,
        };
        self.expecting.push_back(expect);
    }

    /// Queues the answer to a `+ ` challenge (RFC 5034 4: base64, empty stays empty).
    pub fn send_sasl_response(&mut self, raw: &[u8]) {
        self.output.extend_from_slice(sasl::encode_response(raw).as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.expecting.push_back(Expect::Auth);
    }

    /// Cancels an AUTH exchange with `*` (RFC 5034 4); the server answers `-ERR`.
    pub fn cancel_sasl(&mut self) {
        self.output.extend_from_slice(b"*\r\n");
        self.expecting.push_back(Expect::Auth);
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// True while a response is owed (also while the lines of a multi-line one arrive).
    pub fn is_waiting(&self) -> bool {
        !self.expecting.is_empty() || self.multi.is_some()
    }

    /// After the `+OK` to STLS and the handshake: nothing received in the clear after the
    /// `+OK` may be taken as a response inside TLS (RFC 2595 4).
    pub fn tls_started(&mut self) {
        self.input.clear();
    }

    /// The next complete response, if one has arrived.
    pub fn poll_response(&mut self) -> Result<Option<Response>, ClientError> {
        while let Some(line) = self.next_line()? {
            if let Some((_, unstuffer)) = self.multi.as_mut() {
                self.multi_size = self.multi_size.saturating_add(line.len() + LINE_OVERHEAD);
                if self.multi_size > self.max_multiline {
                    self.multi = None;
                    return Err(ClientError(format!("multi-line response exceeds {} octets", self.max_multiline)));
                }
                if unstuffer.push_line(&line) {
                    let (status, unstuffer) = self.multi.take().ok_or_else(|| ClientError("no response".into()))?;
                    return Ok(Some(Response::Multi { status, lines: unstuffer.into_lines() }));
                }
                continue;
            }
            let Some(expect) = self.expecting.pop_front() else {
                return Err(ClientError(format!("unexpected line: {}", String::from_utf8_lossy(&line))));
            };
            if expect == Expect::Auth && (line == b"+" || line.starts_with(b"+ ")) {
                let challenge = sasl::decode_challenge(line.get(2..).unwrap_or(&[]))
                    .map_err(|_| ClientError("bad base64 in a SASL challenge".into()))?;
                return Ok(Some(Response::Continuation(challenge)));
            }
            let status = parse_status(&line)?;
            if expect == Expect::Multi && status.positive {
                self.multi = Some((status, Unstuffer::default()));
                self.multi_size = 0;
                continue;
            }
            return Ok(Some(Response::Status(status)));
        }
        Ok(None)
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
            // A CR at the end may start the line's CRLF: it is not part of the line.
            let partial = self.input.strip_suffix(b"\r").unwrap_or(&self.input);
            if partial.len() > MAX_RESPONSE_LINE {
                return Err(ClientError("response line too long".into()));
            }
            return Ok(None);
        };
        let mut line: Vec<u8> = self.input.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // The same limit when the whole line arrived at once.
        if line.len() > MAX_RESPONSE_LINE {
            return Err(ClientError("response line too long".into()));
        }
        Ok(Some(line))
    }
}

/// Parses a status line: `+OK` or `-ERR`, then an optional `[CODE]` and text.
pub fn parse_status(line: &[u8]) -> Result<Reply, ClientError> {
    let text = String::from_utf8_lossy(line);
    let (positive, rest) = if let Some(rest) = strip_indicator(&text, "+OK") {
        (true, rest)
    } else if let Some(rest) = strip_indicator(&text, "-ERR") {
        (false, rest)
    } else {
        return Err(ClientError(format!("not a status line: {text}")));
    };
    let code = RespCode::parse(rest);
    let text = match code {
        Some(_) => rest.split_once(']').map_or("", |(_, t)| t).trim_start(),
        None => rest,
    };
    Ok(Reply { positive, code, text: text.to_owned().into() })
}

/// RFC 1939 3: the indicator in upper case, then a space or the end of the line (servers
/// differ in case, so any is taken).
fn strip_indicator<'a>(line: &'a str, indicator: &str) -> Option<&'a str> {
    let head = line.get(..indicator.len())?;
    if !head.eq_ignore_ascii_case(indicator) {
        return None;
    }
    let rest = &line[indicator.len()..];
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(' ')
    }
}

/// RFC 1939 5 STAT: `+OK count size`.
pub fn parse_stat(status: &Reply) -> Option<(u32, u64)> {
    let mut parts = status.text.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// RFC 1939 5 scan listing (LIST) or RFC 1939 7 unique-id listing (UIDL): `n value`.
fn parse_pairs<T: std::str::FromStr>(lines: &[Vec<u8>]) -> Vec<(u32, T)> {
    lines
        .iter()
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let mut parts = line.split(' ');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// The lines of LIST: message numbers and sizes.
pub fn parse_list(lines: &[Vec<u8>]) -> Vec<(u32, u64)> {
    parse_pairs(lines)
}

/// The lines of UIDL: message numbers and unique-ids.
pub fn parse_uidl(lines: &[Vec<u8>]) -> Vec<(u32, String)> {
    parse_pairs(lines)
}

/// The answer to CAPA (RFC 2449 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Each capability line as sent.
    pub lines: Vec<String>,
}

impl Capabilities {
    pub fn parse(lines: &[Vec<u8>]) -> Capabilities {
        Capabilities { lines: lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect() }
    }

    /// Whether a capability tag is listed (case-insensitive).
    pub fn has(&self, tag: &str) -> bool {
        self.lines.iter().any(|l| l.split(' ').next().is_some_and(|t| t.eq_ignore_ascii_case(tag)))
    }

    /// The arguments of a capability, e.g. the mechanisms of `SASL`.
    pub fn args(&self, tag: &str) -> Vec<String> {
        self.lines
            .iter()
            .find(|l| l.split(' ').next().is_some_and(|t| t.eq_ignore_ascii_case(tag)))
            .map(|l| l.split(' ').skip(1).filter(|a| !a.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responses(client: &mut Client, wire: &[u8]) -> Vec<Response> {
        client.feed(wire);
        let mut out = Vec::new();
        while let Some(r) = client.poll_response().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn rfc1939_example_session() {
        let mut c = Client::new();
        let greeting = responses(&mut c, b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
        assert!(greeting[0].is_ok());
        c.send(&Command::Stat);
        c.send(&Command::List(None));
        c.send(&Command::Retr(1));
        c.send(&Command::Dele(1));
        c.send(&Command::Quit);
        assert_eq!(c.take_output(), b"STAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");
        let got = responses(
            &mut c,
            b"+OK 2 320\r\n+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n+OK 120 octets\r\n\
              line\r\n..dot\r\n.\r\n+OK message 1 deleted\r\n+OK dewey POP3 server signing off\r\n",
        );
        assert_eq!(got.len(), 5);
        assert_eq!(parse_stat(got[0].status().unwrap()), Some((2, 320)));
        let Response::Multi { lines, .. } = &got[1] else { panic!("{got:?}") };
        assert_eq!(parse_list(lines), [(1, 120), (2, 200)]);
        assert_eq!(got[2].body().unwrap(), b"line\r\n.dot\r\n");
        assert!(got[3].is_ok() && got[4].is_ok());
        assert!(!c.is_waiting());
    }

    #[test]
    fn err_to_a_multiline_command_is_one_line() {
        let mut c = Client::new();
        responses(&mut c, b"+OK hi\r\n");
        c.send(&Command::Retr(9));
        c.send(&Command::Noop);
        let got = responses(&mut c, b"-ERR No such message\r\n+OK\r\n");
        assert_eq!(got, [Response::Status(Reply::no_such_message()), Response::Status(Reply::ok(""))]);
    }

    #[test]
    fn response_codes_are_split_off() {
        let status = parse_status(b"-ERR [IN-USE] Mailbox is locked").unwrap();
        assert_eq!((status.code, status.text.as_ref()), (Some(RespCode::InUse), "Mailbox is locked"));
        let status = parse_status(b"-ERR [X-OTHER] text").unwrap();
        assert_eq!((status.code, status.text.as_ref()), (None, "[X-OTHER] text"));
        assert!(parse_status(b"+OKAY").is_err());
        assert!(parse_status(b"250 ok").is_err());
    }

    #[test]
    fn sasl_continuations() {
        let mut c = Client::new();
        responses(&mut c, b"+OK hi\r\n");
        c.send(&Command::Auth { mechanism: Some("CRAM-MD5".into()), initial_response: None });
        let got = responses(&mut c, b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n");
        assert_eq!(got, [Response::Continuation(b"<1896.697170952@postoffice.reston.mci.net>".to_vec())]);
        c.send_sasl_response(b"tim b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(c.take_output(), b"AUTH CRAM-MD5\r\ndGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n");
        let got = responses(&mut c, b"+ \r\n");
        assert_eq!(got, [Response::Continuation(Vec::new())]);
        c.send_sasl_response(b"");
        assert!(responses(&mut c, b"+OK done\r\n")[0].is_ok());
    }

    #[test]
    fn capabilities() {
        let lines: Vec<Vec<u8>> =
            ["TOP", "USER", "SASL SCRAM-SHA-256 CRAM-MD5", "STLS"].map(|l| l.as_bytes().to_vec()).to_vec();
        let caps = Capabilities::parse(&lines);
        assert!(caps.has("stls") && caps.has("TOP") && !caps.has("UIDL"));
        assert_eq!(caps.args("SASL"), ["SCRAM-SHA-256", "CRAM-MD5"]);
    }

    #[test]
    fn multiline_responses_are_bounded() {
        let mut client = Client::after_greeting().with_max_multiline(1000);
        client.send(&Command::List(None));
        let mut wire = b"+OK\r\n".to_vec();
        wire.extend(std::iter::repeat_n(b"\r\n".as_slice(), 40).flatten());
        client.feed(&wire);
        let error = client.poll_response().unwrap_err();
        assert!(error.to_string().contains("exceeds 1000 octets"), "{error}");
        // Within the bound it works.
        let mut client = Client::after_greeting().with_max_multiline(1000);
        client.send(&Command::List(None));
        client.feed(b"+OK\r\n1 10\r\n.\r\n");
        assert!(matches!(client.poll_response(), Ok(Some(Response::Multi { .. }))));
    }

    #[test]
    fn protocol_errors() {
        let mut c = Client::new();
        assert!(c.feed_and_poll(b"220 smtp\r\n").is_err());
        let mut c = Client::new();
        responses(&mut c, b"+OK\r\n");
        assert!(c.feed_and_poll(b"+OK unsolicited\r\n").is_err());
        let mut c = Client::new();
        assert!(c.feed_and_poll(&vec![b'a'; MAX_RESPONSE_LINE + 1]).is_err());
    }

    #[test]
    fn the_line_limit_does_not_depend_on_the_split() {
        // Found while writing the pop3_client fuzz target (whose runs compare splits): an
        // over-long line was refused only when it arrived without its LF.
        let mut line = b"+OK ".to_vec();
        line.resize(MAX_RESPONSE_LINE + 1, b'x');
        let mut c = Client::new();
        assert!(c.feed_and_poll(&[&line[..], b"\r\n"].concat()).is_err());
        // At the limit, a CR waiting for its LF is fine.
        line.pop();
        let mut c = Client::new();
        assert_eq!(c.feed_and_poll(&line), Ok(None));
        assert_eq!(c.feed_and_poll(b"\r"), Ok(None));
        assert!(c.feed_and_poll(b"\n").unwrap().is_some_and(|r| r.is_ok()));
    }

    #[test]
    fn waiting_while_a_multiline_response_arrives() {
        // Found by the pop3_client fuzz target: is_waiting() was false between the +OK of
        // a multi-line response and its terminating ".".
        let mut c = Client::after_greeting();
        c.send(&Command::List(None));
        assert_eq!(c.feed_and_poll(b"+OK\r\n1 120\r\n"), Ok(None));
        assert!(c.is_waiting());
        assert!(matches!(c.feed_and_poll(b".\r\n"), Ok(Some(Response::Multi { .. }))));
        assert!(!c.is_waiting());
    }

    impl Client {
        fn feed_and_poll(&mut self, bytes: &[u8]) -> Result<Option<Response>, ClientError> {
            self.feed(bytes);
            self.poll_response()
        }
    }
}
