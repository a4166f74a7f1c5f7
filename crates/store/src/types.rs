//! Records the store keeps.

use crate::error::StoreError;
use std::fmt;
use std::str::FromStr;

use vouchmail_proto::sasl::secrets::Secrets;

/// What a local domain does with one case of unauthenticated mail (SPEC 2: the six actions
/// of the Simplicato recipient server, seeds 001/002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// Delivered to INBOX.
    Accept,
    /// Delivered to the Junk folder ("accept as spam").
    Junk,
    /// Refused with 550 5.7.1.
    Reject,
    /// Refused, with a reply text telling the sender how to authenticate.
    RejectNotifySender,
    /// Refused, and a short notice goes to the recipient's INBOX.
    RejectNotifyRecipient,
    /// Both of the above.
    RejectNotifyBoth,
}

impl PolicyAction {
    pub const ALL: [PolicyAction; 6] = [
        PolicyAction::Accept,
        PolicyAction::Junk,
        PolicyAction::Reject,
        PolicyAction::RejectNotifySender,
        PolicyAction::RejectNotifyRecipient,
        PolicyAction::RejectNotifyBoth,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyAction::Accept => "accept",
            PolicyAction::Junk => "junk",
            PolicyAction::Reject => "reject",
            PolicyAction::RejectNotifySender => "reject-notify-sender",
            PolicyAction::RejectNotifyRecipient => "reject-notify-recipient",
            PolicyAction::RejectNotifyBoth => "reject-notify-both",
        }
    }

    /// The message is delivered (to INBOX or Junk).
    pub fn delivers(&self) -> bool {
        matches!(self, PolicyAction::Accept | PolicyAction::Junk)
    }

    /// The refusal's text explains how to authenticate.
    pub fn notifies_sender(&self) -> bool {
        matches!(self, PolicyAction::RejectNotifySender | PolicyAction::RejectNotifyBoth)
    }

    /// The recipient gets a notice of the refused message.
    pub fn notifies_recipient(&self) -> bool {
        matches!(self, PolicyAction::RejectNotifyRecipient | PolicyAction::RejectNotifyBoth)
    }
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyAction {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        // SPEC 2: the old names stay valid.
        let name = match lower.as_str() {
            "require" => "reject",
            "tag" => "junk",
            other => other,
        };
        PolicyAction::ALL.into_iter().find(|a| a.as_str() == name).ok_or_else(|| {
            StoreError::Invalid(format!(
                "unknown sender policy action '{s}' (expected accept, junk, reject, reject-notify-sender, \
                 reject-notify-recipient or reject-notify-both; require and tag are old names of reject and junk)"
            ))
        })
    }
}

/// A local domain's sender policy (SPEC 2): the action for mail no method authenticated,
/// set separately for `unauthenticated` (no method passed, no AuthKey) and `forged` (an
/// `X-Auth-Key` the sender's Authentication Server called INVALIDKEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenderPolicy {
    pub unauthenticated: PolicyAction,
    pub forged: PolicyAction,
    /// A DMARC pass (an aligned SPF or DKIM pass) authenticates the sender (SPEC 2, 13);
    /// false: only the address-level methods count (the seeds' strict rule).
    pub dmarc_counts: bool,
}

impl SenderPolicy {
    /// The default: both cases refused (the seeds' rule).
    pub const REJECT: SenderPolicy = SenderPolicy::uniform(PolicyAction::Reject);
    pub const JUNK: SenderPolicy = SenderPolicy::uniform(PolicyAction::Junk);
    pub const ACCEPT: SenderPolicy = SenderPolicy::uniform(PolicyAction::Accept);

    /// The same action for both cases.
    pub const fn uniform(action: PolicyAction) -> SenderPolicy {
        SenderPolicy { unauthenticated: action, forged: action, dmarc_counts: true }
    }
}

impl Default for SenderPolicy {
    fn default() -> Self {
        SenderPolicy::REJECT
    }
}

/// One action when both cases agree (`reject`), else `unauthenticated=junk,forged=reject`.
impl fmt::Display for SenderPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unauthenticated == self.forged {
            f.write_str(self.unauthenticated.as_str())
        } else {
            write!(f, "unauthenticated={},forged={}", self.unauthenticated, self.forged)
        }
    }
}

/// Parses what Display writes: one action for both cases, or `unauthenticated=A,forged=B`
/// (either part may be left out; it then defaults to `reject`).
impl FromStr for SenderPolicy {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains('=') {
            return s.trim().parse().map(SenderPolicy::uniform);
        }
        let mut policy = SenderPolicy::REJECT;
        for part in s.split(',') {
            let (case, action) =
                part.split_once('=').ok_or_else(|| StoreError::Invalid(format!("'{part}' is not CASE=ACTION")))?;
            let action: PolicyAction = action.trim().parse()?;
            match case.trim().to_ascii_lowercase().as_str() {
                "unauthenticated" => policy.unauthenticated = action,
                "forged" => policy.forged = action,
                other => {
                    return Err(StoreError::Invalid(format!(
                        "unknown sender policy case '{other}' (expected unauthenticated or forged)"
                    )))
                }
            }
        }
        Ok(policy)
    }
}

/// A DKIM signing key of a local domain (RFC 6376 3.6.1, RFC 8463).
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// The private key, PKCS#8 DER: a secret, kept like the password hashes.
    pub private_key: Vec<u8>,
    /// The `p=` of the TXT record: base64 of the SubjectPublicKeyInfo (RSA) or of the raw
    /// 32-octet key (Ed25519, RFC 8463 4.2).
    pub public_key: String,
    /// Signs new mail; an inactive key is still published until retired.
    pub active: bool,
    pub created_at: i64,
}

/// A folder of an account (SPEC 9, RFC 9051 2.3.1.1, RFC 7162 3.1.1), with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub name: String,
    /// RFC 6154: `\Junk`, `\Sent`, ...
    pub special_use: Option<String>,
    pub uid_validity: u32,
    /// The UID the next message will have at least.
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub subscribed: bool,
    pub messages: u32,
}

/// A folder's numbers, which change with every change to its messages: a new message takes
/// the next UID, and a flag change or an expunge (IMAP's, or a POP3 DELE) a new
/// mod-sequence (RFC 7162 3.1); a folder made again has a new UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderVersion {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
}

/// One message of a folder as IMAP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderMessage {
    pub uid: u32,
    /// The mailbox entry (what POP3 and `delete_mailbox_entries` name).
    pub entry_id: i64,
    pub message_id: i64,
    /// System flags and keywords, as the client set them (`\Seen`, `$Forwarded`, ...).
    pub flags: Vec<String>,
    pub modseq: u64,
    /// The internal date (RFC 9051 2.3.3): when it arrived, Unix time.
    pub received_at: i64,
    pub size: u64,
}

/// How STORE changes the flags of messages (RFC 9051 6.4.6): `+FLAGS`, `-FLAGS`, `FLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOperation {
    Add,
    Remove,
    Replace,
}

/// A STORE: these flags, this way, on the messages with these UIDs; with CONDSTORE's
/// `UNCHANGEDSINCE` (RFC 7162 3.1.3), only on those not changed since that mod-sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    pub uids: Vec<u32>,
    pub operation: FlagOperation,
    pub flags: Vec<String>,
    pub unchanged_since: Option<u64>,
}

/// What a STORE did: the messages whose flags changed, as they are now (one new
/// mod-sequence for all of them), and the UIDs UNCHANGEDSINCE kept from changing (RFC
/// 7162 3.1.3 `MODIFIED`). UIDs not in the folder are in neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagsStored {
    pub changed: Vec<(u32, Vec<String>, u64)>,
    pub refused: Vec<u32>,
}

/// What a COPY or MOVE did (RFC 4315 3 COPYUID, RFC 6851 4.3): the target folder's
/// UIDVALIDITY and each copied message's (source UID, new UID), ascending source UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedMessages {
    pub uid_validity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// A message an APPEND stores (RFC 9051 6.3.12): its own queue id (unique among
/// messages), its flags and internal date (Unix time), and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedMessage {
    pub queue_id: String,
    pub flags: Vec<String>,
    pub received_at: i64,
    pub data: Vec<u8>,
}

/// One group of identical DMARC results of a reporting period (RFC 7489 7.2): `count`
/// messages. `record` and `policy` are the rules layer's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcResultCount {
    /// The start of the reporting period, Unix time.
    pub period: i64,
    /// The domain whose DMARC record was applied, which the report goes to.
    pub domain: String,
    pub record: String,
    pub policy: String,
    pub count: i64,
}

/// The private key never appears in logs or panics.
impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("active", &self.active)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
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
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Folder::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| StoreError::Invalid(format!("unknown folder '{s}' (expected INBOX, Junk or Tracking)")))
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

/// The longest header section the store keeps a copy of ([`NewMessage::header_section`]);
/// a longer one is read from the message itself.
pub const MAX_STORED_HEADER: usize = 256 * 1024;

impl NewMessage {
    /// Octets of the whole message.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + self.spooled.as_ref().map_or(0, |s| s.len)
    }

    /// [`NewMessage::header_section`] of a message that goes into a mailbox (a delivery,
    /// or an IMAP APPEND, which has no deliveries), where IMAP reads it; None for one only
    /// queued for other servers.
    pub fn header_section_to_keep(&self) -> Option<Vec<u8>> {
        let into_mailbox = self.deliveries.is_empty()
            || self.deliveries.iter().any(|(delivery, _)| matches!(delivery, Delivery::Mailbox { .. }));
        into_mailbox.then(|| self.header_section()).flatten()
    }

    /// The message's header section up to and including the empty line that ends it
    /// (RFC 5322 2.1), which the store keeps beside the message: IMAP's header FETCHes,
    /// ENVELOPE and SEARCH of header fields read it instead of the message, whatever the
    /// size of its body (as Dovecot answers them from its cache file). None when there is
    /// no empty line in the first [`MAX_STORED_HEADER`] octets (then they read the message).
    pub fn header_section(&self) -> Option<Vec<u8>> {
        if let Some(end) = header_section_end(&self.data) {
            return self.data.get(..end).map(<[u8]>::to_vec);
        }
        // A large message: its start is in `data`, the rest in the spool file.
        let spooled = self.spooled.as_ref()?;
        let want = MAX_STORED_HEADER.saturating_sub(self.data.len()).min(usize::try_from(spooled.len).ok()?);
        let mut head = self.data.clone();
        head.resize(self.data.len() + want, 0);
        let mut read = self.data.len();
        while read < head.len() {
            use std::os::unix::fs::FileExt;
            let offset = (read - self.data.len()) as u64;
            match spooled.file.read_at(head.get_mut(read..)?, offset) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        head.truncate(read);
        let end = header_section_end(&head)?;
        head.truncate(end);
        Some(head)
    }
}

/// Where the header section of `message` ends, after its empty line; None without one in
/// the first [`MAX_STORED_HEADER`] octets.
fn header_section_end(message: &[u8]) -> Option<usize> {
    vouchmail_proto::headers::after_empty_line(message.get(..message.len().min(MAX_STORED_HEADER))?)
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
    /// The folder's name: INBOX, Junk, Tracking, or any folder of the account (SPEC 9).
    pub folder: String,
    /// The IMAP UID within its folder (RFC 9051 2.3.1.1): ascending, never given twice.
    pub uid: u32,
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
    /// `TYPE=value`, sorted and joined by commas, so that the RFC 4514 form (`CN=a,O=b`,
    /// with `\,` escapes and `+` between the parts of one RDN), OpenSSL's default
    /// (`O = b, CN = a`) and its slash form (`/O=b/CN=a`) all compare equal.
    pub fn normalize(&self, value: &str) -> String {
        match self {
            CertMatch::Fingerprint => {
                value.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
            }
            CertMatch::Subject => {
                let value = value.trim().trim_start_matches("subject=").trim();
                let mut parts: Vec<String> = subject_attributes(value)
                    .into_iter()
                    .filter_map(|part| {
                        let (key, val) = part.split_once('=')?;
                        // Separators inside a value stay escaped, so that the result
                        // normalizes to itself.
                        let val: String = val
                            .trim()
                            .chars()
                            .flat_map(|c| {
                                let escape = matches!(c, '\\' | ',' | '+' | '/').then_some('\\');
                                escape.into_iter().chain(std::iter::once(c))
                            })
                            .collect();
                        Some(format!("{}={val}", key.trim().to_ascii_uppercase()))
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

/// A key this server's sender side holds for a local address (SPEC 7.4), received by mail
/// from the domain's Authentication Server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderKey {
    pub address: String,
    pub key: String,
    pub received_at: i64,
    /// Who handed it over, e.g. `as.example.org 192.0.2.7` (for the operator).
    pub source: String,
}

/// One VERIFY this server sent as a recipient (SPEC 7.5: every VERIFY sent is in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySentEntry {
    pub at: i64,
    /// The Authentication Server asked, with transport, e.g. `udp 192.0.2.7:2884`.
    pub server: String,
    pub address: String,
    /// `VALIDKEY`, `INVALIDKEY`, or why there was no answer.
    pub result: String,
}

/// The `TYPE=value` attributes of a subject DN: split at `,`, `+` and `/` outside escapes,
/// with RFC 4514 2.4 escapes (`\,` and `\2C`) undone in the values.
fn subject_attributes(dn: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = dn.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let hex: String = chars.clone().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(byte) if hex.len() == 2 && byte.is_ascii() => {
                        current.push(char::from(byte));
                        chars.next();
                        chars.next();
                    }
                    _ => current.extend(chars.next()),
                }
            }
            ',' | '+' | '/' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::{CertMatch, NewMessage, PolicyAction, SenderPolicy, SpooledBody, MAX_STORED_HEADER};

    fn new_message(data: &[u8], spooled: Option<SpooledBody>) -> NewMessage {
        NewMessage {
            queue_id: "Q".into(),
            envelope: Default::default(),
            received_at: 0,
            data: data.to_vec(),
            spooled,
            deliveries: Vec::new(),
        }
    }

    fn spool(content: &[u8]) -> SpooledBody {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        SpooledBody { file: std::sync::Arc::new(file), len: content.len() as u64 }
    }

    /// RFC 5322 2.1: the header section kept beside a message ends with its empty line,
    /// also when it continues into the spool file; none without one.
    #[test]
    fn the_header_section_is_found_in_memory_or_in_the_spool_file() {
        let header = |data: &[u8], spooled| new_message(data, spooled).header_section();
        assert_eq!(header(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore", None).unwrap(), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(header(b"A: 1\n\nbody", None).unwrap(), b"A: 1\n\n");
        assert_eq!(header(b"A: 1\r\n", None), None, "no empty line");
        assert_eq!(header(b"A: 1\r\nnot a field\r\n\r\n", None), None, "the section ends without one");
        let split = header(b"Received: x\r\nA: ", Some(spool(b"1\r\n\r\nbody")));
        assert_eq!(split.unwrap(), b"Received: x\r\nA: 1\r\n\r\n");
        assert_eq!(header(b"Received: x\r\n", Some(spool(b"A: 1\r\n"))), None);
        let long = format!("A: {}\r\n\r\n", "x".repeat(MAX_STORED_HEADER));
        assert_eq!(header(b"", Some(spool(long.as_bytes()))), None, "longer than kept");
    }

    #[test]
    fn sender_policies_parse_old_and_new_names() {
        assert_eq!("require".parse(), Ok(SenderPolicy::REJECT));
        assert_eq!("tag".parse(), Ok(SenderPolicy::JUNK));
        assert_eq!("Reject-Notify-Both".parse::<PolicyAction>(), Ok(PolicyAction::RejectNotifyBoth));
        let mixed = SenderPolicy {
            unauthenticated: PolicyAction::Junk,
            forged: PolicyAction::RejectNotifySender,
            dmarc_counts: true,
        };
        assert_eq!(mixed.to_string(), "unauthenticated=junk,forged=reject-notify-sender");
        assert_eq!(mixed.to_string().parse(), Ok(mixed));
        assert_eq!(SenderPolicy::ACCEPT.to_string(), "accept");
        assert!("sometimes".parse::<SenderPolicy>().unwrap_err().to_string().contains("unknown sender policy action"));
        assert!("spoofed=accept".parse::<SenderPolicy>().unwrap_err().to_string().contains("spoofed"));
    }

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
        // RFC 4514 as x509-cert writes it: escaped commas, `+` in a multi-valued RDN.
        let acme = CertMatch::Subject.normalize("CN=bob,O=Acme\\, Inc.");
        assert_eq!(acme, "CN=bob,O=Acme\\, Inc.");
        assert_eq!(CertMatch::Subject.normalize("O = Acme\\2C Inc., CN = bob"), acme);
        assert_eq!(CertMatch::Subject.normalize(&acme), acme, "normalizes to itself");
        assert_eq!(CertMatch::Subject.normalize("CN=a+UID=b"), CertMatch::Subject.normalize("UID = b, CN = a"));
    }
}

/// A bearer token of the admin API (SPEC 12): its name and when it was made and revoked.
/// The token itself is never stored, only its SHA-256 (`hash`, lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}
