//! The embedded store: SQLite in WAL mode with `synchronous=FULL`.
//!
//! All writes go through one writer thread that batches the jobs waiting for it into a
//! single transaction (group commit): one fsync of the WAL makes a whole batch durable, and
//! every caller is answered only after that commit. Each job runs inside a savepoint, so a
//! failing job (a duplicate user, say) does not undo its neighbours. Reads use a small pool
//! of connections on tokio's blocking threads; WAL lets them run beside the writer and
//! beside other processes (the CLI) using the same file.
//!
//! One file per concern implements that concern's trait (`accounts`, `queue`,
//! `mailboxes`, `tracking`, `authkey`, `messenger`, `node`, `dkim`, `dmarc`, `admin_tokens`), over the shared `base`;
//! `schema` holds the migrations, `writer` the handle.

mod accounts;
mod admin_tokens;
mod authkey;
mod base;
mod dkim;
mod dmarc;
mod folder_rows;
mod folders;
mod held;
mod mailboxes;
mod messenger;
mod node;
mod outbound;
mod queue;
mod schema;
#[cfg(test)]
mod tests;
mod tracking;
mod writer;

pub use writer::SqliteStore;
