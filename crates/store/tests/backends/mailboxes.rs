//! MailboxStore (SPEC 9): listing and reading, deleting with the account's counts kept
//! right and messages nothing refers to removed, the download event.

use vouchmail_store::{
    AccountStore, Delivery, FetchedMessage, Folder, MailboxStore, QueueStore, SenderPolicy, StoreError,
};

use crate::accounts::account;
use crate::queue::message;

on_every_backend!(
    store: deleting_mailbox_entries_keeps_counters_and_collects_orphans,
    removing_the_last_reference_deletes_the_message,
    unique_ids_are_not_reused_after_deletion,
    a_download_is_recorded_once_per_message_and_recipient,
    a_batch_of_messages_is_read_at_once,
);
on_every_backend!(two_nodes: two_nodes_deleting_one_entry_count_it_once);

fn inbox(account_id: i64, recipient: &str) -> Delivery {
    Delivery::Mailbox { account_id, folder: Folder::Inbox, recipient: recipient.into() }
}

async fn deleting_mailbox_entries_keeps_counters_and_collects_orphans<
    S: AccountStore + QueueStore + MailboxStore + ?Sized,
>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    // Q1 goes to both accounts, Q2 to `a` only.
    store.commit_message(message("Q1", vec![inbox(a, "a@example.org"), inbox(b, "b@example.org")])).await.unwrap();
    store.commit_message(message("Q2", vec![inbox(a, "a@example.org")])).await.unwrap();
    let entries = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    let b_id = store.list_mailbox("b@example.org", None).await.unwrap()[0].id;
    // b's entry is not a's to delete; unknown ids are skipped, and so is one given twice.
    assert_eq!(store.delete_mailbox_entries("A@example.org", &[ids[0], ids[1], b_id, 9999, ids[0]]).await.unwrap(), 2);
    assert!(store.list_mailbox("a@example.org", None).await.unwrap().is_empty());
    let alice = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((alice.message_count, alice.used_bytes), (0, 0));
    let bob = store.get_account("b@example.org").await.unwrap().unwrap();
    assert_eq!((bob.message_count, bob.used_bytes), (1, entries[0].size));
    // Q1 is still referenced by b's mailbox; Q2 is gone.
    assert!(store.get_queued_message("Q1").await.unwrap().is_some());
    assert!(store.get_queued_message("Q2").await.unwrap().is_none());
    assert_eq!(store.delete_mailbox_entries("b@example.org", &[b_id]).await.unwrap(), 1);
    assert!(store.get_queued_message("Q1").await.unwrap().is_none());
    assert_eq!(store.delete_mailbox_entries("b@example.org", &[b_id]).await.unwrap(), 0);
    assert_eq!(store.delete_mailbox_entries("nobody@example.org", &[b_id]).await.unwrap(), 0);
    assert_eq!(store.delete_mailbox_entries("b@example.org", &[]).await.unwrap(), 0);
    // A message still queued for a remote recipient stays when its mailbox copy goes.
    let onward = Delivery::Queue { recipient: "x@remote.example".into() };
    store.commit_message(message("Q3", vec![inbox(a, "a@example.org"), onward])).await.unwrap();
    let entry = store.list_mailbox("a@example.org", None).await.unwrap()[0].id;
    assert_eq!(store.delete_mailbox_entries("a@example.org", &[entry]).await.unwrap(), 1);
    assert_eq!(store.get_queued_message("Q3").await.unwrap().map(|(e, _)| e.len()), Some(2));
}

async fn removing_the_last_reference_deletes_the_message<S: AccountStore + QueueStore + MailboxStore + ?Sized>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    store.commit_message(message("Q2", vec![inbox(a, "a@example.org")])).await.unwrap();
    store.commit_message(message("Q3", vec![inbox(a, "a@example.org"), inbox(b, "b@example.org")])).await.unwrap();
    let mut junk = message("Q4", vec![inbox(a, "a@example.org")]);
    junk.deliveries[0].0 = Delivery::Mailbox { account_id: a, folder: Folder::Junk, recipient: "a@example.org".into() };
    store.commit_message(junk).await.unwrap();
    store.remove_account("a@example.org").await.unwrap();
    assert!(store.get_queued_message("Q2").await.unwrap().is_none());
    assert!(store.get_queued_message("Q4").await.unwrap().is_none());
    // Still in b's mailbox.
    assert!(store.get_queued_message("Q3").await.unwrap().is_some());
    assert_eq!(store.list_mailbox("b@example.org", None).await.unwrap().len(), 1);
}

async fn unique_ids_are_not_reused_after_deletion<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    store.commit_message(message("Q1", vec![inbox(a, "a@example.org")])).await.unwrap();
    let first = store.list_mailbox("a@example.org", None).await.unwrap().remove(0);
    store.delete_mailbox_entries("a@example.org", &[first.id]).await.unwrap();
    store.commit_message(message("Q2", vec![inbox(a, "a@example.org")])).await.unwrap();
    let second = store.list_mailbox("a@example.org", None).await.unwrap().remove(0);
    assert_ne!(first.unique_id(), second.unique_id());
    assert_eq!(second.unique_id(), format!("{}.Q2", second.id));
}

/// The `downloaded` event once per (message, recipient); the event itself is read through
/// `TrackingStore` (its tests).
async fn a_download_is_recorded_once_per_message_and_recipient<S: AccountStore + QueueStore + MailboxStore + ?Sized>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    let mut m = message("Q1", vec![inbox(a, "a@example.org"), inbox(b, "b@example.org")]);
    m.data = b"Message-ID:\r\n <abc@remote.example>\r\nSubject: t\r\n\r\nbody\r\n".to_vec();
    store.commit_message(m).await.unwrap();
    let a_entry = store.list_mailbox("a@example.org", None).await.unwrap()[0].id;
    let b_entry = store.list_mailbox("b@example.org", None).await.unwrap()[0].id;
    assert!(store.record_download("A@example.org", a_entry).await.unwrap());
    assert!(!store.record_download("a@example.org", a_entry).await.unwrap());
    assert!(matches!(store.record_download("a@example.org", b_entry).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.record_download("a@example.org", 9999).await, Err(StoreError::NotFound(_))));
    assert!(store.record_download("b@example.org", b_entry).await.unwrap());
    // Once per message and recipient, whichever entry of it: a second copy is the same message.
    store.delete_mailbox_entries("a@example.org", &[a_entry]).await.unwrap();
    assert!(matches!(store.record_download("a@example.org", a_entry).await, Err(StoreError::NotFound(_))));
}

/// Two sessions (on two nodes) deleting the same entry at once: it is removed, and the
/// account's counts go down once.
async fn two_nodes_deleting_one_entry_count_it_once<S: AccountStore + QueueStore + MailboxStore + ?Sized>(
    a: &S,
    b: &S,
) {
    a.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let id = a.add_account(account("a@example.org")).await.unwrap();
    for i in 0..20 {
        a.commit_message(message(&format!("Q{i}"), vec![inbox(id, "a@example.org")])).await.unwrap();
    }
    let entries: Vec<i64> = a.list_mailbox("a@example.org", None).await.unwrap().iter().map(|e| e.id).collect();
    for entry in &entries {
        let (x, y) = tokio::join!(
            a.delete_mailbox_entries("a@example.org", &[*entry]),
            b.delete_mailbox_entries("a@example.org", &[*entry])
        );
        assert_eq!(x.unwrap() + y.unwrap(), 1, "entry {entry}");
    }
    let alice = b.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((alice.message_count, alice.used_bytes), (0, 0));
    assert!(b.list_queue().await.unwrap().is_empty());
    assert!(b.get_queued_message("Q0").await.unwrap().is_none());
}

/// IMAP FETCH reads a batch in one go: only the account's entries, each with its message.
async fn a_batch_of_messages_is_read_at_once<S: AccountStore + QueueStore + MailboxStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let b = store.add_account(account("b@example.org")).await.unwrap();
    store.commit_message(message("Q1", vec![inbox(a, "a@example.org"), inbox(b, "b@example.org")])).await.unwrap();
    store.commit_message(message("Q2", vec![inbox(a, "a@example.org")])).await.unwrap();
    let ids: Vec<i64> = store.list_mailbox("a@example.org", None).await.unwrap().iter().map(|e| e.id).collect();
    let b_id = store.list_mailbox("b@example.org", None).await.unwrap()[0].id;
    let mut read = store.mailbox_messages("A@example.org", &[ids[1], b_id, 9999, ids[0]], None).await.unwrap();
    read.sort_by_key(|f| f.entry);
    assert_eq!(read.iter().map(|f| f.entry).collect::<Vec<_>>(), ids);
    // A header read gets the header section the store keeps beside the message.
    let mut headers = store.mailbox_messages("a@example.org", &ids, Some(10)).await.unwrap();
    headers.sort_by_key(|f| f.entry);
    for (whole, header) in read.iter().zip(&headers) {
        let (_, single) = store.get_mailbox_message("a@example.org", whole.entry).await.unwrap().unwrap();
        assert_eq!(whole.bytes, single);
        assert_eq!((header.entry, &header.bytes[..]), (whole.entry, &b"Subject: t\r\n\r\n"[..]));
        // What a download of it records comes with a whole read only.
        assert!(whole.tracked.is_some() && header.tracked.is_none());
    }
    // Without an empty line there is no header section to keep: the prefix is read.
    let mut plain = message("Q3", vec![inbox(a, "a@example.org")]);
    plain.data = b"Subject: no body, no empty line\r\n".to_vec();
    store.commit_message(plain).await.unwrap();
    let q3 = store.list_mailbox("a@example.org", None).await.unwrap()[2].id;
    let bytes = |read: Vec<FetchedMessage>| read.into_iter().map(|f| (f.entry, f.bytes)).collect::<Vec<_>>();
    let prefix = store.mailbox_messages("a@example.org", &[q3], Some(10)).await.unwrap();
    assert_eq!(bytes(prefix), [(q3, b"Subject: n".to_vec())]);
    let whole = store.mailbox_messages("a@example.org", &[q3], Some(1 << 20)).await.unwrap();
    assert_eq!(bytes(whole), [(q3, b"Subject: no body, no empty line\r\n".to_vec())]);
    assert!(store.mailbox_messages("a@example.org", &[], None).await.unwrap().is_empty());
    assert!(store.mailbox_messages("nobody@example.org", &ids, None).await.unwrap().is_empty());
}
