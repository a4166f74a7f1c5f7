//! Mailboxes (SPEC 5, 9): the listing of an account's messages and Tracking records, and
//! its folders.

use serde::Serialize;
use vouchmail_proto::headers;
use vouchmail_store::{Folder, FolderInfo, Store};

use super::{parse_address, time_text, OpError, OpResult};
use crate::rules::{folders, tracking_folder};

/// One line of `mailbox list --json`: a message, or a record of the Tracking folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MailboxItem {
    Message(MessageRow),
    Tracking(TrackingItem),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRow {
    pub id: i64,
    pub uid: u32,
    pub received: String,
    pub folder: String,
    pub from: String,
    pub subject: String,
    pub size: u64,
}

/// SPEC 8.3: the Tracking folder holds the user's tracking records (rows, not messages).
/// No "id": a record is no message for `mailbox show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackingItem {
    pub tracking_id: i64,
    pub received: String,
    pub folder: String,
    pub event: String,
    pub recipient: String,
    pub message_id: String,
    pub reporting_server: String,
    pub size: usize,
}

/// The folder a listing asks for: INBOX, Junk or Tracking (400 for any other word).
pub fn parse_folder(text: &str) -> OpResult<Folder> {
    Ok(text.parse::<Folder>()?)
}

/// The messages (of `folder`, or every folder), then the Tracking records when the
/// listing covers that folder.
pub async fn list(store: &dyn Store, address: &str, folder: Option<Folder>) -> OpResult<Vec<MailboxItem>> {
    let address = parse_address(address)?.to_string();
    let mut items = Vec::new();
    for entry in store.list_mailbox(&address, folder).await? {
        let message = store.get_mailbox_message(&address, entry.id).await?;
        let data = message.map(|(_, data)| data).unwrap_or_default();
        items.push(MailboxItem::Message(MessageRow {
            id: entry.id,
            uid: entry.uid,
            received: time_text(entry.received_at),
            folder: entry.folder.to_string(),
            from: display_header(&data, "From"),
            subject: display_header(&data, "Subject"),
            size: entry.size,
        }));
    }
    if folder.is_none() || folder == Some(Folder::Tracking) {
        for stored in store.tracking_records(&address, None, usize::MAX).await? {
            let r = stored.record;
            let size = r.to_line().map(|line| line.len()).unwrap_or_default();
            items.push(MailboxItem::Tracking(TrackingItem {
                tracking_id: stored.id,
                received: time_text(r.timestamp),
                folder: Folder::Tracking.to_string(),
                event: r.event.to_string(),
                recipient: r.recipient,
                message_id: r.message_id,
                reporting_server: r.reporting_server,
                size,
            }));
        }
    }
    Ok(items)
}

/// One message as stored.
pub async fn message(store: &dyn Store, address: &str, id: i64) -> OpResult<Vec<u8>> {
    let address = parse_address(address)?.to_string();
    match store.get_mailbox_message(&address, id).await? {
        Some((_, data)) => Ok(data),
        None => Err(OpError::not_found(format!("no message {id} in the mailbox of {address}"))),
    }
}

/// A folder as `mailbox folders --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderRow {
    pub folder: String,
    pub special_use: Option<String>,
    pub messages: u32,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub subscribed: bool,
}

impl From<FolderInfo> for FolderRow {
    fn from(f: FolderInfo) -> FolderRow {
        FolderRow {
            folder: f.name,
            special_use: f.special_use,
            messages: f.messages,
            uid_validity: f.uid_validity,
            uid_next: f.uid_next,
            highest_modseq: f.highest_modseq,
            subscribed: f.subscribed,
        }
    }
}

pub async fn folders(store: &dyn Store, address: &str) -> OpResult<Vec<FolderRow>> {
    let address = parse_address(address)?.to_string();
    let mut rows = Vec::new();
    for mut folder in store.list_folders(&address).await? {
        // SPEC 9: the Tracking folder's messages are the account's records.
        if folders::is_tracking(&folder.name) {
            let records = store.tracking_records(&address, None, tracking_folder::SHOWN_RECORDS).await?;
            folder = tracking_folder::folder_state(folder, &records);
        }
        rows.push(FolderRow::from(folder));
    }
    Ok(rows)
}

/// A header value for one-line display: encoded words decoded, tabs and newlines gone.
fn display_header(message: &[u8], name: &str) -> String {
    let value = headers::first_value(message, name).unwrap_or_default();
    let decoded = headers::decode_encoded_words(&value);
    decoded.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}
