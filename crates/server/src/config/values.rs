//! Values the configuration names that need parsing before use: a host with its port,
//! and how a TLS server is trusted. Checked when the config loads, so that what loads also
//! works; the network room uses them as they are.

use crate::support::error::{Error, ErrorKind};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `host`, `host:port`, `1.2.3.4:port`, `[::1]:port`, `::1` (port 25 if absent). Also run
/// on every route and the relay when the config loads (`Config::validate_outbound`).
pub fn split_host_port(text: &str) -> Result<(String, u16), Error> {
    let bad = || Error::new(ErrorKind::Config, format!("'{text}' is not host[:port]"));
    let (host, port) = split(text).ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host, port))
}

fn split(text: &str) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 25,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    if text.parse::<IpAddr>().is_ok() {
        return Some((text.to_string(), 25));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((text.to_string(), 25)),
    }
}

/// How a TLS client checks the server it dialed: the ODMR customer checking its provider,
/// whose reversed session it then takes as a trusted relay's (SPEC 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerTrust {
    /// The system's CA bundle; the certificate must be valid for the host name dialed.
    #[default]
    SystemRoots,
    /// These PEM CA certificates; the certificate must be valid for the host name dialed.
    CaFile(PathBuf),
    /// Exactly this certificate, by the SHA-256 of its DER. Pinned, so its names and dates
    /// are not checked (as Postfix's `fingerprint` level).
    Fingerprint([u8; 32]),
    /// Any certificate: encrypted, but nobody is authenticated (RFC 7435).
    Insecure,
}

impl ServerTrust {
    /// From the options `--tls-ca`, `--tls-fingerprint`, `--tls-insecure` (at most one).
    pub fn from_options(ca: Option<&Path>, fingerprint: Option<&str>, insecure: bool) -> Result<ServerTrust, Error> {
        match (ca, fingerprint, insecure) {
            (None, None, false) => Ok(ServerTrust::SystemRoots),
            (Some(ca), None, false) => Ok(ServerTrust::CaFile(ca.to_path_buf())),
            (None, Some(hex), false) => parse_fingerprint(hex).map(ServerTrust::Fingerprint),
            (None, None, true) => Ok(ServerTrust::Insecure),
            _ => Err(Error::new(
                ErrorKind::Config,
                "give at most one of the TLS CA file, the certificate fingerprint and insecure",
            )),
        }
    }

    /// Anything but `Insecure` checks that the server is who we dialed.
    pub fn authenticates(&self) -> bool {
        *self != ServerTrust::Insecure
    }

    /// Whether the options asked for something other than the default.
    pub fn is_default(&self) -> bool {
        *self == ServerTrust::SystemRoots
    }
}

/// A SHA-256 fingerprint in hex, either case, with or without colons (as `openssl x509
/// -fingerprint -sha256` prints it).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let digits: Vec<u8> = text.trim().bytes().filter(|&b| b != b':').collect();
    let bad = || {
        Error::new(ErrorKind::Config, format!("{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"))
    };
    // from_str_radix alone would take a sign ("+a").
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}
