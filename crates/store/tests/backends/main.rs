//! The store suite, once for every backend (issue 21 item 3): each test is written once
//! against the store's interface and runs on SQLite and, when PostgreSQL is installed, on
//! a fresh database of a throwaway cluster (`vouchmail_testkit::pg`); without PostgreSQL
//! those runs pass with a note on standard error.
//!
//! A concern's tests live in a file of their own (`node.rs`, `accounts.rs`, `queue.rs`,
//! `mailboxes.rs`, `tracking.rs`, `authkey.rs`, `federation.rs`, `dmarc.rs`, `folders.rs`), each an `async fn`
//! taking the concern's trait object, or generic over the concerns it needs (`accounts.rs`
//! on), listed in one [`on_every_backend!`] that makes a `sqlite` and a `postgres` test of
//! it:
//! `cargo test -p vouchmail-store --test backends node::` runs them, and a failure names
//! its backend (`node::meta_values::postgres`).

#[macro_use]
mod support;

mod accounts;
mod admin_tokens;
mod authkey;
mod dmarc;
mod federation;
mod folders;
mod mailboxes;
mod node;
mod queue;
mod tracking;
