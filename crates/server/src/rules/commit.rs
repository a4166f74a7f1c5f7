//! End of DATA: add our trace fields and commit the message durably (SPEC 5).

use std::net::IpAddr;
use std::time::SystemTime;

use vouchmail_proto::headers;
use vouchmail_proto::smtp::address::{ForwardPath, ReversePath};
use vouchmail_proto::smtp::command::{BodyType, DsnReturn};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::{Envelope, Service};
use vouchmail_proto::smtp::trace::{self, AuthResult, ReceivedInfo};
use vouchmail_store::{Delivery, Folder, NewMessage, RecipientDsn, SpooledBody, Store, StoreError};

use vouchmail_proto::dsn::{Action, RecipientStatus, Return};
use vouchmail_proto::smtp::reply::EnhancedCode;
use vouchmail_store::StoredMessage;

use super::recipient::{store_reply, Resolved};
use crate::auth::authkey::sender::KEY_HEADER;
use crate::auth::authkey::verifier::STATUS_HEADER;
use crate::auth::dkim_sign::DkimSigning;
use crate::rules::dsn::{self, NotifyWanted};
use crate::support::queue_id::new_queue_id;

/// Who the client is, for the trace fields.
#[derive(Debug, Clone)]
pub struct ClientInfo<'a> {
    pub peer_ip: IpAddr,
    pub helo: &'a str,
    pub extended: bool,
    pub tls: bool,
    pub authenticated: Option<&'a str>,
    /// `authenticated` was verified by the address's home server (SPEC 8.2 RCRAM-MD5).
    pub remote_auth: bool,
    pub service: Service,
    pub trusted_relay: bool,
}

/// A message's deliveries, each with its recipient's DSN request.
type Deliveries = Vec<(Delivery, RecipientDsn)>;

/// The sender policy's decision on a message to store (`sender_policy::decide`).
#[derive(Debug)]
pub struct Delivered {
    /// How the sender was authenticated (SPEC 2), recorded in Authentication-Results.
    pub auth: AuthResult,
    /// The folder of the local mailboxes' copies (SPEC 2: `junk`).
    pub folder: Folder,
    /// SPEC 7.5: the `X-Auth-Key-Status` value this server, the final recipient's,
    /// adds to the copies in its mailboxes; None when it did not check a key.
    pub key_status: Option<&'static str>,
    /// The sending domain's results (SPEC 13: iprev, spf, dkim, dmarc), for
    /// Authentication-Results; empty when they were not checked.
    pub checks: Vec<vouchmail_proto::smtp::trace::MethodResult>,
}

/// SPEC 7.5: the copy for local mailboxes carries no `X-Auth-Key` and no
/// `X-Auth-Key-Status` but the one this server writes, whatever method authenticated the
/// sender; a copy that goes on (an alias's remote target, held mail) keeps them as they
/// arrived, for the final recipient's server to verify.
pub fn mailbox_copy(body: &[u8], key_status: Option<&str>) -> Vec<u8> {
    let stripped = headers::remove_fields(body, |f| f.name_is(KEY_HEADER) || f.name_is(STATUS_HEADER));
    match key_status {
        Some(status) => headers::prepend(&[(STATUS_HEADER, status)], &stripped),
        None => stripped,
    }
}

/// Builds the stored form of the message and commits it; returns the queue id once the
/// message and its queue entries are on stable storage.
///
/// When the copy for local mailboxes differs from the one that goes on (SPEC 7.5, see
/// [`mailbox_copy`]), the two are stored as two messages in one commit: both or neither.
///
/// `signing` DKIM-signs (SPEC 13) what our users send and what an alias of ours forwards;
/// mail only passing through is not signed.
pub async fn commit_message(
    store: &dyn Store,
    hostname: &str,
    client: &ClientInfo<'_>,
    envelope: Envelope<Resolved>,
    spooled: Option<SpooledBody>,
    delivered: Delivered,
    signing: Option<&DkimSigning>,
) -> Result<String, Reply> {
    let Delivered { auth: auth_result, folder, key_status, checks } = delivered;
    let now = SystemTime::now();
    // RFC 8601 5: remove any Authentication-Results claiming to be ours from outside.
    let mut body = headers::remove_authentication_results_for(&envelope.body, hostname);
    // Mail from local users' clients: the submission and the Messenger ports (SPEC 8).
    let from_users_client = matches!(client.service, Service::Submission | Service::Messenger);
    let from_our_user = from_users_client && client.authenticated.is_some() && !client.remote_auth;
    if from_users_client {
        // The envelope sender (checked at MAIL: the user's), else the user.
        let sender = match &envelope.from {
            ReversePath::Mailbox(a) => Some(a.to_string()),
            ReversePath::Null => client.authenticated.filter(|_| !client.remote_auth).map(str::to_string),
        };
        body = complete_submission_header(body, hostname, now, sender.as_deref());
    }
    // SPEC 13: a local user's mail is signed for its From domain, once, as it is accepted.
    if let (Some(signing), true) = (signing, from_our_user) {
        if let Some(domain) = headers::from_address(&body).and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_string()))
        {
            body = signed(signing, &domain, body, spooled.as_ref()).await;
        }
    }
    let ar_value = trace::authentication_results_value(hostname, &checks, std::slice::from_ref(&auth_result));
    let single_recipient = match envelope.recipients.as_slice() {
        [only] => Some(match &only.path {
            ForwardPath::Postmaster => "postmaster".to_string(),
            ForwardPath::Mailbox(a) => a.to_string(),
        }),
        _ => None,
    };
    let mut deliveries: Vec<(Delivery, RecipientDsn)> = Vec::new();
    for recipient in &envelope.recipients {
        let dsn = RecipientDsn {
            notify: recipient.params.notify.map(|n| n.to_wire()),
            orcpt: recipient.params.orcpt.as_ref().map(|(kind, addr)| format!("{kind};{addr}")),
        };
        for delivery in &recipient.resolved.deliveries {
            // SPEC 2: the sender policy's folder (junk) for local mailboxes.
            let delivery = match delivery {
                Delivery::Mailbox { account_id, recipient, .. } => {
                    Delivery::Mailbox { account_id: *account_id, folder, recipient: recipient.clone() }
                }
                other => other.clone(),
            };
            // One copy per mailbox even when several recipients (aliases) lead to it.
            if !deliveries.iter().any(|(d, _)| *d == delivery) {
                deliveries.push((delivery, dsn.clone()));
            }
        }
    }
    // SPEC 7.5: the mailboxes' copy and the onward copy, one message when they are equal.
    let (mailboxes, onward): (Vec<_>, Vec<_>) =
        deliveries.into_iter().partition(|(d, _)| matches!(d, Delivery::Mailbox { .. }));
    // The mailboxes' copy is made only when there are mailboxes (mail that only goes on,
    // relayed or forwarded, is not copied for nothing).
    // SPEC 13: what an alias of ours forwards from the MX goes on signed by the alias's
    // domain too, so that DMARC can pass downstream (the sender's own signature stays).
    let forwarded_by = envelope
        .recipients
        .iter()
        .find(|r| r.resolved.deliveries.iter().any(|d| matches!(d, Delivery::Queue { .. })))
        .and_then(|r| r.resolved.domain.clone())
        .filter(|_| client.service == Service::Mx && client.authenticated.is_none() && !client.trusted_relay);
    // Copied only to be signed: local delivery (the common case) copies nothing here.
    let signed_onward = match (signing, forwarded_by, onward.is_empty()) {
        (Some(signing), Some(domain), false) => Some(signed(signing, &domain, body.clone(), spooled.as_ref()).await),
        _ => None,
    };
    let copies: Vec<(Vec<u8>, Deliveries)> = if onward.is_empty() {
        vec![(mailbox_copy(&body, key_status), mailboxes)]
    } else {
        let mailbox_body = (!mailboxes.is_empty()).then(|| mailbox_copy(&body, key_status));
        let onward_body = signed_onward.unwrap_or(body);
        match mailbox_body {
            None => vec![(onward_body, onward)],
            Some(same) if same == onward_body => vec![(onward_body, mailboxes.into_iter().chain(onward).collect())],
            Some(mailbox_body) => vec![(mailbox_body, mailboxes), (onward_body, onward)],
        }
    };
    let sender = match &envelope.from {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    };
    let quota_free = envelope.recipients.iter().all(|r| r.resolved.quota_free);
    let params = &envelope.params;
    let method = auth_method_text(&auth_result);
    let protocol =
        trace::with_protocol(client.extended, client.tls, client.authenticated.is_some(), envelope.params.smtputf8);
    for _attempt in 0..3 {
        let mut messages = Vec::with_capacity(copies.len());
        for (body, deliveries) in &copies {
            let queue_id = new_queue_id();
            let received = trace::received_value(&ReceivedInfo {
                helo: client.helo,
                peer_ip: client.peer_ip,
                by: hostname,
                protocol,
                queue_id: &queue_id,
                single_recipient: single_recipient.as_deref(),
                time: now,
            });
            // RFC 5321 4.4 and RFC 8601 5: our trace fields go on top.
            let data = headers::prepend(&[("Authentication-Results", &ar_value), ("Received", &received)], body);
            messages.push(NewMessage {
                queue_id,
                envelope: vouchmail_store::Envelope {
                    sender: sender.clone(),
                    dsn_ret: params.ret.map(|r| match r {
                        DsnReturn::Full => "FULL".to_string(),
                        DsnReturn::Headers => "HDRS".to_string(),
                    }),
                    dsn_envid: params.envid.clone(),
                    auth_param: params.auth.as_ref().map(|a| a.to_wire()),
                    // A remote RCRAM-MD5 identity is not a local user: no AuthKey stamp later.
                    authenticated_as: client.authenticated.filter(|_| !client.remote_auth).map(str::to_string),
                    auth_results: method.clone(),
                    body_8bit: params.body == BodyType::EightBitMime,
                    smtputf8: params.smtputf8,
                },
                received_at: vouchmail_proto::time::unix_seconds(now),
                data,
                spooled: spooled.clone(),
                deliveries: deliveries.clone(),
            });
        }
        // RCPT checked the declared SIZE; only a message larger than that needs a look,
        // and only when a mailbox it goes to had a quota then.
        let declared = params.size.unwrap_or(0);
        for message in messages.iter().filter(|_| !quota_free) {
            if message.size() > declared {
                if let Some(reply) = over_quota(store, message).await {
                    return Err(reply);
                }
            }
        }
        let message_size = messages.first().map_or(0, NewMessage::size);
        let mut notices = Vec::new();
        for message in &messages {
            let success_wanted = success_statuses(message, now);
            if !success_wanted.is_empty() {
                let original = StoredMessage {
                    id: 0,
                    queue_id: message.queue_id.clone(),
                    envelope: message.envelope.clone(),
                    received_at: message.received_at,
                    data: message.data[..headers::body_start(&message.data)].to_vec(),
                };
                notices.push((original, success_wanted));
            }
        }
        let committed = match messages.len() {
            1 => store.commit_message(messages.remove(0)).await.map(|c| vec![c]),
            _ => store.commit_messages(messages).await,
        };
        match committed {
            Ok(committed) => {
                for (original, success_wanted) in notices {
                    send_success_notice(store, hostname, original, &success_wanted, now).await;
                }
                let queue_ids: Vec<&str> = committed.iter().map(|c| c.queue_id.as_str()).collect();
                tracing::info!(
                    queue_id = %queue_ids.join(" "),
                    from = %sender,
                    recipients = envelope.recipients.len(),
                    size = message_size,
                    sender_auth = %method,
                    "message accepted"
                );
                return Ok(queue_ids.join(" "));
            }
            // A queue id collision: draw another.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(store_reply(&e)),
        }
    }
    // Every id drawn collided: the random source is broken, which a retry may outlive.
    Err(crate::support::error::Error::system("no free queue id").reply())
}

/// RFC 3461 4.1: recipients delivered into a local mailbox here that asked for
/// NOTIFY=SUCCESS get a "delivered" DSN (RFC 3464 2.3.3), as Postfix sends.
fn success_statuses(message: &NewMessage, now: SystemTime) -> Vec<RecipientStatus> {
    message
        .deliveries
        .iter()
        .filter(|(delivery, dsn)| {
            matches!(delivery, Delivery::Mailbox { .. }) && NotifyWanted::from_stored(dsn.notify.as_deref()).success
        })
        .map(|(delivery, dsn)| RecipientStatus {
            final_recipient: match delivery {
                Delivery::Mailbox { recipient, .. }
                | Delivery::Queue { recipient }
                | Delivery::Held { recipient, .. } => recipient.clone(),
            },
            original_recipient: dsn.orcpt.clone(),
            action: Action::Delivered,
            status: EnhancedCode(2, 0, 0),
            remote_mta: None,
            // RFC 3464 2.3.6: no server replied; this server delivered it.
            diagnostic: None,
            detail: None,
            last_attempt: Some(now),
            will_retry_until: None,
        })
        .collect()
}

/// Commits the success notice for `statuses` (headers only, RFC 3461 4.3). The message is
/// already accepted; a notice that cannot be made is logged, never a reason to refuse it.
async fn send_success_notice(
    store: &dyn Store,
    hostname: &str,
    original: StoredMessage,
    statuses: &[RecipientStatus],
    now: SystemTime,
) {
    let now = vouchmail_proto::time::unix_seconds(now);
    match dsn::notice(store, hostname, &original, statuses, Return::Headers, now).await {
        Ok(Some(notice)) => {
            let id = notice.queue_id.clone();
            match store.commit_message(notice).await {
                Ok(_) => tracing::info!(queue_id = %original.queue_id, notice = %id, "success notification"),
                Err(e) => {
                    tracing::error!(error = %e, queue_id = %original.queue_id, "cannot store a success notification")
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot address a success notification"),
    }
}

/// RCPT checked the quota against the declared SIZE only; the message as received may be
/// larger. A local mailbox it no longer fits refuses the whole message for now (452
/// 4.2.2), so the sender keeps it and retries, as for a full mailbox at RCPT.
async fn over_quota(store: &dyn Store, message: &NewMessage) -> Option<Reply> {
    let size = message.size();
    for (delivery, _) in &message.deliveries {
        let Delivery::Mailbox { recipient, .. } = delivery else { continue };
        match store.get_account(recipient).await {
            Ok(Some(account)) if account.over_quota(size) => {
                // The account may be behind an alias or a catch-all: not named.
                tracing::info!(%recipient, size, "over quota at the end of DATA");
                return Some(Reply::mailbox_full("A recipient's mailbox is full, try again later"));
            }
            Ok(_) => {}
            Err(e) => return Some(store_reply(&e)),
        }
    }
    None
}

/// The method part recorded with the message (SPEC 2 table).
fn auth_method_text(result: &AuthResult) -> String {
    match result {
        AuthResult::None => "none".to_string(),
        AuthResult::SmtpAuth { user } => format!("auth=pass smtp.auth={user}"),
        AuthResult::TrustedRelay => "x-trusted-relay=pass".to_string(),
        AuthResult::Rcram { user } => format!("x-rcram=pass smtp.auth={user}"),
        AuthResult::AuthKey { result, from } => format!("x-authkey={} header.from={from}", result.as_str()),
        AuthResult::Dmarc { domain } => format!("dmarc=pass header.from={domain}"),
    }
}

/// Largest message read back from the spool to be signed; a larger one goes unsigned
/// (logged).
const MAX_SIGNED: u64 = 16 * 1024 * 1024;

/// `body` with the DKIM-Signature fields of `domain`'s active keys in front; the signature
/// covers the spooled rest too. Unchanged when the domain has no key.
async fn signed(signing: &DkimSigning, domain: &str, body: Vec<u8>, spooled: Option<&SpooledBody>) -> Vec<u8> {
    let fields = match spooled {
        None => signing.sign(domain, &body).await,
        Some(rest) => match crate::support::files::read_whole(&body, rest, MAX_SIGNED).await {
            Some(whole) => signing.sign(domain, &whole).await,
            None => {
                tracing::warn!(%domain, size = body.len() as u64 + rest.len, "message too large to DKIM-sign; sent unsigned");
                String::new()
            }
        },
    };
    if fields.is_empty() {
        return body;
    }
    let mut out = fields.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// RFC 6409 8.3 and 8.4: a submission server may add a missing Date and Message-ID.
/// A missing From is written as the sender's own address (as Postfix's cleanup does), so
/// that every message we send says who sent it and can be signed for that domain.
fn complete_submission_header(body: Vec<u8>, hostname: &str, now: SystemTime, sender: Option<&str>) -> Vec<u8> {
    let date = vouchmail_proto::time::rfc5322_date(now);
    let message_id = format!("<{}@{hostname}>", new_queue_id().to_lowercase());
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if let (Some(sender), None) = (sender, headers::first_value(&body, "From")) {
        missing.push(("From", sender));
    }
    if headers::first_value(&body, "Date").is_none() {
        missing.push(("Date", &date));
    }
    if headers::first_value(&body, "Message-ID").is_none() {
        missing.push(("Message-ID", &message_id));
    }
    if missing.is_empty() {
        return body;
    }
    headers::prepend(&missing, &body)
}
