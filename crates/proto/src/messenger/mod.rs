//! The Messenger protocol (SPEC 8, seed 000): the I/O-free parts of the federation of
//! vouchmail servers on port 21025.
//!
//! - [`command`]: the arguments of CERT, ENTITIES and BOOK (SPEC 8.1, 8.4).
//! - [`replies`]: every reply of those verbs, built in one place (SPEC 8.1, 8.4 wire formats).
//! - [`entities`]: the Entity Index change lines of `ENTITIES` (SPEC 8.4), both ways.
//! - [`directory`]: directory entries and their `BOOK` CSV line (SPEC 8.4, RFC 4180).
//!
//! A peer's replies are read by the crate's one reply reader,
//! [`crate::smtp::client::ReplyParser`] (strict: exact octets, so a relayed CERT reply is
//! passed on unchanged, SPEC 8.1), re-exported here.
//!
//! The session stages that use them are `cert.rs`, `pubcert.rs`, `entities.rs` and
//! `book.rs` in `smtp::session`.

pub mod bindings;
pub mod command;
pub mod directory;
pub mod entities;
pub mod error;
pub mod rcram;
pub mod replies;
pub mod tracking;

pub use crate::smtp::client::reply::{ReplyLimits, ReplyParser, ReplySyntaxError, ServerReply};
pub use command::{parse_book_query, parse_cert_argument, parse_entities_argument, CertTarget, PublishedId};
pub use directory::DirectoryEntry;
pub use entities::{EntityChange, EntityOp};
pub use error::ParseError;

/// The standard Messenger port (SPEC 1, 8).
pub const PORT: u16 = 21025;
