//! Records the store keeps.

use std::fmt;
use std::str::FromStr;

use vouchmail_proto::sasl::secrets::Secrets;

/// What a local domain does with mail whose sender is not authenticated (SPEC 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenderPolicy {
    /// Refuse it (550 5.7.1): the seeds' rule.
    #[default]
    Require,
    /// Accept it, marked unauthenticated.
    Tag,
    /// Accept it.
    Accept,
}

impl SenderPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            SenderPolicy::Require => "require",
            SenderPolicy::Tag => "tag",
            SenderPolicy::Accept => "accept",
        }
    }
}

impl fmt::Display for SenderPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SenderPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "require" => Ok(SenderPolicy::Require),
            "tag" => Ok(SenderPolicy::Tag),
            "accept" => Ok(SenderPolicy::Accept),
            other => Err(format!("unknown sender policy '{other}' (expected require, tag or accept)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub policy: SenderPolicy,
    pub catch_all: Option<String>,
    pub created_at: i64,
    /// ODMR customer accounts that may take this domain's mail with ATRN (RFC 2645); when
    /// not empty the domain is held: mail waits in the queue instead of MX delivery.
    pub held_for: Vec<String>,
    /// host:port that ETRN (RFC 1985) for this domain delivers to.
    pub etrn_host: Option<String>,
}

/// A mailbox folder (SPEC 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Folder {
    Inbox,
    Junk,
    Tracking,
}

impl Folder {
    pub const ALL: [Folder; 3] = [Folder::Inbox, Folder::Junk, Folder::Tracking];

    pub fn as_str(&self) -> &'static str {
        match self {
            Folder::Inbox => "INBOX",
            Folder::Junk => "Junk",
            Folder::Tracking => "Tracking",
        }
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Folder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Folder::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown folder '{s}' (expected INBOX, Junk or Tracking)"))
    }
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub address: String,
    pub secrets: Secrets,
    /// 0 means no quota.
    pub quota_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub address: String,
    pub domain: String,
    pub secrets: Secrets,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub message_count: u64,
    pub created_at: i64,
}

impl Account {
    /// Whether `extra` more octets would go over the quota (SPEC 5, 452 4.2.2).
    pub fn over_quota(&self, extra: u64) -> bool {
        self.quota_bytes > 0 && self.used_bytes.saturating_add(extra) > self.quota_bytes
    }
}

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A local account's mailbox: delivered in the same transaction that accepts the message.
    Mailbox { account_id: i64, folder: Folder, recipient: String },
    /// Left queued for the outbound scheduler.
    Queue { recipient: String },
    /// Queued for a held (ODMR customer) domain: kept until ATRN or ETRN.
    Held { recipient: String, domain: String },
}

/// The envelope facts kept with a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The reverse-path, empty for the null sender `<>`.
    pub sender: String,
    /// RFC 3461 RET: "FULL" or "HDRS".
    pub dsn_ret: Option<String>,
    pub dsn_envid: Option<String>,
    /// The AUTH= value recorded for the message (RFC 4954 5): `<>` or an identity.
    pub auth_param: Option<String>,
    /// The identity the client authenticated as, if any.
    pub authenticated_as: Option<String>,
    /// The Authentication-Results method string recorded (SPEC 2).
    pub auth_results: String,
    pub body_8bit: bool,
    pub smtputf8: bool,
}

/// Per-recipient DSN facts (RFC 3461 4.1, 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientDsn {
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub queue_id: String,
    pub envelope: Envelope,
    pub received_at: i64,
    /// The full message with our trace fields, or its start when `spooled` holds the rest.
    pub data: Vec<u8>,
    /// The rest of a large message, in a spool file: the store copies it after `data`
    /// without reading it into memory whole.
    pub spooled: Option<SpooledBody>,
    pub deliveries: Vec<(Delivery, RecipientDsn)>,
}

impl NewMessage {
    /// Octets of the whole message.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + self.spooled.as_ref().map_or(0, |s| s.len)
    }
}

/// Message content in a file: its first `len` octets.
#[derive(Debug, Clone)]
pub struct SpooledBody {
    pub file: std::sync::Arc<std::fs::File>,
    pub len: u64,
}

impl PartialEq for SpooledBody {
    fn eq(&self, other: &SpooledBody) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file) && self.len == other.len
    }
}

impl Eq for SpooledBody {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedMessage {
    pub message_id: i64,
    pub queue_id: String,
}

/// State of a queue entry (SPEC 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    Queued,
    InFlight,
    Deferred,
    Delivered,
    Bounced,
}

impl QueueState {
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::InFlight => "inflight",
            QueueState::Deferred => "deferred",
            QueueState::Delivered => "delivered",
            QueueState::Bounced => "bounced",
        }
    }

    pub fn parse(s: &str) -> Option<QueueState> {
        [QueueState::Queued, QueueState::InFlight, QueueState::Deferred, QueueState::Delivered, QueueState::Bounced]
            .into_iter()
            .find(|q| q.as_str() == s)
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: i64,
    pub queue_id: String,
    pub message_id: i64,
    pub sender: String,
    pub recipient: String,
    pub dsn: RecipientDsn,
    pub state: QueueState,
    pub attempts: u32,
    pub next_attempt: i64,
    pub last_reply: Option<String>,
    pub created_at: i64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// The entry's id: stable while the entry exists, but a deleted entry's id may be
    /// given again later (SQLite rowids), so use [`MailboxEntry::unique_id`] for anything
    /// that outlives the entry.
    pub id: i64,
    pub folder: Folder,
    pub message_id: i64,
    pub queue_id: String,
    pub received_at: i64,
    pub size: u64,
}

impl MailboxEntry {
    /// An id that names this entry for ever, never another one (the POP3 UIDL, RFC 1939 7):
    /// the entry id with the message's random queue id, `<id>.<queue id>`.
    pub fn unique_id(&self) -> String {
        format!("{}.{}", self.id, self.queue_id)
    }
}

/// What one RCPT address is in the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientRecord {
    /// The address's domain, when it is ours.
    pub domain: Option<Domain>,
    pub account: Option<Account>,
    /// When the address is not an account: the targets of the alias of that name.
    pub alias_targets: Vec<String>,
}

/// How a client certificate is matched to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertMatch {
    /// SHA-256 of the DER certificate, hex.
    Fingerprint,
    /// The subject distinguished name, in any usual spelling (RFC 4514 or OpenSSL's).
    Subject,
}

impl CertMatch {
    pub fn as_str(&self) -> &'static str {
        match self {
            CertMatch::Fingerprint => "fingerprint",
            CertMatch::Subject => "subject",
        }
    }

    /// Fingerprints in lower-case hex without separators. Subjects as their attributes
    /// `TYPE=value`, sorted and joined by commas, so that the RFC 4514 form (`CN=a,O=b`),
    /// OpenSSL's default (`O = b, CN = a`) and the TLS layer's form all compare equal.
    pub fn normalize(&self, value: &str) -> String {
        match self {
            CertMatch::Fingerprint => {
                value.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
            }
            CertMatch::Subject => {
                let value = value.trim().trim_start_matches("subject=").trim();
                let mut parts: Vec<String> = value
                    .split([',', '/'])
                    .filter_map(|part| {
                        let (key, val) = part.split_once('=')?;
                        Some(format!("{}={}", key.trim().to_ascii_uppercase(), val.trim()))
                    })
                    .collect();
                parts.sort();
                parts.join(",")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMapping {
    pub address: String,
    pub kind: CertMatch,
    pub value: String,
}

/// A queue entry leased for delivery (SPEC 5): it stays `inflight` until the lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedEntry {
    pub entry: QueueEntry,
    /// A delay notification (RFC 3464 `delayed`) was already sent for it.
    pub delay_warned: bool,
}

/// The result of one delivery attempt for one queue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUpdate {
    pub id: i64,
    /// `Delivered`, `Bounced`, `Deferred`, or `Queued` to hand the entry back untried.
    pub state: QueueState,
    pub last_reply: Option<String>,
    pub next_attempt: i64,
    /// Count this as an attempt.
    pub attempted: bool,
    /// A delay notification has now been sent.
    pub delay_warned: bool,
}

/// A stored message with its envelope, for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub queue_id: String,
    pub envelope: Envelope,
    pub received_at: i64,
    pub data: Vec<u8>,
}

/// Pending queue entries by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub queued: u64,
    pub inflight: u64,
    pub deferred: u64,
}

impl QueueCounts {
    pub fn pending(&self) -> u64 {
        self.queued + self.inflight + self.deferred
    }
}

/// A delivery-notification event (SPEC 8, ATTrack records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackingKind {
    /// The recipient retrieved the message (POP3 RETR, SPEC 9).
    Downloaded,
    /// The recipient reported decrypting it (RECEIPT DECRYPTED).
    Decrypted,
    /// The recipient reported failing to decrypt it (RECEIPT FAILED).
    DecryptFailed,
}

impl TrackingKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TrackingKind::Downloaded => "downloaded",
            TrackingKind::Decrypted => "decrypted",
            TrackingKind::DecryptFailed => "decrypt_failed",
        }
    }

    pub fn parse(s: &str) -> Option<TrackingKind> {
        [TrackingKind::Downloaded, TrackingKind::Decrypted, TrackingKind::DecryptFailed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for TrackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded tracking event: what an ATTrack CSV record says (SPEC 8), plus the ids
/// to find the message. Kept after the message itself is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingEvent {
    /// Increasing, never reused: a cursor for readers (`list_tracking_events`).
    pub id: i64,
    /// Unix time of the event.
    pub occurred_at: i64,
    /// The stored message's queue id.
    pub queue_id: String,
    /// The message's Message-ID field (RFC 5322 3.6.4), angle brackets included; empty
    /// when it has none.
    pub message_id: String,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// The local recipient, the mailbox owner.
    pub recipient: String,
    pub kind: TrackingKind,
}

/// AuthKey timing of an address (SPEC 7.1): a new key every `agi_secs`, each valid until
/// `agi_secs + avt_secs` after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthKeySettings {
    /// Key generation interval, seconds (at least 1).
    pub agi_secs: u64,
    /// Key validity after the next key, seconds.
    pub avt_secs: u64,
}

/// Where an address's [`AuthKeySettings`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsSource {
    /// Set for the address itself.
    Address,
    /// The default of its domain.
    Domain,
}

/// One AuthKey of an address (SPEC 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub address: String,
    /// 64 characters of `[A-Za-z0-9]`.
    pub key: String,
    /// Unix time it was made.
    pub created_at: i64,
    /// Unix time after which it is no longer valid (created + AGI + AVT).
    pub expires_at: i64,
}

/// The answer given to one VERIFY request (SPEC 7.1: every VERIFY is logged for reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyLogEntry {
    /// Unix time of the request.
    pub at: i64,
    /// The asking server's address (IP and port) and transport, e.g. `udp 192.0.2.1:4000`.
    pub peer: String,
    /// The address the request named.
    pub address: String,
    /// `VALIDKEY`, `INVALIDKEY` or `ERROR <reason>`.
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::CertMatch;

    #[test]
    fn subjects_compare_in_every_usual_spelling() {
        let canonical = CertMatch::Subject.normalize("CN=alice,O=Example");
        assert_eq!(canonical, "CN=alice,O=Example");
        for spelling in
            ["O = Example, CN = alice", "subject=O = Example, CN = alice", "/O=Example/CN=alice", "o=Example, cn=alice"]
        {
            assert_eq!(CertMatch::Subject.normalize(spelling), canonical, "{spelling}");
        }
        assert_eq!(CertMatch::Fingerprint.normalize("AB:cd:01"), "abcd01");
    }
}
