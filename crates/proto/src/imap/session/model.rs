//! The values the IMAP session and its driver exchange: settings, events, the driver's
//! answers and the changes it pushes. Plain data, no behaviour beyond constructors.

use std::borrow::Cow;
use std::time::Duration;

use crate::imap::command::Limits;
use crate::imap::command::ListReturn;
use crate::imap::command::ListSelection;
use crate::imap::response::{QuotaResource, ResponseCode};
use crate::imap::types::{DateTime, Flag, MailboxAttribute, MailboxName, StatusItem, StoreMode};
use crate::sasl::{Mechanism, SiteSecret};

/// RFC 9051 5.4: the inactivity autologout timer is at least 30 minutes; the same bound
/// is the longest IDLE (RFC 2177 3: clients re-issue IDLE at least every 29 minutes).
pub const MIN_AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// Output queued before the session stops taking commands until the driver has written
/// it, as in POP3: pipelined FETCHes must not pile messages up in memory.
pub const MAX_BUFFERED_OUTPUT: usize = 1 << 20;
/// Octets of message data asked for in one [`Event::Fetch`] (at least one message).
pub const FETCH_BATCH_OCTETS: u64 = 256 * 1024;
/// Messages asked for in one [`Event::Fetch`].
pub const FETCH_BATCH_MESSAGES: usize = 64;
/// The same for header sections ([`Content::Header`]: SEARCH of header keys, FETCH of
/// headers and envelopes), counting a message as at most [`HEADER_ESTIMATE`] octets:
/// smaller items, so more per store read (each read costs a hop to the store's thread).
pub const HEADER_BATCH_MESSAGES: usize = 512;
pub const HEADER_BATCH_OCTETS: u64 = 1024 * 1024;
pub const HEADER_ESTIMATE: u64 = 16 * 1024;

/// Settings of one listener's sessions, shared by all its connections.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name, in the greeting and the SASL challenges.
    pub hostname: String,
    /// STARTTLS is offered (RFC 9051 6.2.1) while the connection is not yet encrypted.
    pub starttls: bool,
    /// SASL mechanisms for AUTHENTICATE (SPEC 4); empty turns AUTHENTICATE off.
    pub auth_mechanisms: Vec<Mechanism>,
    /// LOGIN and PLAIN/LOGIN on a clear channel: SPEC 9 allows them only where the
    /// operator says so (loopback). Off: LOGINDISABLED (RFC 9051 6.2.3).
    pub allow_plaintext_passwords: bool,
    /// BAD responses and failed logins before `* BYE` and the end of the session.
    pub max_errors: u32,
    /// The autologout timer (RFC 9051 5.4); below [`MIN_AUTOLOGOUT`] counts as that.
    pub autologout: Duration,
    /// Line, literal and command limits of the command reader.
    pub limits: Limits,
    /// SCRAM iteration count announced for unknown users.
    pub scram_iterations: u32,
    /// The per-installation key of the fake SCRAM salts of unknown users (see
    /// `pop3::session::SessionConfig`). None: a random salt on every attempt.
    pub scram_fake_salt_key: Option<SiteSecret>,
    /// Output queued before commands wait for the driver to write it.
    pub max_buffered_output: usize,
}

impl SessionConfig {
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            starttls: false,
            auth_mechanisms: Vec::new(),
            allow_plaintext_passwords: false,
            max_errors: 20,
            autologout: MIN_AUTOLOGOUT,
            limits: Limits::default(),
            scram_iterations: crate::sasl::secrets::MIN_SCRAM_ITERATIONS,
            scram_fake_salt_key: None,
            max_buffered_output: MAX_BUFFERED_OUTPUT,
        }
    }
}

/// Why the driver could not do what an event asked: the session answers the command
/// with `tag NO [code] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Option<ResponseCode>,
    pub text: Cow<'static, str>,
}

impl Failure {
    pub fn new(text: impl Into<Cow<'static, str>>) -> Failure {
        Failure { code: None, text: text.into() }
    }

    pub fn with_code(code: ResponseCode, text: impl Into<Cow<'static, str>>) -> Failure {
        Failure { code: Some(code), text: text.into() }
    }

    /// RFC 9051 7.1 NONEXISTENT: no such mailbox.
    pub fn nonexistent() -> Failure {
        Failure::with_code(ResponseCode::NonExistent, "No such mailbox")
    }

    /// RFC 9051 7.1 TRYCREATE: the COPY, MOVE or APPEND target does not exist.
    pub fn try_create() -> Failure {
        Failure::with_code(ResponseCode::TryCreate, "No such mailbox")
    }

    /// RFC 9051 7.1 ALREADYEXISTS.
    pub fn already_exists() -> Failure {
        Failure::with_code(ResponseCode::AlreadyExists, "Mailbox already exists")
    }

    /// RFC 9051 7.1 UNAVAILABLE: a temporary failure (the store cannot be reached).
    pub fn unavailable() -> Failure {
        Failure::with_code(ResponseCode::Unavailable, "Temporary failure, try again later")
    }

    /// RFC 9051 7.1 OVERQUOTA.
    pub fn over_quota() -> Failure {
        Failure::with_code(ResponseCode::OverQuota, "Quota exceeded")
    }

    /// RFC 9051 7.1 NOPERM (the read-only Tracking folder, SPEC 9).
    pub fn no_perm() -> Failure {
        Failure::with_code(ResponseCode::NoPerm, "Permission denied")
    }
}

/// One message of a mailbox as the store keeps it (SPEC 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Vec<Flag>,
    pub internal_date: DateTime,
    /// RFC822.SIZE: octets of the message as FETCH BODY[] sends it.
    pub size: u64,
    /// RFC 7162 3.1.1: the message's mod-sequence.
    pub modseq: u64,
}

/// The driver's answer to [`Event::Select`]: the mailbox as it is now, messages in
/// ascending UID order (the session sorts them if not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSnapshot {
    pub uid_validity: u32,
    pub uid_next: u32,
    /// RFC 7162 3.1.2.1.
    pub highest_modseq: u64,
    pub messages: Vec<MessageMeta>,
    /// Flags the client may change for good (RFC 9051 7.1 PERMANENTFLAGS).
    pub permanent_flags: Vec<Flag>,
    /// Clients may create keywords (`\*` in PERMANENTFLAGS).
    pub new_keywords: bool,
    /// The mailbox cannot be changed (SPEC 9: Tracking), even by SELECT.
    pub read_only: bool,
}

/// A change the driver saw in the selected mailbox (made by this session or any other,
/// on any node). Pushed with [`super::Session::mailbox_changed`] whenever it is known;
/// the session reports it at the next point RFC 9051 7.5.1 allows. Changes are matched by
/// UID, so one reported twice (or one this session made itself) is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message arrived: `* n EXISTS`.
    New(MessageMeta),
    /// A message's flags changed: `* n FETCH (FLAGS ...)`. Ignored unless `modseq` is
    /// above the one the session knows (or the flags differ when both are zero).
    Flags { uid: u32, flags: Vec<Flag>, modseq: u64 },
    /// A message was expunged: `* n EXPUNGE`.
    Expunged { uid: u32 },
}

/// How much of a message [`Event::Fetch`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Content {
    /// The header section only (up to and including the empty line).
    Header,
    /// The whole message.
    Full,
}

/// The driver's answer for one message of [`Event::Fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageData {
    pub uid: u32,
    /// The header section or the whole message, as asked; at least what was asked.
    pub bytes: Vec<u8>,
    /// When `\Seen` was set on this message for the event's `mark_seen`: its flags and
    /// mod-sequence now.
    pub seen_set: Option<(Vec<Flag>, u64)>,
}

/// A message's flags after STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagUpdate {
    pub uid: u32,
    pub flags: Vec<Flag>,
    pub modseq: u64,
}

/// The driver's answer to [`Event::Store`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The messages STORE changed, with their flags now (those it named and left as they
    /// were may be left out: the session reports them with the flags it knows).
    pub updated: Vec<FlagUpdate>,
    /// RFC 7162 3.1.3: UIDs left alone because their mod-sequence was above
    /// UNCHANGEDSINCE.
    pub modified: Vec<u32>,
}

/// RFC 4315 3 COPYUID: the driver's answer to [`Event::Copy`], source and destination
/// UIDs in matching order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUid {
    /// The target mailbox's UIDVALIDITY.
    pub uid_validity: u32,
    pub source: Vec<u32>,
    pub destination: Vec<u32>,
}

/// RFC 4315 3 APPENDUID: the driver's answer to [`Event::Append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendUid {
    pub uid_validity: u32,
    pub uid: u32,
}

/// RFC 9051 6.3.11 STATUS values of one mailbox; the session writes those asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxStatus {
    pub messages: u32,
    pub uid_next: u32,
    pub uid_validity: u32,
    pub unseen: u32,
    pub deleted: u32,
    /// Octets of all messages (RFC 9051 6.3.11 SIZE).
    pub size: u64,
    pub highest_modseq: u64,
}

/// One mailbox of the user for LIST and LSUB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub name: MailboxName,
    /// RFC 6154 special uses, and `\Noselect`/`\NonExistent` where they apply
    /// (a subscribed name that does not exist is listed `\NonExistent`). The session adds
    /// `\HasChildren`/`\HasNoChildren` and `\Subscribed`.
    pub attributes: Vec<MailboxAttribute>,
    pub subscribed: bool,
    /// Filled when [`Event::ListMailboxes`] asked for `status` (RFC 5819).
    pub status: Option<MailboxStatus>,
}

/// What the session needs from the driver. Each event that is not marked "no answer"
/// must be answered with the method it names before the session goes on; meanwhile it
/// reads no further command, so pipelined commands run strictly in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The OK to STARTTLS is queued: write the output, run the TLS handshake, then call
    /// `tls_started` (or close the connection if it fails).
    StartTls,
    /// LOGIN or AUTHENTICATE needs the account's secrets: `provide_secrets` (off the async
    /// threads: it may hash a password), `auth_blocked` when the shared AUTH limiter says
    /// no (SPEC 3), or `auth_unavailable` when they cannot be read now.
    LookupSecrets { authcid: String },
    /// A login attempt ended, for the shared AUTH failure limits (SPEC 3). No answer.
    AuthFinished { authcid: Option<String>, success: bool },
    /// RFC 9051 6.3.2, 6.3.3: open `mailbox` and answer `selected` with its snapshot.
    /// From then until [`Event::MailboxClosed`] push its changes with `mailbox_changed`
    /// (start watching before taking the snapshot: duplicates are harmless).
    Select { mailbox: MailboxName, read_only: bool, condstore: bool },
    /// The selected mailbox was closed (CLOSE, UNSELECT, another SELECT, LOGOUT, the end
    /// of the session): stop pushing its changes. No answer.
    MailboxClosed,
    /// RFC 9051 6.3.4: answer `done`.
    Create { mailbox: MailboxName, special_use: Vec<MailboxAttribute> },
    /// RFC 9051 6.3.5: answer `done`.
    Delete { mailbox: MailboxName },
    /// RFC 9051 6.3.6: answer `done`.
    Rename { from: MailboxName, to: MailboxName },
    /// RFC 9051 6.3.7, 6.3.8: answer `done`.
    Subscribe { mailbox: MailboxName, subscribe: bool },
    /// RFC 9051 6.3.9 LIST (and RFC 3501 LSUB): answer `listed` with every mailbox of the
    /// user and every subscribed name; the session matches the patterns. `status`: fill
    /// [`MailboxInfo::status`] (RFC 5819).
    ListMailboxes { status: Option<Vec<StatusItem>> },
    /// RFC 9051 6.3.11: answer `status`.
    Status { mailbox: MailboxName },
    /// RFC 9051 6.3.12: store the message and answer `appended`. `date` None: now.
    Append { mailbox: MailboxName, flags: Vec<Flag>, date: Option<DateTime>, message: Vec<u8> },
    /// RFC 9208 4.2, 4.3: the user's quota usage and limits; answer `quota`.
    Quota,
    /// RFC 2177: IDLE began. Changes pushed now are written at once. No answer.
    Idle,
    /// IDLE ended (DONE, or the session closed). No answer.
    IdleDone,
    /// Message data for FETCH or SEARCH in the selected mailbox: answer `fetched` with
    /// `content` of each UID that still exists. `mark_seen`: set `\Seen` on these (RFC
    /// 9051 6.4.5: a FETCH of body data of a read-write mailbox) and report their flags.
    /// `next`: the UIDs the following event of this FETCH or SEARCH will ask for, with the
    /// same content (empty for the last batch): the driver may read them ahead.
    Fetch { uids: Vec<u32>, content: Content, mark_seen: Vec<u32>, next: Vec<u32> },
    /// FETCH sent the whole body of these messages (`BODY[]`, `RFC822`, `BINARY[]`):
    /// record the `downloaded` tracking event (SPEC 9) for those not yet recorded. No
    /// answer.
    Downloaded { uids: Vec<u32> },
    /// RFC 9051 6.4.6 (RFC 7162 3.1.3): change the flags of these UIDs; answer `stored`.
    Store { uids: Vec<u32>, mode: StoreMode, flags: Vec<Flag>, unchanged_since: Option<u64> },
    /// RFC 9051 6.4.7, 6.4.8 (RFC 6851): copy (or move) these UIDs to `target`; answer
    /// `copied` (NO [TRYCREATE] when the target does not exist).
    Copy { uids: Vec<u32>, target: MailboxName, is_move: bool },
    /// RFC 9051 6.4.3 EXPUNGE, 6.4.1 CLOSE (`uids` None: every message with `\Deleted`)
    /// and RFC 4315 2.1 UID EXPUNGE (only these UIDs, if `\Deleted`): answer `expunged`.
    Expunge { uids: Option<Vec<u32>> },
}

/// The session's own record of a LIST command while the driver lists the mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRequest {
    pub reference: MailboxName,
    pub patterns: Vec<String>,
    pub selection: ListSelection,
    pub returns: ListReturn,
    pub lsub: bool,
}

/// RFC 9208 5.1 resources, re-exported for the driver's answer to [`Event::Quota`].
pub type Quota = Vec<QuotaResource>;
