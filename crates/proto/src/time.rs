//! Date formatting for mail headers and logs, std only.
//!
//! Calendar arithmetic is the proleptic Gregorian calendar in UTC, after Howard Hinnant's
//! `civil_from_days` / `days_from_civil` algorithms (public domain), valid for every i64
//! second count.

use std::time::{SystemTime, UNIX_EPOCH};

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Seconds since the Unix epoch, negative before it. Sub-second parts are truncated
/// towards negative infinity, so a time just before the epoch is second -1.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let extra = i64::from(d.subsec_nanos() > 0);
            secs.saturating_add(extra).saturating_neg()
        }
    }
}

/// Splits seconds since the Unix epoch (UTC) into
/// `(year, month 1-12, day 1-31, hour, minute, second, weekday 0=Sunday..6=Saturday)`.
pub fn unix_seconds_to_civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let h = (sod / 3600) as u32;
    let mi = ((sod % 3600) / 60) as u32;
    let s = (sod % 60) as u32;
    // 1970-01-01 was a Thursday (4).
    let wd = (days.rem_euclid(7) + 4).rem_euclid(7) as u32;
    (y, m, d, h, mi, s, wd)
}

/// The inverse of [`unix_seconds_to_civil`] (without the weekday). Out-of-range fields are
/// not checked; they carry over as the arithmetic implies (month must be 1-12).
pub fn civil_to_unix_seconds(y: i64, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    let days = days_from_civil(y, m, d);
    days.saturating_mul(86_400).saturating_add(i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s))
}

/// Days since 1970-01-01 -> (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of the year.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let m = i64::from(m.clamp(1, 12));
    let y = if m <= 2 { y.saturating_sub(1) } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era.saturating_mul(146_097).saturating_add(doe).saturating_sub(719_468)
}

/// RFC 5322 3.3 date-time in UTC, day of month as two digits:
/// `Sun, 22 Nov 2026 09:50:58 +0000`, `Thu, 01 Jan 1970 00:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let (y, m, d, h, mi, s, wd) = unix_seconds_to_civil(unix_seconds(t));
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAY_NAMES.get(wd as usize).copied().unwrap_or("Sun"),
        d,
        MONTH_NAMES.get((m as usize).saturating_sub(1)).copied().unwrap_or("Jan"),
        y,
        h,
        mi,
        s
    )
}

/// RFC 3339 5.6 timestamp in UTC, whole seconds: `2026-11-22T09:50:58Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, h, mi, s, _) = unix_seconds_to_civil(unix_seconds(t));
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Parses an RFC 3339 5.6 `date-time` into seconds since the Unix epoch (UTC). Any
/// `time-offset` is accepted (`Z` or `+hh:mm`/`-hh:mm`) and applied; `T`/`Z` may be lower
/// case (RFC 3339 5.6 NOTE); a fractional second is truncated; a leap second (`:60`) counts
/// as the next second. None for anything else, including out-of-range fields.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    parse_rfc3339_offset(text).map(|(secs, _)| secs)
}

/// [`parse_rfc3339`] for a time that must be in UTC: the offset is `Z` or `+00:00`.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    match parse_rfc3339_offset(text) {
        Some((secs, 0)) => Some(secs),
        _ => None,
    }
}

/// The time and its offset from UTC in seconds (`-00:00`, "unknown local offset", is 0).
fn parse_rfc3339_offset(text: &str) -> Option<(i64, i64)> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0u32, |acc, d| acc.checked_mul(10)?.checked_add(u32::from(d - b'0')))
    };
    // full-date "T" partial-time: YYYY-MM-DDTHH:MM:SS
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap_year = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap_year => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    // time-secfrac = "." 1*DIGIT
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        rest = &frac[len..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let all = [*h1, *h2, *m1, *m2];
            if !all.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return None;
            }
            let value = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -value
            } else {
                value
            }
        }
        _ => return None,
    };
    let local = civil_to_unix_seconds(i64::from(year), month, day, hour, minute, second);
    Some((local - offset, offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn epoch() {
        assert_eq!(unix_seconds_to_civil(0), (1970, 1, 1, 0, 0, 0, 4));
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn known_dates() {
        // 2026-11-22 09:50:58 UTC (a Sunday).
        let t = at(1_795_341_058);
        assert_eq!(rfc5322_date(t), "Sun, 22 Nov 2026 09:50:58 +0000");
        assert_eq!(rfc3339(t), "2026-11-22T09:50:58Z");
        // 2000-02-29 (leap year divisible by 400), a Tuesday.
        assert_eq!(unix_seconds_to_civil(951_782_400), (2000, 2, 29, 0, 0, 0, 2));
        assert_eq!(unix_seconds_to_civil(951_868_800), (2000, 3, 1, 0, 0, 0, 3));
        // 2100 is not a leap year: 2100-02-28 is followed by 2100-03-01 (a Monday).
        assert_eq!(unix_seconds_to_civil(4_107_542_400), (2100, 3, 1, 0, 0, 0, 1));
        assert_eq!(unix_seconds_to_civil(4_107_542_400 - 1), (2100, 2, 28, 23, 59, 59, 0));
        // 2024-02-29 (ordinary leap year), a Thursday.
        assert_eq!(unix_seconds_to_civil(1_709_164_800), (2024, 2, 29, 0, 0, 0, 4));
        // 32-bit rollover: 2038-01-19 03:14:07 Tuesday.
        assert_eq!(unix_seconds_to_civil(2_147_483_647), (2038, 1, 19, 3, 14, 7, 2));
        // End of a year.
        assert_eq!(unix_seconds_to_civil(1_735_689_599), (2024, 12, 31, 23, 59, 59, 2));
        // RFC 3339 example 1985-04-12T23:20:50Z.
        assert_eq!(rfc3339(at(482_196_050)), "1985-04-12T23:20:50Z");
        // RFC 5322 A.1.1 style date.
        assert_eq!(rfc5322_date(at(878_977_676)), "Sat, 08 Nov 1997 08:27:56 +0000");
        // Sub-second part is truncated.
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_999)), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn before_epoch() {
        assert_eq!(unix_seconds_to_civil(-1), (1969, 12, 31, 23, 59, 59, 3));
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1)), -1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(1)), -1);
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)), "1969-12-31T00:00:00Z");
        // 1900-03-01 (1900 was not a leap year), a Thursday.
        assert_eq!(unix_seconds_to_civil(-2_203_891_200), (1900, 3, 1, 0, 0, 0, 4));
        // 0000-03-01 and a year before year 0.
        assert_eq!(civil_to_unix_seconds(0, 3, 1, 0, 0, 0), -62_162_035_200);
        assert_eq!(unix_seconds_to_civil(-62_162_035_200).0, 0);
        assert_eq!(unix_seconds_to_civil(-62_162_035_200 - 366 * 86_400).0, -1);
    }

    #[test]
    fn extremes_do_not_panic() {
        for s in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let (_, m, d, h, mi, sec, wd) = unix_seconds_to_civil(s);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert!(h < 24 && mi < 60 && sec < 60 && wd < 7);
        }
    }

    #[test]
    fn roundtrip_and_weekdays_every_day() {
        // Every day from 1600 to 2400: roundtrip, consecutive dates, weekdays cycle.
        let start = civil_to_unix_seconds(1600, 1, 1, 0, 0, 0);
        let end = civil_to_unix_seconds(2400, 12, 31, 0, 0, 0);
        let mut prev = unix_seconds_to_civil(start - 86_400);
        let mut t = start;
        while t <= end {
            let c = unix_seconds_to_civil(t + 45_296); // 12:34:56
            assert_eq!((c.3, c.4, c.5), (12, 34, 56));
            assert_eq!(civil_to_unix_seconds(c.0, c.1, c.2, c.3, c.4, c.5), t + 45_296);
            assert_eq!(c.6, (prev.6 + 1) % 7);
            let days_in_month = match c.1 {
                2 if (c.0 % 4 == 0 && c.0 % 100 != 0) || c.0 % 400 == 0 => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            assert!(c.2 <= days_in_month);
            if c.2 == 1 {
                assert!(prev.2 >= 28);
            } else {
                assert_eq!(c.2, prev.2 + 1);
            }
            prev = c;
            t += 86_400;
        }
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1985-04-12T23:20:50Z"), Some(482_196_050));
        // RFC 3339 5.8 examples.
        assert_eq!(parse_rfc3339("1985-04-12T23:20:50.52Z"), Some(482_196_050));
        assert_eq!(parse_rfc3339("1996-12-19T16:39:57-08:00"), parse_rfc3339("1996-12-20T00:39:57Z"));
        assert_eq!(parse_rfc3339("1990-12-31T23:59:60Z"), parse_rfc3339("1991-01-01T00:00:00Z"));
        assert_eq!(parse_rfc3339("2026-12-01t10:00:00z"), parse_rfc3339("2026-12-01T10:00:00Z"));
        assert_eq!(parse_rfc3339_utc("2026-12-01T10:00:00+00:00"), parse_rfc3339("2026-12-01T10:00:00Z"));
        assert_eq!(parse_rfc3339_utc("1996-12-19T16:39:57-08:00"), None);
        let t = parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(t as u64)), "2026-12-01T10:00:00Z");
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-13-01T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00.Z",
            "2026-12-01T10:00:00+0100",
            "2026-12-01 10:00:00Z",
            "+026-12-01T10:00:00Z",
            "2026-12-01T10:00:00Zjunk",
            "2026-12-01T10:00:00\u{e9}",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }
}
