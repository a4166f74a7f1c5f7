//! The server's metrics (SPEC 12): one registry per running server, shared by every
//! listener and job (each gets the `Arc<Metrics>`), written in the Prometheus text format
//! at `GET /metrics`. Names follow Prometheus conventions (`vouchmail_` prefix, `_total`
//! counters, `_seconds` histograms); labels come from small fixed sets (`listener`,
//! `result`, `reason`, `mechanism`, `state`), never an address or an IP.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// Sessions open now, per listener (`mx`, `submission`, `pop3`, `imap`, ...).
    pub sessions_open: IntGaugeVec,
    /// Sessions accepted since start, per listener.
    pub sessions_total: IntCounterVec,
    /// Messages accepted (a 250 after DATA), per listener.
    pub messages_accepted: IntCounterVec,
    /// Messages or recipients refused, per listener and reason (`policy`, `auth`,
    /// `recipient`, `dmarc`, `size`, `limit`, `syntax`, `unavailable`).
    pub messages_refused: IntCounterVec,
    /// Queue entries by state (`queued`, `deferred`, `held`), set at each scrape.
    pub queue_messages: IntGaugeVec,
    /// Outbound delivery attempts by result (`delivered`, `deferred`, `bounced`).
    pub delivery_attempts: IntCounterVec,
    pub delivery_duration: HistogramVec,
    /// AUTH attempts per listener, mechanism and result (`success`, `failure`).
    pub auth_attempts: IntCounterVec,
    /// AuthKey VERIFY requests answered, by result (`valid`, `invalid`, `refused`).
    pub verify_requests: IntCounterVec,
    /// CERT lookups by result (`local`, `relayed`, `unknown`, `refused`).
    pub cert_lookups: IntCounterVec,
    /// NOTIFY records sent to home servers and received from them, by result.
    pub notify_sent: IntCounterVec,
    pub notify_received: IntCounterVec,
    /// SPF, DKIM, DMARC and iprev results of MX mail (`mechanism`, `result` as RFC 8601).
    pub sender_auth_results: IntCounterVec,
    /// IMAP sessions in IDLE now.
    pub imap_idle: IntGauge,
    /// Store commits of accepted mail, how long each took.
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
}
