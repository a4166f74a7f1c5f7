//! RFC 4180 records on one line: the BOOK answer's entries (SPEC 8.4) and the tracking
//! records of NOTIFY and TRACK (SPEC 8.3). One writer and one reader for both.

use std::fmt;

/// Why a line is not a CSV record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvError(pub &'static str);

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The fields as one record: RFC 4180 2.6, 2.7, a field is quoted when it holds a comma, a
/// quote or a line break, with quotes doubled.
pub fn record<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line
}

/// RFC 4180 2: fields separated by commas; a field is either unquoted (no `"`) or quoted
/// from its first to its last character, `""` standing for `"`. At most `max_fields`
/// fields are read, so a peer's line of commas costs no more than that.
pub fn parse_record(line: &str, max_fields: usize) -> Result<Vec<String>, CsvError> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        if fields.len() == max_fields {
            return Err(CsvError("too many fields"));
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CsvError("unterminated quoted field")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err(CsvError("text after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(CsvError("a quote inside an unquoted field")),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4180_quoting_round_trips() {
        let fields = ["plain", "a,b", "say \"hi\"", "", "two\r\nlines"];
        let line = record(fields);
        assert_eq!(line, "plain,\"a,b\",\"say \"\"hi\"\"\",,\"two\r\nlines\"");
        assert_eq!(parse_record(&line, 5).unwrap(), fields);
    }

    #[test]
    fn malformed_records_and_the_field_bound() {
        assert_eq!(parse_record("\"open", 9), Err(CsvError("unterminated quoted field")));
        assert_eq!(parse_record("\"a\"b", 9), Err(CsvError("text after a quoted field")));
        assert_eq!(parse_record("a\"b", 9), Err(CsvError("a quote inside an unquoted field")));
        assert_eq!(parse_record("a,,b", 9).unwrap(), ["a", "", "b"]);
        assert_eq!(parse_record("", 9).unwrap(), [""]);
        assert_eq!(parse_record("a,b,c", 3).unwrap().len(), 3);
        assert_eq!(parse_record("a,b,c,d", 3), Err(CsvError("too many fields")));
        assert_eq!(parse_record(&",".repeat(100_000), 6), Err(CsvError("too many fields")));
    }
}
