//! The directory's published IDs (SPEC 8.4): the conflicts an operator resolves.

use serde::Serialize;
use vouchmail_store::Store;

use super::{time_text, OpResult};
use crate::rules::entity_index::{self, Binding};

/// One later claim of a published ID, as `directory conflicts --json` prints it and the
/// API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictRow {
    pub id: String,
    /// The mailbox CERT answers with: the local directory's, else the first learnt.
    pub bound_to: String,
    /// `local directory`, or the peer it was learnt from.
    pub bound_by: String,
    pub claimed_for: String,
    pub peer: String,
    pub learnt: String,
}

pub async fn conflicts(store: &dyn Store) -> OpResult<Vec<ConflictRow>> {
    let mut rows = Vec::new();
    for conflict in entity_index::conflicts(store).await? {
        let (bound, by) = match &conflict.bound {
            Binding::Local(mailbox) => (mailbox.clone(), "local directory".to_string()),
            Binding::Learnt(e) => (e.mailbox.clone(), e.peer.clone()),
        };
        for claim in conflict.claims {
            rows.push(ConflictRow {
                id: conflict.published_id.clone(),
                bound_to: bound.clone(),
                bound_by: by.clone(),
                claimed_for: claim.mailbox,
                peer: claim.peer,
                learnt: time_text(claim.learnt_at),
            });
        }
    }
    Ok(rows)
}
