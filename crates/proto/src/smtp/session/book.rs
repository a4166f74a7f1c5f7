//! BOOK (SPEC 8.4): the published directory, for an authenticated session only.

use super::{Event, MessengerRequest, Session, State};
use crate::messenger::replies;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_book(&mut self, query: String) -> Option<Event<R>> {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return None;
        }
        if self.authenticated.is_none() {
            self.error(replies::book_needs_auth());
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Book { query }))
    }
}
