//! The interface over everything durable, split by concern (issue 21): a backend
//! implements each trait; [`Store`] is all of them, what callers hold.

use std::ops::Range;

use crate::error::{StoreError, StoreFuture};
use crate::messenger::*;
use crate::tracking::*;
use crate::types::*;

/// Domains, accounts, aliases, held domains and client-certificate mappings: who this server serves.
pub trait AccountStore: Send + Sync {
    fn add_domain(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()>;
    fn remove_domain(&self, name: &str) -> StoreFuture<'_, ()>;
    fn get_domain(&self, name: &str) -> StoreFuture<'_, Option<Domain>>;
    fn list_domains(&self) -> StoreFuture<'_, Vec<Domain>>;
    fn set_domain_policy(&self, name: &str, policy: SenderPolicy) -> StoreFuture<'_, ()>;
    /// The account that receives mail for unknown local parts of the domain, or none.
    fn set_catch_all(&self, name: &str, account: Option<&str>) -> StoreFuture<'_, ()>;
    fn add_account(&self, account: NewAccount) -> StoreFuture<'_, i64>;
    fn remove_account(&self, address: &str) -> StoreFuture<'_, ()>;
    fn get_account(&self, address: &str) -> StoreFuture<'_, Option<Account>>;
    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>>;
    fn set_secrets(&self, address: &str, secrets: vouchmail_proto::sasl::secrets::Secrets) -> StoreFuture<'_, ()>;
    fn set_quota(&self, address: &str, quota_bytes: u64) -> StoreFuture<'_, ()>;
    fn add_alias(&self, alias: &str, targets: &[String]) -> StoreFuture<'_, ()>;
    /// Removes one target of the alias, or the whole alias with `None`.
    fn remove_alias(&self, alias: &str, target: Option<&str>) -> StoreFuture<'_, ()>;
    fn alias_targets(&self, alias: &str) -> StoreFuture<'_, Vec<String>>;
    /// Addresses other than its own and its aliases' that an account may send as (SPEC 3
    /// `may_send_as`), in the order set.
    fn send_as(&self, account: &str) -> StoreFuture<'_, Vec<String>>;
    /// Replaces that list; NotFound when there is no such account.
    fn set_send_as(&self, account: &str, addresses: &[String]) -> StoreFuture<'_, ()>;
    /// Everything RCPT needs about one address in one trip: its domain, the account, and
    /// (when there is no account) its alias targets.
    fn lookup_recipient(&self, address: &str) -> StoreFuture<'_, RecipientRecord>;
    fn list_aliases(&self) -> StoreFuture<'_, Vec<(String, String)>>;
    fn add_cert_mapping(&self, address: &str, kind: CertMatch, value: &str) -> StoreFuture<'_, ()>;
    fn remove_cert_mapping(&self, address: &str, value: &str) -> StoreFuture<'_, ()>;
    /// The account a certificate maps to: by fingerprint, or by subject when given (only
    /// for certificates verified against the configured client CA).
    fn cert_mapping_account(&self, fingerprint: &str, subject: Option<&str>) -> StoreFuture<'_, Option<String>>;
    fn list_cert_mappings(&self) -> StoreFuture<'_, Vec<CertMapping>>;
    /// Makes a local domain held for `accounts` (empty: no longer held), with an optional
    /// ETRN delivery host.
    fn set_domain_held(&self, name: &str, accounts: &[String], etrn_host: Option<&str>) -> StoreFuture<'_, ()>;
    /// The held domains an account may take with ATRN.
    fn held_domains_for(&self, account: &str) -> StoreFuture<'_, Vec<String>>;
}

/// Messages and the queue: the durable commit of a received message, outbound leases, outcomes and retries (SPEC 5), held mail (ODMR).
pub trait QueueStore: Send + Sync {
    /// Stores the message once, one queue entry per delivery, and the mailbox entries of
    /// local deliveries, all in one transaction. Returns when the transaction is on stable
    /// storage (fsync'd); commits of concurrent callers share one fsync.
    fn commit_message(&self, message: NewMessage) -> StoreFuture<'_, CommittedMessage>;
    /// Stores several messages as [`Store::commit_message`] does each, all in one
    /// transaction: all of them or none (the copies of one received message, SPEC 7.5).
    fn commit_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<CommittedMessage>>;
    /// Queue entries not yet delivered or bounced.
    fn list_queue(&self) -> StoreFuture<'_, Vec<QueueEntry>>;
    /// Every queue entry of one message (any state) and the message text.
    fn get_queued_message(&self, queue_id: &str) -> StoreFuture<'_, Option<(Vec<QueueEntry>, Vec<u8>)>>;
    /// Deletes the pending entries of a message; returns how many were deleted.
    fn delete_queued_message(&self, queue_id: &str) -> StoreFuture<'_, usize>;
    /// Marks up to `limit` due entries in flight until `lease_until` and returns them:
    /// queued or deferred entries whose next attempt is due, and in-flight entries whose lease
    /// has expired (their deliverer died). No two deliverers hold one entry while its lease runs.
    fn lease_due(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<LeasedEntry>>;
    /// Extends the leases of in-flight entries still being worked on.
    fn renew_leases(&self, ids: Vec<i64>, lease_until: i64) -> StoreFuture<'_, ()>;
    /// A stored message with its envelope.
    fn get_message(&self, message_id: i64) -> StoreFuture<'_, Option<StoredMessage>>;
    /// Records delivery outcomes of in-flight entries and commits the notifications (DSNs) they
    /// cause, in one durable transaction; a message with nothing left to deliver and no mailbox
    /// copy is deleted.
    fn record_delivery(&self, updates: Vec<QueueUpdate>, notices: Vec<NewMessage>) -> StoreFuture<'_, ()>;
    /// Makes the queued and deferred entries of one message (or of all) due at `now`; returns
    /// how many.
    fn retry_queued(&self, queue_id: Option<&str>, now: i64) -> StoreFuture<'_, usize>;
    /// The earliest time a pending entry becomes due (or an in-flight lease ends).
    fn next_due(&self) -> StoreFuture<'_, Option<i64>>;
    fn queue_counts(&self) -> StoreFuture<'_, QueueCounts>;
    /// Pending held entries of these domains.
    fn count_held(&self, domains: &[String]) -> StoreFuture<'_, usize>;
    /// Leases every pending held entry of these domains (for an ATRN or ETRN delivery).
    fn lease_held(&self, domains: &[String], now: i64, lease_until: i64) -> StoreFuture<'_, Vec<LeasedEntry>>;
    /// Leases held entries created before `created_before`: their lifetime is over.
    fn lease_expired_held(&self, created_before: i64, now: i64, lease_until: i64) -> StoreFuture<'_, Vec<LeasedEntry>>;
}

/// Mailboxes: listing, reading, deleting and the download event (SPEC 9).
pub trait MailboxStore: Send + Sync {
    fn list_mailbox(&self, address: &str, folder: Option<Folder>) -> StoreFuture<'_, Vec<MailboxEntry>>;
    fn get_mailbox_message(&self, address: &str, id: i64) -> StoreFuture<'_, Option<(MailboxEntry, Vec<u8>)>>;
    /// The messages of these mailbox entries of the account, in one read (an IMAP FETCH
    /// batch); entries that are not the account's, or gone, are left out. `prefix` (an
    /// IMAP FETCH or SEARCH of header fields needs no body): each message's header section
    /// as stored beside it (`NewMessage::header_section`), or for a message stored without
    /// one its first octets, up to that many. Without `prefix` each message comes with
    /// what its `downloaded` event records ([`FetchedMessage::tracked`]).
    fn mailbox_messages(
        &self,
        address: &str,
        ids: &[i64],
        prefix: Option<usize>,
    ) -> StoreFuture<'_, Vec<FetchedMessage>>;
    /// Removes these mailbox entries of the account (any folder) in one transaction, keeps
    /// its size and count right, and deletes each message no longer referenced. Ids that
    /// are not the account's, or gone already, are skipped. Returns how many were removed.
    fn delete_mailbox_entries(&self, address: &str, ids: &[i64]) -> StoreFuture<'_, usize>;
    /// Records the `downloaded` event of a mailbox entry's message for the account, once
    /// per (message, recipient): true when this call recorded it, false when it was
    /// recorded before. NotFound when the entry is not the account's.
    fn record_download(&self, address: &str, mailbox_id: i64) -> StoreFuture<'_, bool>;
}

/// Delivery tracking (SPEC 8.3): events, records, the Tracking folder and the NOTIFY outbox.
pub trait TrackingStore: Send + Sync {
    /// Tracking events with an id above `after_id`, oldest first, at most `limit`.
    fn list_tracking_events(&self, after_id: i64, limit: usize) -> StoreFuture<'_, Vec<TrackingEvent>>;
    /// Records an event once per message, recipient and event (the `tracking_events` of
    /// `record_download`), and for a tracked message (`tracking::is_tracked`) makes its
    /// record and routes it in the same transaction: into the local sender's Tracking
    /// folder, or into the NOTIFY outbox for the sender's domain. POP3 RETR and RECEIPT use
    /// this; `NotFound` is RECEIPT's 550 5.1.0.
    fn track_event(&self, event: NewTrackingEvent) -> StoreFuture<'_, TrackingOutcome> {
        Box::pin(async move {
            let mut outcomes = self.track_events(vec![event]).await?;
            outcomes.pop().ok_or_else(|| StoreError::Unavailable("no outcome for the tracking event".into()))
        })
    }
    /// [`TrackingStore::track_event`] for several events in one durable write (one commit):
    /// the outcomes in the order of the events. An IMAP FETCH batch's `downloaded` events.
    fn track_events(&self, events: Vec<NewTrackingEvent>) -> StoreFuture<'_, Vec<TrackingOutcome>>;
    /// Receiving NOTIFY (SPEC 8.3): stores the record in its sender's Tracking folder, once
    /// per (message, recipient, event), as stored at `now` (Unix seconds). The caller has
    /// checked the peer is the home server of the record's recipient domain, the record's
    /// time and the day's cap.
    fn store_notified_record(
        &self,
        record: vouchmail_proto::messenger::tracking::Record,
        now: i64,
    ) -> StoreFuture<'_, NotifyStored>;
    /// How many records the Tracking folder of `owner` holds about recipients in
    /// `recipient_domain` that were stored within `stored` (unix seconds, end excluded: the
    /// NOTIFY cap per day, SPEC 8.3).
    fn count_tracking_records(&self, owner: &str, recipient_domain: &str, stored: Range<i64>) -> StoreFuture<'_, u64>;
    /// The Tracking folder of a local user: records with a timestamp at or after `since`
    /// (all with None), oldest first; when there are more than `limit`, the newest `limit`
    /// (TRACK, `vouchmail tracking list`).
    fn tracking_records(
        &self,
        owner: &str,
        since: Option<i64>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredTrackingRecord>>;
    /// Leases up to `limit` due NOTIFY outbox entries until `lease_until` (as `lease_due`).
    fn lease_notifies(&self, now: i64, lease_until: i64, limit: usize) -> StoreFuture<'_, Vec<OutboxEntry>>;
    /// Records the outcomes of leased outbox entries.
    fn finish_notifies(&self, updates: Vec<OutboxUpdate>, now: i64) -> StoreFuture<'_, ()>;
    /// When the next outbox entry is due (or a lease ends).
    fn next_notify_due(&self) -> StoreFuture<'_, Option<i64>>;
    /// Outbox entries still to send, oldest first.
    fn list_notify_outbox(&self) -> StoreFuture<'_, Vec<OutboxEntry>>;
    fn notify_outbox_counts(&self) -> StoreFuture<'_, OutboxCounts>;
}

/// AuthKeys (SPEC 7): the Authentication Server's keys and log, the sender's key and the recipient's verification cache.
pub trait AuthKeyStore: Send + Sync {
    /// Sets (or with `None` clears) the AuthKey settings of `target`: an address, or a
    /// domain name (no `@`) for the default of the domain's addresses.
    fn set_authkey_settings(&self, target: &str, settings: Option<AuthKeySettings>) -> StoreFuture<'_, ()>;
    /// The address's own settings, else its domain's default, else None (the caller then
    /// uses the configured default).
    fn authkey_settings(&self, address: &str) -> StoreFuture<'_, Option<(AuthKeySettings, SettingsSource)>>;
    fn add_authkey(&self, key: AuthKey) -> StoreFuture<'_, ()>;
    /// The address's keys not expired at `now`, newest first.
    fn authkeys(&self, address: &str, now: i64) -> StoreFuture<'_, Vec<AuthKey>>;
    /// For every address with a key, when its newest key was made.
    fn newest_authkeys(&self) -> StoreFuture<'_, Vec<(String, i64)>>;
    /// Deletes every key expired at `now`; returns how many.
    fn delete_expired_authkeys(&self, now: i64) -> StoreFuture<'_, usize>;
    /// Appends rows to the VERIFY log, in one transaction.
    fn log_verify(&self, entries: Vec<VerifyLogEntry>) -> StoreFuture<'_, ()>;
    /// VERIFY log rows at or after `since`, oldest first, at most `limit`.
    fn verify_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifyLogEntry>>;
    /// Records the key received by mail for a local address (the newest replaces the last).
    fn record_sender_key(&self, key: SenderKey) -> StoreFuture<'_, ()>;
    fn sender_key(&self, address: &str) -> StoreFuture<'_, Option<SenderKey>>;
    /// Remembers that the key with this hash was valid for `address` until `expires_at`.
    fn cache_verified_key(&self, address: &str, key_hash: &str, now: i64, expires_at: i64) -> StoreFuture<'_, ()>;
    fn verified_key_cached(&self, address: &str, key_hash: &str, now: i64) -> StoreFuture<'_, bool>;
    fn log_verify_sent(&self, entry: VerifySentEntry) -> StoreFuture<'_, ()>;
    /// Rows of VERIFY sent at or after `since`, oldest first, at most `limit`.
    fn verify_sent_log(&self, since: i64, limit: usize) -> StoreFuture<'_, Vec<VerifySentEntry>>;
}

/// The Messenger federation (SPEC 8.1, 8.4): certificates, the directory, the Entity Index and its peers.
pub trait FederationStore: Send + Sync {
    /// Stores (or replaces) the certificate of a local account.
    fn put_certificate(&self, cert: StoredCertificate) -> StoreFuture<'_, ()>;
    fn get_certificate(&self, address: &str) -> StoreFuture<'_, Option<StoredCertificate>>;
    fn remove_certificate(&self, address: &str) -> StoreFuture<'_, ()>;
    fn list_certificates(&self) -> StoreFuture<'_, Vec<StoredCertificate>>;
    /// Sets a local account's directory details (name, organisation, role, IDs), keeping
    /// whether it is published; Entity Index changes get their serials in the same
    /// transaction. Conflict when another entry has one of the IDs.
    fn set_directory_entry(&self, record: DirectoryRecord) -> StoreFuture<'_, ()>;
    /// Publishes or withdraws an entry (with the Entity Index changes that makes).
    fn set_directory_published(&self, address: &str, published: bool) -> StoreFuture<'_, ()>;
    fn get_directory_entry(&self, address: &str) -> StoreFuture<'_, Option<DirectoryRecord>>;
    fn list_directory(&self) -> StoreFuture<'_, Vec<DirectoryRecord>>;
    /// The mailbox a published ID of this server's own published entries names.
    fn directory_mailbox_for_id(&self, published_id: &str) -> StoreFuture<'_, Option<String>>;
    /// This server's own Entity Index changes after `since`, the latest per (ID, mailbox),
    /// by serial, at most `limit`; and the serial to report as the highest (the last one
    /// listed when `limit` cut the list).
    fn entity_changes_since(&self, since: i64, limit: usize) -> StoreFuture<'_, (Vec<EntityChangeRow>, i64)>;
    /// Every entry learnt for a published ID, in no particular order (which one binds it
    /// is `vouchmail_proto::messenger::bindings::first_learnt`'s rule, SPEC 8.4).
    fn learnt_entities_for_id(&self, published_id: &str) -> StoreFuture<'_, Vec<LearntEntity>>;
    /// Forgets what every peer said about `published_id` naming `mailbox`; how many entries.
    fn forget_learnt_binding(&self, published_id: &str, mailbox: &str) -> StoreFuture<'_, usize>;
    /// How many Entity Index entries were learnt from `peer`.
    fn count_learnt_for_peer(&self, peer: &str) -> StoreFuture<'_, usize>;
    fn list_learnt_entities(&self) -> StoreFuture<'_, Vec<LearntEntity>>;
    /// Remembers a peer to pull from, which answered at `answered_at` if given
    /// (`configured` is only ever raised, `last_success` only moved forward).
    fn note_messenger_peer(&self, domain: &str, configured: bool, answered_at: Option<i64>) -> StoreFuture<'_, ()>;
    /// Drops a peer and every Entity Index entry learnt from it; how many entries went.
    fn forget_messenger_peer(&self, domain: &str) -> StoreFuture<'_, usize>;
    fn list_messenger_peers(&self) -> StoreFuture<'_, Vec<MessengerPeer>>;
    /// Applies one pull's result and the peer's new last serial, in one transaction.
    fn apply_peer_pull(&self, pull: PeerPull) -> StoreFuture<'_, ()>;
    /// Records a failed pull.
    fn record_peer_error(&self, domain: &str, at: i64, error: &str) -> StoreFuture<'_, ()>;
}

/// Small settings and the state every node shares: meta values, the client networks accounts logged in from (SPEC 3).
pub trait NodeStore: Send + Sync {
    /// Finishes the writes already sent and closes the store: later calls fail
    /// `Unavailable`. For a restart in one process, and a clean stop.
    fn close(&self) -> StoreFuture<'_, ()>;
    fn get_meta(&self, key: &str) -> StoreFuture<'_, Option<String>>;
    fn set_meta(&self, key: &str, value: &str) -> StoreFuture<'_, ()>;
    /// The setting's value; when it has none, `value` is stored first. Atomic: every
    /// caller (and every node on a shared store) gets the same value.
    fn get_or_init_meta(&self, key: &str, value: &str) -> StoreFuture<'_, String>;
    /// When the account last logged in from `client` (a network the caller names), if
    /// that is remembered.
    fn last_login_from(&self, account: &str, client: &str) -> StoreFuture<'_, Option<i64>>;
    /// Remembers a login of the account from `client` at `at`, and forgets every login (of
    /// any account) from before `forget_before`.
    fn remember_login(&self, account: &str, client: &str, at: i64, forget_before: i64) -> StoreFuture<'_, ()>;
    /// Takes the named lease for `holder` until `until` when it is free, expired (its
    /// `until` before `now`) or already `holder`'s (then renewed); true when `holder` has
    /// it. Atomic across every node on the store (SPEC 11: POP3 maildrop locks).
    fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> StoreFuture<'_, bool>;
    /// How many leases whose names start with `prefix` are live at `now` (SPEC 8.2 step 3:
    /// a verifier's outstanding challenges on every node).
    fn count_leases(&self, prefix: &str, now: i64) -> StoreFuture<'_, u64>;
    /// Gives the named lease back, if `holder` still has it.
    fn release_lease(&self, name: &str, holder: &str) -> StoreFuture<'_, ()>;
    /// Sets the named mark to `now` when it is unset or not after `not_after`; true when
    /// it was set. Atomic across every node (SPEC 11: the ATRN interval per account).
    fn mark_if_older(&self, name: &str, now: i64, not_after: i64) -> StoreFuture<'_, bool>;
    /// Records one event at `at` under each name, and forgets every event (of any name)
    /// from before `forget_before` (SPEC 3 and 11: failed AUTH attempts, counted on every
    /// node).
    fn add_events(&self, names: Vec<String>, at: i64, forget_before: i64) -> StoreFuture<'_, ()>;
    /// How many events each name has had since `since`, in the order given.
    fn count_events(&self, names: Vec<String>, since: i64) -> StoreFuture<'_, Vec<u64>>;
    /// Tells the other nodes on the store that `topic` changed (SPEC 11: PostgreSQL
    /// NOTIFY); nothing where there are no other nodes.
    fn announce(&self, topic: &str) -> StoreFuture<'_, ()>;
    /// The topics other nodes announce from now on; None where there are none (each
    /// listener still polls: an announcement can be lost with a connection).
    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<String>>;
}

/// DKIM signing keys of the local domains (SPEC 13): the active ones sign, the others stay
/// published until retired. Which key signs and how keys rotate is decided above the
/// backends (`server::rules::dkim`).
pub trait DkimKeyStore: Send + Sync {
    /// Stores a new key: Conflict when its domain has that selector already, NotFound when
    /// the domain is not local.
    fn add_dkim_key(&self, key: DkimKey) -> StoreFuture<'_, ()>;
    /// Every key, by domain, then oldest first.
    fn list_dkim_keys(&self) -> StoreFuture<'_, Vec<DkimKey>>;
    /// Whether the key signs; NotFound when there is no such key.
    fn set_dkim_key_active(&self, domain: &str, selector: &str, active: bool) -> StoreFuture<'_, ()>;
    /// Removes a key; NotFound when there is no such key.
    fn remove_dkim_key(&self, domain: &str, selector: &str) -> StoreFuture<'_, ()>;
}

/// The admin API's bearer tokens (SPEC 12), kept by their SHA-256 only.
pub trait AdminTokenStore: Send + Sync {
    /// Stores a new token; Conflict when a token (revoked ones included) has that name.
    fn add_admin_token(&self, token: AdminToken) -> StoreFuture<'_, ()>;
    /// Every token, oldest first.
    fn admin_tokens(&self) -> StoreFuture<'_, Vec<AdminToken>>;
    /// The token with this hash, revoked or not.
    fn admin_token_by_hash(&self, hash: &str) -> StoreFuture<'_, Option<AdminToken>>;
    /// Revokes the token of that name at `at`; NotFound when there is no such token not
    /// yet revoked.
    fn revoke_admin_token(&self, name: &str, at: i64) -> StoreFuture<'_, ()>;
}

/// IMAP folders (SPEC 9): the folders of each account (every account has those of
/// `rules::DEFAULT_FOLDERS`) and each folder's messages with their UIDs, flags and
/// mod-sequences. A delivery numbers its message in its folder as it commits. Folder
/// names are matched exactly, but INBOX in any case (RFC 9051 5.1).
pub trait FolderStore: Send + Sync {
    /// The account's folders with their message counts, by name; NotFound when there is
    /// no such user.
    fn list_folders(&self, address: &str) -> StoreFuture<'_, Vec<FolderInfo>>;
    /// What a folder's numbers are now, read cheaply (one row): any change to its messages
    /// changes them (IMAP sessions look at it to know whether to read the folder again).
    /// None when there is no such folder (or no such user).
    fn folder_version(&self, address: &str, folder: &str) -> StoreFuture<'_, Option<FolderVersion>>;
    /// A folder and its messages in UID order (what SELECT shows, RFC 9051 6.3.2); None
    /// when the account has no such folder, NotFound when there is no such user.
    fn folder_messages(&self, address: &str, folder: &str)
        -> StoreFuture<'_, Option<(FolderInfo, Vec<FolderMessage>)>>;
    /// STORE (RFC 9051 6.4.6, RFC 7162 3.1.3): changes the flags of the folder's messages
    /// with these UIDs; every changed one gets the folder's next mod-sequence. NotFound
    /// when the user or the folder does not exist.
    fn store_flags(&self, address: &str, folder: &str, change: FlagChange) -> StoreFuture<'_, FlagsStored>;
    /// EXPUNGE (RFC 9051 6.4.3, UID EXPUNGE RFC 4315 2.1): removes the folder's messages
    /// flagged `\Deleted` (of these UIDs, when given), as `delete_mailbox_entries` does;
    /// returns their UIDs, ascending. NotFound when the user or the folder does not exist.
    fn expunge(&self, address: &str, folder: &str, uids: Option<Vec<u32>>) -> StoreFuture<'_, Vec<u32>>;
    /// RFC 9051 6.3.4 CREATE: Conflict when the account has it already (INBOX in any case),
    /// NotFound when no such user.
    /// The new folder is not subscribed (RFC 9051 6.3.4 leaves that to SUBSCRIBE); its
    /// UIDVALIDITY is `rules::new_uid_validity`'s, never one an earlier folder of that name had.
    fn create_folder(&self, address: &str, name: &str, special_use: Option<&str>) -> StoreFuture<'_, ()>;
    /// RFC 9051 6.3.5 DELETE: the folder and its messages (as EXPUNGE removes them: the
    /// account's used_bytes/message_count kept right, messages nothing refers to any more
    /// deleted); NotFound when missing. (Which folders may not be deleted is a server rule,
    /// not the store's.)
    fn delete_folder(&self, address: &str, name: &str) -> StoreFuture<'_, ()>;
    /// RFC 9051 6.3.6 RENAME: `from` and its subfolders (`from/...`, the hierarchy
    /// delimiter is "/") take the new name; Conflict when `to` exists, NotFound when `from`
    /// does not. Renaming INBOX moves all its messages into a new folder `to` (new UIDs
    /// there) and leaves INBOX, empty.
    fn rename_folder(&self, address: &str, from: &str, to: &str) -> StoreFuture<'_, ()>;
    /// RFC 9051 6.3.7/6.3.8 SUBSCRIBE/UNSUBSCRIBE; NotFound when the folder does not exist.
    fn subscribe_folder(&self, address: &str, name: &str, subscribed: bool) -> StoreFuture<'_, ()>;
    /// COPY (RFC 9051 6.4.7) or, with `remove`, MOVE (RFC 6851): the messages of `from`
    /// with these UIDs (those that exist), in UID order, into `to`, each with its flags and
    /// internal date, new UIDs in `to` (one copy of the message itself: new mailbox rows
    /// pointing at the same message row); the account's counts grow by the copies (a move
    /// changes nothing in them), and `to`'s highest_modseq grows (and `from`'s when
    /// removing). NotFound("folder ...") when either folder does not exist (the server
    /// answers TRYCREATE).
    fn copy_messages(
        &self,
        address: &str,
        from: &str,
        uids: Vec<u32>,
        to: &str,
        remove: bool,
    ) -> StoreFuture<'_, CopiedMessages>;
    /// APPEND (RFC 9051 6.3.12): stores a new message in the folder with these flags and
    /// internal date; returns (UIDVALIDITY, UID). NotFound when the user or folder does not
    /// exist.
    fn append_message(&self, address: &str, folder: &str, message: AppendedMessage) -> StoreFuture<'_, (u32, u32)>;
}

/// DMARC results waiting for their aggregate report (RFC 7489 7.2), counted per reporting
/// period, policy domain and group of identical results. What a group holds (`record`) and
/// the policy it was judged by (`policy`) are written and read above the backends
/// (`server::rules::dmarc_report`); here they are opaque text.
pub trait DmarcReportStore: Send + Sync {
    /// Counts one message: one more in its group, created at 1; `policy` replaces the
    /// group's policy (the newest one published wins).
    fn count_dmarc_result(&self, period: i64, domain: &str, record: &str, policy: &str) -> StoreFuture<'_, ()>;
    /// Removes and returns every group of the periods up to `up_to_period` (inclusive), at
    /// once: of several nodes, one takes them, so one report is sent.
    fn take_dmarc_results(&self, up_to_period: i64) -> StoreFuture<'_, Vec<DmarcResultCount>>;
}

/// Everything durable: every concern's trait. All addresses and domain names passed in
/// are lower-cased by the caller's address type (domains) or by the backend (local parts
/// are matched case-insensitively, as Postfix and Exim do by default).
pub trait Store:
    AccountStore
    + QueueStore
    + MailboxStore
    + TrackingStore
    + AuthKeyStore
    + FederationStore
    + NodeStore
    + DkimKeyStore
    + DmarcReportStore
    + FolderStore
    + AdminTokenStore
{
}

impl<
        T: AccountStore
            + QueueStore
            + MailboxStore
            + TrackingStore
            + AuthKeyStore
            + FederationStore
            + NodeStore
            + DkimKeyStore
            + DmarcReportStore
            + FolderStore
            + AdminTokenStore
            + ?Sized,
    > Store for T
{
}
