//! Header-section helpers over raw message bytes (RFC 5322 2.2, 3.6).
//!
//! Everything here works on untrusted bytes: it tolerates LF-only line endings, a missing
//! body, a missing blank line, 8-bit garbage and truncated input, and never panics. The
//! header section ends at the first empty line, or at the first line that is neither a
//! header field nor a continuation of one (what follows is then treated as the body).

use std::ops::Range;

/// One header field, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    name: &'a str,
    value: &'a [u8],
    start: usize,
    end: usize,
}

impl<'a> Field<'a> {
    /// The field name as written (without any white space before the colon).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// True if the name equals `name`, ignoring ASCII case (RFC 5322 1.2.2).
    pub fn name_is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The raw value: everything after the colon up to, not including, the line ending
    /// that ends the field. Folded lines keep their CRLF (or LF).
    pub fn raw_value(&self) -> &'a [u8] {
        self.value
    }

    /// The value unfolded (RFC 5322 2.2.3), trimmed of surrounding white space, with
    /// invalid UTF-8 replaced by U+FFFD.
    pub fn unfolded_value(&self) -> String {
        unfold(self.value)
    }

    /// Byte range of the whole field in the message, including its final line ending.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// Iterator over the header fields of a message; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    msg: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Fields<'a> {
    /// Where the iterator stands: once it has returned `None`, the end of the header
    /// section (the start of the blank line, of the first non-field line, or the end of
    /// the message).
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// End of the line starting at `from`: the index after its LF, or `msg.len()`.
fn line_end(msg: &[u8], from: usize) -> usize {
    msg.get(from..).and_then(|rest| rest.iter().position(|&b| b == b'\n')).map_or(msg.len(), |i| from + i + 1)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 5322 3.6.8: ftext = %d33-57 / %d59-126.
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.done {
            return None;
        }
        let msg = self.msg;
        let start = self.pos;
        let first_end = line_end(msg, start);
        let line = msg.get(start..first_end).unwrap_or(&[]);
        // RFC 5322 3.6.8: field-name ":" ...; obsolete syntax (4.5) allows WSP before ":".
        let colon = line.iter().position(|&b| b == b':');
        let name = colon.and_then(|c| {
            let raw = line.get(..c)?;
            let trimmed_len = raw.iter().rposition(|&b| !is_wsp(b)).map_or(0, |i| i + 1);
            let name = raw.get(..trimmed_len)?;
            if name.is_empty() || !name.iter().all(|&b| is_ftext(b)) {
                return None;
            }
            std::str::from_utf8(name).ok()
        });
        let (Some(name), Some(colon)) = (name, colon) else {
            // Empty line (end of header section), a continuation with no field, garbage,
            // or the end of the message.
            self.done = true;
            return None;
        };
        // RFC 5322 2.2.3: a line starting with WSP continues the field.
        let mut end = first_end;
        while end < msg.len() && msg.get(end).copied().is_some_and(is_wsp) {
            end = line_end(msg, end);
        }
        // The value stops before the line ending that ends the field.
        let mut value_end = end;
        if value_end > start && msg.get(value_end - 1) == Some(&b'\n') {
            value_end -= 1;
            if value_end > start && msg.get(value_end - 1) == Some(&b'\r') {
                value_end -= 1;
            }
        }
        let value_start = (start + colon + 1).min(value_end);
        self.pos = end;
        Some(Field { name, value: msg.get(value_start..value_end).unwrap_or(&[]), start, end })
    }
}

/// The header fields of `msg`, in order, up to the blank line.
pub fn fields(msg: &[u8]) -> Fields<'_> {
    Fields { msg, pos: 0, done: false }
}

/// Offset of the end of the header section: the start of the blank line that separates
/// it from the body, or of the first line that is not a header field, or `msg.len()`.
pub fn header_end(msg: &[u8]) -> usize {
    let mut it = fields(msg);
    while it.next().is_some() {}
    it.position()
}

/// Offset where the body starts: after the blank line (CRLF or LF), or [`header_end`]
/// when there is no blank line.
pub fn body_start(msg: &[u8]) -> usize {
    after_empty_line(msg).unwrap_or_else(|| header_end(msg))
}

/// Offset just after the empty line (CRLF or LF) that ends the header section (RFC 5322
/// 2.1); None when there is no such line.
pub fn after_empty_line(msg: &[u8]) -> Option<usize> {
    let h = header_end(msg);
    let rest = msg.get(h..)?;
    if rest.starts_with(b"\r\n") {
        Some(h + 2)
    } else if rest.starts_with(b"\n") {
        Some(h + 1)
    } else {
        None
    }
}

/// RFC 5322 2.2.3: unfolds a raw value (removes CRLF or LF followed by WSP), trims
/// surrounding white space, and decodes as UTF-8 (invalid sequences become U+FFFD).
pub fn unfold(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw.get(i).copied().unwrap_or(0);
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') && raw.get(i + 2).copied().is_some_and(is_wsp) {
            i += 2;
            continue;
        }
        if b == b'\n' && raw.get(i + 1).copied().is_some_and(is_wsp) {
            i += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(trim_blanks(&out)).into_owned()
}

/// `raw` without the spaces, tabs and line breaks around it (those [`unfold`] trims).
pub fn trim_blanks(raw: &[u8]) -> &[u8] {
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = raw.iter().position(|b| !blank(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    raw.get(start..end).unwrap_or(&[])
}

/// The unfolded value of the first field named `name` (ASCII case-insensitive).
pub fn first_value(msg: &[u8], name: &str) -> Option<String> {
    fields(msg).find(|f| f.name_is(name)).map(|f| f.unfolded_value())
}

/// How many fields are named `name` (e.g. `Received`, for loop detection, RFC 5321 6.3).
pub fn count(msg: &[u8], name: &str) -> usize {
    fields(msg).filter(|f| f.name_is(name)).count()
}

/// A copy of `msg` with `fields` inserted after the trace fields at its top (Received,
/// Return-Path, Authentication-Results: RFC 5321 4.4, RFC 8601 5 keep those first).
pub fn insert_after_trace(fields: &[(&str, &str)], msg: &[u8]) -> Vec<u8> {
    let trace = ["Received", "Return-Path", "Authentication-Results"];
    let at = fields_of_msg_top(msg, &trace);
    let mut out = Vec::with_capacity(msg.len() + 128);
    out.extend_from_slice(msg.get(..at).unwrap_or(&[]));
    for (name, value) in fields {
        write_field(name, value, &mut out);
    }
    out.extend_from_slice(msg.get(at..).unwrap_or(&[]));
    out
}

/// Where the leading run of fields named in `names` ends.
fn fields_of_msg_top(msg: &[u8], names: &[&str]) -> usize {
    let mut end = 0;
    for f in fields(msg) {
        if !names.iter().any(|n| f.name_is(n)) {
            break;
        }
        end = f.range().end;
    }
    end
}

/// The one mailbox of the From field (RFC 5322 3.6.2), lower-cased in its domain: the
/// `addr-spec` inside angle brackets, or the bare `addr-spec`. None when there is no From,
/// several From fields, a From with several mailboxes or a group, or nothing that looks
/// like `local@domain` (SPEC 7.5 needs exactly one address to verify).
pub fn from_address(msg: &[u8]) -> Option<String> {
    let mut froms = fields(msg).filter(|f| f.name_is("From"));
    let value = froms.next()?.unfolded_value();
    if froms.next().is_some() {
        return None;
    }
    let value = strip_comments(&value);
    let spec = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            // A display name may hold a comma only inside quotes; one `<` pair is one mailbox.
            if value.matches('<').count() != 1 {
                return None;
            }
            value[open + 1..close].trim().to_string()
        }
        (None, None) => value.trim().to_string(),
        _ => return None,
    };
    if spec.contains([',', ';', ':', ' ', '<', '>']) {
        return None;
    }
    let (local, domain) = spec.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || !domain.contains('.') && domain != "localhost" {
        return None;
    }
    Some(format!("{local}@{}", domain.to_lowercase()))
}

/// Removes RFC 5322 comments (parenthesised, nestable) outside quoted strings.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A copy of `msg` without the header fields for which `remove` returns true. The body
/// and every other byte are copied unchanged.
pub fn remove_fields(msg: &[u8], mut remove: impl FnMut(&Field<'_>) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let mut it = fields(msg);
    for f in it.by_ref() {
        if !remove(&f) {
            out.extend_from_slice(msg.get(f.range()).unwrap_or(&[]));
        }
    }
    out.extend_from_slice(msg.get(it.position()..).unwrap_or(&[]));
    out
}

/// The authserv-id of an `Authentication-Results` value (RFC 8601 2.2): the first
/// token or quoted-string, after any CFWS (comments and folding white space).
pub fn authserv_id(value: &[u8]) -> Option<String> {
    let mut i = skip_cfws(value, 0);
    let first = value.get(i).copied()?;
    let mut id = Vec::new();
    if first == b'"' {
        // RFC 2045 value = token / quoted-string (RFC 5322 3.2.4).
        i += 1;
        loop {
            match value.get(i).copied()? {
                b'"' => break,
                b'\\' => {
                    id.push(value.get(i + 1).copied()?);
                    i += 2;
                }
                b'\r' | b'\n' => i += 1,
                b => {
                    id.push(b);
                    i += 1;
                }
            }
        }
    } else {
        while let Some(b) = value.get(i).copied() {
            if is_wsp(b) || matches!(b, b'\r' | b'\n' | b';' | b'(' | b'"') {
                break;
            }
            id.push(b);
            i += 1;
        }
    }
    if id.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&id).into_owned())
}

/// Skips white space, line breaks and (nested) comments (RFC 5322 3.2.2 CFWS).
fn skip_cfws(s: &[u8], mut i: usize) -> usize {
    loop {
        match s.get(i).copied() {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                while let Some(b) = s.get(i).copied() {
                    match b {
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'\\' => i += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => return i.min(s.len()),
        }
    }
}

/// RFC 8601 5: removes every `Authentication-Results` field whose authserv-id is ours
/// (ASCII case-insensitive), so that outside parties cannot forge our verdicts.
/// Fields of other authserv-ids are kept.
pub fn remove_authentication_results_for(msg: &[u8], authserv: &str) -> Vec<u8> {
    remove_fields(msg, |f| {
        f.name_is("Authentication-Results")
            && authserv_id(f.raw_value()).is_some_and(|id| id.eq_ignore_ascii_case(authserv))
    })
}

/// RFC 5322 2.1.1: lines SHOULD be no more than 78 characters, excluding CRLF.
const FOLD_AT: usize = 78;

/// Writes one field `Name: value` CRLF, folded at white space so that lines stay within
/// 78 octets where the value allows (RFC 5322 2.2.3). CR, LF and other control characters
/// in the value become spaces (no header injection); characters not allowed in a field
/// name are dropped from it.
pub fn write_field(name: &str, value: &str, out: &mut Vec<u8>) {
    let name: String = name.chars().filter(|&c| c.is_ascii() && is_ftext(c as u8)).collect();
    let value: String = value.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if value.is_empty() {
        out.extend_from_slice(b"\r\n");
        return;
    }
    let bytes = value.as_bytes();
    // Fold points: a WSP immediately followed by a non-WSP, so that every continuation
    // line starts with WSP and holds more than white space.
    let mut segments = Vec::new();
    let mut seg_start = 0;
    for i in 1..bytes.len() {
        let here = bytes.get(i).copied().is_some_and(is_wsp);
        let next_non_wsp = bytes.get(i + 1).copied().is_some_and(|b| !is_wsp(b));
        if here && next_non_wsp {
            segments.push(bytes.get(seg_start..i).unwrap_or(&[]));
            seg_start = i;
        }
    }
    segments.push(bytes.get(seg_start..).unwrap_or(&[]));
    out.push(b' ');
    let mut line_len = name.len() + 2;
    for (k, seg) in segments.iter().enumerate() {
        if k > 0 && line_len + seg.len() > FOLD_AT {
            out.extend_from_slice(b"\r\n");
            line_len = 0;
        }
        out.extend_from_slice(seg);
        line_len += seg.len();
    }
    out.extend_from_slice(b"\r\n");
}

/// A copy of `msg` with `fields` (name, value) added in front, in the given order, each
/// folded by [`write_field`].
///
/// If `msg` has no header section and does not start with the blank line (its first line
/// is not a header field), a blank line is put between the new fields and it, so that it
/// stays body (RFC 5322 3.5) and cannot be read as a continuation of the last new field.
pub fn prepend(fields: &[(&str, &str)], msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + fields.len() * 80 + 2);
    for (name, value) in fields {
        write_field(name, value, &mut out);
    }
    let headerless = !msg.is_empty() && header_end(msg) == 0;
    if !fields.is_empty() && headerless && !msg.starts_with(b"\r\n") && !msg.starts_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(msg);
    out
}

/// Decodes RFC 2047 encoded-words (`=?charset?B|Q?text?=`) for display.
///
/// Supports UTF-8, US-ASCII, ISO-8859-1, ISO-8859-15 and Windows-1252 (RFC 2231 language
/// suffixes are ignored). Encoded-words in an unknown charset or malformed ones are left as
/// written. White space between adjacent encoded-words is dropped (RFC 2047 6.2), and
/// adjacent words of the same charset are joined before decoding so that characters split
/// across words survive. Encoded-words are also recognised inside words (lenient, as most
/// mail readers are). Control characters in the result become spaces, so the output is
/// safe to print on a terminal.
pub fn decode_encoded_words(s: &str) -> String {
    enum Piece<'a> {
        Plain(&'a str),
        Encoded { charset: Charset, bytes: Vec<u8> },
    }
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut plain_start = 0;
    while let Some(off) = s.get(pos..).and_then(|r| r.find("=?")) {
        let j = pos + off;
        match parse_encoded_word(s.get(j..).unwrap_or("")) {
            Some((charset, bytes, len)) => {
                if plain_start < j {
                    pieces.push(Piece::Plain(s.get(plain_start..j).unwrap_or("")));
                }
                pieces.push(Piece::Encoded { charset, bytes });
                pos = j + len;
                plain_start = pos;
            }
            None => pos = j + 2,
        }
    }
    if plain_start < s.len() {
        pieces.push(Piece::Plain(s.get(plain_start..).unwrap_or("")));
    }

    let mut out = String::with_capacity(s.len());
    let mut pending: Option<(Charset, Vec<u8>)> = None;
    for (k, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Plain(text) => {
                let between_words = text.chars().all(char::is_whitespace)
                    && matches!(k.checked_sub(1).and_then(|p| pieces.get(p)), Some(Piece::Encoded { .. }))
                    && matches!(pieces.get(k + 1), Some(Piece::Encoded { .. }));
                if between_words {
                    // RFC 2047 6.2: ignored between adjacent encoded-words.
                    continue;
                }
                if let Some((cs, bytes)) = pending.take() {
                    out.push_str(&cs.decode(&bytes));
                }
                out.push_str(text);
            }
            Piece::Encoded { charset, bytes } => match pending.as_mut() {
                Some((cs, buf)) if cs == charset => buf.extend_from_slice(bytes),
                _ => {
                    if let Some((cs, buf)) = pending.take() {
                        out.push_str(&cs.decode(&buf));
                    }
                    pending = Some((*charset, bytes.clone()));
                }
            },
        }
    }
    if let Some((cs, bytes)) = pending.take() {
        out.push_str(&cs.decode(&bytes));
    }
    out.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Ascii,
    Latin1,
    Latin9,
    Windows1252,
}

impl Charset {
    fn from_name(name: &str) -> Option<Charset> {
        // RFC 2231 5: charset "*" language.
        let name = name.split('*').next().unwrap_or("").to_ascii_lowercase();
        Some(match name.as_str() {
            "utf-8" | "utf8" => Charset::Utf8,
            "us-ascii" | "ascii" => Charset::Ascii,
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" => Charset::Latin1,
            "iso-8859-15" | "iso8859-15" | "iso_8859-15" | "latin9" | "latin-9" => Charset::Latin9,
            "windows-1252" | "cp1252" | "x-cp1252" => Charset::Windows1252,
            _ => return None,
        })
    }

    fn decode(self, bytes: &[u8]) -> String {
        match self {
            Charset::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Charset::Ascii => bytes.iter().map(|&b| if b.is_ascii() { b as char } else { '\u{FFFD}' }).collect(),
            Charset::Latin1 => bytes.iter().map(|&b| b as char).collect(),
            Charset::Latin9 => bytes.iter().map(|&b| latin9_char(b)).collect(),
            Charset::Windows1252 => bytes.iter().map(|&b| cp1252_char(b)).collect(),
        }
    }
}

/// ISO-8859-15: Latin-1 with eight code points replaced.
fn latin9_char(b: u8) -> char {
    match b {
        0xA4 => '€',
        0xA6 => 'Š',
        0xA8 => 'š',
        0xB4 => 'Ž',
        0xB8 => 'ž',
        0xBC => 'Œ',
        0xBD => 'œ',
        0xBE => 'Ÿ',
        _ => b as char,
    }
}

/// Windows-1252: Latin-1 with 0x80-0x9F mapped to printable characters.
fn cp1252_char(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{FFFD}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{FFFD}', 'Ž', '\u{FFFD}',
        '\u{FFFD}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{FFFD}', 'ž', 'Ÿ',
    ];
    if (0x80..0xA0).contains(&b) {
        HIGH.get(usize::from(b - 0x80)).copied().unwrap_or('\u{FFFD}')
    } else {
        b as char
    }
}

/// RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=".
/// Returns the charset, the decoded bytes and the length of the word in `s`.
fn parse_encoded_word(s: &str) -> Option<(Charset, Vec<u8>, usize)> {
    let rest = s.strip_prefix("=?")?;
    let q1 = rest.find('?')?;
    let charset_name = rest.get(..q1)?;
    if charset_name.is_empty() || charset_name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let after = rest.get(q1 + 1..)?;
    let mut chars = after.chars();
    let encoding = chars.next()?.to_ascii_uppercase();
    if chars.next()? != '?' {
        return None;
    }
    let text_and_rest = after.get(2..)?;
    // encoded-text contains no "?" and no white space (RFC 2047 2, 5).
    let q2 = text_and_rest.find('?')?;
    let text = text_and_rest.get(..q2)?;
    if text_and_rest.get(q2 + 1..q2 + 2) != Some("=") || text.chars().any(char::is_whitespace) {
        return None;
    }
    let charset = Charset::from_name(charset_name)?;
    let bytes = match encoding {
        'B' => base64_decode(text)?,
        'Q' => q_decode(text),
        _ => return None,
    };
    let len = 2 + q1 + 1 + 2 + q2 + 2;
    Some((charset, bytes, len))
}

/// RFC 2047 4.2: "_" is space, "=XX" a hex octet; a stray "=" is kept.
fn q_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i).copied().unwrap_or(0) {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = match b.get(i + 1..i + 3) {
                    Some(&[h, l]) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
                    _ => None,
                };
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'=');
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 2047 4.1 (RFC 4648 4): lenient about padding, strict about the alphabet.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a by b;\r\n\tSun, 22 Nov 2026 09:50:58 +0000\r\n\
Subject: Hello\r\n  world\r\n\
From: Alice <alice@example.com>\r\n\
received: from c by d; Mon, 23 Nov 2026 00:00:00 +0000\r\n\
\r\n\
Body: not a header\r\n";

    #[test]
    fn the_empty_line_ends_the_header_section_with_either_line_ending() {
        assert_eq!(after_empty_line(b"A: 1\r\nB: 2\r\n\r\nbody"), Some(14));
        assert_eq!(after_empty_line(b"A: 1\n\nbody"), Some(6));
        // None without one (the body then starts where the fields end).
        assert_eq!(after_empty_line(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(after_empty_line(b"A: 1\r\nnot a field\r\n\r\n"), None);
        assert_eq!(body_start(b"A: 1\r\nnot a field\r\n"), 6);
        assert_eq!(body_start(b"A: 1\r\n\r\nbody"), 8);
    }

    #[test]
    fn iterates_fields_with_ranges() {
        let f: Vec<_> = fields(MSG).collect();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].name(), "Received");
        assert_eq!(f[0].raw_value(), b" from a by b;\r\n\tSun, 22 Nov 2026 09:50:58 +0000");
        assert_eq!(f[0].range(), 0..58);
        assert_eq!(&MSG[f[1].range()], b"Subject: Hello\r\n  world\r\n");
        assert_eq!(f[1].unfolded_value(), "Hello  world");
        assert_eq!(f[2].name(), "From");
        assert!(f[3].name_is("RECEIVED"));
        // Fields tile the header section exactly.
        assert_eq!(f[0].range().start, 0);
        for w in f.windows(2) {
            assert_eq!(w[0].range().end, w[1].range().start);
        }
        assert_eq!(f[3].range().end, header_end(MSG));
        assert_eq!(&MSG[header_end(MSG)..], b"\r\nBody: not a header\r\n");
        assert_eq!(&MSG[body_start(MSG)..], b"Body: not a header\r\n");
    }

    #[test]
    fn values_and_counts() {
        assert_eq!(first_value(MSG, "subject").as_deref(), Some("Hello  world"));
        assert_eq!(first_value(MSG, "FROM").as_deref(), Some("Alice <alice@example.com>"));
        assert_eq!(first_value(MSG, "Received").as_deref(), Some("from a by b;\tSun, 22 Nov 2026 09:50:58 +0000"));
        assert_eq!(first_value(MSG, "Body"), None);
        assert_eq!(count(MSG, "Received"), 2);
        assert_eq!(count(MSG, "X-Nothing"), 0);
    }

    #[test]
    fn lf_only_and_no_body() {
        let m = b"Subject: a\n b\nTo: x@y\n";
        assert_eq!(first_value(m, "Subject").as_deref(), Some("a b"));
        assert_eq!(first_value(m, "To").as_deref(), Some("x@y"));
        assert_eq!(header_end(m), m.len());
        assert_eq!(body_start(m), m.len());
        let m = b"Subject: a\n\nbody\n";
        assert_eq!(&m[body_start(m)..], b"body\n");
        // No final line ending at all.
        let m = b"Subject: a";
        assert_eq!(first_value(m, "Subject").as_deref(), Some("a"));
        assert_eq!(header_end(m), m.len());
        let f: Vec<_> = fields(m).collect();
        assert_eq!(f[0].raw_value(), b" a");
        // Empty value.
        let m = b"X-Empty:\r\nY: 1\r\n";
        assert_eq!(first_value(m, "X-Empty").as_deref(), Some(""));
        assert_eq!(first_value(m, "Y").as_deref(), Some("1"));
    }

    #[test]
    fn header_ends_at_garbage() {
        let m = b"Subject: a\r\nthis is not a header\r\nTo: b\r\n";
        assert_eq!(count(m, "To"), 0);
        assert_eq!(header_end(m), 12);
        assert_eq!(body_start(m), 12);
        // A leading continuation line means there is no header.
        assert_eq!(header_end(b" folded: x\r\n"), 0);
        assert_eq!(header_end(b""), 0);
        assert_eq!(header_end(b"\r\nbody"), 0);
        assert_eq!(body_start(b"\r\nbody"), 2);
        assert_eq!(header_end(b": no name\r\n"), 0);
        assert_eq!(header_end(b"Bad\x01Name: x\r\n"), 0);
        assert_eq!(header_end(b"Na\xC3\xA9me: x\r\n"), 0);
        // Obsolete WSP before the colon (RFC 5322 4.5.8).
        assert_eq!(first_value(b"Subject  : hi\r\n", "Subject").as_deref(), Some("hi"));
        // 8-bit values are fine.
        assert_eq!(first_value(b"Subject: caf\xC3\xA9 \xFF\r\n", "subject").as_deref(), Some("café \u{FFFD}"));
    }

    #[test]
    fn whitespace_only_continuation_and_truncation() {
        let m = b"A: 1\r\n \r\nB: 2\r\n";
        let f: Vec<_> = fields(m).collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].unfolded_value(), "1");
        let m = b"A: 1\r";
        assert_eq!(first_value(m, "A").as_deref(), Some("1"));
        let m = b"A: 1\r\n\t";
        assert_eq!(first_value(m, "A").as_deref(), Some("1"));
        assert_eq!(header_end(m), m.len());
    }

    #[test]
    fn remove_fields_keeps_everything_else() {
        let out = remove_fields(MSG, |f| f.name_is("received"));
        assert_eq!(out, b"Subject: Hello\r\n  world\r\nFrom: Alice <alice@example.com>\r\n\r\nBody: not a header\r\n");
        assert_eq!(remove_fields(MSG, |_| false), MSG);
        assert_eq!(remove_fields(b"garbage", |_| true), b"garbage");
        assert_eq!(remove_fields(b"A: b", |_| true), b"");
    }

    #[test]
    fn authserv_id_parsing() {
        // RFC 8601 appendix B examples.
        assert_eq!(authserv_id(b" example.com; none").as_deref(), Some("example.com"));
        assert_eq!(authserv_id(b" example.com 1; none").as_deref(), Some("example.com"));
        assert_eq!(
            authserv_id(b" example.com;\r\n          spf=pass smtp.mailfrom=example.net").as_deref(),
            Some("example.com")
        );
        assert_eq!(authserv_id(b" (a comment (nested)) mx.example.org (another);").as_deref(), Some("mx.example.org"));
        assert_eq!(authserv_id(b"mx.example.org(c); x").as_deref(), Some("mx.example.org"));
        assert_eq!(authserv_id(b" \"mx.example.org\"; x").as_deref(), Some("mx.example.org"));
        assert_eq!(authserv_id(b" \"mx.ex\\ample.org\"; x").as_deref(), Some("mx.example.org"));
        assert_eq!(authserv_id(b"\r\n\tmx.example.org; x").as_deref(), Some("mx.example.org"));
        assert_eq!(authserv_id(b" ; x"), None);
        assert_eq!(authserv_id(b""), None);
        assert_eq!(authserv_id(b" (unterminated comment mx.example.org;"), None);
        assert_eq!(authserv_id(b" \"unterminated"), None);
        assert_eq!(authserv_id(b" (\\) still comment) id;").as_deref(), Some("id"));
    }

    #[test]
    fn removes_only_our_authentication_results() {
        let m = b"Authentication-Results: mx.example.org; auth=pass smtp.auth=evil\r\n\
Authentication-Results: other.example; spf=pass\r\n\
authentication-results : (forged) MX.Example.ORG;\r\n dkim=pass\r\n\
Authentication-Results: \"mx.example.org\" 1; none\r\n\
Authentication-Results: mx.example.org.evil; none\r\n\
Subject: hi\r\n\
\r\n\
Authentication-Results: mx.example.org; in the body\r\n";
        let out = remove_authentication_results_for(m, "mx.example.org");
        assert_eq!(
            out,
            b"Authentication-Results: other.example; spf=pass\r\n\
Authentication-Results: mx.example.org.evil; none\r\n\
Subject: hi\r\n\
\r\n\
Authentication-Results: mx.example.org; in the body\r\n"
                .to_vec()
        );
    }

    #[test]
    fn prepend_and_fold() {
        let out = prepend(&[("X-A", "1"), ("X-Empty", "")], b"Subject: s\r\n\r\nbody");
        assert_eq!(out, b"X-A: 1\r\nX-Empty:\r\nSubject: s\r\n\r\nbody");

        let long = "from mail.example.org (mail.example.org [192.0.2.1]) by mx.example.com (vouchmail) with ESMTPS id 0123456789abcdef for <user@example.com>; Sun, 22 Nov 2026 09:50:58 +0000";
        let out = prepend(&[("Received", long)], b"");
        let text = String::from_utf8(out.clone()).unwrap();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 78, "{line:?}");
        }
        assert!(text.lines().count() > 2);
        // Continuation lines start with white space followed by text.
        for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            assert!(line.starts_with(' '));
            assert!(!line.trim().is_empty());
        }
        // Unfolding gives the value back.
        assert_eq!(first_value(&out, "Received").as_deref(), Some(long));
        assert_eq!(count(&out, "Received"), 1);

        // A word longer than a line is left whole.
        let word = "x".repeat(120);
        let out = prepend(&[("X-Long", &format!("a {word} b"))], b"");
        assert_eq!(out, format!("X-Long: a\r\n {word}\r\n b\r\n").into_bytes());

        // Runs of white space survive unfolding.
        let v = format!("{}   {}", "a".repeat(70), "b".repeat(10));
        let out = prepend(&[("X", &v)], b"");
        assert_eq!(first_value(&out, "X"), Some(v));
    }

    #[test]
    fn prepend_to_headerless_message() {
        assert_eq!(prepend(&[("A", "1")], b"hello\r\n"), b"A: 1\r\n\r\nhello\r\n");
        assert_eq!(prepend(&[("A", "1")], b" indented\r\n"), b"A: 1\r\n\r\n indented\r\n");
        assert_eq!(prepend(&[("A", "1")], b"\r\nbody"), b"A: 1\r\n\r\nbody");
        assert_eq!(prepend(&[("A", "1")], b""), b"A: 1\r\n");
        assert_eq!(prepend(&[], b"hello"), b"hello");
        let out = prepend(&[("A", "1")], b" indented\r\n");
        assert_eq!(first_value(&out, "A").as_deref(), Some("1"));
    }

    #[test]
    fn prepend_prevents_injection() {
        let out = prepend(&[("X-Helo", "evil\r\nBcc: victim@example.com"), ("Bad Name:", "v")], b"");
        assert_eq!(count(&out, "Bcc"), 0);
        assert_eq!(count(&out, "X-Helo"), 1);
        assert_eq!(first_value(&out, "BadName").as_deref(), Some("v"));
        assert_eq!(header_end(&out), out.len());
    }

    #[test]
    fn rfc2047_examples() {
        // RFC 2047 8.
        assert_eq!(
            decode_encoded_words("=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>"),
            "Keith Moore <moore@cs.utk.edu>"
        );
        assert_eq!(
            decode_encoded_words("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>"),
            "Keld Jørn Simonsen <keld@dkuug.dk>"
        );
        assert_eq!(
            decode_encoded_words("=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>"),
            "André Pirard <PIRARD@vm1.ulg.ac.be>"
        );
        assert_eq!(
            decode_encoded_words(
                "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
            ),
            // ISO-8859-2 is unknown here: left as written.
            "If you can read this yo =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
        );
        // RFC 2047 8, the white-space table.
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?=)"), "(a)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?= b)"), "(a b)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)"), "(ab)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)"), "(ab)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)"), "(ab)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a_b?=)"), "(a b)");
        assert_eq!(decode_encoded_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)"), "(a =?ISO-8859-2?Q?_b?=)");
    }

    #[test]
    fn utf8_and_others() {
        assert_eq!(decode_encoded_words("=?UTF-8?B?w6l0w6k=?="), "été");
        assert_eq!(decode_encoded_words("=?utf-8?b?w6l0w6k?="), "été");
        assert_eq!(decode_encoded_words("=?utf-8?q?=C3=A9t=C3=A9?="), "été");
        assert_eq!(decode_encoded_words("=?UTF-8*fr?Q?=C3=A9?="), "é");
        // A character split across two words.
        assert_eq!(decode_encoded_words("=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?="), "é");
        assert_eq!(decode_encoded_words("=?windows-1252?Q?=80_=93x=94?="), "€ “x”");
        assert_eq!(decode_encoded_words("=?iso-8859-15?Q?=A4?="), "€");
        assert_eq!(decode_encoded_words("=?us-ascii?Q?=FF?="), "\u{FFFD}");
        assert_eq!(decode_encoded_words("Re: =?UTF-8?Q?caf=C3=A9?= au lait"), "Re: café au lait");
        // Lenient: glued to text.
        assert_eq!(decode_encoded_words("x=?UTF-8?Q?y?=z"), "xyz");
        // Plain text between words of different charsets is kept.
        assert_eq!(decode_encoded_words("=?UTF-8?Q?a?= - =?ISO-8859-1?Q?b?="), "a - b");
    }

    #[test]
    fn malformed_encoded_words_are_left_alone() {
        for s in [
            "=?",
            "=?=",
            "=??Q?a?=",
            "=?UTF-8?",
            "=?UTF-8?Q",
            "=?UTF-8?Q?",
            "=?UTF-8?Q?abc",
            "=?UTF-8?Q?abc?",
            "=?UTF-8?X?abc?=",
            "=?UTF-8?QQ?abc?=",
            "=?UTF-8?B?a*b?=",
            "=?UTF-8?Q?a b?=",
            "=?unknown?Q?abc?=",
            "plain text",
            "",
        ] {
            assert_eq!(decode_encoded_words(s), s, "{s:?}");
        }
        // Stray "=" in Q text is kept.
        assert_eq!(decode_encoded_words("=?UTF-8?Q?a=zb=?="), "a=zb=");
        // Empty encoded text.
        assert_eq!(decode_encoded_words("=?UTF-8?Q??="), "");
        // The second word starts after a failed first one.
        assert_eq!(decode_encoded_words("=?x =?UTF-8?Q?ok?="), "=?x ok");
        // Non-ASCII around does not break slicing.
        assert_eq!(decode_encoded_words("é=?é?Q?é?=é"), "é=?é?Q?é?=é");
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(decode_encoded_words("=?UTF-8?Q?a=1B[31mb?="), "a [31mb");
        assert_eq!(decode_encoded_words("=?UTF-8?Q?a=0D=0Ab?="), "a  b");
        assert_eq!(decode_encoded_words("a\tb"), "a b");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 12345;
        let alphabet = b"\r\n :;()\"\\=?_Aa\xC3\xA9\xFF\t";
        for _ in 0..3000 {
            let mut msg = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 50) as usize;
            let mut s = seed;
            for _ in 0..len {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                msg.push(alphabet[(s % alphabet.len() as u64) as usize]);
            }
            let he = header_end(&msg);
            assert!(he <= msg.len());
            assert!(body_start(&msg) <= msg.len());
            let kept = remove_fields(&msg, |_| false);
            assert_eq!(kept, msg);
            let _ = remove_authentication_results_for(&msg, "a");
            let _ = count(&msg, "a");
            let _ = first_value(&msg, "A");
            for f in fields(&msg) {
                let _ = authserv_id(f.raw_value());
                let _ = f.unfolded_value();
            }
            let text = String::from_utf8_lossy(&msg);
            let _ = decode_encoded_words(&text);
            let out = prepend(&[(text.as_ref(), text.as_ref())], &msg);
            assert!(out.ends_with(&msg));
        }
    }

    #[test]
    fn from_address_takes_the_one_mailbox() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"From: Glen <glen@Galkam.TEST>\r\n\r\nx", Some("glen@galkam.test")),
            (b"From: glen@galkam.test (Glen)\r\n\r\n", Some("glen@galkam.test")),
            (b"From: \"Smith, Glen\" <glen@galkam.test>\r\n\r\n", Some("glen@galkam.test")),
            (b"From: a@x.test, b@x.test\r\n\r\n", None),
            (b"From: <a@x.test>\r\nFrom: <b@x.test>\r\n\r\n", None),
            (b"From: undisclosed:;\r\n\r\n", None),
            (b"From: nobody\r\n\r\n", None),
            (b"Subject: no from\r\n\r\n", None),
            (b"From: <postmaster@localhost>\r\n\r\n", Some("postmaster@localhost")),
        ];
        for (msg, want) in cases {
            assert_eq!(from_address(msg).as_deref(), *want, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn fields_go_after_the_trace_block() {
        let msg = b"Authentication-Results: mx; none\r\nReceived: from a\r\n by b\r\nFrom: <x@y.test>\r\n\r\nbody\r\n";
        let out = insert_after_trace(&[("X-Auth-Key", "k")], msg);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Authentication-Results: mx; none\r\nReceived: from a\r\n by b\r\nX-Auth-Key: k\r\nFrom: <x@y.test>\r\n\r\nbody\r\n"
        );
        assert!(insert_after_trace(&[("X-A", "1")], b"From: a\r\n\r\n").starts_with(b"X-A: 1\r\nFrom"));
    }
}
