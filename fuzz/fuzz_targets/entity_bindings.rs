//! The Entity Index binding rule (SPEC 8.4) on arbitrary learnt entries, as a peer that
//! publishes and re-sends whatever it likes would make them. Checked: no panic; the answer
//! does not depend on the order the entries come in; the local directory always binds its
//! IDs; otherwise the first learnt entry binds (no later claim replaces it); every other
//! mailbox claimed for an ID is listed as a claim, and the bound one never is.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::messenger::bindings::{contests, Bound, Claim};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    mailbox: String,
    at: i64,
}

impl Claim for Entry {
    fn published_id(&self) -> &str {
        &self.id
    }
    fn mailbox(&self) -> &str {
        &self.mailbox
    }
    fn learnt_at(&self) -> i64 {
        self.at
    }
}

const IDS: [&str; 4] = ["1234567F", "P1", "P2", "X"];
const MAILBOXES: [&str; 5] =
    ["abc555@lrsupport.test", "ABC555@lrsupport.test", "aaa@rogue.test", "ann@peer.test", "b@x.test"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut local = BTreeMap::new();
    for (n, id) in IDS.iter().enumerate() {
        if flags & (1 << n) != 0 {
            local.insert(id.to_string(), MAILBOXES[(flags as usize >> 4) % MAILBOXES.len()].to_string());
        }
    }
    // Each entry: three octets (ID, mailbox, time), at most 64 entries.
    let entries: Vec<Entry> = rest
        .chunks_exact(3)
        .take(64)
        .map(|c| Entry {
            id: IDS[c[0] as usize % IDS.len()].to_string(),
            mailbox: MAILBOXES[c[1] as usize % MAILBOXES.len()].to_string(),
            at: i64::from(c[2] % 8),
        })
        .collect();
    let found = contests(&local, entries.clone());
    let mut reversed = entries.clone();
    reversed.reverse();
    assert_eq!(contests(&local, reversed), found, "the order of the entries changed the answer");

    for id in IDS {
        let of_id: Vec<&Entry> = entries.iter().filter(|e| e.id == id).collect();
        let contest = found.iter().find(|c| c.published_id == id);
        let Some(first) = of_id.iter().min_by(|a, b| (a.at, &a.mailbox).cmp(&(b.at, &b.mailbox))) else {
            assert!(contest.is_none(), "{id}: a contest with no entry");
            continue;
        };
        let bound = local.get(id).cloned().unwrap_or_else(|| first.mailbox.clone());
        let others: Vec<&&Entry> = of_id.iter().filter(|e| !e.mailbox.eq_ignore_ascii_case(&bound)).collect();
        match contest {
            None => assert!(others.is_empty(), "{id}: claims {others:?} against {bound} not listed"),
            Some(contest) => {
                match &contest.bound {
                    Bound::Local(mailbox) => assert_eq!(Some(mailbox), local.get(id)),
                    Bound::Learnt(entry) => {
                        assert!(!local.contains_key(id), "{id}: a learnt binding over the local directory");
                        assert_eq!(entry, *first, "{id}: a later claim became the binding");
                    }
                }
                assert_eq!(contest.claims.len(), others.len(), "{id}: claims missing or extra");
                assert!(contest.claims.iter().all(|c| !c.mailbox.eq_ignore_ascii_case(&bound)));
            }
        }
    }
});
