//! Delivery notifications (SPEC 8.3) through a running server: POP3 RETR makes the
//! records, a local sender's land in its Tracking folder, a remote sender's wait in the
//! NOTIFY outbox; `vouchmail tracking list` and `vouchmail mailbox list --folder Tracking`
//! show them. (Messages come into the store directly: the Messenger port that takes
//! RCRAM-MD5 mail is Messenger part 1's.)

mod common;

use std::process::Command;

use common::{binary, TestServer};
use tokio::net::TcpStream;
use vouchmail_proto::sasl::secrets::Secrets;
use vouchmail_proto::sasl::{Credentials, Mechanism};
use vouchmail_server::net::pop3_client::Pop3Client;
use vouchmail_store::{Delivery, Envelope, Folder, NewMessage, RecipientDsn};

const USER: &str = "user@local.test";
const PASSWORD: &str = "tracking secret";

async fn commit(server: &TestServer, queue_id: &str, sender: &str, auth: &str) {
    let account = server.store.get_account(USER).await.unwrap().unwrap();
    let message = NewMessage {
        queue_id: queue_id.into(),
        envelope: Envelope { sender: sender.into(), auth_results: auth.into(), ..Default::default() },
        received_at: 1_796_119_000,
        data: format!("Message-ID: <{queue_id}@origin.test>\r\nSubject: {queue_id}\r\n\r\nbody\r\n").into_bytes(),
        spooled: None,
        deliveries: vec![(
            Delivery::Mailbox { account_id: account.id, folder: Folder::Inbox, recipient: USER.into() },
            RecipientDsn::default(),
        )],
    };
    server.store.commit_message(message).await.unwrap();
}

fn cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let config = server.dir.path().join("cli.toml");
    let text = format!("data_dir = {:?}\n{}", server.config.data_dir, common::store_config(&server.config));
    std::fs::write(&config, text).unwrap();
    let out = Command::new(binary()).arg("--config").arg(&config).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn retr_makes_records_for_local_and_remote_senders_once() {
    let server = TestServer::start_with_users(|_| {}, &["nurse@local.test"]).await;
    server
        .store
        .set_secrets(USER, Secrets::from_password(PASSWORD, &[6; vouchmail_proto::sasl::SALTS_LEN]).unwrap())
        .await
        .unwrap();
    commit(&server, "Q1", "Nurse@local.test", "auth=pass smtp.auth=nurse@local.test").await;
    commit(&server, "Q2", "glen@galkam.test", "x-rcram=pass smtp.auth=glen@galkam.test").await;
    commit(&server, "Q3", "spam@elsewhere.test", "none").await;
    for _ in 0..2 {
        let stream = TcpStream::connect(server.pop3()).await.unwrap();
        let (mut pop, _) = Pop3Client::connect(stream).await.unwrap();
        pop.authenticate(Mechanism::ScramSha256, Credentials::new(USER, PASSWORD)).await.unwrap();
        for n in 1..=3 {
            pop.retr(n).await.unwrap();
        }
        pop.quit().await.unwrap();
    }
    // The local sender's record is in its Tracking folder, once.
    let records = server.store.tracking_records("nurse@local.test", None, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0].record;
    assert_eq!(
        (record.message_id.as_str(), record.recipient.as_str(), record.event.as_str()),
        ("<Q1@origin.test>", USER, "downloaded")
    );
    assert_eq!(record.reporting_server, "mx.local.test");
    // The remote sender's waits for NOTIFY to galkam.test's home server, once.
    let outbox = server.store.list_notify_outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].domain, "galkam.test");
    assert!(outbox[0].record.contains(",<Q2@origin.test>,glen@galkam.test,user@local.test,downloaded,mx.local.test"));
    // Every download is an event; only the authenticated senders' make records.
    assert_eq!(server.store.list_tracking_events(0, 100).await.unwrap().len(), 3);

    let (ok, out, err) = cli(&server, &["tracking", "list", "nurse@local.test", "--csv"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "timestamp,message_id,sender,recipient,event,reporting_server");
    assert_eq!(lines[1], record.to_line().unwrap());
    let (ok, out, _) = cli(&server, &["tracking", "list", "nurse@local.test"]);
    assert!(ok);
    assert!(
        out.starts_with("TIME ") && out.contains("  downloaded  <Q1@origin.test>  user@local.test  mx.local.test"),
        "{out}"
    );
    // Without ADDRESS: every local user's records, each line led by its sender.
    let (ok, out, _) = cli(&server, &["tracking", "list"]);
    assert!(ok && out.starts_with("SENDER ") && out.contains("\nnurse@local.test  "), "{out}");
    assert!(out.contains("  downloaded  <Q1@origin.test>"), "{out}");
    let (ok, out, _) = cli(&server, &["tracking", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && rows[0]["owner"] == "nurse@local.test" && rows[0]["event"] == "downloaded", "{out}");
    let (ok, out, _) = cli(&server, &["tracking", "list", "nurse@local.test", "--since", "2999-01-01T00:00:00Z"]);
    assert!(ok && out.lines().count() == 1, "{out}");
    let (ok, out, _) = cli(&server, &["mailbox", "list", "nurse@local.test", "--folder", "Tracking"]);
    assert!(ok);
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with('T') && row.contains("  Tracking  mx.local.test  downloaded user@local.test <Q1@origin.test>"),
        "{out}"
    );
    let (ok, _, err) = cli(&server, &["tracking", "list", "nurse@local.test", "--since", "yesterday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
    let (ok, _, err) = cli(&server, &["tracking", "list", "ghost@local.test"]);
    assert!(!ok && err.contains("no user"), "{err}");
}
