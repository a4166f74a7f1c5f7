//! What every session of one IMAP listener shares, and what one connection holds while its
//! session runs: the user once logged in, and the selected folder as this driver last saw
//! it (for the changes it pushes, `watch.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use vouchmail_proto::imap::session::{Content, Session, SessionConfig};
use vouchmail_store::{FolderMessage, FolderVersion, Store, StoreError};

use crate::auth::guard::AuthGuard;
use crate::auth::limits::AuthLimiter;
use crate::listen::limits::ConnectionLimiter;
use crate::net::tls::{MaybeTls, Tls};

/// What every session of one listener shares.
pub struct ImapContext {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub auth_limiter: Arc<AuthLimiter>,
    pub tls: Option<Tls>,
    /// Port 993: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// Rung when a download queues a tracking record for NOTIFY (SPEC 8.3).
    pub outbox_bell: crate::rules::tracking::OutboxBell,
    /// How often a selected folder is looked at for changes made elsewhere.
    pub watch_interval: Duration,
    /// This listener's counters in the server's registry (SPEC 12).
    pub metrics: crate::support::metrics::ListenerMetrics,
}

/// The selected folder: its name as stored, and its messages as last seen, in 12 bytes
/// each (the session's view has their flags; a session may idle for hours on a large
/// folder).
pub struct Selected {
    pub folder: String,
    pub uid_validity: u32,
    /// The UIDs, ascending.
    uids: Vec<u32>,
    /// The entry id of each UID (same index).
    entries: Vec<i64>,
    /// The highest mod-sequence of the messages read: a message above it changed since
    /// (RFC 7162 3.1: every change takes a new, higher mod-sequence of its folder).
    pub seen_modseq: u64,
    /// The folder's stamp when the messages were read (or just before): while it stays,
    /// the folder has not changed.
    pub stamp: Option<FolderStamp>,
}

impl Selected {
    pub fn new(folder: String, uid_validity: u32, messages: &[FolderMessage], stamp: Option<FolderStamp>) -> Selected {
        let mut selected =
            Selected { folder, uid_validity, uids: Vec::new(), entries: Vec::new(), seen_modseq: 0, stamp };
        selected.read(messages);
        selected
    }

    /// Takes the folder's messages as read now.
    pub fn read(&mut self, messages: &[FolderMessage]) {
        let mut sorted: Vec<(u32, i64)> = messages.iter().map(|m| (m.uid, m.entry_id)).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|(uid, _)| *uid);
        self.uids = sorted.iter().map(|(uid, _)| *uid).collect();
        self.entries = sorted.iter().map(|(_, entry)| *entry).collect();
        self.seen_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0);
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.uids.binary_search(&uid).is_ok()
    }

    pub fn entry_of(&self, uid: u32) -> Option<i64> {
        self.uids.binary_search(&uid).ok().map(|index| self.entries[index])
    }

    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// After this session's own EXPUNGE or MOVE.
    pub fn remove(&mut self, uid: u32) {
        if let Ok(index) = self.uids.binary_search(&uid) {
            self.uids.remove(index);
            self.entries.remove(index);
        }
    }
}

/// What changes whenever a folder's contents do: its numbers in the store, and for the
/// Tracking folder the newest record's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderStamp {
    pub version: FolderVersion,
    pub newest_record: Option<i64>,
}

/// The next batch of a FETCH or SEARCH (the session's `next`), read from the store while
/// the session answers the current one: on two cores the store's thread and the session's
/// then work at once.
pub struct ReadAhead {
    pub uids: Vec<u32>,
    pub content: Content,
    pub read: tokio::task::JoinHandle<Result<StoredBatch, StoreError>>,
}

/// A batch as the store gives it.
pub type StoredBatch = Vec<vouchmail_store::FetchedMessage>;

impl ReadAhead {
    pub fn cancel(self) {
        self.read.abort();
    }
}

/// Output held until the writes of its bodies' `downloaded` events are done (SPEC 9,
/// `messages.rs`).
pub struct HeldOutput {
    pub output: Vec<u8>,
    pub writes: tokio::task::JoinSet<()>,
}

/// One connection's driver: what the stages (a file each) act on besides the session.
pub struct Connection<'a> {
    pub stream: MaybeTls,
    pub peer: SocketAddr,
    pub context: &'a ImapContext,
    /// AUTH failure accounting of this connection (SPEC 3).
    pub auth: AuthGuard,
    /// The account, once logged in.
    pub user: Option<String>,
    pub selected: Option<Selected>,
    /// Counted in the IDLE gauge while the session idles (SPEC 12).
    pub idling: Option<crate::support::metrics::GaugeGuard>,
    /// The messages whose `downloaded` events are still to be recorded (`messages.rs`).
    pub downloads: Vec<vouchmail_store::TrackingSubject>,
    /// What the `downloaded` events of the batch just read whole record, by mailbox entry:
    /// taken from that read, so recording them looks nothing up (`messages.rs`).
    pub read_tracked: std::collections::HashMap<i64, vouchmail_store::TrackedMessage>,
    /// The next batch of the running FETCH or SEARCH, being read (`messages.rs`).
    pub read_ahead: Option<Box<ReadAhead>>,
    /// Output waiting for its `downloaded` events to be recorded, oldest first (`messages.rs`).
    pub held: std::collections::VecDeque<HeldOutput>,
}

impl<'a> Connection<'a> {
    pub fn new(stream: MaybeTls, peer: SocketAddr, context: &'a ImapContext) -> Connection<'a> {
        Connection {
            stream,
            peer,
            context,
            auth: AuthGuard::default(),
            user: None,
            selected: None,
            idling: None,
            downloads: Vec::new(),
            read_tracked: std::collections::HashMap::new(),
            held: std::collections::VecDeque::new(),
            read_ahead: None,
        }
    }

    pub fn store(&self) -> &'a dyn Store {
        self.context.store.as_ref()
    }

    /// The logged-in user; every event after login has one.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or_default()
    }
}

crate::listen::session_shell!(Session, vouchmail_proto::imap::session::Event);
