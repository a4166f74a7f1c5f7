//! Test helpers shared by vouchmail's crates: an authoritative DNS server
//! ([`dns::TestDns`]) and a scripted SMTP server ([`smtp_peer::Peer`]), both on loopback,
//! a certificate authority ([`ca::TestCa`]) and a throwaway PostgreSQL cluster
//! ([`pg::TestPostgres`]).

pub mod ca;
pub mod dns;
pub mod layout;
pub mod pg;
pub mod smtp_peer;
