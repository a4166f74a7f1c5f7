//! The IMAP4rev2 server session (RFC 9051, serving IMAP4rev1 clients too) as a state
//! machine with no I/O, driven like the POP3 one: the driver feeds received bytes with
//! [`Session::feed`], calls [`Session::poll_event`] until it returns `None`, and writes
//! [`Session::take_output`]. What needs the store or the socket is an [`Event`], answered
//! with the typed method it names; until then the session reads no further command, so
//! pipelined commands run strictly in order. Output is capped: past
//! [`SessionConfig::max_buffered_output`] the session takes no command (and asks for no
//! more FETCH data) until the driver has written what is queued.
//!
//! States (RFC 9051 3): not authenticated until LOGIN or AUTHENTICATE succeeds, then
//! authenticated, selected while a mailbox is open, logout at the end. The selected
//! mailbox's view (sequence numbers, UIDs, flags as the client knows them) lives in
//! `view`; changes the driver pushes with [`Session::mailbox_changed`] are reported at the
//! points RFC 9051 7.5.1 allows: during IDLE at once, otherwise before the tagged response
//! of the next command, EXPUNGE never during FETCH, STORE or SEARCH.
//!
//! FETCH builds its responses here (ENVELOPE, BODYSTRUCTURE, sections) from message bytes
//! the driver loads in batches; SEARCH evaluates every key here too, over the view for
//! flags, sizes, dates, UIDs and mod-sequences, and over the loaded header section (or
//! whole message, for BODY and TEXT) only for the messages the other keys leave possible.
//!
//! One file per stage: `auth` (not authenticated: CAPABILITY, STARTTLS, LOGIN,
//! AUTHENTICATE), `authenticated` (mailbox commands), `selected` (message commands),
//! `idle` (RFC 2177), with `fetch` and `search` building FETCH data and matching SEARCH
//! keys, `view` the selected mailbox and `model` the values exchanged with the driver.

mod auth;
mod authenticated;
mod fetch;
mod idle;
mod model;
mod search;
mod selected;
mod view;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

pub use model::{
    AppendUid, Change, Content, CopyUid, Event, Failure, FlagUpdate, MailboxInfo, MailboxSnapshot, MailboxStatus,
    MessageData, MessageMeta, Quota, SessionConfig, StoreOutcome, FETCH_BATCH_MESSAGES, FETCH_BATCH_OCTETS,
    MAX_BUFFERED_OUTPUT, MIN_AUTOLOGOUT,
};

use crate::imap::command::{Command, CommandBody, CommandReader, ReadEvent};
use crate::imap::response::{write_continuation, Data, ResponseCode, Status, StatusResponse};
use crate::imap::types::{FetchAttribute, MailboxName, NameEncoding, SearchKey, SearchReturn, StatusItem, Tag};
use crate::sasl::ServerSession;

/// RFC 9208 5.1 resources, for the answer to [`Event::Quota`].
pub use crate::imap::response::QuotaResource;
/// What the driver learned from the TLS handshake (shared with SMTP and POP3).
pub use crate::smtp::session::TlsInfo;

/// The extensions a client turned on with ENABLE (RFC 5161), or CONDSTORE with any
/// CONDSTORE-enabling command (RFC 7162 3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enabled {
    pub imap4rev2: bool,
    pub condstore: bool,
    pub utf8_accept: bool,
}

/// What the session waits for before it reads the next command.
#[derive(Debug)]
enum Wait {
    /// Nothing: the next command may run.
    Ready,
    /// The TLS handshake after STARTTLS.
    Tls,
    /// The client's next line of an AUTHENTICATE exchange (RFC 9051 6.2.2).
    AuthExchange { tag: Tag },
    /// [`Event::LookupSecrets`].
    Secrets { tag: Tag },
    /// DONE (RFC 2177 3).
    Idle { tag: Tag },
    /// The driver's answer to a store event.
    Driver(Pending),
}

/// A command waiting for the driver's answer.
#[derive(Debug)]
enum Pending {
    Select {
        tag: Tag,
        mailbox: MailboxName,
        read_only: bool,
    },
    /// CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE.
    Done {
        tag: Tag,
        name: &'static str,
    },
    List {
        tag: Tag,
        request: model::ListRequest,
    },
    Status {
        tag: Tag,
        mailbox: MailboxName,
        items: Vec<StatusItem>,
    },
    Append {
        tag: Tag,
    },
    /// GETQUOTA (`mailbox` None) or GETQUOTAROOT.
    Quota {
        tag: Tag,
        mailbox: Option<MailboxName>,
    },
    /// One [`Event::Fetch`] batch of the running [`Job`].
    Batch {
        uids: Vec<u32>,
    },
    Store {
        tag: Tag,
        uid: bool,
        silent: bool,
        name: &'static str,
        /// The UIDs the command named, in its order.
        uids: Vec<u32>,
    },
    Copy {
        tag: Tag,
        is_move: bool,
        name: &'static str,
    },
    /// EXPUNGE, UID EXPUNGE, or CLOSE (`close`: silently, then leave the mailbox).
    Expunge {
        tag: Tag,
        close: bool,
        name: &'static str,
    },
}

/// A FETCH or SEARCH that works through its messages in batches.
#[derive(Debug)]
enum Job {
    Fetch(FetchJob),
    Search(SearchJob),
}

#[derive(Debug)]
struct FetchJob {
    tag: Tag,
    name: &'static str,
    attributes: Vec<FetchAttribute>,
    /// UIDs still to send, in order.
    queue: VecDeque<u32>,
    content: Option<Content>,
    /// Set `\Seen` on the messages (a read-write mailbox and a non-PEEK body item).
    mark_seen: bool,
    /// Some message could not be loaded: expunged meanwhile (RFC 9051 7.1 EXPUNGEISSUED).
    missing: bool,
}

#[derive(Debug)]
struct SearchJob {
    tag: Tag,
    uid: bool,
    returns: Option<Vec<SearchReturn>>,
    criteria: SearchKey,
    /// Messages whose match depends on their content, still to load.
    queue: VecDeque<u32>,
    content: Content,
    /// Matching UIDs found so far.
    matches: Vec<u32>,
}

/// One IMAP server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    reader: CommandReader,
    output: Vec<u8>,
    wait: Wait,
    job: Option<Job>,
    tls: Option<TlsInfo>,
    /// The authenticated user.
    user: Option<String>,
    enabled: Enabled,
    view: Option<view::View>,
    /// RFC 5182: the UIDs of the last `SEARCH RETURN (SAVE)`, `$`.
    saved: Vec<u32>,
    sasl: Option<ServerSession>,
    /// The mechanism of the latest AUTH exchange, for the driver's metrics (SPEC 12).
    auth_mechanism: &'static str,
    fresh: crate::sasl::Fresh,
    exchanges: u64,
    clock: u64,
    errors: u32,
    closed: bool,
    pending_events: VecDeque<Event>,
    progress: u64,
}

impl Session {
    /// Starts a session and queues the greeting (RFC 9051 7.1.1, with the CAPABILITY code).
    /// `tls`: the handshake's data on the implicit-TLS port (993), None on 143.
    /// `fresh`: the time now and a seed from the OS random source, for the SASL exchanges.
    pub fn new(config: Arc<SessionConfig>, fresh: crate::sasl::Fresh, tls: Option<TlsInfo>) -> Session {
        let mut session = Session {
            reader: CommandReader::new(config.limits),
            config,
            output: Vec::new(),
            wait: Wait::Ready,
            job: None,
            tls,
            user: None,
            enabled: Enabled::default(),
            view: None,
            saved: Vec::new(),
            sasl: None,
            auth_mechanism: "none",
            fresh,
            exchanges: 0,
            clock: fresh.unix_time,
            errors: 0,
            closed: false,
            pending_events: VecDeque::new(),
            progress: 0,
        };
        let text = format!("{} IMAP4rev2 server (vouchmail) ready", session.config.hostname);
        let greeting =
            StatusResponse::untagged(Status::Ok, text).with_code(ResponseCode::Capability(session.capabilities()));
        session.write(&greeting);
        session
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The time now (Unix seconds), for the SASL exchanges that follow.
    pub fn set_clock(&mut self, unix_time: u64) {
        self.clock = unix_time;
    }

    fn next_fresh(&mut self) -> crate::sasl::Fresh {
        self.exchanges += 1;
        self.fresh.nth(self.exchanges, self.clock)
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.reader.feed(bytes);
        }
    }

    /// Before the driver waits for the client: buffers that grew and hold nothing now are
    /// given back (see [`CommandReader::release_idle_buffers`]).
    pub fn release_idle_buffers(&mut self) {
        self.reader.release_idle_buffers();
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// True once the session has ended (LOGOUT, too many errors, timeout, shutdown): write
    /// the remaining output and close the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while the driver owes an answer to an event.
    pub fn is_awaiting_driver(&self) -> bool {
        matches!(self.wait, Wait::Tls | Wait::Secrets { .. } | Wait::Driver(_))
    }

    /// True while the client is in IDLE (RFC 2177).
    pub fn is_idling(&self) -> bool {
        matches!(self.wait, Wait::Idle { .. })
    }

    /// True between commands with no input waiting: a good moment to close on shutdown.
    pub fn is_idle(&self) -> bool {
        !self.closed && matches!(self.wait, Wait::Ready) && self.job.is_none() && !self.reader.has_partial_input()
    }

    /// Whether the driver should read more from the socket now: not while a large answer
    /// waits to be written or the reader already holds much unread input.
    pub fn wants_input(&self) -> bool {
        !self.closed
            && self.output.len() < self.config.max_buffered_output
            && self.reader.buffered() < self.config.limits.max_command.max(self.config.limits.max_line) * 2
    }

    /// Changes each time a command or line has been taken: the driver restarts its read
    /// deadline when it changes.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// How long the driver waits for the client (RFC 9051 5.4: at least 30 minutes; the
    /// same while idling, RFC 2177 3).
    pub fn read_timeout(&self) -> Duration {
        self.config.autologout.max(MIN_AUTOLOGOUT)
    }

    /// The autologout timer expired (RFC 9051 5.4): `* BYE` and close.
    pub fn on_timeout(&mut self) {
        if !self.closed {
            self.write(&StatusResponse::bye("Autologout; idle for too long"));
            self.close();
        }
    }

    /// The server is shutting down (RFC 9051 7.1.5): `* BYE` and close.
    pub fn on_shutdown(&mut self) {
        if !self.closed {
            self.write(&StatusResponse::bye("Server shutting down"));
            self.close();
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The selected mailbox.
    pub fn selected_mailbox(&self) -> Option<&MailboxName> {
        self.view.as_ref().map(|v| &v.mailbox)
    }

    pub fn enabled(&self) -> Enabled {
        self.enabled
    }

    /// True when a complete command may be buffered but was left for after the driver
    /// writes the output: poll again before reading more.
    pub fn has_buffered_command(&self) -> bool {
        !self.closed && !self.is_awaiting_driver() && (self.reader.has_partial_input() || self.job.is_some())
    }

    /// True while a command answered in steps (FETCH, SEARCH) has steps left: polling
    /// again goes on with it, with no input needed.
    pub fn is_running_command(&self) -> bool {
        !self.closed && !self.is_awaiting_driver() && self.job.is_some()
    }

    /// How mailbox names and strings go out on this connection.
    fn encoding(&self) -> NameEncoding {
        if self.enabled.imap4rev2 || self.enabled.utf8_accept {
            NameEncoding::Utf8
        } else {
            NameEncoding::ModifiedUtf7
        }
    }

    /// Runs the session on buffered input until it needs the driver or more input.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending_events.pop_front() {
                return Some(event);
            }
            if self.closed || self.is_awaiting_driver() || self.output.len() >= self.config.max_buffered_output {
                return None;
            }
            // Events go out in the order they happened: one queued while a command ran
            // (MailboxClosed as SELECT leaves the old mailbox) before the command's own.
            if self.job.is_some() {
                if let Some(event) = self.continue_job() {
                    self.pending_events.push_back(event);
                }
                continue;
            }
            let read = self.reader.next_event()?;
            self.progress += 1;
            if let Some(event) = self.handle_read(read) {
                self.pending_events.push_back(event);
            }
        }
    }

    fn handle_read(&mut self, read: ReadEvent) -> Option<Event> {
        match read {
            // RFC 9051 7.5: the go-ahead for a synchronizing literal.
            ReadEvent::SendContinuation => {
                write_continuation("Ready for literal data", &mut self.output);
                None
            }
            ReadEvent::AuthenticateResponse(line) => match std::mem::replace(&mut self.wait, Wait::Ready) {
                Wait::AuthExchange { tag } => self.handle_auth_response(tag, &line),
                other => {
                    self.wait = other;
                    None
                }
            },
            ReadEvent::IdleDone => self.handle_idle_done(),
            ReadEvent::Error(error) => {
                match std::mem::replace(&mut self.wait, Wait::Ready) {
                    // A response line of the exchange was refused (too long): the exchange
                    // ends with BAD (RFC 9051 6.2.2).
                    Wait::AuthExchange { tag } => {
                        self.sasl = None;
                        let response = StatusResponse::bad(&tag, error.text.clone());
                        self.bad(response);
                    }
                    Wait::Idle { tag } => return self.end_idle(&tag, false),
                    other => {
                        self.wait = other;
                        let response = error.response();
                        if response.status == Status::Bad {
                            self.bad(response);
                        } else {
                            self.write(&response);
                        }
                    }
                }
                None
            }
            ReadEvent::Command(command) => self.handle_command(command),
        }
    }

    fn handle_command(&mut self, command: Command) -> Option<Event> {
        let Command { tag, body } = command;
        match body {
            // RFC 9051 6.1.1.
            CommandBody::Capability => {
                let capabilities = self.capabilities();
                self.data(&Data::Capability(capabilities));
                self.complete(&tag, "CAPABILITY completed", true);
                None
            }
            // RFC 9051 6.1.2: the moment to report updates; RFC 3501 6.4.1 CHECK likewise.
            CommandBody::Noop => {
                self.complete(&tag, "NOOP completed", true);
                None
            }
            CommandBody::Logout => {
                self.write(&StatusResponse::bye("Logging out"));
                self.write(&StatusResponse::ok(&tag, "LOGOUT completed"));
                self.close();
                None
            }
            // RFC 2971 3.2: in any state.
            CommandBody::Id(_) => {
                let ours = vec![("name".to_owned(), Some("vouchmail".to_owned()))];
                self.data(&Data::Id(Some(ours)));
                self.complete(&tag, "ID completed", true);
                None
            }
            body if self.user.is_none() => self.handle_not_authenticated(tag, body),
            body if self.view.is_some() => self.handle_selected(tag, body),
            body => self.handle_authenticated(tag, body),
        }
    }

    /// RFC 9051 7.2.2, with the extensions of SPEC 9. Before login: STARTTLS while the
    /// channel is clear, the SASL mechanisms this channel allows, LOGINDISABLED when
    /// clear-text passwords are not allowed (RFC 9051 6.2.3).
    fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = vec!["IMAP4rev2".into(), "IMAP4rev1".into()];
        if self.user.is_none() {
            if self.config.starttls && self.tls.is_none() {
                caps.push("STARTTLS".into());
            }
            caps.extend(self.offered_mechanisms().iter().map(|m| format!("AUTH={}", m.name())));
            if !self.plaintext_allowed() {
                caps.push("LOGINDISABLED".into());
            }
            caps.push("SASL-IR".into());
        }
        for cap in [
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "SPECIAL-USE",
            "ENABLE",
            "NAMESPACE",
            "ID",
            "LITERAL-",
            "CONDSTORE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "UTF8=ACCEPT",
        ] {
            caps.push(cap.into());
        }
        caps
    }

    /// Queues a status response.
    fn write(&mut self, response: &StatusResponse) {
        response.write_to(&mut self.output);
    }

    /// Queues untagged data.
    fn data(&mut self, data: &Data) {
        data.write_to(self.encoding(), &mut self.output);
    }

    /// Reports the pending mailbox changes (RFC 9051 7.5.1), expunges only when allowed.
    fn flush_updates(&mut self, allow_expunge: bool) {
        let condstore = self.enabled.condstore;
        let encoding = self.encoding();
        if let Some(view) = self.view.as_mut() {
            view.flush(allow_expunge, condstore, encoding, &mut self.output);
        }
    }

    /// The tagged OK of a command, after the pending updates.
    fn complete(&mut self, tag: &Tag, text: &'static str, allow_expunge: bool) {
        self.flush_updates(allow_expunge);
        self.write(&StatusResponse::ok(tag, text));
    }

    /// The tagged OK with a response code, after the pending updates.
    fn complete_with(&mut self, tag: &Tag, code: ResponseCode, text: &'static str, allow_expunge: bool) {
        self.flush_updates(allow_expunge);
        self.write(&StatusResponse::ok(tag, text).with_code(code));
    }

    /// The tagged NO for a driver's failure, after the pending updates.
    fn fail(&mut self, tag: &Tag, failure: Failure) {
        self.flush_updates(true);
        let response =
            StatusResponse { tag: Some(tag.clone()), status: Status::No, code: failure.code, text: failure.text };
        self.write(&response);
    }

    /// Queues a BAD and counts it; too many end the session with `* BYE`.
    fn bad(&mut self, response: StatusResponse) {
        self.write(&response);
        self.count_error();
    }

    fn bad_tagged(&mut self, tag: &Tag, text: &'static str) {
        self.bad(StatusResponse::bad(tag, text));
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors && !self.closed {
            self.write(&StatusResponse::bye("Too many errors"));
            self.close();
        }
    }

    /// Ends the session: nothing more is read; the driver is told to stop watching.
    fn close(&mut self) {
        if matches!(self.wait, Wait::Idle { .. }) {
            self.pending_events.push_back(Event::IdleDone);
        }
        if self.view.take().is_some() {
            self.pending_events.push_back(Event::MailboxClosed);
        }
        self.closed = true;
        self.wait = Wait::Ready;
        self.job = None;
        self.sasl = None;
        self.reader = CommandReader::new(self.config.limits);
    }

    /// Leaves the selected mailbox (CLOSE, UNSELECT, SELECT of another).
    fn deselect(&mut self) {
        if self.view.take().is_some() {
            self.pending_events.push_back(Event::MailboxClosed);
        }
        self.saved.clear();
    }

    /// The driver's answer to a store event; the stage files check it is the one awaited.
    fn take_pending(&mut self) -> Option<Pending> {
        match std::mem::replace(&mut self.wait, Wait::Ready) {
            Wait::Driver(pending) => Some(pending),
            other => {
                self.wait = other;
                None
            }
        }
    }

    /// A change in the selected mailbox (see [`Change`]). Reported at once while the
    /// client idles, else at the next command (RFC 9051 7.5.1). Ignored when no mailbox is
    /// selected.
    pub fn mailbox_changed(&mut self, changes: Vec<Change>) {
        let Some(view) = self.view.as_mut() else { return };
        for change in changes {
            view.push(change);
        }
        let overfull = view.overfull();
        if matches!(self.wait, Wait::Idle { .. }) {
            self.flush_updates(true);
        } else if overfull {
            // A client that sends nothing cannot make us hold changes without end: the
            // new messages and flags go out now; expunges wait for a command.
            self.flush_updates(false);
        }
    }
}

#[cfg(test)]
mod tests;
