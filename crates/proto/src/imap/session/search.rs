//! SEARCH keys (RFC 9051 6.4.4) matched in the session. Flags, sizes, internal dates,
//! UIDs, sequence numbers and mod-sequences come from the view; header keys (FROM, TO,
//! CC, BCC, SUBJECT, HEADER, SENT*) need the header section and BODY and TEXT the whole
//! message. A first pass without content leaves undecided only the messages whose match
//! depends on it; only those are loaded. Strings match as case-insensitive substrings;
//! header values are compared with their encoded words decoded (RFC 2047).

use super::model::Content;
use super::view::MessageRef;
use crate::headers;
use crate::imap::types::{Date, Flag, SearchKey, SequenceSet};

/// What a key is matched against besides the message itself.
pub(super) struct Context<'a> {
    /// Messages in the view (`*` of sequence numbers).
    pub exists: u32,
    /// The largest UID in the view (`*` of UIDs).
    pub largest_uid: u32,
    /// `$` (RFC 5182).
    pub saved: &'a [u32],
}

/// The most any key needs of the message; None: the view decides.
pub(super) fn content_needed(key: &SearchKey) -> Option<Content> {
    match key {
        SearchKey::Body(_) | SearchKey::Text(_) => Some(Content::Full),
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Subject(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => Some(Content::Header),
        SearchKey::Not(key) => content_needed(key),
        SearchKey::Or(a, b) => content_needed(a).max(content_needed(b)),
        SearchKey::And(keys) => keys.iter().filter_map(content_needed).max(),
        _ => None,
    }
}

/// Whether message `seq` matches; None when that depends on content not given.
pub(super) fn matches(
    key: &SearchKey,
    seq: u32,
    meta: &MessageRef<'_>,
    content: Option<&[u8]>,
    cx: &Context<'_>,
) -> Option<bool> {
    let flag = |f: Flag| meta.flags.iter().any(|g| g.same_as(&f));
    let keyword = |k: &str| meta.flags.iter().any(|g| g.same_as(&Flag::Keyword(k.to_owned())));
    let day = || Date::from_unix(meta.internal_date.unix + i64::from(meta.internal_date.offset_minutes) * 60);
    let result = match key {
        SearchKey::All => true,
        SearchKey::Answered => flag(Flag::Answered),
        SearchKey::Deleted => flag(Flag::Deleted),
        SearchKey::Draft => flag(Flag::Draft),
        SearchKey::Flagged => flag(Flag::Flagged),
        SearchKey::Seen => flag(Flag::Seen),
        SearchKey::Unanswered => !flag(Flag::Answered),
        SearchKey::Undeleted => !flag(Flag::Deleted),
        SearchKey::Undraft => !flag(Flag::Draft),
        SearchKey::Unflagged => !flag(Flag::Flagged),
        SearchKey::Unseen => !flag(Flag::Seen),
        // RFC 3501: vouchmail keeps no \Recent, so nothing is new or recent.
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::Old => true,
        SearchKey::Keyword(k) => keyword(k),
        SearchKey::Unkeyword(k) => !keyword(k),
        SearchKey::Larger(n) => meta.size > *n,
        SearchKey::Smaller(n) => meta.size < *n,
        SearchKey::Before(d) => day() < *d,
        SearchKey::On(d) => day() == *d,
        SearchKey::Since(d) => day() >= *d,
        SearchKey::ModSeq { modseq, .. } => meta.modseq >= *modseq,
        SearchKey::Uid(SequenceSet::Saved) | SearchKey::SequenceSet(SequenceSet::Saved) => cx.saved.contains(&meta.uid),
        SearchKey::Uid(set) => set.contains(meta.uid, cx.largest_uid),
        SearchKey::SequenceSet(set) => set.contains(seq, cx.exists),
        SearchKey::Not(key) => !matches(key, seq, meta, content, cx)?,
        SearchKey::Or(a, b) => {
            let a = matches(a, seq, meta, content, cx);
            if a == Some(true) {
                return Some(true);
            }
            let b = matches(b, seq, meta, content, cx);
            match (a, b) {
                (_, Some(true)) => true,
                (Some(false), Some(false)) => false,
                _ => return None,
            }
        }
        SearchKey::And(keys) => {
            let mut known = true;
            for key in keys {
                match matches(key, seq, meta, content, cx) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => known = false,
                }
            }
            if !known {
                return None;
            }
            true
        }
        SearchKey::From(s) => header_contains(content?, "From", s),
        SearchKey::To(s) => header_contains(content?, "To", s),
        SearchKey::Cc(s) => header_contains(content?, "Cc", s),
        SearchKey::Bcc(s) => header_contains(content?, "Bcc", s),
        SearchKey::Subject(s) => header_contains(content?, "Subject", s),
        SearchKey::Header(name, s) => header_contains(content?, name, s),
        SearchKey::SentBefore(d) => sent_date(content?).is_some_and(|sent| sent < *d),
        SearchKey::SentOn(d) => sent_date(content?).is_some_and(|sent| sent == *d),
        SearchKey::SentSince(d) => sent_date(content?).is_some_and(|sent| sent >= *d),
        SearchKey::Body(s) => {
            let message = content?;
            contains(&message[headers::body_start(message).min(message.len())..], s)
        }
        SearchKey::Text(s) => contains(content?, s),
    };
    Some(result)
}

/// Any field named `name` whose decoded value contains `needle` (an empty needle: the
/// field exists, RFC 9051 6.4.4 HEADER).
fn header_contains(message: &[u8], name: &str, needle: &str) -> bool {
    let mut fields = headers::fields(message).filter(|f| f.name_is(name)).peekable();
    if fields.peek().is_none() {
        return false;
    }
    let ascii_needle = needle.is_ascii();
    let needle = needle.to_lowercase();
    fields.any(|f| {
        let raw = headers::trim_blanks(f.raw_value());
        // Most values are plain ASCII on one line, with no encoded words: no unfolding or
        // decoding to do, and ASCII case folding is the whole of it.
        if ascii_needle && raw.is_ascii() && !raw.contains(&b'\n') && !raw.windows(2).any(|w| w == b"=?") {
            return ascii_contains_ignore_case(raw, needle.as_bytes());
        }
        let value = headers::decode_encoded_words(&f.unfolded_value());
        value.to_lowercase().contains(&needle)
    })
}

/// Whether `haystack` contains `needle` (lower-case ASCII), ASCII case ignored.
fn ascii_contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Case-insensitive substring of raw bytes (UTF-8, invalid sequences replaced).
fn contains(haystack: &[u8], needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    String::from_utf8_lossy(haystack).to_lowercase().contains(&needle.to_lowercase())
}

/// The day of the Date: field (RFC 5322 3.3 `[day-name ","] day month year ...`), in the
/// sender's zone (RFC 9051 6.4.4: time and zone disregarded).
fn sent_date(message: &[u8]) -> Option<Date> {
    let value = headers::fields(message).find(|f| f.name_is("Date"))?.unfolded_value();
    let words: Vec<&str> = value.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| crate::imap::types::month_from_name(w.as_bytes()).is_some() && w.len() == 3)?;
    let month = crate::imap::types::month_from_name(words[at].as_bytes())?;
    let day: u8 = words.get(at.checked_sub(1)?)?.parse().ok()?;
    let year: u16 = words.get(at + 1)?.parse().ok()?;
    // RFC 5322 4.3: two-digit years.
    let year = match year {
        0..=49 => year + 2000,
        50..=999 => year + 1900,
        _ => year,
    };
    Date::new(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::types::DateTime;

    #[test]
    fn undecided_until_content() {
        let meta = MessageRef { uid: 7, flags: &[Flag::Seen], internal_date: DateTime::utc(0), size: 100, modseq: 3 };
        let cx = Context { exists: 1, largest_uid: 7, saved: &[] };
        let key = SearchKey::And(vec![SearchKey::Seen, SearchKey::Subject("hello".into())]);
        assert_eq!(matches(&key, 1, &meta, None, &cx), None);
        let message = b"Subject: =?utf-8?q?Hello?= world\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nbody";
        assert_eq!(matches(&key, 1, &meta, Some(message), &cx), Some(true));
        let unseen = SearchKey::And(vec![SearchKey::Unseen, SearchKey::Subject("hello".into())]);
        assert_eq!(matches(&unseen, 1, &meta, None, &cx), Some(false));
        assert_eq!(sent_date(message), Date::new(2003, 7, 1));
        assert_eq!(
            content_needed(&SearchKey::Or(Box::new(SearchKey::Body("x".into())), Box::new(SearchKey::All))),
            Some(Content::Full)
        );
    }

    /// RFC 9051 6.4.4: a case-insensitive substring of the field's value as read (unfolded,
    /// encoded words decoded); the plain-ASCII shortcut answers as the full path does.
    #[test]
    fn header_values_match_as_decoded_whatever_the_path() {
        let message = b"Subject:  Wg MTG notes \r\nTo: a@example.org,\r\n b@example.org\r\n\
                        Cc: =?iso-8859-1?q?Andr=E9?= <andre@example.org>\r\nFrom: K\xc3\xa4the <k@example.org>\r\n\r\nbody";
        let has = |name, needle| header_contains(message, name, needle);
        assert!(has("subject", "wg mtg"));
        assert!(has("SUBJECT", "MTG NOTES"));
        assert!(!has("Subject", "notes  "), "the value is trimmed");
        assert!(!has("Subject", "body"));
        assert!(has("To", "org, b@"), "folded lines are unfolded");
        assert!(has("Cc", "andr\u{e9}"), "encoded words are decoded");
        assert!(has("Cc", "ANDR\u{c9}"));
        assert!(has("From", "k\u{e4}the"), "UTF-8 values are folded as Unicode");
        assert!(has("Subject", ""));
        assert!(!has("Bcc", ""), "no such field");
    }
}
