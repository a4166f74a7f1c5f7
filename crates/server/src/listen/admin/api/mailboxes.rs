//! Mailbox listings and tracking records (SPEC 5, 8.3, 9): read only.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use super::super::state::AdminState;
use super::extract::{ok, ApiPath, ApiQuery, ApiResult};
use crate::ops::{mailboxes, tracking};

/// `?folder=INBOX|Junk|Tracking`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderQuery {
    #[serde(default)]
    folder: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AdminState>>,
    ApiPath(address): ApiPath<String>,
    ApiQuery(query): ApiQuery<FolderQuery>,
) -> ApiResult {
    let folder = query.folder.as_deref().map(mailboxes::parse_folder).transpose()?;
    ok(&mailboxes::list(state.store.as_ref(), &address, folder).await?)
}

pub async fn folders(State(state): State<Arc<AdminState>>, ApiPath(address): ApiPath<String>) -> ApiResult {
    ok(&mailboxes::folders(state.store.as_ref(), &address).await?)
}

/// `?since=2026-12-01T10:00:00Z` (RFC 3339).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceQuery {
    #[serde(default)]
    since: Option<String>,
}

pub async fn tracking(
    State(state): State<Arc<AdminState>>,
    ApiPath(address): ApiPath<String>,
    ApiQuery(query): ApiQuery<SinceQuery>,
) -> ApiResult {
    records(&state, Some(&address), query).await
}

pub async fn tracking_all(State(state): State<Arc<AdminState>>, ApiQuery(query): ApiQuery<SinceQuery>) -> ApiResult {
    records(&state, None, query).await
}

async fn records(state: &AdminState, address: Option<&str>, query: SinceQuery) -> ApiResult {
    let since = query.since.as_deref().map(tracking::parse_since).transpose()?;
    let records = tracking::list(state.store.as_ref(), address, since).await?;
    let rows: Vec<tracking::TrackingRow> =
        records.iter().map(|(owner, stored)| tracking::TrackingRow::new(owner, stored)).collect();
    ok(&rows)
}
