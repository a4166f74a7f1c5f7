//! `RECEIPT <message-id> DECRYPTED|FAILED` (SPEC 8.3): the recipient reports decryption,
//! on an authenticated local session (a remote RCRAM-MD5 identity has no mailbox here).
//! The driver answers `250 2.0.0`, or `550 5.1.0` when no such message was delivered to
//! the user; each event is recorded once per message and recipient.

use super::{Event, MessengerRequest, Session, State};
use crate::messenger::tracking::Receipt;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_receipt(&mut self, receipt: Receipt) -> Option<Event<R>> {
        if !self.check_local_user() {
            return None;
        }
        self.state = State::AwaitingMessenger;
        Some(Event::Messenger(MessengerRequest::Receipt(receipt)))
    }

    /// RECEIPT and TRACK: after EHLO (503 5.5.1), by a locally authenticated user
    /// (530 5.7.0). False when refused (the reply is queued).
    pub(super) fn check_local_user(&mut self) -> bool {
        if self.greeting.is_none() {
            self.error(Reply::greet_first());
            return false;
        }
        if self.local_user().is_none() {
            self.error(Reply::auth_required("Authentication as a local user required"));
            return false;
        }
        true
    }
}
