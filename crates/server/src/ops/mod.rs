//! The admin operations (SPEC 12): what `vouchmail domain|user|alias|queue|mailbox|
//! tracking|authkey|dkim|directory` and the JSON API under `/api/v1/` both do, so that the
//! two never disagree (issue 24 item 4). Each takes the store (and the few settings it
//! needs), checks its input, and returns typed results whose JSON form is the one object
//! shape the CLI's `--json` listings print and the API sends; failures are an [`OpError`]
//! that says whether the input was bad, the thing unknown, or the change in conflict.

pub mod aliases;
pub mod authkeys;
pub mod directory;
pub mod dkim;
pub mod domains;
pub mod mailboxes;
pub mod queue;
pub mod tracking;
pub mod users;

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use vouchmail_proto::sasl::SecretsPolicy;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::time::rfc3339;
use vouchmail_store::{AuthKeySettings, Store, StoreError};

use crate::config::Config;
use crate::support::error::{Error, ErrorKind};

/// Why an operation failed. The text is one line for the CLI's standard error and the
/// API's `{"error": ...}`; the variant is the HTTP status (400, 404, 409, 503, 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The request itself is wrong: a bad address, an unknown policy action.
    Invalid(String),
    /// The address, domain, queue id ... named does not exist.
    NotFound(String),
    /// It exists already, or something still depends on it.
    Conflict(String),
    /// The store cannot answer now; trying again later may work.
    Unavailable(String),
    /// Anything else (the OS random source, a task that died).
    Failed(String),
}

impl OpError {
    pub fn message(&self) -> &str {
        match self {
            OpError::Invalid(m)
            | OpError::NotFound(m)
            | OpError::Conflict(m)
            | OpError::Unavailable(m)
            | OpError::Failed(m) => m,
        }
    }

    pub fn invalid(message: impl Into<String>) -> OpError {
        OpError::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> OpError {
        OpError::NotFound(message.into())
    }

    /// Turns a refusal into a conflict: for rules whose only refusal, once the thing is
    /// known to exist, is that something still depends on it.
    fn invalid_as_conflict(self) -> OpError {
        match self {
            OpError::Invalid(m) => OpError::Conflict(m),
            other => other,
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for OpError {}

/// The one place a store failure becomes an operation's (and so an HTTP status): its text
/// as the store says it, which the CLI has always printed.
impl From<StoreError> for OpError {
    fn from(error: StoreError) -> OpError {
        let message = error.to_string();
        match error {
            StoreError::NotFound(_) => OpError::NotFound(message),
            StoreError::Conflict(_) => OpError::Conflict(message),
            StoreError::Invalid(_) => OpError::Invalid(message),
            StoreError::Unavailable(_) => OpError::Unavailable(message),
        }
    }
}

/// The rules' errors (`rules::accounts`, `rules::dkim`, ...) by their kind.
impl From<Error> for OpError {
    fn from(error: Error) -> OpError {
        let message = error.to_string();
        match error.kind() {
            ErrorKind::NotFound => OpError::NotFound(message),
            ErrorKind::Invalid | ErrorKind::Config => OpError::Invalid(message),
            ErrorKind::Store if error.is_temporary() => OpError::Unavailable(message),
            ErrorKind::Store => OpError::Invalid(message),
            _ => OpError::Failed(message),
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// What of the configuration the operations need; the server's admin listener keeps one,
/// the CLI makes one from the config it loaded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host our mail leaves from (SPF in the records to publish).
    pub hostname: String,
    /// `AS=`'s host[:port] when this server is an Authentication Server (SPEC 7.3).
    pub authentication_server: Option<String>,
    /// AGI and AVT where neither the address nor its domain sets them (SPEC 7.1).
    pub default_authkey: AuthKeySettings,
    /// How a new password's secrets are made.
    pub secrets_policy: SecretsPolicy,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        // SPEC 7.3: the port may be left out when it is 2884.
        let authentication_server = match config.listeners.authkey.first() {
            Some(addr) if config.authkey.server && addr.port() == 2884 => Some(config.hostname.clone()),
            Some(addr) if config.authkey.server => Some(format!("{}:{}", config.hostname, addr.port())),
            _ => None,
        };
        Settings {
            hostname: config.hostname.clone(),
            authentication_server,
            default_authkey: AuthKeySettings {
                agi_secs: config.authkey.default_agi_secs,
                avt_secs: config.authkey.default_avt_secs,
            },
            secrets_policy: config.auth.secrets_policy(),
        }
    }
}

/// An address, its domain in the stored form (A-labels) so `bücher.example` and
/// `xn--bcher-kva.example` name the same accounts.
pub fn parse_address(text: &str) -> OpResult<Address> {
    let address =
        Address::parse(text).map_err(|e| OpError::invalid(format!("'{text}' is not a valid address: {e}")))?;
    match crate::rules::accounts::ascii_domain(address.domain()) {
        Some(ascii) => {
            Address::from_parts(address.local(), &ascii).map_err(|e| OpError::invalid(format!("'{text}': {e}")))
        }
        None => Ok(address),
    }
}

/// A domain name as stored (A-labels); names an existing domain, so unusual forms pass.
pub fn parse_domain(text: &str) -> OpResult<String> {
    Ok(crate::rules::accounts::normalize_domain(text, true)?)
}

/// `NAME (U-LABELS)` for an internationalized name, else NAME.
pub fn domain_text(ascii: &str) -> String {
    match crate::rules::accounts::unicode_name(ascii) {
        Some(unicode) => format!("{ascii} ({unicode})"),
        None => ascii.to_string(),
    }
}

/// A result row as its JSON object: the one shape the CLI's `--json` prints and the API
/// sends. Rows are plain structs of strings and numbers, which always serialize.
pub fn to_object<T: serde::Serialize>(row: &T) -> serde_json::Value {
    serde_json::to_value(row).unwrap_or(serde_json::Value::Null)
}

/// A Unix time as the listings show it (RFC 3339, UTC).
pub fn time_text(unix: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

pub fn unix_now() -> i64 {
    vouchmail_proto::time::unix_seconds(std::time::SystemTime::now())
}

/// `text` as the address of an existing account.
pub async fn local_account(store: &dyn Store, text: &str) -> OpResult<String> {
    let address = parse_address(text)?.to_string();
    match store.get_account(&address).await? {
        Some(account) => Ok(account.address),
        None => Err(OpError::not_found(format!("no user {address}"))),
    }
}

/// `text` as a local domain's stored name.
pub async fn local_domain(store: &dyn Store, text: &str) -> OpResult<String> {
    let name = parse_domain(text)?;
    match store.get_domain(&name).await? {
        Some(domain) => Ok(domain.name),
        None => Err(OpError::not_found(format!("no local domain {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_keep_their_words_and_get_their_kind() {
        assert_eq!(
            OpError::from(StoreError::NotFound("user a@b".into())),
            OpError::NotFound("user a@b not found".into())
        );
        assert!(matches!(OpError::from(StoreError::Conflict("exists already".into())), OpError::Conflict(_)));
        assert!(matches!(OpError::from(StoreError::Unavailable("locked".into())), OpError::Unavailable(_)));
        assert!(matches!(OpError::from(Error::invalid("bad")), OpError::Invalid(_)));
        assert!(matches!(OpError::from(Error::not_found("gone")), OpError::NotFound(_)));
    }
}
