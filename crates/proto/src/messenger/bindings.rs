//! Who a published ID belongs to (SPEC 8.4), as a pure rule over what is known: the local
//! directory always; else the first mailbox a peer published it for (a later claim by
//! another mailbox never replaces that binding, whatever it re-sends). The claims on an ID
//! that are not its binding are a [`Contest`] for the operator to settle.
//!
//! Generic over the learnt entry (the server passes its store's rows), so that the rule is
//! written once, tested here and fuzzed without a store.

use std::collections::BTreeMap;

/// What an ID's binding is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound<T> {
    /// This server's own published directory entry, by mailbox.
    Local(String),
    /// The first mailbox a peer published it for.
    Learnt(T),
}

/// A published ID claimed for more than one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contest<T> {
    pub published_id: String,
    /// What CERT by the ID answers with.
    pub bound: Bound<T>,
    /// The other mailboxes claimed for it, first learnt first.
    pub claims: Vec<T>,
}

/// What the rule needs of a learnt entry.
pub trait Claim {
    fn published_id(&self) -> &str;
    fn mailbox(&self) -> &str;
    /// When it was first learnt (seconds).
    fn learnt_at(&self) -> i64;
}

impl<T: Claim> Bound<T> {
    pub fn mailbox(&self) -> &str {
        match self {
            Bound::Local(mailbox) => mailbox,
            Bound::Learnt(entry) => entry.mailbox(),
        }
    }
}

/// First learnt first; ties by mailbox, so that the answer never depends on the order the
/// entries came in.
fn learnt_order<T: Claim>(a: &T, b: &T) -> std::cmp::Ordering {
    (a.learnt_at(), a.mailbox()).cmp(&(b.learnt_at(), b.mailbox()))
}

/// The learnt entry an ID is bound to, among `entries` learnt for it (SPEC 8.4: the first
/// mailbox it was learnt for), when the local directory does not publish it.
pub fn first_learnt<T: Claim>(entries: &[T]) -> Option<&T> {
    entries.iter().min_by(|a, b| learnt_order(*a, *b))
}

/// Every contested ID, by ID: `local` maps this server's published IDs to their mailboxes;
/// `learnt` is every entry learnt from peers, in any order. The same mailbox learnt from
/// several peers is one binding, compared without regard to case.
pub fn contests<T: Claim + Clone>(local: &BTreeMap<String, String>, learnt: Vec<T>) -> Vec<Contest<T>> {
    let mut by_id: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for entry in learnt {
        by_id.entry(entry.published_id().to_string()).or_default().push(entry);
    }
    let mut found = Vec::new();
    for (id, mut entries) in by_id {
        entries.sort_by(learnt_order);
        let bound = match (local.get(&id), entries.first()) {
            (Some(mailbox), _) => Bound::Local(mailbox.clone()),
            (None, Some(first)) => Bound::Learnt(first.clone()),
            (None, None) => continue,
        };
        let claims: Vec<T> =
            entries.into_iter().filter(|e| !e.mailbox().eq_ignore_ascii_case(bound.mailbox())).collect();
        if !claims.is_empty() {
            found.push(Contest { published_id: id, bound, claims });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Entry(&'static str, &'static str, i64);

    impl Claim for Entry {
        fn published_id(&self) -> &str {
            self.0
        }
        fn mailbox(&self) -> &str {
            self.1
        }
        fn learnt_at(&self) -> i64 {
            self.2
        }
    }

    #[test]
    fn the_first_learnt_binding_wins_and_later_claims_are_contests() {
        let learnt = vec![
            Entry("1234567F", "aaa@rogue.test", 20),
            Entry("1234567F", "abc555@lrsupport.test", 10),
            Entry("1234567F", "ABC555@lrsupport.test", 30),
            Entry("P1", "ann@peer.test", 5),
        ];
        let found = contests(&BTreeMap::new(), learnt);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].bound, Bound::Learnt(Entry("1234567F", "abc555@lrsupport.test", 10)));
        assert_eq!(found[0].claims, [Entry("1234567F", "aaa@rogue.test", 20)]);
    }

    #[test]
    fn the_local_directory_always_wins() {
        let local = BTreeMap::from([("P1".to_string(), "doc@galkam.test".to_string())]);
        let found = contests(&local, vec![Entry("P1", "ann@peer.test", 1)]);
        assert_eq!(found[0].bound, Bound::<Entry>::Local("doc@galkam.test".into()));
        assert_eq!(found[0].claims, [Entry("P1", "ann@peer.test", 1)]);
        assert!(contests(&local, vec![Entry("P1", "Doc@galkam.test", 1)]).is_empty());
    }
}
