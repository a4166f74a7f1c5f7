//! SMTP replies and the error type of the SMTP layer.
//!
//! Every negative reply the server sends is an [`SmtpError`]: it carries the basic code
//! (RFC 5321 4.2), the enhanced status code (RFC 3463) and tells whether it is temporary,
//! so a reply is decided in one place and never assembled by hand twice.

use std::borrow::Cow;
use std::fmt;

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A single SMTP reply: code, optional enhanced code, text (possibly several lines).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub text: Cow<'static, str>,
    /// A server sent it (read off the wire by the client), rather than this program
    /// standing in for one (a refused connection, a timeout). A DSN quotes only those as
    /// `Diagnostic-Code` (RFC 3464 2.3.6).
    pub from_peer: bool,
}

/// Replies are equal by what they say, wherever they came from.
impl PartialEq for Reply {
    fn eq(&self, other: &Reply) -> bool {
        self.code == other.code && self.enhanced == other.enhanced && self.text == other.text
    }
}

impl Eq for Reply {}

impl Reply {
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: Some(enhanced), text: text.into(), from_peer: false }
    }

    /// A reply without an enhanced code (greeting, EHLO: RFC 2034 3 applies to the
    /// replies of mail transactions, not to the banner).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: None, text: text.into(), from_peer: false }
    }

    /// 4yz: the client may try again later (RFC 5321 4.2.1).
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Writes the reply in wire form; multi-line text becomes `code-` continuation lines
    /// (RFC 5321 4.2.1). Control characters in the text are replaced so a reply can never
    /// inject a line of its own.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // `split` yields at least one (possibly empty) line.
        let mut lines = self.text.split('\n').map(|l| l.trim_end_matches('\r')).peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
            if let Some(enhanced) = self.enhanced {
                out.extend_from_slice(enhanced.to_string().as_bytes());
                out.push(b' ');
            }
            write_reply_text(line, out);
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// Writes reply text with every control character replaced by `?`, so no text (a peer's
/// HELO name, an address) can end a reply line or inject one. POP3 replies use it too.
pub(crate) fn write_reply_text(text: &str, out: &mut Vec<u8>) {
    for ch in text.chars() {
        if ch.is_control() {
            out.push(b'?');
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// The error type of the SMTP layer: a negative reply.
pub type SmtpError = Reply;

macro_rules! reply_ctor {
    ($(#[$doc:meta])* $name:ident, $code:expr, $a:expr, $b:expr, $c:expr) => {
        $(#[$doc])*
        pub fn $name(text: impl Into<Cow<'static, str>>) -> Reply {
            Reply::new($code, EnhancedCode($a, $b, $c), text)
        }
    };
}

/// Constructors for the replies the server uses, named after their meaning.
impl Reply {
    reply_ctor!(
        /// 250 2.0.0
        ok, 250, 2, 0, 0);
    reply_ctor!(
        /// 250 2.1.0 sender accepted (RFC 3463 3.2)
        sender_ok, 250, 2, 1, 0);
    reply_ctor!(
        /// 250 2.1.5 destination valid
        recipient_ok, 250, 2, 1, 5);
    reply_ctor!(
        /// 221 2.0.0 closing
        closing, 221, 2, 0, 0);
    reply_ctor!(
        /// 421 4.3.2 system not accepting messages (shutdown)
        shutting_down, 421, 4, 3, 2);
    reply_ctor!(
        /// 421 4.4.2 connection timed out
        timeout, 421, 4, 4, 2);
    reply_ctor!(
        /// 421 4.7.0 too many errors / connections
        too_many, 421, 4, 7, 0);
    reply_ctor!(
        /// 451 4.3.0 local error in processing
        local_error, 451, 4, 3, 0);
    reply_ctor!(
        /// 452 4.2.2 mailbox full
        mailbox_full, 452, 4, 2, 2);
    reply_ctor!(
        /// 452 4.3.1 mail system full (RFC 3463 3.4): our in-flight memory is used up
        insufficient_storage, 452, 4, 3, 1);
    reply_ctor!(
        /// 452 4.5.3 too many recipients (RFC 5321 4.5.3.1.10)
        too_many_recipients, 452, 4, 5, 3);
    reply_ctor!(
        /// 450 4.5.3: this recipient's domain has another sender policy than the
        /// transaction's first; send it in its own transaction (SPEC 2)
        policy_differs, 450, 4, 5, 3);
    reply_ctor!(
        /// 451 4.7.0: the sender's authentication could not be checked now (SPEC 2
        /// temperror: its Authentication Server or DNS did not answer)
        auth_temperror, 451, 4, 7, 0);
    reply_ctor!(
        /// 500 5.5.1 command unrecognized
        unrecognized, 500, 5, 5, 1);
    reply_ctor!(
        /// 500 5.5.2 line too long
        line_too_long, 500, 5, 5, 2);
    reply_ctor!(
        /// 501 5.5.4 syntax error in parameters or arguments
        syntax, 501, 5, 5, 4);
    reply_ctor!(
        /// 501 5.1.3 bad destination mailbox address syntax
        bad_recipient_syntax, 501, 5, 1, 3);
    reply_ctor!(
        /// 501 5.1.7 bad sender mailbox address syntax
        bad_sender_syntax, 501, 5, 1, 7);
    reply_ctor!(
        /// 502 5.5.1 command not implemented
        not_implemented, 502, 5, 5, 1);
    reply_ctor!(
        /// 503 5.5.1 bad sequence of commands
        bad_sequence, 503, 5, 5, 1);
    /// 503 5.5.1: a command before the greeting (RFC 5321 4.1.4: EHLO or HELO first).
    pub fn greet_first() -> Reply {
        Reply::bad_sequence("Send HELO/EHLO first")
    }
    reply_ctor!(
        /// 530 5.7.0 authentication required (RFC 4954 6)
        auth_required, 530, 5, 7, 0);
    reply_ctor!(
        /// 550 5.1.1 no such user
        unknown_user, 550, 5, 1, 1);
    reply_ctor!(
        /// 550 5.7.1 delivery not authorized / relaying denied
        not_authorized, 550, 5, 7, 1);
    reply_ctor!(
        /// 552 5.3.4 message too big for system
        too_big, 552, 5, 3, 4);
    reply_ctor!(
        /// 553 5.6.7 non-ASCII address not permitted (RFC 6531 3.5)
        utf8_not_permitted, 553, 5, 6, 7);
    reply_ctor!(
        /// 554 5.4.6 routing loop detected (RFC 5321 6.3)
        routing_loop, 554, 5, 4, 6);
    reply_ctor!(
        /// 554 5.5.1 no valid recipients (RFC 2920 3.1)
        no_valid_recipients, 554, 5, 5, 1);
    reply_ctor!(
        /// 555 5.5.4 MAIL/RCPT parameter not recognized (RFC 5321 4.1.1.11)
        unknown_parameter, 555, 5, 5, 4);
    reply_ctor!(
        /// 252 2.1.5 cannot VRFY user (RFC 5321 3.5.3)
        cannot_verify, 252, 2, 1, 5);
}

/// The replies of ATRN (RFC 2645 7) and ETRN (RFC 1985 5). The enhanced code's class is
/// always the reply's (RFC 3463 2); every listener, the ODMR one included, advertises
/// ENHANCEDSTATUSCODES (RFC 2034).
impl Reply {
    /// 250 2.0.0: the roles reverse (RFC 2645 5.2.1).
    pub fn atrn_reversing() -> Reply {
        Reply::new(250, EnhancedCode(2, 0, 0), "OK now reversing the connection")
    }

    /// 450 4.7.1: not for this account, or too soon after the last ATRN (RFC 2645 5.2.1).
    pub fn atrn_refused(why: &str) -> Reply {
        Reply::new(450, EnhancedCode(4, 7, 1), format!("ATRN request refused: {why}"))
    }

    /// 451 4.3.0: the domain mapping cannot be read now (RFC 2645 5.2.1).
    pub fn atrn_unavailable() -> Reply {
        Reply::new(451, EnhancedCode(4, 3, 0), "Unable to process ATRN request now")
    }

    /// 453: nothing queued for the domains (RFC 2645 5.2.1); 4.0.0, no RFC 3463 detail fits.
    pub fn atrn_no_mail() -> Reply {
        Reply::new(453, EnhancedCode(4, 0, 0), "You have no mail")
    }

    /// 250 2.0.0: a delivery for the node is already under way (RFC 1985 5).
    pub fn etrn_queuing(node: &str) -> Reply {
        Reply::new(250, EnhancedCode(2, 0, 0), format!("OK, queuing for node {node} started"))
    }

    /// 251 2.0.0 (RFC 1985 5).
    pub fn etrn_nothing_waiting(node: &str) -> Reply {
        Reply::new(251, EnhancedCode(2, 0, 0), format!("OK, no messages waiting for node {node}"))
    }

    /// 253 2.0.0 (RFC 1985 5).
    pub fn etrn_pending(count: usize, node: &str) -> Reply {
        Reply::new(253, EnhancedCode(2, 0, 0), format!("OK, {count} pending messages for node {node} started"))
    }

    /// 458 4.3.0: our mail system cannot start the queue now (RFC 1985 5; RFC 3463 3.4).
    pub fn etrn_unable(node: &str) -> Reply {
        Reply::new(458, EnhancedCode(4, 3, 0), format!("Unable to queue messages for node {node}"))
    }

    /// 458 4.7.0: this session has sent more ETRN commands than it may (a policy limit,
    /// RFC 3463 3.8); it may try again in a new session.
    pub fn etrn_too_many(node: &str) -> Reply {
        Reply::new(
            458,
            EnhancedCode(4, 7, 0),
            format!("Unable to queue messages for node {node}: too many ETRN commands in this session"),
        )
    }

    /// 459 4.7.1: the node is not one we hold mail for (RFC 1985 5; RFC 3463 3.8). The reply
    /// is 4yz, so the enhanced code is too (RFC 3463 2), not 5.7.1.
    pub fn etrn_not_allowed(node: &str, reason: &str) -> Reply {
        Reply::new(459, EnhancedCode(4, 7, 1), format!("Node {node} not allowed: {reason}"))
    }

    /// 459 4.5.4: `ETRN #queue` names a queue, and there are no named queues here
    /// (RFC 1985 5.3; as sendmail answers an unknown queue).
    pub fn etrn_unknown_queue(node: &str) -> Reply {
        Reply::new(459, EnhancedCode(4, 5, 4), format!("Node {node} not allowed: no queue of that name"))
    }
}

/// The replies of remote authentication (SPEC 8.2) and delivery notifications (SPEC 8.3).
/// The TRACK answer is built by `tracking::track_reply` (its wire format has no enhanced
/// codes).
impl Reply {
    /// 235 2.7.0 to a client authenticated through its home server (SPEC 8.2 step 6).
    pub fn rcram_authenticated(address: &str) -> Reply {
        Reply::new(235, EnhancedCode(2, 7, 0), format!("Authenticated as {address} (remote)"))
    }

    /// 235 2.7.0 on the home server to an X-RCRAM-VERIFY exchange (SPEC 8.2 step 5): the
    /// answer is right; the connection may not send mail.
    pub fn rcram_verified() -> Reply {
        Reply::new(235, EnhancedCode(2, 7, 0), "Authentication successful (verification only)")
    }

    /// 535 5.7.0 on the home server: the caller's IP is not an address of the verifier name
    /// it gave (SPEC 8.2 step 3).
    pub fn rcram_verifier_refused(verifier: &str) -> Reply {
        Reply::new(535, EnhancedCode(5, 7, 0), format!("Your address is not an address of {verifier}"))
    }

    /// 535 5.7.8: unknown address, or a wrong, replayed or expired answer (SPEC 8.2).
    pub fn rcram_bad_credentials() -> Reply {
        Reply::new(535, EnhancedCode(5, 7, 8), "Authentication credentials invalid")
    }

    /// 454 4.7.0: the home server cannot be reached, or does not offer X-RCRAM-VERIFY
    /// (SPEC 8.2 step 6).
    pub fn rcram_home_unavailable(domain: &str) -> Reply {
        Reply::new(454, EnhancedCode(4, 7, 0), format!("Cannot verify you with the home server of {domain} now"))
    }

    /// 454 4.7.0 on the verifier: this client, or the clients of this home domain, hold
    /// as many unfinished RCRAM-MD5 exchanges as allowed (SPEC 8.2 step 7).
    pub fn rcram_busy(domain: &str) -> Reply {
        Reply::new(
            454,
            EnhancedCode(4, 7, 0),
            format!("Too many unfinished RCRAM-MD5 exchanges for you or for {domain}, try again later"),
        )
    }

    /// 503 5.7.0: MAIL on a connection whose 235 was an X-RCRAM-VERIFY (SPEC 8.2).
    pub fn verification_only() -> Reply {
        Reply::new(503, EnhancedCode(5, 7, 0), "This connection was authenticated for verification only")
    }

    /// 553 5.7.1: MAIL FROM another address than the one remotely authenticated (SPEC 8.2).
    pub fn rcram_sender_mismatch(address: &str) -> Reply {
        Reply::new(553, EnhancedCode(5, 7, 1), format!("You may only send as {address}"))
    }

    /// 550 5.7.1: RCPT to a mailbox that is not local, after a remote authentication
    /// (SPEC 8.2).
    pub fn rcram_relay_denied() -> Reply {
        Reply::new(550, EnhancedCode(5, 7, 1), "Remotely authenticated clients may only send to local mailboxes")
    }

    /// 250 2.0.0: a NOTIFY record stored (or already stored), or a RECEIPT recorded
    /// (SPEC 8.3).
    pub fn tracking_stored() -> Reply {
        Reply::new(250, EnhancedCode(2, 0, 0), "Tracking record stored")
    }

    /// 550 5.1.0: RECEIPT for a message not delivered to this user (SPEC 8.3).
    pub fn receipt_no_such_message(message_id: &str) -> Reply {
        Reply::new(550, EnhancedCode(5, 1, 0), format!("No message {message_id} was delivered to you"))
    }

    /// 550 5.7.1: NOTIFY from an IP that is not an address of the home server of the
    /// record's recipient domain (SPEC 8.3).
    pub fn notify_not_home_server(domain: &str) -> Reply {
        Reply::new(550, EnhancedCode(5, 7, 1), format!("You are not the home server of {domain}"))
    }

    /// 452 4.5.3: NOTIFY past the day's cap of records from the recipient's domain for
    /// one sender (SPEC 8.3, `[messenger] notify_max_per_day`).
    pub fn notify_over_daily_cap(domain: &str, sender: &str) -> Reply {
        Reply::new(
            452,
            EnhancedCode(4, 5, 3),
            format!("Too many tracking records from {domain} for {sender} today, try again tomorrow"),
        )
    }

    /// 550 5.1.1: NOTIFY for a sender that is not local (SPEC 8.3).
    pub fn notify_unknown_sender(sender: &str) -> Reply {
        Reply::new(550, EnhancedCode(5, 1, 1), format!("{sender} is not a local mailbox"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        assert_eq!(Reply::bad_sequence("Send HELO/EHLO first").to_wire(), b"503 5.5.1 Send HELO/EHLO first\r\n");
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let r = Reply::plain(250, "mx.example\nPIPELINING\nSIZE 1000");
        assert_eq!(r.to_wire(), b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
    }

    #[test]
    fn control_characters_cannot_inject_lines() {
        let r = Reply::plain(250, "a\rb\x00c");
        assert_eq!(r.to_wire(), b"250 a?b?c\r\n");
    }

    #[test]
    fn turn_replies_have_enhanced_codes_of_their_class() {
        // RFC 3463 2: the class of the enhanced code is the class of the reply.
        let replies = [
            Reply::atrn_reversing(),
            Reply::atrn_refused("x"),
            Reply::atrn_unavailable(),
            Reply::atrn_no_mail(),
            Reply::etrn_queuing("n"),
            Reply::etrn_nothing_waiting("n"),
            Reply::etrn_pending(2, "n"),
            Reply::etrn_unable("n"),
            Reply::etrn_too_many("n"),
            Reply::etrn_not_allowed("n", "x"),
            Reply::etrn_unknown_queue("#n"),
        ];
        for reply in replies {
            let enhanced = reply.enhanced.expect("an enhanced code");
            assert_eq!(u16::from(enhanced.0), reply.code / 100, "{reply}");
        }
        assert_eq!(
            Reply::etrn_not_allowed("ex.org", "not held here").to_wire(),
            b"459 4.7.1 Node ex.org not allowed: not held here\r\n"
        );
    }

    #[test]
    fn temporary_is_4yz() {
        assert!(Reply::local_error("x").is_temporary());
        assert!(!Reply::unknown_user("x").is_temporary());
        assert!(Reply::ok("x").is_positive());
    }

    #[test]
    fn messenger_replies_are_the_spec_codes() {
        // SPEC 8.2 and 8.3, code and enhanced code of each.
        let cases = [
            (Reply::rcram_authenticated("glen@galkam.test"), "235 2.7.0 Authenticated as glen@galkam.test (remote)"),
            (Reply::rcram_verified(), "235 2.7.0 "),
            (Reply::rcram_verifier_refused("mx.x.test"), "535 5.7.0 "),
            (Reply::rcram_bad_credentials(), "535 5.7.8 "),
            (Reply::rcram_home_unavailable("galkam.test"), "454 4.7.0 "),
            (Reply::rcram_busy("galkam.test"), "454 4.7.0 "),
            (Reply::verification_only(), "503 5.7.0 "),
            (Reply::rcram_sender_mismatch("glen@galkam.test"), "553 5.7.1 "),
            (Reply::rcram_relay_denied(), "550 5.7.1 "),
            (Reply::tracking_stored(), "250 2.0.0 "),
            (Reply::receipt_no_such_message("<a@b>"), "550 5.1.0 "),
            (Reply::notify_not_home_server("lrsupport.test"), "550 5.7.1 "),
            (Reply::notify_unknown_sender("x@galkam.test"), "550 5.1.1 "),
        ];
        for (reply, start) in cases {
            let wire = String::from_utf8(reply.to_wire()).unwrap();
            assert!(wire.starts_with(start), "{wire}");
        }
    }
}
