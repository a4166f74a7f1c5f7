//! Who a published ID belongs to (SPEC 8.4): the local directory always; else the first
//! mailbox it was learnt for from a peer. A later claim by another mailbox does not replace
//! the binding (a domain that publishes someone else's provider number, and re-sends it at
//! every pull, gains nothing); it is a conflict the operator sees and resolves. A DEL from
//! the bound mailbox's home server frees the ID.

use std::collections::BTreeMap;

use vouchmail_store::{LearntEntity, Store};

use crate::support::error::Error;

/// Most entries one peer may have in the Entity Index (SPEC 8.4).
pub const MAX_ENTRIES_PER_PEER: usize = 100_000;

/// Where an ID's binding comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// This server's own published directory entry.
    Local(String),
    /// The first mailbox a peer published it for.
    Learnt(LearntEntity),
}

impl Binding {
    pub fn mailbox(&self) -> &str {
        match self {
            Binding::Local(mailbox) => mailbox,
            Binding::Learnt(entity) => &entity.mailbox,
        }
    }
}

/// A published ID claimed for more than one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub published_id: String,
    /// What CERT by the ID answers with.
    pub bound: Binding,
    /// The other mailboxes peers claimed it for, first learnt first.
    pub claims: Vec<LearntEntity>,
}

/// Every conflict, by ID.
pub async fn conflicts(store: &dyn Store) -> Result<Vec<Conflict>, Error> {
    let mut local: BTreeMap<String, String> = BTreeMap::new();
    for record in store.list_directory().await?.into_iter().filter(|r| r.published) {
        for id in record.ids {
            local.insert(id, record.address.clone());
        }
    }
    let mut learnt: BTreeMap<String, Vec<LearntEntity>> = BTreeMap::new();
    for entity in store.list_learnt_entities().await? {
        learnt.entry(entity.published_id.clone()).or_default().push(entity);
    }
    let mut found = Vec::new();
    for (id, mut entities) in learnt {
        // First learnt first; the same mailbox from several peers is one binding.
        entities.sort_by(|a, b| (a.learnt_at, &a.mailbox).cmp(&(b.learnt_at, &b.mailbox)));
        let bound = match local.get(&id) {
            Some(mailbox) => Binding::Local(mailbox.clone()),
            None => Binding::Learnt(entities[0].clone()),
        };
        let claims: Vec<LearntEntity> =
            entities.into_iter().filter(|e| !e.mailbox.eq_ignore_ascii_case(bound.mailbox())).collect();
        if !claims.is_empty() {
            found.push(Conflict { published_id: id, bound, claims });
        }
    }
    Ok(found)
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
        Binding::Local(_) if keep != bound => {
            return Err(Error::invalid(format!(
                "{id} is this server's own (published by {bound}); the local directory always wins"
            )));
        }
        Binding::Learnt(_) if keep != bound => {
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
