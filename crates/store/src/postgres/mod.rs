//! The PostgreSQL store, for several nodes on one database (SPEC 11, issue 21).
//!
//! A pool of connections (deadpool-postgres over tokio-postgres); every session runs with
//! `synchronous_commit = on`, so a commit has returned only once the server has flushed it
//! to its WAL: the same promise as the SQLite store's `synchronous=FULL` (a 250 only after
//! the message is durable, SPEC 3). TLS to the server when the URL asks for it
//! (`sslmode=require` or `verify-full`), the certificate verified against the system's
//! roots plus `[store] ca_file`. Versioned migrations run at connect, once however many
//! nodes start together (`schema`).
//!
//! Tables and columns are named as in the SQLite store, and the SQL prefers the portable
//! form, so the two backends read alike and a PostgreSQL-compatible distributed database
//! can take PostgreSQL's place (SPEC 11).
//!
//! One file per concern implements that concern's trait, as `sqlite/` does (`node`,
//! `accounts`, `queue`, `mailboxes`, `tracking`, `authkey`, `messenger`) over the shared
//! `base` and `rows`; `messages` writes and removes messages for every concern, `commit`
//! group-commits received ones (several sessions' messages in one transaction, SPEC 5),
//! `cursors` hands out the ids readers follow as cursors in commit order, `listen` hears
//! what other nodes announce (LISTEN/NOTIFY); `options` reads
//! the URL, `tls` makes the TLS client, `schema` holds the migrations, `pool` the handle.

mod accounts;
mod admin_tokens;
mod authkey;
mod base;
mod commit;
mod cursors;
mod dkim;
mod dmarc;
mod folder_rows;
mod folders;
mod listen;
mod mailboxes;
mod messages;
mod messenger;
mod node;
mod options;
mod pool;
mod queue;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod tls;
mod tracking;

pub(crate) use base::db_error;
pub use options::PostgresOptions;
pub use pool::PostgresStore;
