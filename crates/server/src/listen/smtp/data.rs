//! DATA: the body as it arrives (spooled past the memory limit), then at its end the
//! sender policy's decision and the durable commit (SPEC 2, 5), whose outcome is the reply.

use std::time::Instant;

use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::Envelope;

use super::context::{Connection, SmtpSession};
use crate::rules::commit::{commit_message, ClientInfo};
use crate::rules::recipient::Resolved;
use crate::rules::sender_policy::{decide, Decision, SenderChecks};
use crate::support::files::read_whole;
use crate::support::metrics::Refusal;

/// Messages larger than this are not read back from the spool for their DKIM
/// signatures (SPEC 13): they are checked on what was kept in memory.
const MAX_DKIM_CHECKED: u64 = 16 * 1024 * 1024;

impl Connection<'_> {
    pub async fn body_chunk(&mut self, session: &mut SmtpSession, offset: u64, chunk: Vec<u8>) {
        if let Err(e) = self.spool.write(offset, chunk).await {
            tracing::error!(peer = %self.peer, error = %e, "cannot spool message data");
            session.spill_failed();
        }
    }

    pub async fn message(&mut self, session: &mut SmtpSession, envelope: Envelope<Resolved>) {
        let context = self.context;
        let spooled = match envelope.spilled {
            0 => Ok(None),
            len => self.spool.take(len).map(Some).ok_or(()),
        };
        let greeting = session.greeting().cloned();
        let client = ClientInfo {
            peer_ip: self.peer.ip(),
            helo: greeting.as_ref().map(|g| g.name.as_str()).unwrap_or("unknown"),
            extended: greeting.as_ref().is_some_and(|g| g.extended),
            tls: session.is_tls(),
            authenticated: session.authenticated(),
            remote_auth: session.is_remote_authenticated(),
            service: context.session_config.service,
            trusted_relay: context.session_config.trusted_relay,
        };
        // Boxed: the big futures of rare steps stay off every idle session's task.
        let hostname = &context.session_config.hostname;
        let mut dmarc_refusal = false;
        let verdict = match spooled {
            Ok(spooled) => {
                let store = self.store();
                let checks = SenderChecks {
                    authkeys: &context.authkeys,
                    domains: context.domain_verifier.as_deref(),
                    reports: context.dmarc_reports.as_deref(),
                    metrics: Some(&context.metrics.metrics),
                };
                // Only unauthenticated MX mail is checked; the spool is read back for it.
                let whole = match (&spooled, &checks.domains, client.authenticated) {
                    (Some(spooled), Some(_), None) => read_whole(&envelope.body, spooled, MAX_DKIM_CHECKED).await,
                    _ => None,
                };
                let message = match &spooled {
                    Some(_) => whole.as_deref(),
                    None => Some(envelope.body.as_slice()),
                };
                let decision = Box::pin(decide(&checks, store, hostname, &client, &envelope, message)).await;
                match decision {
                    Decision::Deliver(delivered) => {
                        let signing = Some(context.dkim.as_ref());
                        // SPEC 12: the commit latency of accepted mail, its copies made,
                        // signed and stored durably.
                        let started = Instant::now();
                        let committed =
                            Box::pin(commit_message(store, hostname, &client, envelope, spooled, delivered, signing))
                                .await;
                        let result = if committed.is_ok() { "ok" } else { "error" };
                        let histogram = &context.metrics.metrics.store_commit_duration;
                        histogram.with_label_values(&[result]).observe(started.elapsed().as_secs_f64());
                        committed
                    }
                    Decision::KeyRecorded => Ok("key recorded".to_string()),
                    Decision::Refuse(reply) => Err(reply),
                    Decision::RefuseByDmarc(reply) => {
                        dmarc_refusal = true;
                        Err(reply)
                    }
                }
            }
            Err(()) => {
                tracing::error!(peer = %self.peer, "the spooled message data is incomplete");
                Err(Reply::local_error("Local error in processing, try again later"))
            }
        };
        // SPEC 12: the end of DATA is where a message is accepted or refused.
        match &verdict {
            Ok(_) => context.metrics.accepted.inc(),
            Err(_) if dmarc_refusal => context.metrics.refused(Refusal::Dmarc),
            Err(reply) => context.metrics.refused_reply(reply),
        }
        session.message_verdict(verdict);
    }
}
