//! NodeStore: meta values, the client networks accounts logged in from (SPEC 3), the
//! leases, marks and events every node shares (SPEC 11), closing.

use vouchmail_store::{NodeStore, StoreError};

use crate::support::Backend;

on_every_backend!(
    node: meta_values,
    get_or_init_meta_keeps_the_first_value,
    logins_per_account_and_client,
    leases_marks_and_events,
);
on_every_backend!(itself: closing_keeps_what_was_written_and_refuses_more, leases_and_marks_hold_across_nodes);

async fn meta_values(store: &dyn NodeStore) {
    assert_eq!(store.get_meta("k").await.unwrap(), None);
    store.set_meta("k", "v1").await.unwrap();
    store.set_meta("k", "v2").await.unwrap();
    store.set_meta("other", "o").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(store.get_meta("other").await.unwrap().as_deref(), Some("o"));
    assert_eq!(store.get_meta("K").await.unwrap(), None, "keys are exact");
    // Any text, as it was given.
    let text = "line one\nline two, ünïcödé, 'quoted' \"too\"";
    store.set_meta("text", text).await.unwrap();
    assert_eq!(store.get_meta("text").await.unwrap().as_deref(), Some(text));
}

async fn get_or_init_meta_keeps_the_first_value(store: &dyn NodeStore) {
    assert_eq!(store.get_or_init_meta("k", "first").await.unwrap(), "first");
    assert_eq!(store.get_or_init_meta("k", "second").await.unwrap(), "first");
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("first"));
    // Atomic: callers racing for an unset key all get the one value stored.
    let (a, b, c) = tokio::join!(
        store.get_or_init_meta("race", "a"),
        store.get_or_init_meta("race", "b"),
        store.get_or_init_meta("race", "c"),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(a == b && b == c, "{a} {b} {c}");
    assert_eq!(store.get_meta("race").await.unwrap(), Some(a));
    // A value set later replaces it, as for any key.
    store.set_meta("k", "set").await.unwrap();
    assert_eq!(store.get_or_init_meta("k", "third").await.unwrap(), "set");
}

async fn logins_per_account_and_client(store: &dyn NodeStore) {
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.1").await.unwrap(), None);
    store.remember_login("A@example.org", "192.0.2.1", 1_000, 0).await.unwrap();
    store.remember_login("a@example.org", "2001:db8::/64", 2_000, 0).await.unwrap();
    store.remember_login("b@example.org", "192.0.2.1", 1_500, 0).await.unwrap();
    // Accounts match whatever their case; clients exactly.
    assert_eq!(store.last_login_from("a@EXAMPLE.org", "192.0.2.1").await.unwrap(), Some(1_000));
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.2").await.unwrap(), None);
    assert_eq!(store.last_login_from("b@example.org", "192.0.2.1").await.unwrap(), Some(1_500));
    // A later login moves the time on; an older report never moves it back.
    store.remember_login("a@example.org", "192.0.2.1", 3_000, 0).await.unwrap();
    store.remember_login("a@example.org", "192.0.2.1", 2_500, 0).await.unwrap();
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.1").await.unwrap(), Some(3_000));
    // Logins before the cut-off are forgotten, of every account; one at it is kept.
    store.remember_login("a@example.org", "192.0.2.1", 4_000, 2_000).await.unwrap();
    assert_eq!(store.last_login_from("a@example.org", "2001:db8::/64").await.unwrap(), Some(2_000));
    assert_eq!(store.last_login_from("b@example.org", "192.0.2.1").await.unwrap(), None);
    store.remember_login("a@example.org", "192.0.2.1", 4_000, 2_001).await.unwrap();
    assert_eq!(store.last_login_from("a@example.org", "2001:db8::/64").await.unwrap(), None);
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.1").await.unwrap(), Some(4_000));
    // A login older than its own cut-off is forgotten at once (remembered, then forgotten).
    store.remember_login("c@example.org", "198.51.100.7", 5_000, 6_000).await.unwrap();
    assert_eq!(store.last_login_from("c@example.org", "198.51.100.7").await.unwrap(), None);
}

async fn closing_keeps_what_was_written_and_refuses_more(backend: &mut Backend) {
    backend.node().set_meta("k", "kept").await.unwrap();
    backend.node().remember_login("a@example.org", "192.0.2.1", 1_000, 0).await.unwrap();
    backend.node().close().await.unwrap();
    let error = backend.node().set_meta("k", "lost").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.is_temporary());
    backend.reopen().await;
    let store = backend.node();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("kept"));
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.1").await.unwrap(), Some(1_000));
}

async fn leases_marks_and_events(store: &dyn NodeStore) {
    assert!(store.try_lease("pop3:a@x", "n1/1", 100, 220).await.unwrap());
    assert!(!store.try_lease("pop3:a@x", "n2/1", 150, 270).await.unwrap(), "held until 220");
    assert!(!store.try_lease("pop3:a@x", "n2/1", 220, 340).await.unwrap(), "held at 220 still");
    assert!(store.try_lease("pop3:a@x", "n1/1", 200, 320).await.unwrap(), "its holder renews it");
    assert!(store.try_lease("pop3:a@x", "n2/1", 321, 441).await.unwrap(), "expired: taken over");
    store.release_lease("pop3:a@x", "n1/1").await.unwrap();
    assert!(!store.try_lease("pop3:a@x", "n1/2", 322, 442).await.unwrap(), "only its holder releases it");
    store.release_lease("pop3:a@x", "n2/1").await.unwrap();
    assert!(store.try_lease("pop3:a@x", "n1/2", 323, 443).await.unwrap());
    // Counted by prefix, exactly: `_` and `%` are no wildcards.
    store.try_lease("rcram:v.test:c1", "n1", 400, 700).await.unwrap();
    store.try_lease("rcram:v.test:c2", "n2", 400, 500).await.unwrap();
    store.try_lease("rcram:v_test:c3", "n2", 400, 700).await.unwrap();
    store.try_lease("rcram:v%test:c4", "n2", 400, 700).await.unwrap();
    assert_eq!(store.count_leases("rcram:v.test:", 450).await.unwrap(), 2);
    assert_eq!(store.count_leases("rcram:v.test:", 500).await.unwrap(), 2, "live at its until");
    assert_eq!(store.count_leases("rcram:v.test:", 600).await.unwrap(), 1, "c2 expired at 500");
    assert_eq!(store.count_leases("rcram:v_", 450).await.unwrap(), 1);
    assert_eq!(store.count_leases("nothing:", 450).await.unwrap(), 0);

    assert!(store.mark_if_older("atrn:a@x", 1000, 970).await.unwrap(), "unset");
    assert!(!store.mark_if_older("atrn:a@x", 1010, 980).await.unwrap(), "set at 1000, after 980");
    assert!(store.mark_if_older("atrn:a@x", 1030, 1000).await.unwrap(), "set at 1000, not after 1000");
    assert!(store.mark_if_older("atrn:b@x", 1031, 0).await.unwrap(), "each name its own mark");

    store.add_events(vec!["auth:net:a".into(), "auth:account:u".into()], 100, 0).await.unwrap();
    store.add_events(vec!["auth:net:a".into()], 150, 0).await.unwrap();
    store.add_events(vec!["auth:net:a".into(), "auth:net:a".into()], 160, 0).await.unwrap();
    let names = vec!["auth:net:a".to_string(), "auth:account:u".to_string(), "auth:net:b".to_string()];
    assert_eq!(store.count_events(names.clone(), 100).await.unwrap(), [4, 1, 0]);
    assert_eq!(store.count_events(names.clone(), 120).await.unwrap(), [3, 0, 0]);
    assert_eq!(store.count_events(Vec::new(), 0).await.unwrap(), Vec::<u64>::new());
    store.add_events(vec!["auth:net:b".into()], 200, 150).await.unwrap();
    assert_eq!(store.count_events(names, 0).await.unwrap(), [3, 0, 1], "events before 150 forgotten");
}

/// SPEC 11: a lease or a mark is one node's at a time, however they race for it.
async fn leases_and_marks_hold_across_nodes(backend: &mut Backend) {
    let other = backend.another_node().await;
    let (a, b) = (backend.node(), other.as_ref());
    for n in 0..20 {
        let name = format!("pop3:user{n}@x");
        let (x, y) = tokio::join!(a.try_lease(&name, "node-a", 100, 200), b.try_lease(&name, "node-b", 100, 200));
        assert!(x.unwrap() != y.unwrap(), "{name}: exactly one node holds it");
        let mark = format!("atrn:user{n}@x");
        let (x, y) = tokio::join!(a.mark_if_older(&mark, 1000, 970), b.mark_if_older(&mark, 1000, 970));
        assert!(x.unwrap() != y.unwrap(), "{mark}: exactly one node set it");
    }
    assert_eq!(a.count_leases("pop3:", 150).await.unwrap(), 20);
    assert_eq!(b.count_leases("pop3:", 150).await.unwrap(), 20);
    other.close().await.unwrap();
}
