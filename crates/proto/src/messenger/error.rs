//! What a Messenger answer or entry that does not parse says (SPEC 8.1, 8.4): one line,
//! naming the part that is wrong.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub fn new(what: impl Into<String>) -> ParseError {
        // One line, whatever a peer sent.
        ParseError(what.into().replace(['\r', '\n'], " "))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}
