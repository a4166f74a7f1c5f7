//! Who a published ID belongs to (SPEC 8.4): the local directory always; else the first
//! mailbox it was learnt for from a peer. A later claim by another mailbox does not replace
//! the binding (a domain that publishes someone else's provider number, and re-sends it at
//! every pull, gains nothing); it is a conflict the operator sees and resolves. A DEL from
//! the bound mailbox's home server frees the ID.

use std::collections::BTreeMap;

use vouchmail_proto::messenger::bindings::{contests, Bound, Contest};
use vouchmail_store::{LearntEntity, Store};

use crate::support::error::Error;

/// Most entries one peer may have in the Entity Index (SPEC 8.4).
pub const MAX_ENTRIES_PER_PEER: usize = 100_000;

/// Where an ID's binding comes from: the local directory or a learnt entry.
pub type Binding = Bound<LearntEntity>;

/// A published ID claimed for more than one mailbox.
pub type Conflict = Contest<LearntEntity>;

/// Every conflict, by ID (the rule: [`vouchmail_proto::messenger::bindings`]).
pub async fn conflicts(store: &dyn Store) -> Result<Vec<Conflict>, Error> {
    let mut local: BTreeMap<String, String> = BTreeMap::new();
    for record in store.list_directory().await?.into_iter().filter(|r| r.published) {
        for id in record.ids {
            local.insert(id, record.address.clone());
        }
    }
    Ok(contests(&local, store.list_learnt_entities().await?))
}

/// The operator's decision: `published_id` names `mailbox`. The other claims are forgotten
/// (a peer that sends one again makes it a new, later claim: a conflict again, never the
/// binding). Returns how many entries were forgotten.
pub async fn resolve(store: &dyn Store, published_id: &str, mailbox: &str) -> Result<usize, Error> {
    let id = published_id.to_ascii_uppercase();
    let conflict = conflicts(store)
        .await?
        .into_iter()
        .find(|c| c.published_id == id)
        .ok_or_else(|| Error::not_found(format!("{id} has no conflict")))?;
    let keep = mailbox.to_lowercase();
    let mut claimants: Vec<String> = conflict.claims.iter().map(|c| c.mailbox.to_lowercase()).collect();
    let bound = conflict.bound.mailbox().to_lowercase();
    match conflict.bound {
        Bound::Local(_) if keep != bound => {
            return Err(Error::invalid(format!(
                "{id} is this server's own (published by {bound}); the local directory always wins"
            )));
        }
        Bound::Learnt(_) if keep != bound => {
            if !claimants.contains(&keep) {
                return Err(Error::invalid(format!("{keep} is neither the binding of {id} nor a claim")));
            }
            claimants.retain(|c| c != &keep);
            claimants.push(bound);
        }
        _ => {}
    }
    claimants.sort();
    claimants.dedup();
    let mut forgotten = 0;
    for claimant in claimants {
        forgotten += store.forget_learnt_binding(&id, &claimant).await?;
    }
    Ok(forgotten)
}
