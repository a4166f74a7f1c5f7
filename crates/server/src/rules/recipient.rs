//! RCPT: is this recipient ours, may this sender reach it, and where does it go?
//!
//! Relay decisions use only the recipient's domain: local parts with `%`, `!` or a quoted
//! `@` are looked up literally and never routed on (SPEC 3, no open relay).

use std::collections::HashSet;

use vouchmail_proto::smtp::address::{Address, ForwardPath};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_store::{Delivery, Domain, Folder, RecipientRecord, SenderPolicy, Store, StoreError};

/// Alias chains deeper than this are treated as a configuration loop.
const MAX_ALIAS_DEPTH: usize = 8;

/// What the session knows about the sender when a RCPT arrives.
#[derive(Debug, Clone, Copy)]
pub struct SenderContext<'a> {
    /// The local user the client authenticated as.
    pub authenticated: Option<&'a str>,
    /// `authenticated` is a remote RCRAM-MD5 identity (SPEC 8.2): local mailboxes only.
    pub remote_auth: bool,
    /// The SIZE the client declared, for the quota check.
    pub declared_size: u64,
    /// The client is a trusted relay (SPEC 2: `x-trusted-relay=pass`).
    pub trusted_relay: bool,
    /// A method that is known only after the body (an AuthKey) could still pass.
    pub later_methods: bool,
    /// DMARC is checked after the body (SPEC 13): where a domain counts a pass, it too
    /// could still authenticate the sender.
    pub dmarc_checked: bool,
    /// The sender policy of the transaction's recipients so far (SPEC 2: one per transaction).
    pub transaction_policy: Option<SenderPolicy>,
}

/// What RCPT found for one recipient: where it goes, and its local domain's sender policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub deliveries: Vec<Delivery>,
    pub policy: Option<SenderPolicy>,
    /// The local domain of the recipient as given (before aliases).
    pub domain: Option<String>,
    /// Every local mailbox it reaches had no quota when RCPT looked (SPEC 5): the end of
    /// DATA need not look again, whatever the message's size.
    pub quota_free: bool,
}

/// Maps a store failure to the SMTP reply: 451 when the store says it is temporary, else
/// 5xx (`support::error::Error::reply`, the one place errors become replies).
pub fn store_reply(error: &StoreError) -> Reply {
    tracing::error!(%error, "store error during SMTP transaction");
    crate::support::error::Error::from(error.clone()).reply()
}

/// Resolves one RCPT to its deliveries, or the reply that refuses it.
pub async fn resolve_recipient(
    store: &dyn Store,
    postmaster: &Address,
    path: &ForwardPath,
    sender: SenderContext<'_>,
) -> Result<Resolved, Reply> {
    let address = match path {
        // RFC 5321 4.5.1: <postmaster> without a domain must be accepted.
        ForwardPath::Postmaster => postmaster.clone(),
        ForwardPath::Mailbox(address) => address.clone(),
    };
    let address = crate::rules::accounts::ascii_address(&address.to_string().to_lowercase());
    // One store trip answers the common case (a local account) completely.
    let record = store.lookup_recipient(&address).await.map_err(|e| store_reply(&e))?;
    let Some(domain) = &record.domain else {
        // SPEC 8.2: a remotely authenticated client sends to local mailboxes only.
        if sender.remote_auth {
            return Err(Reply::rcram_relay_denied());
        }
        // SPEC 3: an authenticated user may send anywhere; nobody else may relay.
        if sender.authenticated.is_some() {
            return Ok(Resolved {
                deliveries: vec![Delivery::Queue { recipient: address }],
                policy: None,
                domain: None,
                quota_free: true,
            });
        }
        return Err(Reply::not_authorized("Relaying denied"));
    };
    check_policy(domain, sender)?;
    let (policy, domain_name) = (domain.policy, domain.name.clone());
    let mut expansion = Expansion { sender, seen: HashSet::new(), out: Vec::new(), quota_free: true };
    place(store, &address, &record, 0, &mut expansion).await?;
    if expansion.out.is_empty() {
        return Err(Reply::unknown_user("No such user here"));
    }
    Ok(Resolved {
        deliveries: expansion.out,
        policy: Some(policy),
        domain: Some(domain_name),
        quota_free: expansion.quota_free,
    })
}

/// SPEC 2: the recipient domain's sender policy, as far as RCPT can tell. An
/// unauthenticated sender is refused here only when no method could still pass after the
/// body and the action is a plain refusal (a notice to the recipient needs the message's
/// header). Recipients whose policy differs from the transaction's get 450 4.5.3, so the
/// client sends them in a transaction of their own.
fn check_policy(domain: &Domain, sender: SenderContext<'_>) -> Result<(), Reply> {
    if sender.authenticated.is_some() || sender.trusted_relay {
        return Ok(());
    }
    if sender.transaction_policy.is_some_and(|p| p != domain.policy) {
        return Err(Reply::policy_differs(format!(
            "{} has another sender policy than this transaction's other recipients; send to it separately",
            domain.name
        )));
    }
    let action = domain.policy.unauthenticated;
    let later = sender.later_methods || (sender.dmarc_checked && domain.policy.dmarc_counts);
    if !later && !action.delivers() && !action.notifies_recipient() {
        let text = if action.notifies_sender() {
            format!(
                "Sender not authenticated; {} accepts mail only from authenticated senders: send through your \
                 own provider's server with SMTP AUTH",
                domain.name
            )
        } else {
            format!("Sender not authenticated; {} accepts mail only from authenticated senders", domain.name)
        };
        return Err(Reply::not_authorized(text));
    }
    Ok(())
}

/// What one RCPT's expansion carries along: who sends, the addresses seen (alias loops),
/// the deliveries found.
struct Expansion<'a> {
    sender: SenderContext<'a>,
    seen: HashSet<String>,
    out: Vec<Delivery>,
    quota_free: bool,
}

/// Follows accounts, aliases and the catch-all; local targets become mailbox deliveries and
/// remote alias targets queue entries.
async fn expand(store: &dyn Store, address: &str, depth: usize, expansion: &mut Expansion<'_>) -> Result<(), Reply> {
    let record = store.lookup_recipient(address).await.map_err(|e| store_reply(&e))?;
    place(store, address, &record, depth, expansion).await
}

/// Where one looked-up address goes.
async fn place(
    store: &dyn Store,
    address: &str,
    record: &RecipientRecord,
    depth: usize,
    expansion: &mut Expansion<'_>,
) -> Result<(), Reply> {
    if !expansion.seen.insert(address.to_string()) {
        return Ok(());
    }
    if depth > MAX_ALIAS_DEPTH {
        tracing::warn!(address, "alias chain too deep");
        return Err(Reply::local_error("Alias expansion too deep"));
    }
    let Some(domain) = &record.domain else {
        expansion.out.push(Delivery::Queue { recipient: address.to_string() });
        return Ok(());
    };
    // RFC 2645: a held domain's mail waits for its customer; any local part is accepted,
    // the customer's server decides.
    if !domain.held_for.is_empty() {
        expansion.out.push(Delivery::Held { recipient: address.to_string(), domain: domain.name.clone() });
        return Ok(());
    }
    if let Some(account) = &record.account {
        if account.over_quota(expansion.sender.declared_size) {
            // Issue 9: never the name behind an alias or catch-all; the client knows
            // which recipient this reply is for.
            return Err(Reply::mailbox_full("Mailbox full, try again later"));
        }
        expansion.quota_free &= account.quota_bytes == 0;
        expansion.out.push(Delivery::Mailbox {
            account_id: account.id,
            folder: Folder::Inbox,
            recipient: account.address.clone(),
        });
        return Ok(());
    }
    if !record.alias_targets.is_empty() {
        for target in &record.alias_targets {
            Box::pin(expand(store, target, depth + 1, expansion)).await?;
        }
        return Ok(());
    }
    // A local address that is neither account nor alias: the catch-all, if the domain has one.
    if let Some(catch_all) = &domain.catch_all {
        if depth == 0 {
            return Box::pin(expand(store, catch_all, depth + 1, expansion)).await;
        }
    }
    if depth == 0 {
        return Ok(());
    }
    // An alias pointing at a local address that does not exist: refuse rather than lose
    // it, without naming the internal target to the sender (issue 9 item 8).
    tracing::warn!(address, "alias target does not exist");
    Err(Reply::unknown_user("No such user here"))
}
