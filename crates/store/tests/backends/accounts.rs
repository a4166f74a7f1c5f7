//! AccountStore: domains, accounts, aliases, held domains (RFC 2645), client-certificate
//! mappings; and what removing an account takes with it.

use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_store::{
    AccountStore, CertMatch, DkimKey, DkimKeyStore, NewAccount, NodeStore, PolicyAction, SenderPolicy, StoreError,
};

on_every_backend!(
    store: domains_and_accounts,
    domain_policies_and_catch_all,
    secrets_quota_and_lookup_recipient,
    aliases,
    removing_a_domain_takes_its_aliases_exactly,
    held_domains_match_the_account_exactly,
    certificate_mappings,
    removing_an_account_forgets_its_logins,
    dkim_keys,
    send_as_lists,
);
on_every_backend!(two_nodes: two_nodes_adding_one_name_race_for_it);

pub fn account(address: &str) -> NewAccount {
    NewAccount { address: address.into(), secrets: Secrets::default(), quota_bytes: 0 }
}

async fn domains_and_accounts<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("Example.ORG", SenderPolicy::JUNK).await.unwrap();
    assert!(matches!(store.add_domain("example.org", SenderPolicy::REJECT).await, Err(StoreError::Conflict(_))));
    let domain = store.get_domain("EXAMPLE.org").await.unwrap().unwrap();
    assert_eq!((domain.name.as_str(), domain.policy), ("example.org", SenderPolicy::JUNK));
    assert!(domain.created_at > 1_700_000_000);
    assert!(matches!(store.add_account(account("a@unknown.example")).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.add_account(account("no-domain")).await, Err(StoreError::Invalid(_))));
    let id = store.add_account(account("Alice@example.org")).await.unwrap();
    assert!(matches!(store.add_account(account("alice@example.org")).await, Err(StoreError::Conflict(_))));
    let alice = store.get_account("ALICE@example.org").await.unwrap().unwrap();
    assert_eq!((alice.id, alice.address.as_str(), alice.domain.as_str()), (id, "alice@example.org", "example.org"));
    assert_eq!((alice.used_bytes, alice.message_count, alice.quota_bytes), (0, 0, 0));
    assert!(matches!(store.remove_domain("example.org").await, Err(StoreError::Conflict(_))));
    store.remove_account("alice@example.org").await.unwrap();
    assert!(matches!(store.remove_account("alice@example.org").await, Err(StoreError::NotFound(_))));
    assert_eq!(store.get_account("alice@example.org").await.unwrap(), None);
    store.remove_domain("example.org").await.unwrap();
    assert!(matches!(store.remove_domain("example.org").await, Err(StoreError::NotFound(_))));
    assert!(store.list_domains().await.unwrap().is_empty());
    // Listed by domain, then address.
    for domain in ["b.example", "a.example"] {
        store.add_domain(domain, SenderPolicy::REJECT).await.unwrap();
    }
    for address in ["z@a.example", "b@b.example", "a@b.example"] {
        store.add_account(account(address)).await.unwrap();
    }
    let names: Vec<String> = store.list_domains().await.unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["a.example", "b.example"]);
    let addresses: Vec<String> = store.list_accounts().await.unwrap().into_iter().map(|a| a.address).collect();
    assert_eq!(addresses, ["z@a.example", "a@b.example", "b@b.example"]);
}

async fn domain_policies_and_catch_all<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    // SPEC 13: a new domain counts a DMARC pass; it may stop counting it.
    assert!(store.get_domain("example.org").await.unwrap().unwrap().policy.dmarc_counts);
    store.add_account(account("a@example.org")).await.unwrap();
    let mixed = SenderPolicy {
        unauthenticated: PolicyAction::Junk,
        forged: PolicyAction::RejectNotifyBoth,
        dmarc_counts: false,
    };
    store.set_domain_policy("Example.org", mixed).await.unwrap();
    assert_eq!(store.get_domain("example.org").await.unwrap().unwrap().policy, mixed);
    assert!(matches!(store.set_domain_policy("nowhere.example", mixed).await, Err(StoreError::NotFound(_))));
    store.set_catch_all("example.org", Some("A@example.org")).await.unwrap();
    assert_eq!(store.get_domain("example.org").await.unwrap().unwrap().catch_all.as_deref(), Some("a@example.org"));
    assert!(matches!(
        store.set_catch_all("example.org", Some("nobody@example.org")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.set_catch_all("nowhere.example", None).await, Err(StoreError::NotFound(_))));
    // The catch-all goes with its account.
    store.remove_account("a@example.org").await.unwrap();
    assert_eq!(store.get_domain("example.org").await.unwrap().unwrap().catch_all, None);
    store.add_account(account("b@example.org")).await.unwrap();
    store.set_catch_all("example.org", Some("b@example.org")).await.unwrap();
    store.set_catch_all("example.org", None).await.unwrap();
    assert_eq!(store.get_domain("example.org").await.unwrap().unwrap().catch_all, None);
}

async fn secrets_quota_and_lookup_recipient<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::ACCEPT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    let secrets = Secrets::from_password("correct horse", &[7; vouchmail_proto::sasl::secrets::SALTS_LEN]).unwrap();
    store.set_secrets("A@example.org", secrets.clone()).await.unwrap();
    let stored = store.get_account("a@example.org").await.unwrap().unwrap().secrets;
    assert_eq!(stored, secrets);
    assert!(stored.verify_password("correct horse"));
    assert!(matches!(store.set_secrets("b@example.org", Secrets::default()).await, Err(StoreError::NotFound(_))));
    store.set_quota("a@example.org", 5_000_000).await.unwrap();
    let alice = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!(alice.quota_bytes, 5_000_000);
    assert!(!alice.over_quota(5_000_000) && alice.over_quota(5_000_001));
    assert!(matches!(store.set_quota("b@example.org", 1).await, Err(StoreError::NotFound(_))));

    store.add_alias("team@example.org", &["a@example.org".into(), "x@remote.example".into()]).await.unwrap();
    let account = store.lookup_recipient("A@Example.org").await.unwrap();
    assert_eq!(account.domain.map(|d| d.name).as_deref(), Some("example.org"));
    assert_eq!(account.account.map(|a| a.address).as_deref(), Some("a@example.org"));
    assert!(account.alias_targets.is_empty());
    let alias = store.lookup_recipient("team@example.org").await.unwrap();
    assert!(alias.domain.is_some() && alias.account.is_none());
    assert_eq!(alias.alias_targets, ["a@example.org", "x@remote.example"]);
    let unknown = store.lookup_recipient("nobody@example.org").await.unwrap();
    assert!(unknown.domain.is_some() && unknown.account.is_none() && unknown.alias_targets.is_empty());
    // Not our domain: nothing more is looked up.
    assert_eq!(store.lookup_recipient("a@remote.example").await.unwrap(), Default::default());
    assert_eq!(store.lookup_recipient("not an address").await.unwrap(), Default::default());
}

async fn aliases<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    store.add_alias("team@example.org", &["a@example.org".into(), "x@remote.example".into()]).await.unwrap();
    // Adding a target twice keeps one.
    store.add_alias("Team@example.org", &["A@example.org".into()]).await.unwrap();
    assert_eq!(store.alias_targets("Team@example.org").await.unwrap(), ["a@example.org", "x@remote.example"]);
    store.remove_alias("team@example.org", Some("x@remote.example")).await.unwrap();
    assert!(matches!(
        store.remove_alias("team@example.org", Some("x@remote.example")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_aliases().await.unwrap(), [("team@example.org".to_string(), "a@example.org".to_string())]);
    store.remove_alias("team@example.org", None).await.unwrap();
    assert!(matches!(store.remove_alias("team@example.org", None).await, Err(StoreError::NotFound(_))));
    assert!(store.alias_targets("team@example.org").await.unwrap().is_empty());
}

/// A domain's aliases go with it, and only its own: the name is no pattern.
async fn removing_a_domain_takes_its_aliases_exactly<S: AccountStore + ?Sized>(store: &S) {
    for domain in ["a_b.test", "axb.test", "b.test"] {
        store.add_domain(domain, SenderPolicy::REJECT).await.unwrap();
    }
    store.add_alias("x@a_b.test", &["t@remote.example".into()]).await.unwrap();
    store.add_alias("x@axb.test", &["t@remote.example".into()]).await.unwrap();
    store.add_alias("x@sub.a_b.test", &["t@remote.example".into()]).await.unwrap();
    store.add_alias("x@b.test", &["t@remote.example".into()]).await.unwrap();
    store.remove_domain("a_b.test").await.unwrap();
    let left: Vec<String> = store.list_aliases().await.unwrap().into_iter().map(|(alias, _)| alias).collect();
    assert_eq!(left, ["x@axb.test", "x@b.test", "x@sub.a_b.test"]);
    store.remove_domain("b.test").await.unwrap();
    let left: Vec<String> = store.list_aliases().await.unwrap().into_iter().map(|(alias, _)| alias).collect();
    assert_eq!(left, ["x@axb.test", "x@sub.a_b.test"]);
}

async fn held_domains_match_the_account_exactly<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("p", SenderPolicy::REJECT).await.unwrap();
    for domain in ["held.example", "other.example"] {
        store.add_domain(domain, SenderPolicy::ACCEPT).await.unwrap();
    }
    for address in ["custx1@p", "cust_1@p", "cust%@p"] {
        store.add_account(account(address)).await.unwrap();
    }
    store.set_domain_held("held.example", &["CustX1@p".into()], None).await.unwrap();
    assert_eq!(store.held_domains_for("custx1@P").await.unwrap(), ["held.example"]);
    // `_` and `%` are characters of the name, not wildcards.
    assert!(store.held_domains_for("cust_1@p").await.unwrap().is_empty());
    assert!(store.held_domains_for("cust%@p").await.unwrap().is_empty());
    assert!(store.held_domains_for("%").await.unwrap().is_empty());
    store.set_domain_held("other.example", &["cust_1@p".into(), "custx1@p".into()], Some("h:25")).await.unwrap();
    assert_eq!(store.held_domains_for("cust_1@p").await.unwrap(), ["other.example"]);
    assert_eq!(store.held_domains_for("custx1@p").await.unwrap(), ["held.example", "other.example"]);
    let other = store.get_domain("other.example").await.unwrap().unwrap();
    assert_eq!(other.held_for, ["cust_1@p", "custx1@p"]);
    assert_eq!(other.etrn_host.as_deref(), Some("h:25"));
    // Listed in the order they were set, not sorted.
    store.set_domain_held("other.example", &["custx1@p".into(), "cust_1@p".into()], None).await.unwrap();
    assert_eq!(store.get_domain("other.example").await.unwrap().unwrap().held_for, ["custx1@p", "cust_1@p"]);
    // Replaced, then released, then gone with the domain.
    store.set_domain_held("other.example", &["cust%@p".into()], None).await.unwrap();
    assert_eq!(store.held_domains_for("cust%@p").await.unwrap(), ["other.example"]);
    assert!(store.held_domains_for("cust_1@p").await.unwrap().is_empty());
    store.set_domain_held("other.example", &[], None).await.unwrap();
    let released = store.get_domain("other.example").await.unwrap().unwrap();
    assert!(released.held_for.is_empty());
    assert_eq!(released.etrn_host, None);
    assert!(matches!(
        store.set_domain_held("held.example", &["nobody@p".into()], None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.set_domain_held("nowhere.example", &[], None).await, Err(StoreError::NotFound(_))));
    store.remove_domain("held.example").await.unwrap();
    assert!(store.held_domains_for("custx1@p").await.unwrap().is_empty());
}

async fn certificate_mappings<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    store.add_account(account("b@example.org")).await.unwrap();
    store.add_cert_mapping("A@example.org", CertMatch::Fingerprint, "AB:CD:01").await.unwrap();
    store.add_cert_mapping("b@example.org", CertMatch::Subject, "O = Example, CN = bob").await.unwrap();
    assert!(matches!(
        store.add_cert_mapping("b@example.org", CertMatch::Fingerprint, "abcd01").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.add_cert_mapping("nobody@example.org", CertMatch::Fingerprint, "ff").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.cert_mapping_account("abcd01", None).await.unwrap().as_deref(), Some("a@example.org"));
    // The subject counts only when given (a certificate verified against the client CA).
    assert_eq!(store.cert_mapping_account("ee", None).await.unwrap(), None);
    let bob = store.cert_mapping_account("ee", Some("/O=Example/CN=bob")).await.unwrap();
    assert_eq!(bob.as_deref(), Some("b@example.org"));
    // The fingerprint wins over the subject.
    let both = store.cert_mapping_account("ab:cd:01", Some("CN=bob,O=Example")).await.unwrap();
    assert_eq!(both.as_deref(), Some("a@example.org"));
    let mappings = store.list_cert_mappings().await.unwrap();
    let listed: Vec<(&str, CertMatch, &str)> =
        mappings.iter().map(|m| (m.address.as_str(), m.kind, m.value.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("a@example.org", CertMatch::Fingerprint, "abcd01"),
            ("b@example.org", CertMatch::Subject, "CN=bob,O=Example")
        ]
    );
    // Removed by either spelling of its value; only the account's own.
    assert!(matches!(store.remove_cert_mapping("b@example.org", "AB:CD:01").await, Err(StoreError::NotFound(_))));
    store.remove_cert_mapping("a@example.org", "AB:CD:01").await.unwrap();
    store.remove_cert_mapping("b@example.org", "O = Example, CN = bob").await.unwrap();
    assert!(store.list_cert_mappings().await.unwrap().is_empty());
    // And all of an account's go with it.
    store.add_cert_mapping("a@example.org", CertMatch::Fingerprint, "01").await.unwrap();
    store.remove_account("a@example.org").await.unwrap();
    assert_eq!(store.cert_mapping_account("01", None).await.unwrap(), None);
    assert!(store.list_cert_mappings().await.unwrap().is_empty());
}

async fn removing_an_account_forgets_its_logins<S: AccountStore + NodeStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    store.add_account(account("b@example.org")).await.unwrap();
    store.remember_login("a@example.org", "192.0.2.1", 1_000, 0).await.unwrap();
    store.remember_login("b@example.org", "192.0.2.1", 1_000, 0).await.unwrap();
    store.remove_account("A@example.org").await.unwrap();
    assert_eq!(store.last_login_from("a@example.org", "192.0.2.1").await.unwrap(), None);
    assert_eq!(store.last_login_from("b@example.org", "192.0.2.1").await.unwrap(), Some(1_000));
}

/// Two nodes adding the same domain or account at once: one adds it, the other is told
/// it exists (what the CLI on two machines meets).
async fn two_nodes_adding_one_name_race_for_it<S: AccountStore + ?Sized>(a: &S, b: &S) {
    for n in 0..10 {
        let domain = format!("d{n}.example");
        let (x, y) =
            tokio::join!(a.add_domain(&domain, SenderPolicy::REJECT), b.add_domain(&domain, SenderPolicy::JUNK));
        assert!(x.is_ok() != y.is_ok(), "{domain}: {x:?} {y:?}");
        assert!(matches!(x.or(y), Ok(()) | Err(StoreError::Conflict(_))));
        let address = format!("u@{domain}");
        let (x, y) = tokio::join!(a.add_account(account(&address)), b.add_account(account(&address)));
        let id = match (x, y) {
            (Ok(id), Err(StoreError::Conflict(_))) | (Err(StoreError::Conflict(_)), Ok(id)) => id,
            other => panic!("{address}: {other:?}"),
        };
        assert_eq!(b.get_account(&address).await.unwrap().map(|a| a.id), Some(id));
    }
}

fn dkim_key(domain: &str, selector: &str, created_at: i64) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: selector.into(),
        algorithm: "ed25519-sha256".into(),
        private_key: vec![0x30, 0x51, selector.len() as u8],
        public_key: "MCowBQYDK2VwAyEA".into(),
        active: true,
        created_at,
    }
}

/// DkimKeyStore (SPEC 13): keys of local domains only, one per selector, listed by domain
/// and age, made inactive, removed; they go with their domain.
async fn dkim_keys<S: AccountStore + DkimKeyStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    assert!(matches!(store.add_dkim_key(dkim_key("nowhere.example", "s1", 1)).await, Err(StoreError::NotFound(_))));
    store.add_dkim_key(dkim_key("Example.org", "s2", 2)).await.unwrap();
    store.add_dkim_key(dkim_key("example.org", "s1", 1)).await.unwrap();
    assert!(matches!(store.add_dkim_key(dkim_key("example.org", "s1", 3)).await, Err(StoreError::Conflict(_))));
    let keys = store.list_dkim_keys().await.unwrap();
    assert_eq!(keys, [dkim_key("example.org", "s1", 1), dkim_key("example.org", "s2", 2)]);
    store.set_dkim_key_active("example.org", "s1", false).await.unwrap();
    assert!(!store.list_dkim_keys().await.unwrap()[0].active);
    assert!(matches!(store.set_dkim_key_active("example.org", "s9", true).await, Err(StoreError::NotFound(_))));
    store.remove_dkim_key("example.org", "s1").await.unwrap();
    assert!(matches!(store.remove_dkim_key("example.org", "s1").await, Err(StoreError::NotFound(_))));
    store.remove_domain("example.org").await.unwrap();
    assert!(store.list_dkim_keys().await.unwrap().is_empty(), "the keys went with their domain");
}

/// SPEC 3 `may_send_as`: a list per account, replaced as a whole, kept in order, gone with
/// the account.
async fn send_as_lists<S: AccountStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    assert!(store.send_as("a@example.org").await.unwrap().is_empty());
    let list = ["Boss@Example.org".to_string(), "news@other.example".to_string()];
    store.set_send_as("A@example.org", &list).await.unwrap();
    assert_eq!(store.send_as("a@example.org").await.unwrap(), ["boss@example.org", "news@other.example"]);
    store.set_send_as("a@example.org", &["x@example.org".to_string()]).await.unwrap();
    assert_eq!(store.send_as("a@example.org").await.unwrap(), ["x@example.org"]);
    assert!(matches!(store.set_send_as("nobody@example.org", &[]).await, Err(StoreError::NotFound(_))));
    store.remove_account("a@example.org").await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    assert!(store.send_as("a@example.org").await.unwrap().is_empty(), "the list went with the account");
}
