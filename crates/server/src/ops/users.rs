//! Accounts (SPEC 3): list, add, remove, password, quota.

use serde::{Deserialize, Serialize};
use vouchmail_proto::sasl::{Secrets, SecretsPolicy};
use vouchmail_store::{Account, NewAccount, Store};

use super::{parse_address, OpError, OpResult};
use crate::rules::accounts::{self, References};

/// An account as `user list --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub address: String,
    pub messages: u64,
    pub used_bytes: u64,
    /// None: no quota (stored as 0).
    pub quota_bytes: Option<u64>,
}

impl From<&Account> for UserInfo {
    fn from(a: &Account) -> UserInfo {
        UserInfo {
            address: a.address.clone(),
            messages: a.message_count,
            used_bytes: a.used_bytes,
            quota_bytes: (a.quota_bytes > 0).then_some(a.quota_bytes),
        }
    }
}

pub async fn list(store: &dyn Store) -> OpResult<Vec<UserInfo>> {
    Ok(store.list_accounts().await?.iter().map(UserInfo::from).collect())
}

pub async fn get(store: &dyn Store, address: &str) -> OpResult<UserInfo> {
    let address = parse_address(address)?.to_string();
    let account = store.get_account(&address).await?;
    account.as_ref().map(UserInfo::from).ok_or_else(|| OpError::not_found(format!("user {address} not found")))
}

/// `user add` and `POST /api/v1/users`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub address: String,
    /// None: one is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
    /// 0: no quota.
    #[serde(default)]
    pub quota_bytes: u64,
}

/// An account made, and the password made for it when none was given (shown only now:
/// only its hashes are stored).
#[derive(Debug, Clone, Serialize)]
pub struct AddedUser {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

pub async fn add(store: &dyn Store, policy: &SecretsPolicy, new: NewUser) -> OpResult<AddedUser> {
    let address = parse_address(&new.address)?.to_string().to_lowercase();
    let (password, generated) = password_or_new(new.password)?;
    let secrets = secrets_for(&password, policy)?;
    store.add_account(NewAccount { address: address.clone(), secrets, quota_bytes: new.quota_bytes }).await?;
    Ok(AddedUser { address, password: generated.then_some(password) })
}

/// Removes the account; with `force` also what points at it, else 409 naming it.
pub async fn remove(store: &dyn Store, address: &str, force: bool) -> OpResult<(String, References)> {
    let address = parse_address(address)?.to_string();
    if store.get_account(&address).await?.is_none() {
        return Err(OpError::not_found(format!("user {address} not found")));
    }
    let refs =
        accounts::remove_account(store, &address, force).await.map_err(|e| OpError::from(e).invalid_as_conflict())?;
    Ok((address, refs))
}

/// A new password (and so every stored secret kind); None: one is generated and returned.
pub async fn set_password(
    store: &dyn Store,
    policy: &SecretsPolicy,
    address: &str,
    password: Option<String>,
) -> OpResult<AddedUser> {
    let address = parse_address(address)?.to_string();
    if store.get_account(&address).await?.is_none() {
        return Err(OpError::not_found(format!("user {address} not found")));
    }
    let (password, generated) = password_or_new(password)?;
    store.set_secrets(&address, secrets_for(&password, policy)?).await?;
    Ok(AddedUser { address, password: generated.then_some(password) })
}

/// The mailbox quota in bytes; 0: none.
pub async fn set_quota(store: &dyn Store, address: &str, bytes: u64) -> OpResult<String> {
    let address = parse_address(address)?.to_string();
    store.set_quota(&address, bytes).await?;
    Ok(address)
}

fn password_or_new(password: Option<String>) -> OpResult<(String, bool)> {
    match password {
        Some(p) if p.is_empty() => Err(OpError::invalid("the password is empty")),
        // A line break would make a password no client can type in one line (SASL PLAIN).
        Some(p) if p.chars().any(char::is_control) => Err(OpError::invalid("the password has control characters")),
        Some(p) => Ok((p, false)),
        None => Ok((crate::rules::bootstrap::generate_password(20)?, true)),
    }
}

fn secrets_for(password: &str, policy: &SecretsPolicy) -> OpResult<Secrets> {
    let mut salts = [0u8; vouchmail_proto::sasl::SALTS_LEN];
    getrandom::getrandom(&mut salts).map_err(|e| OpError::Failed(format!("random source: {e}")))?;
    Secrets::from_password_with(password, policy, &salts).map_err(|e| OpError::invalid(e.to_string()))
}
