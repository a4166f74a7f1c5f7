//! Files only we may read: keys, secrets, fetched mail.

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
