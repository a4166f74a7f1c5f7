//! The queue (SPEC 12): list with filters, show, retry, delete, and flush one domain.

use serde::Serialize;
use vouchmail_proto::headers;
use vouchmail_store::{QueueEntry, QueueState, Store};

use super::{time_text, unix_now, OpError, OpResult};

/// One pending recipient, as `queue list --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueRow {
    pub queue_id: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt: String,
    pub size: u64,
    /// Empty for the null sender of a DSN.
    pub sender: String,
    pub recipient: String,
    pub last_reply: Option<String>,
}

impl From<&QueueEntry> for QueueRow {
    fn from(e: &QueueEntry) -> QueueRow {
        QueueRow {
            queue_id: e.queue_id.clone(),
            state: e.state.to_string(),
            attempts: e.attempts,
            next_attempt: time_text(e.next_attempt),
            size: e.size,
            sender: e.sender.clone(),
            recipient: e.recipient.clone(),
            last_reply: e.last_reply.clone(),
        }
    }
}

/// Which pending entries to list: by state, by recipient domain.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    pub state: Option<QueueState>,
    /// Stored form (A-labels, lower case).
    pub domain: Option<String>,
}

impl QueueFilter {
    /// From the words an operator writes (`deferred`, `bücher.example`).
    pub fn parse(state: Option<&str>, domain: Option<&str>) -> OpResult<QueueFilter> {
        let state = match state {
            Some(text) => Some(QueueState::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
                OpError::invalid(format!("unknown queue state '{text}' (queued, inflight or deferred)"))
            })?),
            None => None,
        };
        let domain = domain.map(recipient_domain).transpose()?;
        Ok(QueueFilter { state, domain })
    }

    fn matches(&self, entry: &QueueEntry) -> bool {
        self.state.is_none_or(|s| entry.state == s)
            && self.domain.as_deref().is_none_or(|d| domain_of(&entry.recipient).eq_ignore_ascii_case(d))
    }
}

/// A recipient domain as the queue holds it: any domain (mail goes everywhere), in A-labels.
fn recipient_domain(text: &str) -> OpResult<String> {
    let text = text.trim().trim_end_matches('.');
    Ok(crate::rules::accounts::ascii_domain(text).unwrap_or_else(|| text.to_ascii_lowercase()))
}

fn domain_of(recipient: &str) -> &str {
    recipient.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Pending entries (not delivered or bounced), soonest first.
pub async fn list(store: &dyn Store, filter: &QueueFilter) -> OpResult<Vec<QueueEntry>> {
    Ok(store.list_queue().await?.into_iter().filter(|e| filter.matches(e)).collect())
}

/// A message's entries (any state) and its header, as `queue show` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedMessage {
    pub queue_id: String,
    pub entries: Vec<QueueRow>,
    /// The message's header section (its body stays out of the admin view).
    pub header: String,
}

pub async fn show(store: &dyn Store, queue_id: &str) -> OpResult<(QueuedMessage, Vec<u8>)> {
    let Some((entries, data)) = store.get_queued_message(queue_id).await? else {
        return Err(OpError::not_found(format!("queue id {queue_id} not found")));
    };
    let end = headers::header_end(&data).min(data.len());
    let header = data[..end].to_vec();
    let message = QueuedMessage {
        queue_id: queue_id.to_string(),
        entries: entries.iter().map(QueueRow::from).collect(),
        header: String::from_utf8_lossy(&header).into_owned(),
    };
    Ok((message, header))
}

/// Makes the message's waiting entries due now (a running server sends them); how many.
pub async fn retry(store: &dyn Store, queue_id: &str) -> OpResult<usize> {
    Ok(store.retry_queued(Some(queue_id), unix_now()).await?)
}

/// Every waiting entry due now.
pub async fn retry_all(store: &dyn Store) -> OpResult<usize> {
    Ok(store.retry_queued(None, unix_now()).await?)
}

/// Deletes the message's pending entries; how many.
pub async fn delete(store: &dyn Store, queue_id: &str) -> OpResult<usize> {
    Ok(store.delete_queued_message(queue_id).await?)
}

/// The queue ids with pending entries (those `filter` keeps), each once, in queue order.
pub async fn pending_queue_ids(store: &dyn Store, filter: &QueueFilter) -> OpResult<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for entry in list(store, filter).await? {
        if !ids.contains(&entry.queue_id) {
            ids.push(entry.queue_id);
        }
    }
    Ok(ids)
}

/// What flushing one domain did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flushed {
    pub domain: String,
    /// Messages with a waiting recipient in the domain.
    pub messages: usize,
    /// Entries made due now.
    pub entries: usize,
}

/// Flush one domain: every message with a queued or deferred recipient in `domain` is due
/// now, and the running server's delivery loop sends it at once (as `queue retry`). The
/// store retries by message, so the message's other recipients are tried early too, which
/// costs at most an early attempt.
pub async fn flush_domain(store: &dyn Store, domain: &str) -> OpResult<Flushed> {
    if domain.trim().is_empty() {
        return Err(OpError::invalid("give the domain to flush"));
    }
    let filter = QueueFilter { state: None, domain: Some(recipient_domain(domain)?) };
    let waiting: Vec<QueueEntry> = list(store, &filter)
        .await?
        .into_iter()
        .filter(|e| matches!(e.state, QueueState::Queued | QueueState::Deferred))
        .collect();
    let mut ids: Vec<&str> = Vec::new();
    for entry in &waiting {
        if !ids.contains(&entry.queue_id.as_str()) {
            ids.push(&entry.queue_id);
        }
    }
    let now = unix_now();
    let mut entries = 0;
    for id in &ids {
        match store.retry_queued(Some(id), now).await {
            Ok(n) => entries += n,
            // Delivered or deleted meanwhile: nothing left to flush of it.
            Err(vouchmail_store::StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Flushed { domain: filter.domain.unwrap_or_default(), messages: ids.len(), entries })
}
