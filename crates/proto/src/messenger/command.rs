//! The arguments of the Messenger verbs (SPEC 8.1, 8.4). Parsing never panics: every
//! malformed argument becomes the `501 5.5.4` the session answers with.

use std::fmt;

use crate::smtp::address::Address;
use crate::smtp::reply::{Reply, SmtpError};

/// Longest published ID (a provider number is 8 characters; leave room for others).
pub const MAX_ID_LEN: usize = 64;
/// Longest BOOK query.
pub const MAX_QUERY_LEN: usize = 200;

/// A published ID such as a provider number (`1234567F`): 1 to 64 of `[A-Za-z0-9._-]`,
/// no `@` (SPEC 8.1). IDs are compared without regard to case and kept in upper case, so
/// `1234567f` names the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishedId(String);

impl PublishedId {
    pub fn parse(text: &str) -> Option<PublishedId> {
        let ok = !text.is_empty()
            && text.len() <= MAX_ID_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| PublishedId(text.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublishedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `CERT` asks for (SPEC 8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertTarget {
    /// `CERT <address>`; angle brackets around it are allowed.
    Address(Address),
    /// `CERT <published-id>`: an argument without `@`.
    PublishedId(PublishedId),
}

impl fmt::Display for CertTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertTarget::Address(a) => write!(f, "{a}"),
            CertTarget::PublishedId(id) => write!(f, "{id}"),
        }
    }
}

fn cert_syntax() -> SmtpError {
    Reply::syntax("Syntax: CERT <address> or CERT <published-id>")
}

/// `CERT <address>` or `CERT <published-id>` (SPEC 8.1); anything else is 501 5.5.4.
pub fn parse_cert_argument(arg: &str) -> Result<CertTarget, SmtpError> {
    let arg = arg.trim_matches(' ');
    if arg.is_empty() || arg.contains(' ') {
        return Err(cert_syntax());
    }
    let bare = match arg.strip_prefix('<') {
        Some(rest) => rest.strip_suffix('>').ok_or_else(cert_syntax)?,
        None => arg,
    };
    if bare.contains('@') {
        // A source route or any other path syntax is not an address here.
        return Address::parse(bare).map(CertTarget::Address).map_err(|_| cert_syntax());
    }
    PublishedId::parse(bare).map(CertTarget::PublishedId).ok_or_else(cert_syntax)
}

/// `ENTITIES [<since-serial>]` (SPEC 8.4): absent means 0 (everything).
pub fn parse_entities_argument(arg: &str) -> Result<u64, SmtpError> {
    let arg = arg.trim_matches(' ');
    if arg.is_empty() {
        return Ok(0);
    }
    if arg.len() > 20 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reply::syntax("Syntax: ENTITIES [<since-serial>]"));
    }
    arg.parse::<u64>().map_err(|_| Reply::syntax("Syntax: ENTITIES [<since-serial>]"))
}

/// `BOOK <query>` (SPEC 8.4): 1 to 200 characters, no control characters; spaces inside
/// are part of the query.
pub fn parse_book_query(arg: &str) -> Result<String, SmtpError> {
    let query = arg.trim_matches(' ');
    if query.is_empty() || query.chars().count() > MAX_QUERY_LEN || query.chars().any(char::is_control) {
        return Err(Reply::syntax("Syntax: BOOK <query>"));
    }
    Ok(query.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_argument_is_an_address_or_an_id() {
        assert_eq!(
            parse_cert_argument("abc555@lrsupport.test").unwrap(),
            CertTarget::Address(Address::parse("abc555@lrsupport.test").unwrap())
        );
        assert_eq!(
            parse_cert_argument("<abc555@LRSupport.test>").unwrap(),
            CertTarget::Address(Address::parse("abc555@lrsupport.test").unwrap())
        );
        assert_eq!(
            parse_cert_argument(" 1234567f ").unwrap(),
            CertTarget::PublishedId(PublishedId::parse("1234567F").unwrap())
        );
        for bad in ["", " ", "a b", "<abc@x", "@x", "abc@", "12/34", "x".repeat(65).as_str(), "<>", "a@b c"] {
            let reply = parse_cert_argument(bad).unwrap_err();
            assert_eq!((reply.code, reply.enhanced.map(|e| e.to_string())), (501, Some("5.5.4".into())), "{bad:?}");
        }
    }

    #[test]
    fn entities_and_book_arguments() {
        assert_eq!(parse_entities_argument("").unwrap(), 0);
        assert_eq!(parse_entities_argument(" 42 ").unwrap(), 42);
        for bad in ["-1", "x", "1 2", "99999999999999999999"] {
            assert_eq!(parse_entities_argument(bad).unwrap_err().code, 501, "{bad}");
        }
        assert_eq!(parse_book_query(" Smith Clinic ").unwrap(), "Smith Clinic");
        assert!(parse_book_query("").is_err());
        assert!(parse_book_query("a\tb").is_err());
        assert!(parse_book_query(&"q".repeat(201)).is_err());
    }
}
