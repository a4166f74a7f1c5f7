//! MAIL FROM on submission (SPEC 3): a user sends only as an address it owns.

use vouchmail_proto::smtp::address::ReversePath;
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};
use vouchmail_store::Store;

use super::recipient::store_reply;

/// Submission: MAIL FROM must be an address the user owns, its own or an alias that leads
/// to it (553 5.7.1 otherwise). The null sender is allowed (auto-replies, receipts).
pub async fn check_sender(store: &dyn Store, user: &str, from: &ReversePath) -> Result<(), Reply> {
    let ReversePath::Mailbox(address) = from else { return Ok(()) };
    let address = address.to_string().to_lowercase();
    if address.eq_ignore_ascii_case(user) {
        return Ok(());
    }
    let targets = store.alias_targets(&address).await.map_err(|e| store_reply(&e))?;
    if targets.iter().any(|t| t.eq_ignore_ascii_case(user)) {
        return Ok(());
    }
    Err(Reply::new(553, EnhancedCode(5, 7, 1), format!("Sender address <{address}> is not owned by {user}")))
}
