//! STARTTLS (RFC 3207): the 220 goes out, then the handshake (`listen::start_tls`).

use super::context::{Connection, SmtpSession};

impl Connection<'_> {
    /// False: the handshake failed and the connection must close.
    pub async fn start_tls(&mut self, session: &mut SmtpSession) -> bool {
        let (context, store) = (self.context, self.store());
        crate::listen::start_tls(session, &mut self.stream, context.tls.as_ref(), store).await
    }
}
