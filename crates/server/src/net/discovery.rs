//! Home-server discovery (SPEC 8): SRV `_messenger._tcp.<domain>` (priority, then weight),
//! else the domain's MX hosts on port 21025, else the domain's own address on 21025.
//! Always from a domain this server chose to look up, never from a host a client named.

use std::net::IpAddr;

use crate::net::dns::{Dns, DnsError};

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeServer {
    pub host: String,
    pub port: u16,
}

/// Why a domain has no home server to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// DNS says there is none (SRV target `.`, null MX, no address).
    None(String),
    /// DNS did not answer: try again later.
    Temporary(String),
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoveryError::None(why) | DiscoveryError::Temporary(why) => f.write_str(why),
        }
    }
}

fn temporary(name: &str, error: &DnsError) -> DiscoveryError {
    DiscoveryError::Temporary(format!("{name}: {error}"))
}

/// The home servers of `domain`, in the order to try them. `port` is the port of the MX
/// and address fallbacks (SPEC 8: 21025).
pub async fn home_servers(dns: &Dns, domain: &str, port: u16) -> Result<Vec<HomeServer>, DiscoveryError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let srv_name = format!("_messenger._tcp.{domain}");
    match dns.srv(&srv_name).await {
        Ok(targets) if !targets.is_empty() => {
            // RFC 2782: a single target "." means the service is decidedly not offered.
            if targets.len() == 1 && targets[0].target.is_empty() {
                return Err(DiscoveryError::None(format!("{srv_name}: the service is not offered (target .)")));
            }
            return Ok(targets
                .into_iter()
                .filter(|t| !t.target.is_empty())
                .map(|t| HomeServer { host: t.target.to_ascii_lowercase(), port: t.port })
                .collect());
        }
        Ok(_) => {}
        Err(e) if e.is_absent() => {}
        Err(e) => return Err(temporary(&srv_name, &e)),
    }
    match dns.mx(&domain).await {
        Ok(mut hosts) if !hosts.is_empty() => {
            hosts.sort();
            // RFC 7505: a null MX (".") says the domain takes no mail, nor Messenger calls.
            let hosts: Vec<HomeServer> = hosts
                .into_iter()
                .filter(|(_, host)| !host.is_empty())
                .map(|(_, host)| HomeServer { host: host.to_ascii_lowercase(), port })
                .collect();
            if hosts.is_empty() {
                return Err(DiscoveryError::None(format!("{domain}: null MX")));
            }
            return Ok(hosts);
        }
        Ok(_) => {}
        Err(e) if e.is_absent() => {}
        Err(e) => return Err(temporary(&domain, &e)),
    }
    Ok(vec![HomeServer { host: domain, port }])
}

/// SPEC 8: "an address of a domain's home server" is one of the A/AAAA addresses of the
/// host names discovery returns.
pub async fn home_addresses(dns: &Dns, domain: &str, port: u16) -> Result<Vec<IpAddr>, DiscoveryError> {
    let mut out = Vec::new();
    let mut temporary_error = None;
    for server in home_servers(dns, domain, port).await? {
        match dns.addresses(&server.host).await {
            Ok(ips) => out.extend(ips.into_iter().filter(|ip| !out.contains(ip)).collect::<Vec<_>>()),
            Err(e) if e.is_absent() => {}
            Err(e) => temporary_error = Some(temporary(&server.host, &e)),
        }
    }
    match (out.is_empty(), temporary_error) {
        (true, Some(error)) => Err(error),
        (true, None) => Err(DiscoveryError::None(format!("{domain}: no address for its home servers"))),
        (false, _) => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchmail_testkit::dns::TestDns;

    #[tokio::test]
    async fn srv_then_mx_then_the_domain_itself() {
        let dns = TestDns::builder()
            .srv("_messenger._tcp.srv.test", 20, 1, 21026, "backup.srv.test")
            .srv("_messenger._tcp.srv.test", 10, 5, 21025, "Home.srv.test")
            .a("home.srv.test", "127.0.0.3")
            .a("backup.srv.test", "127.0.0.5")
            .mx("srv.test", 10, "mx.srv.test")
            .mx("mx.test", 20, "mx2.mx.test")
            .mx("mx.test", 10, "mx1.mx.test")
            .a("mx1.mx.test", "127.0.0.6")
            .a("plain.test", "127.0.0.7")
            .srv("_messenger._tcp.none.test", 0, 0, 0, ".")
            .null_mx("nullmx.test")
            .start()
            .await;
        let resolver = Dns::shared(&[dns.addr()]).unwrap();
        let hosts =
            |list: Vec<HomeServer>| list.into_iter().map(|h| format!("{}:{}", h.host, h.port)).collect::<Vec<_>>();
        assert_eq!(
            hosts(home_servers(&resolver, "srv.test", 21025).await.unwrap()),
            ["home.srv.test:21025", "backup.srv.test:21026"],
            "SRV by priority, MX ignored"
        );
        assert_eq!(
            hosts(home_servers(&resolver, "mx.test", 21025).await.unwrap()),
            ["mx1.mx.test:21025", "mx2.mx.test:21025"]
        );
        assert_eq!(hosts(home_servers(&resolver, "plain.test", 4000).await.unwrap()), ["plain.test:4000"]);
        assert!(matches!(home_servers(&resolver, "none.test", 21025).await, Err(DiscoveryError::None(_))));
        assert!(matches!(home_servers(&resolver, "nullmx.test", 21025).await, Err(DiscoveryError::None(_))));
        let addresses = home_addresses(&resolver, "srv.test", 21025).await.unwrap();
        assert_eq!(addresses, ["127.0.0.3".parse::<IpAddr>().unwrap(), "127.0.0.5".parse().unwrap()]);
        assert_eq!(
            home_addresses(&resolver, "mx.test", 21025).await.unwrap(),
            ["127.0.0.6".parse::<IpAddr>().unwrap()]
        );
        assert!(home_addresses(&resolver, "missing.test", 21025).await.is_err());
    }
}
