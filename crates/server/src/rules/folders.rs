//! What users may do with their folders (SPEC 9): the folders every account has stay
//! (they are where delivery, Junk filing and tracking put mail), and `Tracking` is
//! read-only (its records are the server's). The hierarchy delimiter is `/`.

use vouchmail_store::rules::DEFAULT_FOLDERS;

/// RFC 9051 5.1 / 6.3.9: the hierarchy delimiter of every folder name.
pub const DELIMITER: char = '/';

/// The folder holding the tracking records (SPEC 8.3, 9).
pub const TRACKING: &str = "Tracking";

/// SPEC 9: the folders of every account cannot be deleted or renamed away (INBOX may be
/// renamed: RFC 9051 6.3.6 moves its messages and keeps INBOX).
pub fn is_permanent(name: &str) -> bool {
    DEFAULT_FOLDERS.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// SPEC 9: Tracking is read-only; nothing is stored into it, nothing changed in it.
pub fn is_read_only(name: &str) -> bool {
    is_tracking(name)
}

/// The folder whose messages are the account's tracking records (`rules::tracking_folder`).
pub fn is_tracking(name: &str) -> bool {
    name == TRACKING
}

/// A name a user may create: not empty, no empty level, no wildcard (RFC 9051 6.3.9
/// `%`, `*`), within 255 octets, and not under Tracking.
pub fn may_create(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.split(DELIMITER).any(str::is_empty)
        && !name.contains(['%', '*'])
        && !name.chars().any(char::is_control)
        && name != TRACKING
        && !name.starts_with(&format!("{TRACKING}{DELIMITER}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folders_of_every_account_stay_and_names_are_checked() {
        assert!(is_permanent("Junk") && is_permanent("inbox") && !is_permanent("Work"));
        assert!(is_read_only("Tracking") && !is_read_only("INBOX"));
        assert!(may_create("Work/2026") && may_create("Grüße"));
        for bad in ["", "Work/", "/Work", "a//b", "Wo%rk", "Tracking", "Tracking/x", "a\tb"] {
            assert!(!may_create(bad), "{bad:?}");
        }
    }
}
