//! The tokens of IMAP commands (RFC 9051 4 and 9): atoms, numbers, quoted strings and
//! literals, read from one complete command whose literals are inline (`{3}` CRLF `abc`,
//! as [`super::CommandReader`] assembles it).

use std::borrow::Cow;

use crate::imap::types::{is_astring_char, is_atom_char};

/// What is wrong, as the text of a BAD response.
pub type SyntaxError = Cow<'static, str>;

/// Largest literal the lexer reads when called on its own (RFC 9051 9 `number64`).
const MAX_NUMBER64: u64 = i64::MAX as u64;

/// A position in one command.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

/// Which literal forms a string may take at this position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// `{n}` and `{n+}`.
    Plain,
    /// Also `~{n}` (RFC 9051 4.3, literal8), which only APPEND takes.
    AllowLiteral8,
}

impl<'a> Cursor<'a> {
    pub fn new(input: &'a [u8]) -> Cursor<'a> {
        Cursor { input, pos: 0 }
    }

    pub fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    pub fn is_at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.input[self.pos.min(self.input.len())..]
    }

    /// Skips `n` bytes.
    pub fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.input.len());
    }

    /// Consumes `b` if it is next.
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, b: u8, what: &'static str) -> Result<(), SyntaxError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(what.into())
        }
    }

    /// One SP (RFC 9051 9: exactly one space separates arguments).
    pub fn space(&mut self) -> Result<(), SyntaxError> {
        self.expect(b' ', "Expected a space")
    }

    /// Nothing may follow.
    pub fn end(&self) -> Result<(), SyntaxError> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err("Unexpected text after the arguments".into())
        }
    }

    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// RFC 9051 9 `atom`.
    pub fn atom(&mut self) -> Result<&'a str, SyntaxError> {
        let atom = self.take_while(is_atom_char);
        if atom.is_empty() {
            return Err("Expected an atom".into());
        }
        // Atom chars are ASCII.
        std::str::from_utf8(atom).map_err(|_| "Expected an atom".into())
    }

    /// A keyword made of letters, digits, `.`, `-` and `$`, such as a command or fetch
    /// attribute name: stops before `[` and `<`, which are atom chars.
    pub fn word(&mut self) -> Result<&'a str, SyntaxError> {
        let word = self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'$' | b'_'));
        if word.is_empty() {
            return Err("Expected a keyword".into());
        }
        std::str::from_utf8(word).map_err(|_| "Expected a keyword".into())
    }

    /// Whether the next word is `keyword` (case-insensitive); consumes it if so.
    pub fn eat_keyword(&mut self, keyword: &str) -> bool {
        let end = self.pos + keyword.len();
        let matches = self.input.get(self.pos..end).is_some_and(|w| w.eq_ignore_ascii_case(keyword.as_bytes()))
            && !self.input.get(end).is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'.');
        if matches {
            self.pos = end;
        }
        matches
    }

    /// RFC 9051 9 `number64`: digits, at most 2^63-1.
    pub fn number64(&mut self) -> Result<u64, SyntaxError> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err("Expected a number".into());
        }
        let mut value: u64 = 0;
        for &d in digits {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .filter(|&v| v <= MAX_NUMBER64)
                .ok_or("Number too large")?;
        }
        Ok(value)
    }

    /// RFC 9051 9 `number`: an unsigned 32-bit integer.
    pub fn number(&mut self) -> Result<u32, SyntaxError> {
        let value = self.number64()?;
        u32::try_from(value).map_err(|_| "Number too large".into())
    }

    /// RFC 9051 9 `nz-number`.
    pub fn nz_number(&mut self) -> Result<u32, SyntaxError> {
        match self.number()? {
            0 => Err("Zero is not a valid number here".into()),
            n => Ok(n),
        }
    }

    /// RFC 9051 9 `quoted`: `"` with `\"` and `\\` escapes, no CR or LF; 8-bit UTF-8 is
    /// accepted (RFC 9051 `QUOTED-CHAR` includes UTF8-2..4).
    pub fn quoted(&mut self) -> Result<Vec<u8>, SyntaxError> {
        self.expect(b'"', "Expected a quoted string")?;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err("Unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            value.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("Only \\\" and \\\\ may be escaped in a quoted string".into()),
                    }
                }
                Some(b'\r' | b'\n' | 0) => return Err("Quoted strings cannot hold CR, LF or NUL".into()),
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// RFC 9051 4.3 `literal` (`{n}` CRLF data, `{n+}` RFC 7888) and, where allowed,
    /// `literal8` (`~{n}`). Returns the data and whether it was a literal8.
    pub fn literal(&mut self, kind: LiteralKind) -> Result<(&'a [u8], bool), SyntaxError> {
        let binary = self.eat(b'~');
        if binary && kind != LiteralKind::AllowLiteral8 {
            return Err("A literal8 (~{n}) is not allowed here".into());
        }
        self.expect(b'{', "Expected a literal")?;
        let length = self.number64()?;
        self.eat(b'+');
        self.expect(b'}', "Malformed literal length")?;
        self.expect(b'\r', "Literal length must end the line")?;
        self.expect(b'\n', "Literal length must end the line")?;
        let length = usize::try_from(length).map_err(|_| "Literal too large")?;
        let end = self.pos.checked_add(length).filter(|&end| end <= self.input.len()).ok_or("Literal truncated")?;
        let data = &self.input[self.pos..end];
        self.pos = end;
        // RFC 9051 4.3: a literal (unlike a literal8) must not contain NUL.
        if !binary && data.contains(&0) {
            return Err("A literal cannot contain NUL; use literal8".into());
        }
        Ok((data, binary))
    }

    /// RFC 9051 9 `string`: quoted or literal.
    pub fn string(&mut self) -> Result<Cow<'a, [u8]>, SyntaxError> {
        match self.peek() {
            Some(b'"') => self.quoted().map(Cow::Owned),
            Some(b'{') => self.literal(LiteralKind::Plain).map(|(data, _)| Cow::Borrowed(data)),
            _ => Err("Expected a string".into()),
        }
    }

    /// RFC 9051 9 `astring`: an atom (with `]`) or a string.
    pub fn astring(&mut self) -> Result<Cow<'a, [u8]>, SyntaxError> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let atom = self.take_while(is_astring_char);
                if atom.is_empty() {
                    Err("Expected an atom or string".into())
                } else {
                    Ok(Cow::Borrowed(atom))
                }
            }
        }
    }

    /// An astring that must be UTF-8.
    pub fn astring_utf8(&mut self, what: &'static str) -> Result<String, SyntaxError> {
        let raw = self.astring()?;
        String::from_utf8(raw.into_owned()).map_err(|_| format!("{what} is not UTF-8").into())
    }

    /// RFC 9051 9 `nstring` with `NIL`: None for NIL.
    pub fn nstring(&mut self) -> Result<Option<Cow<'a, [u8]>>, SyntaxError> {
        if self.eat_keyword("NIL") {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// RFC 9051 9 `list-mailbox`: list chars (atom chars, `%`, `*`, `]`) or a string.
    pub fn list_mailbox(&mut self) -> Result<Cow<'a, [u8]>, SyntaxError> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let chars = self.take_while(|b| is_astring_char(b) || b == b'%' || b == b'*');
                if chars.is_empty() {
                    Err("Expected a mailbox pattern".into())
                } else {
                    Ok(Cow::Borrowed(chars))
                }
            }
        }
    }

    /// Reads `(` item *(SP item) `)`; `allow_empty` accepts `()`.
    pub fn parenthesized<T>(
        &mut self,
        allow_empty: bool,
        mut item: impl FnMut(&mut Cursor<'a>) -> Result<T, SyntaxError>,
    ) -> Result<Vec<T>, SyntaxError> {
        self.expect(b'(', "Expected '('")?;
        let mut items = Vec::new();
        if self.eat(b')') {
            return if allow_empty { Ok(items) } else { Err("Empty list".into()) };
        }
        loop {
            items.push(item(self)?);
            if self.eat(b')') {
                return Ok(items);
            }
            self.space()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut c = Cursor::new(b"\"a\\\"b\" {3}\r\nx y atom] ~{1}\r\nz");
        assert_eq!(c.astring().unwrap().as_ref(), b"a\"b");
        c.space().unwrap();
        assert_eq!(c.astring().unwrap().as_ref(), b"x y");
        c.space().unwrap();
        assert_eq!(c.astring().unwrap().as_ref(), b"atom]");
        c.space().unwrap();
        assert!(c.clone().literal(LiteralKind::Plain).is_err());
        assert_eq!(c.literal(LiteralKind::AllowLiteral8).unwrap(), (&b"z"[..], true));
        c.end().unwrap();
    }

    #[test]
    fn bad_tokens() {
        assert!(Cursor::new(b"\"abc").quoted().is_err());
        assert!(Cursor::new(b"\"a\\nb\"").quoted().is_err());
        assert!(Cursor::new(b"{5}\r\nabc").literal(LiteralKind::Plain).is_err());
        assert!(Cursor::new(b"{99999999999999999999}\r\n").literal(LiteralKind::Plain).is_err());
        assert!(Cursor::new(b"{1}\r\n\0").literal(LiteralKind::Plain).is_err());
        assert!(Cursor::new(b"4294967296").number().is_err());
        assert!(Cursor::new(b"0").nz_number().is_err());
    }
}
