//! Directory entries and the `BOOK` answer line (SPEC 8.4):
//! `<mailbox>,<name>,<organisation>,<role>,<id;id...>`, one CSV record (RFC 4180: a field
//! holding `,` or `"` is quoted, its quotes doubled).

use super::error::ParseError;

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
        crate::csv::record([self.mailbox.as_str(), &self.name, &self.organisation, &self.role, &ids])
    }

    /// Reads a BOOK line back (the client side: `vouchmail client book`).
    pub fn parse_book_line(line: &str) -> Result<DirectoryEntry, ParseError> {
        let fields = crate::csv::parse_record(line, 5).map_err(|e| ParseError::new(e.to_string()))?;
        let [mailbox, name, organisation, role, ids]: [String; 5] =
            fields.try_into().map_err(|f: Vec<String>| ParseError::new(format!("{} fields, not 5", f.len())))?;
        let ids = ids.split(';').filter(|s| !s.is_empty()).map(str::to_string).collect();
        Ok(DirectoryEntry { mailbox, name, organisation, role, ids })
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
    fn book_lines_with_the_wrong_shape() {
        assert_eq!(DirectoryEntry::parse_book_line("a,b").unwrap_err().to_string(), "2 fields, not 5");
        assert_eq!(DirectoryEntry::parse_book_line("a,b,c,d,e,f").unwrap_err().to_string(), "too many fields");
        assert_eq!(
            DirectoryEntry::parse_book_line("\"a,b,c,d,e").unwrap_err().to_string(),
            "unterminated quoted field"
        );
    }
}
