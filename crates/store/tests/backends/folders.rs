//! FolderStore (SPEC 9): every account's folders, and UIDs and mod-sequences that only go
//! up (RFC 9051 2.3.1.1, RFC 7162 3.1), also when two nodes deliver at once.

use vouchmail_store::{
    AccountStore, AppendedMessage, CopiedMessages, Delivery, FlagChange, FlagOperation, Folder, FolderInfo,
    FolderStore, MailboxStore, QueueStore, SenderPolicy, StoreError,
};

use crate::accounts::account;
use crate::queue::message;

on_every_backend!(
    store: every_account_has_the_folders_of_spec_9,
    deliveries_get_ascending_uids_never_given_twice,
    flags_change_with_a_new_modseq_and_expunge_takes_deleted_ones,
    folders_are_created_and_deleted_with_their_messages,
    a_folder_made_again_gets_another_uid_validity,
    rename_takes_subfolders_along,
    renaming_inbox_moves_its_messages,
    copy_then_move_give_new_uids_in_uid_order,
    append_stores_flags_and_internal_date,
    every_change_moves_the_folder_version,
);
on_every_backend!(
    two_nodes: two_nodes_delivering_to_one_folder_number_in_commit_order,
    two_nodes_copying_into_one_folder_get_distinct_uids,
);

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

const A: &str = "a@example.org";

fn appended(queue_id: &str, flags: &[&str], received_at: i64, data: &[u8]) -> AppendedMessage {
    AppendedMessage {
        queue_id: queue_id.into(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        received_at,
        data: data.to_vec(),
    }
}

async fn folder<S: FolderStore + ?Sized>(store: &S, name: &str) -> FolderInfo {
    store.list_folders(A).await.unwrap().into_iter().find(|f| f.name == name).unwrap()
}

async fn uids<S: FolderStore + ?Sized>(store: &S, name: &str) -> Vec<u32> {
    store.folder_messages(A, name).await.unwrap().unwrap().1.iter().map(|m| m.uid).collect()
}

/// (message_count, used_bytes) of the account.
async fn counts<S: AccountStore + ?Sized>(store: &S) -> (u64, u64) {
    let account = store.get_account(A).await.unwrap().unwrap();
    (account.message_count, account.used_bytes)
}

/// The size of `message` (`queue::message`'s text).
const SIZE: u64 = 20;

/// CREATE and DELETE (RFC 9051 6.3.4, 6.3.5): a new folder is empty and unsubscribed, a
/// second CREATE of a name (INBOX in any case) is refused, DELETE takes the folder's
/// messages as EXPUNGE does: the account's counts down, a message nothing else refers to
/// gone, one INBOX still holds kept.
async fn folders_are_created_and_deleted_with_their_messages<S: AccountStore + QueueStore + FolderStore + ?Sized>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account(A)).await.unwrap();
    store.create_folder("A@example.org", "Work", None).await.unwrap();
    store.create_folder(A, "Lists/rust", Some("\\Flagged")).await.unwrap();
    let work = folder(store, "Work").await;
    assert_eq!((work.uid_next, work.messages, work.subscribed, work.special_use.as_deref()), (1, 0, false, None));
    assert!(work.uid_validity > folder(store, "INBOX").await.uid_validity, "{work:?}");
    assert_eq!(folder(store, "Lists/rust").await.special_use.as_deref(), Some("\\Flagged"));
    assert_eq!(store.list_folders(A).await.unwrap().len(), 9);
    assert!(matches!(store.create_folder(A, "Work", None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.create_folder(A, "inbox", None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.create_folder("nobody@example.org", "X", None).await, Err(StoreError::NotFound(_))));
    // "work" is another folder: only INBOX is matched in any case.
    store.create_folder(A, "work", None).await.unwrap();

    store.commit_message(message("Q1", vec![to(a, Folder::Inbox)])).await.unwrap();
    let copied = store.copy_messages(A, "INBOX", vec![1], "Work", false).await.unwrap();
    assert_eq!(copied.pairs, [(1, 1)]);
    let (uid_validity, uid) =
        store.append_message(A, "Work", appended("W1", &[], 1_600_000_000, b"Hi\r\n")).await.unwrap();
    assert_eq!((uid_validity, uid), (work.uid_validity, 2));
    assert_eq!(counts(store).await, (3, 2 * SIZE + 4));

    store.subscribe_folder(A, "Work", true).await.unwrap();
    assert!(folder(store, "Work").await.subscribed);
    store.subscribe_folder(A, "INBOX", false).await.unwrap();
    assert!(!folder(store, "INBOX").await.subscribed);
    assert!(matches!(store.subscribe_folder(A, "Nowhere", true).await, Err(StoreError::NotFound(_))));

    store.delete_folder(A, "Work").await.unwrap();
    assert!(store.folder_messages(A, "Work").await.unwrap().is_none());
    assert_eq!(counts(store).await, (1, SIZE));
    assert!(store.get_queued_message("W1").await.unwrap().is_none(), "a message only the folder held goes");
    assert!(store.get_queued_message("Q1").await.unwrap().is_some(), "INBOX still holds Q1");
    assert_eq!(uids(store, "INBOX").await, [1]);
    assert!(matches!(store.delete_folder(A, "Work").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.delete_folder("nobody@example.org", "Work").await, Err(StoreError::NotFound(_))));
    // The store leaves which folders may go to the server: even INBOX.
    store.delete_folder(A, "inbox").await.unwrap();
    assert_eq!(counts(store).await, (0, 0));
    assert!(store.get_queued_message("Q1").await.unwrap().is_none());
}

/// RFC 9051 2.3.1.1: a folder deleted and made again (in the same second) gets another
/// UIDVALIDITY, by CREATE or by a delivery to a default folder.
async fn a_folder_made_again_gets_another_uid_validity<S: AccountStore + QueueStore + FolderStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account(A)).await.unwrap();
    store.create_folder(A, "Work", None).await.unwrap();
    let before = folder(store, "Work").await.uid_validity;
    store.delete_folder(A, "Work").await.unwrap();
    store.create_folder(A, "Work", None).await.unwrap();
    let after = folder(store, "Work").await;
    assert!(after.uid_validity > before, "{before} then {after:?}");
    assert_eq!(after.uid_next, 1);
    // Junk deleted, then a delivery there makes it again.
    let junk = folder(store, "Junk").await.uid_validity;
    store.delete_folder(A, "Junk").await.unwrap();
    store.commit_message(message("Q1", vec![to(a, Folder::Junk)])).await.unwrap();
    let again = folder(store, "Junk").await;
    assert!(again.uid_validity > junk && again.uid_validity != after.uid_validity, "{junk} then {again:?}");
    assert_eq!((again.uid_next, again.special_use.as_deref()), (2, Some("\\Junk")));
}

/// RENAME (RFC 9051 6.3.6): the folder and its inferiors take the new name with their
/// UIDVALIDITY, UIDs and messages; a folder that only shares the prefix stays.
async fn rename_takes_subfolders_along<S: AccountStore + FolderStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    store.add_account(account(A)).await.unwrap();
    for name in ["Projects", "Projects/A", "Projects/A/B", "ProjectsX", "Old/A"] {
        store.create_folder(A, name, None).await.unwrap();
    }
    store.append_message(A, "Projects/A", appended("P1", &["\\Seen"], 1_600_000_000, b"one")).await.unwrap();
    store.append_message(A, "Projects/A", appended("P2", &[], 1_600_000_000, b"two")).await.unwrap();
    store.subscribe_folder(A, "Projects/A", true).await.unwrap();
    let before = folder(store, "Projects/A").await;
    // `Projects/A` would become `Old/A`, which is there.
    assert!(matches!(store.rename_folder(A, "Projects", "Old").await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.rename_folder(A, "Projects", "Junk").await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.rename_folder(A, "Projects", "INBOX").await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.rename_folder(A, "Nowhere", "Else").await, Err(StoreError::NotFound(_))));
    store.rename_folder(A, "Projects", "Work").await.unwrap();
    let names: Vec<String> = store.list_folders(A).await.unwrap().into_iter().map(|f| f.name).collect();
    assert!(!names.iter().any(|n| n == "Projects" || n.starts_with("Projects/")), "{names:?}");
    for name in ["Work", "Work/A", "Work/A/B", "ProjectsX", "Old/A"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    let after = folder(store, "Work/A").await;
    assert_eq!(after, FolderInfo { name: "Work/A".into(), ..before });
    let (_, messages) = store.folder_messages(A, "Work/A").await.unwrap().unwrap();
    assert_eq!(
        messages.iter().map(|m| (m.uid, m.flags.clone())).collect::<Vec<_>>(),
        [(1, vec!["\\Seen".to_string()]), (2, vec![])]
    );
    // Into its own subtree: `Work/A` becomes `Work/Sub/A` as `Work` becomes `Work/Sub`.
    store.rename_folder(A, "Work", "Work/Sub").await.unwrap();
    assert_eq!(uids(store, "Work/Sub/A").await, [1, 2]);
    assert!(store.folder_messages(A, "Work/Sub/A/B").await.unwrap().is_some());
    assert!(store.folder_messages(A, "Work").await.unwrap().is_none());
}

/// RENAME of INBOX (RFC 9051 6.3.6): its messages move to a new folder with new UIDs and
/// their flags, INBOX stays, empty, with its UIDs not given again; its inferiors stay.
async fn renaming_inbox_moves_its_messages<S: AccountStore + QueueStore + FolderStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account(A)).await.unwrap();
    store.create_folder(A, "INBOX/Sub", None).await.unwrap();
    for n in 1..=4 {
        store.commit_message(message(&format!("Q{n}"), vec![to(a, Folder::Inbox)])).await.unwrap();
    }
    // UID 1 gone: the new folder numbers from 1 all the same.
    let deleted = FlagChange {
        uids: vec![1],
        operation: FlagOperation::Add,
        flags: vec!["\\Deleted".into()],
        unchanged_since: None,
    };
    store.store_flags(A, "INBOX", deleted).await.unwrap();
    store.expunge(A, "INBOX", None).await.unwrap();
    store.store_flags(A, "INBOX", change(&[3], FlagOperation::Add, &["\\Answered"], None)).await.unwrap();
    let inbox = folder(store, "INBOX").await;
    assert!(matches!(store.rename_folder(A, "INBOX", "Trash").await, Err(StoreError::Conflict(_))));
    store.rename_folder(A, "inbox", "Old mail").await.unwrap();
    let (old, messages) = store.folder_messages(A, "Old mail").await.unwrap().unwrap();
    assert_eq!(messages.iter().map(|m| (m.uid, m.flags.len())).collect::<Vec<_>>(), [(1, 0), (2, 1), (3, 0)]);
    assert_eq!(messages[1].flags, ["\\Answered"]);
    assert_eq!((old.uid_next, old.messages), (4, 3));
    assert!(old.uid_validity > inbox.uid_validity);
    let (after, left) = store.folder_messages(A, "INBOX").await.unwrap().unwrap();
    assert!(left.is_empty());
    assert_eq!((after.uid_validity, after.uid_next), (inbox.uid_validity, inbox.uid_next));
    assert!(after.highest_modseq > inbox.highest_modseq);
    assert!(store.folder_messages(A, "INBOX/Sub").await.unwrap().is_some());
    assert!(store.folder_messages(A, "Old mail/Sub").await.unwrap().is_none());
    assert_eq!(counts(store).await, (3, 3 * SIZE), "a move changes no count");
    // The next delivery goes to INBOX with the next UID.
    store.commit_message(message("Q5", vec![to(a, Folder::Inbox)])).await.unwrap();
    assert_eq!(uids(store, "INBOX").await, [5]);
}

/// COPY then MOVE (RFC 9051 6.4.7, RFC 6851, RFC 4315 COPYUID): the existing messages of
/// the UIDs given, in UID order, with their flags and internal date, new UIDs in the
/// target; a copy counts, a move does not and empties its source.
async fn copy_then_move_give_new_uids_in_uid_order<
    S: AccountStore + QueueStore + MailboxStore + FolderStore + ?Sized,
>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account(A)).await.unwrap();
    for n in 1..=4 {
        store.commit_message(message(&format!("Q{n}"), vec![to(a, Folder::Inbox)])).await.unwrap();
    }
    store.append_message(A, "Archive", appended("A1", &[], 1_600_000_000, b"first")).await.unwrap();
    store.store_flags(A, "INBOX", change(&[3], FlagOperation::Add, &["\\Flagged", "$Work"], None)).await.unwrap();
    let archive = folder(store, "Archive").await;
    let copied = store.copy_messages(A, "INBOX", vec![4, 1, 3, 99, 3], "Archive", false).await.unwrap();
    assert_eq!(copied, CopiedMessages { uid_validity: archive.uid_validity, pairs: vec![(1, 2), (3, 3), (4, 4)] });
    assert_eq!(counts(store).await, (8, 7 * SIZE + 5));
    let (after, in_archive) = store.folder_messages(A, "Archive").await.unwrap().unwrap();
    assert!(after.highest_modseq > archive.highest_modseq);
    assert_eq!((after.uid_next, after.messages), (5, 4));
    let (_, in_inbox) = store.folder_messages(A, "INBOX").await.unwrap().unwrap();
    assert_eq!(in_inbox.len(), 4, "a copy leaves its source");
    assert_eq!(in_archive[2].flags, ["\\Flagged", "$Work"]);
    assert_eq!(in_archive[2].message_id, in_inbox[2].message_id, "one copy of the message itself");
    assert_eq!(in_archive[2].received_at, 1_700_000_000);
    assert_ne!(in_archive[2].entry_id, in_inbox[2].entry_id);

    let trash = folder(store, "Trash").await;
    let moved = store.copy_messages(A, "Archive", vec![1, 2, 3, 4], "Trash", true).await.unwrap();
    assert_eq!(moved, CopiedMessages { uid_validity: trash.uid_validity, pairs: vec![(1, 1), (2, 2), (3, 3), (4, 4)] });
    let (emptied, left) = store.folder_messages(A, "Archive").await.unwrap().unwrap();
    assert!(left.is_empty());
    assert_eq!(emptied.uid_next, 5);
    assert!(emptied.highest_modseq > after.highest_modseq);
    assert!(folder(store, "Trash").await.highest_modseq > trash.highest_modseq);
    assert_eq!(counts(store).await, (8, 7 * SIZE + 5), "a move changes no count");
    let (_, in_trash) = store.folder_messages(A, "Trash").await.unwrap().unwrap();
    assert_eq!(in_trash[0].received_at, 1_600_000_000);
    assert_eq!(in_trash[2].flags, ["\\Flagged", "$Work"]);
    assert!(store.get_queued_message("A1").await.unwrap().is_some(), "a moved message stays");
    // Nothing of these UIDs: nothing copied, nothing changed.
    let none = store.copy_messages(A, "Archive", vec![1], "Trash", true).await.unwrap();
    assert!(none.pairs.is_empty());
    assert_eq!(folder(store, "Trash").await.uid_next, 5);
    assert!(matches!(
        store.copy_messages(A, "INBOX", vec![1], "Nowhere", false).await,
        Err(StoreError::NotFound(e)) if e.contains("folder")
    ));
    assert!(matches!(
        store.copy_messages(A, "Nowhere", vec![1], "Trash", true).await,
        Err(StoreError::NotFound(e)) if e.contains("folder")
    ));
    assert_eq!(counts(store).await, (8, 7 * SIZE + 5));
}

/// APPEND (RFC 9051 6.3.12): the message with its flags (stored as STORE would set them)
/// and internal date, the folder's next UID, counted in the account.
async fn append_stores_flags_and_internal_date<S: AccountStore + QueueStore + FolderStore + ?Sized>(store: &S) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account(A)).await.unwrap();
    store.commit_message(message("Q1", vec![to(a, Folder::Inbox)])).await.unwrap();
    let drafts = folder(store, "Drafts").await;
    let flags = ["\\Seen", "\\seen", "\\Recent", "$Draft"];
    let data = b"Subject: draft\r\n\r\nHi\r\n";
    let appended_at =
        store.append_message("A@example.org", "Drafts", appended("D1", &flags, 1_600_000_000, data)).await.unwrap();
    assert_eq!(appended_at, (drafts.uid_validity, 1));
    assert_eq!(store.append_message(A, "inbox", appended("D2", &[], 1_600_000_001, b"x")).await.unwrap().1, 2);
    let (after, messages) = store.folder_messages(A, "Drafts").await.unwrap().unwrap();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        (m.uid, m.flags.clone(), m.received_at, m.size),
        (1, vec!["\\Seen".into(), "$Draft".into()], 1_600_000_000, data.len() as u64)
    );
    assert!(m.modseq > drafts.highest_modseq && after.highest_modseq >= m.modseq);
    assert_eq!(after.uid_next, 2);
    assert_eq!(counts(store).await, (3, SIZE + data.len() as u64 + 1));
    let (_, text) = store.get_queued_message("D1").await.unwrap().unwrap();
    assert_eq!(text, data);
    assert!(matches!(
        store.append_message(A, "Drafts", appended("D1", &[], 0, b"y")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.append_message(A, "Nowhere", appended("D3", &[], 0, b"y")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.append_message("nobody@example.org", "INBOX", appended("D4", &[], 0, b"y")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(counts(store).await, (3, SIZE + data.len() as u64 + 1));
    assert!(store.get_queued_message("D3").await.unwrap().is_none());
}

/// Two nodes copying into one folder at once: every copy its own UID, all counted.
async fn two_nodes_copying_into_one_folder_get_distinct_uids<S: AccountStore + QueueStore + FolderStore + ?Sized>(
    a: &S,
    b: &S,
) {
    a.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let id = a.add_account(account(A)).await.unwrap();
    for n in 1..=4 {
        a.commit_message(message(&format!("Q{n}"), vec![to(id, Folder::Inbox)])).await.unwrap();
    }
    async fn copy<S: FolderStore + ?Sized>(store: &S) -> Vec<u32> {
        let mut given = Vec::new();
        for _ in 0..10 {
            let copied = store.copy_messages(A, "INBOX", vec![1, 2, 3, 4], "Archive", false).await.unwrap();
            assert_eq!(copied.pairs.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
            given.extend(copied.pairs.iter().map(|p| p.1));
        }
        given
    }
    let (from_a, from_b) = tokio::join!(copy(a), copy(b));
    let mut given: Vec<u32> = from_a.into_iter().chain(from_b).collect();
    given.sort_unstable();
    assert_eq!(given, (1..=80).collect::<Vec<u32>>(), "a UID given twice");
    let (archive, messages) = b.folder_messages(A, "Archive").await.unwrap().unwrap();
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), given);
    assert_eq!((archive.uid_next, archive.messages), (81, 80));
    assert_eq!(counts(b).await, (84, 84 * SIZE));
}

/// What IMAP sessions watch (SPEC 9): a delivery, a flag change, an IMAP expunge and a POP3
/// deletion each move the folder's version; a read does not.
async fn every_change_moves_the_folder_version<S: AccountStore + QueueStore + MailboxStore + FolderStore + ?Sized>(
    store: &S,
) {
    store.add_domain("example.org", SenderPolicy::REJECT).await.unwrap();
    let a = store.add_account(account("a@example.org")).await.unwrap();
    let version = || async { store.folder_version("A@example.org", "inbox").await.unwrap().expect("INBOX") };
    let mut seen = vec![version().await];
    for n in 1..=3 {
        store.commit_message(message(&format!("Q{n}"), vec![to(a, Folder::Inbox)])).await.unwrap();
    }
    seen.push(version().await);
    store.folder_messages("a@example.org", "INBOX").await.unwrap();
    assert_eq!(version().await, seen[1], "a read changes nothing");
    store.store_flags("a@example.org", "INBOX", change(&[1], FlagOperation::Add, &["\\Deleted"], None)).await.unwrap();
    seen.push(version().await);
    store.expunge("a@example.org", "INBOX", None).await.unwrap();
    seen.push(version().await);
    let entries = store.list_mailbox("a@example.org", Some(Folder::Inbox)).await.unwrap();
    assert_eq!(store.delete_mailbox_entries("a@example.org", &[entries[0].id]).await.unwrap(), 1);
    seen.push(version().await);
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{seen:?}");
    }
    assert_eq!(seen[1].uid_next, 4);
    assert!(seen.windows(2).all(|p| p[0].highest_modseq < p[1].highest_modseq), "{seen:?}");
    assert!(store.folder_version("a@example.org", "Nowhere").await.unwrap().is_none());
    assert!(store.folder_version("nobody@example.org", "INBOX").await.unwrap().is_none());
}
