//! `--smtphost`: the reversed session relayed byte for byte between the provider (the SMTP
//! client now) and an SMTP host, with the timeouts of RFC 5321 4.5.3.2.
//!
//! The bytes pass unchanged; a [`Watch`] only follows the dialogue closely enough to know
//! whose turn it is and which timeout applies: the host's greeting, MAIL and RCPT (5
//! minutes), the 354 after DATA (2 minutes), the reply after the data (10 minutes), or the
//! provider's next command (RFC 2645 5.2.1: at least 10 minutes). If it misreads the
//! dialogue, only a timeout is off; the mail is untouched.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use vouchmail_proto::smtp::client::Timeouts;

use crate::net::stream::Stream;
use crate::support::error::Error;

/// RFC 5321 4.5.3.2.5: each block of data written must be taken within 3 minutes.
const DATA_BLOCK: Duration = Duration::from_secs(180);
/// Replies owed by the host at most that are followed; more only lose timeout precision.
const MAX_EXPECTED: usize = 1000;

/// The relay's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTimeouts {
    /// Connecting to the host.
    pub connect: Duration,
    /// The host's replies (RFC 5321 4.5.3.2.1 to .4 and .6).
    pub host: Timeouts,
    /// The provider's next command or data (RFC 2645 5.2.1).
    pub provider: Duration,
}

impl RelayTimeouts {
    /// The outbound client's timeouts (`[outbound]`) towards the host; `provider` for the
    /// provider's side.
    pub fn from_config(config: &crate::config::Config, provider: Duration) -> RelayTimeouts {
        RelayTimeouts {
            connect: Duration::from_secs(config.outbound.connect_timeout_secs.max(1)),
            host: crate::jobs::outbound::client_timeouts(&config.outbound),
            provider,
        }
    }

    fn data_block(&self) -> Duration {
        DATA_BLOCK.min(self.host.command)
    }
}

/// A reply the host owes, by what asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Greeting,
    Mail,
    Rcpt,
    /// The 354 (or a refusal) after DATA.
    DataInit,
    /// The reply after the data's final "." or a BDAT chunk; `last`: it ends a message.
    DataTerm {
        last: bool,
    },
    StartTls,
    /// EHLO, RSET, QUIT, AUTH lines and the like.
    Command,
}

impl Owed {
    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Owed::Greeting => t.greeting,
            Owed::Mail => t.mail,
            Owed::Rcpt => t.rcpt,
            Owed::DataInit => t.data_init,
            Owed::DataTerm { .. } => t.data_term,
            Owed::StartTls | Owed::Command => t.command,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Owed::Greeting => "its greeting",
            Owed::Mail => "MAIL",
            Owed::Rcpt => "RCPT",
            Owed::DataInit => "DATA",
            Owed::DataTerm { .. } => "the end of the data",
            Owed::StartTls => "STARTTLS",
            Owed::Command => "a command",
        }
    }
}

/// Where the provider's bytes are in the dialogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Command lines.
    Command,
    /// Message data after a 354, until CRLF "." CRLF (RFC 5321 4.1.1.4).
    Data(DataAt),
    /// The rest of a BDAT chunk (RFC 3030 2): raw octets.
    Chunk(u64),
    /// After STARTTLS between the two: nothing can be read any more.
    Opaque,
}

/// How far into a possible end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataAt {
    LineStart,
    Dot,
    DotCr,
    Cr,
    Middle,
}

/// Whose turn it is, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Host(Owed),
    Provider,
    /// Encrypted between the two: either side may move.
    Either,
}

impl Turn {
    fn timeout(self, t: &RelayTimeouts) -> Duration {
        match self {
            Turn::Host(owed) => owed.timeout(&t.host),
            Turn::Provider => t.provider,
            Turn::Either => t.host.data_term.max(t.provider),
        }
    }
}

/// Follows the dialogue (see the module documentation).
#[derive(Debug)]
struct Watch {
    mode: Mode,
    owed: VecDeque<Owed>,
    /// The start of the provider's current command line (enough for the verb and BDAT's size).
    command: Vec<u8>,
    /// The start of the host's current reply line, and whether it was cut short.
    reply: Vec<u8>,
    /// Messages the host accepted (a 2xx to the end of a message's data).
    accepted: u64,
}

/// How much of a line is kept to read it.
const LINE_KEPT: usize = 64;

impl Watch {
    fn new() -> Watch {
        Watch {
            mode: Mode::Command,
            owed: VecDeque::from([Owed::Greeting]),
            command: Vec::new(),
            reply: Vec::new(),
            accepted: 0,
        }
    }

    fn turn(&self) -> Turn {
        match (self.mode, self.owed.front()) {
            (Mode::Opaque, _) => Turn::Either,
            (_, Some(owed)) => Turn::Host(*owed),
            (_, None) => Turn::Provider,
        }
    }

    fn owe(&mut self, owed: Owed) {
        if self.owed.len() < MAX_EXPECTED {
            self.owed.push_back(owed);
        }
    }

    /// Bytes the provider sent.
    fn provider_sent(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.mode {
                Mode::Opaque => return,
                Mode::Chunk(left) => {
                    let n = (bytes.len() as u64).min(left);
                    self.mode = if n == left { Mode::Command } else { Mode::Chunk(left - n) };
                    bytes = &bytes[n as usize..];
                }
                Mode::Data(mut at) => {
                    let mut ended = None;
                    for (i, &b) in bytes.iter().enumerate() {
                        at = match (at, b) {
                            (DataAt::DotCr, b'\n') => {
                                ended = Some(i + 1);
                                break;
                            }
                            (DataAt::LineStart, b'.') => DataAt::Dot,
                            (DataAt::Dot, b'\r') => DataAt::DotCr,
                            (DataAt::Cr, b'\n') => DataAt::LineStart,
                            (_, b'\r') => DataAt::Cr,
                            _ => DataAt::Middle,
                        };
                    }
                    match ended {
                        // CRLF "." CRLF: the data ended; what follows is commands again.
                        Some(used) => {
                            self.mode = Mode::Command;
                            self.owe(Owed::DataTerm { last: true });
                            bytes = &bytes[used..];
                        }
                        None => {
                            self.mode = Mode::Data(at);
                            return;
                        }
                    }
                }
                Mode::Command => match bytes.iter().position(|&b| b == b'\n') {
                    None => {
                        self.keep_command(bytes);
                        return;
                    }
                    Some(end) => {
                        self.keep_command(&bytes[..end]);
                        bytes = &bytes[end + 1..];
                        let line = std::mem::take(&mut self.command);
                        self.command_line(&line);
                    }
                },
            }
        }
    }

    fn keep_command(&mut self, bytes: &[u8]) {
        let room = LINE_KEPT.saturating_sub(self.command.len());
        self.command.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// One command line of the provider (its start, without the LF).
    fn command_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut words = text.trim_end_matches('\r').split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "MAIL" => self.owe(Owed::Mail),
            "RCPT" => self.owe(Owed::Rcpt),
            "DATA" => self.owe(Owed::DataInit),
            "STARTTLS" => self.owe(Owed::StartTls),
            "BDAT" => {
                // RFC 3030 2: BDAT <size> [LAST], then exactly <size> octets.
                let size = words.next().and_then(|s| s.parse::<u64>().ok());
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                self.owe(Owed::DataTerm { last });
                if let Some(size) = size.filter(|&s| s > 0) {
                    self.mode = Mode::Chunk(size);
                }
            }
            _ => self.owe(Owed::Command),
        }
    }

    /// Bytes the host sent; read before the provider gets them, so the provider's data
    /// after a 354 is read as data.
    fn host_sent(&mut self, bytes: &[u8]) {
        if self.mode == Mode::Opaque {
            return;
        }
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let room = LINE_KEPT.saturating_sub(self.reply.len());
            self.reply.extend_from_slice(&rest[..end.min(room)]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.reply);
            self.reply_line(&line);
        }
        let room = LINE_KEPT.saturating_sub(self.reply.len());
        self.reply.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// RFC 5321 4.2.1: "ddd-" continues a reply, "ddd " or "ddd" ends it.
    fn reply_line(&mut self, line: &[u8]) {
        let Some(code) = line.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit)) else { return };
        if line.get(3) == Some(&b'-') {
            return;
        }
        match (self.owed.pop_front(), code) {
            (Some(Owed::DataInit), b"354") => self.mode = Mode::Data(DataAt::LineStart),
            (Some(Owed::StartTls), b"220") => self.mode = Mode::Opaque,
            (Some(Owed::DataTerm { last: true }), [b'2', ..]) => self.accepted += 1,
            _ => {}
        }
    }
}

/// Pumps the reversed session between the provider and the SMTP host: the host's 220
/// becomes our greeting, and the provider talks to the host directly. Ends when either
/// side closes; fails when the side whose turn it is stays silent past its timeout.
/// Returns how many messages the host accepted (unknown, None, once the two started TLS).
pub(super) async fn relay(
    mut provider: Box<dyn Stream>,
    host: &str,
    timeouts: RelayTimeouts,
) -> Result<Option<u64>, Error> {
    let smtp_host = format!("SMTP host {host}");
    let mut smtp = tokio::time::timeout(timeouts.connect, TcpStream::connect(host))
        .await
        .map_err(|_| Error::network(&smtp_host, "connecting timed out"))?
        .map_err(|e| Error::network(&smtp_host, format!("cannot connect: {e}")))?;
    let mut watch = Watch::new();
    let (mut from_provider, mut from_host) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut turn = watch.turn();
    let mut deadline = Instant::now() + turn.timeout(&timeouts);
    loop {
        // Which side moved: the provider (true) or the host (false).
        let provider_moved = tokio::select! {
            read = provider.read(&mut from_provider) => {
                let n = match read {
                    Ok(0) | Err(_) => return finish(&mut smtp, &watch).await,
                    Ok(n) => n,
                };
                watch.provider_sent(&from_provider[..n]);
                let write = tokio::time::timeout(timeouts.data_block(), smtp.write_all(&from_provider[..n])).await;
                match write {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Error::network(&smtp_host, format!("writing failed: {e}"))),
                    Err(_) => {
                        let why = format!("took no data for {:?}", timeouts.data_block());
                        return Err(Error::network(&smtp_host, why));
                    }
                }
                true
            }
            read = smtp.read(&mut from_host) => {
                let n = match read {
                    Ok(0) | Err(_) => return finish(&mut provider, &watch).await,
                    Ok(n) => n,
                };
                watch.host_sent(&from_host[..n]);
                let write = tokio::time::timeout(timeouts.provider, provider.write_all(&from_host[..n])).await;
                if !matches!(write, Ok(Ok(()))) {
                    return Err(Error::network("the provider", "took no more of the session"));
                }
                false
            }
            _ = tokio::time::sleep_until(deadline) => {
                let waited = turn.timeout(&timeouts).as_secs();
                return Err(match turn {
                    Turn::Host(owed) => Error::network(&smtp_host, format!("did not answer {} within {waited} s", owed.what())),
                    Turn::Provider => Error::network("the provider", format!("sent nothing for {waited} s")),
                    Turn::Either => Error::network(&smtp_host, format!("the session was silent for {waited} s")),
                });
            }
        };
        // The clock restarts when the side it was waiting for moved, or the turn changed.
        let next = watch.turn();
        let waited_side_moved = match turn {
            Turn::Host(_) => !provider_moved,
            Turn::Provider => provider_moved,
            Turn::Either => true,
        };
        if next != turn || waited_side_moved {
            turn = next;
            deadline = Instant::now() + turn.timeout(&timeouts);
        }
    }
}

/// One side closed: the other learns it (the host then ends the session).
async fn finish(other: &mut (impl tokio::io::AsyncWrite + Unpin), watch: &Watch) -> Result<Option<u64>, Error> {
    let _ = tokio::time::timeout(Duration::from_secs(5), other.shutdown()).await;
    Ok((watch.mode != Mode::Opaque).then_some(watch.accepted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> RelayTimeouts {
        RelayTimeouts {
            connect: Duration::from_secs(30),
            host: Timeouts::default(),
            provider: Duration::from_secs(600),
        }
    }

    /// Feeds a dialogue, provider lines with "C:", host lines with "S:", and returns the
    /// turn after each step.
    fn turns(steps: &[&str]) -> Vec<Turn> {
        let mut watch = Watch::new();
        let mut out = vec![watch.turn()];
        for step in steps {
            match step.split_at(2) {
                ("C:", bytes) => watch.provider_sent(bytes.as_bytes()),
                ("S:", bytes) => watch.host_sent(bytes.as_bytes()),
                _ => panic!("bad step {step}"),
            }
            out.push(watch.turn());
        }
        out
    }

    #[test]
    fn follows_a_pipelined_transaction() {
        use Owed::*;
        let t = turns(&[
            "S:220 host ready\r\n",
            "C:EHLO provider\r\n",
            "S:250-host\r\n250 PIPELINING\r\n",
            "C:MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
            "S:250 ok\r\n",
            "S:250 ok\r\n354 go\r\n",
            "C:Subject: x\r\n\r\n..stuffed\r\n",
            "C:.\r\nQUIT\r\n",
            "S:250 stored\r\n",
            "S:221 bye\r\n",
        ]);
        assert_eq!(
            t,
            [
                Turn::Host(Greeting),
                Turn::Provider,
                Turn::Host(Command),
                Turn::Provider,
                Turn::Host(Mail),
                Turn::Host(Rcpt),
                Turn::Provider,
                Turn::Provider,
                Turn::Host(DataTerm { last: true }),
                Turn::Host(Command),
                Turn::Provider,
            ]
        );
        assert_eq!(Turn::Host(DataTerm { last: true }).timeout(&timeouts()), Duration::from_secs(600));
        assert_eq!(Turn::Host(DataInit).timeout(&timeouts()), Duration::from_secs(120));
    }

    #[test]
    fn the_end_of_data_may_be_split_anywhere() {
        for split in 1..5 {
            let end = "\r\n.\r\n";
            let (a, b) = end.split_at(split);
            let mut watch = Watch::new();
            watch.host_sent(b"220 hi\r\n");
            watch.provider_sent(b"DATA\r\n");
            watch.host_sent(b"354 go\r\n");
            watch.provider_sent(format!("x{a}").as_bytes());
            assert_eq!(watch.turn(), Turn::Provider, "split {split}");
            watch.provider_sent(b.as_bytes());
            assert_eq!(watch.turn(), Turn::Host(Owed::DataTerm { last: true }), "split {split}");
        }
        // An empty message: "." right after the 354.
        let t = turns(&["S:220 hi\r\n", "C:DATA\r\n", "S:354 go\r\n", "C:.\r\n"]);
        assert_eq!(t.last(), Some(&Turn::Host(Owed::DataTerm { last: true })));
        // A refused DATA leaves the provider in commands.
        let t = turns(&["S:220 hi\r\n", "C:DATA\r\n", "S:554 no\r\n", "C:QUIT\r\n"]);
        assert_eq!(t.last(), Some(&Turn::Host(Owed::Command)));
    }

    #[test]
    fn bdat_chunks_are_skipped_and_starttls_ends_the_reading() {
        let t = turns(&["S:220 hi\r\n", "C:BDAT 12 LAST\r\nDATA\r\nQUIT\r\n", "S:250 ok\r\n"]);
        // The chunk "DATA\r\nQUIT\r\n" (12 octets) is data, not two commands.
        assert_eq!(t[2], Turn::Host(Owed::DataTerm { last: true }));
        assert_eq!(t[3], Turn::Provider);
        let t = turns(&["S:220 hi\r\n", "C:STARTTLS\r\n", "S:220 go ahead\r\n", "C:\x16\x03\x01binary"]);
        assert_eq!(t[3], Turn::Either);
        assert_eq!(t[4], Turn::Either);
    }

    #[test]
    fn messages_the_host_accepted_are_counted() {
        let mut watch = Watch::new();
        watch.host_sent(b"220 hi\r\n");
        watch.provider_sent(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
        watch.host_sent(b"250 ok\r\n250 ok\r\n354 go\r\n");
        watch.provider_sent(b"x\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n");
        watch.host_sent(b"250 stored\r\n250 ok\r\n250 ok\r\n250 chunk\r\n250 stored\r\n");
        watch.provider_sent(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
        watch.host_sent(b"250 ok\r\n250 ok\r\n354 go\r\n");
        watch.provider_sent(b"x\r\n.\r\n");
        watch.host_sent(b"452 4.3.1 later\r\n");
        assert_eq!(watch.accepted, 2);
    }

    #[test]
    fn a_long_line_is_kept_short() {
        let mut watch = Watch::new();
        watch.host_sent(b"220 hi\r\n");
        watch.provider_sent(format!("RCPT TO:<{}@x>", "a".repeat(5000)).as_bytes());
        assert!(watch.command.len() <= LINE_KEPT);
        watch.provider_sent(b"\r\n");
        assert_eq!(watch.turn(), Turn::Host(Owed::Rcpt));
    }
}
