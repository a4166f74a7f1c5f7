//! Delivery status notifications: the RFC 3464 `multipart/report` (RFC 6522) message sent to
//! the envelope sender for failures, delays and (RFC 3461 NOTIFY=SUCCESS) relays.
//!
//! The builder is pure: the caller supplies names, times and the original message and gets
//! the complete message back, ready to be sent from the null reverse-path `<>`.

use std::time::SystemTime;

use crate::headers;
use crate::smtp::reply::EnhancedCode;
use crate::time::rfc5322_date;

/// RFC 3464 2.3.3 Action field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// What to return of the original message (RFC 3461 4.3 RET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// The whole message, as `message/rfc822`.
    Full,
    /// Its header only, as `text/rfc822-headers` (RFC 6522 4).
    Headers,
}

/// One recipient's per-recipient fields (RFC 3464 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The address we tried to deliver to.
    pub final_recipient: String,
    /// RFC 3461 ORCPT as received, `addr-type;address` (RFC 3464 2.3.1).
    pub original_recipient: Option<String>,
    pub action: Action,
    pub status: EnhancedCode,
    /// The host that gave the diagnostic (RFC 3464 2.3.5).
    pub remote_mta: Option<String>,
    /// The SMTP reply, e.g. `550 5.1.1 No such user` (RFC 3464 2.3.6, type smtp): only a
    /// reply a server really sent.
    pub diagnostic: Option<String>,
    /// What happened when no server replied (a refused connection, a timeout), for the
    /// human-readable part only.
    pub detail: Option<String>,
    pub last_attempt: Option<SystemTime>,
    /// For delays: when we give up (RFC 3464 2.3.8).
    pub will_retry_until: Option<SystemTime>,
}

/// Everything a report needs.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, the From address's domain).
    pub reporting_mta: &'a str,
    /// The original envelope sender: the report's recipient.
    pub to: &'a str,
    /// RFC 3461 ENVID of the original (RFC 3464 2.2.1).
    pub envid: Option<&'a str>,
    /// When the original arrived (RFC 3464 2.2.5).
    pub arrival: SystemTime,
    pub date: SystemTime,
    /// The report's Message-ID, without angle brackets.
    pub message_id: &'a str,
    pub recipients: &'a [RecipientStatus],
    /// The original message as stored.
    pub original: &'a [u8],
    pub return_content: Return,
}

/// The report's overall kind, from its recipients: any failure makes it a bounce.
fn kind(recipients: &[RecipientStatus]) -> Action {
    if recipients.iter().any(|r| r.action == Action::Failed) {
        Action::Failed
    } else if recipients.iter().any(|r| r.action == Action::Delayed) {
        Action::Delayed
    } else {
        Action::Delivered
    }
}

/// Text for a structured field: one line, US-ASCII (RFC 3464 2.1.3), no control characters.
fn field_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else if c.is_control() || !c.is_ascii() {
                '?'
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// RFC 3464 2.3.2: `address-type ";" generic-address`; RFC 6533 3 for UTF-8 addresses.
fn address_field(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822; {}", field_text(address))
    } else {
        format!("utf-8; {}", address.replace(['\r', '\n'], ""))
    }
}

/// A boundary that does not occur in `content` (RFC 2046 5.1.1).
fn boundary_for(message_id: &str, content: &[u8]) -> String {
    let base: String = message_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect();
    let mut n = 0u32;
    loop {
        let candidate = format!("=_vouchmail_report_{base}_{n}");
        if !content.windows(candidate.len()).any(|w| w == candidate.as_bytes()) {
            return candidate;
        }
        n += 1;
    }
}

/// Builds the complete report message (header and body, CRLF line ends).
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let kind = kind(report.recipients);
    let subject = match kind {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        _ => "Successful Mail Delivery Report",
    };
    let returned: &[u8] = match report.return_content {
        Return::Full => report.original,
        Return::Headers => report.original.get(..headers::header_end(report.original)).unwrap_or(report.original),
    };
    let boundary = boundary_for(report.message_id, returned);

    let mut out = Vec::with_capacity(returned.len() + 2048);
    let from = format!("Mail Delivery System <MAILER-DAEMON@{}>", field_text(report.reporting_mta));
    headers::write_field("From", &from, &mut out);
    headers::write_field("To", &format!("<{}>", report.to), &mut out);
    headers::write_field("Subject", subject, &mut out);
    headers::write_field("Date", &rfc5322_date(report.date), &mut out);
    headers::write_field("Message-ID", &format!("<{}>", field_text(report.message_id)), &mut out);
    // Point back at the original so mail readers can thread the report.
    if let Some(original_id) = headers::first_value(report.original, "Message-ID") {
        let original_id = field_text(&original_id);
        if original_id.starts_with('<') && original_id.ends_with('>') {
            headers::write_field("In-Reply-To", &original_id, &mut out);
            headers::write_field("References", &original_id, &mut out);
        }
    }
    // RFC 3834 5: an automatic response; nobody should answer it automatically.
    headers::write_field("Auto-Submitted", "auto-replied", &mut out);
    headers::write_field("MIME-Version", "1.0", &mut out);
    headers::write_field(
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
        &mut out,
    );
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"This is a MIME-encapsulated message.\r\n\r\n");

    // Part 1: for people (RFC 6522 3).
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    headers::write_field("Content-Description", "Notification", &mut out);
    headers::write_field("Content-Type", "text/plain; charset=utf-8", &mut out);
    headers::write_field("Content-Transfer-Encoding", "8bit", &mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(human_text(report, kind).as_bytes());
    out.extend_from_slice(b"\r\n");

    // Part 2: for programs (RFC 3464 2).
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    headers::write_field("Content-Description", "Delivery report", &mut out);
    headers::write_field("Content-Type", "message/delivery-status", &mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(delivery_status(report).as_bytes());

    // Part 3: the original (RFC 3464 2: optional; RFC 3461 4.3 RET decides how much).
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    let (description, content_type) = match (report.return_content, kind) {
        (Return::Full, Action::Failed) => ("Undelivered Message", "message/rfc822"),
        (Return::Full, Action::Delayed) => ("Delayed Message", "message/rfc822"),
        (Return::Full, _) => ("Delivered Message", "message/rfc822"),
        (Return::Headers, Action::Failed) => ("Undelivered Message Headers", "text/rfc822-headers"),
        (Return::Headers, Action::Delayed) => ("Delayed Message Headers", "text/rfc822-headers"),
        (Return::Headers, _) => ("Delivered Message Headers", "text/rfc822-headers"),
    };
    headers::write_field("Content-Description", description, &mut out);
    headers::write_field("Content-Type", content_type, &mut out);
    if returned.iter().any(|&b| b >= 0x80) {
        // RFC 2046 5.2.1: message/rfc822 may be 7bit, 8bit or binary only.
        headers::write_field("Content-Transfer-Encoding", "8bit", &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(returned);
    if !returned.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn human_text(report: &Report<'_>, kind: Action) -> String {
    let mut text = format!("This is the mail system at host {}.\r\n\r\n", field_text(report.reporting_mta));
    match kind {
        Action::Failed => text.push_str(
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. It's attached below.\r\n\r\n\
             For further assistance, please send mail to postmaster.\r\n",
        ),
        Action::Delayed => text.push_str(
            "####################################################################\r\n\
             # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
             ####################################################################\r\n\r\n\
             Your message could not be delivered yet to one or more recipients.\r\n\
             The mail system will keep trying; its header is attached below.\r\n",
        ),
        _ => text.push_str(
            "Your message was successfully delivered to the destination(s)\r\n\
             listed below. If the message was delivered to a mailbox you will\r\n\
             receive no further notifications. Otherwise you may still receive\r\n\
             notifications of mail delivery errors from other systems.\r\n",
        ),
    }
    text.push_str("\r\n");
    for r in report.recipients {
        let what = match (&r.remote_mta, &r.diagnostic, &r.detail) {
            (Some(host), Some(diag), _) => format!("host {host} said: {diag}"),
            (None, Some(diag), _) => diag.clone(),
            (_, None, Some(detail)) => format!("{detail} ({})", r.status),
            (_, None, None) => format!("{} ({})", r.action.as_str(), r.status),
        };
        let what: String = what.chars().filter(|c| !c.is_control()).collect();
        text.push_str(&format!("<{}>: {what}\r\n", r.final_recipient.replace(['\r', '\n'], "")));
        if let Some(until) = r.will_retry_until {
            text.push_str(&format!("    (the mail system gives up at {})\r\n", rfc5322_date(until)));
        }
    }
    text
}

/// The `message/delivery-status` body: per-message fields, then one block per recipient.
fn delivery_status(report: &Report<'_>) -> String {
    let mut s = String::new();
    // RFC 3464 2.2.2
    s.push_str(&format!("Reporting-MTA: dns; {}\r\n", field_text(report.reporting_mta)));
    // RFC 3464 2.2.1
    if let Some(envid) = report.envid {
        s.push_str(&format!("Original-Envelope-Id: {}\r\n", field_text(envid)));
    }
    // RFC 3464 2.2.5
    s.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(report.arrival)));
    for r in report.recipients {
        s.push_str("\r\n");
        if let Some((kind, address)) = r.original_recipient.as_deref().and_then(|o| o.split_once(';')) {
            s.push_str(&format!("Original-Recipient: {}; {}\r\n", field_text(kind), field_text(address)));
        }
        s.push_str(&format!("Final-Recipient: {}\r\n", address_field(&r.final_recipient)));
        s.push_str(&format!("Action: {}\r\n", r.action.as_str()));
        s.push_str(&format!("Status: {}\r\n", r.status));
        if let Some(host) = &r.remote_mta {
            s.push_str(&format!("Remote-MTA: dns; {}\r\n", field_text(host)));
        }
        if let Some(diag) = &r.diagnostic {
            s.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", field_text(diag)));
        }
        if let Some(t) = r.last_attempt {
            s.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322_date(t)));
        }
        if let Some(t) = r.will_retry_until {
            s.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(t)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn original() -> Vec<u8> {
        b"Received: from a by b; Thu, 01 Jan 1970 00:00:00 +0000\r\nMessage-ID: <orig@example.org>\r\nSubject: hello\r\n\r\nbody line\r\n".to_vec()
    }

    fn failed() -> RecipientStatus {
        RecipientStatus {
            final_recipient: "bob@remote.example".into(),
            original_recipient: Some("rfc822;Bob@remote.example".into()),
            action: Action::Failed,
            status: EnhancedCode(5, 1, 1),
            remote_mta: Some("mx.remote.example".into()),
            diagnostic: Some("550 5.1.1 No such user\nhere".into()),
            detail: None,
            last_attempt: Some(UNIX_EPOCH + Duration::from_secs(60)),
            will_retry_until: None,
        }
    }

    fn report<'a>(recipients: &'a [RecipientStatus], original: &'a [u8], ret: Return) -> Report<'a> {
        Report {
            reporting_mta: "mx.local.example",
            to: "alice@local.example",
            envid: Some("QQ314159"),
            arrival: UNIX_EPOCH,
            date: UNIX_EPOCH + Duration::from_secs(120),
            message_id: "0123ABCD.dsn@mx.local.example",
            recipients,
            original,
            return_content: ret,
        }
    }

    #[test]
    fn bounce_has_the_three_parts_of_rfc3464() {
        let original = original();
        let recipients = [failed()];
        let text = String::from_utf8(build(&report(&recipients, &original, Return::Full))).unwrap();
        assert!(text.contains("From: Mail Delivery System <MAILER-DAEMON@mx.local.example>\r\n"));
        assert!(text.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("In-Reply-To: <orig@example.org>\r\n"));
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        // RFC 3464 2.2 / 2.3 fields, in their syntax.
        for field in [
            "Reporting-MTA: dns; mx.local.example\r\n",
            "Original-Envelope-Id: QQ314159\r\n",
            "Arrival-Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n",
            "Original-Recipient: rfc822; Bob@remote.example\r\n",
            "Final-Recipient: rfc822; bob@remote.example\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.remote.example\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user here\r\n",
            "Last-Attempt-Date: Thu, 01 Jan 1970 00:01:00 +0000\r\n",
        ] {
            assert!(text.contains(field), "missing {field:?} in\n{text}");
        }
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nReceived: from a by b"));
        assert!(text.contains("body line\r\n"));
        let boundary = "=_vouchmail_report_0123ABCDdsnmxlocalexample_0";
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 3);
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn headers_only_and_delay() {
        let original = original();
        let mut delayed = failed();
        delayed.action = Action::Delayed;
        delayed.status = EnhancedCode(4, 4, 1);
        delayed.will_retry_until = Some(UNIX_EPOCH + Duration::from_secs(5 * 86400));
        let recipients = [delayed];
        let text = String::from_utf8(build(&report(&recipients, &original, Return::Headers))).unwrap();
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(text.contains("Will-Retry-Until: Tue, 06 Jan 1970 00:00:00 +0000\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(!text.contains("body line"));
    }

    #[test]
    fn boundary_avoids_the_content() {
        let mut original = original();
        original.extend_from_slice(b"--=_vouchmail_report_0123ABCDdsnmxlocalexample_0\r\n");
        let recipients = [failed()];
        let text = String::from_utf8(build(&report(&recipients, &original, Return::Full))).unwrap();
        assert!(text.contains("boundary=\"=_vouchmail_report_0123ABCDdsnmxlocalexample_1\""));
    }

    #[test]
    fn fields_cannot_be_injected() {
        let original = original();
        let mut r = failed();
        r.diagnostic = Some("550 bad\r\nX-Evil: yes".into());
        r.final_recipient = "j\u{f6}rg@remote.example".into();
        let recipients = [r];
        let text = String::from_utf8(build(&report(&recipients, &original, Return::Full))).unwrap();
        assert!(text.contains("Diagnostic-Code: smtp; 550 bad  X-Evil: yes\r\n"));
        assert!(text.contains("Final-Recipient: utf-8; j\u{f6}rg@remote.example\r\n"));
    }
}
