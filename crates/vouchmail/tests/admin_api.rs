//! The JSON API under `/api/v1/` (SPEC 12, issue 24 item 4) against the real server: every
//! endpoint; for each family no token (401), a revoked one (403), bad JSON or a bad value
//! (400 with a message), an unknown name (404); and the `vouchmail` CLI, run on the same
//! store, seeing each change the API made (the two call the same operations).

mod common;

use std::process::Command;

use common::http::{get, request, HttpResponse};
use common::{binary, TestServer};
use serde_json::{json, Value};
use vouchmail_store::{Delivery, Envelope, Folder, NewMessage, RecipientDsn};

/// The admin CLI on the test server's store; returns (success, stdout, stderr).
fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let config = server.dir.path().join("cli.toml");
    let text = format!(
        "hostname = \"mx.local.test\"\ndata_dir = {:?}\n{}",
        server.config.data_dir,
        common::store_config(&server.config)
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(binary()).arg("--config").arg(&config).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `--json` listing of the CLI.
fn cli_json(server: &TestServer, args: &[&str]) -> Value {
    let (ok, out, err) = cli(server, &[args, &["--json"]].concat());
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// A client of the API with one token.
struct Api<'a> {
    server: &'a TestServer,
    token: String,
}

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        request(self.server.admin(), method, path, Some(&self.token), body).await
    }

    /// A call that must answer `status`; its JSON body.
    async fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let body = body.map(|b| b.to_string());
        let response = self.call(method, path, body.as_deref()).await;
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        response.json()
    }
}

async fn api(server: &TestServer) -> Api<'_> {
    Api { server, token: server.admin_token("ops-test").await }
}

/// The checks every family gets: 401 without a token, 403 with a revoked one.
async fn tokens_are_needed(server: &TestServer, method: &str, path: &str, body: Option<&str>) {
    let missing = request(server.admin(), method, path, None, body).await;
    assert_eq!(missing.status, 401, "{method} {path} without a token: {}", missing.text());
    assert!(missing.json()["error"].is_string());
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("gone-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let revoked = server.admin_token(&name).await;
    vouchmail_server::rules::admin_tokens::revoke_token(server.store.as_ref(), &name).await.unwrap();
    let refused = request(server.admin(), method, path, Some(&revoked), body).await;
    assert_eq!(refused.status, 403, "{method} {path} with a revoked token: {}", refused.text());
}

/// A 400 whose body says what is wrong.
async fn bad_request(api: &Api<'_>, method: &str, path: &str, body: &str, says: &str) {
    let response = api.call(method, path, Some(body)).await;
    assert_eq!(response.status, 400, "{method} {path} {body}: {}", response.text());
    let message = response.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains(says), "{method} {path} {body}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let api = api(&server).await;
    tokens_are_needed(&server, "GET", "/api/v1/domains", None).await;
    tokens_are_needed(&server, "POST", "/api/v1/domains", Some(r#"{"name":"x.test"}"#)).await;

    let made =
        api.expect("POST", "/api/v1/domains", Some(json!({"name": "Bücher.Example", "policy": "junk"})), 201).await;
    assert_eq!(
        (made["domain"].as_str(), made["unicode"].as_str()),
        (Some("xn--bcher-kva.example"), Some("bücher.example"))
    );
    assert_eq!(made["policy"], "junk");
    // The CLI sees it, as the same object.
    let listed = cli_json(&server, &["domain", "list"]);
    let row = listed.as_array().unwrap().iter().find(|d| d["domain"] == "xn--bcher-kva.example").cloned();
    assert_eq!(row, Some(made.clone()));
    let all = api.expect("GET", "/api/v1/domains", None, 200).await;
    assert_eq!(all, listed, "the API's list is the CLI's");
    assert_eq!(api.expect("GET", "/api/v1/domains/bücher.example", None, 200).await, made);

    // Policy as `domain policy` takes it.
    let body = json!({"unauthenticated": "accept", "forged": "reject", "dmarc_counts": false});
    let changed = api.expect("PUT", "/api/v1/domains/xn--bcher-kva.example/policy", Some(body), 200).await;
    assert_eq!(
        (changed["policy"].as_str(), changed["dmarc_counts"].as_bool()),
        (Some("unauthenticated=accept,forged=reject"), Some(false))
    );
    let listed = cli_json(&server, &["domain", "list"]);
    assert!(listed.as_array().unwrap().contains(&changed), "{listed}");
    // A change made by the CLI shows in the API.
    let (ok, _, err) = cli(&server, &["domain", "policy", "xn--bcher-kva.example", "reject"]);
    assert!(ok, "{err}");
    assert_eq!(api.expect("GET", "/api/v1/domains/xn--bcher-kva.example", None, 200).await["policy"], "reject");

    // The records to publish, as `domain dns` prints them.
    let records = api.expect("GET", "/api/v1/domains/local.test/dns", None, 200).await;
    let (ok, printed, _) = cli(&server, &["domain", "dns", "local.test"]);
    assert!(ok);
    let zone: Vec<String> =
        records.as_array().unwrap().iter().map(|r| r["zone"].as_str().unwrap().to_string()).collect();
    assert_eq!(format!("{}\n", zone.join("\n")), printed);
    assert!(records[0]["value"].as_str().unwrap().starts_with("v=spf1 "), "{records}");

    // Bad input, unknown names, conflicts.
    bad_request(&api, "POST", "/api/v1/domains", "{not json", "JSON").await;
    bad_request(&api, "POST", "/api/v1/domains", r#"{"name": "bad domain"}"#, "not a valid domain").await;
    bad_request(&api, "POST", "/api/v1/domains", r#"{"name": "y.test", "colour": "red"}"#, "colour").await;
    bad_request(
        &api,
        "PUT",
        "/api/v1/domains/local.test/policy",
        r#"{"forged": "bounce"}"#,
        "forged: unknown sender policy action",
    )
    .await;
    api.expect("GET", "/api/v1/domains/nowhere.test", None, 404).await;
    api.expect("PUT", "/api/v1/domains/nowhere.test/policy", Some(json!({"policy": "junk"})), 404).await;
    api.expect("GET", "/api/v1/domains/nowhere.test/dns", None, 404).await;
    api.expect("DELETE", "/api/v1/domains/nowhere.test", None, 404).await;
    let exists = api.expect("POST", "/api/v1/domains", Some(json!({"name": "local.test"})), 409).await;
    assert!(exists["error"].as_str().unwrap().contains("exists already"), "{exists}");
    let busy = api.expect("DELETE", "/api/v1/domains/local.test", None, 409).await;
    assert!(busy["error"].as_str().unwrap().contains("account"), "{busy}");

    let removed = api.expect("DELETE", "/api/v1/domains/bücher.example", None, 200).await;
    assert_eq!(removed["removed"], "xn--bcher-kva.example");
    let (ok, out, _) = cli(&server, &["domain", "list"]);
    assert!(ok && !out.contains("xn--bcher-kva"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_aliases_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let api = api(&server).await;
    tokens_are_needed(&server, "GET", "/api/v1/users", None).await;
    tokens_are_needed(&server, "PUT", "/api/v1/users/user@local.test/quota", Some(r#"{"quota_bytes":1}"#)).await;
    tokens_are_needed(&server, "GET", "/api/v1/aliases", None).await;

    let added = api
        .expect("POST", "/api/v1/users", Some(json!({"address": "Alice@local.test", "password": "s3cret pw"})), 201)
        .await;
    assert_eq!(added, json!({"address": "alice@local.test"}), "a given password is not sent back");
    let generated =
        api.expect("POST", "/api/v1/users", Some(json!({"address": "bob@local.test", "quota_bytes": 5000})), 201).await;
    assert_eq!(generated["password"].as_str().map(str::len), Some(20), "{generated}");
    let users = cli_json(&server, &["user", "list"]);
    assert_eq!(api.expect("GET", "/api/v1/users", None, 200).await, users);
    let bob = users.as_array().unwrap().iter().find(|u| u["address"] == "bob@local.test").cloned().unwrap();
    assert_eq!(bob["quota_bytes"], 5000);

    let quota = api.expect("PUT", "/api/v1/users/bob@local.test/quota", Some(json!({"quota_bytes": 0})), 200).await;
    assert_eq!(quota["quota_bytes"], Value::Null);
    let users = cli_json(&server, &["user", "list"]);
    assert!(users.as_array().unwrap().contains(&quota), "{users}");
    // The new password works: the stored secrets verify it.
    let changed = api
        .expect("PUT", "/api/v1/users/alice@local.test/password", Some(json!({"password": "another one"})), 200)
        .await;
    assert_eq!(changed, json!({"address": "alice@local.test"}));
    let account = server.store.get_account("alice@local.test").await.unwrap().unwrap();
    assert!(account.secrets.verify_password("another one"), "the new password is the account's");
    let fresh = api.expect("PUT", "/api/v1/users/alice@local.test/password", None, 200).await;
    assert!(fresh["password"].is_string(), "{fresh}");

    // Aliases.
    let alias = api
        .expect(
            "POST",
            "/api/v1/aliases",
            Some(json!({"alias": "team@local.test", "targets": ["alice@local.test", "bob@local.test"]})),
            201,
        )
        .await;
    assert_eq!(alias["targets"], json!(["alice@local.test", "bob@local.test"]));
    let aliases = cli_json(&server, &["alias", "list"]);
    assert_eq!(api.expect("GET", "/api/v1/aliases", None, 200).await, aliases);
    assert_eq!(aliases.as_array().unwrap().len(), 2, "{aliases}");
    // bob is a target of team: removing him needs force (409), as `user remove` without --force.
    let used = api.expect("DELETE", "/api/v1/users/bob@local.test", None, 409).await;
    assert!(used["error"].as_str().unwrap().contains("team@local.test"), "{used}");
    let removed = api.expect("DELETE", "/api/v1/users/bob@local.test?force=true", None, 200).await;
    assert!(removed["also_removed"].as_str().unwrap().contains("team@local.test"), "{removed}");
    let (ok, out, _) = cli(&server, &["user", "list"]);
    assert!(ok && !out.contains("bob@"), "{out}");
    api.expect("DELETE", "/api/v1/aliases/team@local.test?target=alice@local.test", None, 200).await;
    let (ok, out, _) = cli(&server, &["alias", "list"]);
    assert!(ok && !out.contains("team@"), "{out}");

    // Bad input and unknown names.
    bad_request(&api, "POST", "/api/v1/users", r#"{"address": 7}"#, "address").await;
    bad_request(&api, "POST", "/api/v1/users", r#"{"address": "not an address"}"#, "not a valid address").await;
    bad_request(&api, "PUT", "/api/v1/users/alice@local.test/quota", r#"{"quota_bytes": -1}"#, "quota_bytes").await;
    bad_request(
        &api,
        "POST",
        "/api/v1/aliases",
        r#"{"alias": "x@nowhere.test", "targets": ["alice@local.test"]}"#,
        "not a local domain",
    )
    .await;
    bad_request(&api, "PUT", "/api/v1/users/alice@local.test/password", "{\"password\": ", "JSON").await;
    api.expect("DELETE", "/api/v1/users/ghost@local.test", None, 404).await;
    api.expect("GET", "/api/v1/users/ghost@local.test", None, 404).await;
    api.expect("PUT", "/api/v1/users/ghost@local.test/password", None, 404).await;
    api.expect("PUT", "/api/v1/users/ghost@local.test/quota", Some(json!({"quota_bytes": 1})), 404).await;
    api.expect("DELETE", "/api/v1/aliases/ghost@local.test", None, 404).await;
    api.expect("POST", "/api/v1/users", Some(json!({"address": "alice@local.test"})), 409).await;
}

/// A message from `sender` to a remote `recipient`, waiting in the queue.
async fn queue_message(server: &TestServer, queue_id: &str, recipient: &str) {
    let message = NewMessage {
        queue_id: queue_id.into(),
        envelope: Envelope { sender: "user@local.test".into(), ..Default::default() },
        received_at: 1_796_119_000,
        data: format!("Message-ID: <{queue_id}@local.test>\r\nSubject: {queue_id}\r\n\r\nbody\r\n").into_bytes(),
        spooled: None,
        deliveries: vec![(Delivery::Queue { recipient: recipient.into() }, RecipientDsn::default())],
    };
    server.store.commit_message(message).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let api = api(&server).await;
    tokens_are_needed(&server, "GET", "/api/v1/queue", None).await;
    tokens_are_needed(&server, "POST", "/api/v1/queue/flush", Some(r#"{"domain":"a.example"}"#)).await;
    queue_message(&server, "QA1", "one@a.example").await;
    queue_message(&server, "QB1", "two@b.example").await;
    queue_message(&server, "QB2", "three@b.example").await;

    let all = api.expect("GET", "/api/v1/queue", None, 200).await;
    assert_eq!(all, cli_json(&server, &["queue", "list"]), "the API's queue is the CLI's");
    assert_eq!(all.as_array().unwrap().len(), 3);
    let b = api.expect("GET", "/api/v1/queue?domain=b.example&state=queued", None, 200).await;
    let ids: Vec<&str> = b.as_array().unwrap().iter().filter_map(|e| e["queue_id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{b}");
    assert!(ids.contains(&"QB1") && ids.contains(&"QB2"), "{b}");
    assert_eq!(b, cli_json(&server, &["queue", "list", "--domain", "b.example", "--state", "queued"]));
    assert_eq!(api.expect("GET", "/api/v1/queue?state=deferred", None, 200).await, json!([]));
    bad_request(&api, "GET", "/api/v1/queue?state=stuck", "", "unknown queue state").await;

    let shown = api.expect("GET", "/api/v1/queue/QA1", None, 200).await;
    assert_eq!(shown["entries"][0]["recipient"], "one@a.example");
    assert!(shown["header"].as_str().unwrap().contains("Subject: QA1"), "{shown}");
    let retried = api.expect("POST", "/api/v1/queue/QA1/retry", None, 200).await;
    assert_eq!(retried["queue_id"], "QA1");
    let flushed = api.expect("POST", "/api/v1/queue/flush", Some(json!({"domain": "B.Example"})), 200).await;
    assert_eq!((flushed["domain"].as_str(), flushed["messages"].as_u64()), (Some("b.example"), Some(2)));
    bad_request(&api, "POST", "/api/v1/queue/flush", r#"{"domains": "b.example"}"#, "domain").await;

    let deleted = api.expect("DELETE", "/api/v1/queue/QB1", None, 200).await;
    assert_eq!(deleted["deleted"], 1);
    let (ok, out, _) = cli(&server, &["queue", "list"]);
    assert!(ok && !out.contains("QB1") && out.contains("QB2"), "{out}");
    // And the other way round: the CLI deletes, the API sees it gone.
    let (ok, _, err) = cli(&server, &["queue", "delete", "QB2"]);
    assert!(ok, "{err}");
    api.expect("GET", "/api/v1/queue/QB2", None, 404).await;
    api.expect("GET", "/api/v1/queue/NOSUCHID", None, 404).await;
    api.expect("POST", "/api/v1/queue/NOSUCHID/retry", None, 404).await;
    api.expect("DELETE", "/api/v1/queue/NOSUCHID", None, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_and_tracking_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let api = api(&server).await;
    tokens_are_needed(&server, "GET", "/api/v1/mailboxes/user@local.test", None).await;
    tokens_are_needed(&server, "GET", "/api/v1/tracking/user@local.test", None).await;
    let account = server.store.get_account("user@local.test").await.unwrap().unwrap();
    let message = NewMessage {
        queue_id: "MB1".into(),
        envelope: Envelope { sender: "someone@remote.example".into(), ..Default::default() },
        received_at: 1_796_119_000,
        data: b"From: Someone <someone@remote.example>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhi\r\n".to_vec(),
        spooled: None,
        deliveries: vec![(
            Delivery::Mailbox { account_id: account.id, folder: Folder::Inbox, recipient: "user@local.test".into() },
            RecipientDsn::default(),
        )],
    };
    server.store.commit_message(message).await.unwrap();

    let listed = api.expect("GET", "/api/v1/mailboxes/user@local.test", None, 200).await;
    assert_eq!(listed, cli_json(&server, &["mailbox", "list", "user@local.test"]));
    assert_eq!(listed[0]["subject"], "Grüße");
    let inbox = api.expect("GET", "/api/v1/mailboxes/user@local.test?folder=INBOX", None, 200).await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    assert_eq!(api.expect("GET", "/api/v1/mailboxes/user@local.test?folder=Junk", None, 200).await, json!([]));
    bad_request(&api, "GET", "/api/v1/mailboxes/user@local.test?folder=Spam", "", "unknown folder").await;
    let folders = api.expect("GET", "/api/v1/mailboxes/user@local.test/folders", None, 200).await;
    assert_eq!(folders, cli_json(&server, &["mailbox", "folders", "user@local.test"]));
    let inbox = folders.as_array().unwrap().iter().find(|f| f["folder"] == "INBOX").cloned().unwrap();
    assert_eq!(inbox["messages"], 1);
    api.expect("GET", "/api/v1/mailboxes/ghost@local.test", None, 404).await;
    api.expect("GET", "/api/v1/mailboxes/ghost@local.test/folders", None, 404).await;

    let records = api.expect("GET", "/api/v1/tracking/user@local.test", None, 200).await;
    assert_eq!(records, cli_json(&server, &["tracking", "list", "user@local.test"]));
    assert_eq!(api.expect("GET", "/api/v1/tracking", None, 200).await, cli_json(&server, &["tracking", "list"]));
    bad_request(&api, "GET", "/api/v1/tracking/user@local.test?since=yesterday", "", "RFC 3339").await;
    api.expect("GET", "/api/v1/tracking/ghost@local.test", None, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authkeys_dkim_and_conflicts_through_the_api_and_the_cli() {
    let server = TestServer::start().await;
    let api = api(&server).await;
    tokens_are_needed(&server, "GET", "/api/v1/authkeys/local.test", None).await;
    tokens_are_needed(&server, "POST", "/api/v1/dkim/local.test", Some("{}")).await;
    tokens_are_needed(&server, "GET", "/api/v1/directory/conflicts", None).await;

    // AuthKey settings of a domain, then of an address.
    let domain = api.expect("PUT", "/api/v1/authkeys/local.test", Some(json!({"agi": "2h", "avt": 3600})), 200).await;
    assert_eq!(domain, json!({"domain": "local.test", "agi_secs": 7200, "avt_secs": 3600, "settings": "domain"}));
    let user = api.expect("GET", "/api/v1/authkeys/user@local.test", None, 200).await;
    assert_eq!((user["agi_secs"].as_u64(), user["settings"].as_str()), (Some(7200), Some("domain")));
    assert_eq!(user, cli_json(&server, &["authkey", "show", "user@local.test"]));
    let own =
        api.expect("PUT", "/api/v1/authkeys/user@local.test", Some(json!({"agi": "30m", "avt": "1d"})), 200).await;
    assert_eq!(
        (own["agi_secs"].as_u64(), own["avt_secs"].as_u64(), own["settings"].as_str()),
        (Some(1800), Some(86400), Some("address"))
    );
    assert_eq!(own, cli_json(&server, &["authkey", "show", "user@local.test"]));
    bad_request(&api, "PUT", "/api/v1/authkeys/local.test", r#"{"agi": "2 weeks", "avt": 1}"#, "bad interval").await;
    bad_request(&api, "PUT", "/api/v1/authkeys/local.test", r#"{"agi": "2h"}"#, "avt").await;
    api.expect("GET", "/api/v1/authkeys/nobody@local.test", None, 404).await;
    api.expect("PUT", "/api/v1/authkeys/nosuch.example", Some(json!({"agi": 1, "avt": 1})), 404).await;

    // DKIM: a new Ed25519 key (fast), its record, the public part only; then rotated.
    let made = api
        .expect(
            "POST",
            "/api/v1/dkim/local.test",
            Some(json!({"algorithm": "ed25519-sha256", "selector": "api1"})),
            201,
        )
        .await;
    assert_eq!((made["selector"].as_str(), made["active"].as_bool()), (Some("api1"), Some(true)));
    assert_eq!(made["record"]["name"], "api1._domainkey.local.test");
    let keys = api.expect("GET", "/api/v1/dkim", None, 200).await;
    assert_eq!(keys, cli_json(&server, &["dkim", "list"]));
    assert!(!keys.to_string().contains("private"), "{keys}");
    let rotated = api.expect("POST", "/api/v1/dkim/local.test/rotate", None, 200).await;
    assert_eq!(rotated.as_array().unwrap().len(), 1);
    let keys = cli_json(&server, &["dkim", "list"]);
    let active: Vec<&Value> = keys.as_array().unwrap().iter().filter(|k| k["active"] == true).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["selector"], rotated[0]["selector"]);
    bad_request(&api, "POST", "/api/v1/dkim/local.test", r#"{"algorithm": "md5"}"#, "md5").await;
    api.expect("POST", "/api/v1/dkim/nowhere.test", None, 404).await;
    api.expect("POST", "/api/v1/dkim/nowhere.test/rotate", None, 404).await;

    let conflicts = api.expect("GET", "/api/v1/directory/conflicts", None, 200).await;
    assert_eq!(conflicts, cli_json(&server, &["directory", "conflicts"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_unknown_routes_404() {
    let server = TestServer::start_with(|c| c.admin.max_body_bytes = 1024).await;
    let api = api(&server).await;
    let big = json!({"name": "big.test", "held_for": vec!["a@local.test"; 200]}).to_string();
    assert!(big.len() > 1024);
    let response = api.call("POST", "/api/v1/domains", Some(&big)).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(response.json()["error"].is_string());
    let (ok, out, _) = cli(&server, &["domain", "list"]);
    assert!(ok && !out.contains("big.test"), "{out}");
    assert_eq!(get(server.admin(), "/api/v1/nothing", Some(&api.token)).await.status, 404);
}
