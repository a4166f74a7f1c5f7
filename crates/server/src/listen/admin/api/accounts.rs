//! Domains, users and aliases (SPEC 2, 3).

use std::sync::Arc;

use axum::extract::State;
use axum::Extension;
use serde::Deserialize;

use super::super::state::{AdminState, Operator};
use super::extract::{created, ok, ApiJson, ApiPath, ApiQuery, ApiResult, OptionalJson};
use crate::ops::domains::{self, DomainInfo, NewDomain, PolicyChange, RecordInfo};
use crate::ops::{aliases, users};

pub async fn list_domains(State(state): State<Arc<AdminState>>) -> ApiResult {
    let list: Vec<DomainInfo> = domains::list(state.store.as_ref()).await?.iter().map(DomainInfo::from).collect();
    ok(&list)
}

pub async fn get_domain(State(state): State<Arc<AdminState>>, ApiPath(name): ApiPath<String>) -> ApiResult {
    ok(&DomainInfo::from(&domains::get(state.store.as_ref(), &name).await?))
}

pub async fn add_domain(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiJson(new): ApiJson<NewDomain>,
) -> ApiResult {
    let domain = domains::add(state.store.as_ref(), new).await?;
    tracing::info!(token = %token, domain = %domain.name, policy = %domain.policy, "admin API: domain added");
    created(&DomainInfo::from(&domain))
}

pub async fn set_policy(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(name): ApiPath<String>,
    ApiJson(change): ApiJson<PolicyChange>,
) -> ApiResult {
    let domain = domains::set_policy(state.store.as_ref(), &name, change).await?;
    tracing::info!(
        token = %token,
        domain = %domain.name,
        policy = %domain.policy,
        dmarc_counts = domain.policy.dmarc_counts,
        "admin API: domain policy changed"
    );
    ok(&DomainInfo::from(&domain))
}

pub async fn domain_dns(State(state): State<Arc<AdminState>>, ApiPath(name): ApiPath<String>) -> ApiResult {
    let records = domains::records_to_publish(state.store.as_ref(), &state.ops, &name).await?;
    ok(&records.iter().map(RecordInfo::from).collect::<Vec<_>>())
}

pub async fn remove_domain(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let name = domains::remove(state.store.as_ref(), &name).await?;
    tracing::info!(token = %token, domain = %name, "admin API: domain removed");
    ok(&serde_json::json!({ "removed": name }))
}

pub async fn list_users(State(state): State<Arc<AdminState>>) -> ApiResult {
    ok(&users::list(state.store.as_ref()).await?)
}

pub async fn get_user(State(state): State<Arc<AdminState>>, ApiPath(address): ApiPath<String>) -> ApiResult {
    ok(&users::get(state.store.as_ref(), &address).await?)
}

pub async fn add_user(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiJson(new): ApiJson<users::NewUser>,
) -> ApiResult {
    let added = users::add(state.store.as_ref(), &state.ops.secrets_policy, new).await?;
    // Never the password: only that one was made.
    let generated = added.password.is_some();
    tracing::info!(token = %token, address = %added.address, generated, "admin API: user added");
    created(&added)
}

/// `?force=true`: also remove what points at the address (alias targets, held domains,
/// catch-alls); else 409 naming them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    #[serde(default)]
    force: bool,
    /// Aliases: only this target.
    #[serde(default)]
    target: Option<String>,
}

pub async fn remove_user(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(address): ApiPath<String>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> ApiResult {
    if query.target.is_some() {
        return Err(crate::ops::OpError::invalid("target is for aliases").into());
    }
    let (address, refs) = users::remove(state.store.as_ref(), &address, query.force).await?;
    tracing::info!(token = %token, address = %address, also = %refs.describe(), "admin API: user removed");
    ok(&serde_json::json!({ "removed": address, "also_removed": refs.describe() }))
}

/// The new password; left out, one is made and returned once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[serde(default)]
    password: Option<String>,
}

pub async fn set_password(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(address): ApiPath<String>,
    OptionalJson(change): OptionalJson<PasswordChange>,
) -> ApiResult {
    let changed =
        users::set_password(state.store.as_ref(), &state.ops.secrets_policy, &address, change.password).await?;
    tracing::info!(token = %token, address = %changed.address, "admin API: password changed");
    ok(&changed)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaChange {
    /// 0: no quota.
    quota_bytes: u64,
}

pub async fn set_quota(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(address): ApiPath<String>,
    ApiJson(change): ApiJson<QuotaChange>,
) -> ApiResult {
    let address = users::set_quota(state.store.as_ref(), &address, change.quota_bytes).await?;
    tracing::info!(token = %token, address = %address, quota_bytes = change.quota_bytes, "admin API: quota set");
    ok(&users::get(state.store.as_ref(), &address).await?)
}

pub async fn list_aliases(State(state): State<Arc<AdminState>>) -> ApiResult {
    ok(&aliases::list(state.store.as_ref()).await?)
}

pub async fn add_alias(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiJson(new): ApiJson<aliases::NewAlias>,
) -> ApiResult {
    let (alias, targets) = aliases::add(state.store.as_ref(), new).await?;
    tracing::info!(token = %token, alias = %alias, targets = %targets.join(","), "admin API: alias added");
    created(&serde_json::json!({ "alias": alias, "targets": targets }))
}

pub async fn remove_alias(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(alias): ApiPath<String>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> ApiResult {
    let target = query.target.as_deref();
    let (alias, refs) = aliases::remove(state.store.as_ref(), &alias, target, query.force).await?;
    tracing::info!(token = %token, alias = %alias, target = ?target, also = %refs.describe(), "admin API: alias removed");
    ok(&serde_json::json!({ "removed": alias, "target": target, "also_removed": refs.describe() }))
}
