//! Small parsers of the formal syntax (RFC 9051 9) that the command parser and the SEARCH
//! criteria share: sequence sets, flags, dates, mod-sequences.

use std::borrow::Cow;

use super::lexer::{Cursor, SyntaxError};
use crate::imap::types::{Date, DateTime, Flag, SequenceSet, StatusItem};

/// An IMAP string that must be UTF-8 (RFC 2971 ID fields and values).
pub(super) fn utf8_string(raw: Cow<'_, [u8]>, what: &'static str) -> Result<String, SyntaxError> {
    String::from_utf8(raw.into_owned()).map_err(|_| format!("{what} is not UTF-8").into())
}

/// RFC 9051 9 `sequence-set`, with `$` (RFC 5182).
pub(super) fn sequence_set(c: &mut Cursor<'_>) -> Result<SequenceSet, SyntaxError> {
    use crate::imap::types::{SeqNumber, SeqRange};
    if c.eat(b'$') {
        return Ok(SequenceSet::Saved);
    }
    let seq_number = |c: &mut Cursor<'_>| -> Result<SeqNumber, SyntaxError> {
        if c.eat(b'*') {
            Ok(SeqNumber::Largest)
        } else {
            c.nz_number().map(SeqNumber::Value).map_err(|_| "Invalid sequence set".into())
        }
    };
    let mut ranges = Vec::new();
    loop {
        let first = seq_number(c)?;
        let last = if c.eat(b':') { seq_number(c)? } else { first };
        ranges.push(SeqRange { first, last });
        if !c.eat(b',') {
            return Ok(SequenceSet::Ranges(ranges));
        }
    }
}

/// RFC 9051 9 `flag`.
pub(super) fn flag(c: &mut Cursor<'_>) -> Result<Flag, SyntaxError> {
    let backslash = c.eat(b'\\');
    let name = c.atom().map_err(|_| SyntaxError::from("Invalid flag"))?;
    let flag = if backslash { Flag::parse(&format!("\\{name}")) } else { Flag::parse(name) };
    flag.ok_or_else(|| "Invalid flag".into())
}

/// RFC 9051 9 `flag-list`: `(` [flag *(SP flag)] `)`.
pub(super) fn flag_list(c: &mut Cursor<'_>) -> Result<Vec<Flag>, SyntaxError> {
    c.parenthesized(true, flag)
}

pub(super) fn status_item_list(c: &mut Cursor<'_>) -> Result<Vec<StatusItem>, SyntaxError> {
    c.parenthesized(false, |c| {
        let name = c.word()?;
        StatusItem::from_name(name).ok_or_else(|| "Unknown STATUS item".into())
    })
}

/// RFC 7162 7 `mod-sequence-value`: 1 to 2^63-1.
pub(super) fn mod_sequence_value(c: &mut Cursor<'_>) -> Result<u64, SyntaxError> {
    match c.number64()? {
        0 => Err("A mod-sequence cannot be zero here".into()),
        n => Ok(n),
    }
}

/// RFC 9051 9 `date-day` `-` `date-month` `-` `date-year`.
fn date_parts(c: &mut Cursor<'_>, padded_day: bool) -> Result<(u16, u8, u8), SyntaxError> {
    const BAD: &str = "Invalid date";
    let digits = |c: &mut Cursor<'_>, min: usize, max: usize| -> Result<u32, SyntaxError> {
        let count = c.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        if !(min..=max).contains(&count) {
            return Err(BAD.into());
        }
        let value = c.rest()[..count].iter().fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        c.advance(count);
        Ok(value)
    };
    // RFC 9051 9 `date-day-fixed`: SP DIGIT or 2DIGIT.
    let day = if padded_day && c.eat(b' ') { digits(c, 1, 1)? } else { digits(c, 1, 2)? };
    c.expect(b'-', BAD)?;
    let month = c.rest().get(..3).and_then(crate::imap::types::month_from_name).ok_or(BAD)?;
    c.advance(3);
    c.expect(b'-', BAD)?;
    let year = digits(c, 4, 4)?;
    let date = Date::new(year as u16, month, day as u8).ok_or(BAD)?;
    Ok((date.year, date.month, date.day))
}

/// RFC 9051 9 `date`: `date-text` or the same in quotes.
pub(super) fn date(c: &mut Cursor<'_>) -> Result<Date, SyntaxError> {
    let quoted = c.eat(b'"');
    let (year, month, day) = date_parts(c, false)?;
    if quoted {
        c.expect(b'"', "Invalid date")?;
    }
    Date::new(year, month, day).ok_or_else(|| "Invalid date".into())
}

/// RFC 9051 9 `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, day padded with a space or
/// a zero (or, leniently, not at all).
pub(super) fn date_time(c: &mut Cursor<'_>) -> Result<DateTime, SyntaxError> {
    const BAD: &str = "Invalid date-time";
    c.expect(b'"', BAD)?;
    let (year, month, day) = date_parts(c, true).map_err(|_| BAD)?;
    c.expect(b' ', BAD)?;
    let two_digits = |c: &mut Cursor<'_>| -> Result<u32, SyntaxError> {
        match *c.rest() {
            [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
                c.advance(2);
                Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            }
            _ => Err(BAD.into()),
        }
    };
    let hour = two_digits(c)?;
    c.expect(b':', BAD)?;
    let minute = two_digits(c)?;
    c.expect(b':', BAD)?;
    let second = two_digits(c)?;
    c.expect(b' ', BAD)?;
    let sign: i64 = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return Err(BAD.into());
    };
    let zone_hours = two_digits(c)?;
    let zone_minutes = two_digits(c)?;
    c.expect(b'"', BAD)?;
    if hour > 23 || minute > 59 || second > 60 || zone_minutes > 59 {
        return Err(BAD.into());
    }
    let offset_minutes = sign * i64::from(zone_hours * 60 + zone_minutes);
    let local =
        crate::time::civil_to_unix_seconds(i64::from(year), u32::from(month), u32::from(day), hour, minute, second);
    Ok(DateTime { unix: local - offset_minutes * 60, offset_minutes: offset_minutes as i16 })
}
