//! Remote authentication, RCRAM-MD5 (SPEC 8.2), the server's side of both roles.
//!
//! As the *verifier* (a client logs in with an address of another domain): the address
//! domain's home server is found by discovery and called with
//! `AUTH X-RCRAM-VERIFY <address> <our messenger hostname>` from the bound source address
//! (the federation client); its `334` and then the client's answer line are relayed
//! unchanged, and its verdict becomes ours. One connection per exchange, held in the
//! session's [`RcramLink`]; it is never put back in the pool (it is inside an AUTH). At
//! most [`MAX_EXCHANGES_PER_CLIENT`] unfinished exchanges per client network and
//! [`MAX_EXCHANGES_PER_HOME`] per home domain (SPEC 8.2 step 7, `454 4.7.0` beyond); the
//! session gives the client `[messenger] rcram_answer_timeout_secs` to answer, then closes,
//! dropping the link. In the legacy mode the client's answer is relayed only when it names
//! the address claimed (step 6).
//!
//! As the *home server*: the caller must present a TLS client certificate that verifies
//! against the federation's roots for the verifier name it gave, or else connect from an
//! address of that name (forward DNS); `535 5.7.0` otherwise. The address a local account with a CRAM-MD5 secret
//! (`535 5.7.8`); then a challenge bound to the verifier is issued from the one-shot
//! registry (random from the OS source, unixtime, accepted once), and the answer is
//! checked against the account's secret (`235 2.7.0` verification only, or `535 5.7.8`).
//! A verifier has at most 32 challenges outstanding (the registry's cap); a cancel frees
//! its challenge (and counts as a failure, by the driver), and so does the end of the
//! verifier's connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use vouchmail_proto::messenger::rcram::{self, ChallengeRegistry, RegistryError, MAX_OUTSTANDING_PER_VERIFIER};
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::RcramVerdict;

use super::{now, Exchanges, Messenger};
use crate::auth::limits::{client_network, AuthLimiter};
use crate::net::federation::{PeerConnection, SMALL_REPLY};
use crate::rules::lease::HeldLease;

/// Random octets of a challenge (SPEC 8.2: at least 64 bits).
const CHALLENGE_RANDOM: usize = 16;

/// SPEC 8.2 step 7: unfinished RCRAM-MD5 exchanges one client network may hold at the
/// verifier.
pub const MAX_EXCHANGES_PER_CLIENT: usize = 2;
/// SPEC 8.2 step 7: unfinished RCRAM-MD5 exchanges with one home domain, from all
/// clients: fewer than a home server's connections per IP (20 by default), so that CERT,
/// NOTIFY and the pulls still get through to it.
pub const MAX_EXCHANGES_PER_HOME: usize = 16;

/// Who called X-RCRAM-VERIFY: the connection's address and the certificate chain it
/// presented in TLS (empty when none).
pub struct Caller<'a> {
    pub ip: SocketAddr,
    pub chain: &'a [rustls::pki_types::CertificateDer<'static>],
}

/// One unfinished exchange's place in [`Exchanges`], given back when dropped.
struct ExchangeSlot {
    exchanges: Arc<Mutex<Exchanges>>,
    client: IpAddr,
    home: String,
}

impl ExchangeSlot {
    /// A place for an exchange of `client` with `home`'s home server, if both are under
    /// their caps (SPEC 8.2 step 7).
    fn hold(exchanges: &Arc<Mutex<Exchanges>>, client: IpAddr, home: &str) -> Option<ExchangeSlot> {
        let client = client_network(client);
        let mut held = exchanges.lock().unwrap_or_else(|p| p.into_inner());
        let by_client = held.by_client.get(&client).copied().unwrap_or(0);
        let by_home = held.by_home.get(home).copied().unwrap_or(0);
        if by_client >= MAX_EXCHANGES_PER_CLIENT || by_home >= MAX_EXCHANGES_PER_HOME {
            return None;
        }
        *held.by_client.entry(client).or_insert(0) += 1;
        *held.by_home.entry(home.to_string()).or_insert(0) += 1;
        Some(ExchangeSlot { exchanges: Arc::clone(exchanges), client, home: home.to_string() })
    }
}

impl Drop for ExchangeSlot {
    fn drop(&mut self) {
        let mut held = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        let Exchanges { by_client, by_home } = &mut *held;
        release(by_client, &self.client);
        release(by_home, &self.home);
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// A challenge this home server issued on a connection and has not seen answered: given
/// back to the registry when dropped (the verifier's connection ended), so that it frees
/// its verifier's slot (SPEC 8.2 step 3) and can never be answered.
struct IssuedChallenge {
    registry: Arc<Mutex<ChallengeRegistry>>,
    challenge: String,
    /// Its place among the verifier's outstanding challenges on every node (SPEC 11),
    /// released with it.
    _lease: Option<HeldLease>,
}

impl Drop for IssuedChallenge {
    fn drop(&mut self) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).forget(&self.challenge);
    }
}

/// Who holds a challenge's lease: the lease's name is unique (it holds the challenge).
const LEASE_HOLDER: &str = "x-rcram-verify";

/// The lease names of a verifier's outstanding challenges start with this.
fn verifier_leases(verifier: &str) -> String {
    format!("rcram:{}:", verifier.to_ascii_lowercase())
}

/// One session's RCRAM state: as verifier, the exchange with a home server while the
/// client answers; as home server, the challenge issued to the verifier.
#[derive(Default)]
pub struct RcramLink {
    connection: Option<PeerConnection>,
    /// The exchange is the legacy CRAM-MD5 proxy (`[messenger] legacy_rcram`).
    legacy: bool,
    /// The exchange's place under the caps of SPEC 8.2 step 7, while it is unfinished.
    slot: Option<ExchangeSlot>,
    /// Home server: the challenge issued on this connection, while unanswered.
    issued: Option<IssuedChallenge>,
}

impl RcramLink {
    /// Drops the exchange (the client cancelled or timed out, or the session ends): the
    /// connection is closed, not sent QUIT or `*`, which the home server would count as a
    /// failed answer against us (SPEC 8.2 step 3); it frees the challenge when the
    /// connection ends. Frees the exchange's place (step 7).
    pub fn cancel(&mut self) {
        self.connection = None;
        self.slot = None;
    }

    /// Unfinished exchanges this link holds a place for (0 or 1).
    pub fn holds_exchange(&self) -> bool {
        self.slot.is_some()
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
        // SPEC 8.2 step 7: a place under the caps first, before any connection is made.
        let Some(slot) = ExchangeSlot::hold(&self.exchanges, peer.ip(), &domain) else {
            tracing::warn!(%peer, %address, "RCRAM-MD5 refused: too many unfinished exchanges for this client or domain");
            return RcramVerdict::Unavailable(Reply::rcram_busy(&domain));
        };
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
                link.slot = Some(slot);
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
        // The exchange ends here, whatever the verdict: its place is given back.
        let _slot = link.slot.take();
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
        link: &mut RcramLink,
        address: &str,
        verifier: &str,
        caller: Caller<'_>,
        limiter: &AuthLimiter,
    ) -> RcramVerdict {
        link.issued = None;
        let peer = caller.ip;
        // SPEC 8.2 step 3 (revised): a client certificate that verifies against the
        // federation's roots and names the verifier is who it is, wherever it connects
        // from (NAT, renumbering); else the connecting IP must be an address of its name.
        if self.client.vouches_for(caller.chain, verifier) {
            tracing::debug!(%peer, %verifier, "X-RCRAM-VERIFY: the verifier's client certificate names it");
        } else if let Some(refused) = self.check_forward_dns(verifier, address, peer, limiter).await {
            return refused;
        }
        match self.cram_secret(address).await {
            Ok(Some(_)) => {}
            Ok(None) => return RcramVerdict::Refused(Reply::rcram_bad_credentials()),
            Err(reply) => return RcramVerdict::Unavailable(reply),
        }
        // SPEC 8.2 step 3: at most 32 outstanding per verifier, on every node (SPEC 11).
        let prefix = verifier_leases(verifier);
        match self.store.count_leases(&prefix, now()).await {
            Ok(n) if n >= MAX_OUTSTANDING_PER_VERIFIER as u64 => {
                tracing::warn!(%peer, %verifier, outstanding = n, "X-RCRAM-VERIFY: the verifier has too many challenges outstanding");
                return RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address)));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot count the verifier's challenges on other nodes"),
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
                let challenge = challenge.text();
                let name = format!("{prefix}{challenge}");
                let now = now();
                let lease = match self.store.try_lease(&name, LEASE_HOLDER, now, now + rcram::MAX_AGE_SECS).await {
                    Ok(_) => Some(HeldLease::new(Arc::clone(&self.store), name, LEASE_HOLDER.to_string())),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record the challenge for the other nodes");
                        None
                    }
                };
                link.issued = Some(IssuedChallenge {
                    registry: Arc::clone(&self.registry),
                    challenge: challenge.clone(),
                    _lease: lease,
                });
                RcramVerdict::Issued { challenge }
            }
            Err(
                e @ (RegistryError::Full
                | RegistryError::VerifierFull
                | RegistryError::Duplicate
                | RegistryError::Challenge(_)),
            ) => {
                tracing::warn!(%peer, %address, error = %e, "X-RCRAM-VERIFY: no challenge issued");
                RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address)))
            }
        }
    }

    /// SPEC 8.2 step 3: the connecting IP must be an address of the verifier's name. The
    /// refusal, if it is not.
    async fn check_forward_dns(
        &self,
        verifier: &str,
        address: &str,
        peer: SocketAddr,
        limiter: &AuthLimiter,
    ) -> Option<RcramVerdict> {
        let addresses = match self.client.dns().addresses(verifier).await {
            Ok(addresses) => addresses,
            Err(e) if e.is_absent() => Vec::new(),
            // A DNS failure is no verdict on the caller: 454, not a counted failure.
            Err(e) => {
                tracing::warn!(%peer, %verifier, error = %e, "X-RCRAM-VERIFY: cannot resolve the verifier name now");
                return Some(RcramVerdict::Unavailable(Reply::rcram_home_unavailable(domain_of(address))));
            }
        };
        if addresses.contains(&peer.ip()) {
            return None;
        }
        tracing::warn!(%peer, %address, %verifier, "X-RCRAM-VERIFY: the caller is neither named by a verified client certificate nor an address of the verifier name");
        // Not the verifier it claims to be, so no stand-in for anyone's clients: its own
        // network counts the failure too (the session counts the address).
        limiter.record_failure(peer.ip(), None, false);
        Some(RcramVerdict::Refused(Reply::rcram_verifier_refused(verifier)))
    }

    /// Home server, step 5: the answer to the challenge issued on this connection, once.
    pub async fn verify_answer(
        &self,
        link: &mut RcramLink,
        address: &str,
        challenge: &str,
        response: &[u8],
        peer: SocketAddr,
    ) -> RcramVerdict {
        let issued = self.registry.lock().unwrap_or_else(|p| p.into_inner()).take(challenge, now());
        // Taken (or gone): nothing left to give back when the connection ends.
        link.issued = None;
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

    /// Home server, SPEC 8.2 step 3: the verifier cancelled the exchange (`*`) or sent no
    /// answer; the challenge is freed. The driver counts the failure, for the address and
    /// against the verifier.
    pub fn verify_cancel(&self, link: &mut RcramLink, address: &str, challenge: &str, peer: SocketAddr) {
        link.issued = None;
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).forget(challenge);
        tracing::info!(%peer, %address, "X-RCRAM-VERIFY cancelled by the verifier");
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
