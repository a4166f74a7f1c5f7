//! The values IMAP commands and responses carry (RFC 9051 4 and 9, RFC 3501 9 for
//! IMAP4rev1 clients): tags, sequence sets, flags, mailbox names, dates, search keys,
//! fetch attributes, store actions and status items.

use std::fmt;

use crate::time::{civil_to_unix_seconds, unix_seconds_to_civil};

const MONTH_NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 9051 9 `ATOM-CHAR`: any CHAR except atom-specials (`(`, `)`, `{`, SP, CTL, `%`,
/// `*`, `"`, `\`, `]`).
pub fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// RFC 9051 9 `ASTRING-CHAR`: an atom char or `]`.
pub fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// RFC 9051 9 `tag`: 1*<any ASTRING-CHAR except "+">. Chosen by the client, echoed in the
/// tagged response that completes its command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// A tag, if `text` is a valid one.
    pub fn new(text: &str) -> Option<Tag> {
        Tag::from_bytes(text.as_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Tag> {
        if bytes.is_empty() || !bytes.iter().all(|&b| is_astring_char(b) && b != b'+') {
            return None;
        }
        // Only ASCII passed the check above.
        std::str::from_utf8(bytes).ok().map(|s| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 9051 9 `seq-number`: a message sequence number or UID, or `*`, the largest one in
/// use (RFC 9051 6.4.8: for an empty mailbox `*` still names "the largest", which is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeqNumber {
    Value(u32),
    Largest,
}

impl SeqNumber {
    /// The number, `*` standing for `largest`.
    pub fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNumber::Value(n) => n,
            SeqNumber::Largest => largest,
        }
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqNumber::Value(n) => write!(f, "{n}"),
            SeqNumber::Largest => f.write_str("*"),
        }
    }
}

/// RFC 9051 9 `seq-range`: both ends included, in either order (`4:2` is `2:4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    pub first: SeqNumber,
    pub last: SeqNumber,
}

impl SeqRange {
    pub fn single(n: SeqNumber) -> SeqRange {
        SeqRange { first: n, last: n }
    }

    /// The range as `low..=high` given the largest number in use.
    pub fn bounds(&self, largest: u32) -> (u32, u32) {
        let a = self.first.resolve(largest);
        let b = self.last.resolve(largest);
        (a.min(b), a.max(b))
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// RFC 9051 9 `sequence-set`: message sequence numbers, or UIDs in the UID commands and
/// the UID search key; `$` is the result saved by `SEARCH RETURN (SAVE)` (RFC 5182 2.1,
/// part of RFC 9051 6.4.4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SequenceSet {
    Ranges(Vec<SeqRange>),
    Saved,
}

impl SequenceSet {
    /// Whether `n` is in the set, given the largest number in use (for `*`). The saved
    /// result is the driver's to resolve: it contains nothing here.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        match self {
            SequenceSet::Ranges(ranges) => ranges.iter().any(|r| {
                let (low, high) = r.bounds(largest);
                (low..=high).contains(&n)
            }),
            SequenceSet::Saved => false,
        }
    }

    /// The set as sorted, merged `low..=high` ranges, given the largest number in use.
    /// RFC 9051 6.4.8 lets `*` in a UID range name the largest UID even when it is below the
    /// other end, so `5:*` with largest 3 is `3:5`; the driver intersects with what exists.
    pub fn to_bounds(&self, largest: u32) -> Vec<(u32, u32)> {
        let SequenceSet::Ranges(ranges) = self else { return Vec::new() };
        let mut bounds: Vec<(u32, u32)> = ranges.iter().map(|r| r.bounds(largest)).collect();
        bounds.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(bounds.len());
        for (low, high) in bounds {
            match merged.last_mut() {
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        merged
    }

    /// The compact set of sorted numbers (`1:3,7`), for COPYUID, MODIFIED and ESEARCH ALL.
    pub fn from_numbers(numbers: &[u32]) -> SequenceSet {
        let mut sorted = numbers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<SeqRange> = Vec::new();
        let mut iter = sorted.into_iter();
        let Some(first) = iter.next() else { return SequenceSet::Ranges(ranges) };
        let (mut low, mut high) = (first, first);
        for n in iter {
            if n == high + 1 {
                high = n;
            } else {
                ranges.push(SeqRange { first: SeqNumber::Value(low), last: SeqNumber::Value(high) });
                low = n;
                high = n;
            }
        }
        ranges.push(SeqRange { first: SeqNumber::Value(low), last: SeqNumber::Value(high) });
        SequenceSet::Ranges(ranges)
    }
}

impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceSet::Saved => f.write_str("$"),
            SequenceSet::Ranges(ranges) => {
                for (i, range) in ranges.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{range}")?;
                }
                Ok(())
            }
        }
    }
}

/// A message flag (RFC 9051 2.3.2). Keywords keep the client's spelling; they compare
/// case-insensitively, which [`Flag::same_as`] does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    /// RFC 3501 2.3.2: shown to IMAP4rev1 clients only; never stored by a client.
    Recent,
    /// RFC 9051 9 `flag-keyword`: an atom without a backslash (`$Forwarded`, `$Junk`).
    Keyword(String),
    /// RFC 9051 9 `flag-extension`: `\` atom, for flags of future extensions; the name
    /// is kept without its backslash.
    Extension(String),
}

impl Flag {
    /// Reads a flag as written on the wire (`\Seen`, `$Junk`).
    pub fn parse(text: &str) -> Option<Flag> {
        let (system, name) = match text.strip_prefix('\\') {
            Some(name) => (true, name),
            None => (false, text),
        };
        if name.is_empty() || !name.bytes().all(is_atom_char) {
            return None;
        }
        if !system {
            return Some(Flag::Keyword(name.to_owned()));
        }
        let flag = match name.to_ascii_lowercase().as_str() {
            "seen" => Flag::Seen,
            "answered" => Flag::Answered,
            "flagged" => Flag::Flagged,
            "deleted" => Flag::Deleted,
            "draft" => Flag::Draft,
            "recent" => Flag::Recent,
            _ => Flag::Extension(name.to_owned()),
        };
        Some(flag)
    }

    /// Case-insensitive equality (RFC 9051 2.3.2: flags are case-insensitive).
    pub fn same_as(&self, other: &Flag) -> bool {
        match (self, other) {
            (Flag::Keyword(a), Flag::Keyword(b)) | (Flag::Extension(a), Flag::Extension(b)) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => self == other,
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Seen => f.write_str("\\Seen"),
            Flag::Answered => f.write_str("\\Answered"),
            Flag::Flagged => f.write_str("\\Flagged"),
            Flag::Deleted => f.write_str("\\Deleted"),
            Flag::Draft => f.write_str("\\Draft"),
            Flag::Recent => f.write_str("\\Recent"),
            Flag::Keyword(k) => f.write_str(k),
            Flag::Extension(e) => write!(f, "\\{e}"),
        }
    }
}

/// How mailbox names travel on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameEncoding {
    /// IMAP4rev1 (RFC 3501 5.1.3): modified UTF-7; raw UTF-8 from the client is accepted
    /// too, as most servers do.
    #[default]
    ModifiedUtf7,
    /// IMAP4rev2 (RFC 9051 5.1) or UTF8=ACCEPT (RFC 6855 3) enabled: UTF-8, `&` is itself.
    Utf8,
}

/// A mailbox name as the client meant it, in UTF-8, with the hierarchy delimiter of the
/// server (`/` in vouchmail) left in. `INBOX` in any case is `INBOX` (RFC 9051 5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailboxName(String);

impl MailboxName {
    pub fn new(name: impl Into<String>) -> MailboxName {
        let name = name.into();
        if name.eq_ignore_ascii_case("INBOX") {
            MailboxName("INBOX".to_owned())
        } else {
            MailboxName(name)
        }
    }

    /// Decodes a name as sent on the wire.
    pub fn from_wire(raw: &[u8], encoding: NameEncoding) -> Result<MailboxName, &'static str> {
        let text = std::str::from_utf8(raw).map_err(|_| "Mailbox name is not UTF-8")?;
        let name = match encoding {
            NameEncoding::Utf8 => text.to_owned(),
            NameEncoding::ModifiedUtf7 => decode_modified_utf7(text)?,
        };
        // RFC 9051 5.1: names are Net-Unicode (RFC 5198): no control characters.
        if name.chars().any(char::is_control) {
            return Err("Mailbox name contains control characters");
        }
        Ok(MailboxName::new(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The name as sent to a client using `encoding`.
    pub fn to_wire(&self, encoding: NameEncoding) -> String {
        match encoding {
            NameEncoding::Utf8 => self.0.clone(),
            NameEncoding::ModifiedUtf7 => encode_modified_utf7(&self.0),
        }
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The modified BASE64 of RFC 3501 5.1.3: RFC 2045 base64 with `,` for `/`, no padding.
const MODIFIED_BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// RFC 3501 5.1.3: printable US-ASCII other than `&` stands for itself; `&-` is `&`;
/// anything else is `&`, the modified base64 of its UTF-16BE, `-`.
pub fn encode_modified_utf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let digits = chunk.len() + 1;
            for i in 0..digits {
                out.push(char::from(MODIFIED_BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            out.push(ch);
            if ch == '&' {
                out.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// RFC 3501 5.1.3, the inverse of [`encode_modified_utf7`]. Non-ASCII characters outside
/// `&...-` (raw UTF-8 from a sloppy client) are kept as they are.
pub fn decode_modified_utf7(wire: &str) -> Result<String, &'static str> {
    const BAD: &str = "Invalid modified UTF-7 in mailbox name";
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let dash = after.find('-').ok_or(BAD)?;
        let encoded = &after[..dash];
        rest = &after[dash + 1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut units: Vec<u16> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        for c in encoded.bytes() {
            let value = MODIFIED_BASE64.iter().position(|&d| d == c).ok_or(BAD)? as u32;
            bits = (bits << 6) | value;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        // Leftover bits must be zero padding, and whole UTF-16 units must remain.
        if bits != 0 || nbits >= 6 || bytes.len() & 1 == 1 {
            return Err(BAD);
        }
        for pair in bytes.chunks(2) {
            units.push(u16::from_be_bytes([pair[0], pair[1]]));
        }
        let decoded = String::from_utf16(&units).map_err(|_| BAD)?;
        // RFC 3501 5.1.3: printable US-ASCII must not be encoded.
        if decoded.chars().any(|c| (' '..='~').contains(&c)) {
            return Err(BAD);
        }
        out.push_str(&decoded);
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 9051 9 `date`: a day without time or zone, for the SEARCH date keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// A date, if the day exists in that month.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        let y = i32::from(year);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (day <= days).then_some(Date { year, month, day })
    }

    /// Unix time of 00:00:00 UTC on this day. RFC 9051 6.4.4 compares internal dates and
    /// Date: fields by day "disregarding time and timezone"; the driver picks the zone.
    pub fn unix_start(&self) -> i64 {
        civil_to_unix_seconds(i64::from(self.year), u32::from(self.month), u32::from(self.day), 0, 0, 0)
    }

    pub fn from_unix(secs: i64) -> Date {
        let (year, month, day, ..) = unix_seconds_to_civil(secs);
        Date { year: year.clamp(0, 9999) as u16, month: month as u8, day: day as u8 }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let month = MONTH_NAMES[usize::from(self.month.clamp(1, 12) - 1)];
        write!(f, "{}-{}-{:04}", self.day, month, self.year)
    }
}

/// The month of a `date-month` (RFC 9051 9), case-insensitive.
pub fn month_from_name(name: &[u8]) -> Option<u8> {
    MONTH_NAMES.iter().position(|m| m.as_bytes().eq_ignore_ascii_case(name)).map(|i| i as u8 + 1)
}

/// RFC 9051 9 `date-time`: an internal date, `"17-Jul-1996 02:44:25 -0700"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// Seconds since the Unix epoch.
    pub unix: i64,
    /// The zone the client wrote, in minutes east of UTC.
    pub offset_minutes: i16,
}

impl DateTime {
    pub fn utc(unix: i64) -> DateTime {
        DateTime { unix, offset_minutes: 0 }
    }
}

impl fmt::Display for DateTime {
    /// The quoted `date-time` of INTERNALDATE (RFC 9051 7.5.2), day padded with a space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.unix.saturating_add(i64::from(self.offset_minutes) * 60);
        let (year, month, day, hour, minute, second, _) = unix_seconds_to_civil(local);
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let offset = self.offset_minutes.unsigned_abs();
        write!(
            f,
            "\"{day:2}-{}-{:04} {hour:02}:{minute:02}:{second:02} {sign}{:02}{:02}\"",
            MONTH_NAMES[(month.clamp(1, 12) - 1) as usize],
            year.clamp(0, 9999),
            offset / 60,
            offset % 60
        )
    }
}

/// RFC 9051 6.4.4 search criteria, a tree. Strings are UTF-8 (the only charset besides
/// US-ASCII the parser accepts, RFC 9051 6.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(String),
    Before(Date),
    Body(String),
    Cc(String),
    Deleted,
    Draft,
    Flagged,
    From(String),
    /// `HEADER field-name string`; an empty string matches every message with the field.
    Header(String, String),
    Keyword(String),
    Larger(u64),
    /// RFC 3501 6.4.4, IMAP4rev1 only: `\Recent` and not `\Seen`.
    New,
    Not(Box<SearchKey>),
    /// RFC 3501 6.4.4, IMAP4rev1 only: not `\Recent`.
    Old,
    On(Date),
    Or(Box<SearchKey>, Box<SearchKey>),
    /// RFC 3501 6.4.4, IMAP4rev1 only.
    Recent,
    Seen,
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Since(Date),
    Smaller(u64),
    Subject(String),
    Text(String),
    To(String),
    Uid(SequenceSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    /// Message sequence numbers.
    SequenceSet(SequenceSet),
    /// A parenthesised list, or the top-level list: all must match.
    And(Vec<SearchKey>),
    /// RFC 7162 3.1.5: `MODSEQ ["/flags/\\Seen" priv|shared|all] n`, messages whose
    /// mod-sequence is at least `n`.
    ModSeq {
        entry: Option<(String, EntryType)>,
        modseq: u64,
    },
}

impl SearchKey {
    /// Whether the criteria use MODSEQ, which makes SEARCH responses carry the highest
    /// mod-sequence of the matches (RFC 7162 3.1.5).
    pub fn uses_modseq(&self) -> bool {
        match self {
            SearchKey::ModSeq { .. } => true,
            SearchKey::Not(key) => key.uses_modseq(),
            SearchKey::Or(a, b) => a.uses_modseq() || b.uses_modseq(),
            SearchKey::And(keys) => keys.iter().any(SearchKey::uses_modseq),
            _ => false,
        }
    }

    /// Whether the criteria use `$` (RFC 5182 2.1).
    pub fn uses_saved_result(&self) -> bool {
        match self {
            SearchKey::SequenceSet(SequenceSet::Saved) | SearchKey::Uid(SequenceSet::Saved) => true,
            SearchKey::Not(key) => key.uses_saved_result(),
            SearchKey::Or(a, b) => a.uses_saved_result() || b.uses_saved_result(),
            SearchKey::And(keys) => keys.iter().any(SearchKey::uses_saved_result),
            _ => false,
        }
    }
}

/// RFC 7162 3.1.5 `entry-type-req`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Private,
    Shared,
    All,
}

/// RFC 9051 6.4.4.1 (from RFC 4731 3.1, RFC 5182): what `SEARCH RETURN (...)` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

/// RFC 9051 6.4.5 `section-part` and `section-text`: which part of a message
/// `BODY[...]` names. An empty `part` is the whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part numbers, `1.2.3`.
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    /// `HEADER.FIELDS (name ...)`, names as given.
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    /// The MIME header of a part; only after a part number.
    Mime,
}

impl fmt::Display for Section {
    /// The section as echoed in the FETCH response (RFC 9051 7.5.2), brackets excluded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.part.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{n}")?;
        }
        let Some(text) = &self.text else { return Ok(()) };
        if !self.part.is_empty() {
            f.write_str(".")?;
        }
        let fields = |f: &mut fmt::Formatter<'_>, keyword: &str, names: &[String]| {
            write!(f, "{keyword} (")?;
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                // Field names are atoms (RFC 5322 ftext has no specials that need quoting
                // except those the parser refused), so they are written bare.
                f.write_str(name)?;
            }
            f.write_str(")")
        };
        match text {
            SectionText::Header => f.write_str("HEADER"),
            SectionText::HeaderFields(names) => fields(f, "HEADER.FIELDS", names),
            SectionText::HeaderFieldsNot(names) => fields(f, "HEADER.FIELDS.NOT", names),
            SectionText::Text => f.write_str("TEXT"),
            SectionText::Mime => f.write_str("MIME"),
        }
    }
}

/// RFC 9051 9 `partial`: `<offset.length>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub offset: u64,
    pub length: u64,
}

/// One data item a FETCH asks for (RFC 9051 6.4.5, RFC 3501 6.4.5 for the RFC822 forms,
/// RFC 7162 3.1.4 for MODSEQ). The macros ALL, FAST and FULL are expanded by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttribute {
    Envelope,
    Flags,
    InternalDate,
    /// `RFC822`: the whole message; sets `\Seen` like BODY[].
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    /// Sets `\Seen`.
    Rfc822Text,
    /// `BODY` without a section: BODYSTRUCTURE without extension data.
    Body,
    BodyStructure,
    Uid,
    ModSeq,
    /// `BODY[section]<partial>` or, with `peek`, `BODY.PEEK[...]`, which leaves `\Seen` alone.
    BodySection {
        section: Section,
        partial: Option<Partial>,
        peek: bool,
    },
    /// RFC 9051 6.4.5 `BINARY[part]<partial>` and `BINARY.PEEK`: the part with its
    /// content transfer encoding removed.
    Binary {
        part: Vec<u32>,
        partial: Option<Partial>,
        peek: bool,
    },
    /// `BINARY.SIZE[part]`.
    BinarySize {
        part: Vec<u32>,
    },
}

impl FetchAttribute {
    /// Whether fetching this sets `\Seen` on a read-write mailbox (RFC 9051 6.4.5).
    pub fn sets_seen(&self) -> bool {
        match self {
            FetchAttribute::Rfc822 | FetchAttribute::Rfc822Text => true,
            FetchAttribute::BodySection { peek, .. } | FetchAttribute::Binary { peek, .. } => !peek,
            _ => false,
        }
    }

    /// Whether this is the whole body of the message (`BODY[]`, `RFC822`, `BINARY[]`, with
    /// or without PEEK, no partial): SPEC 9 records a `downloaded` tracking event for it.
    pub fn is_whole_message(&self) -> bool {
        match self {
            FetchAttribute::Rfc822 => true,
            FetchAttribute::BodySection { section, partial: None, .. } => *section == Section::default(),
            FetchAttribute::Binary { part, partial: None, .. } => part.is_empty(),
            _ => false,
        }
    }
}

/// RFC 9051 6.4.6: how STORE changes the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `FLAGS`: replace.
    Replace,
    /// `+FLAGS`.
    Add,
    /// `-FLAGS`.
    Remove,
}

/// RFC 9051 6.4.6 `store-att-flags`, with RFC 7162 3.1.3 UNCHANGEDSINCE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAction {
    pub mode: StoreMode,
    /// `.SILENT`: no untagged FETCH for the new flags (RFC 9051 6.4.6).
    pub silent: bool,
    pub flags: Vec<Flag>,
    /// RFC 7162 3.1.3: only messages whose mod-sequence is at most this.
    pub unchanged_since: Option<u64>,
}

/// RFC 9051 6.3.11 status data items, with RFC 7162 3.1.8 HIGHESTMODSEQ and RFC 3501
/// RECENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusItem {
    Messages,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    Recent,
}

impl StatusItem {
    pub const ALL: [StatusItem; 8] = [
        StatusItem::Messages,
        StatusItem::UidNext,
        StatusItem::UidValidity,
        StatusItem::Unseen,
        StatusItem::Deleted,
        StatusItem::Size,
        StatusItem::HighestModSeq,
        StatusItem::Recent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::Recent => "RECENT",
        }
    }

    pub fn from_name(name: &str) -> Option<StatusItem> {
        StatusItem::ALL.into_iter().find(|i| i.as_str().eq_ignore_ascii_case(name))
    }
}

/// A mailbox attribute of LIST responses (RFC 9051 7.3.1, RFC 6154 2 special uses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MailboxAttribute {
    NonExistent,
    NoInferiors,
    NoSelect,
    HasChildren,
    HasNoChildren,
    Marked,
    Unmarked,
    Subscribed,
    Remote,
    All,
    Archive,
    Drafts,
    Flagged,
    Junk,
    Sent,
    Trash,
    /// Any other `\name`, kept without the backslash.
    Other(String),
}

impl MailboxAttribute {
    /// The special uses (RFC 6154 2), the attributes CREATE ... USE accepts.
    pub const SPECIAL_USES: [MailboxAttribute; 7] = [
        MailboxAttribute::All,
        MailboxAttribute::Archive,
        MailboxAttribute::Drafts,
        MailboxAttribute::Flagged,
        MailboxAttribute::Junk,
        MailboxAttribute::Sent,
        MailboxAttribute::Trash,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            MailboxAttribute::NonExistent => "\\NonExistent",
            MailboxAttribute::NoInferiors => "\\Noinferiors",
            MailboxAttribute::NoSelect => "\\Noselect",
            MailboxAttribute::HasChildren => "\\HasChildren",
            MailboxAttribute::HasNoChildren => "\\HasNoChildren",
            MailboxAttribute::Marked => "\\Marked",
            MailboxAttribute::Unmarked => "\\Unmarked",
            MailboxAttribute::Subscribed => "\\Subscribed",
            MailboxAttribute::Remote => "\\Remote",
            MailboxAttribute::All => "\\All",
            MailboxAttribute::Archive => "\\Archive",
            MailboxAttribute::Drafts => "\\Drafts",
            MailboxAttribute::Flagged => "\\Flagged",
            MailboxAttribute::Junk => "\\Junk",
            MailboxAttribute::Sent => "\\Sent",
            MailboxAttribute::Trash => "\\Trash",
            MailboxAttribute::Other(name) => name,
        }
    }

    /// Reads `\Name`, case-insensitively; `Other` keeps the backslash.
    pub fn parse(text: &str) -> Option<MailboxAttribute> {
        let name = text.strip_prefix('\\')?;
        if name.is_empty() || !name.bytes().all(is_atom_char) {
            return None;
        }
        let known = [
            MailboxAttribute::NonExistent,
            MailboxAttribute::NoInferiors,
            MailboxAttribute::NoSelect,
            MailboxAttribute::HasChildren,
            MailboxAttribute::HasNoChildren,
            MailboxAttribute::Marked,
            MailboxAttribute::Unmarked,
            MailboxAttribute::Subscribed,
            MailboxAttribute::Remote,
        ];
        Some(
            known
                .into_iter()
                .chain(MailboxAttribute::SPECIAL_USES)
                .find(|a| a.as_str().eq_ignore_ascii_case(text))
                .unwrap_or_else(|| MailboxAttribute::Other(text.to_owned())),
        )
    }

    pub fn is_special_use(&self) -> bool {
        MailboxAttribute::SPECIAL_USES.contains(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf7_rfc3501_example() {
        // RFC 3501 5.1.3.
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(encode_modified_utf7(name), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode_modified_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(), name);
        assert_eq!(encode_modified_utf7("A&B"), "A&-B");
        assert_eq!(decode_modified_utf7("A&-B").unwrap(), "A&B");
        assert_eq!(encode_modified_utf7("Entw\u{fc}rfe"), "Entw&APw-rfe");
        let emoji = "\u{1f600} x";
        assert_eq!(decode_modified_utf7(&encode_modified_utf7(emoji)).unwrap(), emoji);
    }

    #[test]
    fn modified_utf7_rejects_malformed() {
        assert!(decode_modified_utf7("&U,BTF").is_err());
        assert!(decode_modified_utf7("&U,BTF2-").is_err());
        assert!(decode_modified_utf7("&AGE-").is_err(), "encoded printable ASCII");
        assert!(decode_modified_utf7("&2D0-").is_err(), "lone surrogate");
        assert!(decode_modified_utf7("&*-").is_err());
    }

    #[test]
    fn mailbox_names() {
        assert!(MailboxName::from_wire(b"inbox", NameEncoding::ModifiedUtf7).unwrap().is_inbox());
        let utf8 = MailboxName::from_wire("A&B-\u{e9}".as_bytes(), NameEncoding::Utf8).unwrap();
        assert_eq!(utf8.as_str(), "A&B-\u{e9}");
        assert_eq!(utf8.to_wire(NameEncoding::ModifiedUtf7), "A&-B-&AOk-");
        assert!(MailboxName::from_wire(b"a\x01", NameEncoding::Utf8).is_err());
    }

    #[test]
    fn sequence_sets() {
        let set = SequenceSet::Ranges(vec![
            SeqRange { first: SeqNumber::Value(4), last: SeqNumber::Value(2) },
            SeqRange { first: SeqNumber::Value(9), last: SeqNumber::Largest },
        ]);
        assert!(set.contains(3, 12));
        assert!(!set.contains(5, 12));
        assert!(set.contains(12, 12));
        assert_eq!(set.to_bounds(12), vec![(2, 4), (9, 12)]);
        assert_eq!(set.to_string(), "4:2,9:*");
        assert_eq!(SequenceSet::from_numbers(&[7, 1, 2, 3, 9, 10]).to_string(), "1:3,7,9:10");
    }

    #[test]
    fn dates() {
        assert!(Date::new(2024, 2, 29).is_some());
        assert!(Date::new(2023, 2, 29).is_none());
        assert_eq!(Date::new(1994, 2, 1).unwrap().to_string(), "1-Feb-1994");
        assert_eq!(DateTime { unix: 837_596_665, offset_minutes: -420 }.to_string(), "\"17-Jul-1996 02:44:25 -0700\"");
        assert_eq!(DateTime::utc(0).to_string(), "\" 1-Jan-1970 00:00:00 +0000\"");
    }

    #[test]
    fn flags() {
        assert_eq!(Flag::parse("\\SEEN"), Some(Flag::Seen));
        assert_eq!(Flag::parse("$Junk"), Some(Flag::Keyword("$Junk".into())));
        assert_eq!(Flag::parse("\\X-Foo"), Some(Flag::Extension("X-Foo".into())));
        assert_eq!(Flag::parse("\\"), None);
        assert!(Flag::Keyword("$junk".into()).same_as(&Flag::Keyword("$JUNK".into())));
    }
}
