//! FederationStore (SPEC 8.1, 8.4): certificates, the directory and the serials of this
//! server's Entity Index changes (a peer's cursor, while several nodes edit), and what
//! peers published.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_store::{
    AccountStore, DirectoryRecord, EntityOp, FederationStore, NewAccount, PeerPull, SenderPolicy, StoreError,
    StoredCertificate,
};

on_every_backend!(store: certificates_per_account, directory_edits_make_serials, removing_an_account_withdraws_its_entry);
on_every_backend!(federation: peers_and_what_they_published, peers_are_noted_forward_only);
on_every_backend!(two_nodes: serials_are_a_cursor_while_two_nodes_edit, an_id_claimed_on_two_nodes_at_once_goes_to_one);

/// The concerns these tests use: accounts to publish, and the federation data.
pub trait Federated: AccountStore + FederationStore {}
impl<T: AccountStore + FederationStore + ?Sized> Federated for T {}

const ABC: &str = "abc555@lrsupport.test";

async fn setup<S: AccountStore + ?Sized>(store: &S, addresses: &[&str]) {
    store.add_domain("lrsupport.test", SenderPolicy::REJECT).await.unwrap();
    for address in addresses {
        let account = NewAccount { address: address.to_string(), secrets: Secrets::default(), quota_bytes: 0 };
        store.add_account(account).await.unwrap();
    }
}

fn entry(address: &str, ids: &[&str]) -> DirectoryRecord {
    DirectoryRecord {
        address: address.into(),
        name: "Ann Brown".into(),
        organisation: "LR Support".into(),
        role: "GP".into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ops(changes: &[vouchmail_store::EntityChangeRow]) -> Vec<(EntityOp, &str, &str)> {
    changes.iter().map(|c| (c.op, c.published_id.as_str(), c.mailbox.as_str())).collect()
}

async fn certificates_per_account<S: Federated + ?Sized>(store: &S) {
    setup(store, &[ABC, "other@lrsupport.test"]).await;
    let cert = StoredCertificate {
        address: "ABC555@lrsupport.test".into(),
        der: vec![1, 2, 3],
        not_before: 10,
        not_after: 20,
        fingerprint: "ab".into(),
        stored_at: 5,
    };
    store.put_certificate(cert.clone()).await.unwrap();
    let stored = store.get_certificate("abc555@LRSUPPORT.test").await.unwrap().unwrap();
    assert_eq!(stored, StoredCertificate { address: ABC.into(), ..cert.clone() });
    // A new one replaces it.
    let renewed =
        StoredCertificate { der: vec![4, 5], not_after: 30, fingerprint: "cd".into(), stored_at: 6, ..cert.clone() };
    store.put_certificate(renewed).await.unwrap();
    let stored = store.get_certificate(ABC).await.unwrap().unwrap();
    assert_eq!((stored.der.as_slice(), stored.not_after, stored.fingerprint.as_str()), (&[4u8, 5][..], 30, "cd"));
    let stranger = StoredCertificate { address: "nobody@lrsupport.test".into(), ..cert.clone() };
    assert!(matches!(store.put_certificate(stranger).await, Err(StoreError::NotFound(_))));
    store.put_certificate(StoredCertificate { address: "other@lrsupport.test".into(), ..cert }).await.unwrap();
    let listed: Vec<String> = store.list_certificates().await.unwrap().into_iter().map(|c| c.address).collect();
    assert_eq!(listed, [ABC, "other@lrsupport.test"]);
    store.remove_certificate("ABC555@lrsupport.test").await.unwrap();
    assert!(matches!(store.remove_certificate(ABC).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.get_certificate(ABC).await.unwrap(), None);
    assert_eq!(store.list_certificates().await.unwrap().len(), 1);
}

/// SPEC 8.4: unpublished entries make no serials; publishing, ID edits and withdrawal do.
async fn directory_edits_make_serials<S: Federated + ?Sized>(store: &S) {
    setup(store, &[ABC, "other@lrsupport.test"]).await;
    assert!(matches!(
        store.set_directory_entry(entry("nobody@lrsupport.test", &["N1"])).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.set_directory_published(ABC, true).await, Err(StoreError::NotFound(_))));
    store.set_directory_entry(entry("ABC555@lrsupport.test", &["1234567f", " x9 ", "X9"])).await.unwrap();
    let stored = store.get_directory_entry(ABC).await.unwrap().unwrap();
    assert_eq!((stored.ids.clone(), stored.published), (vec!["1234567F".to_string(), "X9".to_string()], false));
    assert_eq!(
        (stored.name.as_str(), stored.organisation.as_str(), stored.role.as_str()),
        ("Ann Brown", "LR Support", "GP")
    );
    assert_eq!(store.entity_changes_since(0, 100).await.unwrap(), (vec![], 0));
    assert_eq!(store.directory_mailbox_for_id("1234567F").await.unwrap(), None, "not published yet");
    store.set_directory_published("abc555@lrsupport.test", true).await.unwrap();
    store.set_directory_published(ABC, true).await.unwrap();
    assert_eq!(store.directory_mailbox_for_id("1234567f").await.unwrap().as_deref(), Some(ABC));
    let (changes, highest) = store.entity_changes_since(0, 100).await.unwrap();
    assert_eq!(ops(&changes), [(EntityOp::Add, "1234567F", ABC), (EntityOp::Add, "X9", ABC)], "once");
    assert_eq!(highest, changes[1].serial);
    assert!(changes[0].serial < changes[1].serial);
    // Editing a published entry: one ID goes, one comes; it stays published.
    let mut edited = entry(ABC, &["X9", "Z1"]);
    edited.published = false;
    edited.name = "Ann Green".into();
    store.set_directory_entry(edited).await.unwrap();
    let stored = store.get_directory_entry(ABC).await.unwrap().unwrap();
    assert!(stored.published, "an edit keeps whether it is published");
    assert_eq!(stored.name, "Ann Green");
    let (changes, after) = store.entity_changes_since(highest, 100).await.unwrap();
    assert_eq!(ops(&changes), [(EntityOp::Del, "1234567F", ABC), (EntityOp::Add, "Z1", ABC)]);
    assert_eq!(after, changes[1].serial);
    assert_eq!(store.entity_changes_since(after, 100).await.unwrap(), (vec![], after));
    store.set_directory_published(ABC, false).await.unwrap();
    let (changes, highest) = store.entity_changes_since(after, 100).await.unwrap();
    assert_eq!(ops(&changes), [(EntityOp::Del, "X9", ABC), (EntityOp::Del, "Z1", ABC)]);
    assert_eq!(highest, changes[1].serial);
    // Only the latest change per entry is listed; a cut list reports its last serial.
    let (all, _) = store.entity_changes_since(0, 100).await.unwrap();
    assert_eq!(ops(&all), [(EntityOp::Del, "1234567F", ABC), (EntityOp::Del, "X9", ABC), (EntityOp::Del, "Z1", ABC)]);
    let (changes, cut) = store.entity_changes_since(0, 1).await.unwrap();
    assert_eq!((changes.len(), cut), (1, changes[0].serial));
    assert_eq!(changes[0], all[0]);
    // An ID names one local mailbox.
    assert!(matches!(
        store.set_directory_entry(entry("other@lrsupport.test", &["x9"])).await,
        Err(StoreError::Conflict(_))
    ));
    store.set_directory_entry(entry("other@lrsupport.test", &["O1"])).await.unwrap();
    let listed: Vec<(String, Vec<String>)> =
        store.list_directory().await.unwrap().into_iter().map(|r| (r.address, r.ids)).collect();
    assert_eq!(
        listed,
        [
            (ABC.to_string(), vec!["X9".to_string(), "Z1".to_string()]),
            ("other@lrsupport.test".to_string(), vec!["O1".to_string()])
        ]
    );
    // An entry with no IDs is listed too.
    store.set_directory_entry(entry("other@lrsupport.test", &[])).await.unwrap();
    assert_eq!(store.get_directory_entry("other@lrsupport.test").await.unwrap().unwrap().ids, Vec::<String>::new());
    assert_eq!(store.list_directory().await.unwrap().len(), 2);
}

/// SPEC 8.4: a removed account takes its certificate and entry with it, and peers are told.
async fn removing_an_account_withdraws_its_entry<S: Federated + ?Sized>(store: &S) {
    setup(store, &[ABC]).await;
    store.set_directory_entry(entry(ABC, &["P1", "P2"])).await.unwrap();
    store.set_directory_published(ABC, true).await.unwrap();
    let cert = StoredCertificate {
        address: ABC.into(),
        der: vec![1],
        not_before: 0,
        not_after: 1,
        fingerprint: "f".into(),
        stored_at: 0,
    };
    store.put_certificate(cert).await.unwrap();
    let (_, before) = store.entity_changes_since(0, 100).await.unwrap();
    store.remove_account(ABC).await.unwrap();
    let (changes, after) = store.entity_changes_since(before, 100).await.unwrap();
    assert_eq!(ops(&changes), [(EntityOp::Del, "P1", ABC), (EntityOp::Del, "P2", ABC)]);
    assert_eq!(after, changes[1].serial);
    assert!(store.list_directory().await.unwrap().is_empty());
    assert_eq!(store.get_certificate(ABC).await.unwrap(), None);
    assert_eq!(store.directory_mailbox_for_id("P1").await.unwrap(), None);
    // The ID is free again.
    let account = NewAccount { address: "new@lrsupport.test".into(), secrets: Secrets::default(), quota_bytes: 0 };
    store.add_account(account).await.unwrap();
    store.set_directory_entry(entry("new@lrsupport.test", &["P1"])).await.unwrap();
}

async fn peers_and_what_they_published(store: &dyn FederationStore) {
    store.note_messenger_peer("Galkam.test", true, None).await.unwrap();
    let pull = PeerPull {
        peer: "GALKAM.test".into(),
        add: vec![("G1".into(), "glen@galkam.test".into()), ("G2".into(), "gus@galkam.test".into())],
        last_serial: 7,
        at: 100,
        ..Default::default()
    };
    store.apply_peer_pull(pull.clone()).await.unwrap();
    store.apply_peer_pull(PeerPull { at: 150, ..pull }).await.unwrap();
    let learnt = store.learnt_entities_for_id("g1").await.unwrap();
    assert_eq!(
        learnt.iter().map(|e| (e.mailbox.as_str(), e.peer.as_str(), e.learnt_at)).collect::<Vec<_>>(),
        [("glen@galkam.test", "galkam.test", 100)],
        "learnt once, when first"
    );
    let peers = store.list_messenger_peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    let peer = &peers[0];
    assert_eq!((peer.domain.as_str(), peer.configured, peer.last_serial), ("galkam.test", true, 7));
    assert_eq!((peer.last_pull, peer.last_error.as_deref(), peer.last_success), (Some(150), None, Some(150)));
    // Another peer claims G1 for another mailbox: both are kept (SPEC 8.4: a conflict).
    let other = PeerPull {
        peer: "other.test".into(),
        add: vec![("G1".into(), "x@other.test".into())],
        last_serial: 3,
        at: 120,
        ..Default::default()
    };
    store.apply_peer_pull(other).await.unwrap();
    assert_eq!(store.learnt_entities_for_id("G1").await.unwrap().len(), 2);
    assert_eq!(store.count_learnt_for_peer("GALKAM.TEST").await.unwrap(), 2);
    assert_eq!(store.count_learnt_for_peer("other.test").await.unwrap(), 1);
    let listed: Vec<(String, String)> =
        store.list_learnt_entities().await.unwrap().into_iter().map(|e| (e.published_id, e.peer)).collect();
    let expected = [("G1", "galkam.test"), ("G1", "other.test"), ("G2", "galkam.test")];
    assert_eq!(listed, expected.map(|(i, p)| (i.to_string(), p.to_string())));
    // The peer withdraws G1.
    let withdraw = PeerPull {
        peer: "galkam.test".into(),
        remove: vec![("G1".into(), "glen@galkam.test".into())],
        last_serial: 8,
        at: 200,
        ..Default::default()
    };
    store.apply_peer_pull(withdraw).await.unwrap();
    let learnt = store.learnt_entities_for_id("G1").await.unwrap();
    assert_eq!(learnt.iter().map(|e| e.mailbox.as_str()).collect::<Vec<_>>(), ["x@other.test"]);
    // The operator forgets a binding.
    assert_eq!(store.forget_learnt_binding("g1", "X@other.test").await.unwrap(), 1);
    assert!(store.learnt_entities_for_id("G1").await.unwrap().is_empty());
    // A failed pull.
    store.record_peer_error("galkam.test", 300, "unreachable").await.unwrap();
    let peer = store.list_messenger_peers().await.unwrap().remove(0);
    assert_eq!((peer.last_pull, peer.last_error.as_deref(), peer.last_serial), (Some(300), Some("unreachable"), 8));
    assert_eq!(peer.last_success, Some(200), "a failure is no answer");
    // A peer that started its serials again: everything it said before goes.
    let reset = PeerPull {
        peer: "galkam.test".into(),
        add: vec![("G3".into(), "gail@galkam.test".into())],
        reset: true,
        last_serial: 1,
        at: 400,
        ..Default::default()
    };
    store.apply_peer_pull(reset).await.unwrap();
    let ids: Vec<String> = store.list_learnt_entities().await.unwrap().into_iter().map(|e| e.published_id).collect();
    assert_eq!(ids, ["G3"]);
    let peer = store.list_messenger_peers().await.unwrap().remove(0);
    assert_eq!((peer.last_serial, peer.last_error.as_deref()), (1, None));
    // A peer dropped goes with its entries.
    assert_eq!(store.forget_messenger_peer("Galkam.test").await.unwrap(), 1);
    let peers: Vec<String> = store.list_messenger_peers().await.unwrap().into_iter().map(|p| p.domain).collect();
    assert_eq!(peers, ["other.test"]);
    assert!(store.list_learnt_entities().await.unwrap().is_empty());
    assert_eq!(store.forget_messenger_peer("galkam.test").await.unwrap(), 0);
}

/// `configured` is only ever raised, `last_success` only moved forward; peers are listed
/// by domain.
async fn peers_are_noted_forward_only(store: &dyn FederationStore) {
    store.note_messenger_peer("b.test", false, Some(100)).await.unwrap();
    store.note_messenger_peer("a.test", true, None).await.unwrap();
    let peer = |domain: &'static str| async move {
        store.list_messenger_peers().await.unwrap().into_iter().find(|p| p.domain == domain).unwrap()
    };
    let a = peer("a.test").await;
    assert_eq!((a.configured, a.last_serial, a.last_pull, a.last_success), (true, 0, None, None));
    store.note_messenger_peer("a.test", false, Some(50)).await.unwrap();
    let a = peer("a.test").await;
    assert_eq!((a.configured, a.last_success), (true, Some(50)));
    store.note_messenger_peer("b.test", true, Some(90)).await.unwrap();
    let b = peer("b.test").await;
    assert_eq!((b.configured, b.last_success), (true, Some(100)), "never moved back");
    store.note_messenger_peer("b.test", false, Some(120)).await.unwrap();
    let b = peer("b.test").await;
    assert_eq!((b.configured, b.last_success), (true, Some(120)));
    let domains: Vec<String> = store.list_messenger_peers().await.unwrap().into_iter().map(|p| p.domain).collect();
    assert_eq!(domains, ["a.test", "b.test"]);
}

/// SPEC 8.4: a peer pulls `ENTITIES <last serial seen>` and keeps the highest serial
/// reported. With two nodes publishing and withdrawing at once, a peer pulling meanwhile
/// ends with exactly the published entries: no change is skipped, though serials are
/// handed out before their transactions commit.
async fn serials_are_a_cursor_while_two_nodes_edit<S: Federated + ?Sized>(a: &S, b: &S) {
    const ACCOUNTS: usize = 6;
    const ROUNDS: usize = 5;
    let addresses: Vec<String> = (0..ACCOUNTS).map(|n| format!("u{n}@lrsupport.test")).collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    setup(a, &refs).await;
    for (n, address) in addresses.iter().enumerate() {
        let (x, y) = (format!("P{n}X"), format!("P{n}Y"));
        a.set_directory_entry(entry(address, &[&x, &y])).await.unwrap();
    }
    let finished = Cell::new(0);
    let edit = |n: usize| {
        let (store, address, finished) = (if n.is_multiple_of(2) { a } else { b }, addresses[n].clone(), &finished);
        async move {
            for round in 0..ROUNDS {
                store.set_directory_published(&address, true).await.unwrap();
                // A new ID each round while published: a DEL and an ADD.
                let id = format!("P{n}R{round}");
                store.set_directory_entry(entry(&address, &[&format!("P{n}X"), &id])).await.unwrap();
                if (round + n).is_multiple_of(2) {
                    store.set_directory_published(&address, false).await.unwrap();
                }
            }
            finished.set(finished.get() + 1);
        }
    };
    let pull = async {
        let (mut cursor, mut state) = (0, BTreeMap::<(String, String), EntityOp>::new());
        loop {
            let done = finished.get() == ACCOUNTS;
            let (changes, highest) = b.entity_changes_since(cursor, 4).await.unwrap();
            for change in &changes {
                assert!(change.serial > cursor && change.serial <= highest);
                state.insert((change.published_id.clone(), change.mailbox.clone()), change.op);
            }
            assert!(highest >= cursor);
            cursor = highest;
            if done && changes.is_empty() {
                return state;
            }
            tokio::task::yield_now().await;
        }
    };
    let (state, ..) = tokio::join!(pull, edit(0), edit(1), edit(2), edit(3), edit(4), edit(5));
    let pulled: BTreeSet<(String, String)> =
        state.into_iter().filter(|(_, op)| *op == EntityOp::Add).map(|(pair, _)| pair).collect();
    let mut published = BTreeSet::new();
    for record in a.list_directory().await.unwrap().into_iter().filter(|r| r.published) {
        published.extend(record.ids.iter().map(|id| (id.clone(), record.address.clone())));
    }
    assert!(!published.is_empty());
    assert_eq!(pulled, published, "the peer's copy matches the directory");
}

/// SPEC 8.4: a published ID names one local mailbox, even when two nodes give it to two
/// accounts at the same moment.
async fn an_id_claimed_on_two_nodes_at_once_goes_to_one<S: Federated + ?Sized>(a: &S, b: &S) {
    setup(a, &["x@lrsupport.test", "y@lrsupport.test"]).await;
    for n in 0..10 {
        let id = format!("ID{n}");
        let (first, second) = tokio::join!(
            a.set_directory_entry(entry("x@lrsupport.test", &[&id])),
            b.set_directory_entry(entry("y@lrsupport.test", &[&id]))
        );
        let won = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{id}: {first:?} {second:?}");
        assert!([first, second].into_iter().any(|r| matches!(r, Err(StoreError::Conflict(_)))));
    }
}
