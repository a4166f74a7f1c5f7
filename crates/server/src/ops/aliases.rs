//! Aliases (SPEC 3): one address to several local or remote targets.

use serde::{Deserialize, Serialize};
use vouchmail_store::Store;

use super::{parse_address, OpError, OpResult};
use crate::rules::accounts::{self, References};

/// One alias target, as `alias list --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasRow {
    pub alias: String,
    pub target: String,
}

pub async fn list(store: &dyn Store) -> OpResult<Vec<AliasRow>> {
    Ok(store.list_aliases().await?.into_iter().map(|(alias, target)| AliasRow { alias, target }).collect())
}

/// `alias add` and `POST /api/v1/aliases`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAlias {
    pub alias: String,
    pub targets: Vec<String>,
    /// Local targets that do not exist yet (created later).
    #[serde(default)]
    pub allow_missing: bool,
}

/// Makes `alias` deliver to every target (checked: a local domain, no account of that
/// name, no loop, local targets that exist); returns the alias and its new targets.
pub async fn add(store: &dyn Store, new: NewAlias) -> OpResult<(String, Vec<String>)> {
    let alias = parse_address(&new.alias)?.to_string();
    if new.targets.is_empty() {
        return Err(OpError::invalid(format!("{alias}: give at least one target")));
    }
    let targets = new.targets.iter().map(|t| parse_address(t).map(|a| a.to_string())).collect::<OpResult<Vec<_>>>()?;
    accounts::check_new_alias(store, &alias, &targets, new.allow_missing).await?;
    store.add_alias(&alias, &targets).await?;
    Ok((alias, targets))
}

/// Removes an alias, or one target of it: 404 for an address that is no alias or a
/// target it does not have, 409 while something points at it (without `force`).
pub async fn remove(
    store: &dyn Store,
    alias: &str,
    target: Option<&str>,
    force: bool,
) -> OpResult<(String, References)> {
    let alias = parse_address(alias)?.to_string();
    let targets = store.alias_targets(&alias.to_lowercase()).await?;
    if targets.is_empty() {
        return Err(OpError::not_found(format!("{} is not an alias", alias.to_lowercase())));
    }
    if let Some(target) = target {
        if !targets.iter().any(|t| t.eq_ignore_ascii_case(target)) {
            return Err(OpError::not_found(format!("{target} is not a target of {}", alias.to_lowercase())));
        }
    }
    let refs = accounts::remove_alias(store, &alias, target, force)
        .await
        .map_err(|e| OpError::from(e).invalid_as_conflict())?;
    Ok((alias, refs))
}
