//! Directory entries and the `BOOK` answer line (SPEC 8.4):
//! `<mailbox>,<name>,<organisation>,<role>,<id;id...>`, one CSV record (RFC 4180: a field
//! holding `,` or `"` is quoted, its quotes doubled).

/// Most entries one BOOK answer lists (SPEC 8.4).
pub const BOOK_LIMIT: usize = 50;

/// A local user's published directory details.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectoryEntry {
    pub mailbox: String,
    pub name: String,
    pub organisation: String,
    pub role: String,
    /// Published IDs (provider numbers and the like), upper case.
    pub ids: Vec<String>,
}

impl DirectoryEntry {
    /// SPEC 8.4: the query matches when the name, organisation, role, mailbox or one of
    /// the IDs contains it, ignoring case.
    pub fn matches(&self, query: &str) -> bool {
        let query = query.to_lowercase();
        [&self.name, &self.organisation, &self.role, &self.mailbox]
            .into_iter()
            .chain(self.ids.iter())
            .any(|field| field.to_lowercase().contains(&query))
    }

    /// The CSV record of the BOOK answer (without `250-`).
    pub fn book_line(&self) -> String {
        let ids = self.ids.join(";");
        [self.mailbox.as_str(), &self.name, &self.organisation, &self.role, &ids]
            .iter()
            .map(|field| csv_field(field))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads a BOOK line back (the client side: `vouchmail client book`).
    pub fn parse_book_line(line: &str) -> Result<DirectoryEntry, String> {
        let fields = parse_csv_record(line)?;
        let [mailbox, name, organisation, role, ids]: [String; 5] =
            fields.try_into().map_err(|f: Vec<String>| format!("{} fields, not 5", f.len()))?;
        let ids = ids.split(';').filter(|s| !s.is_empty()).map(str::to_string).collect();
        Ok(DirectoryEntry { mailbox, name, organisation, role, ids })
    }
}

/// RFC 4180 2.6/2.7: quoted when it holds a comma, a quote or a line break; quotes doubled.
pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// One CSV record (RFC 4180 2) on one line.
pub fn parse_csv_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
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
                Some(_) => return Err("text after a quoted field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("quote inside an unquoted field".into()),
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

    fn entry() -> DirectoryEntry {
        DirectoryEntry {
            mailbox: "abc555@lrsupport.test".into(),
            name: "Dr Ann \"Annie\" Brown".into(),
            organisation: "Brown, Smith & Co".into(),
            role: "GP".into(),
            ids: vec!["1234567F".into(), "X-9".into()],
        }
    }

    #[test]
    fn book_line_quotes_as_rfc_4180() {
        let line = entry().book_line();
        assert_eq!(line, "abc555@lrsupport.test,\"Dr Ann \"\"Annie\"\" Brown\",\"Brown, Smith & Co\",GP,1234567F;X-9");
        assert_eq!(DirectoryEntry::parse_book_line(&line).unwrap(), entry());
    }

    #[test]
    fn query_matches_any_field_ignoring_case() {
        let e = entry();
        for q in ["annie", "SMITH", "gp", "lrsupport", "567f"] {
            assert!(e.matches(q), "{q}");
        }
        assert!(!e.matches("nobody"));
    }

    #[test]
    fn csv_errors() {
        assert!(parse_csv_record("\"open").is_err());
        assert!(parse_csv_record("\"a\"b").is_err());
        assert!(parse_csv_record("a\"b").is_err());
        assert_eq!(parse_csv_record("a,,b").unwrap(), vec!["a", "", "b"]);
        assert!(DirectoryEntry::parse_book_line("a,b").is_err());
    }
}
