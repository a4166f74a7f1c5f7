//! vouchmail protocol logic: parsers, codecs and session state machines.
//!
//! Nothing in this crate performs I/O or knows about an async runtime: bytes go in,
//! events and bytes come out. The server crate wraps these in thin tokio drivers.

pub mod authkey;
pub mod csv;
pub mod dsn;
pub mod headers;
pub mod imap;
pub mod messenger;
pub mod pop3;
pub mod sasl;
pub mod smtp;
pub mod time;
