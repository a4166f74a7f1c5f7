//! FolderStore (SPEC 9): every account's folders, and UIDs and mod-sequences that only go
//! up (RFC 9051 2.3.1.1, RFC 7162 3.1), also when two nodes deliver at once.

use vouchmail_store::{
    AccountStore, Delivery, FlagChange, FlagOperation, Folder, FolderStore, MailboxStore, QueueStore, SenderPolicy,
    StoreError,
};

use crate::accounts::account;
use crate::queue::message;

on_every_backend!(
    store: every_account_has_the_folders_of_spec_9,
    deliveries_get_ascending_uids_never_given_twice,
    flags_change_with_a_new_modseq_and_expunge_takes_deleted_ones,
);
on_every_backend!(two_nodes: two_nodes_delivering_to_one_folder_number_in_commit_order);

fn to(account_id: i64, folder: Folder) -> Delivery {
    Delivery::Mailbox { account_id, folder, recipient: "a@example.org".into() }
}

async fn every_account_has_the_folders_of_spec_9<S: AccountStore + FolderStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account("a@example.org")).await.unwrap();
    let folders = store.list_folders("A@example.org").await.unwrap();
    let names: Vec<(&str, Option<&str>)> =
        folders.iter().map(|f| (f.name.as_str(), f.special_use.as_deref())).collect();
    assert_eq!(
        names,
        [
            ("Archive", Some("\\Archive")),
            ("Drafts", Some("\\Drafts")),
            ("INBOX", None),
            ("Junk", Some("\\Junk")),
            ("Sent", Some("\\Sent")),
            ("Tracking", None),
            ("Trash", Some("\\Trash")),
        ]
    );
    for folder in &folders {
        assert!(folder.uid_validity > 1_700_000_000, "{folder:?}");
        assert_eq!((folder.uid_next, folder.messages, folder.subscribed), (1, 0, true), "{folder:?}");
    }
    assert!(matches!(store.list_folders("nobody@example.org").await, Err(StoreError::NotFound(_))));
    assert!(store.folder_messages("a@example.org", "Nowhere").await.unwrap().is_none());
    assert!(matches!(store.folder_messages("nobody@example.org", "INBOX").await, Err(StoreError::NotFound(_))));
}

async fn deliveries_get_ascending_uids_never_given_twice<
    S: AccountStore + QueueStore + MailboxStore + FolderStore + ?Sized,
>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    for n in 1..=3 {
        store.commit_message(message(&format!("Q{n}"), vec![to(a, Folder::Inbox)])).await.unwrap();
    }
    // One commit of two messages, one of them for Junk too.
    store
        .commit_messages(vec![
            message("Q4", vec![to(a, Folder::Inbox), to(a, Folder::Junk)]),
            message("Q5", vec![to(a, Folder::Inbox)]),
        ])
        .await
        .unwrap();
    let (inbox, messages) = store.folder_messages("a@example.org", "inbox").await.unwrap().unwrap();
    let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2, 3, 4, 5]);
    assert_eq!((inbox.name.as_str(), inbox.uid_next, inbox.messages), ("INBOX", 6, 5));
    assert!(messages.windows(2).all(|w| w[0].modseq <= w[1].modseq), "{messages:?}");
    assert!(messages[3].modseq > messages[2].modseq, "{messages:?}");
    assert!(inbox.highest_modseq >= messages[4].modseq);
    assert!(messages.iter().all(|m| m.flags.is_empty() && m.size > 0 && m.received_at == 1_700_000_000));
    let (junk, in_junk) = store.folder_messages("a@example.org", "Junk").await.unwrap().unwrap();
    assert_eq!((junk.uid_next, in_junk.len(), in_junk[0].uid), (2, 1, 1));
    // POP3's view carries the same UIDs.
    let entries = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.uid).collect::<Vec<_>>(), uids);
    assert!(entries.iter().all(|e| e.folder == "INBOX"));
    // The highest UID deleted (a POP3 DELE) is not given again.
    let last = messages.last().unwrap().entry_id;
    assert_eq!(store.delete_mailbox_entries("a@example.org", &[last]).await.unwrap(), 1);
    store.commit_message(message("Q6", vec![to(a, Folder::Inbox)])).await.unwrap();
    let (inbox, messages) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3, 4, 6]);
    assert_eq!(inbox.uid_next, 7);
    let listed = store.list_folders("a@example.org").await.unwrap();
    let counts: Vec<u32> = listed.iter().map(|f| f.messages).collect();
    assert_eq!(counts, [0, 0, 5, 1, 0, 0, 0]);
}

/// Two nodes commit to one folder at once: every message gets its own UID.
async fn two_nodes_delivering_to_one_folder_number_in_commit_order<
    S: AccountStore + QueueStore + FolderStore + ?Sized,
>(
    a: &S,
    b: &S,
) {
    a.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let id = a.add_account(account("a@example.org")).await.unwrap();
    async fn deliver<S: QueueStore + ?Sized>(store: &S, id: i64, prefix: &str) {
        for n in 0..20 {
            store.commit_message(message(&format!("{prefix}{n}"), vec![to(id, Folder::Inbox)])).await.unwrap();
        }
    }
    tokio::join!(deliver(a, id, "A"), deliver(b, id, "B"));
    let (inbox, messages) = b.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    let mut uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids.len(), 40);
    uids.dedup();
    assert_eq!(uids.len(), 40, "a UID given twice");
    assert_eq!(inbox.uid_next, 41);
}

fn change(uids: &[u32], operation: FlagOperation, flags: &[&str], unchanged_since: Option<u64>) -> FlagChange {
    FlagChange { uids: uids.to_vec(), operation, flags: flags.iter().map(|f| f.to_string()).collect(), unchanged_since }
}

/// STORE and EXPUNGE (RFC 9051 6.4.6, 6.4.3; RFC 7162 3.1.3): changed messages share the
/// folder's next mod-sequence, UNCHANGEDSINCE refuses what changed after it, and EXPUNGE
/// removes only messages flagged \Deleted (of the UIDs given), keeping the account's counts.
async fn flags_change_with_a_new_modseq_and_expunge_takes_deleted_ones<
    S: AccountStore + QueueStore + MailboxStore + FolderStore + ?Sized,
>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    for n in 1..=4 {
        store.commit_message(message(&format!("Q{n}"), vec![to(a, Folder::Inbox)])).await.unwrap();
    }
    let (before, _) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    let seen = change(&[1, 2, 99], FlagOperation::Add, &["\\Seen", "$Work"], None);
    let stored = store.store_flags("a@example.org", "INBOX", seen).await.unwrap();
    let modseq = before.highest_modseq + 1;
    let expected = |uid| (uid, vec!["\\Seen".to_string(), "$Work".to_string()], modseq);
    assert_eq!(stored.changed, [expected(1), expected(2)]);
    assert!(stored.refused.is_empty());
    // Nothing to change: no new mod-sequence.
    let again = change(&[1], FlagOperation::Add, &["\\seen"], None);
    assert!(store.store_flags("a@example.org", "INBOX", again).await.unwrap().changed.is_empty());
    // UNCHANGEDSINCE below message 1's mod-sequence refuses it, and changes message 3.
    let guarded = change(&[1, 3], FlagOperation::Replace, &["\\Deleted"], Some(before.highest_modseq));
    let stored = store.store_flags("a@example.org", "INBOX", guarded).await.unwrap();
    assert_eq!(stored.refused, [1]);
    assert_eq!(stored.changed, [(3, vec!["\\Deleted".to_string()], modseq + 1)]);
    let deleted = change(&[1, 4], FlagOperation::Add, &["\\Deleted"], None);
    store.store_flags("a@example.org", "INBOX", deleted).await.unwrap();
    let (after, messages) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    assert_eq!(after.highest_modseq, modseq + 2);
    assert_eq!(messages[1].flags, ["\\Seen", "$Work"]);
    // UID EXPUNGE of 3 and 2 removes 3 only (2 is not \Deleted); EXPUNGE then 1 and 4.
    assert_eq!(store.expunge("a@example.org", "INBOX", Some(vec![3, 2])).await.unwrap(), [3]);
    assert_eq!(store.expunge("a@example.org", "inbox", None).await.unwrap(), [1, 4]);
    let (last, messages) = store.folder_messages("a@example.org", "INBOX").await.unwrap().unwrap();
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert!(last.highest_modseq > after.highest_modseq);
    let account = store.get_account("a@example.org").await.unwrap().unwrap();
    assert_eq!((account.message_count, account.used_bytes), (1, messages[0].size));
    assert!(store.get_queued_message("Q1").await.unwrap().is_none(), "an expunged message nothing refers to goes");
    assert!(matches!(
        store.store_flags("a@example.org", "Nowhere", change(&[1], FlagOperation::Add, &["\\Seen"], None)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.expunge("nobody@example.org", "INBOX", None).await, Err(StoreError::NotFound(_))));
}
