//! Where mail for a domain goes: static routes and the relay host (like Postfix's transport
//! map and relayhost), otherwise the domain's MX hosts (RFC 5321 5.1, RFC 7505).

use crate::support::error::{Error, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;

use crate::net::dns::Dns;
use vouchmail_proto::sasl::Credentials;
use vouchmail_proto::smtp::client::TlsMode;
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};

pub use crate::config::values::split_host_port;
use crate::config::{Outbound, Route};

/// STARTTLS policy of a destination (Postfix's `smtp_tls_security_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    None,
    /// Opportunistic; any certificate.
    May,
    /// Required; any certificate.
    Encrypt,
    /// Required; the certificate must be valid for the host name.
    Verify,
}

impl TlsPolicy {
    pub fn parse(text: &str) -> TlsPolicy {
        match text {
            "none" => TlsPolicy::None,
            "encrypt" => TlsPolicy::Encrypt,
            "verify" => TlsPolicy::Verify,
            _ => TlsPolicy::May,
        }
    }

    pub fn mode(self) -> TlsMode {
        match self {
            TlsPolicy::None => TlsMode::Never,
            TlsPolicy::May => TlsMode::Opportunistic,
            TlsPolicy::Encrypt | TlsPolicy::Verify => TlsMode::Required,
        }
    }
}

/// One address to try, with the host name it belongs to (for TLS and the DSN Remote-MTA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// How to reach one destination: the addresses in the order to try, and the session settings.
#[derive(Debug, Clone)]
pub struct Destination {
    pub targets: Vec<Target>,
    pub tls: TlsPolicy,
    pub credentials: Option<Credentials>,
    pub allow_cleartext_auth: bool,
}

/// A configured route, parsed.
#[derive(Debug, Clone)]
struct RouteSpec {
    /// Lower case; a leading dot matches subdomains too.
    domain: String,
    host: String,
    port: u16,
    mx: bool,
    tls: TlsPolicy,
    credentials: Option<Credentials>,
    allow_cleartext_auth: bool,
}

impl RouteSpec {
    fn from_config(route: &Route, default_tls: TlsPolicy) -> Result<RouteSpec, Error> {
        let (host, port) = split_host_port(&route.host)?;
        let password = match (&route.password, &route.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(read_password(file)?),
            (None, None) => None,
        };
        let credentials = match (&route.username, password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password)),
            (None, None) => None,
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("route to {}: username and password go together", route.host),
                ))
            }
        };
        Ok(RouteSpec {
            domain: route.domain.to_ascii_lowercase(),
            host,
            port,
            mx: route.mx,
            tls: if route.tls.is_empty() { default_tls } else { TlsPolicy::parse(&route.tls) },
            credentials,
            allow_cleartext_auth: route.allow_cleartext_auth,
        })
    }

    fn matches(&self, domain: &str) -> bool {
        match self.domain.strip_prefix('.') {
            Some(parent) => domain == parent || domain.ends_with(&self.domain),
            None => domain == self.domain,
        }
    }
}

fn read_password(file: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", file.display())))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Decides and resolves destinations.
pub struct Router {
    dns: Arc<Dns>,
    routes: Vec<RouteSpec>,
    relay: Option<RouteSpec>,
    mx_tls: TlsPolicy,
    port: u16,
    /// Our names, lower case, for RFC 5321 5.1 "MX points to me".
    own_names: Vec<String>,
    prefer_ipv6: bool,
}

fn made_up(code: u16, e: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, EnhancedCode(e.0, e.1, e.2), text.into())
}

impl Router {
    pub fn new(config: &Outbound, hostname: &str, dns: Arc<Dns>) -> Result<Router, Error> {
        let mx_tls = TlsPolicy::parse(&config.tls);
        let routes =
            config.routes.iter().map(|r| RouteSpec::from_config(r, mx_tls)).collect::<Result<Vec<_>, Error>>()?;
        let relay = config.relay.as_ref().map(|r| RouteSpec::from_config(r, mx_tls)).transpose()?;
        let mut own_names = vec![hostname.to_ascii_lowercase()];
        if !config.helo_name.is_empty() {
            own_names.push(config.helo_name.to_ascii_lowercase());
        }
        Ok(Router { dns, routes, relay, mx_tls, port: config.port, own_names, prefer_ipv6: config.prefer_ipv6 })
    }

    /// The same resolver (and its cache) with new settings (a reload).
    pub fn reconfigured(&self, config: &Outbound, hostname: &str) -> Result<Router, Error> {
        Router::new(config, hostname, Arc::clone(&self.dns))
    }

    fn route_for(&self, domain: &str) -> Option<&RouteSpec> {
        self.routes.iter().find(|r| r.matches(domain)).or(self.relay.as_ref())
    }

    /// The key under which deliveries share connections and limits: the route's host for
    /// routed domains, else the domain itself.
    pub fn destination_key(&self, domain: &str) -> String {
        match self.route_for(domain) {
            Some(route) => format!("[{}]:{}", route.host, route.port),
            None => domain.to_string(),
        }
    }

    /// Resolves where mail for `domain` goes. A permanent error (5xx) means the mail cannot
    /// be delivered at all (no such domain, null MX); a temporary one means try later.
    pub async fn resolve(&self, domain: &str) -> Result<Destination, Reply> {
        if let Some(route) = self.route_for(domain) {
            let targets = if route.mx {
                self.mx_targets(&route.host, route.port).await
            } else {
                self.host_targets(&route.host, route.port).await
            };
            // A route's host that does not resolve is our configuration's problem, not the
            // message's: try again later rather than bounce.
            let targets = targets.map_err(|r| {
                if r.is_temporary() {
                    r
                } else {
                    made_up(451, (4, 4, 3), format!("Route for {domain}: {}", r.text))
                }
            })?;
            return Ok(Destination {
                targets,
                tls: route.tls,
                credentials: route.credentials.clone(),
                allow_cleartext_auth: route.allow_cleartext_auth,
            });
        }
        // An address literal (RFC 5321 4.1.3): no DNS.
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
            let ip: IpAddr =
                ip.parse().map_err(|_| made_up(550, (5, 1, 2), format!("Bad address literal {domain}")))?;
            return Ok(self.mx_destination(vec![Target { host: ip.to_string(), addr: SocketAddr::new(ip, self.port) }]));
        }
        let targets = self.mx_targets(domain, self.port).await?;
        Ok(self.mx_destination(targets))
    }

    fn mx_destination(&self, targets: Vec<Target>) -> Destination {
        Destination { targets, tls: self.mx_tls, credentials: None, allow_cleartext_auth: false }
    }

    /// RFC 5321 5.1: MX records by preference (equal ones in random order), each host's
    /// addresses; no MX records: the domain's own addresses (implicit MX); a null MX
    /// (RFC 7505): no mail at all.
    async fn mx_targets(&self, domain: &str, port: u16) -> Result<Vec<Target>, Reply> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut exchanges: Vec<(u16, String)> = match self.dns.resolver().mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(made_up(550, (5, 1, 2), format!("Domain {domain} does not exist (DNS NXDOMAIN)")))
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(dns_failure(domain, "MX", &e)),
        };
        if exchanges.is_empty() {
            // RFC 5321 5.1: the domain itself is the implicit MX.
            return match self.host_targets(domain, port).await {
                Err(r) if !r.is_temporary() => {
                    Err(made_up(550, (5, 1, 2), format!("Domain {domain} has no MX and no address records")))
                }
                other => other,
            };
        }
        // RFC 7505 3: a single MX with the root as exchange means no mail service.
        let null = |name: &str| name == "." || name.is_empty();
        if exchanges.iter().all(|(_, name)| null(name)) {
            return Err(made_up(556, (5, 1, 10), format!("Domain {domain} accepts no mail (null MX, RFC 7505)")));
        }
        exchanges.retain(|(_, name)| !null(name));
        sort_exchanges(&mut exchanges);
        // RFC 5321 5.1: if we are one of the MX hosts, only more preferred ones may be used.
        let own = |name: &str| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.own_names.contains(&name)
        };
        if let Some(mine) = exchanges.iter().find(|(_, name)| own(name)).map(|(p, _)| *p) {
            exchanges.retain(|(p, _)| *p < mine);
            if exchanges.is_empty() {
                return Err(made_up(554, (5, 4, 6), format!("Mail for {domain} loops back to myself (MX)")));
            }
        }
        let mut targets = Vec::new();
        let mut temporary: Option<Reply> = None;
        for (_, exchange) in &exchanges {
            match self.host_targets(exchange.trim_end_matches('.'), port).await {
                Ok(t) => targets.extend(t),
                Err(e) => temporary = Some(e),
            }
        }
        if targets.is_empty() {
            // An MX host without addresses may be a passing DNS problem: try again later.
            let why = temporary.map(|r| r.text.to_string()).unwrap_or_default();
            return Err(made_up(451, (4, 4, 4), format!("No address for any MX host of {domain}: {why}")));
        }
        Ok(targets)
    }

    /// The addresses of one host (A and AAAA), or the literal address.
    async fn host_targets(&self, host: &str, port: u16) -> Result<Vec<Target>, Reply> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![Target { host: host.to_string(), addr: SocketAddr::new(ip, port) }]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let (v4, v6) = tokio::join!(
            self.dns.resolver().ipv4_lookup(fqdn.as_str()),
            self.dns.resolver().ipv6_lookup(fqdn.as_str())
        );
        let mut out4 = Vec::new();
        let mut out6 = Vec::new();
        let mut failure: Option<NetError> = None;
        let mut nx = true;
        for (result, out) in [(v4, &mut out4), (v6, &mut out6)] {
            match result {
                Ok(lookup) => {
                    nx = false;
                    for record in lookup.answers() {
                        let ip = match &record.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => continue,
                        };
                        out.push(Target { host: host.to_string(), addr: SocketAddr::new(ip, port) });
                    }
                }
                Err(e) if e.is_no_records_found() => {
                    if !e.is_nx_domain() {
                        nx = false;
                    }
                }
                Err(e) => {
                    nx = false;
                    failure = Some(e);
                }
            }
        }
        let targets: Vec<Target> = if self.prefer_ipv6 {
            out6.into_iter().chain(out4).collect()
        } else {
            out4.into_iter().chain(out6).collect()
        };
        if !targets.is_empty() {
            return Ok(targets);
        }
        match failure {
            Some(e) => Err(dns_failure(host, "A/AAAA", &e)),
            None if nx => Err(made_up(550, (5, 1, 2), format!("Host {host} does not exist (DNS NXDOMAIN)"))),
            None => Err(made_up(550, (5, 1, 2), format!("Host {host} has no address records"))),
        }
    }
}

/// RFC 5321 5.1: by preference; "randomize" among equal preferences to spread the load.
fn sort_exchanges(exchanges: &mut [(u16, String)]) {
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    let mut state = u64::from_le_bytes(seed) | 1;
    let mut keyed: Vec<(u16, u64, String)> = exchanges
        .iter()
        .map(|(p, n)| {
            // xorshift64: cheap and good enough to shuffle a handful of hosts.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (*p, state, n.clone())
        })
        .collect();
    keyed.sort();
    for (slot, (p, _, n)) in exchanges.iter_mut().zip(keyed) {
        *slot = (p, n);
    }
}

fn dns_failure(name: &str, kind: &str, error: &NetError) -> Reply {
    // RFC 3463 X.4.3: directory server failure.
    made_up(451, (4, 4, 3), format!("DNS {kind} lookup for {name} failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouchmail_testkit::dns::TestDns;

    fn outbound(dns: &TestDns) -> Outbound {
        Outbound { nameservers: vec![dns.addr()], port: 2525, ..Outbound::default() }
    }

    fn hosts(d: &Destination) -> Vec<String> {
        d.targets.iter().map(|t| format!("{}={}", t.host, t.addr)).collect()
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("mx.example").unwrap(), ("mx.example".into(), 25));
        assert_eq!(split_host_port("mx.example:587").unwrap(), ("mx.example".into(), 587));
        assert_eq!(split_host_port("127.0.0.1:2525").unwrap(), ("127.0.0.1".into(), 2525));
        assert_eq!(split_host_port("[::1]:2525").unwrap(), ("::1".into(), 2525));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 25));
        assert!(split_host_port("a:b:c").is_err());
        assert!(split_host_port("mx:port").is_err());
        for bad in ["", ":25", "[]:25", "relay.example:notaport", "mx.example:70000", "two words"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn mx_preference_order_and_addresses() {
        let dns = TestDns::builder()
            .mx("example.test", 20, "backup.example.test")
            .mx("example.test", 10, "mx1.example.test")
            .a("mx1.example.test", "127.0.0.2")
            .a("mx1.example.test", "::1")
            .a("backup.example.test", "127.0.0.3")
            .start()
            .await;
        let router = Router::new(&outbound(&dns), "me.test", Dns::shared(&[dns.addr()]).unwrap()).unwrap();
        let d = router.resolve("example.test").await.unwrap();
        assert_eq!(
            hosts(&d),
            ["mx1.example.test=127.0.0.2:2525", "mx1.example.test=[::1]:2525", "backup.example.test=127.0.0.3:2525"]
        );
        assert_eq!(d.tls, TlsPolicy::May);
    }

    #[tokio::test]
    async fn implicit_mx_null_mx_and_nxdomain() {
        let dns = TestDns::builder()
            .a("implicit.test", "127.0.0.4")
            .null_mx("nomail.test")
            .txt("noaddress.test", "v=spf1 -all")
            .start()
            .await;
        let router = Router::new(&outbound(&dns), "me.test", Dns::shared(&[dns.addr()]).unwrap()).unwrap();
        // RFC 5321 5.1: no MX, so the domain's own address.
        assert_eq!(hosts(&router.resolve("implicit.test").await.unwrap()), ["implicit.test=127.0.0.4:2525"]);
        // RFC 7505: null MX, a permanent failure with 5.1.10.
        let e = router.resolve("nomail.test").await.unwrap_err();
        assert_eq!((e.code, e.enhanced), (556, Some(EnhancedCode(5, 1, 10))));
        let e = router.resolve("nowhere.test").await.unwrap_err();
        assert_eq!((e.code, e.enhanced), (550, Some(EnhancedCode(5, 1, 2))));
        let e = router.resolve("noaddress.test").await.unwrap_err();
        assert!(!e.is_temporary(), "{e}");
    }

    #[tokio::test]
    async fn mx_pointing_at_us_and_lower_preferences_are_dropped() {
        let dns = TestDns::builder()
            .mx("example.test", 10, "primary.example.test")
            .mx("example.test", 20, "me.test")
            .mx("example.test", 30, "other.example.test")
            .a("primary.example.test", "127.0.0.2")
            .a("other.example.test", "127.0.0.3")
            .mx("loop.test", 10, "me.test")
            .start()
            .await;
        let router = Router::new(&outbound(&dns), "me.test", Dns::shared(&[dns.addr()]).unwrap()).unwrap();
        assert_eq!(hosts(&router.resolve("example.test").await.unwrap()), ["primary.example.test=127.0.0.2:2525"]);
        let e = router.resolve("loop.test").await.unwrap_err();
        assert_eq!(e.enhanced, Some(EnhancedCode(5, 4, 6)));
    }

    #[tokio::test]
    async fn routes_and_relay() {
        let dns = TestDns::builder().a("smarthost.test", "127.0.0.9").start().await;
        let mut config = outbound(&dns);
        config.routes = vec![Route { domain: ".corp.test".into(), host: "127.0.0.5:2526".into(), ..Route::default() }];
        config.relay = Some(Route {
            host: "smarthost.test:587".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            tls: "encrypt".into(),
            ..Route::default()
        });
        let router = Router::new(&config, "me.test", Dns::shared(&config.nameservers).unwrap()).unwrap();
        assert_eq!(hosts(&router.resolve("a.corp.test").await.unwrap()), ["127.0.0.5=127.0.0.5:2526"]);
        assert_eq!(router.destination_key("corp.test"), "[127.0.0.5]:2526");
        let relay = router.resolve("anything.example").await.unwrap();
        assert_eq!(hosts(&relay), ["smarthost.test=127.0.0.9:587"]);
        assert_eq!(relay.tls, TlsPolicy::Encrypt);
        assert_eq!(relay.credentials.unwrap().authcid, "u");
    }
}
