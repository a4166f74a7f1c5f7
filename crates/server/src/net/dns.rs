//! The one DNS service of the server (issue 10): a hickory resolver with its cache, used
//! by outbound delivery, ETRN, the ODMR customer, and the AuthKey and Messenger lookups.
//!
//! Every part asks [`Dns::for_config`], which hands out the same resolver (and so the same
//! cache) for the same name servers: `[dns] nameservers`, else the old
//! `outbound.nameservers`, else the system's.

use crate::support::error::{Error, ErrorKind};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::config::Config;

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The name exists but has no records of the type asked for.
    NoRecords,
    /// The lookup failed (timeout, SERVFAIL, ...): try again later.
    Temporary(String),
}

impl DnsError {
    fn from_net(error: &NetError) -> DnsError {
        if error.is_nx_domain() {
            DnsError::NoSuchName
        } else if error.is_no_records_found() {
            DnsError::NoRecords
        } else {
            DnsError::Temporary(error.to_string())
        }
    }

    /// NXDOMAIN or no records: a definite "nothing there".
    pub fn is_absent(&self) -> bool {
        matches!(self, DnsError::NoSuchName | DnsError::NoRecords)
    }
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::NoSuchName => write!(f, "no such name (NXDOMAIN)"),
            DnsError::NoRecords => write!(f, "no records of that type"),
            DnsError::Temporary(e) => write!(f, "lookup failed: {e}"),
        }
    }
}

/// One SRV target (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The shared resolver.
pub struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

/// Live resolvers by name-server list, so that every part of a server shares one.
type Registry = Mutex<HashMap<Vec<SocketAddr>, Weak<Dns>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Dns {
    /// The resolver for this configuration, shared with every other part that uses the
    /// same name servers.
    pub fn for_config(config: &Config) -> Result<Arc<Dns>, Error> {
        Dns::shared(config.nameservers())
    }

    /// The resolver for these name servers (empty: the system's), made once while in use.
    pub fn shared(nameservers: &[SocketAddr]) -> Result<Arc<Dns>, Error> {
        let mut live = registry().lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, dns| dns.strong_count() > 0);
        if let Some(dns) = live.get(nameservers).and_then(Weak::upgrade) {
            return Ok(dns);
        }
        let dns = Arc::new(Dns { resolver: build_resolver(nameservers)? });
        live.insert(nameservers.to_vec(), Arc::downgrade(&dns));
        Ok(dns)
    }

    /// The hickory resolver itself, for callers that need its full answers (outbound).
    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    /// A host's addresses: an IP literal as it is, else its A and AAAA records (IPv4
    /// first). Fails only when neither lookup found any.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(host);
        let (v4, v6) = tokio::join!(self.resolver.ipv4_lookup(name.as_str()), self.resolver.ipv6_lookup(name.as_str()));
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for result in [v4, v6] {
            match result {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => errors.push(DnsError::from_net(&e)),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // A temporary failure of either lookup outweighs "no records" from the other.
        let error = errors.iter().find(|e| !e.is_absent()).or(errors.first()).cloned();
        Err(error.unwrap_or(DnsError::NoRecords))
    }

    /// `host:port` (or `[v6]:port`, or `host` with `default_port`) resolved to socket
    /// addresses.
    pub async fn socket_addrs(&self, text: &str, default_port: u16) -> Result<Vec<SocketAddr>, Error> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| Error::new(ErrorKind::Dns, format!("bad port in {text}")))?)
            }
            _ => (text, default_port),
        };
        let ips = self.addresses(host).await.map_err(|e| Error::new(ErrorKind::Dns, format!("{host}: {e}")))?;
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    /// The TXT records of `name`, each as one string (its character-strings joined,
    /// RFC 7208 3.3).
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let lookup = self.resolver.txt_lookup(fqdn(name).as_str()).await.map_err(|e| DnsError::from_net(&e))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                }
                _ => None,
            })
            .collect())
    }

    /// The SRV records of `name` (e.g. `_messenger._tcp.example.org`), by priority.
    pub async fn srv(&self, name: &str) -> Result<Vec<SrvTarget>, DnsError> {
        let lookup = self.resolver.srv_lookup(fqdn(name).as_str()).await.map_err(|e| DnsError::from_net(&e))?;
        let mut out: Vec<SrvTarget> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvTarget {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_ascii().trim_end_matches('.').to_string(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)));
        Ok(out)
    }

    /// The MX records of `name` as (preference, exchange), unsorted.
    pub async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let lookup = self.resolver.mx_lookup(fqdn(name).as_str()).await.map_err(|e| DnsError::from_net(&e))?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii().trim_end_matches('.').to_string())),
                _ => None,
            })
            .collect())
    }
}

/// An absolute name, so the resolver never tries search domains.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn build_resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, Error> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if nameservers.is_empty() {
        match TokioResolver::builder(provider.clone()) {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; DNS lookups will fail");
                TokioResolver::builder_with_config(ResolverConfig::from_name_servers(Vec::new()), provider)
            }
        }
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options = builder.options_mut();
    options.timeout = Duration::from_secs(5);
    options.attempts = 2;
    builder.build().map_err(|e| Error::new(ErrorKind::Dns, format!("cannot build the DNS resolver: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchmail_testkit::dns::TestDns;

    #[tokio::test]
    async fn one_resolver_per_name_servers_and_every_record_type() {
        let dns = TestDns::builder()
            .a("host.example.test", "192.0.2.7")
            .txt("example.test", "AS=as.example.test:2884")
            .srv("_messenger._tcp.example.test", 10, 5, 21025, "host.example.test")
            .srv("_messenger._tcp.example.test", 5, 5, 21026, "backup.example.test")
            .mx("example.test", 10, "host.example.test")
            .start()
            .await;
        let a = Dns::shared(&[dns.addr()]).unwrap();
        let b = Dns::shared(&[dns.addr()]).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same name servers share one resolver and cache");
        assert_eq!(a.addresses("host.example.test").await.unwrap(), vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.addresses("[2001:db8::1]").await.unwrap(), vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.addresses("missing.example.test").await, Err(DnsError::NoSuchName));
        assert_eq!(a.txt("example.test").await.unwrap(), vec!["AS=as.example.test:2884".to_string()]);
        assert!(a.txt("host.example.test").await.unwrap_err().is_absent());
        let srv = a.srv("_messenger._tcp.example.test").await.unwrap();
        assert_eq!(srv.iter().map(|s| s.port).collect::<Vec<_>>(), vec![21026, 21025], "by priority");
        assert_eq!(a.mx("example.test").await.unwrap(), vec![(10, "host.example.test".to_string())]);
        assert_eq!(
            a.socket_addrs("host.example.test:2525", 25).await.unwrap(),
            vec!["192.0.2.7:2525".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(a.socket_addrs("127.0.0.1:19", 25).await.unwrap(), vec!["127.0.0.1:19".parse().unwrap()]);
    }
}
