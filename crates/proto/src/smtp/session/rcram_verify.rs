//! `AUTH X-RCRAM-VERIFY <address> <verifier's name>` on the home server (SPEC 8.2 steps 3
//! and 5). The driver checks the caller's IP against the forward DNS of the verifier's name
//! (`535 5.7.0`), that the address is a local account (`535 5.7.8`), and issues the
//! challenge bound to the verifier from its one-shot registry; the answer is checked
//! against the account's CRAM-MD5 secret and that challenge, once. A `235` here grants
//! verification only: MAIL on this connection gets `503 5.7.0`.

use super::{Event, MessengerRequest, Session, State};
use crate::messenger::rcram;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_rcram_verify(&mut self, arguments: Option<&str>) -> Option<Event<R>> {
        let (address, verifier) = match rcram::parse_verify_arguments(arguments.unwrap_or("")) {
            Ok(pair) => pair,
            Err(_) => {
                self.error(Reply::syntax("Syntax: AUTH X-RCRAM-VERIFY <address> <verifier's name>"));
                return None;
            }
        };
        self.rcram = Some(super::parts::Exchange::Verify { address: address.clone(), challenge: None });
        self.state = State::AwaitingRcram;
        Some(Event::Messenger(MessengerRequest::VerifyStart { address, verifier }))
    }
}
