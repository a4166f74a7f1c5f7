//! `TRACK [<since>]` (SPEC 8.3): an authenticated local user's Tracking records, oldest
//! first, as `250-<record>` lines and a last `250 <n> records` (built by
//! `tracking::track_reply` in the driver).

use super::{Event, MessengerRequest, Session, State};

impl<R> Session<R> {
    pub(super) fn handle_track(&mut self, since: Option<i64>) -> Option<Event<R>> {
        if !self.check_local_user() {
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Track { since }))
    }
}
