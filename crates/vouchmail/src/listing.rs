//! What the list commands print (issue 9): for people, aligned columns under a header row;
//! with `--json`, for scripts, one JSON array of objects whose keys stay the same from
//! release to release.

use crate::error::CliError;
use std::io::Write;

use serde_json::Value;

/// A table being filled: each row as shown, and the same row as a JSON object.
pub struct Listing {
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
    objects: Vec<Value>,
}

impl Listing {
    pub fn new(headers: &'static [&'static str]) -> Listing {
        Listing { headers, rows: Vec::new(), objects: Vec::new() }
    }

    /// One row: its cells in the order of the headers, and its JSON object.
    pub fn push(&mut self, cells: Vec<String>, object: Value) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
        self.objects.push(object);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The header row and the rows, each column as wide as its widest cell, two spaces
    /// apart. An empty cell shows as `-`, so every row has every column.
    pub fn text(&self) -> String {
        let cells: Vec<Vec<String>> = self.rows.iter().map(|row| row.iter().map(|c| shown(c)).collect()).collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&cells) {
            let last = row.len().saturating_sub(1);
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                out.push_str(cell);
                if i < last {
                    out.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
                }
            }
            out.push('\n');
        }
        out
    }

    pub fn into_json(self) -> Value {
        Value::Array(self.objects)
    }

    /// Prints the table, or with `json` the array.
    pub fn print(self, json: bool) -> Result<(), CliError> {
        if json {
            print_json(&self.into_json())
        } else {
            write_stdout(&self.text())
        }
    }
}

/// A cell as shown: control characters (a tab or line break from a header, say) as spaces,
/// so a row stays one line; nothing at all as `-`.
fn shown(cell: &str) -> String {
    let text: String = cell.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.trim().is_empty() {
        "-".to_string()
    } else {
        text
    }
}

/// One JSON document on one line.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    write_stdout(&format!("{value}\n"))
}

/// Standard output; a reader that went away (`| head`) is not an error.
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::failed(format!("cannot write to standard output: {e}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Listing {
        let mut listing = Listing::new(&["DOMAIN", "POLICY", "CATCH-ALL"]);
        listing.push(
            vec!["xn--bcher-kva.example (bücher.example)".into(), "reject".into(), String::new()],
            json!({"domain": "xn--bcher-kva.example", "policy": "reject", "catch_all": null}),
        );
        listing.push(vec!["a.test".into(), "junk\tx".into(), "c@a.test".into()], json!({"domain": "a.test"}));
        listing
    }

    #[test]
    fn columns_line_up_under_the_header_counting_characters_not_bytes() {
        let text = sample().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "DOMAIN                                  POLICY  CATCH-ALL");
        assert_eq!(lines[1], "xn--bcher-kva.example (bücher.example)  reject  -");
        assert_eq!(lines[2], "a.test                                  junk x  c@a.test");
    }

    #[test]
    fn an_empty_listing_still_has_its_header_and_json_is_an_array() {
        let empty = Listing::new(&["ALIAS", "TARGET"]);
        assert_eq!(empty.text(), "ALIAS  TARGET\n");
        assert_eq!(empty.into_json(), json!([]));
        let objects = sample().into_json();
        assert_eq!(objects[0]["catch_all"], Value::Null);
        assert_eq!(objects[1]["domain"], "a.test");
    }
}
