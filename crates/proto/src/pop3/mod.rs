//! POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL AUTH (RFC 5034) and the
//! response codes of RFC 2449 8 and RFC 3206: the server session, a client, and the
//! command and reply codecs they share.

pub mod client;
pub mod command;
pub mod multiline;
pub mod reply;
pub mod session;

pub use command::{parse_command, Command};
pub use reply::{Pop3Error, Reply, RespCode};
