//! Local domains (SPEC 2, 13): list, add, show, sender policy, the DNS records to
//! publish, remove.

use serde::{Deserialize, Serialize};
use vouchmail_store::{Domain, SenderPolicy, Store};

use super::{local_domain, parse_address, parse_domain, OpError, OpResult, Settings};
use crate::rules::accounts;
use crate::rules::dkim::DnsRecord;

/// A domain as `domain list --json` prints it and the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainInfo {
    /// The stored name (A-labels).
    pub domain: String,
    /// The name in U-labels, for an internationalized one.
    pub unicode: Option<String>,
    /// Both cases in one word, or `unauthenticated=A,forged=B`.
    pub policy: String,
    pub unauthenticated: String,
    pub forged: String,
    pub dmarc_counts: bool,
    pub catch_all: Option<String>,
    pub held_for: Vec<String>,
    pub etrn_host: Option<String>,
}

impl From<&Domain> for DomainInfo {
    fn from(d: &Domain) -> DomainInfo {
        DomainInfo {
            domain: d.name.clone(),
            unicode: accounts::unicode_name(&d.name),
            policy: d.policy.to_string(),
            unauthenticated: d.policy.unauthenticated.to_string(),
            forged: d.policy.forged.to_string(),
            dmarc_counts: d.policy.dmarc_counts,
            catch_all: d.catch_all.clone(),
            held_for: d.held_for.clone(),
            etrn_host: d.etrn_host.clone(),
        }
    }
}

pub async fn list(store: &dyn Store) -> OpResult<Vec<Domain>> {
    Ok(store.list_domains().await?)
}

/// One local domain; 404 when it is not one.
pub async fn get(store: &dyn Store, name: &str) -> OpResult<Domain> {
    let name = parse_domain(name)?;
    store.get_domain(&name).await?.ok_or_else(|| OpError::not_found(format!("no local domain {name}")))
}

/// `domain add` and `POST /api/v1/domains`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    #[serde(alias = "domain")]
    pub name: String,
    /// For both cases (SPEC 2); default `reject`.
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub unauthenticated: Option<String>,
    #[serde(default)]
    pub forged: Option<String>,
    #[serde(default)]
    pub dmarc_counts: Option<bool>,
    /// ODMR customer accounts that take the domain's mail with ATRN (RFC 2645).
    #[serde(default)]
    pub held_for: Vec<String>,
    /// host:port that ETRN for the held domain delivers to (RFC 1985).
    #[serde(default)]
    pub etrn_host: Option<String>,
    /// An IP address or a single label other than localhost as the name (issue 9 item 9).
    #[serde(default)]
    pub allow_unusual: bool,
}

/// Adds the domain (and makes it held when `held_for` names accounts); returns it as stored.
pub async fn add(store: &dyn Store, new: NewDomain) -> OpResult<Domain> {
    let name = accounts::normalize_domain(&new.name, new.allow_unusual)?;
    let base: SenderPolicy = new.policy.as_deref().unwrap_or("reject").parse()?;
    let mut policy = with_cases(base, new.unauthenticated.as_deref(), new.forged.as_deref())?;
    if let Some(counts) = new.dmarc_counts {
        policy.dmarc_counts = counts;
    }
    let held_for = parse_accounts(&new.held_for)?;
    check_etrn_host(new.etrn_host.as_deref())?;
    store.add_domain(&name, policy).await?;
    if !held_for.is_empty() {
        if let Err(e) = store.set_domain_held(&name, &held_for, new.etrn_host.as_deref()).await {
            // Leave nothing half-made behind.
            let _ = store.remove_domain(&name).await;
            return Err(e.into());
        }
    }
    get(store, &name).await
}

/// `domain policy` and `PUT /api/v1/domains/{domain}/policy`: what is not given stays.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    /// One action for both cases.
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub unauthenticated: Option<String>,
    #[serde(default)]
    pub forged: Option<String>,
    /// Whether a DMARC pass authenticates the sender (SPEC 2, 13).
    #[serde(default)]
    pub dmarc_counts: Option<bool>,
}

pub async fn set_policy(store: &dyn Store, name: &str, change: PolicyChange) -> OpResult<Domain> {
    let stored = get(store, name).await?;
    if change.policy.is_none()
        && change.unauthenticated.is_none()
        && change.forged.is_none()
        && change.dmarc_counts.is_none()
    {
        return Err(OpError::invalid("give policy, unauthenticated, forged or dmarc_counts"));
    }
    let mut current: SenderPolicy = match &change.policy {
        Some(policy) => policy.parse()?,
        None => stored.policy,
    };
    current.dmarc_counts = change.dmarc_counts.unwrap_or(stored.policy.dmarc_counts);
    let policy = with_cases(current, change.unauthenticated.as_deref(), change.forged.as_deref())?;
    store.set_domain_policy(&stored.name, policy).await?;
    get(store, &stored.name).await
}

/// Held for these ODMR customer accounts (none: not held).
pub async fn set_held(
    store: &dyn Store,
    name: &str,
    accounts: &[String],
    etrn_host: Option<&str>,
) -> OpResult<(String, Vec<String>)> {
    let name = parse_domain(name)?;
    let accounts = parse_accounts(accounts)?;
    check_etrn_host(etrn_host)?;
    store.set_domain_held(&name, &accounts, etrn_host).await?;
    Ok((name, accounts))
}

/// Removes a domain without accounts (409 while it has some, 404 when unknown).
pub async fn remove(store: &dyn Store, name: &str) -> OpResult<String> {
    let name = parse_domain(name)?;
    if store.get_domain(&name).await?.is_none() {
        return Err(OpError::not_found(format!("domain {name} not found")));
    }
    // Known to exist, the rule refuses only while accounts remain: a conflict.
    accounts::remove_domain(store, &name).await.map_err(|e| OpError::from(e).invalid_as_conflict())?;
    Ok(name)
}

/// A DNS record to publish, as the API sends it (`domain dns` prints its zone-file line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
    pub purpose: String,
    /// The zone-file line(s) `vouchmail domain dns` prints.
    pub zone: String,
}

impl From<&DnsRecord> for RecordInfo {
    fn from(r: &DnsRecord) -> RecordInfo {
        RecordInfo {
            name: r.name.clone(),
            kind: "TXT",
            value: r.value.clone(),
            purpose: r.purpose.clone(),
            zone: r.to_string(),
        }
    }
}

/// The DNS records `domain` should publish (SPEC 13), with `AS=` naming this server when
/// it is an Authentication Server.
pub async fn records_to_publish(store: &dyn Store, settings: &Settings, domain: &str) -> OpResult<Vec<DnsRecord>> {
    let domain = local_domain(store, domain).await?;
    let server = settings.authentication_server.as_deref();
    Ok(crate::rules::dkim::records_to_publish(store, &domain, &settings.hostname, server).await?)
}

/// What a sender policy means for mail from the internet, in one sentence.
pub fn policy_meaning(policy: &SenderPolicy) -> String {
    let what = |action: vouchmail_store::PolicyAction| match action {
        vouchmail_store::PolicyAction::Accept => "delivered",
        vouchmail_store::PolicyAction::Junk => "delivered to Junk",
        _ => "refused (550 5.7.1)",
    };
    format!(
        "mail from the internet whose sender no method authenticated is {}, with a forged AuthKey {}",
        what(policy.unauthenticated),
        what(policy.forged)
    )
}

/// A policy with the cases given replaced; a bad action is named by its case
/// (`forged: unknown sender policy action ...`).
fn with_cases(mut policy: SenderPolicy, unauthenticated: Option<&str>, forged: Option<&str>) -> OpResult<SenderPolicy> {
    if let Some(action) = unauthenticated {
        policy.unauthenticated = action.parse().map_err(|e| OpError::invalid(format!("unauthenticated: {e}")))?;
    }
    if let Some(action) = forged {
        policy.forged = action.parse().map_err(|e| OpError::invalid(format!("forged: {e}")))?;
    }
    Ok(policy)
}

fn parse_accounts(accounts: &[String]) -> OpResult<Vec<String>> {
    accounts
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| parse_address(a).map(|a| a.to_string().to_lowercase()))
        .collect()
}

fn check_etrn_host(host: Option<&str>) -> OpResult<()> {
    match host {
        Some(h) if h.rsplit_once(':').is_none_or(|(name, port)| name.is_empty() || port.parse::<u16>().is_err()) => {
            Err(OpError::invalid(format!("'{h}' is not host:port")))
        }
        _ => Ok(()),
    }
}
