//! The queue (SPEC 12): list with filters, show, retry, delete, flush one domain.

use std::sync::Arc;

use axum::extract::State;
use axum::Extension;
use serde::Deserialize;

use super::super::state::{AdminState, Operator};
use super::extract::{ok, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::ops::queue::{self, QueueFilter, QueueRow};

/// `?state=deferred&domain=example.org`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

pub async fn list(State(state): State<Arc<AdminState>>, ApiQuery(query): ApiQuery<ListQuery>) -> ApiResult {
    let filter = QueueFilter::parse(query.state.as_deref(), query.domain.as_deref())?;
    let rows: Vec<QueueRow> = queue::list(state.store.as_ref(), &filter).await?.iter().map(QueueRow::from).collect();
    ok(&rows)
}

pub async fn show(State(state): State<Arc<AdminState>>, ApiPath(id): ApiPath<String>) -> ApiResult {
    let (message, _) = queue::show(state.store.as_ref(), &id).await?;
    ok(&message)
}

pub async fn retry(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let due = queue::retry(state.store.as_ref(), &id).await?;
    tracing::info!(token = %token, queue_id = %id, entries = due, "admin API: queued message due now");
    ok(&serde_json::json!({ "queue_id": id, "due_now": due }))
}

pub async fn delete(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let deleted = queue::delete(state.store.as_ref(), &id).await?;
    tracing::info!(token = %token, queue_id = %id, entries = deleted, "admin API: queued message deleted");
    ok(&serde_json::json!({ "queue_id": id, "deleted": deleted }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    domain: String,
}

pub async fn flush(
    State(state): State<Arc<AdminState>>,
    Extension(Operator(token)): Extension<Operator>,
    ApiJson(request): ApiJson<FlushRequest>,
) -> ApiResult {
    let flushed = queue::flush_domain(state.store.as_ref(), &request.domain).await?;
    tracing::info!(
        token = %token,
        domain = %flushed.domain,
        messages = flushed.messages,
        entries = flushed.entries,
        "admin API: domain flushed"
    );
    ok(&flushed)
}
