//! The server's metrics (SPEC 12): one registry per running server, shared by every
//! listener and job (each gets the `Arc<Metrics>`), written in the Prometheus text format
//! at `GET /metrics`. Names follow Prometheus conventions (`vouchmail_` prefix, `_total`
//! counters, `_seconds` histograms); labels come from small fixed sets (`listener`,
//! `result`, `reason`, `mechanism`, `state`), never an address or an IP.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use vouchmail_proto::smtp::reply::{EnhancedCode, Reply};

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// Sessions open now, per listener (`mx`, `submission`, `pop3`, `imap`, ...).
    pub sessions_open: IntGaugeVec,
    /// Sessions accepted since start, per listener.
    pub sessions_total: IntCounterVec,
    /// Messages accepted (a 250 after DATA), per listener.
    pub messages_accepted: IntCounterVec,
    /// Messages or recipients refused, per listener and reason ([`Refusal`]).
    pub messages_refused: IntCounterVec,
    /// Queue entries by state (`queued`, `deferred`, `held`), set at each scrape.
    pub queue_messages: IntGaugeVec,
    /// Outbound delivery attempts by result (`delivered`, `deferred`, `bounced`), one per
    /// recipient tried.
    pub delivery_attempts: IntCounterVec,
    /// How long the SMTP transaction of each attempt took (a connection that failed
    /// before any transaction is counted above but not timed).
    pub delivery_duration: HistogramVec,
    /// AUTH attempts per listener, mechanism and result (`success`, `failure`).
    pub auth_attempts: IntCounterVec,
    /// AuthKey VERIFY requests answered, by result (`valid`, `invalid`, `error`: a
    /// malformed request, `unavailable`: the store failed).
    pub verify_requests: IntCounterVec,
    /// CERT lookups by result (`local`: answered from our store, `relayed`: the home
    /// server's answer passed on, `unknown`, `refused`: a remote lookup without AUTH,
    /// `error`: the store or the home server failed).
    pub cert_lookups: IntCounterVec,
    /// NOTIFY records sent to home servers (`delivered`, `deferred`, `failed`) and received
    /// from them (`stored`, `refused`, `deferred`).
    pub notify_sent: IntCounterVec,
    pub notify_received: IntCounterVec,
    /// SPF, DKIM, DMARC and iprev results of MX mail (`mechanism`, `result` as RFC 8601).
    pub sender_auth_results: IntCounterVec,
    /// IMAP sessions in IDLE now.
    pub imap_idle: IntGauge,
    /// Commits of accepted mail (the copies made, signed and stored durably), how long
    /// each took, by result (`ok`, `error`).
    pub store_commit_duration: HistogramVec,
}

/// Seconds: from a millisecond to a minute (deliveries), and finer for commits.
const DELIVERY_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let imap_idle = IntGauge::new("vouchmail_imap_idle_sessions", "IMAP sessions in IDLE now").expect("valid");
        registry.register(Box::new(imap_idle.clone())).expect("registered once");
        Metrics {
            sessions_open: gauge("vouchmail_sessions_open", "Sessions open now", &["listener"]),
            sessions_total: counter("vouchmail_sessions_total", "Sessions accepted", &["listener"]),
            messages_accepted: counter("vouchmail_messages_accepted_total", "Messages accepted", &["listener"]),
            messages_refused: counter(
                "vouchmail_messages_refused_total",
                "Messages and recipients refused",
                &["listener", "reason"],
            ),
            queue_messages: gauge("vouchmail_queue_messages", "Queue entries by state", &["state"]),
            delivery_attempts: counter("vouchmail_delivery_attempts_total", "Outbound delivery attempts", &["result"]),
            delivery_duration: histogram(
                "vouchmail_delivery_duration_seconds",
                "Outbound delivery attempt duration",
                &["result"],
                DELIVERY_BUCKETS,
            ),
            auth_attempts: counter(
                "vouchmail_auth_attempts_total",
                "AUTH and login attempts",
                &["listener", "mechanism", "result"],
            ),
            verify_requests: counter("vouchmail_verify_requests_total", "AuthKey VERIFY requests", &["result"]),
            cert_lookups: counter("vouchmail_cert_lookups_total", "Messenger CERT lookups", &["result"]),
            notify_sent: counter("vouchmail_notify_sent_total", "Tracking records sent by NOTIFY", &["result"]),
            notify_received: counter(
                "vouchmail_notify_received_total",
                "Tracking records received by NOTIFY",
                &["result"],
            ),
            sender_auth_results: counter(
                "vouchmail_sender_auth_results_total",
                "SPF, DKIM, DMARC and iprev results of MX mail",
                &["mechanism", "result"],
            ),
            imap_idle,
            store_commit_duration: histogram(
                "vouchmail_store_commit_duration_seconds",
                "Store commits of accepted mail",
                &["result"],
                COMMIT_BUCKETS,
            ),
            registry,
        }
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing into a Vec fails only on a metric the registry refused to take.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Why a message or a recipient was refused: a small fixed set, so that a label never holds
/// a peer's words (an address, a host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The recipient domain's sender policy, relaying, a sender address not the user's.
    Policy,
    /// AUTH needed first (RFC 4954 6: 530 5.7.0).
    AuthRequired,
    /// No such recipient (RFC 3463 X.1.x).
    Recipient,
    /// The sending domain's DMARC policy of reject (RFC 7489 6.3).
    Dmarc,
    /// Message too big, or a mailbox full (RFC 3463 X.2.2, X.2.3, X.3.4).
    Size,
    /// Too many recipients or connections (RFC 3463 X.5.3 in a 452, 421 4.7.0).
    RateLimit,
    /// Bad syntax or sequence (RFC 3463 X.5.x, X.1.3, X.1.7).
    Syntax,
    /// Any other temporary refusal: the store, DNS or another server did not answer.
    Temporary,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::Policy,
        Refusal::AuthRequired,
        Refusal::Recipient,
        Refusal::Dmarc,
        Refusal::Size,
        Refusal::RateLimit,
        Refusal::Syntax,
        Refusal::Temporary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Policy => "policy",
            Refusal::AuthRequired => "auth_required",
            Refusal::Recipient => "recipient",
            Refusal::Dmarc => "dmarc",
            Refusal::Size => "size",
            Refusal::RateLimit => "rate_limit",
            Refusal::Syntax => "syntax",
            Refusal::Temporary => "temporary",
        }
    }

    /// The reason an SMTP refusal gives by its codes (RFC 5321 4.2, RFC 3463 3).
    pub fn of_reply(reply: &Reply) -> Refusal {
        let temporary = reply.is_temporary();
        let Some(EnhancedCode(_, subject, detail)) = reply.enhanced else {
            return if temporary { Refusal::Temporary } else { Refusal::Policy };
        };
        match (subject, detail) {
            // RFC 7372 3.2 X.7.26: multiple authentication checks failed (DMARC).
            (7, 26) => Refusal::Dmarc,
            (7, 0) if reply.code == 530 => Refusal::AuthRequired,
            (2, 2) | (2, 3) | (3, 4) => Refusal::Size,
            (5, 3) if reply.code == 452 => Refusal::RateLimit,
            // 450 4.5.3: another sender policy than the transaction's (SPEC 2).
            (5, 3) => Refusal::Policy,
            (7, 0) if reply.code == 421 => Refusal::RateLimit,
            (1, 3) | (1, 7) | (5, _) => Refusal::Syntax,
            (1, _) if !temporary => Refusal::Recipient,
            _ if temporary => Refusal::Temporary,
            _ => Refusal::Policy,
        }
    }
}

/// One listener's handles into the registry, looked up once when the listener starts, so
/// that counting a message or a refusal costs an atomic add and no label lookup.
pub struct ListenerMetrics {
    pub metrics: Arc<Metrics>,
    /// The `listener` label: `mx`, `submission`, `submissions`, `odmr`, `messenger`, `pop3`,
    /// `pop3s`, `imap`, `imaps`, `authkey`.
    pub listener: &'static str,
    pub accepted: IntCounter,
    refused: [IntCounter; 8],
}

impl ListenerMetrics {
    pub fn new(metrics: &Arc<Metrics>, listener: &'static str) -> ListenerMetrics {
        let refused =
            Refusal::ALL.map(|reason| metrics.messages_refused.with_label_values(&[listener, reason.as_str()]));
        ListenerMetrics {
            metrics: Arc::clone(metrics),
            listener,
            accepted: metrics.messages_accepted.with_label_values(&[listener]),
            refused,
        }
    }

    /// Counts a session while the returned guard lives.
    pub fn session(&self) -> SessionGauge {
        SessionGauge::start(&self.metrics, self.listener)
    }

    pub fn refused(&self, reason: Refusal) {
        // `ALL` lists the variants in declaration order.
        self.refused[reason as usize].inc();
    }

    /// A refusal by its SMTP reply.
    pub fn refused_reply(&self, reply: &Reply) {
        self.refused(Refusal::of_reply(reply));
    }

    /// One AUTH or login attempt: `mechanism` is a SASL name from the session (a fixed
    /// set), never the client's text.
    pub fn auth(&self, mechanism: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.metrics.auth_attempts.with_label_values(&[self.listener, mechanism, result]).inc();
    }
}

/// Holds a gauge up by one while it lives: an IMAP session in IDLE, which then cannot leak
/// when the connection drops in the middle.
pub struct GaugeGuard {
    gauge: IntGauge,
}

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard { gauge: gauge.clone() }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counts a session for as long as it lives: open on creation, closed on drop.
pub struct SessionGauge {
    open: IntGauge,
}

impl SessionGauge {
    pub fn start(metrics: &Metrics, listener: &str) -> SessionGauge {
        metrics.sessions_total.with_label_values(&[listener]).inc();
        let open = metrics.sessions_open.with_label_values(&[listener]);
        open.inc();
        SessionGauge { open }
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text_format_and_sessions_close_on_drop() {
        let metrics = Metrics::new();
        metrics.messages_accepted.with_label_values(&["mx"]).inc();
        let session = SessionGauge::start(&metrics, "imap");
        let text = metrics.render();
        assert!(text.contains("# TYPE vouchmail_messages_accepted_total counter"), "{text}");
        assert!(text.contains("vouchmail_messages_accepted_total{listener=\"mx\"} 1"), "{text}");
        assert!(text.contains("vouchmail_sessions_open{listener=\"imap\"} 1"), "{text}");
        drop(session);
        assert!(metrics.render().contains("vouchmail_sessions_open{listener=\"imap\"} 0"));
        assert!(metrics.render().contains("vouchmail_sessions_total{listener=\"imap\"} 1"));
    }

    #[test]
    fn refusals_are_told_apart_by_their_codes() {
        assert_eq!(Refusal::of_reply(&Reply::unknown_user("x")), Refusal::Recipient);
        assert_eq!(Refusal::of_reply(&Reply::not_authorized("x")), Refusal::Policy);
        assert_eq!(Refusal::of_reply(&Reply::auth_required("x")), Refusal::AuthRequired);
        assert_eq!(Refusal::of_reply(&Reply::too_big("x")), Refusal::Size);
        assert_eq!(Refusal::of_reply(&Reply::mailbox_full("x")), Refusal::Size);
        assert_eq!(Refusal::of_reply(&Reply::too_many_recipients("x")), Refusal::RateLimit);
        assert_eq!(Refusal::of_reply(&Reply::bad_recipient_syntax("x")), Refusal::Syntax);
        assert_eq!(Refusal::of_reply(&Reply::auth_temperror("x")), Refusal::Temporary);
        assert_eq!(Refusal::of_reply(&Reply::local_error("x")), Refusal::Temporary);
        assert_eq!(Refusal::of_reply(&Reply::new(550, EnhancedCode(5, 7, 26), "x")), Refusal::Dmarc);
        for (n, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, n, "ALL is in declaration order");
        }
    }

    #[test]
    fn listener_handles_count_under_their_labels() {
        let metrics = Arc::new(Metrics::new());
        let mx = ListenerMetrics::new(&metrics, "mx");
        mx.refused(Refusal::Dmarc);
        mx.accepted.inc();
        mx.auth("PLAIN", false);
        let idle = GaugeGuard::new(&metrics.imap_idle);
        let text = metrics.render();
        assert!(text.contains("vouchmail_messages_refused_total{listener=\"mx\",reason=\"dmarc\"} 1"), "{text}");
        assert!(text.contains("vouchmail_messages_refused_total{listener=\"mx\",reason=\"policy\"} 0"), "{text}");
        assert!(
            text.contains("vouchmail_auth_attempts_total{listener=\"mx\",mechanism=\"PLAIN\",result=\"failure\"} 1")
        );
        assert!(text.contains("vouchmail_imap_idle_sessions 1"), "{text}");
        drop(idle);
        assert!(metrics.render().contains("vouchmail_imap_idle_sessions 0"));
    }
}
