//! Every reply of the Messenger verbs (SPEC 8.1, 8.4), decided here and nowhere else.
//!
//! The data lines of a successful CERT, ENTITIES or BOOK carry no enhanced status code:
//! SPEC 8.1 and 8.4 fix them octet for octet (`250-<resolved address>`, `250-<serial> ADD
//! ...`), and RFC 2034 3 does not ask for one outside a mail transaction's replies.

use super::error::ParseError;
use base64::Engine;

use super::directory::DirectoryEntry;
use super::entities::EntityChange;
use crate::smtp::reply::{EnhancedCode, Reply};

/// Base64 characters per PEM line (RFC 7468 2).
const PEM_LINE: usize = 64;

/// The PEM text of a DER certificate (RFC 7468 2), lines ending in `\n`.
pub fn pem_from_der(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in encoded.as_bytes().chunks(PEM_LINE) {
        // Base64 output is ASCII.
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// SPEC 8.1 success:
///
/// ```text
/// 250-<resolved address>
/// 250------BEGIN CERTIFICATE-----
/// 250-<each base64 line of the PEM>
/// 250 -----END CERTIFICATE-----
/// ```
pub fn cert_found(address: &str, der: &[u8]) -> Reply {
    let pem = pem_from_der(der);
    let mut text = String::with_capacity(pem.len() + address.len() + 1);
    text.push_str(address);
    text.push('\n');
    text.push_str(pem.trim_end_matches('\n'));
    Reply::plain(250, text)
}

/// The client's reading of a CERT answer (SPEC 8.1): `250-<address>`, then the PEM lines.
/// `lines` are the reply's texts (code and separator removed). Returns the resolved
/// address and the PEM (lines ending in `\n`), or why it is not one, as one line.
pub fn parse_cert_answer(code: u16, lines: &[String]) -> Result<(String, String), ParseError> {
    if code != 250 {
        return Err(ParseError::new(format!("{code} {}", lines.join(" / ").replace(['\r', '\n'], " "))));
    }
    let Some((address, pem_lines)) = lines.split_first() else {
        return Err(ParseError::new("empty answer"));
    };
    let address = address.trim();
    let valid = address.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !address.contains(|c: char| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ParseError::new("malformed answer: the first line is not an address"));
    }
    let (Some(first), Some(last)) = (pem_lines.first(), pem_lines.last()) else {
        return Err(ParseError::new("malformed answer: no certificate"));
    };
    if first.trim() != "-----BEGIN CERTIFICATE-----"
        || last.trim() != "-----END CERTIFICATE-----"
        || pem_lines.len() < 3
    {
        return Err(ParseError::new("malformed answer: not a PEM certificate"));
    }
    let mut pem = String::new();
    for line in pem_lines {
        let line = line.trim();
        if line.contains(|c: char| c.is_control()) {
            return Err(ParseError::new("malformed answer: a control character in the PEM"));
        }
        pem.push_str(line);
        pem.push('\n');
    }
    Ok((address.to_string(), pem))
}

/// 550 5.1.1: no such address or published ID (SPEC 8.1).
pub fn cert_unknown(what: &str) -> Reply {
    Reply::new(550, EnhancedCode(5, 1, 1), format!("No such address or published ID: {what}"))
}

/// 550 5.3.0: the mailbox exists but has no (current) certificate (SPEC 8.1).
pub fn cert_none(address: &str) -> Reply {
    Reply::new(550, EnhancedCode(5, 3, 0), format!("No certificate published for {address}"))
}

/// 451 4.4.1: the mailbox's home server cannot be reached (SPEC 8.1; RFC 3463 3.5).
pub fn home_unreachable(domain: &str) -> Reply {
    Reply::new(451, EnhancedCode(4, 4, 1), format!("Home server of {domain} unreachable, try again later"))
}

/// 530 5.7.0: a remote lookup (relay or Entity Index) needs an authenticated session
/// (SPEC 8.1).
pub fn remote_lookup_needs_auth() -> Reply {
    Reply::new(530, EnhancedCode(5, 7, 0), "Authentication required for a remote lookup")
}

/// 354 to PUBCERT: the PEM lines follow, ended by a line `.` (SPEC 8.1).
pub fn pubcert_go_ahead() -> Reply {
    Reply::plain(354, "Send the PEM certificate, end with <CR><LF>.<CR><LF>")
}

/// 250 2.0.0: the certificate is stored (SPEC 8.1).
pub fn pubcert_stored(address: &str) -> Reply {
    Reply::new(250, EnhancedCode(2, 0, 0), format!("Certificate stored for {address}"))
}

/// 554 5.7.0 <reason>: the certificate does not parse, is not current, or does not name
/// the user (SPEC 8.1).
pub fn pubcert_refused(reason: &str) -> Reply {
    Reply::new(554, EnhancedCode(5, 7, 0), reason.to_string())
}

/// 530 5.7.0: PUBCERT needs local authentication (SPEC 8.1).
pub fn pubcert_needs_local_auth() -> Reply {
    Reply::new(530, EnhancedCode(5, 7, 0), "Local authentication required")
}

/// 530 5.7.0: BOOK needs an authenticated session (SPEC 8.4).
pub fn book_needs_auth() -> Reply {
    Reply::new(530, EnhancedCode(5, 7, 0), "Authentication required")
}

/// SPEC 8.4: `250-<serial> ADD|DEL <published-id> <mailbox>` lines, then
/// `250 <highest serial>`.
pub fn entities(changes: &[EntityChange], highest: u64) -> Reply {
    let mut text = String::new();
    for change in changes {
        text.push_str(&change.to_line());
        text.push('\n');
    }
    text.push_str(&highest.to_string());
    Reply::plain(250, text)
}

/// SPEC 8.4: `250-<mailbox>,<name>,<organisation>,<role>,<id;id...>` lines, then
/// `250 <n> entries`.
pub fn book(entries: &[DirectoryEntry]) -> Reply {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&entry.book_line());
        text.push('\n');
    }
    text.push_str(&format!("{} entries", entries.len()));
    Reply::plain(250, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::{EntityOp, PublishedId};
    use crate::smtp::address::Address;

    #[test]
    fn cert_reply_is_the_spec_format_octet_for_octet() {
        let der: Vec<u8> = (0..=255u8).collect();
        let wire = cert_found("abc555@lrsupport.test", &der).to_wire();
        let text = String::from_utf8(wire).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "250-abc555@lrsupport.test");
        assert_eq!(lines[1], "250------BEGIN CERTIFICATE-----");
        let body: Vec<&str> = lines[2..lines.len() - 2].to_vec();
        assert!(body.iter().all(|l| l.starts_with("250-") && l.len() <= 4 + 64));
        assert_eq!(lines[lines.len() - 2], "250 -----END CERTIFICATE-----");
        assert_eq!(lines[lines.len() - 1], "", "ends in CRLF");
        let b64: String = body.iter().map(|l| &l[4..]).collect();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), der);
    }

    #[test]
    fn error_replies_have_the_spec_codes() {
        let cases = [
            (cert_unknown("x"), "550 5.1.1"),
            (cert_none("a@b"), "550 5.3.0"),
            (home_unreachable("b"), "451 4.4.1"),
            (remote_lookup_needs_auth(), "530 5.7.0"),
            (pubcert_stored("a@b"), "250 2.0.0"),
            (pubcert_refused("expired"), "554 5.7.0"),
            (pubcert_needs_local_auth(), "530 5.7.0"),
            (book_needs_auth(), "530 5.7.0"),
        ];
        for (reply, expected) in cases {
            let wire = String::from_utf8(reply.to_wire()).unwrap();
            assert!(wire.starts_with(&format!("{expected} ")), "{wire}");
        }
        assert_eq!(pubcert_go_ahead().to_wire()[..4], *b"354 ");
    }

    #[test]
    fn entities_and_book_replies() {
        let change = EntityChange {
            serial: 3,
            op: EntityOp::Add,
            id: PublishedId::parse("1234567F").unwrap(),
            mailbox: Address::parse("abc555@lrsupport.test").unwrap(),
        };
        assert_eq!(entities(&[change], 4).to_wire(), b"250-3 ADD 1234567F abc555@lrsupport.test\r\n250 4\r\n");
        assert_eq!(entities(&[], 0).to_wire(), b"250 0\r\n");
        let entry = DirectoryEntry {
            mailbox: "abc555@lrsupport.test".into(),
            name: "Ann Brown".into(),
            organisation: "LR Support".into(),
            role: "GP".into(),
            ids: vec!["1234567F".into()],
        };
        assert_eq!(
            book(&[entry]).to_wire(),
            b"250-abc555@lrsupport.test,Ann Brown,LR Support,GP,1234567F\r\n250 1 entries\r\n"
        );
        assert_eq!(book(&[]).to_wire(), b"250 0 entries\r\n");
    }
}
