//! `AUTH RCRAM-MD5 <address>` on the verifier (SPEC 8.2 steps 1, 2, 4 to 6), and what both
//! RCRAM stages share: the exchange state, the driver's verdicts, cancel and failure.
//!
//! The verifier holds no secret of the address: the driver asks the address domain's
//! home server with `AUTH X-RCRAM-VERIFY <address> <our name>` ([`MessengerRequest::RcramStart`]),
//! the home server's `334` line is passed to the client unchanged (step 4), and so is the
//! client's answer line to the home server (step 5, [`MessengerRequest::RcramAnswer`]).
//! The home server's verdict becomes ours (step 6): `235 2.7.0 Authenticated as <address>
//! (remote)`, `535 5.7.8`, or `454 4.7.0` when it cannot be asked.

use super::parts::{sasl_reply, Exchange, RcramVerdict};
use super::{Event, MessengerRequest, Session, State};
use crate::messenger::rcram;
use crate::sasl::SaslError;
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    /// `AUTH RCRAM-MD5 <address>` (SPEC 8.2 step 1). Sequence checks as for any AUTH.
    pub(super) fn handle_rcram(&mut self, argument: Option<&str>) -> Option<Event<R>> {
        let address = match rcram::parse_rcram_argument(argument) {
            Ok(address) => address,
            Err(_) => {
                self.error(Reply::syntax("Syntax: AUTH RCRAM-MD5 <address>"));
                return None;
            }
        };
        self.rcram = Some(Exchange::Relay { address: address.clone() });
        self.state = State::AwaitingRcram;
        Some(Event::Messenger(MessengerRequest::RcramStart { address }))
    }

    /// The client's line inside an RCRAM exchange: `*` cancels (RFC 4954 4); anything else
    /// is the answer, relayed unchanged (verifier) or checked (home server).
    pub(super) fn handle_rcram_response(&mut self, line: &[u8]) -> Option<Event<R>> {
        if line == b"*" {
            let exchange = self.rcram.clone();
            self.abandon_rcram(SaslError::Cancelled);
            return match exchange {
                // The verifier drops its exchange with the home server.
                Some(Exchange::Relay { .. }) => Some(Event::Messenger(MessengerRequest::RcramCancel)),
                // SPEC 8.2 step 3: the home server frees the challenge and counts the cancel
                // as a failure.
                Some(Exchange::Verify { address, challenge: Some(challenge) }) => {
                    Some(Event::Messenger(MessengerRequest::VerifyCancel { address, challenge }))
                }
                Some(Exchange::Verify { challenge: None, .. }) | None => None,
            };
        }
        match self.rcram.clone() {
            Some(Exchange::Relay { address }) => {
                // Step 5: relayed as the client sent it; it must be one base64 line.
                let Some(text) =
                    std::str::from_utf8(line).ok().filter(|t| crate::sasl::decode_response(t.as_bytes()).is_ok())
                else {
                    self.abandon_rcram(SaslError::Malformed);
                    return Some(Event::Messenger(MessengerRequest::RcramCancel));
                };
                self.state = State::AwaitingRcram;
                Some(Event::Messenger(MessengerRequest::RcramAnswer { address, line: text.to_string() }))
            }
            Some(Exchange::Verify { address, challenge: Some(challenge) }) => {
                let Ok(response) = crate::sasl::decode_response(line) else {
                    // No answer: as a cancel (SPEC 8.2 step 3).
                    self.abandon_rcram(SaslError::Malformed);
                    return Some(Event::Messenger(MessengerRequest::VerifyCancel { address, challenge }));
                };
                self.state = State::AwaitingRcram;
                Some(Event::Messenger(MessengerRequest::VerifyAnswer { address, challenge, response }))
            }
            Some(Exchange::Verify { challenge: None, .. }) | None => {
                self.abandon_rcram(SaslError::Malformed);
                None
            }
        }
    }

    /// The driver's answer to [`MessengerRequest::RcramStart`], `RcramAnswer`,
    /// `VerifyStart` or `VerifyAnswer`. A returned event (a failed attempt, for the AUTH
    /// limits) must be handled like one from [`Session::poll_event`].
    pub fn rcram_verdict(&mut self, verdict: RcramVerdict) -> Option<Event<R>> {
        if !matches!(self.state, State::AwaitingRcram) {
            return None;
        }
        let Some(exchange) = self.rcram.clone() else {
            self.state = State::Command;
            return None;
        };
        match verdict {
            RcramVerdict::Relayed334 { wire }
                if matches!(exchange, Exchange::Relay { .. }) && wire.starts_with(b"334 ") =>
            {
                // Step 4: the home server's line, unchanged.
                self.output.extend_from_slice(&wire);
                self.state = State::RcramResponse;
                None
            }
            RcramVerdict::Issued { challenge } if matches!(exchange, Exchange::Verify { challenge: None, .. }) => {
                // Step 3: `334 <base64 challenge>` (RFC 4954 4).
                self.reply(Reply::plain(334, crate::sasl::encode_challenge(challenge.as_bytes())));
                self.rcram =
                    Some(Exchange::Verify { address: exchange.address().to_string(), challenge: Some(challenge) });
                self.state = State::RcramResponse;
                None
            }
            RcramVerdict::Success => {
                self.rcram = None;
                self.state = State::Command;
                let via_verifier = matches!(exchange, Exchange::Verify { .. });
                let address = exchange.address().to_string();
                if via_verifier {
                    // A 235 to X-RCRAM-VERIFY grants verification only.
                    self.reply(Reply::rcram_verified());
                    self.verified_only = true;
                } else {
                    // Step 6: authenticated as the address, remotely.
                    self.reply(Reply::rcram_authenticated(&address));
                    self.authenticated = Some(address.clone());
                    self.remote = true;
                }
                // A success makes the client (or verifier) familiar to the address, so that
                // strangers' failures cannot lock it out (SPEC 3).
                Some(Event::AuthFinished { authcid: Some(address), success: true, via_verifier })
            }
            RcramVerdict::Refused(reply) => {
                self.rcram = None;
                self.state = State::Command;
                self.error(reply);
                // SPEC 8.2: failures count towards the AUTH limits for the client and the
                // address.
                let via_verifier = matches!(exchange, Exchange::Verify { .. });
                Some(Event::AuthFinished {
                    authcid: Some(exchange.address().to_string()),
                    success: false,
                    via_verifier,
                })
            }
            RcramVerdict::Unavailable(reply) => {
                self.rcram = None;
                self.state = State::Command;
                self.error(reply);
                None
            }
            // A verdict that does not fit the exchange (a driver bug): temporary.
            RcramVerdict::Relayed334 { .. } | RcramVerdict::Issued { .. } => {
                self.rcram = None;
                self.state = State::Command;
                self.error(sasl_reply(SaslError::Temporary));
                None
            }
        }
    }

    /// Ends the exchange with the error's reply (cancel, bad base64, over-long line); not
    /// a failed attempt. The session stays usable (RFC 4954 4).
    pub(super) fn abandon_rcram(&mut self, error: SaslError) {
        self.rcram = None;
        self.state = State::Command;
        self.error(sasl_reply(error));
    }
}
