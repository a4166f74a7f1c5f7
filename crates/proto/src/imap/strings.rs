//! IMAP strings on the wire (RFC 9051 4.3): quoted when they can be, literals otherwise;
//! `nstring`, `astring` and mailbox names. The response writer and the ENVELOPE builder
//! both write them.

use super::types::{is_astring_char, MailboxName, NameEncoding};

/// Longest string written quoted; longer ones go as literals.
const MAX_QUOTED: usize = 1024;

/// RFC 9051 9 `string`: quoted when it can be, a literal otherwise. `encoding` says
/// whether the client takes UTF-8 in quoted strings (RFC 9051 4.3, RFC 6855 3).
pub fn write_string(value: &[u8], encoding: NameEncoding, out: &mut Vec<u8>) {
    let quotable = value.len() <= MAX_QUOTED
        && !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
        && (value.is_ascii() || (encoding == NameEncoding::Utf8 && std::str::from_utf8(value).is_ok()));
    if quotable {
        out.push(b'"');
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        write_literal(value, out);
    }
}

/// RFC 9051 4.3 `literal`: `{n}` CRLF octets.
pub fn write_literal(value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// RFC 9051 4.3 `literal8`: `~{n}` CRLF octets, for BINARY data with NUL.
pub fn write_literal8(value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("~{{{}}}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// RFC 9051 9 `nstring`: NIL or a string.
pub fn write_nstring(value: Option<&[u8]>, encoding: NameEncoding, out: &mut Vec<u8>) {
    match value {
        Some(value) => write_string(value, encoding, out),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// RFC 9051 9 `astring`: bare when every octet is an ASTRING-CHAR (and it is not `NIL`),
/// else a string.
pub fn write_astring(value: &[u8], encoding: NameEncoding, out: &mut Vec<u8>) {
    if !value.is_empty() && value.iter().all(|&b| is_astring_char(b)) && !value.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(value);
    } else {
        write_string(value, encoding, out);
    }
}

/// A mailbox name (RFC 9051 9 `mailbox`), in the connection's encoding, always as a
/// string so that no name is mistaken for NIL or an atom it is not.
pub fn write_mailbox(name: &MailboxName, encoding: NameEncoding, out: &mut Vec<u8>) {
    write_string(name.to_wire(encoding).as_bytes(), encoding, out);
}
