//! The Messenger data (SPEC 8.1, 8.4): certificates per address, the directory, this
//! server's own Entity Index changes (with serials) and the entries learnt from peers.
//!
//! The rule every backend applies the same way lives here: which Entity Index changes
//! (and so which serials) an edit of the directory makes.

use std::collections::BTreeSet;

/// A user's certificate as stored (SPEC 8.1: per address, with its validity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    /// Lower case.
    pub address: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Validity (unix seconds), from the certificate.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    pub stored_at: i64,
}

/// A local user's directory details (SPEC 8.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectoryRecord {
    /// Lower case; an account of this server.
    pub address: String,
    pub name: String,
    pub organisation: String,
    pub role: String,
    /// Published IDs, upper case, sorted, no duplicates.
    pub ids: Vec<String>,
    /// Published: visible to BOOK, and its IDs are in the Entity Index.
    pub published: bool,
    pub updated_at: i64,
}

/// Whether an Entity Index entry was added or withdrawn: the wire's own values.
pub use vouchmail_proto::messenger::EntityOp;

/// One change of this server's own entries, with its serial (SPEC 8.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityChangeRow {
    pub serial: i64,
    pub op: EntityOp,
    pub published_id: String,
    pub mailbox: String,
}

/// An entry learnt from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearntEntity {
    pub published_id: String,
    pub mailbox: String,
    /// The peer (a domain) that published it.
    pub peer: String,
    pub learnt_at: i64,
}

/// SPEC 8.4: the binding rule (`vouchmail_proto::messenger::bindings`) reads learnt rows.
impl vouchmail_proto::messenger::bindings::Claim for LearntEntity {
    fn published_id(&self) -> &str {
        &self.published_id
    }
    fn mailbox(&self) -> &str {
        &self.mailbox
    }
    fn learnt_at(&self) -> i64 {
        self.learnt_at
    }
}

/// A server this one pulls ENTITIES from (SPEC 8.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessengerPeer {
    /// The peer's domain, whose home server is asked.
    pub domain: String,
    /// Named in `[messenger] peers` (else: a home server this server talked to).
    pub configured: bool,
    /// The highest serial seen from it.
    pub last_serial: i64,
    pub last_pull: Option<i64>,
    pub last_error: Option<String>,
    /// When it last answered: a verified call or a successful pull.
    pub last_success: Option<i64>,
}

/// What a pull from a peer changes, applied in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerPull {
    pub peer: String,
    /// Entries kept (the peer is the home server of the mailbox's domain).
    pub add: Vec<(String, String)>,
    /// Entries the peer withdrew.
    pub remove: Vec<(String, String)>,
    /// Drop everything learnt from the peer first (it started its serials again).
    pub reset: bool,
    pub last_serial: i64,
    pub at: i64,
}

/// The Entity Index changes an edit of one directory entry makes (SPEC 8.4: "serials for
/// every change, additions and removals"): IDs that stop being published get DEL, IDs
/// that start get ADD; nothing else changes the index.
pub fn entity_changes(
    before: Option<&DirectoryRecord>,
    after: Option<&DirectoryRecord>,
) -> Vec<(EntityOp, String, String)> {
    let published = |r: Option<&DirectoryRecord>| -> BTreeSet<(String, String)> {
        r.filter(|r| r.published)
            .map(|r| r.ids.iter().map(|id| (id.clone(), r.address.clone())).collect())
            .unwrap_or_default()
    };
    let (old, new) = (published(before), published(after));
    let mut out: Vec<(EntityOp, String, String)> =
        old.difference(&new).map(|(id, mailbox)| (EntityOp::Del, id.clone(), mailbox.clone())).collect();
    out.extend(new.difference(&old).map(|(id, mailbox)| (EntityOp::Add, id.clone(), mailbox.clone())));
    out
}

/// SPEC 8.4: a directory edit as stored: its IDs normalised ([`normalize_ids`]), whether
/// it is published kept from the entry `before` it (only publishing changes that), and
/// the time of the edit.
pub fn edited_entry(mut record: DirectoryRecord, before: Option<&DirectoryRecord>, now: i64) -> DirectoryRecord {
    record.ids = normalize_ids(&record.ids);
    record.published = before.is_some_and(|b| b.published);
    record.updated_at = now;
    record
}

/// SPEC 8.4 (`250 <highest serial>` of ENTITIES): when `limit` cut the list of changes,
/// the serial of the last one listed, so the peer asks again from there; otherwise None,
/// and the highest serial there is (as of the same read) is reported.
pub fn serial_of_cut_list(changes: &[EntityChangeRow], limit: usize) -> Option<i64> {
    changes.last().filter(|_| changes.len() >= limit).map(|last| last.serial)
}

/// Published IDs as stored: upper case, sorted, unique.
pub fn normalize_ids(ids: &[String]) -> Vec<String> {
    let set: BTreeSet<String> =
        ids.iter().map(|id| id.trim().to_ascii_uppercase()).filter(|id| !id.is_empty()).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ids: &[&str], published: bool) -> DirectoryRecord {
        DirectoryRecord {
            address: "abc@lrsupport.test".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            published,
            ..Default::default()
        }
    }

    #[test]
    fn changes_follow_publication_and_ids() {
        let a = "abc@lrsupport.test".to_string();
        assert_eq!(entity_changes(None, Some(&record(&["X"], false))), vec![]);
        assert_eq!(
            entity_changes(Some(&record(&["X"], false)), Some(&record(&["X"], true))),
            vec![(EntityOp::Add, "X".into(), a.clone())]
        );
        assert_eq!(
            entity_changes(Some(&record(&["X", "Y"], true)), Some(&record(&["Y", "Z"], true))),
            vec![(EntityOp::Del, "X".into(), a.clone()), (EntityOp::Add, "Z".into(), a.clone())]
        );
        assert_eq!(
            entity_changes(Some(&record(&["Y"], true)), Some(&record(&["Y"], false))),
            vec![(EntityOp::Del, "Y".into(), a)]
        );
        assert_eq!(normalize_ids(&["b".into(), " a ".into(), "B".into(), "".into()]), vec!["A", "B"]);
    }

    #[test]
    fn an_edit_keeps_publication_and_a_cut_list_reports_its_last_serial() {
        let edit = DirectoryRecord { published: true, updated_at: 1, ..record(&["y", "x", "Y"], true) };
        let stored = edited_entry(edit.clone(), None, 50);
        assert_eq!(
            (stored.ids.clone(), stored.published, stored.updated_at),
            (vec!["X".into(), "Y".into()], false, 50)
        );
        let stored = edited_entry(edit, Some(&record(&[], true)), 60);
        assert!(stored.published);
        let row = |serial| EntityChangeRow { serial, op: EntityOp::Add, published_id: "X".into(), mailbox: "m".into() };
        assert_eq!(serial_of_cut_list(&[row(3), row(7)], 2), Some(7));
        assert_eq!(serial_of_cut_list(&[row(3), row(7)], 3), None);
        assert_eq!(serial_of_cut_list(&[], 0), None);
    }
}
