//! A small reader for BER (X.690), enough to walk a CMS structure as other mail clients
//! write it. `openssl smime -stream`, NSS and others send EnvelopedData in BER with
//! indefinite lengths and constructed OCTET STRINGs (RFC 5652 section 1.3 allows BER for
//! everything but the signed attributes), which a DER-only decoder refuses.
//!
//! Everything is bounds-checked: no input makes it panic, recurse deeper than
//! [`MAX_DEPTH`] or allocate more than the input's size.

use crate::error::{Error, Result};

/// Nesting limit for constructed values; CMS EnvelopedData needs about 10.
pub const MAX_DEPTH: usize = 32;

pub const CLASS_UNIVERSAL: u8 = 0;
pub const CLASS_CONTEXT: u8 = 2;

pub const TAG_INTEGER: u32 = 2;
pub const TAG_OCTET_STRING: u32 = 4;
pub const TAG_OID: u32 = 6;
pub const TAG_SEQUENCE: u32 = 16;
pub const TAG_SET: u32 = 17;

/// One value: its identifier and its contents (for an indefinite length, the contents
/// without the end-of-contents octets).
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub class: u8,
    pub constructed: bool,
    pub number: u32,
    pub contents: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::Malformed(format!("bad BER: {what}"))
}

/// Reads one value from the front of `input`; returns it and what follows.
pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    read_at(input, 0)
}

fn read_at(input: &[u8], depth: usize) -> Result<(Tlv<'_>, &[u8])> {
    if depth > MAX_DEPTH {
        return Err(malformed("nested too deeply"));
    }
    let (&first, mut rest) = input.split_first().ok_or_else(|| malformed("truncated identifier"))?;
    let class = first >> 6;
    let constructed = first & 0x20 != 0;
    let mut number = u32::from(first & 0x1f);
    if number == 0x1f {
        // High-tag-number form (X.690 8.1.2.4): base 128, at most 4 octets here.
        number = 0;
        let mut count = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or_else(|| malformed("truncated tag"))?;
            rest = r;
            count += 1;
            if count > 4 {
                return Err(malformed("tag number too large"));
            }
            number = (number << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&len0, r) = rest.split_first().ok_or_else(|| malformed("truncated length"))?;
    rest = r;
    if len0 == 0x80 {
        // Indefinite length (X.690 8.1.3.6): constructed only, ends with 00 00.
        if !constructed {
            return Err(malformed("indefinite length on a primitive value"));
        }
        let start = rest;
        let mut cursor = rest;
        loop {
            if cursor.len() >= 2 && cursor[0] == 0 && cursor[1] == 0 {
                let used = start.len() - cursor.len();
                let tlv = Tlv { class, constructed, number, contents: &start[..used] };
                return Ok((tlv, &cursor[2..]));
            }
            if cursor.is_empty() {
                return Err(malformed("missing end-of-contents"));
            }
            let (_, after) = read_at(cursor, depth + 1)?;
            cursor = after;
        }
    }
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n > 4 || n > rest.len() {
            return Err(malformed("bad length"));
        }
        let (bytes, r) = rest.split_at(n);
        rest = r;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if len > rest.len() {
        return Err(malformed("value longer than its input"));
    }
    let (contents, after) = rest.split_at(len);
    if constructed {
        // Check the children now, so that walking them later cannot meet a surprise
        // deeper than the limit.
        let mut cursor = contents;
        while !cursor.is_empty() {
            cursor = read_at(cursor, depth + 1)?.1;
        }
    }
    Ok((Tlv { class, constructed, number, contents }, after))
}

impl<'a> Tlv<'a> {
    pub fn is(&self, class: u8, constructed: bool, number: u32) -> bool {
        self.class == class && self.constructed == constructed && self.number == number
    }

    pub fn is_universal(&self, number: u32) -> bool {
        self.class == CLASS_UNIVERSAL && self.number == number
    }

    /// The children of a constructed value, in order.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>> {
        if !self.constructed {
            return Err(malformed("expected a constructed value"));
        }
        let mut out = Vec::new();
        let mut cursor = self.contents;
        while !cursor.is_empty() {
            let (child, rest) = read(cursor)?;
            out.push(child);
            cursor = rest;
        }
        Ok(out)
    }

    /// The octets of an OCTET STRING (or of an implicitly tagged one), primitive or
    /// constructed from OCTET STRING segments (X.690 8.7.3).
    pub fn octets(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.collect_octets(&mut out, 0)?;
        Ok(out)
    }

    fn collect_octets(&self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if !self.constructed {
            out.extend_from_slice(self.contents);
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        for child in self.children()? {
            if !child.is_universal(TAG_OCTET_STRING) {
                return Err(malformed("constructed OCTET STRING with a segment that is not one"));
            }
            child.collect_octets(out, depth + 1)?;
        }
        Ok(())
    }

    /// The value re-encoded with definite lengths (DER's length rules, not its sorting),
    /// to compare with a DER encoding made elsewhere.
    pub fn to_der(self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_der(&mut out, 0)?;
        Ok(out)
    }

    fn write_der(&self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        let contents = if self.constructed {
            let mut inner = Vec::new();
            for child in self.children()? {
                child.write_der(&mut inner, depth + 1)?;
            }
            inner
        } else {
            self.contents.to_vec()
        };
        let first = (self.class << 6) | if self.constructed { 0x20 } else { 0 };
        if self.number < 0x1f {
            // The number is below 31, so it fits the five low bits.
            out.push(first | self.number as u8);
        } else {
            out.push(first | 0x1f);
            let mut groups = Vec::new();
            let mut n = self.number;
            loop {
                groups.push((n & 0x7f) as u8);
                n >>= 7;
                if n == 0 {
                    break;
                }
            }
            for (i, g) in groups.iter().rev().enumerate() {
                out.push(if i + 1 < groups.len() { g | 0x80 } else { *g });
            }
        }
        write_length(out, contents.len());
        out.extend_from_slice(&contents);
        Ok(())
    }
}

fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_and_constructed_octets() {
        // SEQUENCE (indefinite) { [0] constructed (indefinite) { OCTET STRING "ab", OCTET STRING "c" } }
        let ber = [0x30, 0x80, 0xa0, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0];
        let (seq, rest) = read(&ber).unwrap();
        assert!(rest.is_empty());
        assert!(seq.is(CLASS_UNIVERSAL, true, TAG_SEQUENCE));
        let kids = seq.children().unwrap();
        assert_eq!(kids.len(), 1);
        assert!(kids[0].is(CLASS_CONTEXT, true, 0));
        assert_eq!(kids[0].octets().unwrap(), b"abc");
        assert_eq!(seq.to_der().unwrap(), [0x30, 0x09, 0xa0, 0x07, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c']);
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x04],
            &[0x04, 0x80, 0, 0],
            &[0x30, 0x80, 0x04, 0x00],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        // Deep nesting is refused, not a stack overflow.
        let deep: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 10_000).flatten().collect();
        assert!(read(&deep).is_err());
    }

    #[test]
    fn long_lengths_and_high_tags() {
        let mut v = vec![0x04, 0x82, 0x01, 0x00];
        v.extend(std::iter::repeat_n(7, 256));
        let (t, _) = read(&v).unwrap();
        assert_eq!(t.contents.len(), 256);
        assert_eq!(t.to_der().unwrap(), v);
        let high = [0x9f, 0x81, 0x00, 0x01, 0x05];
        let (t, _) = read(&high).unwrap();
        assert_eq!(t.number, 128);
        assert_eq!(t.to_der().unwrap(), high);
    }
}
