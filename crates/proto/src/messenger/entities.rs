//! The Entity Index change lines of `ENTITIES` (SPEC 8.4):
//!
//! ```text
//! 250-<serial> ADD <published-id> <mailbox>
//! 250-<serial> DEL <published-id> <mailbox>
//! 250 <highest serial>
//! ```
//!
//! Written by the answering server ([`super::replies::entities`]) and read back by the
//! pulling one ([`parse_entities_reply`]); both sides use the one line format here.

use super::error::ParseError;
use std::fmt;

use super::command::PublishedId;
use crate::smtp::address::Address;

/// Whether an entry was published or withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityOp {
    Add,
    Del,
}

impl EntityOp {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityOp::Add => "ADD",
            EntityOp::Del => "DEL",
        }
    }

    pub fn parse(text: &str) -> Option<EntityOp> {
        match text {
            "ADD" => Some(EntityOp::Add),
            "DEL" => Some(EntityOp::Del),
            _ => None,
        }
    }
}

/// One change of a server's own Entity Index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityChange {
    pub serial: u64,
    pub op: EntityOp,
    pub id: PublishedId,
    pub mailbox: Address,
}

impl EntityChange {
    /// The line's text after `250-`.
    pub fn to_line(&self) -> String {
        format!("{} {} {} {}", self.serial, self.op.as_str(), self.id, self.mailbox)
    }

    /// Parses `<serial> ADD|DEL <published-id> <mailbox>`: exactly four fields, one space
    /// apart, serial in decimal.
    pub fn parse_line(line: &str) -> Result<EntityChange, ParseError> {
        let mut fields = line.split(' ');
        let (Some(serial), Some(op), Some(id), Some(mailbox), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError::new(format!("not four fields: {}", clip(line))));
        };
        Ok(EntityChange {
            serial: parse_serial(serial).ok_or_else(|| ParseError::new(format!("bad serial: {}", clip(serial))))?,
            op: EntityOp::parse(op).ok_or_else(|| ParseError::new(format!("bad operation: {}", clip(op))))?,
            id: PublishedId::parse(id).ok_or_else(|| ParseError::new(format!("bad published ID: {}", clip(id))))?,
            mailbox: Address::parse(mailbox)
                .map_err(|e| ParseError::new(format!("bad mailbox {}: {e}", clip(mailbox))))?,
        })
    }
}

impl fmt::Display for EntityChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// A decimal serial without sign or leading spaces.
pub fn parse_serial(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Reads the text lines of a `250` ENTITIES reply (every line after its `250-`/`250 `):
/// the changes, in ascending serial order, and the highest serial of the last line. Any
/// line out of shape, serials not ascending, or a change above the highest serial makes
/// the whole reply unusable.
pub fn parse_entities_reply(lines: &[String]) -> Result<(Vec<EntityChange>, u64), ParseError> {
    let Some((last, changes)) = lines.split_last() else {
        return Err(ParseError::new("empty reply"));
    };
    let highest = parse_serial(last).ok_or_else(|| ParseError::new(format!("bad highest serial: {}", clip(last))))?;
    let mut out = Vec::with_capacity(changes.len());
    let mut previous = 0u64;
    for line in changes {
        let change = EntityChange::parse_line(line)?;
        if change.serial <= previous && !out.is_empty() {
            return Err(ParseError::new(format!("serials not ascending at {}", change.serial)));
        }
        if change.serial > highest {
            return Err(ParseError::new(format!("serial {} above the highest {highest}", change.serial)));
        }
        previous = change.serial;
        out.push(change);
    }
    Ok((out, highest))
}

fn clip(text: &str) -> String {
    text.chars().take(80).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(serial: u64, op: EntityOp, id: &str, mailbox: &str) -> EntityChange {
        EntityChange { serial, op, id: PublishedId::parse(id).unwrap(), mailbox: Address::parse(mailbox).unwrap() }
    }

    #[test]
    fn lines_round_trip() {
        let add = change(7, EntityOp::Add, "1234567F", "abc555@lrsupport.test");
        assert_eq!(add.to_line(), "7 ADD 1234567F abc555@lrsupport.test");
        assert_eq!(EntityChange::parse_line(&add.to_line()).unwrap(), add);
        let del = change(8, EntityOp::Del, "1234567F", "abc555@lrsupport.test");
        assert_eq!(EntityChange::parse_line("8 DEL 1234567f abc555@lrsupport.test").unwrap(), del);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "",
            "7 ADD 1234567F",
            "7 ADD 1234567F a@b.test extra",
            "7  ADD 1234567F a@b.test",
            "-7 ADD 1234567F a@b.test",
            "7 add 1234567F a@b.test",
            "7 PUT 1234567F a@b.test",
            "7 ADD 12@34 a@b.test",
            "7 ADD 1234567F not-an-address",
        ] {
            assert!(EntityChange::parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whole_replies() {
        let lines: Vec<String> =
            ["3 ADD A1 a@x.test", "5 DEL A1 a@x.test", "9"].iter().map(|s| s.to_string()).collect();
        let (changes, highest) = parse_entities_reply(&lines).unwrap();
        assert_eq!(highest, 9);
        assert_eq!(changes.len(), 2);
        assert_eq!(parse_entities_reply(&["0".to_string()]).unwrap(), (Vec::new(), 0));
        let unordered: Vec<String> =
            ["5 ADD A1 a@x.test", "3 ADD A2 a@x.test", "9"].iter().map(|s| s.to_string()).collect();
        assert!(parse_entities_reply(&unordered).is_err());
        let above: Vec<String> = ["10 ADD A1 a@x.test", "9"].iter().map(|s| s.to_string()).collect();
        assert!(parse_entities_reply(&above).is_err());
        assert!(parse_entities_reply(&[]).is_err());
        assert!(parse_entities_reply(&["nine".to_string()]).is_err());
    }
}
