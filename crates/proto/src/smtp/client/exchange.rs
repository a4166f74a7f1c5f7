//! Another sans-I/O exchange run over the SMTP client's session ([`super::Client::pump`]),
//! such as the RCRAM-MD5 login (SPEC 8.2): it reads the server's bytes and writes its own
//! for a while, then the session is the client's again.

/// What [`super::Client::pump`] needs of an exchange.
pub trait Exchange {
    /// Bytes from the server.
    fn feed(&mut self, bytes: &[u8]);
    /// Bytes to send to the server.
    fn take_output(&mut self) -> Vec<u8>;
    /// True once it wants nothing more from the connection.
    fn is_done(&self) -> bool;
    /// The connection closed or timed out before it was done.
    fn on_closed(&mut self);
}
