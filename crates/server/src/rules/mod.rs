//! The rules, once, above the store: accounts and aliases, first start, who a recipient
//! is, the sender policy's decision on a message, committing it with our trace fields,
//! the messages we write ourselves (DSNs), where a tracking record goes, and DKIM keys.

pub mod accounts;
pub mod admin_tokens;
pub mod bootstrap;
pub mod commit;
pub mod dkim;
pub mod dmarc_report;
pub mod dsn;
pub mod entity_index;
pub mod folders;
pub mod lease;
pub mod mail_from;
pub mod maildrop_lock;
pub mod own_message;
pub mod recipient;
pub mod sender_policy;
pub mod tracking;
pub mod tracking_folder;
