//! The asking side of VERIFY (SPEC 7.2, 7.5), with no I/O: one [`PendingVerify`] per
//! question, sent by the driver over UDP (3 tries) and then TCP, and checked against every
//! answer that arrives.
//!
//! SPEC 7.5: an answer counts only if it echoes our seq and address; the address is
//! compared ignoring case, since servers may canonicalise it. A UDP answer that does not
//! match is most likely spoofed or stale: the driver should drop it and keep waiting.
//!
//! `ERROR -` cannot be attributed to any request; it is returned as
//! [`ClientError::Error`] anyway, since it can never make a key valid (at worst a spoofer
//! turns a check into `temperror`, as it could by dropping packets). A driver on UDP may
//! prefer to keep waiting for a matching answer until its timeout.

use std::fmt;

use super::codec::{parse_response, Reason, Request, Response, Verdict};
use crate::smtp::address::Address;

/// Length of the seq made by [`PendingVerify::with_random_seq`]: 24 characters of 62
/// (about 142 bits), far more than a blind spoofer can guess.
pub const RANDOM_SEQ_LEN: usize = 24;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Why an answer gives no verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientError {
    /// A well-formed answer to some other request: wrong seq, or the right seq with another
    /// address (spoofed, stale or a broken server).
    Mismatch,
    /// The server said ERROR, with this reason, for our seq or for `-`.
    Error(String),
    /// Not a SPEC 7.2 response line.
    Malformed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Mismatch => f.write_str("VERIFY answer does not echo our seq and address"),
            ClientError::Error(reason) => write!(f, "VERIFY refused: {reason}"),
            ClientError::Malformed => f.write_str("malformed VERIFY answer"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One VERIFY waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingVerify {
    request: Request,
}

impl PendingVerify {
    /// With a seq the caller chose (SPEC 7.2: 1–32 of `[A-Za-z0-9]`, fresh per request).
    pub fn new(seq: &str, address: &str, key: &str) -> Result<PendingVerify, Reason> {
        Ok(PendingVerify { request: Request::new(seq, address, key)? })
    }

    /// With a seq made from the caller's random octets (from the OS random source). The
    /// modulo bias (256 = 4 * 62 + 8) costs well under a bit of the ~142.
    pub fn with_random_seq(random: &[u8; RANDOM_SEQ_LEN], address: &str, key: &str) -> Result<PendingVerify, Reason> {
        let seq: String = random.iter().map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect();
        PendingVerify::new(&seq, address, key)
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// What to send, CRLF-terminated: a TCP line, and a UDP datagram (always under 512).
    pub fn to_wire(&self) -> Vec<u8> {
        self.request.to_crlf_line().into_bytes()
    }

    /// Checks one received line or datagram.
    pub fn check(&self, answer: &[u8]) -> Result<Verdict, ClientError> {
        let response = parse_response(answer).map_err(|_| ClientError::Malformed)?;
        self.check_response(&response)
    }

    /// SPEC 7.5: the answer must echo our seq and address.
    pub fn check_response(&self, response: &Response) -> Result<Verdict, ClientError> {
        match response {
            Response::Reply(r)
                if r.seq() == self.request.seq() && same_mailbox(r.mailbox(), self.request.mailbox()) =>
            {
                Ok(r.verdict())
            }
            Response::Reply(_) => Err(ClientError::Mismatch),
            Response::Error(e) => match e.seq() {
                Some(seq) if seq != self.request.seq() => Err(ClientError::Mismatch),
                _ => Err(ClientError::Error(e.reason().to_owned())),
            },
        }
    }
}

/// Case-insensitive, including non-ASCII letters; quoting does not matter since the parsed
/// local part is unquoted.
fn same_mailbox(a: &Address, b: &Address) -> bool {
    a.local().to_lowercase() == b.local().to_lowercase() && a.domain().to_lowercase() == b.domain().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkey::codec::parse_request;
    use crate::authkey::TEST_KEY as KEY;

    fn pending() -> PendingVerify {
        PendingVerify::new("Q7x", "My@Domain.com", KEY).unwrap()
    }

    #[test]
    fn spec_7_2_request_and_replies() {
        let p = pending();
        assert_eq!(p.to_wire(), format!("VERIFY Q7x My@Domain.com {KEY}\r\n").into_bytes());
        assert_eq!(parse_request(&p.to_wire()).as_ref(), Ok(p.request()));
        assert_eq!(p.check(b"VERIFY_REPLY Q7x My@Domain.com VALIDKEY\r\n"), Ok(Verdict::Valid));
        assert_eq!(p.check(b"VERIFY_REPLY Q7x My@Domain.com INVALIDKEY"), Ok(Verdict::Invalid));
    }

    #[test]
    fn address_echo_ignores_case_and_quoting() {
        let p = pending();
        assert_eq!(p.check(b"VERIFY_REPLY Q7x my@domain.com VALIDKEY"), Ok(Verdict::Valid));
        assert_eq!(p.check(b"VERIFY_REPLY Q7x MY@DOMAIN.COM VALIDKEY"), Ok(Verdict::Valid));
        assert_eq!(p.check(b"VERIFY_REPLY Q7x \"My\"@domain.com VALIDKEY"), Ok(Verdict::Valid));
        let u = PendingVerify::new("s", "Jörg@example.com", KEY).unwrap();
        assert_eq!(u.check("VERIFY_REPLY s JÖRG@example.com INVALIDKEY".as_bytes()), Ok(Verdict::Invalid));
    }

    #[test]
    fn mismatched_answers_are_refused() {
        let p = pending();
        for answer in [
            &b"VERIFY_REPLY q7x My@Domain.com VALIDKEY"[..],
            b"VERIFY_REPLY Q7 My@Domain.com VALIDKEY",
            b"VERIFY_REPLY Q7xx My@Domain.com VALIDKEY",
            b"VERIFY_REPLY Q7x other@Domain.com VALIDKEY",
            b"VERIFY_REPLY Q7x My@Domain.org VALIDKEY",
            b"VERIFY_REPLY Q7x My.@Domain.com VALIDKEY",
            b"ERROR other bad key",
        ] {
            assert_eq!(p.check(answer), Err(ClientError::Mismatch), "{:?}", String::from_utf8_lossy(answer));
        }
    }

    #[test]
    fn error_answers() {
        let p = pending();
        assert_eq!(p.check(b"ERROR Q7x bad key\r\n"), Err(ClientError::Error("bad key".into())));
        assert_eq!(p.check(b"ERROR - line too long"), Err(ClientError::Error("line too long".into())));
    }

    #[test]
    fn malformed_answers() {
        let p = pending();
        for answer in [
            &b""[..],
            b"VERIFY_REPLY Q7x My@Domain.com validkey",
            b"VERIFY_REPLY Q7x My@Domain.com  VALIDKEY",
            b"VERIFY_REPLY Q7x My@Domain.com VALIDKEY extra",
            b"VERIFY Q7x My@Domain.com VALIDKEY",
            b"ERROR Q7x",
            b"\xff",
        ] {
            assert_eq!(p.check(answer), Err(ClientError::Malformed), "{:?}", String::from_utf8_lossy(answer));
        }
    }

    #[test]
    fn random_seq_is_valid_and_varies() {
        let a = PendingVerify::with_random_seq(&[0; RANDOM_SEQ_LEN], "a@b", KEY).unwrap();
        assert_eq!(a.request().seq(), "A".repeat(RANDOM_SEQ_LEN));
        let mut random = [0u8; RANDOM_SEQ_LEN];
        for (i, b) in random.iter_mut().enumerate() {
            *b = (i * 37 + 200) as u8;
        }
        let b = PendingVerify::with_random_seq(&random, "a@b", KEY).unwrap();
        assert_eq!(b.request().seq().len(), RANDOM_SEQ_LEN);
        assert_ne!(a.request().seq(), b.request().seq());
        let all = PendingVerify::with_random_seq(&[255; RANDOM_SEQ_LEN], "a@b", KEY).unwrap();
        assert_eq!(all.request().seq(), "H".repeat(RANDOM_SEQ_LEN), "255 % 62 = 7");
    }

    #[test]
    fn bad_inputs_are_refused_when_building() {
        assert_eq!(PendingVerify::new("a b", "a@b", KEY), Err(Reason::BadSeq));
        assert_eq!(PendingVerify::new("s", "nope", KEY), Err(Reason::BadAddress));
        assert_eq!(PendingVerify::new("s", "a@b", "short"), Err(Reason::BadKey));
        assert_eq!(PendingVerify::with_random_seq(&[1; RANDOM_SEQ_LEN], "a@b", ""), Err(Reason::BadKey));
    }
}
