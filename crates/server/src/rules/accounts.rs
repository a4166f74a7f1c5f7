//! Rules for changing aliases and accounts, above the storage backends (issue 9 item 8):
//! no alias loop of any length, no local target that does not exist (unless the operator
//! says it comes later), no alias outside a local domain or named as an account, no
//! account removed while something still points at it, and no domain removed while it has
//! accounts.

use crate::support::error::{Error, ErrorKind};
use std::collections::{HashMap, HashSet};

use vouchmail_store::Store;

/// May `alias` get `targets`? Local targets must be accounts or aliases (unless
/// `allow_missing`), and no target may lead back to `alias` through other aliases.
pub async fn check_new_alias(
    store: &dyn Store,
    alias: &str,
    targets: &[String],
    allow_missing: bool,
) -> Result<(), Error> {
    let alias = alias.to_lowercase();
    // An alias lives in a domain of this server (SPEC 3: RCPT resolves it there).
    let domain = alias.rsplit_once('@').map_or("", |(_, d)| d);
    if domain.is_empty() || store.get_domain(domain).await?.is_none() {
        return Err(Error::new(ErrorKind::Invalid, format!("domain {domain} of {alias} is not a local domain")));
    }
    if store.get_account(&alias).await?.is_some() {
        return Err(Error::new(ErrorKind::Invalid, format!("{alias} is an account; an alias cannot have its name")));
    }
    // The alias graph as it will be: every alias's targets, this one's included.
    let mut graph: HashMap<String, Vec<String>> = HashMap::new();
    for (from, to) in store.list_aliases().await? {
        graph.entry(from.to_lowercase()).or_default().push(to.to_lowercase());
    }
    graph.entry(alias.clone()).or_default().extend(targets.iter().map(|t| t.to_lowercase()));
    for target in targets {
        let target = target.to_lowercase();
        if let Some(path) = path_back(&graph, &target, &alias) {
            return Err(Error::new(ErrorKind::Invalid, format!("alias loop: {alias} -> {}", path.join(" -> "))));
        }
        let record = store.lookup_recipient(&target).await?;
        let local = record.domain.is_some();
        let exists = record.account.is_some() || graph.contains_key(&target);
        if local && !exists && !allow_missing {
            return Err(Error::new(ErrorKind::Invalid, format!(
                "{target} is neither an account nor an alias here; add it first, or pass --allow-missing if it comes later"
            )));
        }
    }
    Ok(())
}

/// The alias path from `start` to `goal`, if there is one (breadth-first, so the shortest).
fn path_back(graph: &HashMap<String, Vec<String>>, start: &str, goal: &str) -> Option<Vec<String>> {
    let mut previous: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(node) = queue.pop_front() {
        if node == goal {
            let mut path = vec![node.clone()];
            let mut at = node;
            while let Some(p) = previous.get(&at) {
                path.push(p.clone());
                at = p.clone();
            }
            path.reverse();
            return Some(path);
        }
        for next in graph.get(&node).into_iter().flatten() {
            if seen.insert(next.clone()) {
                previous.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// What still points at an account: aliases, held domains, catch-alls.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    pub aliases: Vec<String>,
    pub held_domains: Vec<String>,
    pub catch_alls: Vec<String>,
}

impl References {
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.held_domains.is_empty() && self.catch_alls.is_empty()
    }

    /// e.g. `aliases team@x.test; held domain example.org; catch-all of x.test`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.aliases.is_empty() {
            parts.push(format!("alias(es) {}", self.aliases.join(", ")));
        }
        if !self.held_domains.is_empty() {
            parts.push(format!("held domain(s) {}", self.held_domains.join(", ")));
        }
        if !self.catch_alls.is_empty() {
            parts.push(format!("catch-all of {}", self.catch_alls.join(", ")));
        }
        parts.join("; ")
    }
}

pub async fn references(store: &dyn Store, address: &str) -> Result<References, Error> {
    let address = address.to_lowercase();
    let mut refs = References::default();
    for (alias, target) in store.list_aliases().await? {
        if target.eq_ignore_ascii_case(&address) && !refs.aliases.contains(&alias) {
            refs.aliases.push(alias);
        }
    }
    for domain in store.list_domains().await? {
        if domain.held_for.iter().any(|a| a.eq_ignore_ascii_case(&address)) {
            refs.held_domains.push(domain.name.clone());
        }
        if domain.catch_all.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(&address)) {
            refs.catch_alls.push(domain.name);
        }
    }
    Ok(refs)
}

/// Removes a domain (and its aliases): refused while it has accounts, which must go first,
/// each through [`remove_account`] so nothing is left pointing at them (SPEC 11: whether a
/// domain may be removed is decided here, not in a backend).
pub async fn remove_domain(store: &dyn Store, name: &str) -> Result<(), Error> {
    let name = name.to_ascii_lowercase();
    if store.get_domain(&name).await?.is_none() {
        return Err(Error::new(ErrorKind::Invalid, format!("domain {name} not found")));
    }
    let accounts = store.list_accounts().await?.into_iter().filter(|a| a.domain.eq_ignore_ascii_case(&name)).count();
    if accounts > 0 {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("domain {name} still has {accounts} account(s); remove them first"),
        ));
    }
    store.remove_domain(&name).await?;
    Ok(())
}

/// Removes the account; with `force` first everything that points at it (alias targets,
/// held-domain accounts, catch-alls), else refuses naming them.
pub async fn remove_account(store: &dyn Store, address: &str, force: bool) -> Result<References, Error> {
    let address = address.to_lowercase();
    if store.get_account(&address).await?.is_none() {
        return Err(Error::new(ErrorKind::Invalid, format!("user {address} not found")));
    }
    let refs = clear_references(store, &address, force).await?;
    store.remove_account(&address).await?;
    Ok(refs)
}

/// Before `address` goes away: refuses, naming them, while aliases, held domains or
/// catch-alls point at it; with `force` removes those references.
async fn clear_references(store: &dyn Store, address: &str, force: bool) -> Result<References, Error> {
    let refs = references(store, address).await?;
    if !refs.is_empty() && !force {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("{address} is still used by {}; pass --force to remove those too", refs.describe()),
        ));
    }
    for alias in &refs.aliases {
        store.remove_alias(alias, Some(address)).await?;
    }
    for domain in store.list_domains().await? {
        if refs.held_domains.contains(&domain.name) {
            let rest: Vec<String> =
                domain.held_for.iter().filter(|a| !a.eq_ignore_ascii_case(address)).cloned().collect();
            store.set_domain_held(&domain.name, &rest, domain.etrn_host.as_deref()).await?;
        }
        if refs.catch_alls.contains(&domain.name) {
            store.set_catch_all(&domain.name, None).await?;
        }
    }
    Ok(refs)
}

/// `alias remove ALIAS [TARGET]` with a message that says what is wrong.
/// When the alias goes away (all of it, or its last target), what pointed at it is
/// refused or, with `force`, removed too, as for `user remove`: nothing is left pointing
/// at an address that no longer exists.
pub async fn remove_alias(
    store: &dyn Store,
    alias: &str,
    target: Option<&str>,
    force: bool,
) -> Result<References, Error> {
    let alias = alias.to_lowercase();
    let targets = store.alias_targets(&alias).await?;
    if targets.is_empty() {
        return Err(Error::new(ErrorKind::Invalid, format!("{alias} is not an alias")));
    }
    if let Some(target) = target {
        if !targets.iter().any(|t| t.eq_ignore_ascii_case(target)) {
            return Err(Error::new(ErrorKind::Invalid, format!("{target} is not a target of {alias}")));
        }
    }
    let whole = target.is_none() || targets.len() == 1;
    let is_account = store.get_account(&alias).await?.is_some();
    let refs = if whole && !is_account { clear_references(store, &alias, force).await? } else { References::default() };
    store.remove_alias(&alias, target).await?;
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_of_any_length_are_found() {
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        for (a, b) in [("a", "b"), ("b", "c"), ("c", "d"), ("x", "y")] {
            graph.entry(a.into()).or_default().push(b.into());
        }
        graph.entry("d".into()).or_default().push("a".into());
        assert_eq!(path_back(&graph, "b", "a"), Some(vec!["b".into(), "c".into(), "d".into(), "a".into()]));
        assert_eq!(path_back(&graph, "y", "x"), None);
    }

    fn account(address: &str) -> vouchmail_store::NewAccount {
        vouchmail_store::NewAccount { address: address.into(), secrets: Default::default(), quota_bytes: 0 }
    }

    /// SPEC 11: the alias and domain rules live here, above the backends, which only store.
    #[tokio::test]
    async fn aliases_need_a_local_domain_and_no_account_and_domains_go_without_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = vouchmail_store::SqliteStore::open(&dir.path().join("store.db")).unwrap();
        let store: &dyn Store = &store;
        store.add_domain("example.org", vouchmail_store::SenderPolicy::REJECT).await.unwrap();
        store.add_account(account("a@example.org")).await.unwrap();
        let targets = ["b@remote.example".to_string()];
        let refused = |r: Result<(), Error>| r.unwrap_err().to_string();
        assert!(
            refused(check_new_alias(store, "t@nowhere.example", &targets, false).await).contains("not a local domain")
        );
        assert!(refused(check_new_alias(store, "a@example.org", &targets, false).await).contains("is an account"));
        let own = ["team@example.org".to_string()];
        assert!(refused(check_new_alias(store, "team@example.org", &own, false).await).contains("alias loop"));
        check_new_alias(store, "team@example.org", &targets, false).await.unwrap();
        store.add_alias("team@example.org", &targets).await.unwrap();

        let message = refused(remove_domain(store, "example.org").await);
        assert!(message.contains("still has 1 account(s)"), "{message}");
        remove_account(store, "a@example.org", false).await.unwrap();
        remove_domain(store, "example.org").await.unwrap();
        assert!(store.list_aliases().await.unwrap().is_empty(), "the domain's aliases went with it");
        assert!(refused(remove_domain(store, "example.org").await).contains("not found"));
    }
}

/// A local domain's name as stored: lower case, IDNA A-labels (UTS 46), checked label by
/// label so a refusal says what is wrong. IP literals and single labels other than
/// `localhost` are refused unless `allow_unusual` (issue 9 item 9).
pub fn normalize_domain(text: &str, allow_unusual: bool) -> Result<String, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::new(ErrorKind::Invalid, "the domain name is empty"));
    }
    if text.ends_with('.') {
        return Err(Error::new(ErrorKind::Invalid, format!("'{text}': leave out the trailing dot")));
    }
    let literal = text.starts_with('[') || text.parse::<std::net::IpAddr>().is_ok();
    if literal {
        return if allow_unusual {
            Ok(text.to_ascii_lowercase())
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                format!("'{text}' is an IP address, not a domain name (pass --allow-unusual to use it anyway)"),
            ))
        };
    }
    if let Some(c) = text.chars().find(|c| *c == '_' || c.is_whitespace() || "@,;:<>()[]\\\"".contains(*c)) {
        return Err(Error::new(ErrorKind::Invalid, format!(
            "'{text}' is not a valid domain name: it holds {c:?}, and a label has letters, digits and hyphens only (RFC 1035 2.3.1, RFC 5890)"
        )));
    }
    let ascii = idna::domain_to_ascii(text)
        .map_err(|_| Error::new(ErrorKind::Invalid, format!("'{text}' is not a valid internationalized name")))?;
    if ascii.len() > 253 {
        return Err(Error::new(ErrorKind::Invalid, format!("'{text}' is longer than 253 octets")));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(Error::new(ErrorKind::Invalid, format!("'{text}' has an empty label (two dots in a row)")));
        }
        if label.len() > 63 {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("'{text}': the label '{label}' is longer than 63 octets"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("'{text}': the label '{label}' starts or ends with a hyphen"),
            ));
        }
    }
    if !ascii.contains('.') && ascii != "localhost" && !allow_unusual {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("'{text}' is a single label; mail domains have a dot (pass --allow-unusual to use it anyway)"),
        ));
    }
    Ok(ascii)
}

/// The A-label form of a domain that has U-labels; None when it is ASCII already (or
/// not a valid IDN, which then matches no local domain).
pub fn ascii_domain(domain: &str) -> Option<String> {
    if domain.is_ascii() {
        return None;
    }
    idna::domain_to_ascii(domain).ok()
}

/// `local@domain` with the domain in A-labels, for looking it up (SMTPUTF8 senders may
/// name a local domain in U-labels).
pub fn ascii_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => match ascii_domain(domain) {
            Some(ascii) => format!("{local}@{ascii}"),
            None => address.to_string(),
        },
        None => address.to_string(),
    }
}

/// The U-label form of a stored name, when it differs (for display).
pub fn unicode_name(ascii: &str) -> Option<String> {
    let (unicode, result) = idna::domain_to_unicode(ascii);
    (result.is_ok() && unicode != ascii).then_some(unicode)
}

#[cfg(test)]
mod domain_tests {
    use super::*;

    #[test]
    fn domains_are_stored_as_a_labels_and_refusals_say_why() {
        assert_eq!(normalize_domain("Bücher.Example", false), Ok("xn--bcher-kva.example".into()));
        assert_eq!(unicode_name("xn--bcher-kva.example").as_deref(), Some("bücher.example"));
        assert_eq!(unicode_name("example.org"), None);
        assert_eq!(normalize_domain("localhost", false), Ok("localhost".into()));
        for (bad, why) in [
            ("example.org.", "trailing dot"),
            ("my_domain.org", "'_'"),
            (&format!("{}.org", "a".repeat(64)), "longer than 63"),
            ("a..org", "empty label"),
            ("-a.org", "hyphen"),
            ("intranet", "single label"),
            ("192.0.2.1", "IP address"),
            ("[192.0.2.1]", "IP address"),
        ] {
            let e = normalize_domain(bad, false).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(normalize_domain("intranet", true), Ok("intranet".into()));
    }
}
