//! Issue 20 item 3: no circles between the files of any crate, and no arrow from a lower
//! room up. The rooms of each crate are listed bottom first; README "Where things are"
//! explains them. Run alone: `cargo test -p vouchmail-testkit --test layout`.

use std::path::Path;

use vouchmail_testkit::layout::read_crate;

/// Each crate, with its rooms from the bottom up (empty: files only, no rooms).
const CRATES: &[(&str, &[&str])] = &[
    (
        "proto",
        &[
            "time",
            "csv",
            "headers",
            "sasl",
            "smtp::address",
            "smtp::reply",
            "smtp::data",
            "smtp::trace",
            "smtp::xtext",
            "smtp::client",
            "messenger",
            "smtp::command",
            "smtp::session",
            "smtp",
            "dsn",
            "pop3",
            "imap",
            "authkey",
        ],
    ),
    ("server", &["support", "config", "net", "auth", "rules", "federation", "jobs", "ops", "listen"]),
    ("client", &[]),
    ("store", &[]),
    ("smime", &[]),
    ("testkit", &[]),
    ("vouchmail", &[]),
];

#[test]
fn no_circles_and_no_arrows_up() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    for (name, rooms) in CRATES {
        let src = crates.join(name).join("src");
        let graph = read_crate(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        // `LAYOUT_PRINT=server` prints which files each file of that crate uses.
        if std::env::var("LAYOUT_PRINT").is_ok_and(|c| c == *name) {
            for (file, uses) in &graph.uses {
                println!("{file}: {}", uses.iter().cloned().collect::<Vec<_>>().join(" "));
            }
        }
        for circle in graph.circles() {
            problems.push(format!("{name}: circle: {}", circle.join(" -> ")));
        }
        if !rooms.is_empty() {
            for room in graph.unranked(rooms) {
                problems.push(format!("{name}: {room} is in no room listed in tests/layout.rs"));
            }
            for (from, to) in graph.upward(rooms) {
                problems.push(format!("{name}: arrow up: {from} uses {to}"));
            }
        }
    }
    assert!(problems.is_empty(), "{} layout problems:\n{}", problems.len(), problems.join("\n"));
}
