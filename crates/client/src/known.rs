//! Key continuity (SPEC 10 Trust), as SSH's `known_hosts`: the certificate each
//! correspondent had when first seen, by SHA-256 fingerprint, in `known_certs` beside the
//! profile. A different certificate for the same address is refused until the user accepts
//! it (`vouchmail client cert --accept ADDRESS`), so a server (or whoever is on its path)
//! that hands out another key cannot read the next message unnoticed.
//!
//! One line per address: `<address> <sha256 hex> <unix time first seen>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::ClientError;

/// SHA-256 of a certificate's DER, in lower-case hex pairs joined by `:` (as `openssl x509
/// -fingerprint -sha256` prints it, but lower case).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub fingerprint: String,
    pub first_seen: i64,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The certificate seen before for this address.
    Same,
    /// No certificate was known for this address: this one is remembered now.
    FirstSeen,
}

#[derive(Debug)]
pub struct KnownCerts {
    path: PathBuf,
    entries: BTreeMap<String, Known>,
}

impl KnownCerts {
    /// Reads the file; a missing one is empty. A line that does not parse is an error
    /// naming it (a damaged file must not silently forget a key).
    pub fn load(path: PathBuf) -> Result<KnownCerts, ClientError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ClientError::new(format!("{}: {e}", path.display()))),
        };
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let parsed = match (fields.next(), fields.next(), fields.next().and_then(|t| t.parse().ok())) {
                (Some(address), Some(fingerprint), Some(first_seen)) if fields.next().is_none() => {
                    Some((address.to_ascii_lowercase(), Known { fingerprint: fingerprint.to_string(), first_seen }))
                }
                _ => None,
            };
            let Some((address, known)) = parsed else {
                return Err(ClientError::new(format!("{} line {}: not ADDRESS SHA256 TIME", path.display(), n + 1)));
            };
            entries.insert(address, known);
        }
        Ok(KnownCerts { path, entries })
    }

    pub fn get(&self, address: &str) -> Option<&Known> {
        self.entries.get(&address.to_ascii_lowercase())
    }

    /// The certificate `fingerprint` for `address`: the same as before, or the first one
    /// (remembered), or an error showing both when it changed.
    pub fn check(&mut self, address: &str, fingerprint: &str, now: i64) -> Result<Continuity, ClientError> {
        match self.get(address) {
            Some(known) if known.fingerprint == fingerprint => Ok(Continuity::Same),
            Some(known) => Err(ClientError::new(format!(
                "the certificate of {address} changed: known {} (first seen {}), now {fingerprint}; \
                 not used until you accept it with `cert --accept {address}`",
                known.fingerprint,
                vouchmail_proto::time::rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(known.first_seen.max(0) as u64)
                )
            ))),
            None => {
                self.accept(address, fingerprint, now)?;
                Ok(Continuity::FirstSeen)
            }
        }
    }

    /// Remembers `fingerprint` for `address`, replacing what was known; returns the old one.
    pub fn accept(&mut self, address: &str, fingerprint: &str, now: i64) -> Result<Option<Known>, ClientError> {
        let old = self
            .entries
            .insert(address.to_ascii_lowercase(), Known { fingerprint: fingerprint.to_string(), first_seen: now });
        self.save()?;
        Ok(old)
    }

    fn save(&self) -> Result<(), ClientError> {
        let text: String =
            self.entries.iter().map(|(a, k)| format!("{a} {} {}\n", k.fingerprint, k.first_seen)).collect();
        vouchmail_server::support::files::write_private(&self.path, text.as_bytes())
            .map_err(|e| ClientError::new(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_seen_then_same_then_changed_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_certs");
        let mut known = KnownCerts::load(path.clone()).unwrap();
        assert_eq!(known.check("Ann@x.test", "aa:01", 100).unwrap(), Continuity::FirstSeen);
        assert_eq!(known.check("ann@x.test", "aa:01", 200).unwrap(), Continuity::Same);
        // Kept across runs.
        let mut known = KnownCerts::load(path.clone()).unwrap();
        let error = known.check("ann@x.test", "bb:02", 300).unwrap_err().to_string();
        assert!(error.contains("aa:01") && error.contains("bb:02") && error.contains("--accept"), "{error}");
        let old = known.accept("ann@x.test", "bb:02", 300).unwrap().unwrap();
        assert_eq!(old.fingerprint, "aa:01");
        assert_eq!(
            KnownCerts::load(path.clone()).unwrap().check("ann@x.test", "bb:02", 400).unwrap(),
            Continuity::Same
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(KnownCerts::load(path).unwrap_err().to_string().contains("line 1"));
    }
}
