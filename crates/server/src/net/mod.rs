//! Networking: streams and TLS (the server side with its handshake, the client side with
//! its trust policies), DNS, certificates, where mail for a domain goes, and the tokio
//! shells of the protocol clients (SMTP delivery, POP3, IMAP, the federation client and its
//! home-server discovery). Nothing here decides what to do with mail.

pub mod client_tls;
pub mod discovery;
pub mod dns;
pub mod federation;
pub mod imap_client;
pub mod pop3_client;
pub mod route;
pub mod smtp_client;
pub mod stream;
pub mod tls;
pub mod x509;
