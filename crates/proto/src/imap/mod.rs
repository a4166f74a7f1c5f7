//! IMAP4rev2 (RFC 9051), also serving IMAP4rev1 clients (RFC 3501): the command reader and
//! parser and the response writer, without I/O.
//!
//! The extensions of SPEC 9 whose syntax lives here: SASL-IR (RFC 4959), IDLE (RFC 2177),
//! UIDPLUS (RFC 4315), MOVE (RFC 6851), SPECIAL-USE (RFC 6154), ENABLE (RFC 5161),
//! NAMESPACE (RFC 2342), ID (RFC 2971), LITERAL- (RFC 7888), CONDSTORE (RFC 7162), QUOTA
//! (RFC 9208), LIST-EXTENDED and LIST-STATUS (RFC 5258, RFC 5819), ESEARCH and SEARCHRES
//! (RFC 4731, RFC 5182), BINARY (RFC 3516) and UTF8=ACCEPT mailbox names (RFC 6855).
//! Mailbox names of IMAP4rev1 clients are modified UTF-7 (RFC 3501 5.1.3).
//!
//! [`client::Client`] is the other side: a sans-I/O IMAP client for tests, benchmarks and
//! tools.
//!
//! A driver feeds received octets to a [`CommandReader`], takes [`ReadEvent`]s from it,
//! and writes [`StatusResponse`]s, [`Data`] and FETCH responses ([`response::write_fetch`]);
//! [`envelope::Envelope`] builds the ENVELOPE item from a message's header section.
//! [`session::Session`] is the server state machine over all of these: a tokio driver
//! feeds it bytes and answers its [`session::Event`]s from the store.

pub mod client;
pub mod command;
pub mod envelope;
mod mime;
pub mod response;
pub mod session;
mod strings;
pub mod types;

#[cfg(test)]
mod tests;

pub use command::{
    parse_command, Command, CommandBody, CommandError, CommandErrorKind, CommandReader, Limits, ReadEvent,
};
pub use response::{Data, FetchItem, ResponseCode, Status, StatusResponse};
pub use types::{
    FetchAttribute, Flag, MailboxName, NameEncoding, SearchKey, SequenceSet, StatusItem, StoreAction, Tag,
};
