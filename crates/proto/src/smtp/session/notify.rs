//! `NOTIFY <record>` (SPEC 8.3): a peer delivers a tracking record for one of our senders.
//! The argument was parsed by the command parser (`501 5.5.4` when malformed); the driver
//! checks the peer's IP against the home server of the record's recipient domain
//! (`550 5.7.1`), that the sender is local (`550 5.1.1`), and stores it once (`250 2.0.0`).
//! No authentication: the caller is a server, known by its address.

use super::{Event, MessengerRequest, Session, State};
use crate::messenger::tracking::Record;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_notify(&mut self, record: Record) -> Option<Event<R>> {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Notify(record)))
    }
}
