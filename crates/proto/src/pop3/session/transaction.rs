//! The TRANSACTION state (RFC 1939 5, 7) and the UPDATE state (RFC 1939 6).

use super::{multiline, Entry, Event, Session, State};
use crate::pop3::command::Command;
use crate::pop3::reply::Reply;

impl Session {
    pub(super) fn handle_transaction(&mut self, command: Command) -> Option<Event> {
        match command {
            Command::Stat => {
                // RFC 1939 5: "+OK nn mm", deleted messages not counted.
                let (count, size) = self.live_totals();
                self.reply(Reply::ok(format!("{count} {size}")));
            }
            Command::List(None) => {
                let (count, size) = self.live_totals();
                let lines = self.live().map(|(n, e)| format!("{n} {}", e.info.size)).collect::<Vec<_>>();
                self.reply(Reply::ok(format!("{count} messages ({size} octets)")));
                multiline::write_lines(lines, &mut self.output);
            }
            Command::List(Some(n)) => {
                if let Some(entry) = self.live_entry(n) {
                    let size = entry.info.size;
                    self.reply(Reply::ok(format!("{n} {size}")));
                }
            }
            Command::Uidl(None) => {
                let lines = self.live().map(|(n, e)| format!("{n} {}", e.info.uid)).collect::<Vec<_>>();
                self.reply(Reply::ok("Unique-id listing follows"));
                multiline::write_lines(lines, &mut self.output);
            }
            Command::Uidl(Some(n)) => {
                if let Some(entry) = self.live_entry(n) {
                    let uid = entry.info.uid.clone();
                    self.reply(Reply::ok(format!("{n} {uid}")));
                }
            }
            Command::Retr(n) => return self.fetch(n, None),
            Command::Top { msg, lines } => return self.fetch(msg, Some(lines)),
            Command::Dele(n) => {
                if self.live_entry(n).is_some() {
                    if let Some(entry) = (n as usize).checked_sub(1).and_then(|i| self.maildrop.get_mut(i)) {
                        entry.deleted = true;
                    }
                    self.reply(Reply::ok(format!("Message {n} deleted")));
                }
            }
            Command::Noop => self.reply(Reply::ok("")),
            Command::Rset => {
                // RFC 1939 5: unmark every message marked deleted.
                for entry in &mut self.maildrop {
                    entry.deleted = false;
                }
                let (count, size) = self.live_totals();
                self.reply(Reply::ok(format!("Maildrop has {count} messages ({size} octets)")));
            }
            Command::Quit => {
                // RFC 1939 6: enter UPDATE; the driver removes the marked messages.
                let deleted = self.maildrop.iter().enumerate().filter(|(_, e)| e.deleted).map(|(i, _)| i + 1).collect();
                self.state = State::AwaitingUpdate;
                return Some(Event::Update { deleted });
            }
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                self.error(Reply::wrong_state())
            }
            // RFC 2595 4: STLS is only permitted in AUTHORIZATION.
            Command::Stls => self.error(Reply::wrong_state()),
            Command::Capa => {}
        }
        None
    }

    fn fetch(&mut self, n: u32, top: Option<u32>) -> Option<Event> {
        self.live_entry(n)?;
        let number = n as usize;
        self.state = State::AwaitingMessage { number, top };
        Some(Event::Fetch { number, top })
    }

    /// The driver's answer to [`Event::Fetch`]: the message as stored (CRLF line ends), or
    /// the reply to give when it cannot be read.
    pub fn message_loaded(&mut self, result: Result<Vec<u8>, Reply>) {
        let State::AwaitingMessage { number, top } = self.state else { return };
        self.state = State::Transaction;
        let message = match result {
            Ok(message) => message,
            Err(reply) => {
                self.error(reply);
                return;
            }
        };
        let complete = match top {
            None => {
                let size = self.entry(number).map_or(message.len() as u64, |e| e.info.size);
                self.reply(Reply::ok(format!("{size} octets")));
                multiline::write_stuffed(&message, &mut self.output);
                true
            }
            Some(lines) => {
                let part = multiline::top(&message, lines);
                self.reply(Reply::ok("Top of message follows"));
                multiline::write_stuffed(part, &mut self.output);
                part.len() == message.len()
            }
        };
        // SPEC 9: the first RETR downloads the message. A TOP that sent the whole message
        // is a download too: fetchmail fetches with `TOP n 99999999` unless told to keep.
        if complete {
            if let Some(entry) = number.checked_sub(1).and_then(|i| self.maildrop.get_mut(i)) {
                if !std::mem::replace(&mut entry.downloaded, true) {
                    self.pending_events.push_back(Event::Downloaded { number });
                }
            }
        }
    }

    /// The driver's answer to [`Event::Update`]. RFC 1939 6: the reply tells whether every
    /// marked message was removed; either way the session ends.
    pub fn update_done(&mut self, result: Result<(), Reply>) {
        if !matches!(self.state, State::AwaitingUpdate) {
            return;
        }
        match result {
            Ok(()) => {
                let left = self.maildrop.iter().filter(|e| !e.deleted).count();
                let status = if left == 0 {
                    "maildrop empty".to_owned()
                } else {
                    format!("{left} message{} left", if left == 1 { "" } else { "s" })
                };
                let text = format!("{} POP3 server signing off ({status})", self.config.hostname);
                self.reply(Reply::ok(text));
            }
            Err(reply) => self.reply(reply),
        }
        self.close();
    }

    /// Messages not marked deleted, with their numbers.
    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.maildrop.iter().enumerate().filter(|(_, e)| !e.deleted).map(|(i, e)| (i + 1, e))
    }

    fn live_totals(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(count, size), (_, e)| (count + 1, size + e.info.size))
    }

    /// The message `n` refers to, or the error reply queued (RFC 1939 5: a number that
    /// names no message, or one marked deleted).
    fn live_entry(&mut self, n: u32) -> Option<&Entry> {
        let number = n as usize;
        match self.entry(number).map(|e| e.deleted) {
            None => {
                self.error(Reply::no_such_message());
                None
            }
            Some(true) => {
                self.error(Reply::already_deleted(number));
                None
            }
            Some(false) => self.entry(number),
        }
    }
}
