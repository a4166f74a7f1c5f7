//! STARTTLS (RFC 3207): the 220 goes out, then the handshake (`net::tls::upgrade`).

use super::context::{Connection, SmtpSession};
use crate::net::tls::upgrade;

impl Connection<'_> {
    /// False: the handshake failed and the connection must close.
    pub async fn start_tls(&mut self, session: &mut SmtpSession) -> bool {
        let pending = session.take_output();
        let (context, store) = (self.context, self.store());
        match Box::pin(upgrade(&mut self.stream, &pending, context.tls.as_ref(), store)).await {
            Some(info) => {
                session.tls_started(info);
                true
            }
            None => false,
        }
    }
}
