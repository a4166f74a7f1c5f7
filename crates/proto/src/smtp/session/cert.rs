//! CERT (SPEC 8.1): a certificate by address or published ID. Whether the lookup is local
//! or remote is the driver's to know (the store, the directory, the Entity Index); the
//! session checks the syntax (in the parser) and the sequence.

use super::{Event, MessengerRequest, Session, State};
use crate::messenger::CertTarget;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_cert(&mut self, target: CertTarget) -> Option<Event<R>> {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Cert(target)))
    }
}
