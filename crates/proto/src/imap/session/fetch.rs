//! FETCH data items of one message (RFC 9051 6.4.5, 7.5.2) from the view's metadata and
//! the message bytes the driver loaded.

use std::borrow::Cow;

use super::model::Content;
use super::view::MessageRef;
use crate::headers;
use crate::imap::envelope::Envelope;
use crate::imap::mime::Part;
use crate::imap::response::FetchItem;
use crate::imap::types::{FetchAttribute, NameEncoding, Partial, Section, SectionText};

/// How much of the message the attributes need; None: the view has everything.
pub(super) fn content_needed(attributes: &[FetchAttribute]) -> Option<Content> {
    attributes.iter().filter_map(attribute_content).max()
}

fn attribute_content(attribute: &FetchAttribute) -> Option<Content> {
    match attribute {
        FetchAttribute::Flags
        | FetchAttribute::InternalDate
        | FetchAttribute::Rfc822Size
        | FetchAttribute::Uid
        | FetchAttribute::ModSeq => None,
        FetchAttribute::Envelope | FetchAttribute::Rfc822Header => Some(Content::Header),
        FetchAttribute::BodySection { section: Section { part, text: Some(text) }, .. }
            if part.is_empty()
                && matches!(
                    text,
                    SectionText::Header | SectionText::HeaderFields(_) | SectionText::HeaderFieldsNot(_)
                ) =>
        {
            Some(Content::Header)
        }
        _ => Some(Content::Full),
    }
}

/// The items for one message. `bytes` holds at least what [`content_needed`] asked for;
/// `flags_changed`: `\Seen` was set implicitly, so FLAGS goes out even if not asked
/// (RFC 9051 6.4.5). With CONDSTORE on, FLAGS comes with MODSEQ (RFC 7162 3.2).
pub(super) fn items<'a>(
    attributes: &[FetchAttribute],
    meta: MessageRef<'_>,
    bytes: &'a [u8],
    flags_changed: bool,
    condstore: bool,
    encoding: NameEncoding,
) -> Vec<FetchItem<'a>> {
    let mut items = Vec::with_capacity(attributes.len() + 2);
    let mut structure: Option<Part> = None;
    for attribute in attributes {
        let item = match attribute {
            FetchAttribute::Uid => FetchItem::Uid(meta.uid),
            FetchAttribute::Flags => FetchItem::Flags(meta.flags.to_vec()),
            FetchAttribute::InternalDate => FetchItem::InternalDate(meta.internal_date),
            FetchAttribute::Rfc822Size => FetchItem::Rfc822Size(meta.size),
            FetchAttribute::ModSeq => FetchItem::ModSeq(meta.modseq),
            FetchAttribute::Envelope => FetchItem::Envelope(Box::new(Envelope::from_message(bytes))),
            FetchAttribute::Rfc822 => FetchItem::Rfc822(Some(Cow::Borrowed(bytes))),
            FetchAttribute::Rfc822Header => FetchItem::Rfc822Header(Some(Cow::Borrowed(header(bytes)))),
            FetchAttribute::Rfc822Text => FetchItem::Rfc822Text(Some(Cow::Borrowed(text(bytes)))),
            FetchAttribute::Body | FetchAttribute::BodyStructure => {
                let part = structure.get_or_insert_with(|| Part::parse(bytes, 0, bytes.len(), false, 0));
                let mut value = Vec::new();
                let extensible = *attribute == FetchAttribute::BodyStructure;
                part.write_structure(bytes, extensible, encoding, &mut value);
                let name = if extensible { "BODYSTRUCTURE" } else { "BODY" };
                FetchItem::Raw { name, value: Cow::Owned(value) }
            }
            FetchAttribute::BodySection { section, partial, .. } => {
                // The message's own sections need no MIME structure (most FETCHes: BODY[],
                // BODY[HEADER], BODY[HEADER.FIELDS (...)]).
                let data = if section.part.is_empty() {
                    message_section(bytes, section.text.as_ref())
                } else {
                    let part = structure.get_or_insert_with(|| Part::parse(bytes, 0, bytes.len(), false, 0));
                    section_data(bytes, part, section)
                };
                let data = data.map(|d| slice(d, *partial));
                FetchItem::BodySection {
                    section: section.clone(),
                    origin: partial.map(|p| p.offset),
                    data: data.map(|(d, _)| d),
                }
            }
            FetchAttribute::Binary { part: path, partial, .. } => {
                let part = structure.get_or_insert_with(|| Part::parse(bytes, 0, bytes.len(), false, 0));
                let data = binary_data(bytes, part, path).map(|d| slice(d, *partial).0);
                FetchItem::Binary { part: path.clone(), origin: partial.map(|p| p.offset), data }
            }
            FetchAttribute::BinarySize { part: path } => {
                let part = structure.get_or_insert_with(|| Part::parse(bytes, 0, bytes.len(), false, 0));
                let size = binary_data(bytes, part, path).map_or(0, |d| d.len() as u64);
                FetchItem::BinarySize { part: path.clone(), size }
            }
        };
        items.push(item);
    }
    let has = |items: &[FetchItem<'_>], f: fn(&FetchItem<'_>) -> bool| items.iter().any(f);
    if flags_changed && !has(&items, |i| matches!(i, FetchItem::Flags(_))) {
        items.push(FetchItem::Flags(meta.flags.to_vec()));
    }
    if condstore
        && has(&items, |i| matches!(i, FetchItem::Flags(_)))
        && !has(&items, |i| matches!(i, FetchItem::ModSeq(_)))
    {
        items.push(FetchItem::ModSeq(meta.modseq));
    }
    items
}

/// The header section, the empty line included (RFC 9051 6.4.5 HEADER).
fn header(message: &[u8]) -> &[u8] {
    &message[..headers::body_start(message).min(message.len())]
}

fn text(message: &[u8]) -> &[u8] {
    &message[headers::body_start(message).min(message.len())..]
}

/// RFC 9051 6.4.5 section text of the message itself (an empty part number).
fn message_section<'a>(message: &'a [u8], text: Option<&SectionText>) -> Option<Cow<'a, [u8]>> {
    Some(match text {
        None => Cow::Borrowed(message),
        Some(SectionText::Mime | SectionText::Header) => Cow::Borrowed(header(message)),
        Some(SectionText::Text) => Cow::Borrowed(self::text(message)),
        Some(SectionText::HeaderFields(names)) => Cow::Owned(header_fields(message, names, true)),
        Some(SectionText::HeaderFieldsNot(names)) => Cow::Owned(header_fields(message, names, false)),
    })
}

/// RFC 9051 6.4.5 section text of the part `section.part` names; None when it names none.
fn section_data<'a>(message: &'a [u8], root: &Part, section: &Section) -> Option<Cow<'a, [u8]>> {
    let part = root.find(&section.part)?;
    let entity = message.get(part.start..part.end)?;
    // A part's HEADER and TEXT are those of the message it encapsulates (RFC 9051 6.4.5).
    let headed = |part: &Part| -> Option<&'a [u8]> {
        if section.part.is_empty() {
            return Some(message);
        }
        if part.media_type == "message" {
            let inner = part.children.first()?;
            return message.get(inner.start..inner.end);
        }
        None
    };
    let data: Cow<'a, [u8]> = match &section.text {
        None if section.part.is_empty() => Cow::Borrowed(message),
        None => Cow::Borrowed(message.get(part.body..part.end)?),
        Some(SectionText::Mime) => Cow::Borrowed(header(entity)),
        Some(SectionText::Header) => Cow::Borrowed(header(headed(part)?)),
        Some(SectionText::Text) => Cow::Borrowed(text(headed(part)?)),
        Some(SectionText::HeaderFields(names)) => Cow::Owned(header_fields(headed(part)?, names, true)),
        Some(SectionText::HeaderFieldsNot(names)) => Cow::Owned(header_fields(headed(part)?, names, false)),
    };
    Some(data)
}

/// HEADER.FIELDS (`keep`) or HEADER.FIELDS.NOT: the chosen fields and the empty line.
fn header_fields(message: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in headers::fields(message) {
        if names.iter().any(|n| field.name_is(n)) == keep {
            out.extend_from_slice(message.get(field.range()).unwrap_or(&[]));
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// RFC 9051 6.4.5 BINARY: the part's body with its content transfer encoding removed;
/// an encoding that cannot be decoded gives the body as it is.
fn binary_data<'a>(message: &'a [u8], root: &Part, path: &[u32]) -> Option<Cow<'a, [u8]>> {
    let part = root.find(path)?;
    let body = message.get(part.body..part.end)?;
    let entity = message.get(part.start..part.end)?;
    let cte = headers::fields(entity).find(|f| f.name_is("Content-Transfer-Encoding")).map(|f| f.unfolded_value());
    Some(match cte.map(|c| c.to_ascii_lowercase()).as_deref() {
        Some("base64") => Cow::Owned(decode_base64(body)),
        Some("quoted-printable") => Cow::Owned(decode_quoted_printable(body)),
        _ => Cow::Borrowed(body),
    })
}

/// `<offset.length>` of the data (RFC 9051 6.4.5: past the end is empty).
fn slice(data: Cow<'_, [u8]>, partial: Option<Partial>) -> (Cow<'_, [u8]>, bool) {
    let Some(Partial { offset, length }) = partial else { return (data, true) };
    let len = data.len() as u64;
    let start = offset.min(len) as usize;
    let end = offset.saturating_add(length).min(len) as usize;
    let sliced = match data {
        Cow::Borrowed(d) => Cow::Borrowed(&d[start..end]),
        Cow::Owned(d) => Cow::Owned(d[start..end].to_vec()),
    };
    (sliced, false)
}

/// RFC 2045 6.8, lenient: characters outside the alphabet are skipped.
fn decode_base64(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for &b in body {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(value);
        count += 1;
        if count == 4 {
            out.extend_from_slice(&[(bits >> 16) as u8, (bits >> 8) as u8, bits as u8]);
            bits = 0;
            count = 0;
        }
    }
    match count {
        2 => out.push((bits >> 4) as u8),
        3 => out.extend_from_slice(&[(bits >> 10) as u8, (bits >> 2) as u8]),
        _ => {}
    }
    out
}

/// RFC 2045 6.7: `=XX` octets and soft line breaks.
fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        match (body.get(i + 1).copied(), body.get(i + 2).copied()) {
            (Some(b'\r'), Some(b'\n')) => i += 3,
            (Some(b'\n'), _) => i += 2,
            (Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8="), b"hello");
        assert_eq!(decode_quoted_printable(b"a=3Db=\r\nc"), b"a=bc");
    }
}
