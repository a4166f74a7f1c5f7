//! FETCH data items (RFC 9051 6.4.5; RFC 3501 6.4.5 for the RFC822 forms; RFC 7162 3.1.4
//! for MODSEQ).

use super::lexer::{Cursor, SyntaxError};
use crate::imap::types::{FetchAttribute, Partial, Section, SectionText};

/// Most header field names in one `HEADER.FIELDS` list.
const MAX_HEADER_FIELDS: usize = 256;
/// Most levels of a part number (`1.2.3...`).
const MAX_PART_DEPTH: usize = 64;

/// `"ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")"`; the macros
/// are expanded (RFC 9051 6.4.5).
pub(super) fn fetch_attributes(c: &mut Cursor<'_>) -> Result<Vec<FetchAttribute>, SyntaxError> {
    if c.peek() == Some(b'(') {
        return c.parenthesized(false, fetch_attribute);
    }
    let fast = [FetchAttribute::Flags, FetchAttribute::InternalDate, FetchAttribute::Rfc822Size];
    if c.eat_keyword("FAST") {
        return Ok(fast.to_vec());
    }
    if c.eat_keyword("ALL") {
        return Ok(fast.into_iter().chain([FetchAttribute::Envelope]).collect());
    }
    if c.eat_keyword("FULL") {
        return Ok(fast.into_iter().chain([FetchAttribute::Envelope, FetchAttribute::Body]).collect());
    }
    Ok(vec![fetch_attribute(c)?])
}

fn fetch_attribute(c: &mut Cursor<'_>) -> Result<FetchAttribute, SyntaxError> {
    let name = c.word().map_err(|_| SyntaxError::from("Expected a fetch attribute"))?.to_ascii_uppercase();
    let attribute = match name.as_str() {
        "ENVELOPE" => FetchAttribute::Envelope,
        "FLAGS" => FetchAttribute::Flags,
        "INTERNALDATE" => FetchAttribute::InternalDate,
        "RFC822" => FetchAttribute::Rfc822,
        "RFC822.HEADER" => FetchAttribute::Rfc822Header,
        "RFC822.SIZE" => FetchAttribute::Rfc822Size,
        "RFC822.TEXT" => FetchAttribute::Rfc822Text,
        "BODYSTRUCTURE" => FetchAttribute::BodyStructure,
        "UID" => FetchAttribute::Uid,
        "MODSEQ" => FetchAttribute::ModSeq,
        "BODY" if c.peek() != Some(b'[') => FetchAttribute::Body,
        "BODY" | "BODY.PEEK" => {
            let section = section(c)?;
            let partial = partial(c)?;
            FetchAttribute::BodySection { section, partial, peek: name == "BODY.PEEK" }
        }
        "BINARY" | "BINARY.PEEK" => {
            let part = binary_section(c)?;
            let partial = partial(c)?;
            FetchAttribute::Binary { part, partial, peek: name == "BINARY.PEEK" }
        }
        "BINARY.SIZE" => FetchAttribute::BinarySize { part: binary_section(c)? },
        _ => return Err(format!("Unknown fetch attribute {name}").into()),
    };
    Ok(attribute)
}

/// `section-part`: `nz-number *("." nz-number)`, stopping before a `.` that is not
/// followed by a digit (the `.` of `1.HEADER`).
fn section_part(c: &mut Cursor<'_>) -> Result<Vec<u32>, SyntaxError> {
    let mut part = vec![c.nz_number()?];
    while c.rest().starts_with(b".") && c.rest().get(1).is_some_and(u8::is_ascii_digit) {
        c.advance(1);
        part.push(c.nz_number()?);
        if part.len() > MAX_PART_DEPTH {
            return Err("Section part nested too deeply".into());
        }
    }
    Ok(part)
}

/// RFC 9051 9 `section`: `"[" [section-spec] "]"`.
fn section(c: &mut Cursor<'_>) -> Result<Section, SyntaxError> {
    c.expect(b'[', "Expected '['")?;
    let mut section = Section::default();
    if c.eat(b']') {
        return Ok(section);
    }
    if c.peek().is_some_and(|b| b.is_ascii_digit()) {
        section.part = section_part(c)?;
        if c.eat(b']') {
            return Ok(section);
        }
        c.expect(b'.', "Expected '.' or ']' after the part number")?;
    }
    let keyword = c.word()?.to_ascii_uppercase();
    let text = match keyword.as_str() {
        "HEADER" => SectionText::Header,
        "TEXT" => SectionText::Text,
        "MIME" if !section.part.is_empty() => SectionText::Mime,
        "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
            c.space()?;
            let names = c.parenthesized(false, |c| {
                let name = c.astring_utf8("Header field name")?;
                // RFC 5322 3.6.8 field names: printable ASCII other than ':'.
                if name.is_empty() || !name.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b':') {
                    return Err("Invalid header field name".into());
                }
                Ok(name)
            })?;
            if names.len() > MAX_HEADER_FIELDS {
                return Err("Too many header field names".into());
            }
            if keyword == "HEADER.FIELDS" {
                SectionText::HeaderFields(names)
            } else {
                SectionText::HeaderFieldsNot(names)
            }
        }
        _ => return Err("Unknown section".into()),
    };
    section.text = Some(text);
    c.expect(b']', "Expected ']'")?;
    Ok(section)
}

/// RFC 9051 9 `section-binary`: `"[" [section-part] "]"`.
fn binary_section(c: &mut Cursor<'_>) -> Result<Vec<u32>, SyntaxError> {
    c.expect(b'[', "Expected '['")?;
    if c.eat(b']') {
        return Ok(Vec::new());
    }
    let part = section_part(c)?;
    c.expect(b']', "Expected ']'")?;
    Ok(part)
}

/// RFC 9051 9 `partial`: `"<" number64 "." nz-number64 ">"`.
fn partial(c: &mut Cursor<'_>) -> Result<Option<Partial>, SyntaxError> {
    if !c.eat(b'<') {
        return Ok(None);
    }
    let offset = c.number64()?;
    c.expect(b'.', "Expected '.' in partial")?;
    let length = c.number64()?;
    if length == 0 {
        return Err("Partial length cannot be zero".into());
    }
    c.expect(b'>', "Expected '>'")?;
    Ok(Some(Partial { offset, length }))
}
