//! Messages this server writes itself: delivery status notifications (RFC 3464), the
//! refused-message notice of SPEC 2's reject-notify-recipient, and AuthKey mail (SPEC 7.4).
//! They are committed like received mail, so they carry what received mail carries.

use vouchmail_proto::headers;
use vouchmail_proto::smtp::client::has_8bit;
use vouchmail_proto::time::rfc5322_date;
use vouchmail_store::{Delivery, Envelope, NewMessage, RecipientDsn};

use crate::support::time::unix_time;

/// One message of ours, before it is committed.
pub struct OwnMessage<'a> {
    /// This server's name, in the trace fields.
    pub hostname: &'a str,
    /// From [`crate::support::queue_id::new_queue_id`]; the caller may put it in a Message-ID.
    pub queue_id: String,
    /// The envelope sender: empty (the null sender) for notices, so that nothing ever
    /// answers them with another (RFC 5321 4.5.5).
    pub sender: String,
    /// The header fields after our trace fields.
    pub fields: &'a [(&'a str, &'a str)],
    /// What follows the fields: the blank line and the body, or (for a DSN) more header
    /// fields, the blank line and the body.
    pub rest: &'a [u8],
    /// Unix time: the Received date and the message's arrival.
    pub now: i64,
}

impl OwnMessage<'_> {
    /// The message, to be stored for `deliveries`. On top: our Received (RFC 5321 4.4)
    /// and our one Authentication-Results, `none` (RFC 8601: no method vouched for it;
    /// SPEC 2: every stored message says how its sender was authenticated).
    pub fn build(self, deliveries: Vec<Delivery>) -> NewMessage {
        let hostname = self.hostname;
        let received = format!("by {hostname} (vouchmail) id {}; {}", self.queue_id, rfc5322_date(unix_time(self.now)));
        let results = format!("{hostname}; none");
        let mut fields = vec![("Authentication-Results", results.as_str()), ("Received", received.as_str())];
        fields.extend_from_slice(self.fields);
        let data = headers::prepend(&fields, self.rest);
        // RFC 6531: an address outside ASCII needs SMTPUTF8 if the message goes out.
        let smtputf8 = !self.sender.is_ascii() || deliveries.iter().any(|d| !recipient_of(d).is_ascii());
        NewMessage {
            queue_id: self.queue_id,
            envelope: Envelope {
                sender: self.sender,
                auth_results: "none".into(),
                body_8bit: has_8bit(&data),
                smtputf8,
                ..Envelope::default()
            },
            received_at: self.now,
            data,
            spooled: None,
            deliveries: deliveries.into_iter().map(|d| (d, RecipientDsn::default())).collect(),
        }
    }
}

fn recipient_of(delivery: &Delivery) -> &str {
    match delivery {
        Delivery::Mailbox { recipient, .. } | Delivery::Queue { recipient } | Delivery::Held { recipient, .. } => {
            recipient
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchmail_store::Folder;

    #[test]
    fn our_trace_fields_come_first_and_say_no_one_vouched() {
        let fields = [("From", "<MAILER-DAEMON@mx.example>"), ("Subject", "Grüße")];
        let mailbox = Delivery::Mailbox { account_id: 1, folder: Folder::Inbox, recipient: "jörg@mx.example".into() };
        let message = OwnMessage {
            hostname: "mx.example",
            queue_id: "Q1".into(),
            sender: String::new(),
            fields: &fields,
            rest: b"\r\nhello\r\n",
            now: 0,
        }
        .build(vec![mailbox]);
        let text = String::from_utf8(message.data).unwrap();
        assert!(
            text.starts_with("Authentication-Results: mx.example; none\r\nReceived: by mx.example (vouchmail) id Q1; ")
        );
        assert!(text.contains("\r\nFrom: <MAILER-DAEMON@mx.example>\r\nSubject: Grüße\r\n\r\nhello\r\n"), "{text}");
        assert!(message.envelope.body_8bit && message.envelope.smtputf8);
        assert_eq!((message.envelope.sender.as_str(), message.envelope.auth_results.as_str()), ("", "none"));
        assert_eq!(message.deliveries.len(), 1);
    }
}
