//! The throwaway PostgreSQL cluster: it starts, answers on its port with two fresh
//! databases, and leaves nothing behind when dropped. Skips when PostgreSQL is not
//! installed.

use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use vouchmail_testkit::pg::TestPostgres;

fn psql(pg: &TestPostgres, url: &str, sql: &str) -> String {
    let out = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_cluster_starts_serves_databases_and_goes_away() {
    let started = Instant::now();
    let Some(pg) = TestPostgres::start() else {
        eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql)");
        return;
    };
    let start_time = started.elapsed();
    let created = Instant::now();
    let (a, b) = (pg.create_database("first test"), pg.create_database("first test"));
    let create_time = created.elapsed() / 2;
    eprintln!("cluster started in {start_time:?}; a database made in {create_time:?}");
    assert_ne!(a, b, "each call makes its own database");
    psql(&pg, &a, "CREATE TABLE t (x BIGINT)");
    assert_eq!(psql(&pg, &b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"), "0");
    // The durability settings the store's promise rests on (SPEC 11).
    assert_eq!(psql(&pg, &a, "SHOW fsync"), "on");
    assert_eq!(psql(&pg, &a, "SHOW synchronous_commit"), "on");
    // Only on loopback; TLS on, with a certificate the test CA issued.
    assert_eq!(psql(&pg, &a, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(psql(&pg, &a, "SHOW ssl"), "on");
    let verified = format!("{a}?sslmode=verify-full&sslrootcert={}", pg.ca_file().display());
    assert_eq!(psql(&pg, &verified, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "t");

    let port = pg.port();
    let folder = std::path::PathBuf::from(psql(&pg, &a, "SHOW data_directory"));
    drop(pg);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the server is stopped");
    assert!(!folder.exists(), "the folder is removed");
}

#[test]
fn the_shared_cluster_is_one_per_process() {
    let Some(first) = TestPostgres::shared() else {
        eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql)");
        return;
    };
    let second = TestPostgres::shared().expect("started once, there for every test");
    assert_eq!(first.port(), second.port());
    let url = first.create_database("shared");
    assert_eq!(psql(first, &url, "SELECT 1"), "1");
}
