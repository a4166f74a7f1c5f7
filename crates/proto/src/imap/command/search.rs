//! SEARCH criteria (RFC 9051 6.4.4, RFC 3501 6.4.4 for the IMAP4rev1-only keys, RFC 7162
//! 3.1.5 for MODSEQ).

use super::grammar::{date, flag, sequence_set};
use super::lexer::{Cursor, SyntaxError};
use crate::imap::types::{EntryType, Flag, SearchKey};

/// Deepest nesting of NOT, OR and parentheses: enough for any client, and the parser's
/// recursion stays far from the stack's end.
pub const MAX_SEARCH_DEPTH: usize = 64;

/// `1*(SP search-key)` after the first SP: the keys must all match, as one `And` (or the
/// key itself when there is one).
pub(super) fn search_criteria(c: &mut Cursor<'_>) -> Result<SearchKey, SyntaxError> {
    let mut keys = vec![search_key(c, 0)?];
    while c.eat(b' ') {
        keys.push(search_key(c, 0)?);
    }
    Ok(if keys.len() == 1 { keys.remove(0) } else { SearchKey::And(keys) })
}

fn string(c: &mut Cursor<'_>) -> Result<String, SyntaxError> {
    c.space()?;
    c.astring_utf8("Search string")
}

fn search_key(c: &mut Cursor<'_>, depth: usize) -> Result<SearchKey, SyntaxError> {
    if depth > MAX_SEARCH_DEPTH {
        return Err("Search criteria nested too deeply".into());
    }
    match c.peek() {
        Some(b'(') => {
            let keys = c.parenthesized(false, |c| search_key(c, depth + 1))?;
            return Ok(SearchKey::And(keys));
        }
        Some(b'0'..=b'9' | b'*' | b'$') => return Ok(SearchKey::SequenceSet(sequence_set(c)?)),
        _ => {}
    }
    let name = c.word().map_err(|_| SyntaxError::from("Expected a search key"))?.to_ascii_uppercase();
    let key = match name.as_str() {
        "ALL" => SearchKey::All,
        "ANSWERED" => SearchKey::Answered,
        "DELETED" => SearchKey::Deleted,
        "DRAFT" => SearchKey::Draft,
        "FLAGGED" => SearchKey::Flagged,
        "NEW" => SearchKey::New,
        "OLD" => SearchKey::Old,
        "RECENT" => SearchKey::Recent,
        "SEEN" => SearchKey::Seen,
        "UNANSWERED" => SearchKey::Unanswered,
        "UNDELETED" => SearchKey::Undeleted,
        "UNDRAFT" => SearchKey::Undraft,
        "UNFLAGGED" => SearchKey::Unflagged,
        "UNSEEN" => SearchKey::Unseen,
        "BCC" => SearchKey::Bcc(string(c)?),
        "BODY" => SearchKey::Body(string(c)?),
        "CC" => SearchKey::Cc(string(c)?),
        "FROM" => SearchKey::From(string(c)?),
        "SUBJECT" => SearchKey::Subject(string(c)?),
        "TEXT" => SearchKey::Text(string(c)?),
        "TO" => SearchKey::To(string(c)?),
        "HEADER" => {
            let field = string(c)?;
            if field.is_empty() || !field.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b':') {
                return Err("Invalid header field name".into());
            }
            SearchKey::Header(field, string(c)?)
        }
        "KEYWORD" | "UNKEYWORD" => {
            c.space()?;
            let Flag::Keyword(keyword) = flag(c)? else {
                return Err("KEYWORD takes a keyword, not a system flag".into());
            };
            if name == "KEYWORD" {
                SearchKey::Keyword(keyword)
            } else {
                SearchKey::Unkeyword(keyword)
            }
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            c.space()?;
            let day = date(c)?;
            match name.as_str() {
                "BEFORE" => SearchKey::Before(day),
                "ON" => SearchKey::On(day),
                "SINCE" => SearchKey::Since(day),
                "SENTBEFORE" => SearchKey::SentBefore(day),
                "SENTON" => SearchKey::SentOn(day),
                _ => SearchKey::SentSince(day),
            }
        }
        "LARGER" | "SMALLER" => {
            c.space()?;
            let size = c.number64()?;
            if name == "LARGER" {
                SearchKey::Larger(size)
            } else {
                SearchKey::Smaller(size)
            }
        }
        "UID" => {
            c.space()?;
            SearchKey::Uid(sequence_set(c)?)
        }
        "NOT" => {
            c.space()?;
            SearchKey::Not(Box::new(search_key(c, depth + 1)?))
        }
        "OR" => {
            c.space()?;
            let a = search_key(c, depth + 1)?;
            c.space()?;
            let b = search_key(c, depth + 1)?;
            SearchKey::Or(Box::new(a), Box::new(b))
        }
        "MODSEQ" => modseq(c)?,
        _ => return Err(format!("Unknown search key {name}").into()),
    };
    Ok(key)
}

/// RFC 7162 3.1.5: `MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer`,
/// entry-name a quoted `"/flags/\\Seen"`.
fn modseq(c: &mut Cursor<'_>) -> Result<SearchKey, SyntaxError> {
    c.space()?;
    let mut entry = None;
    if c.peek() == Some(b'"') {
        let raw = c.quoted()?;
        let name = String::from_utf8(raw).map_err(|_| SyntaxError::from("Invalid MODSEQ entry name"))?;
        if !name.to_ascii_lowercase().starts_with("/flags/") {
            return Err("Invalid MODSEQ entry name".into());
        }
        c.space()?;
        let kind = match c.word()?.to_ascii_lowercase().as_str() {
            "priv" => EntryType::Private,
            "shared" => EntryType::Shared,
            "all" => EntryType::All,
            _ => return Err("MODSEQ entry type must be priv, shared or all".into()),
        };
        c.space()?;
        entry = Some((name, kind));
    }
    // RFC 7162 7: mod-sequence-valzer, zero allowed.
    let modseq = c.number64()?;
    Ok(SearchKey::ModSeq { entry, modseq })
}
