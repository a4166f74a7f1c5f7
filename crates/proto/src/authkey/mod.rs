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

/// A well-formed key for the tests: 64 of `[A-Za-z0-9]`.
#[cfg(test)]
pub(crate) const TEST_KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01";
