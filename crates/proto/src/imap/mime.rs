//! The MIME structure of a message (RFC 2045, RFC 2046) as FETCH needs it: the parts a
//! section number names (RFC 9051 6.4.5) and BODY/BODYSTRUCTURE (RFC 9051 7.5.2).
//! Works on untrusted bytes: depth and part counts are bounded, nothing panics.

use super::strings::{write_nstring, write_string};
use super::types::NameEncoding;
use crate::headers;

/// Deepest nesting of multiparts and encapsulated messages followed.
const MAX_DEPTH: usize = 32;
/// Most parts of one multipart.
const MAX_PARTS: usize = 1000;

/// One entity: a header section and a body, by offset into the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Start of the entity's header section.
    pub start: usize,
    /// Start of its body.
    pub body: usize,
    /// End of its body.
    pub end: usize,
    /// Lower-case `type/subtype` and parameters (names lower-case).
    pub media_type: String,
    pub media_subtype: String,
    pub params: Vec<(String, String)>,
    /// The sub-parts of a multipart, or the one message of a message/rfc822.
    pub children: Vec<Part>,
}

impl Part {
    /// Parses the entity `msg[start..end]`; `default_type` is text/plain, or message/rfc822
    /// inside multipart/digest (RFC 2046 5.1.5).
    pub fn parse(msg: &[u8], start: usize, end: usize, digest_child: bool, depth: usize) -> Part {
        let entity = msg.get(start..end).unwrap_or(&[]);
        let body = start + headers::body_start(entity);
        let content_type = field(entity, "Content-Type");
        let (media_type, media_subtype, params) = match content_type.as_deref().and_then(parse_content_type) {
            Some(parsed) => parsed,
            None if digest_child => ("message".into(), "rfc822".into(), Vec::new()),
            None => ("text".into(), "plain".into(), vec![("charset".into(), "us-ascii".into())]),
        };
        let mut part = Part { start, body, end, media_type, media_subtype, params, children: Vec::new() };
        if depth >= MAX_DEPTH {
            return part;
        }
        if part.media_type == "multipart" {
            if let Some(boundary) = part.param("boundary") {
                let digest = part.media_subtype == "digest";
                for (s, e) in split_multipart(msg, body, end, boundary.as_bytes()) {
                    part.children.push(Part::parse(msg, s, e, digest, depth + 1));
                }
            }
        } else if part.is_message() {
            part.children.push(Part::parse(msg, body, end, false, depth + 1));
        }
        part
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.media_type == "multipart"
    }

    fn is_message(&self) -> bool {
        self.media_type == "message" && (self.media_subtype == "rfc822" || self.media_subtype == "global")
    }

    /// RFC 9051 6.4.5 part numbers: `[1]` of a non-multipart is its body; inside a
    /// message/rfc822, numbers continue in the encapsulated message.
    pub fn find(&self, path: &[u32]) -> Option<&Part> {
        let Some((&first, rest)) = path.split_first() else { return Some(self) };
        let index = usize::try_from(first).ok()?.checked_sub(1)?;
        let holder = if self.is_message() { self.children.first()? } else { self };
        let child = if holder.is_multipart() {
            holder.children.get(index)?
        } else if index == 0 {
            holder
        } else {
            return None;
        };
        if rest.is_empty() {
            return Some(child);
        }
        child.find(rest)
    }

    /// RFC 9051 7.5.2 BODYSTRUCTURE (`extensible`) or BODY.
    pub fn write_structure(&self, msg: &[u8], extensible: bool, encoding: NameEncoding, out: &mut Vec<u8>) {
        let entity = msg.get(self.start..self.end).unwrap_or(&[]);
        out.push(b'(');
        if self.is_multipart() && !self.children.is_empty() {
            for child in &self.children {
                child.write_structure(msg, extensible, encoding, out);
            }
            out.push(b' ');
            write_string(self.media_subtype.to_ascii_uppercase().as_bytes(), encoding, out);
            if extensible {
                out.push(b' ');
                write_params(&self.params, encoding, out);
                write_extension(entity, encoding, out);
            }
            out.push(b')');
            return;
        }
        let (media_type, media_subtype) = if self.is_multipart() {
            // A multipart without parts is shown as the text it is.
            ("TEXT".to_owned(), "PLAIN".to_owned())
        } else {
            (self.media_type.to_ascii_uppercase(), self.media_subtype.to_ascii_uppercase())
        };
        write_string(media_type.as_bytes(), encoding, out);
        out.push(b' ');
        write_string(media_subtype.as_bytes(), encoding, out);
        out.push(b' ');
        write_params(&self.params, encoding, out);
        out.push(b' ');
        let value = |name: &str| field(entity, name);
        write_nstring(value("Content-ID").as_deref().map(str::as_bytes), encoding, out);
        out.push(b' ');
        write_nstring(value("Content-Description").as_deref().map(str::as_bytes), encoding, out);
        out.push(b' ');
        let cte = value("Content-Transfer-Encoding").unwrap_or_else(|| "7BIT".into());
        write_string(cte.to_ascii_uppercase().as_bytes(), encoding, out);
        let body = msg.get(self.body..self.end).unwrap_or(&[]);
        out.extend_from_slice(format!(" {}", body.len()).as_bytes());
        if self.is_message() {
            if let Some(inner) = self.children.first() {
                let inner_msg = msg.get(inner.start..inner.end).unwrap_or(&[]);
                out.push(b' ');
                super::envelope::Envelope::from_message(inner_msg).write_to(encoding, out);
                out.push(b' ');
                inner.write_structure(msg, extensible, encoding, out);
            }
        }
        if self.media_type == "text" || self.is_message() {
            out.extend_from_slice(format!(" {}", count_lines(body)).as_bytes());
        }
        if extensible {
            // body-fld-md5 is always NIL.
            out.extend_from_slice(b" NIL");
            write_extension(entity, encoding, out);
        }
        out.push(b')');
    }
}

/// The value of the first field named `name`, unfolded.
fn field(entity: &[u8], name: &str) -> Option<String> {
    headers::fields(entity).find(|f| f.name_is(name)).map(|f| f.unfolded_value())
}

/// Parameter names (lower-case) and values.
type Params = Vec<(String, String)>;

/// RFC 2045 5.1: `type/subtype *(; attribute=value)`, lower-cased names.
fn parse_content_type(value: &str) -> Option<(String, String, Params)> {
    let mut parts = split_params(value);
    let kind = parts.next()?;
    let (t, s) = kind.split_once('/')?;
    let (t, s) = (t.trim().to_ascii_lowercase(), s.trim().to_ascii_lowercase());
    let token =
        |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    if !token(&t) || !token(&s) {
        return None;
    }
    let params = parts
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).map_or(value.to_owned(), unquote);
            Some((name.trim().to_ascii_lowercase(), value))
        })
        .take(64)
        .collect();
    Some((t, s, params))
}

/// Splits at `;` outside quoted strings.
fn split_params(value: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pieces.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn unquote(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The parts of a multipart body `msg[body..end]` (RFC 2046 5.1.1): each between a
/// `--boundary` line and the next; the CRLF before a delimiter belongs to it.
fn split_multipart(msg: &[u8], body: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut delimiters: Vec<(usize, usize, bool)> = Vec::new();
    let mut line_start = body;
    while line_start < end {
        let line_end = msg[line_start..end].iter().position(|&b| b == b'\n').map_or(end, |i| line_start + i + 1);
        let line = &msg[line_start..line_end];
        if let Some(rest) = line.strip_prefix(b"--").and_then(|l| l.strip_prefix(boundary)) {
            let close = rest.starts_with(b"--");
            let rest = if close { &rest[2..] } else { rest };
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                // The CRLF before the delimiter is part of it.
                let mut before = line_start;
                if before > body && msg[before - 1] == b'\n' {
                    before -= 1;
                    if before > body && msg[before - 1] == b'\r' {
                        before -= 1;
                    }
                }
                delimiters.push((before, line_end, close));
                if close || delimiters.len() > MAX_PARTS {
                    break;
                }
            }
        }
        line_start = line_end;
    }
    let mut parts = Vec::new();
    for pair in delimiters.windows(2) {
        let (_, after, close) = pair[0];
        if close {
            break;
        }
        parts.push((after, pair[1].0.max(after)));
    }
    // A last part without a closing delimiter runs to the end.
    if let Some(&(_, after, false)) = delimiters.last() {
        if after < end {
            parts.push((after, end));
        }
    }
    parts
}

/// RFC 9051 7.5.2 `body-fld-param`: `("name" "value" ...)` or NIL.
fn write_params(params: &[(String, String)], encoding: NameEncoding, out: &mut Vec<u8>) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_string(name.to_ascii_uppercase().as_bytes(), encoding, out);
        out.push(b' ');
        write_string(value.as_bytes(), encoding, out);
    }
    out.push(b')');
}

/// `body-fld-dsp body-fld-lang body-fld-loc` of the extension data.
fn write_extension(entity: &[u8], encoding: NameEncoding, out: &mut Vec<u8>) {
    out.push(b' ');
    match field(entity, "Content-Disposition") {
        Some(value) => {
            let mut parts = split_params(&value);
            let kind = parts.next().unwrap_or("").to_ascii_uppercase();
            let params: Vec<(String, String)> = parts
                .filter_map(|p| {
                    let (n, v) = p.split_once('=')?;
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).map_or(v.to_owned(), unquote);
                    Some((n.trim().to_ascii_lowercase(), v))
                })
                .take(64)
                .collect();
            out.push(b'(');
            write_string(kind.as_bytes(), encoding, out);
            out.push(b' ');
            write_params(&params, encoding, out);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match field(entity, "Content-Language") {
        Some(language) => write_string(language.as_bytes(), encoding, out),
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    write_nstring(field(entity, "Content-Location").as_deref().map(str::as_bytes), encoding, out);
}

fn count_lines(body: &[u8]) -> usize {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(!body.is_empty() && !body.ends_with(b"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn parts_and_structure() {
        let part = Part::parse(MIXED, 0, MIXED.len(), false, 0);
        assert_eq!(part.children.len(), 2);
        let first = part.find(&[1]).unwrap();
        assert_eq!(&MIXED[first.body..first.end], b"hello");
        let inner = part.find(&[2, 1]).unwrap();
        assert_eq!(&MIXED[inner.body..inner.end], b"inner body");
        assert!(part.find(&[3]).is_none());
        let mut out = Vec::new();
        part.write_structure(MIXED, false, NameEncoding::Utf8, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 1)"), "{text}");
        assert!(text.ends_with(" \"MIXED\")"), "{text}");
    }

    #[test]
    fn single_part_and_garbage() {
        let msg = b"Subject: x\r\n\r\nbody\r\n";
        let part = Part::parse(msg, 0, msg.len(), false, 0);
        let body = part.find(&[1]).unwrap();
        assert_eq!(&msg[body.body..body.end], b"body\r\n");
        for garbage in [&b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n"[..], b"\xff\xfe", b""] {
            let part = Part::parse(garbage, 0, garbage.len(), false, 0);
            let mut out = Vec::new();
            part.write_structure(garbage, true, NameEncoding::ModifiedUtf7, &mut out);
        }
    }
}
