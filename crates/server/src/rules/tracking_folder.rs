//! The Tracking folder as IMAP shows it (SPEC 8.3, 9): one small text/csv message per
//! tracking record of the account, made from the record when asked (the records are the
//! store's; nothing is kept twice). A record's id is its UID and its mod-sequence: ids
//! increase and are never reused, so UIDs never go back (RFC 9051 2.3.1.1), and the folder's
//! UIDNEXT and HIGHESTMODSEQ follow the newest record.

use std::time::{Duration, UNIX_EPOCH};

use vouchmail_proto::time::rfc5322_date;
use vouchmail_store::{FolderInfo, FolderMessage, StoredTrackingRecord};

/// Most records the folder shows: the newest ones, as TRACK lists (SPEC 8.3).
pub const SHOWN_RECORDS: usize = crate::rules::tracking::TRACK_LIMIT;

/// RFC 4180 3: the header line the messages' CSV starts with (`header=present`).
const CSV_HEADER: &str = "timestamp,message_id,sender,recipient,event,reporting_server";

/// The message of one record, from this server (`hostname`) to the record's owner. It
/// refers to the tracked message (RFC 5322 3.6.4), so clients thread it with that message.
pub fn tracking_message(stored: &StoredTrackingRecord, hostname: &str) -> Vec<u8> {
    let record = &stored.record;
    let date = rfc5322_date(UNIX_EPOCH + Duration::from_secs(u64::try_from(record.timestamp).unwrap_or(0)));
    // The record's fields were checked when stored (no control characters, a valid
    // Message-ID), so they can go into header fields as they are.
    let mut message = format!(
        "Date: {date}\r\n\
         From: Delivery tracking <postmaster@{hostname}>\r\n\
         To: <{owner}>\r\n\
         Subject: {event} by {recipient}\r\n\
         Message-ID: <tracking.{id}@{hostname}>\r\n\
         In-Reply-To: {message_id}\r\n\
         References: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/csv; charset=utf-8; header=present\r\n\
         Content-Disposition: inline; filename=\"tracking-{id}.csv\"\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {CSV_HEADER}\r\n",
        owner = stored.owner,
        event = record.event,
        recipient = record.recipient,
        id = stored.id,
        message_id = record.message_id,
    );
    message.push_str(&record.to_string());
    message.push_str("\r\n");
    message.into_bytes()
}

/// The UID of a record: its id, when it fits IMAP's 32 bits (RFC 9051 2.3.1.1 nz-number).
pub fn uid_of(stored: &StoredTrackingRecord) -> Option<u32> {
    u32::try_from(stored.id).ok().filter(|&uid| uid > 0)
}

/// The folder (its row in the store, `info`) with the account's `records` as its messages,
/// oldest first. Records are shown read: nothing in a read-only folder can change, so an
/// unread count would never go down.
pub fn tracking_folder(
    info: FolderInfo,
    records: &[StoredTrackingRecord],
    hostname: &str,
) -> (FolderInfo, Vec<FolderMessage>) {
    let messages: Vec<FolderMessage> = records
        .iter()
        .filter_map(|stored| {
            let uid = uid_of(stored)?;
            Some(FolderMessage {
                uid,
                entry_id: stored.id,
                message_id: stored.id,
                flags: vec!["\\Seen".into()],
                modseq: uid.into(),
                received_at: stored.stored_at,
                size: tracking_message(stored, hostname).len() as u64,
            })
        })
        .collect();
    (folder_state(info, records), messages)
}

/// The folder's row in the store (`info`) counted as IMAP shows it with these records: the
/// messages, UIDNEXT and HIGHESTMODSEQ (`vouchmail mailbox folders` too).
pub fn folder_state(mut info: FolderInfo, records: &[StoredTrackingRecord]) -> FolderInfo {
    let uids = records.iter().filter_map(uid_of);
    info.messages = uids.clone().count() as u32;
    if let Some(newest) = uids.max() {
        info.uid_next = info.uid_next.max(newest.saturating_add(1));
        info.highest_modseq = info.highest_modseq.max(newest.into());
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchmail_proto::messenger::tracking::{Event, Record};

    fn stored(id: i64, recipient: &str) -> StoredTrackingRecord {
        StoredTrackingRecord {
            id,
            owner: "glen@galkam.test".into(),
            record: Record {
                timestamp: 1_796_119_200,
                message_id: "<id@galkam.test>".into(),
                sender: "glen@galkam.test".into(),
                recipient: recipient.into(),
                event: Event::Downloaded,
                reporting_server: "mx.lrsupport.test".into(),
            },
            stored_at: 1_796_119_260,
        }
    }

    fn tracking_row() -> FolderInfo {
        FolderInfo {
            name: "Tracking".into(),
            special_use: None,
            uid_validity: 7,
            uid_next: 1,
            highest_modseq: 1,
            subscribed: true,
            messages: 0,
        }
    }

    #[test]
    fn a_record_is_a_csv_message_threaded_with_the_tracked_one() {
        let message =
            String::from_utf8(tracking_message(&stored(42, "abc555@lrsupport.test"), "mx.galkam.test")).expect("utf-8");
        let (head, body) = message.split_once("\r\n\r\n").expect("header and body");
        assert!(head.contains("\r\nSubject: downloaded by abc555@lrsupport.test\r\n"), "{head}");
        assert!(head.contains("\r\nReferences: <id@galkam.test>\r\n"), "{head}");
        assert!(head.contains("\r\nMessage-ID: <tracking.42@mx.galkam.test>\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/csv; charset=utf-8; header=present"), "{head}");
        assert!(head.starts_with("Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"), "{head}");
        // SPEC 8.3's example line, under RFC 4180's header line.
        assert_eq!(
            body,
            "timestamp,message_id,sender,recipient,event,reporting_server\r\n\
             2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test\r\n"
        );
    }

    #[test]
    fn uids_are_record_ids_and_the_folder_follows_the_newest() {
        let records = [stored(5, "a@b.test"), stored(9, "c@d.test"), stored(1 << 40, "e@f.test")];
        let (info, messages) = tracking_folder(tracking_row(), &records, "mx.galkam.test");
        assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [5, 9]);
        assert_eq!((info.uid_next, info.highest_modseq, info.messages), (10, 9, 2));
        assert_eq!(messages[0].size, tracking_message(&records[0], "mx.galkam.test").len() as u64);
        assert_eq!(messages[1].flags, ["\\Seen"]);
        let (empty, none) = tracking_folder(tracking_row(), &[], "mx.galkam.test");
        assert_eq!((empty.uid_next, none.len()), (1, 0));
    }
}
