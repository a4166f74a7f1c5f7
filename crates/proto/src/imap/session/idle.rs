//! IDLE (RFC 2177, RFC 9051 6.3.13): the client waits for updates of the selected
//! mailbox, which the session writes as soon as the driver pushes them, until DONE.

use super::{Event, Session, Wait};
use crate::imap::response::{write_continuation, StatusResponse};
use crate::imap::types::Tag;

impl Session {
    /// RFC 2177 3: `+ idling`, then every pending and new update at once.
    pub(super) fn handle_idle(&mut self, tag: Tag) -> Option<Event> {
        write_continuation("idling", &mut self.output);
        self.reader.expect_idle_done();
        self.wait = Wait::Idle { tag };
        self.flush_updates(true);
        Some(Event::Idle)
    }

    /// DONE ends IDLE with the tagged OK (RFC 2177 3).
    pub(super) fn handle_idle_done(&mut self) -> Option<Event> {
        match std::mem::replace(&mut self.wait, Wait::Ready) {
            Wait::Idle { tag } => self.end_idle(&tag, true),
            other => {
                self.wait = other;
                None
            }
        }
    }

    /// Ends IDLE: OK after DONE, BAD after anything else (RFC 2177 3).
    pub(super) fn end_idle(&mut self, tag: &Tag, done: bool) -> Option<Event> {
        self.wait = Wait::Ready;
        if done {
            self.complete(tag, "IDLE terminated", true);
        } else {
            self.flush_updates(true);
            self.bad(StatusResponse::bad(tag, "Expected DONE"));
        }
        // After MailboxClosed when the error limit closed the session.
        self.pending_events.push_back(Event::IdleDone);
        self.pending_events.pop_front()
    }
}
