//! Files only we may read: keys, secrets, fetched mail; and reading a spooled message back.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::support::error::{Error, ErrorKind};

/// Writes `bytes` to `path` (mode 600, also when the file existed with another mode),
/// replacing it, and syncs it: on disk before anything depends on it (a fetched message
/// before its DELE, a key before the certificate that names it).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The password a `*password_file` names: the file's first line, which must not be empty.
pub fn read_password_file(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", path.display())))?;
    match text.lines().next() {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(Error::new(ErrorKind::Config, format!("the first line of {} is empty", path.display()))),
    }
}

/// The message as received when part of it went to the spool: `head` (what is in memory)
/// and the spooled rest, read on a blocking thread; None past `max` octets or when the
/// spool cannot be read. For the checks that need the whole message at once (DKIM).
pub async fn read_whole(head: &[u8], spooled: &vouchmail_store::SpooledBody, max: u64) -> Option<Vec<u8>> {
    if head.len() as u64 + spooled.len > max {
        return None;
    }
    let (file, len, mut whole) = (std::sync::Arc::clone(&spooled.file), spooled.len, head.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut rest = vec![0u8; usize::try_from(len).ok()?];
        file.read_exact_at(&mut rest, 0).ok()?;
        whole.extend_from_slice(&rest);
        Some(whole)
    })
    .await
    .ok()
    .flatten()
}
