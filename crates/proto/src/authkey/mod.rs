//! AuthKeys (SPEC 7): the VERIFY protocol between a recipient's server and the sender
//! domain's Authentication Server, with no I/O.
//!
//! - [`codec`]: the SPEC 7.2 lines, their parsers and writers, and the UDP reply-size rule.
//! - [`server`]: the TCP session of the VERIFY listener (bytes in, requests out, replies
//!   written in request order).
//! - [`client`]: the asking side: builds a request with a fresh seq and checks that the
//!   answer echoes it.
//! - [`record`]: the `AS=` TXT record that names a domain's Authentication Server.

pub mod client;
pub mod codec;
pub mod record;
pub mod server;

pub use client::{ClientError, PendingVerify};
pub use codec::{
    parse_datagram, parse_request, parse_response, udp_reply, ErrorReply, MalformedResponse, Reason, Reply, Request,
    RequestError, Response, Verdict,
};
pub use server::{Event, NothingToAnswer, Session};

/// SPEC 7.2: VALIDKEY when `key` is one of an address's keys `(key, expires_at)` that has
/// not expired at `now`. Every key is compared in constant time with no early exit, so the
/// answer's timing tells nothing about how much of a guess was right, nor which key
/// matched.
pub fn check_key<'a>(keys: impl IntoIterator<Item = (&'a str, i64)>, key: &str, now: i64) -> Verdict {
    let mut valid = false;
    for (stored, expires_at) in keys {
        valid |= crate::sasl::ct_eq(stored.as_bytes(), key.as_bytes()) & (expires_at > now);
    }
    if valid {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// A well-formed key for the tests: 64 of `[A-Za-z0-9]`.
#[cfg(test)]
pub(crate) const TEST_KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_valid_only_while_unexpired_and_only_whole() {
        let (k1, k2) = ("a".repeat(64), "b".repeat(64));
        let keys = [(k1.as_str(), 115), (k2.as_str(), 125)];
        assert_eq!(check_key(keys, &k1, 114), Verdict::Valid);
        assert_eq!(check_key(keys, &k2, 114), Verdict::Valid);
        assert_eq!(check_key(keys, &k1, 115), Verdict::Invalid, "expired at expires_at");
        assert_eq!(check_key(keys, &"c".repeat(64), 100), Verdict::Invalid);
        assert_eq!(check_key(keys, &k1[..63], 100), Verdict::Invalid);
        assert_eq!(check_key([], &k1, 100), Verdict::Invalid);
    }
}
