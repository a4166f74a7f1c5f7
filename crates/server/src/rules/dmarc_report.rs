//! DMARC aggregate reports (RFC 7489 7.2): the MX counts what it saw of each domain that
//! asks for reports (`rua=`), per UTC day, in the store; once a day the closed days are
//! taken and each domain gets one report, XML per Appendix C, gzipped, DKIM-signed and
//! sent through the ordinary queue to the destinations its record names and that may
//! receive it (7.1).
//!
//! The backends only count opaque groups (`DmarcReportStore`): what a group is, how it
//! reads, and the report itself are decided here.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vouchmail_proto::time::rfc5322_date;
use vouchmail_store::{Delivery, DmarcResultCount, Store, StoreError};

use crate::auth::sending_domain::{DmarcFacts, DomainVerifier};
use crate::rules::own_message::OwnMessage;
use crate::support::queue_id::new_queue_id;
use crate::support::time::unix_time;

/// RFC 7489 6.3 `ri`: the default (and our only) reporting interval, one UTC day.
pub const PERIOD_SECS: i64 = 86_400;

/// The reporting period `now` falls in: the start of its UTC day.
pub fn period_of(now: i64) -> i64 {
    now - now.rem_euclid(PERIOD_SECS)
}

/// What this server did with a message (Appendix C `DispositionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    None,
    Quarantine,
    Reject,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }
}

/// One group of identical results: what the store counts (`record`, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    source_ip: IpAddr,
    disposition: String,
    dkim_aligned: bool,
    spf_aligned: bool,
    /// Appendix C `PolicyOverrideType` when the disposition is not what the domain asked.
    override_reason: Option<String>,
    envelope_to: Option<String>,
    envelope_from: String,
    header_from: String,
    /// (`d=`, `s=`, result) of every signature.
    dkim: Vec<(String, String, String)>,
    /// (domain, scope, result).
    spf: Vec<(String, String, String)>,
}

/// The policy a group was judged by (`policy`, as JSON): Appendix C `policy_published`
/// and the report's destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Published {
    domain: String,
    adkim: String,
    aspf: String,
    p: String,
    sp: String,
    fo: String,
    /// (address, size limit in octets, 0 for none) of each `rua=mailto:`.
    rua: Vec<(String, u64)>,
}

/// Counts MX messages for their domains' reports, off the path of the SMTP reply.
pub struct DmarcReports {
    store: Arc<dyn Store>,
}

impl DmarcReports {
    pub fn new(store: Arc<dyn Store>) -> Arc<DmarcReports> {
        Arc::new(DmarcReports { store })
    }

    /// Counts one message with what was done to it. `envelope_to`: the recipient domain.
    /// The write goes on in the background: a report may lose a count to a crash, the
    /// sender never waits for one.
    pub fn count(&self, facts: DmarcFacts, disposition: Disposition, envelope_to: Option<String>, now: i64) {
        let (domain, record, policy) = group_of(facts, disposition, envelope_to);
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(e) = store.count_dmarc_result(period_of(now), &domain, &record, &policy).await {
                tracing::warn!(%domain, error = %e, "cannot count a DMARC result for the aggregate report");
            }
        });
    }
}

/// The group a message is counted in: (policy domain, record JSON, policy JSON).
fn group_of(facts: DmarcFacts, disposition: Disposition, envelope_to: Option<String>) -> (String, String, String) {
    let published = facts.published;
    // RFC 7489 7.2 / Appendix C: when what was done differs from what the domain asked
    // (its policy for a failure, nothing for a pass), say that local policy decided.
    let asked = if facts.dkim_aligned || facts.spf_aligned {
        "none"
    } else if facts.header_from != published.domain {
        published.sp
    } else {
        published.p
    };
    let override_reason = (disposition.as_str() != asked).then(|| "local_policy".to_string());
    let own = |s: &'static str| s.to_string();
    let row = Row {
        source_ip: facts.source_ip,
        disposition: own(disposition.as_str()),
        dkim_aligned: facts.dkim_aligned,
        spf_aligned: facts.spf_aligned,
        override_reason,
        envelope_to,
        envelope_from: facts.envelope_from,
        header_from: facts.header_from,
        dkim: facts.dkim.into_iter().map(|(d, s, r)| (d, s, own(r))).collect(),
        spf: facts.spf.into_iter().map(|(d, scope, r)| (d, own(scope), own(r))).collect(),
    };
    let policy = Published {
        domain: published.domain.clone(),
        adkim: own(published.adkim),
        aspf: own(published.aspf),
        p: own(published.p),
        sp: own(published.sp),
        fo: own(published.fo),
        rua: published.rua,
    };
    // Serializing these plain structs cannot fail; an empty text would only split a group.
    let record = serde_json::to_string(&row).unwrap_or_default();
    let policy = serde_json::to_string(&policy).unwrap_or_default();
    (published.domain, record, policy)
}

/// Who we are in the reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// This server's name: the `org_name`, the submitter, the From domain.
    pub hostname: String,
}

impl Reporter {
    fn email(&self) -> String {
        format!("noreply-dmarc@{}", self.hostname)
    }
}

/// One report queued: its domain, its destinations, its queue id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReport {
    pub domain: String,
    pub to: Vec<String>,
    pub queue_id: String,
    pub records: usize,
}

/// Takes every counted period up to `up_to_period` and queues one report per period and
/// domain. A domain none of whose destinations may receive its report (7.1), or whose
/// report is larger than every destination accepts, gets none (logged).
pub async fn send_reports(
    store: &dyn Store,
    verifier: &DomainVerifier,
    reporter: &Reporter,
    up_to_period: i64,
    now: i64,
) -> Result<Vec<QueuedReport>, StoreError> {
    let taken = store.take_dmarc_results(up_to_period).await?;
    let mut reports: BTreeMap<(i64, String), Vec<DmarcResultCount>> = BTreeMap::new();
    for group in taken {
        reports.entry((group.period, group.domain.clone())).or_default().push(group);
    }
    let mut queued = Vec::new();
    for ((period, domain), groups) in reports {
        match send_one(store, verifier, reporter, period, &domain, &groups, now).await {
            Ok(Some(report)) => {
                tracing::info!(%domain, to = ?report.to, queue_id = %report.queue_id, "DMARC aggregate report queued");
                queued.push(report);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(%domain, error = %e, "cannot queue a DMARC aggregate report"),
        }
    }
    Ok(queued)
}

async fn send_one(
    store: &dyn Store,
    verifier: &DomainVerifier,
    reporter: &Reporter,
    period: i64,
    domain: &str,
    groups: &[DmarcResultCount],
    now: i64,
) -> Result<Option<QueuedReport>, StoreError> {
    let Some(policy) = groups.iter().rev().find_map(|g| serde_json::from_str::<Published>(&g.policy).ok()) else {
        tracing::warn!(%domain, "DMARC results without a readable policy; no report");
        return Ok(None);
    };
    let rows: Vec<(Row, i64)> =
        groups.iter().filter_map(|g| serde_json::from_str::<Row>(&g.record).ok().map(|r| (r, g.count))).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let addresses: Vec<String> = policy.rua.iter().map(|(a, _)| a.to_ascii_lowercase()).collect();
    // RFC 7489 7.1: a destination outside the domain must say it takes the domain's reports.
    let Some(authorized) = verifier.authorized_report_addresses(domain, &addresses).await else {
        tracing::warn!(%domain, "cannot check the report destinations now (DNS); no report for this period");
        return Ok(None);
    };
    let queue_id = new_queue_id();
    let report_id = queue_id.to_ascii_lowercase();
    let end = (period + PERIOD_SECS - 1).min(now.max(period));
    let xml = aggregate_xml(reporter, &report_id, period, end, &policy, &rows);
    let gzipped = gzip(xml.as_bytes()).map_err(|e| StoreError::Unavailable(format!("gzip: {e}")))?;
    // RFC 7489 7.2.1.1: a destination's size limit is not to be exceeded.
    let to: Vec<String> = policy
        .rua
        .iter()
        .filter(|(address, limit)| {
            authorized.contains(&address.to_ascii_lowercase()) && (*limit == 0 || gzipped.len() as u64 <= *limit)
        })
        .map(|(address, _)| address.to_ascii_lowercase())
        .collect();
    if to.is_empty() {
        tracing::warn!(%domain, rua = ?addresses, "no destination may receive this domain's DMARC report");
        return Ok(None);
    }
    let mut deliveries: Vec<Delivery> = Vec::new();
    for address in &to {
        for delivery in crate::rules::dsn::deliveries_for(store, address).await? {
            if !deliveries.contains(&delivery) {
                deliveries.push(delivery);
            }
        }
    }
    let filename = format!("{}!{domain}!{period}!{end}!{report_id}.xml.gz", reporter.hostname);
    let subject = format!("Report Domain: {domain} Submitter: {} Report-ID: <{report_id}>", reporter.hostname);
    let boundary = format!("=_vouchmail_{report_id}");
    let from = format!("DMARC aggregate reports <{}>", reporter.email());
    let to_field = to.iter().map(|a| format!("<{a}>")).collect::<Vec<_>>().join(", ");
    let date = rfc5322_date(unix_time(now));
    let message_id = format!("<{report_id}.dmarc@{}>", reporter.hostname);
    let content_type = format!("multipart/mixed; boundary=\"{boundary}\"");
    let fields = [
        ("From", from.as_str()),
        ("To", to_field.as_str()),
        ("Date", date.as_str()),
        ("Message-ID", message_id.as_str()),
        ("Subject", subject.as_str()),
        ("Auto-Submitted", "auto-generated"),
        ("MIME-Version", "1.0"),
        ("Content-Type", content_type.as_str()),
    ];
    let rest = mime_body(reporter, domain, &boundary, &filename, &gzipped);
    let own = OwnMessage {
        hostname: &reporter.hostname,
        queue_id: queue_id.clone(),
        sender: String::new(),
        fields: &fields,
        rest: rest.as_bytes(),
        now,
    };
    let mut message = own.build(deliveries);
    // SPEC 13: what we send is DKIM-signed.
    let signature = crate::auth::dkim_sign::sign_own_message(store, &reporter.hostname, &message.data).await;
    if !signature.is_empty() {
        let mut data = signature.into_bytes();
        data.extend_from_slice(&message.data);
        message.data = data;
    }
    store.commit_message(message).await?;
    Ok(Some(QueuedReport { domain: domain.to_string(), to, queue_id, records: rows.len() }))
}

/// The blank line and the body: a line for people, then the gzipped XML in base64 lines
/// of 76 (RFC 2045 6.8), as RFC 7489 Appendix B.5 shows.
fn mime_body(reporter: &Reporter, domain: &str, boundary: &str, filename: &str, gzipped: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzipped);
    let mut body = format!(
        "\r\nThis is a multipart message in MIME format.\r\n\r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         This is a DMARC aggregate report (RFC 7489) from {} for {domain}.\r\n\r\n--{boundary}\r\n\
         Content-Type: application/gzip; name=\"{filename}\"\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n",
        reporter.hostname
    );
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(&String::from_utf8_lossy(line));
        body.push_str("\r\n");
    }
    body.push_str(&format!("\r\n--{boundary}--\r\n"));
    body
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

/// The report's XML (RFC 7489 Appendix C; `version` 1.0 as it requires).
fn aggregate_xml(
    reporter: &Reporter,
    report_id: &str,
    begin: i64,
    end: i64,
    policy: &Published,
    rows: &[(Row, i64)],
) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <version>1.0</version>\n");
    xml.push_str("  <report_metadata>\n");
    element(&mut xml, 4, "org_name", &reporter.hostname);
    element(&mut xml, 4, "email", &reporter.email());
    element(&mut xml, 4, "report_id", report_id);
    xml.push_str(&format!(
        "    <date_range>\n      <begin>{begin}</begin>\n      <end>{end}</end>\n    </date_range>\n"
    ));
    xml.push_str("  </report_metadata>\n  <policy_published>\n");
    element(&mut xml, 4, "domain", &policy.domain);
    element(&mut xml, 4, "adkim", &policy.adkim);
    element(&mut xml, 4, "aspf", &policy.aspf);
    element(&mut xml, 4, "p", &policy.p);
    element(&mut xml, 4, "sp", &policy.sp);
    // We apply the policy to every message (no sampling).
    element(&mut xml, 4, "pct", "100");
    element(&mut xml, 4, "fo", &policy.fo);
    xml.push_str("  </policy_published>\n");
    for (row, count) in rows {
        let verdict = |aligned: bool| if aligned { "pass" } else { "fail" };
        xml.push_str("  <record>\n    <row>\n");
        element(&mut xml, 6, "source_ip", &full_ip(row.source_ip));
        element(&mut xml, 6, "count", &count.to_string());
        xml.push_str("      <policy_evaluated>\n");
        element(&mut xml, 8, "disposition", &row.disposition);
        element(&mut xml, 8, "dkim", verdict(row.dkim_aligned));
        element(&mut xml, 8, "spf", verdict(row.spf_aligned));
        if let Some(reason) = &row.override_reason {
            xml.push_str("        <reason>\n");
            element(&mut xml, 10, "type", reason);
            xml.push_str("        </reason>\n");
        }
        xml.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
        if let Some(to) = &row.envelope_to {
            element(&mut xml, 6, "envelope_to", to);
        }
        element(&mut xml, 6, "envelope_from", &row.envelope_from);
        element(&mut xml, 6, "header_from", &row.header_from);
        xml.push_str("    </identifiers>\n    <auth_results>\n");
        for (domain, selector, result) in &row.dkim {
            xml.push_str("      <dkim>\n");
            element(&mut xml, 8, "domain", domain);
            if !selector.is_empty() {
                element(&mut xml, 8, "selector", selector);
            }
            element(&mut xml, 8, "result", result);
            xml.push_str("      </dkim>\n");
        }
        for (domain, scope, result) in &row.spf {
            xml.push_str("      <spf>\n");
            element(&mut xml, 8, "domain", domain);
            element(&mut xml, 8, "scope", scope);
            element(&mut xml, 8, "result", result);
            xml.push_str("      </spf>\n");
        }
        xml.push_str("    </auth_results>\n  </record>\n");
    }
    xml.push_str("</feedback>\n");
    xml
}

fn element(xml: &mut String, indent: usize, name: &str, text: &str) {
    xml.push_str(&format!("{:indent$}<{name}>{}</{name}>\n", "", escape(text)));
}

/// XML 1.0 2.4: the characters markup would take, and no control characters at all.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appendix C's `IPAddress` pattern takes an IPv6 address only with all eight groups.
fn full_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.segments().iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sending_domain::PublishedPolicy;

    fn facts(dkim_aligned: bool) -> DmarcFacts {
        DmarcFacts {
            published: PublishedPolicy {
                domain: "sender.test".into(),
                adkim: "r",
                aspf: "s",
                p: "reject",
                sp: "quarantine",
                fo: "0",
                rua: vec![("dmarc@sender.test".into(), 0)],
            },
            source_ip: "::1".parse().unwrap(),
            envelope_from: "sender.test".into(),
            header_from: "sender.test".into(),
            dkim_aligned,
            spf_aligned: false,
            dkim: vec![("sender.test".into(), "ed".into(), "pass")],
            spf: vec![("client.sender.test".into(), "helo", "pass"), ("sender.test".into(), "mfrom", "fail")],
        }
    }

    #[test]
    fn periods_are_utc_days() {
        assert_eq!(period_of(86_400 * 3 + 5), 86_400 * 3);
        assert_eq!(period_of(86_400 * 3), 86_400 * 3);
    }

    #[test]
    fn a_disposition_other_than_asked_is_local_policy() {
        let (_, record, _) = group_of(facts(false), Disposition::Reject, None);
        assert!(!record.contains("local_policy"), "{record}");
        let (_, record, _) = group_of(facts(false), Disposition::None, None);
        assert!(record.contains("local_policy"), "{record}");
        let (_, record, _) = group_of(facts(true), Disposition::None, Some("local.test".into()));
        assert!(!record.contains("local_policy"), "{record}");
    }

    #[test]
    fn the_xml_holds_each_group_escaped() {
        let (_, record, policy) = group_of(facts(true), Disposition::None, Some("a<b>&.test".into()));
        let row: Row = serde_json::from_str(&record).unwrap();
        let policy: Published = serde_json::from_str(&policy).unwrap();
        let reporter = Reporter { hostname: "mx.local.test".into() };
        let xml = aggregate_xml(&reporter, "id1", 0, 86_399, &policy, &[(row, 7)]);
        assert!(xml.contains("<envelope_to>a&lt;b&gt;&amp;.test</envelope_to>"), "{xml}");
        assert!(xml.contains("<source_ip>0:0:0:0:0:0:0:1</source_ip>"), "{xml}");
        assert!(xml.contains("<count>7</count>") && xml.contains("<scope>helo</scope>"), "{xml}");
        assert!(xml.contains("<sp>quarantine</sp>") && xml.contains("<pct>100</pct>"), "{xml}");
    }
}
