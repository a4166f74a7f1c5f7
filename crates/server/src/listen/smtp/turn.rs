//! ATRN (RFC 2645) on the ODMR listener and ETRN (RFC 1985) on the MX: who may take a held
//! domain's mail (`jobs::held`), and the role reversal once ATRN is granted.

use super::context::{Connection, SmtpSession};

impl Connection<'_> {
    pub async fn atrn(&mut self, session: &mut SmtpSession, domains: Vec<String>) {
        let account = session.authenticated().unwrap_or_default().to_string();
        let verdict = Box::pin(self.context.odmr.check_atrn(&account, &domains)).await;
        tracing::info!(peer = %self.peer, %account, ?domains, verdict = ?verdict.as_ref().map_err(|r| r.to_string()), "ATRN");
        match verdict {
            Ok(granted) => {
                session.atrn_verdict(Ok(()));
                self.reversed = Some((account, granted));
            }
            Err(reply) => session.atrn_verdict(Err(reply)),
        }
    }

    pub async fn etrn(&mut self, session: &mut SmtpSession, node: String) {
        let reply = Box::pin(self.context.odmr.etrn(&node)).await;
        tracing::info!(peer = %self.peer, %node, reply = %reply, "ETRN");
        session.etrn_verdict(reply);
    }

    /// RFC 2645 5.3: after ATRN's 250 the roles reverse on this connection, inside TLS if
    /// started: the held mail goes to the customer. `Ok` when that happened (the session
    /// is over); otherwise the connection goes on.
    pub async fn reverse_if_granted(mut self, session: &mut SmtpSession) -> Result<(), Self> {
        let Some((account, domains)) = self.reversed.take().filter(|_| session.is_reversed()) else {
            return Err(self);
        };
        let unread = session.take_unread_input();
        let tls = session.is_tls();
        let (peer, odmr) = (self.peer, &self.context.odmr);
        Box::pin(odmr.reverse(Box::new(self.stream), unread, peer, &account, &domains, tls)).await;
        Ok(())
    }
}
