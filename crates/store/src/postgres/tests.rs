//! The PostgreSQL store's own machinery, on a throwaway cluster (skipped when PostgreSQL is
//! not installed): migrations once under racing nodes, durable sessions, TLS, errors,
//! closing. What every backend must do alike is in `tests/backends/`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use vouchmail_testkit::pg::{database_for, TestPostgres};

use super::base::{db_error, from_state};
use super::schema::MIGRATIONS;
use super::*;
use crate::error::StoreError;
use crate::interface::{FolderStore, NodeStore};

/// A plain client on `url`, for looking behind the store's back.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn versions(url: &str) -> Vec<i64> {
    let rows = raw(url).await.query("SELECT version FROM schema_version ORDER BY version", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_nodes_migrate_once() {
    let Some(url) = database_for("racing_nodes_migrate_once") else { return };
    let connect = || PostgresStore::connect(PostgresOptions::new(url.clone()));
    let (a, b, c) = tokio::join!(connect(), connect(), connect());
    for store in [a, b, c] {
        store.expect("every node connects");
    }
    let all: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
    assert_eq!(versions(&url).await, all, "each migration applied once");
    // And a later start finds nothing to do.
    PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
    assert_eq!(versions(&url).await, all);
}

/// Tables, columns and indexes by the same names as the SQLite store's, so the SQL of the
/// two reads alike: a new SQLite migration fails this until PostgreSQL has one too.
#[tokio::test]
async fn the_schema_names_what_sqlites_names() {
    let Some(url) = database_for("the_schema_names_what_sqlites_names") else { return };
    PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
    let client = raw(&url).await;
    let mut postgres = BTreeMap::<String, BTreeSet<String>>::new();
    for row in client
        .query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'", &[])
        .await
        .unwrap()
    {
        postgres.entry(row.get(0)).or_default().insert(row.get(1));
    }
    let indexes = client.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'", &[]).await.unwrap();
    let postgres_indexes: BTreeSet<String> = indexes.iter().map(|r| r.get(0)).collect();
    // The PostgreSQL store's own bookkeeping, and SQLite's implicit rowid made explicit.
    postgres.remove("schema_version");
    postgres.get_mut("held_accounts").unwrap().remove("rowid");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    crate::SqliteStore::open(&path).unwrap().close();
    let sqlite = rusqlite::Connection::open(&path).unwrap();
    let names = |sql: &str| -> Vec<String> {
        let mut stmt = sqlite.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let mut expected = BTreeMap::new();
    for table in names("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") {
        let columns = names(&format!("SELECT name FROM pragma_table_info('{table}')"));
        expected.insert(table, columns.into_iter().collect::<BTreeSet<_>>());
    }
    assert_eq!(postgres, expected);
    let expected_indexes: BTreeSet<String> =
        names("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'").into_iter().collect();
    // PostgreSQL names its primary-key and unique indexes itself (SQLite's are sqlite_autoindex_*).
    // `mailbox_unnumbered` is PostgreSQL's own: it finds the entries a commit inserted
    // before it numbers them (`messages::AccountDeltas`); SQLite numbers them as it inserts.
    let named: BTreeSet<String> = postgres_indexes
        .into_iter()
        .filter(|i| !i.ends_with("_pkey") && !i.ends_with("_key") && i != "mailbox_unnumbered")
        .collect();
    assert_eq!(named, expected_indexes);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(url) = database_for("a_newer_schema_is_refused") else { return };
    PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
    raw(&url).await.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)", &[]).await.unwrap();
    let error = PostgresStore::connect(PostgresOptions::new(url.clone())).await.err().expect("refused");
    assert!(matches!(&error, StoreError::Unavailable(m) if m.contains("version 999, newer")), "{error}");
}

/// SPEC 11: a commit is durable when it returns, whatever the database's own default.
#[tokio::test]
async fn every_session_commits_synchronously() {
    let Some(url) = database_for("every_session_commits_synchronously") else { return };
    let db = url.rsplit('/').next().unwrap();
    raw(&url).await.batch_execute(&format!("ALTER DATABASE {db} SET synchronous_commit = off")).await.unwrap();
    assert_eq!(raw(&url).await.query_one("SHOW synchronous_commit", &[]).await.unwrap().get::<_, String>(0), "off");
    let mut options = PostgresOptions::new(url.clone());
    options.max_connections = 3;
    let store = PostgresStore::connect(options).await.unwrap();
    // Three sessions at once: each its own connection.
    let (a, b, c) = tokio::join!(store.conn(), store.conn(), store.conn());
    for conn in [a.unwrap(), b.unwrap(), c.unwrap()] {
        let value: String = conn.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
        assert_eq!(value, "on");
    }
}

#[tokio::test]
async fn tls_when_the_url_asks_verified_against_ca_file() {
    let Some(pg) = TestPostgres::shared() else {
        eprintln!("tls_when_the_url_asks: skipped on PostgreSQL: not installed");
        return;
    };
    let url = pg.create_database("tls");
    for (host, mode) in [("127.0.0.1", "verify-full"), ("localhost", "require")] {
        let url = format!("{}?sslmode={mode}", url.replace("127.0.0.1", host));
        // The server's certificate is from the test CA, not a system root: refused.
        let error = PostgresStore::connect(PostgresOptions::new(url.clone())).await.err().expect("unverified");
        assert!(error.is_temporary(), "{error}");
        let mut options = PostgresOptions::new(url);
        options.ca_file = Some(pg.ca_file().to_path_buf());
        let store = PostgresStore::connect(options).await.expect("verified against ca_file");
        let conn = store.conn().await.unwrap();
        let ssl: bool =
            conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
        assert!(ssl, "{host} {mode}: the session is encrypted");
    }
    // Without sslmode: no TLS.
    let store = PostgresStore::connect(PostgresOptions::new(url)).await.unwrap();
    let conn = store.conn().await.unwrap();
    let ssl: bool =
        conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(!ssl);
}

#[tokio::test]
async fn server_errors_become_store_errors() {
    let Some(url) = database_for("server_errors_become_store_errors") else { return };
    let store = PostgresStore::connect(PostgresOptions::new(url)).await.unwrap();
    let conn = store.conn().await.unwrap();
    conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')", &[]).await.unwrap();
    let duplicate = conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')", &[]).await.unwrap_err();
    assert!(matches!(db_error(duplicate), StoreError::Conflict(_)));
    let nul = conn.execute("INSERT INTO meta (key, value) VALUES ('n', $1)", &[&"a\0b"]).await.unwrap_err();
    assert!(matches!(db_error(nul), StoreError::Invalid(_)));
    let kind = conn
        .execute("INSERT INTO cert_map (account_id, kind, value) VALUES (1, 'serial', 'x')", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(kind), StoreError::Invalid(_)), "a CHECK refuses the value");
}

#[test]
fn sqlstates_map_by_class() {
    let conflict = |s: &SqlState| matches!(from_state(s, "m"), StoreError::Conflict(_));
    let invalid = |s: &SqlState| matches!(from_state(s, "m"), StoreError::Invalid(_));
    let temporary = |s: &SqlState| from_state(s, "m").is_temporary();
    assert!(conflict(&SqlState::UNIQUE_VIOLATION) && conflict(&SqlState::FOREIGN_KEY_VIOLATION));
    assert!(invalid(&SqlState::CHECK_VIOLATION) && invalid(&SqlState::NOT_NULL_VIOLATION));
    assert!(invalid(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) && invalid(&SqlState::CHARACTER_NOT_IN_REPERTOIRE));
    for state in [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::CONNECTION_FAILURE,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::DISK_FULL,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::UNDEFINED_TABLE,
    ] {
        assert!(temporary(&state), "{state:?}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port nobody listens on: a free one, closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = PostgresStore::connect(PostgresOptions::new(format!("postgres://u@127.0.0.1:{port}/d")))
        .await
        .err()
        .expect("refused");
    assert!(error.is_temporary(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_running_work_then_refuses() {
    let Some(url) = database_for("close_waits_for_running_work_then_refuses") else { return };
    let store = std::sync::Arc::new(PostgresStore::connect(PostgresOptions::new(url)).await.unwrap());
    let conn = store.conn().await.unwrap();
    let running = tokio::spawn(async move {
        conn.batch_execute("SELECT pg_sleep(0.3); INSERT INTO meta (key, value) VALUES ('late', 'v')").await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    store.close().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150), "close waited for the running statement");
    running.await.unwrap().expect("the running work finished");
    let error = store.get_meta("late").await.unwrap_err();
    assert!(matches!(&error, StoreError::Unavailable(m) if m.contains("closed")), "{error}");
}

/// The cursor lock (`cursors`): a second writer of a cursor table gets its id only once
/// the first writer's transaction has ended, so ids become visible in order; another
/// table's writer is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_ids_are_handed_out_in_commit_order() {
    use super::cursors::{lock, Cursor};
    let Some(url) = database_for("cursor_ids_are_handed_out_in_commit_order") else { return };
    let store = std::sync::Arc::new(PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap());
    const INSERT: &str = "INSERT INTO entity_changes (op, published_id, mailbox, at) VALUES ('ADD', $1, 'm@x', 0)
                          RETURNING serial";
    let mut first = store.conn().await.unwrap();
    let tx = first.transaction().await.unwrap();
    lock(&tx, Cursor::EntityChanges).await.unwrap();
    let serial_a: i64 = tx.query_one(INSERT, &[&"A"]).await.unwrap().get(0);
    let second = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            let mut conn = store.conn().await.unwrap();
            let tx = conn.transaction().await.unwrap();
            lock(&tx, Cursor::EntityChanges).await.unwrap();
            let serial: i64 = tx.query_one(INSERT, &[&"B"]).await.unwrap().get(0);
            tx.commit().await.unwrap();
            serial
        })
    };
    // The tracking events' lock is another one: free.
    let mut other = store.conn().await.unwrap();
    let other_tx = other.transaction().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), lock(&other_tx, Cursor::TrackingEvents))
        .await
        .expect("another cursor's lock is not held up")
        .unwrap();
    other_tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second writer waits for the first's transaction");
    let visible = raw(&url).await.query("SELECT serial FROM entity_changes", &[]).await.unwrap();
    assert!(visible.is_empty(), "nothing committed yet");
    tx.commit().await.unwrap();
    let serial_b = tokio::time::timeout(Duration::from_secs(10), second).await.expect("then it goes on").unwrap();
    assert!(serial_b > serial_a, "{serial_a} then {serial_b}");
    // A writer that rolls back leaves a gap, never a late row.
    let mut conn = store.conn().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    lock(&tx, Cursor::EntityChanges).await.unwrap();
    tx.query_one(INSERT, &[&"C"]).await.unwrap();
    tx.rollback().await.unwrap();
    let serials: Vec<i64> = raw(&url)
        .await
        .query("SELECT serial FROM entity_changes ORDER BY serial", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(serials, [serial_a, serial_b]);
}

/// SPEC 11: leasing NOTIFY outbox entries skips the ones another node is leasing at that
/// moment instead of waiting for it, and never hands out one it has leased.
#[tokio::test]
async fn notify_leases_skip_entries_locked_by_another_node() {
    use crate::interface::TrackingStore;
    let Some(url) = database_for("notify_leases_skip_entries_locked_by_another_node") else { return };
    let store = PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
    let client = raw(&url).await;
    for n in 1..=3 {
        client
            .execute(
                "INSERT INTO notify_outbox (record, domain, message_id, recipient, event, state, next_attempt,
                                            created_at, updated_at)
                 VALUES ('r', 'galkam.test', $1, 'a@x', 'downloaded', 'pending', 0, 0, 0)",
                &[&format!("<{n}@galkam.test>")],
            )
            .await
            .unwrap();
    }
    let mut other = raw(&url).await;
    let tx = other.transaction().await.unwrap();
    let locked: i64 =
        tx.query_one("SELECT id FROM notify_outbox ORDER BY id LIMIT 1 FOR UPDATE", &[]).await.unwrap().get(0);
    let leased = tokio::time::timeout(Duration::from_secs(5), store.lease_notifies(10, 100, 10))
        .await
        .expect("not waiting for the other node")
        .unwrap();
    let ids: Vec<i64> = leased.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&locked));
    tx.rollback().await.unwrap();
    let rest = store.lease_notifies(10, 100, 10).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [locked]);
    assert!(store.lease_notifies(11, 100, 10).await.unwrap().is_empty());
}

/// SPEC 11: what one node announces reaches the others (LISTEN/NOTIFY), topic and all; a
/// node whose listening connection is not up yet still gets later announcements.
#[tokio::test]
async fn an_announcement_reaches_the_other_nodes() {
    use crate::interface::NodeStore;
    let Some(url) = database_for("an_announcement_reaches_the_other_nodes") else { return };
    let a = PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap();
    let b = PostgresStore::connect(PostgresOptions::new(url)).await.unwrap();
    let mut heard = b.announcements().expect("PostgreSQL announces");
    // B's LISTEN may not be up at once: announce until it hears, within a bound.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        a.announce("notify_outbox").await.unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(200), heard.recv()).await {
            Ok(Ok(topic)) => {
                assert_eq!(topic, "notify_outbox");
                break;
            }
            _ if tokio::time::Instant::now() < deadline => continue,
            other => panic!("node B heard nothing: {other:?}"),
        }
    }
    a.announce("other").await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match heard.recv().await {
                Ok(topic) if topic == "notify_outbox" => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next.unwrap(), "other");
}

/// Version 7 (SPEC 9): an existing database's accounts get every folder, and their mail
/// gets UIDs in arrival order per folder, each folder's next UID after its last.
#[tokio::test]
async fn existing_mail_is_numbered_into_folders() {
    let Some(url) = database_for("existing_mail_is_numbered_into_folders") else { return };
    let client = raw(&url).await;
    client
        .batch_execute("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .await
        .unwrap();
    for (n, sql) in MIGRATIONS[..6].iter().enumerate() {
        client.batch_execute(sql).await.unwrap();
        client.execute("INSERT INTO schema_version VALUES ($1, 0)", &[&(n as i64 + 1)]).await.unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO domains (name, created_at) VALUES ('example.org', 0);
             INSERT INTO accounts (id, address, domain, created_at) VALUES (7, 'a@example.org', 'example.org', 0);
             INSERT INTO messages (id, queue_id, sender, auth_results, body_8bit, smtputf8, received_at, size, data)
                 VALUES (1, 'Q1', '', 'none', FALSE, FALSE, 0, 1, '\\x41');
             INSERT INTO mailbox (id, account_id, folder, message_id, received_at, size) VALUES
                 (10, 7, 'INBOX', 1, 0, 1), (11, 7, 'Junk', 1, 0, 1), (12, 7, 'INBOX', 1, 0, 1);",
        )
        .await
        .unwrap();
    let store = PostgresStore::connect(PostgresOptions::new(url)).await.unwrap();
    let (inbox, messages) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    let numbered: Vec<(i64, u32)> = messages.iter().map(|m| (m.entry_id, m.uid)).collect();
    assert_eq!(numbered, [(10, 1), (12, 2)]);
    assert_eq!(inbox.uid_next, 3);
    let (junk, messages) = store.folder_messages("a@example.org", "Junk").await.unwrap().unwrap();
    assert_eq!((junk.uid_next, messages[0].uid, junk.special_use.as_deref()), (2, 1, Some("\\Junk")));
    assert_eq!(store.list_folders("a@example.org").await.unwrap().len(), 7);
}

/// The backend process ids of `count` connections taken from the pool at once.
async fn backend_pids(store: &PostgresStore, count: usize) -> BTreeSet<i32> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(store.conn().await.expect("a connection"));
    }
    let mut pids = BTreeSet::new();
    for conn in &held {
        pids.insert(conn.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0));
    }
    pids
}

/// Connections the pool opened for a caller on another runtime live on once that runtime
/// is gone: a server's session threads (one runtime each) stop before the store closes,
/// and the pool hands out what they opened afterwards. The same backends serve after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_for_another_runtime_outlive_it() {
    let Some(url) = database_for("connections_outlive_their_caller") else { return };
    let store = std::sync::Arc::new(PostgresStore::connect(PostgresOptions::new(url.clone())).await.unwrap());
    const HELD: usize = 4;
    let on_other = std::sync::Arc::clone(&store);
    let opened = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(backend_pids(&on_other, HELD))
        // The runtime is dropped here, with whatever tasks it runs.
    })
    .join()
    .unwrap();
    assert_eq!(opened.len(), HELD);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive: BTreeSet<i32> = raw(&url)
        .await
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(opened.is_subset(&alive), "backends {opened:?} still connected, among {alive:?}");
    assert_eq!(backend_pids(&store, HELD).await, opened, "the pool serves on the connections it had");
    assert_eq!(store.conn().await.unwrap().query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}
