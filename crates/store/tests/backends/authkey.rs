//! AuthKeyStore (SPEC 7): the Authentication Server's settings, keys and VERIFY log, the
//! sender's received keys, the recipient's verification cache and the VERIFYs it sent.

use vouchmail_store::{
    AuthKey, AuthKeySettings, AuthKeyStore, SenderKey, SettingsSource, StoreError, VerifyLogEntry, VerifySentEntry,
};

use crate::support::Backend;

on_every_backend!(authkey: settings_keys_and_verify_log, verify_log_rows_keep_their_order);
on_every_backend!(itself: sender_keys_cache_and_verify_sent_survive_a_reopen);

async fn settings_keys_and_verify_log(store: &dyn AuthKeyStore) {
    let a = "alice@example.org";
    assert_eq!(store.authkey_settings(a).await.unwrap(), None);
    // SPEC 7.1: an address's own settings, else its domain's default.
    let domain = AuthKeySettings { agi_secs: 7200 * 60, avt_secs: 2880 * 60 };
    store.set_authkey_settings("Example.ORG", Some(domain)).await.unwrap();
    assert_eq!(store.authkey_settings("ALICE@example.org").await.unwrap(), Some((domain, SettingsSource::Domain)));
    let own = AuthKeySettings { agi_secs: 10, avt_secs: 5 };
    store.set_authkey_settings(a, Some(own)).await.unwrap();
    assert_eq!(store.authkey_settings(a).await.unwrap(), Some((own, SettingsSource::Address)));
    let replaced = AuthKeySettings { agi_secs: 20, avt_secs: 0 };
    store.set_authkey_settings("Alice@example.org", Some(replaced)).await.unwrap();
    assert_eq!(store.authkey_settings(a).await.unwrap(), Some((replaced, SettingsSource::Address)));
    assert!(matches!(
        store.set_authkey_settings(a, Some(AuthKeySettings { agi_secs: 0, avt_secs: 1 })).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.set_authkey_settings(a, Some(AuthKeySettings { agi_secs: u64::MAX, avt_secs: 1 })).await,
        Err(StoreError::Invalid(_))
    ));
    store.set_authkey_settings(a, None).await.unwrap();
    assert_eq!(store.authkey_settings(a).await.unwrap(), Some((domain, SettingsSource::Domain)));
    // Other domains have none.
    assert_eq!(store.authkey_settings("bob@other.example").await.unwrap(), None);

    let k1 = "a".repeat(64);
    let k2 = "b".repeat(64);
    store.add_authkey(AuthKey { address: a.into(), key: k1.clone(), created_at: 100, expires_at: 115 }).await.unwrap();
    store
        .add_authkey(AuthKey { address: "ALICE@example.org".into(), key: k2.clone(), created_at: 110, expires_at: 125 })
        .await
        .unwrap();
    let keys = store.authkeys("Alice@Example.org", 110).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), [k2.as_str(), k1.as_str()], "newest first");
    assert_eq!((keys[0].address.as_str(), keys[0].created_at, keys[0].expires_at), (a, 110, 125));
    assert_eq!(store.newest_authkeys().await.unwrap(), [(a.to_string(), 110)]);
    // The store returns the unexpired keys; matching them is proto's check_key.
    let unexpired =
        |at: i64| async move { store.authkeys(a, at).await.unwrap().into_iter().map(|k| k.key).collect::<Vec<_>>() };
    assert_eq!(unexpired(114).await, [k2.clone(), k1.clone()]);
    assert_eq!(unexpired(115).await, std::slice::from_ref(&k2), "expired at expires_at");
    assert!(store.authkeys("bob@example.org", 100).await.unwrap().is_empty());
    assert_eq!(store.delete_expired_authkeys(120).await.unwrap(), 1);
    assert_eq!(store.delete_expired_authkeys(120).await.unwrap(), 0);
    assert_eq!(store.authkeys(a, 0).await.unwrap().len(), 1);

    for (at, result) in [(200, "VALIDKEY"), (300, "INVALIDKEY")] {
        let entry = VerifyLogEntry { at, peer: "udp 192.0.2.1:4000".into(), address: a.into(), result: result.into() };
        store.log_verify(vec![entry]).await.unwrap();
    }
    let log = store.verify_log(250, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].at, log[0].peer.as_str(), log[0].result.as_str()), (300, "udp 192.0.2.1:4000", "INVALIDKEY"));
    assert_eq!(store.verify_log(0, 1).await.unwrap()[0].at, 200, "oldest first");
    assert_eq!(store.verify_log(300, 10).await.unwrap().len(), 1, "at or after `since`");
}

/// SPEC 7.1: a batch of VERIFY log rows is appended in its order.
async fn verify_log_rows_keep_their_order(store: &dyn AuthKeyStore) {
    let entry = |at: i64, address: &str| VerifyLogEntry {
        at,
        peer: "tcp 192.0.2.1:4000".into(),
        address: address.into(),
        result: "VALIDKEY".into(),
    };
    store.log_verify(vec![entry(5, "b@x"), entry(5, "a@x"), entry(6, "c@x")]).await.unwrap();
    store.log_verify(Vec::new()).await.unwrap();
    store.log_verify(vec![entry(4, "d@x")]).await.unwrap();
    let addresses: Vec<String> = store.verify_log(0, 10).await.unwrap().into_iter().map(|e| e.address).collect();
    assert_eq!(addresses, ["b@x", "a@x", "c@x", "d@x"], "in the order logged");
    let addresses: Vec<String> = store.verify_log(5, 2).await.unwrap().into_iter().map(|e| e.address).collect();
    assert_eq!(addresses, ["b@x", "a@x"]);
}

/// SPEC 7.5: the sender's received key, the verification cache and every VERIFY sent are
/// in the store, so a restart loses none of them.
async fn sender_keys_cache_and_verify_sent_survive_a_reopen(backend: &mut Backend) {
    {
        let store = backend.authkey();
        let key = |k: &str, at| SenderKey {
            address: "A@example.org".into(),
            key: k.into(),
            received_at: at,
            source: "as".into(),
        };
        assert_eq!(store.sender_key("a@example.org").await.unwrap(), None);
        store.record_sender_key(key("first", 1)).await.unwrap();
        store.record_sender_key(key("second", 2)).await.unwrap();
        store.cache_verified_key("A@example.org", "h1", 100, 200).await.unwrap();
        store.cache_verified_key("a@example.org", "old", 100, 150).await.unwrap();
        let sent = VerifySentEntry {
            at: 5,
            server: "udp 192.0.2.1:2884".into(),
            address: "a@b".into(),
            result: "VALIDKEY".into(),
        };
        store.log_verify_sent(sent).await.unwrap();
        let later = VerifySentEntry {
            at: 9,
            result: "timeout".into(),
            ..store.verify_sent_log(0, 1).await.unwrap()[0].clone()
        };
        store.log_verify_sent(later).await.unwrap();
    }
    backend.reopen().await;
    let store = backend.authkey();
    let key = store.sender_key("a@EXAMPLE.org").await.unwrap().unwrap();
    assert_eq!((key.address.as_str(), key.key.as_str(), key.received_at), ("a@example.org", "second", 2));
    assert!(store.verified_key_cached("a@example.org", "h1", 150).await.unwrap());
    assert!(store.verified_key_cached("A@example.org", "h1", 199).await.unwrap());
    assert!(!store.verified_key_cached("a@example.org", "h1", 200).await.unwrap(), "expired at 200");
    assert!(!store.verified_key_cached("a@example.org", "h2", 150).await.unwrap());
    assert!(!store.verified_key_cached("b@example.org", "h1", 150).await.unwrap());
    // Caching again moves the entry's time; expired entries go at the same time.
    store.cache_verified_key("a@example.org", "h1", 160, 300).await.unwrap();
    assert!(store.verified_key_cached("a@example.org", "h1", 250).await.unwrap());
    assert!(!store.verified_key_cached("a@example.org", "old", 0).await.unwrap(), "removed when it expired");
    let sent = store.verify_sent_log(0, 10).await.unwrap();
    assert_eq!(sent.iter().map(|e| (e.at, e.result.as_str())).collect::<Vec<_>>(), [(5, "VALIDKEY"), (9, "timeout")]);
    assert_eq!((sent[0].server.as_str(), sent[0].address.as_str()), ("udp 192.0.2.1:2884", "a@b"));
    assert_eq!(store.verify_sent_log(6, 10).await.unwrap().len(), 1);
    assert_eq!(store.verify_sent_log(0, 1).await.unwrap()[0].at, 5);
}
