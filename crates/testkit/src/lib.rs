//! Test helpers shared by vouchmail's crates: an authoritative DNS server
//! ([`dns::TestDns`]) and a scripted SMTP server ([`smtp_peer::Peer`]), both on loopback,
//! and a certificate authority ([`ca::TestCa`]).

pub mod ca;
pub mod dns;
pub mod layout;
pub mod smtp_peer;
