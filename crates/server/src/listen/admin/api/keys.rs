//! AuthKey settings (SPEC 7.1), DKIM keys (SPEC 13) and the directory's conflicts (SPEC
//! 8.4).

use std::sync::Arc;

use axum::extract::State;
use axum::Extension;

use super::super::state::{AdminState, Operator};
use super::extract::{created, ok, ApiJson, ApiPath, ApiResult, OptionalJson};
use crate::ops::{authkeys, directory, dkim};

pub async fn show_authkey(State(state): State<Arc<AdminState>>, ApiPath(target): ApiPath<String>) -> ApiResult {
    ok(&authkeys::show_target(state.store.as_ref(), &state.ops, &target).await?)
}

pub async fn set_authkey(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(target): ApiPath<String>,
    ApiJson(change): ApiJson<authkeys::SettingsChange>,
) -> ApiResult {
    let (target, settings) = authkeys::set(state.store.as_ref(), &target, &change).await?;
    tracing::info!(
        token = %token,
        target = %target,
        agi_secs = settings.agi_secs,
        avt_secs = settings.avt_secs,
        "admin API: AuthKey settings set"
    );
    ok(&authkeys::show_target(state.store.as_ref(), &state.ops, &target).await?)
}

/// The keys, public part only: the private key never leaves the store.
pub async fn list_dkim(State(state): State<Arc<AdminState>>) -> ApiResult {
    ok(&dkim::list(state.store.as_ref()).await?)
}

pub async fn new_dkim(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(domain): ApiPath<String>,
    OptionalJson(new): OptionalJson<dkim::NewKey>,
) -> ApiResult {
    let key = dkim::new_key(state.store.as_ref(), &domain, &new).await?;
    tracing::info!(token = %token, domain = %key.domain, selector = %key.selector, algorithm = %key.algorithm, "admin API: DKIM key made");
    created(&dkim::NewKeyInfo::new(&key))
}

pub async fn rotate_dkim(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult {
    let keys = dkim::rotate(state.store.as_ref(), &domain).await?;
    let selectors: Vec<&str> = keys.iter().map(|k| k.selector.as_str()).collect();
    tracing::info!(token = %token, domain = %domain, selectors = %selectors.join(","), "admin API: DKIM keys rotated");
    ok(&keys.iter().map(dkim::NewKeyInfo::new).collect::<Vec<_>>())
}

pub async fn conflicts(State(state): State<Arc<AdminState>>) -> ApiResult {
    ok(&directory::conflicts(state.store.as_ref()).await?)
}
