//! Remote authentication, RCRAM-MD5 (SPEC 8.2), the server's side of both roles.
//!
//! As the *verifier* (a client logs in with an address of another domain): the address
//! domain's home server is found by discovery and called with
//! `AUTH X-RCRAM-VERIFY <address> <our messenger hostname>` from the bound source address
//! (the federation client); its `334` and then the client's answer line are relayed
//! unchanged, and its verdict becomes ours. One connection per exchange, held in the
//! session's [`RcramLink`]; it is never put back in the pool (it is inside an AUTH).
//!
//! As the *home server*: the caller's IP must be an address of the verifier name it gave
//! (forward DNS, `535 5.7.0`), the address a local account with a CRAM-MD5 secret
//! (`535 5.7.8`); then a challenge bound to the verifier is issued from the one-shot
//! registry (random from the OS source, unixtime, accepted once), and the answer is
//! checked against the account's secret (`235 2.7.0` verification only, or `535 5.7.8`).

use std::net::SocketAddr;

use vouchmail_proto::messenger::rcram::{self, RegistryError};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::RcramVerdict;

use super::{now, Messenger};
use crate::auth::limits::AuthLimiter;
use crate::net::federation::{PeerConnection, SMALL_REPLY};

/// Random octets of a challenge (SPEC 8.2: at least 64 bits).
const CHALLENGE_RANDOM: usize = 16;

/// One session's exchange with a home server, while the client answers (verifier side).
#[derive(Default)]
pub struct RcramLink {
    connection: Option<PeerConnection>,
    /// The exchange is the legacy CRAM-MD5 proxy (`[messenger] legacy_rcram`).
    legacy: bool,
}

impl RcramLink {
    /// Drops the exchange (the client cancelled, or the session ends).
    pub fn cancel(&mut self) {
        if let Some(connection) = self.connection.take() {
            tokio::spawn(connection.quit());
        }
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Messenger {
    /// Verifier, steps 2 to 4: ask the home server for a challenge bound to us.
    pub async fn rcram_start(&self, link: &mut RcramLink, address: &str, peer: SocketAddr) -> RcramVerdict {
        link.cancel();
        let domain = domain_of(address).to_ascii_lowercase();
        let unavailable = || RcramVerdict::Unavailable(Reply::rcram_home_unavailable(&domain));
        let mut connection = match self.client.connect(&domain).await {
            Ok(connection) => connection,
            Err(e) => {
                tracing::warn!(%peer, %address, error = %e, "RCRAM-MD5: home server unreachable");
                return unavailable();
            }
        };
        let legacy = !connection.capabilities().offers_auth(rcram::VERIFY_MECHANISM);
        let line = if !legacy {
            format!("AUTH {} {address} {}", rcram::VERIFY_MECHANISM, self.hostname)
        } else if self.legacy_rcram && connection.capabilities().offers_auth("CRAM-MD5") {
            // Opt-in legacy mode (SPEC 8.2 step 6): the plain CRAM-MD5 exchange, proxied.
            "AUTH CRAM-MD5".to_string()
        } else {
            tracing::warn!(%peer, %address, host = %connection.host(), "RCRAM-MD5: the home server lacks X-RCRAM-VERIFY");
            tokio::spawn(connection.quit());
            return unavailable();
        };
        match connection.command(&line, SMALL_REPLY).await {
            Ok(reply) if reply.code == 334 && reply.lines.len() == 1 => {
                link.connection = Some(connection);
                link.legacy = legacy;
                RcramVerdict::Relayed334 { wire: reply.wire }
            }
            Ok(reply) if reply.code == 535 && reply.last_line().starts_with("5.7.8") => {
                tokio::spawn(connection.quit());
                RcramVerdict::Refused(Reply::rcram_bad_credentials())
            }
            Ok(reply) => {
                // 535 5.7.0 means the home server does not take our address for our name:
                // our configuration, not the client's credentials.
                tracing::warn!(%peer, %address, code = reply.code, text = %reply.last_line(), "RCRAM-MD5: the home server refused to issue a challenge");
                tokio::spawn(connection.quit());
                unavailable()
            }
            Err(e) => {
                tracing::warn!(%peer, %address, error = %e, "RCRAM-MD5: home server failed");
                unavailable()
            }
        }
    }

    /// Verifier, steps 5 and 6: relay the client's answer line, give its verdict.
    pub async fn rcram_answer(
        &self,
        link: &mut RcramLink,
        address: &str,
        line: &str,
        peer: SocketAddr,
    ) -> RcramVerdict {
        let domain = domain_of(address).to_ascii_lowercase();
        let Some(mut connection) = link.connection.take() else {
            return RcramVerdict::Unavailable(Reply::rcram_home_unavailable(&domain));
        };
        // SPEC 8.2 step 6, legacy mode: plain CRAM-MD5 logs in whichever user the answer
        // names, so the answer is relayed only when it names exactly the address of step 1
        // (else mallory's own answer to `AUTH RCRAM-MD5 ceo@h` would make her ceo@h here).
        if link.legacy && !rcram::answer_is_for(line.as_bytes(), address) {
            tracing::warn!(%peer, %address, "RCRAM-MD5 (legacy): the answer names another user; not relayed");
            // Dropped, not QUIT: inside the exchange the home server would read QUIT as an
            // answer.
            drop(connection);
            return RcramVerdict::Refused(Reply::rcram_bad_credentials());
        }
        let verdict = match connection.command(line, SMALL_REPLY).await {
            Ok(reply) if reply.code == 235 => RcramVerdict::Success,
            Ok(reply) if reply.code == 535 => RcramVerdict::Refused(Reply::rcram_bad_credentials()),
            Ok(reply) => {
                tracing::warn!(%peer, %address, code = reply.code, text = %reply.last_line(), "RCRAM-MD5: unexpected home server verdict");
                RcramVerdict::Unavailable(Reply::rcram_home_unavailable(&domain))
            }
            Err(e) => {
                tracing::warn!(%peer, %address, error = %e, "RCRAM-MD5: home server failed");
                RcramVerdict::Unavailable(Reply::rcram_home_unavailable(&domain))
            }
        };
        tracing::info!(%peer, %address, legacy = link.legacy, success = matches!(verdict, RcramVerdict::Success), "RCRAM-MD5");
        tokio::spawn(connection.quit());
        verdict
    }

    /// Home server, step 3: check the caller and the address, issue the bound challenge.
    /// The driver has applied the AUTH limits (the verifier being the client).
    pub async fn verify_start(
        &self,
        address: &str,
        verifier: &str,
        peer: SocketAddr,
        limiter: &AuthLimiter,
    ) -> RcramVerdict {
        // SPEC 8.2 step 3: the connecting IP must be an address of the verifier's name.
        let addresses = match self.client.dns().addresses(verifier).await {
            Ok(addresses) => addresses,
            Err(e) if e.is_absent() => Vec::new(),
            // A DNS failure is no verdict on the caller: 454, not a counted failure.
            Err(e) => {
                tracing::warn!(%peer, %verifier, error = %e, "X-RCRAM-VERIFY: cannot resolve the verifier name now");
                return RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address)));
            }
        };
        if !addresses.contains(&peer.ip()) {
            tracing::warn!(%peer, %address, %verifier, "X-RCRAM-VERIFY: the caller is not an address of the verifier name");
            // Not the verifier it claims to be, so no stand-in for anyone's clients: its
            // own network counts the failure too (the session counts the address).
            limiter.record_failure(peer.ip(), None, false);
            return RcramVerdict::Refused(Reply::rcram_verifier_refused(verifier));
        }
        match self.cram_secret(address).await {
            Ok(Some(_)) => {}
            Ok(None) => return RcramVerdict::Refused(Reply::rcram_bad_credentials()),
            Err(reply) => return RcramVerdict::Unavailable(reply),
        }
        let mut random = [0u8; CHALLENGE_RANDOM];
        if getrandom::getrandom(&mut random).is_err() {
            tracing::error!("X-RCRAM-VERIFY: no OS random source");
            return RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address)));
        }
        let issued = self.registry.lock().unwrap_or_else(|p| p.into_inner()).issue(
            &random,
            now(),
            verifier,
            &self.hostname,
            address,
        );
        match issued {
            Ok(challenge) => {
                tracing::info!(%peer, %address, %verifier, "X-RCRAM-VERIFY challenge issued");
                RcramVerdict::Issued { challenge: challenge.text() }
            }
            Err(e @ (RegistryError::Full | RegistryError::Duplicate | RegistryError::Challenge(_))) => {
                tracing::warn!(%peer, %address, error = %e, "X-RCRAM-VERIFY: no challenge issued");
                RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address)))
            }
        }
    }

    /// Home server, step 5: the answer to the challenge issued on this connection, once.
    pub async fn verify_answer(
        &self,
        address: &str,
        challenge: &str,
        response: &[u8],
        peer: SocketAddr,
    ) -> RcramVerdict {
        let issued = self.registry.lock().unwrap_or_else(|p| p.into_inner()).take(challenge, now());
        let Some(issued) = issued else {
            tracing::warn!(%peer, %address, "X-RCRAM-VERIFY: the challenge was answered before, or expired");
            return RcramVerdict::Refused(Reply::rcram_bad_credentials());
        };
        let secret = match self.cram_secret(address).await {
            Ok(secret) => secret,
            Err(reply) => return RcramVerdict::Unavailable(reply),
        };
        if rcram::verify_answer(&issued, challenge, response, secret.as_ref()) {
            tracing::info!(%peer, %address, verifier = %issued.verifier, "X-RCRAM-VERIFY: answer verified");
            RcramVerdict::Success
        } else {
            RcramVerdict::Refused(Reply::rcram_bad_credentials())
        }
    }

    async fn cram_secret(&self, address: &str) -> Result<Option<vouchmail_proto::sasl::CramMd5Secret>, Reply> {
        match self.store.get_account(address).await {
            Ok(account) => Ok(account.and_then(|a| a.secrets.cram_md5)),
            Err(e) => {
                tracing::error!(error = %e, "store error during X-RCRAM-VERIFY");
                Err(Reply::rcram_home_unavailable(domain_of(address)))
            }
        }
    }
}
