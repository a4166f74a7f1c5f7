//! End of DATA: how was the sender authenticated, and what does the recipient domain's
//! sender policy do with the message (SPEC 2, 7.4, 7.5)?
//!
//! The decision is made here, after the body, because an `X-Auth-Key` and a DKIM
//! signature are only known then (SPEC 2). RCPT refuses early only when no method could
//! still pass (`rules::recipient`). On the MX the sending domain's SPF, DKIM, DMARC and
//! iprev are checked too (SPEC 13, `auth::sending_domain`): all results go into
//! Authentication-Results, a DMARC pass authenticates where the domain counts it, and the
//! sending domain's own DMARC policy is applied to its failures.

use std::time::SystemTime;

use vouchmail_proto::headers;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{Envelope, Service};
use vouchmail_proto::smtp::trace::{AuthKeyResult, AuthResult, MethodResult};
use vouchmail_proto::time::rfc5322_date;
use vouchmail_store::{Delivery, Folder, PolicyAction, Store};

use super::commit::{ClientInfo, Delivered};
use super::recipient::{store_reply, Resolved};
use crate::auth::authkey::sender::{self, NEW_KEY_HEADER};
use crate::auth::authkey::AuthKeys;
use crate::auth::sending_domain::{
    CheckedEnvelope, DmarcFacts, DmarcPolicy, DmarcVerdict, DomainChecks, DomainVerifier,
};
use crate::rules::dmarc_report::{Disposition, DmarcReports};
use crate::rules::own_message::OwnMessage;
use crate::support::metrics::Metrics;
use crate::support::queue_id::new_queue_id;
use crate::support::time::unix_now;

/// What happens to a received message.
#[derive(Debug)]
pub enum Decision {
    /// Store it as decided (the folder, the method, our key status).
    Deliver(Delivered),
    /// A key mail whose key was recorded and whose message is dropped (SPEC 7.4 phase I).
    KeyRecorded,
    /// Refuse it with this reply.
    Refuse(Reply),
    /// Refuse it with this reply: the sending domain's DMARC policy of reject (RFC 7489
    /// 6.3). Apart from the other refusals only for the metrics (SPEC 12); the reply is
    /// the usual 5.7.1.
    RefuseByDmarc(Reply),
}

/// The checks a message may go through at the end of DATA.
pub struct SenderChecks<'a> {
    pub authkeys: &'a AuthKeys,
    /// SPF, DKIM, DMARC and iprev (SPEC 13); None when `dmarc.verify` is off.
    pub domains: Option<&'a DomainVerifier>,
    /// Counts DMARC results for the aggregate reports (RFC 7489 7.2); None when
    /// `dmarc.reports` is off.
    pub reports: Option<&'a DmarcReports>,
    /// Counts the SPF, DKIM, DMARC and iprev results (SPEC 12).
    pub metrics: Option<&'a Metrics>,
}

/// Decides. The message itself is left as it arrived: the copies are made as it is
/// committed (`commit::commit_message`), each with its own header fields (SPEC 7.5).
/// `message` is the whole message as received (the envelope's body and what was spooled),
/// or None when it is too large to read back for DKIM.
pub async fn decide(
    checks: &SenderChecks<'_>,
    store: &dyn Store,
    hostname: &str,
    client: &ClientInfo<'_>,
    envelope: &Envelope<Resolved>,
    message: Option<&[u8]>,
) -> Decision {
    // SPEC 7.4: a local user's mail is stamped with X-Auth-Key as it leaves (outbound).
    let deliver =
        |auth| Decision::Deliver(Delivered { auth, folder: Folder::Inbox, key_status: None, checks: Vec::new() });
    if let Some(user) = client.authenticated.filter(|_| client.remote_auth) {
        // SPEC 8.2: authenticated by its home server (`x-rcram=pass`), not a local user.
        deliver(AuthResult::Rcram { user: user.to_string() })
    } else if let Some(user) = client.authenticated {
        // SPEC 3: our user's mail says it is from the user.
        if matches!(client.service, Service::Submission | Service::Messenger) {
            if let Err(reply) = super::mail_from::check_from_header(store, user, &envelope.body).await {
                tracing::info!(%user, "refused: a From address the user does not own");
                return Decision::Refuse(reply);
            }
        }
        deliver(AuthResult::SmtpAuth { user: user.to_string() })
    } else if client.trusted_relay {
        deliver(AuthResult::TrustedRelay)
    } else {
        let mut facts = None;
        let decision = recipient_side(checks, store, hostname, client, envelope, message, &mut facts).await;
        if let (Some(facts), Some(reports), Some(disposition)) = (facts, checks.reports, disposition_of(&decision)) {
            let envelope_to = envelope.recipients.first().and_then(|r| r.resolved.domain.clone());
            reports.count(facts, disposition, envelope_to, unix_now());
        }
        decision
    }
}

/// What a DMARC report says was done with the message (RFC 7489 Appendix C); None when
/// nothing was, yet: a key mail, or a temporary refusal the sender will retry.
fn disposition_of(decision: &Decision) -> Option<Disposition> {
    match decision {
        Decision::Deliver(Delivered { folder: Folder::Junk, .. }) => Some(Disposition::Quarantine),
        Decision::Deliver(_) => Some(Disposition::None),
        Decision::Refuse(reply) if reply.is_temporary() => None,
        Decision::Refuse(_) | Decision::RefuseByDmarc(_) => Some(Disposition::Reject),
        Decision::KeyRecorded => None,
    }
}

/// The MX, no other method passed: key mail, then the AuthKey check and the sending
/// domain's checks, then the policy. What the aggregate report will say of the message is
/// left in `report`.
async fn recipient_side(
    checks: &SenderChecks<'_>,
    store: &dyn Store,
    hostname: &str,
    client: &ClientInfo<'_>,
    envelope: &Envelope<Resolved>,
    message: Option<&[u8]>,
    report: &mut Option<DmarcFacts>,
) -> Decision {
    let authkeys = checks.authkeys;
    let mailboxes: Vec<&str> = deliveries(envelope)
        .filter_map(|d| match d {
            Delivery::Mailbox { recipient, .. } => Some(recipient.as_str()),
            _ => None,
        })
        .collect();
    if let Some(key) = sender::new_key_in(&envelope.body) {
        if let Some(decision) = take_key_mail(authkeys, store, client, &mailboxes, &key).await {
            return decision;
        }
    }
    // SPEC 7.5: only the final recipient's server verifies; the copies for its mailboxes
    // carry its X-Auth-Key-Status (the commit removes every one that came with the message).
    let final_here = !mailboxes.is_empty();
    let from = headers::from_address(&envelope.body);
    let key = headers::first_value(&envelope.body, sender::KEY_HEADER);
    let key_check = async {
        match (&from, authkeys.verify) {
            (Some(from), true) => authkeys.verifier.check(from, key.as_deref()).await,
            _ => AuthKeyResult::None,
        }
    };
    // Both checks wait on other servers; they run at once.
    let (result, domain_checks) = tokio::join!(key_check, check_domain(checks.domains, client, envelope, message));
    let key_status = final_here.then(|| result.status());
    let auth = match &from {
        Some(from) => AuthResult::AuthKey { result, from: from.clone() },
        None => AuthResult::None,
    };
    let DomainChecks { results: mut resinfos, dmarc, report: facts } = domain_checks;
    *report = facts;
    // SPEC 12: each result as Authentication-Results gives it (RFC 8601 2.7: the method
    // and its result keyword, both from fixed sets).
    if let Some(metrics) = checks.metrics {
        for resinfo in &resinfos {
            metrics.sender_auth_results.with_label_values(&[resinfo.method, resinfo.result]).inc();
        }
    }
    let deliver = |auth, folder, resinfos| Decision::Deliver(Delivered { auth, folder, key_status, checks: resinfos });
    if result == AuthKeyResult::Pass {
        return deliver(auth, Folder::Inbox, resinfos);
    }
    // RCPT made every recipient of the transaction share one policy (450 4.5.3 otherwise).
    let policy = envelope.recipients.iter().find_map(|r| r.resolved.policy).unwrap_or_default();
    // SPEC 2, 13: a DMARC pass authenticates the sender's domain where the domain counts
    // it; an X-Auth-Key its server called invalid is a forgery whatever DMARC says.
    if let (DmarcVerdict::Pass { domain }, true) = (&dmarc, policy.dmarc_counts) {
        if result != AuthKeyResult::Fail {
            if let AuthResult::AuthKey { result, from } = &auth {
                resinfos.push(MethodResult::new("x-authkey", result.as_str()).property("header.from", from.clone()));
            }
            return deliver(AuthResult::Dmarc { domain: domain.clone() }, Folder::Inbox, resinfos);
        }
    }
    let forged = matches!(result, AuthKeyResult::Fail | AuthKeyResult::TempError);
    let action = if forged { policy.forged } else { policy.unauthenticated };
    let from_text = from.as_deref().unwrap_or("(no From address)");
    // RFC 7489 6.3 and SPEC 13: the sending domain's own policy for its failures: reject
    // unless the local action is accept, quarantine into Junk.
    match &dmarc {
        DmarcVerdict::Fail { domain, policy: DmarcPolicy::Reject } if action != PolicyAction::Accept => {
            tracing::info!(from = %from_text, %domain, "refused by the sender domain's DMARC policy");
            return Decision::RefuseByDmarc(Reply::not_authorized(format!(
                "Refused: {domain} publishes a DMARC policy of reject, and neither an aligned SPF nor an aligned \
                 DKIM result passed for this message"
            )));
        }
        DmarcVerdict::Fail { policy: DmarcPolicy::Quarantine, .. } if action.delivers() => {
            return deliver(auth, Folder::Junk, resinfos);
        }
        _ => {}
    }
    match action {
        PolicyAction::Accept => return deliver(auth, Folder::Inbox, resinfos),
        PolicyAction::Junk => return deliver(auth, Folder::Junk, resinfos),
        _ => {}
    }
    // SPEC 2: temperror is 451 unless the action delivers; the sender retries later.
    if result == AuthKeyResult::TempError {
        tracing::info!(from = %from_text, "AuthKey check failed for now; 451");
        return Decision::Refuse(Reply::auth_temperror(format!(
            "Cannot check the AuthKey of {from_text} now (its Authentication Server did not answer); try again later"
        )));
    }
    if let (DmarcVerdict::TempError { domain }, true) = (&dmarc, policy.dmarc_counts) {
        tracing::info!(from = %from_text, %domain, "DMARC check failed for now; 451");
        return Decision::Refuse(Reply::auth_temperror(format!(
            "Cannot check the DMARC policy of {domain} now (DNS did not answer); try again later"
        )));
    }
    let reason = if result == AuthKeyResult::Fail {
        format!("the X-Auth-Key of {from_text} is not valid (its Authentication Server said INVALIDKEY)")
    } else {
        format!("the sender {from_text} is not authenticated")
    };
    if action.notifies_recipient() {
        notify_recipients(store, hostname, envelope, &reason).await;
    }
    tracing::info!(from = %from_text, %action, ?result, "refused by the sender policy");
    let domain =
        envelope.recipients.first().and_then(|r| r.resolved.domain.clone()).unwrap_or_else(|| hostname.to_string());
    let text = if action.notifies_sender() {
        format!(
            "Refused: {reason}. {domain} accepts mail only from authenticated senders: send through your own \
             provider's server with SMTP AUTH, sign it with DKIM for a domain that publishes DMARC, or have your \
             domain publish an Authentication Server (AS= TXT record) and send with a valid X-Auth-Key"
        )
    } else {
        format!("Refused: {reason}")
    };
    Decision::Refuse(Reply::not_authorized(text))
}

/// The sending domain's checks of an MX message (SPEC 13), when they are on; a message
/// too large to read back is checked without its signatures.
async fn check_domain(
    verifier: Option<&DomainVerifier>,
    client: &ClientInfo<'_>,
    envelope: &Envelope<Resolved>,
    message: Option<&[u8]>,
) -> DomainChecks {
    let Some(verifier) = verifier else { return DomainChecks::not_run() };
    let mail_from = match &envelope.from {
        vouchmail_proto::smtp::address::ReversePath::Null => String::new(),
        vouchmail_proto::smtp::address::ReversePath::Mailbox(a) => a.to_string(),
    };
    let checked = CheckedEnvelope { peer_ip: client.peer_ip, helo: client.helo, mail_from: &mail_from };
    verifier.check(checked, message.unwrap_or(&envelope.body)).await
}

fn deliveries(envelope: &Envelope<Resolved>) -> impl Iterator<Item = &Delivery> {
    envelope.recipients.iter().flat_map(|r| r.resolved.deliveries.iter())
}

/// SPEC 7.4: a key mail counts only when it comes from the Authentication Server of each
/// recipient's domain. `None`: not taken, handle it as any other message.
async fn take_key_mail(
    authkeys: &AuthKeys,
    store: &dyn Store,
    client: &ClientInfo<'_>,
    mailboxes: &[&str],
    key: &str,
) -> Option<Decision> {
    if mailboxes.is_empty() {
        return None;
    }
    let mut sources = Vec::new();
    for address in mailboxes {
        match sender::check_key_source(&authkeys.dns, address, client.peer_ip).await {
            Ok(host) => sources.push(format!("{host} {}", client.peer_ip)),
            Err(why) => {
                tracing::warn!(%address, peer = %client.peer_ip, %why, "{NEW_KEY_HEADER} not recorded");
                return None;
            }
        }
    }
    for (address, source) in mailboxes.iter().zip(sources) {
        if let Err(e) = sender::record_key(store, address, key, source).await {
            return Some(Decision::Refuse(store_reply(&e)));
        }
        tracing::info!(%address, peer = %client.peer_ip, "new AuthKey received from the Authentication Server");
    }
    Some(if authkeys.keep_key_mail {
        // Phase II: the key mail stays in the mailbox.
        Decision::Deliver(Delivered {
            auth: AuthResult::None,
            folder: Folder::Inbox,
            key_status: None,
            checks: Vec::new(),
        })
    } else {
        Decision::KeyRecorded
    })
}

/// SPEC 2 reject-notify-recipient: a short notice (date, From, Subject, reason; never the
/// body) into each local recipient's INBOX. Failing to store it is logged; the refusal
/// stands either way.
async fn notify_recipients(store: &dyn Store, hostname: &str, envelope: &Envelope<Resolved>, reason: &str) {
    let field = |name: &str| headers::first_value(&envelope.body, name).map(|v| headers::decode_encoded_words(&v));
    let original_date = field("Date").unwrap_or_else(|| "(none)".into());
    let original_from = field("From").unwrap_or_else(|| "(none)".into());
    let subject = field("Subject").unwrap_or_else(|| "(none)".into());
    let now = SystemTime::now();
    let date = rfc5322_date(now);
    let from = format!("Mail Delivery System <MAILER-DAEMON@{hostname}>");
    let notice_subject = format!("Refused message from {}", sanitize(&original_from));
    for delivery in deliveries(envelope) {
        let Delivery::Mailbox { account_id, recipient, .. } = delivery else { continue };
        let queue_id = new_queue_id();
        let body = format!(
            "A message for you was refused by {hostname}: {reason}.\r\n\r\n  Date:    {original_date}\r\n  \
             From:    {original_from}\r\n  Subject: {subject}\r\n\r\nIts content was not kept. The sending server \
             was told that the message was refused.\r\n"
        );
        let to = format!("<{recipient}>");
        let message_id = format!("<{}.refused@{hostname}>", queue_id.to_lowercase());
        let fields = [
            ("From", from.as_str()),
            ("To", to.as_str()),
            ("Date", date.as_str()),
            ("Message-ID", message_id.as_str()),
            ("Subject", notice_subject.as_str()),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/plain; charset=utf-8"),
        ];
        let rest = format!("\r\n{body}");
        let mailbox =
            Delivery::Mailbox { account_id: *account_id, folder: Folder::Inbox, recipient: recipient.clone() };
        let notice = OwnMessage {
            hostname,
            queue_id: queue_id.clone(),
            sender: String::new(),
            fields: &fields,
            rest: rest.as_bytes(),
            now: vouchmail_proto::time::unix_seconds(now),
        }
        .build(vec![mailbox]);
        match store.commit_message(notice).await {
            Ok(_) => tracing::info!(%recipient, notice = %queue_id, "refused-message notice stored"),
            Err(e) => tracing::error!(%recipient, error = %e, "cannot store a refused-message notice"),
        }
    }
}

/// A header value taken from a stranger's message, safe to put in ours.
fn sanitize(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(200).collect()
}
