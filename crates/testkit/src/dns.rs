//! An authoritative DNS server for tests: hickory-server in-process on 127.0.0.1 (UDP and
//! TCP on one ephemeral port), serving the records a test gives.
//!
//! ```no_run
//! # async fn demo() {
//! use vouchmail_testkit::dns::TestDns;
//! let dns = TestDns::builder()
//!     .mx("example.test", 10, "mx.example.test")
//!     .a("mx.example.test", "127.0.0.2")
//!     .txt("example.test", "AS=auth.example.test")
//!     .start()
//!     .await;
//! // Point the resolver under test at dns.addr().
//! # }
//! ```
//!
//! Every name is served from one root zone, so a name the test did not define gets NXDOMAIN
//! and a defined name without the asked type gets an empty NOERROR answer (NODATA).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

const TTL: u32 = 60;
const SERIAL: u32 = 1;

fn name(text: &str) -> Name {
    let text = if text.ends_with('.') { text.to_string() } else { format!("{text}.") };
    Name::from_str(&text).unwrap_or_else(|e| panic!("bad DNS name {text:?}: {e}"))
}

/// Collects records; [`ZoneBuilder::start`] serves them.
#[derive(Debug, Default, Clone)]
pub struct ZoneBuilder {
    records: Vec<Record>,
}

impl ZoneBuilder {
    /// Any record.
    pub fn record(mut self, owner: &str, data: RData) -> Self {
        self.records.push(Record::from_rdata(name(owner), TTL, data));
        self
    }

    pub fn mx(self, domain: &str, preference: u16, exchange: &str) -> Self {
        self.record(domain, RData::MX(MX::new(preference, name(exchange))))
    }

    /// RFC 7505: `domain. MX 0 .`, the domain accepts no mail.
    pub fn null_mx(self, domain: &str) -> Self {
        self.record(domain, RData::MX(MX::new(0, Name::root())))
    }

    /// An A or AAAA record, by the address's family.
    pub fn a(self, host: &str, address: &str) -> Self {
        let ip: IpAddr = address.parse().unwrap_or_else(|e| panic!("bad address {address:?}: {e}"));
        match ip {
            IpAddr::V4(v4) => self.record(host, RData::A(A(v4))),
            IpAddr::V6(v6) => self.record(host, RData::AAAA(AAAA(v6))),
        }
    }

    pub fn a4(self, host: &str, address: Ipv4Addr) -> Self {
        self.record(host, RData::A(A(address)))
    }

    pub fn aaaa(self, host: &str, address: Ipv6Addr) -> Self {
        self.record(host, RData::AAAA(AAAA(address)))
    }

    /// A TXT record; text longer than a character-string (255 octets, RFC 1035 3.3) is
    /// split into several, as a DKIM RSA key must be (RFC 6376 3.6.2.2).
    pub fn txt(self, owner: &str, text: &str) -> Self {
        let bytes = text.as_bytes();
        let strings = bytes.chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        self.record(owner, RData::TXT(TXT::new(strings)))
    }

    /// The PTR record of `address` (in-addr.arpa or ip6.arpa) naming `host`.
    pub fn ptr(self, address: &str, host: &str) -> Self {
        let ip: IpAddr = address.parse().unwrap_or_else(|e| panic!("bad address {address:?}: {e}"));
        let owner = Name::from(ip).to_ascii();
        self.record(&owner, RData::PTR(PTR(name(host))))
    }

    /// `_service._proto.domain. SRV priority weight port target.`
    pub fn srv(self, owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        self.record(owner, RData::SRV(SRV::new(priority, weight, port, name(target))))
    }

    pub fn cname(self, alias: &str, target: &str) -> Self {
        self.record(alias, RData::CNAME(CNAME(name(target))))
    }

    /// Binds 127.0.0.1 (UDP and TCP, same port) and serves the records.
    pub async fn start(self) -> TestDns {
        let origin = Name::root();
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        let soa = SOA::new(name("ns.test"), name("hostmaster.test"), SERIAL, 3600, 600, 86400, TTL);
        let mut all = self.records;
        all.push(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)));
        for record in all {
            let key = RrKey::new(LowerName::new(&record.name), record.record_type());
            sets.entry(key)
                .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), SERIAL))
                .insert(record, SERIAL);
        }
        let handler: InMemoryZoneHandler =
            InMemoryZoneHandler::new(origin.clone(), sets, ZoneType::Primary, AxfrPolicy::Deny)
                .unwrap_or_else(|e| panic!("test zone: {e}"));
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler) as Arc<dyn ZoneHandler>]);
        // UDP first on an ephemeral port, then TCP on the same port (retry if taken).
        for _ in 0..20 {
            let udp = UdpSocket::bind(("127.0.0.1", 0)).await.expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let mut server = Server::new(catalog);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 4096);
            return TestDns { addr, _server: server };
        }
        panic!("no free port for the test DNS server");
    }
}

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    _server: Server<Catalog>,
}

impl TestDns {
    pub fn builder() -> ZoneBuilder {
        ZoneBuilder::default()
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self._server.shutdown_token().cancel();
    }
}
