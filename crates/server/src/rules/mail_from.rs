//! A user sends only as an address it owns (SPEC 3): MAIL FROM on submission, and every
//! From header address at the end of DATA. It owns its own address, the aliases whose
//! targets include it, and the addresses of its `may_send_as` list (`user send-as`).

use vouchmail_proto::smtp::address::ReversePath;
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::Store;

use super::recipient::store_reply;

/// Whether `user` may send as `address` (SPEC 3).
async fn owns(store: &dyn Store, user: &str, address: &str) -> Result<bool, Reply> {
    let address = address.to_lowercase();
    if address.eq_ignore_ascii_case(user) {
        return Ok(true);
    }
    let targets = store.alias_targets(&address).await.map_err(|e| store_reply(&e))?;
    if targets.iter().any(|t| t.eq_ignore_ascii_case(user)) {
        return Ok(true);
    }
    let send_as = store.send_as(user).await.map_err(|e| store_reply(&e))?;
    Ok(send_as.iter().any(|a| a.eq_ignore_ascii_case(&address)))
}

/// Submission: MAIL FROM must be an address the user owns (553 5.7.1 otherwise). The null
/// sender is allowed (auto-replies, receipts).
pub async fn check_sender(store: &dyn Store, user: &str, from: &ReversePath) -> Result<(), Reply> {
    let ReversePath::Mailbox(address) = from else { return Ok(()) };
    let address = address.to_string().to_lowercase();
    if owns(store, user, &address).await? {
        return Ok(());
    }
    Err(Reply::new(553, EnhancedCode(5, 7, 1), format!("Sender address <{address}> is not owned by {user}")))
}

/// SPEC 3: the From header of a submitted message names one address, and the user owns it
/// (550 5.7.1 at the end of DATA otherwise, naming it), so that what recipients see is
/// what we sign for (SPEC 13). A message without From passes: the commit writes the
/// sender's own address (`commit::complete_submission_header`).
pub async fn check_from_header(store: &dyn Store, user: &str, message: &[u8]) -> Result<(), Reply> {
    if vouchmail_proto::headers::first_value(message, "From").is_none() {
        return Ok(());
    }
    let Some(from) = vouchmail_proto::headers::from_address(message) else {
        return Err(Reply::not_authorized(
            "The From header must name exactly one address, one of yours (RFC 5322 3.6.2)".to_string(),
        ));
    };
    if owns(store, user, &from).await? {
        return Ok(());
    }
    Err(Reply::not_authorized(format!(
        "From address <{from}> is not owned by {user} (yours, an alias of yours, or 'vouchmail user send-as')"
    )))
}
