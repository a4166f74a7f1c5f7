//! ENTITIES (SPEC 8.4): any peer may ask for this server's own Entity Index changes.

use super::{Event, MessengerRequest, Session, State};
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_entities(&mut self, since: u64) -> Option<Event<R>> {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Entities { since }))
    }
}
