//! Fetching an account's secrets under the AUTH failure limits (SPEC 3), and counting each
//! outcome: what every listener with AUTH (SMTP, POP3, the Messenger's RCRAM) does the
//! same way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use vouchmail_proto::sasl::Secrets;
use vouchmail_store::Store;

use crate::auth::limits::{client_network, AuthLimiter};
use crate::support::time::unix_now;

/// How long a client network stays familiar to an account after a successful login
/// (SPEC 3: strangers' failures must not lock the owner out).
const FAMILIAR_FOR: i64 = 30 * 24 * 3600;
/// A remembered login is written again at most this often, so that a client logging in
/// every few minutes costs a read, not a durable write, each time.
const REFRESH_LOGIN_AFTER: i64 = 24 * 3600;

/// Unix time for the sessions' AUTH exchanges (the proto state machines read no clock).
pub fn sasl_clock() -> u64 {
    u64::try_from(unix_now()).unwrap_or(0)
}

/// The clock and a seed from the OS random source for a session's AUTH challenges and
/// nonces (the proto state machines read neither). None when the random source fails.
pub fn sasl_fresh() -> Option<vouchmail_proto::sasl::Fresh> {
    let mut seed = [0u8; vouchmail_proto::sasl::SEED_LEN];
    getrandom::getrandom(&mut seed).ok()?;
    Some(vouchmail_proto::sasl::Fresh::new(sasl_clock(), seed))
}

/// How a client network is named in the store's login records: its IPv4 address, or its
/// IPv6 /64.
fn login_client(ip: IpAddr) -> String {
    match client_network(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Why a SASL exchange gets no secrets; both answer 454 4.7.0 / `-ERR [SYS/TEMP]` and
/// neither counts as a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// The client network, or (for a client new to it) the account, hit the failure limit.
    Blocked,
    /// The store could not answer.
    Unavailable,
}

/// One connection's side of the AUTH failure limits (SPEC 3).
#[derive(Debug, Default)]
pub struct AuthGuard {
    /// An account this connection's client network is known to have logged in to.
    familiar_to: Option<String>,
}

impl AuthGuard {
    /// The account's stored secrets for a SASL exchange; `Ok(None)` for an unknown account
    /// (the mechanism then fails as for a wrong password). The per-account limit holds only
    /// for client networks that never logged in to the account within FAMILIAR_FOR.
    pub async fn secrets(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        authcid: &str,
    ) -> Result<Option<Secrets>, AuthRefusal> {
        self.admit(store, limiter, peer, authcid).await?;
        match store.get_account(authcid).await {
            Ok(account) => Ok(account.map(|a| a.secrets)),
            Err(e) => {
                tracing::error!(error = %e, "store error during authentication");
                Err(AuthRefusal::Unavailable)
            }
        }
    }

    /// Whether an attempt for `account` may start: not while the client network is over
    /// its failure limit, nor while the account is over its limit, unless this network has
    /// logged in to it within FAMILIAR_FOR (SPEC 3: strangers cannot lock the owner out).
    /// For SASL here and for RCRAM-MD5 on the verifier (SPEC 8.2); a verifier's
    /// X-RCRAM-VERIFY has [`AuthGuard::admit_verifier`].
    pub async fn admit(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        account: &str,
    ) -> Result<(), AuthRefusal> {
        // This node's counts first; then every node's (SPEC 11), one read.
        let (mut network_over, mut account_over) = (limiter.ip_blocked(peer.ip()), limiter.account_blocked(account));
        if !network_over && !account_over {
            (network_over, account_over) = limiter.shared_blocked(peer.ip(), account).await.unwrap_or_else(|e| {
                // The local counts still hold: a store that is down locks no one out.
                tracing::warn!(error = %e, "cannot read the other nodes' AUTH failures");
                (false, false)
            });
        }
        if network_over {
            tracing::warn!(%peer, %account, "authentication refused: too many recent failures from this network");
            return Err(AuthRefusal::Blocked);
        }
        // One indexed read, and only while the account is over its limit.
        if account_over && !self.is_familiar(store, peer, account).await? {
            tracing::warn!(%peer, %account, "authentication refused: too many recent failures for this account");
            return Err(AuthRefusal::Blocked);
        }
        Ok(())
    }

    /// Whether a verifier's X-RCRAM-VERIFY may start (SPEC 8.2 step 3). A verifier is a
    /// server, not a user: it is never familiar to an account, and is held by its own
    /// budget, `[auth] max_failures_per_verifier` ([`AuthLimiter::verifier_blocked`]),
    /// for every address alike; and, as any caller, not while its network is over the
    /// client limit. The account's own limit does not stop it: the verifier speaks for
    /// the account's owner too, whom strangers' guesses must not lock out (SPEC 3); their
    /// guesses are stopped at the verifier by its client and address limits, and a
    /// verifier that relays them anyway spends its own budget.
    pub fn admit_verifier(&self, limiter: &AuthLimiter, peer: SocketAddr, account: &str) -> Result<(), AuthRefusal> {
        if limiter.ip_blocked(peer.ip()) {
            tracing::warn!(%peer, %account, "X-RCRAM-VERIFY refused: too many recent failures from this network");
            return Err(AuthRefusal::Blocked);
        }
        if limiter.verifier_blocked(peer.ip()) {
            tracing::warn!(%peer, %account, "X-RCRAM-VERIFY refused: this verifier relayed too many recent failures");
            return Err(AuthRefusal::Blocked);
        }
        Ok(())
    }

    async fn is_familiar(&mut self, store: &dyn Store, peer: SocketAddr, account: &str) -> Result<bool, AuthRefusal> {
        if self.familiar_to.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(account)) {
            return Ok(true);
        }
        let last = store.last_login_from(account, &login_client(peer.ip())).await.map_err(|e| {
            tracing::error!(error = %e, "store error reading the login record");
            AuthRefusal::Unavailable
        })?;
        let familiar = last.is_some_and(|t| t >= unix_now() - FAMILIAR_FOR);
        if familiar {
            self.familiar_to = Some(account.to_string());
        }
        Ok(familiar)
    }

    /// An exchange ended: a success is remembered for the client network, a failure is
    /// counted. Returns how long to wait before the failure reply. `via_verifier`: an
    /// X-RCRAM-VERIFY exchange (SPEC 8.2 step 3): its success makes no one familiar (a
    /// verifier is not a user), its failure counts for the account and against the
    /// verifier ([`AuthLimiter::record_relayed_failure`]).
    pub async fn finished(
        &mut self,
        store: &dyn Store,
        limiter: &AuthLimiter,
        peer: SocketAddr,
        authcid: Option<&str>,
        success: bool,
        via_verifier: bool,
    ) -> Duration {
        match authcid {
            // SPEC 8.2 step 3: a verifier never becomes familiar to an account.
            _ if success && via_verifier => Duration::ZERO,
            Some(account) if success => {
                self.remember_login(store, peer, account).await;
                self.familiar_to = Some(account.to_string());
                Duration::ZERO
            }
            _ if success => Duration::ZERO,
            Some(account) if via_verifier => limiter.record_relayed_failure(peer.ip(), account),
            _ => {
                let familiar =
                    authcid.is_some_and(|a| self.familiar_to.as_deref().is_some_and(|f| f.eq_ignore_ascii_case(a)));
                limiter.record_failure(peer.ip(), authcid, familiar)
            }
        }
    }

    /// Awaited, so the login is on record before the session goes on: a failure here only
    /// costs the client its familiarity, never the login.
    async fn remember_login(&self, store: &dyn Store, peer: SocketAddr, account: &str) {
        let client = login_client(peer.ip());
        let now = unix_now();
        let last = match store.last_login_from(account, &client).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the login record");
                None
            }
        };
        if last.is_some_and(|t| t > now - REFRESH_LOGIN_AFTER) {
            return;
        }
        if let Err(e) = store.remember_login(account, &client, now, now - FAMILIAR_FOR).await {
            tracing::warn!(error = %e, %account, %client, "cannot record the login");
        }
    }
}
