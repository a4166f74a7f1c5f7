//! The recipient side of AuthKeys (SPEC 7.5): is this `X-Auth-Key` valid for this From
//! address? Answered from the verification cache in the store, else by asking the sender
//! domain's Authentication Server (its `AS=` TXT record, SPEC 7.3) with VERIFY over UDP (3
//! tries) and then TCP (SPEC 7.2). Every VERIFY sent is logged in the store.

use crate::support::error::{Error, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use vouchmail_proto::authkey::client::{PendingVerify, RANDOM_SEQ_LEN};
use vouchmail_proto::authkey::codec::is_valid_key;
use vouchmail_proto::authkey::Verdict;
use vouchmail_proto::smtp::trace::AuthKeyResult;
use vouchmail_store::{Store, VerifySentEntry};

use crate::config;
use crate::net::dns::Dns;
use crate::support::time::unix_now;

pub use vouchmail_proto::authkey::record::{parse_as_record, DEFAULT_PORT};

/// SPEC 7.5: the field the final recipient's server adds with its result.
pub const STATUS_HEADER: &str = "X-Auth-Key-Status";

/// A VERIFY answer line is short; anything longer is not one.
const MAX_ANSWER: usize = 600;
/// SPEC 7.5: a cached key is reused at most this long.
const MAX_CACHE_SECS: u64 = 3600;

/// The cache key of (address, key): a hash, so the store never holds other servers' keys.
fn cache_hash(address: &str, key: &str) -> String {
    let digest = Sha256::new().chain_update(address.to_lowercase()).chain_update([0]).chain_update(key).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asks Authentication Servers; one per server, shared by every SMTP session.
pub struct Verifier {
    dns: Arc<Dns>,
    store: Arc<dyn Store>,
    udp_timeout: Duration,
    udp_tries: u32,
    tcp_timeout: Duration,
    cache_secs: u64,
}

impl Verifier {
    pub fn new(config: &config::AuthKey, dns: Arc<Dns>, store: Arc<dyn Store>) -> Verifier {
        Verifier {
            dns,
            store,
            udp_timeout: Duration::from_millis(config.udp_timeout_ms.max(10)),
            udp_tries: config.udp_tries,
            tcp_timeout: Duration::from_secs(config.tcp_timeout_secs.max(1)),
            cache_secs: config.cache_secs.min(MAX_CACHE_SECS),
        }
    }

    /// SPEC 7.5: the result for the From address and the first `X-Auth-Key` it carried.
    pub async fn check(&self, from: &str, key: Option<&str>) -> AuthKeyResult {
        let Some(key) = key.map(str::trim) else { return AuthKeyResult::None };
        // A key that is not 64 of [A-Za-z0-9] is no key any server issued (SPEC 7.1).
        if !is_valid_key(key.as_bytes()) {
            tracing::info!(%from, "X-Auth-Key is malformed; treated as invalid");
            return AuthKeyResult::Fail;
        }
        let now = unix_now();
        let hash = cache_hash(from, key);
        match self.store.verified_key_cached(from, &hash, now).await {
            Ok(true) => return AuthKeyResult::Pass,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the AuthKey cache; asking the server"),
        }
        let Some((_, domain)) = from.rsplit_once('@') else { return AuthKeyResult::None };
        let records = match self.dns.txt(domain).await {
            Ok(records) => records,
            Err(e) if e.is_absent() => return AuthKeyResult::None,
            Err(e) => {
                tracing::info!(%domain, error = %e, "AuthKey: TXT lookup failed");
                return AuthKeyResult::TempError;
            }
        };
        // SPEC 7.5: a From domain without an `AS=` record is `none`.
        let Some((host, port)) = parse_as_record(&records) else { return AuthKeyResult::None };
        let servers = match self.dns.addresses(&host).await {
            Ok(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect::<Vec<_>>(),
            Err(e) => {
                tracing::info!(%host, error = %e, "AuthKey: cannot resolve the Authentication Server");
                return AuthKeyResult::TempError;
            }
        };
        let result = match self.ask(&servers, from, key).await {
            Some((Verdict::Valid, _)) => AuthKeyResult::Pass,
            Some((Verdict::Invalid, _)) => AuthKeyResult::Fail,
            None => AuthKeyResult::TempError,
        };
        if result == AuthKeyResult::Pass && self.cache_secs > 0 {
            let until = now.saturating_add(self.cache_secs as i64);
            if let Err(e) = self.store.cache_verified_key(from, &hash, now, until).await {
                tracing::warn!(error = %e, "cannot write the AuthKey cache");
            }
        }
        result
    }

    /// VERIFY over UDP (each try to the next address), then TCP to each address in turn.
    /// The verdict and who gave it (`udp 192.0.2.7:2884`).
    pub async fn ask(&self, servers: &[SocketAddr], address: &str, key: &str) -> Option<(Verdict, String)> {
        if servers.is_empty() {
            return None;
        }
        let pending = match new_pending(address, key) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%address, error = %e, "cannot make a VERIFY request");
                return None;
            }
        };
        for attempt in 0..self.udp_tries {
            let server = servers[attempt as usize % servers.len()];
            let outcome = verify_udp(&pending, server, self.udp_timeout).await;
            let via = format!("udp {server}");
            self.log(&via, address, &outcome).await;
            if let Ok(verdict) = outcome {
                return Some((verdict, via));
            }
        }
        for &server in servers {
            let outcome = verify_tcp(&pending, server, self.tcp_timeout).await;
            let via = format!("tcp {server}");
            self.log(&via, address, &outcome).await;
            if let Ok(verdict) = outcome {
                return Some((verdict, via));
            }
        }
        None
    }

    /// SPEC 7.5: every VERIFY sent is in the store.
    async fn log(&self, server: &str, address: &str, outcome: &Result<Verdict, Error>) {
        let result = match outcome {
            Ok(verdict) => verdict.as_str().to_string(),
            Err(why) => why.to_string(),
        };
        tracing::info!(%server, %address, %result, "VERIFY sent");
        let entry =
            VerifySentEntry { at: unix_now(), server: server.to_string(), address: address.to_string(), result };
        if let Err(e) = self.store.log_verify_sent(entry).await {
            tracing::warn!(error = %e, "cannot log a VERIFY sent");
        }
    }
}

/// A request with a fresh random seq (SPEC 7.2: chosen by the asking server).
pub fn new_pending(address: &str, key: &str) -> Result<PendingVerify, Error> {
    let mut random = [0u8; RANDOM_SEQ_LEN];
    getrandom::getrandom(&mut random).map_err(|e| Error::system(format!("OS random: {e}")))?;
    PendingVerify::with_random_seq(&random, address, key).map_err(|e| Error::invalid(e.as_str()))
}

/// One UDP try: a datagram out, and the first answer that echoes our seq and address
/// within the timeout. Other datagrams (stale, spoofed) are ignored.
pub async fn verify_udp(pending: &PendingVerify, server: SocketAddr, timeout: Duration) -> Result<Verdict, Error> {
    let bind: SocketAddr =
        if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| Error::system("bind address"))?;
    let socket = UdpSocket::bind(bind).await.map_err(|e| Error::new(ErrorKind::Network, format!("udp bind: {e}")))?;
    // Connected: the kernel drops datagrams from any other source.
    socket.connect(server).await.map_err(|e| Error::new(ErrorKind::Network, format!("udp connect: {e}")))?;
    socket.send(&pending.to_wire()).await.map_err(|e| Error::new(ErrorKind::Network, format!("udp send: {e}")))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(Error::new(ErrorKind::Network, "no answer (timeout)")),
            // ICMP port unreachable arrives as an error on a connected socket.
            Ok(Err(e)) => return Err(Error::new(ErrorKind::Network, format!("udp: {e}"))),
            Ok(Ok(n)) => n,
        };
        match pending.check(&buf[..n]) {
            Ok(verdict) => return Ok(verdict),
            Err(e) => tracing::debug!(%server, error = %e, "VERIFY answer ignored"),
        }
    }
}

/// VERIFY over TCP: one line out, one answer line back (SPEC 7.2).
pub async fn verify_tcp(pending: &PendingVerify, server: SocketAddr, timeout: Duration) -> Result<Verdict, Error> {
    let exchange = async {
        let mut stream = TcpStream::connect(server)
            .await
            .map_err(|e| Error::new(ErrorKind::Network, format!("tcp connect: {e}")))?;
        stream
            .write_all(&pending.to_wire())
            .await
            .map_err(|e| Error::new(ErrorKind::Network, format!("tcp send: {e}")))?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(MAX_ANSWER as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Error::new(ErrorKind::Network, format!("tcp read: {e}")))?;
        if n == 0 {
            return Err(Error::new(ErrorKind::Network, "connection closed without an answer".to_string()));
        }
        if !line.ends_with(b"\n") {
            return Err(Error::new(ErrorKind::Protocol, "answer line too long"));
        }
        pending.check(&line).map_err(|e| Error::new(ErrorKind::Protocol, e.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Network, "no answer (timeout)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hashes_ignore_address_case_only() {
        assert_eq!(cache_hash("A@x.test", "k"), cache_hash("a@x.test", "k"));
        assert_ne!(cache_hash("a@x.test", "k"), cache_hash("a@x.test", "K"));
    }
}
