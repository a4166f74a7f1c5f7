//! IMAP client commands (RFC 9051 6, RFC 3501 6 for IMAP4rev1-only ones, and the
//! extensions of SPEC 9): the command values, the parser of one complete command, and the
//! incremental [`CommandReader`] that frames commands and their literals from the byte
//! stream.

mod body;
mod fetch;
mod grammar;
pub mod lexer;
mod parse;
mod reader;
mod search;

pub use body::{Command, CommandBody, CommandError, CommandErrorKind, ListReturn, ListSelection};
pub use parse::parse_command;
pub use reader::{CommandReader, Limits, ReadEvent, MAX_NON_SYNC_LITERAL};
