//! The sending domain's own proof on the MX (SPEC 13): SPF (RFC 7208) for HELO and MAIL
//! FROM, DKIM (RFC 6376, RFC 8463) for every signature, DMARC (RFC 7489) for the From
//! domain and iprev (RFC 8601 3), evaluated by `mail-auth` over the shared resolver (its
//! cache; the tests' DNS), and turned into Authentication-Results resinfos and the one
//! DMARC verdict the sender policy needs (`rules::sender_policy`).
//!
//! Every lookup is asynchronous and the whole check has a deadline: a resolver that does
//! not answer gives `temperror` (SPEC 2), never a stalled session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::cache::NoCache;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::{Alignment, Policy, Report};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::Txt;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, IprevOutput, IprevResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use vouchmail_proto::smtp::trace::MethodResult;

use crate::net::dns::Dns;

/// What the sending domain's DMARC policy asks for a message that fails (RFC 7489 6.3 `p`
/// or `sp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// The DMARC outcome for the From domain, as the sender policy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcVerdict {
    /// An aligned SPF or DKIM pass: the domain vouches for the message (SPEC 2).
    Pass { domain: String },
    /// The domain publishes DMARC and nothing aligned passed.
    Fail { domain: String, policy: DmarcPolicy },
    /// A lookup did not answer in time: try again later.
    TempError { domain: String },
    /// No DMARC record, no single From domain, or a broken record: no verdict either way.
    None,
}

/// The results of one message: resinfos for Authentication-Results, in the order iprev,
/// spf (helo, mailfrom), dkim (one per signature), dmarc; the DMARC verdict; and, when the
/// From domain asks for aggregate reports, what its report says of this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainChecks {
    pub results: Vec<MethodResult>,
    pub dmarc: DmarcVerdict,
    pub report: Option<DmarcFacts>,
}

impl DomainChecks {
    /// The checks were not run (turned off, or a session another method authenticated).
    pub fn not_run() -> DomainChecks {
        DomainChecks { results: Vec::new(), dmarc: DmarcVerdict::None, report: None }
    }
}

/// What an aggregate report (RFC 7489 7.2, Appendix C) says of one message: the policy
/// published and the results, before the receiver's disposition is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcFacts {
    pub published: PublishedPolicy,
    pub source_ip: IpAddr,
    /// The RFC5321.MailFrom domain (the HELO name for the null sender).
    pub envelope_from: String,
    /// The RFC5322.From domain.
    pub header_from: String,
    /// Whether an aligned DKIM, an aligned SPF passed.
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// Every signature: `d=`, `s=` and its result (RFC 8601 names).
    pub dkim: Vec<(String, String, &'static str)>,
    /// SPF: the checked domain, its scope (`helo`, `mfrom`) and result.
    pub spf: Vec<(String, &'static str, &'static str)>,
}

/// The DMARC record that applied (RFC 7489 6.3), as Appendix C's `policy_published`, with
/// the `rua` destinations (address, size limit in octets, 0 for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPolicy {
    pub domain: String,
    pub adkim: &'static str,
    pub aspf: &'static str,
    pub p: &'static str,
    pub sp: &'static str,
    pub fo: &'static str,
    pub rua: Vec<(String, u64)>,
}

/// The envelope of the message being checked.
#[derive(Debug, Clone, Copy)]
pub struct CheckedEnvelope<'a> {
    pub peer_ip: IpAddr,
    /// The EHLO/HELO name.
    pub helo: &'a str,
    /// The MAIL FROM address; empty for the null reverse-path.
    pub mail_from: &'a str,
}

/// Runs the checks of SPEC 13 with the shared resolver.
pub struct DomainVerifier {
    authenticator: MessageAuthenticator,
    /// Our name: the `host_domain` of SPF macros (`%{r}`).
    hostname: String,
    /// The whole check gives up after this; what did not answer is `temperror`.
    deadline: Duration,
}

impl DomainVerifier {
    pub fn new(dns: &Dns, hostname: &str, deadline: Duration) -> Arc<DomainVerifier> {
        // One resolver and one cache for the whole server: hickory's resolver is a cheap
        // handle onto shared state.
        let authenticator = MessageAuthenticator(dns.resolver().clone());
        Arc::new(DomainVerifier { authenticator, hostname: hostname.to_string(), deadline })
    }

    /// Checks one message (`message`: the whole message as received).
    pub async fn check(&self, envelope: CheckedEnvelope<'_>, message: &[u8]) -> DomainChecks {
        match tokio::time::timeout(self.deadline, self.run(envelope, message)).await {
            Ok(checks) => checks,
            Err(_) => {
                tracing::info!(peer = %envelope.peer_ip, "SPF/DKIM/DMARC checks timed out: temperror");
                timed_out(envelope, message)
            }
        }
    }

    /// RFC 7489 7.1: of `addresses` (the `rua` of `domain`'s record), those that may receive
    /// its reports: in the domain itself, or in a domain that publishes
    /// `<domain>._report._dmarc.<its domain>`. None when DNS did not answer.
    pub async fn authorized_report_addresses(&self, domain: &str, addresses: &[String]) -> Option<Vec<String>> {
        let no_cache: Option<&NoCache<Box<str>, Txt>> = None;
        let check = self.authenticator.verify_dmarc_report_address(domain, addresses, no_cache);
        let authorized = tokio::time::timeout(self.deadline, check).await.ok()??;
        Some(authorized.into_iter().cloned().collect())
    }

    async fn run(&self, envelope: CheckedEnvelope<'_>, message: &[u8]) -> DomainChecks {
        let auth = &self.authenticator;
        let CheckedEnvelope { peer_ip, helo, mail_from } = envelope;
        let host = self.hostname.as_str();
        let mut results = Vec::new();
        let iprev = auth.verify_iprev(peer_ip).await;
        results.push(iprev_result(&iprev, peer_ip));
        // RFC 7208 2.3: HELO is checked on its own; 2.4: MAIL FROM (postmaster@HELO when null).
        let spf_helo = auth.verify_spf(SpfParameters::verify_ehlo(peer_ip, helo, host)).await;
        results.push(spf_result(&spf_helo, "smtp.helo", helo));
        let spf_mail_from = auth.verify_spf(SpfParameters::verify_mail_from(peer_ip, helo, host, mail_from)).await;
        let mail_from_shown = if mail_from.is_empty() { format!("postmaster@{helo}") } else { mail_from.to_string() };
        results.push(spf_result(&spf_mail_from, "smtp.mailfrom", &mail_from_shown));
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header at all): no signature, no From.
            results.push(MethodResult::new("dkim", "none"));
            return DomainChecks { results, dmarc: DmarcVerdict::None, report: None };
        };
        let dkim = auth.verify_dkim(&parsed).await;
        if dkim.is_empty() {
            results.push(MethodResult::new("dkim", "none"));
        }
        results.extend(dkim.iter().map(dkim_result));
        // RFC 8301 3.1: an rsa-sha1 signature is never valid, so it cannot make DMARC pass.
        let accepted: Vec<DkimOutput<'_>> = dkim.iter().filter(|o| !is_sha1(o)).cloned().collect();
        let mail_from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, domain)| domain);
        let dmarc = auth.verify_dmarc(DmarcParameters::new(&parsed, &accepted, mail_from_domain, &spf_mail_from)).await;
        let verdict = dmarc_verdict(&dmarc, parsed.from());
        if let Some(result) = dmarc_result(&dmarc, &verdict) {
            results.push(result);
        }
        let report = report_facts(&dmarc, &verdict, peer_ip, mail_from_domain, &results);
        DomainChecks { results, dmarc: verdict, report }
    }
}

/// What a check that ran out of time reports: temperror for everything, and a DMARC
/// temperror when the From header names a domain (so SPEC 2's 451 applies).
fn timed_out(envelope: CheckedEnvelope<'_>, message: &[u8]) -> DomainChecks {
    let domain = vouchmail_proto::headers::from_address(message)
        .and_then(|from| from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
    let reason = "DNS did not answer in time";
    let mut results = vec![
        MethodResult::new("spf", "temperror").reason(reason).property("smtp.mailfrom", envelope.mail_from),
        MethodResult::new("dkim", "temperror").reason(reason),
    ];
    let dmarc = match domain {
        Some(domain) => {
            results.push(MethodResult::new("dmarc", "temperror").reason(reason).property("header.from", &domain));
            DmarcVerdict::TempError { domain }
        }
        None => DmarcVerdict::None,
    };
    DomainChecks { results, dmarc, report: None }
}

/// What the aggregate report of the policy domain says of this message (RFC 7489 7.2):
/// only where a record asks for reports (`rua`) and gave a verdict.
fn report_facts(
    output: &DmarcOutput,
    verdict: &DmarcVerdict,
    source_ip: IpAddr,
    mail_from_domain: &str,
    results: &[MethodResult],
) -> Option<DmarcFacts> {
    let record = output.dmarc_record().filter(|r| !r.rua.is_empty())?;
    let header_from = match verdict {
        DmarcVerdict::Pass { domain } | DmarcVerdict::Fail { domain, .. } => domain.clone(),
        DmarcVerdict::TempError { .. } | DmarcVerdict::None => return None,
    };
    let alignment = |a: Alignment| if a == Alignment::Strict { "s" } else { "r" };
    let policy = |p: Policy| match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    };
    let published = PublishedPolicy {
        domain: output.domain().to_ascii_lowercase(),
        adkim: alignment(record.adkim),
        aspf: alignment(record.aspf),
        p: policy(record.p),
        // RFC 7489 6.3: without `sp`, subdomains get `p`.
        sp: policy(if record.sp == Policy::Unspecified { record.p } else { record.sp }),
        fo: match record.fo {
            Report::All => "0",
            Report::Any => "1",
            Report::Dkim => "d",
            Report::Spf => "s",
            Report::DkimSpf => "d:s",
        },
        rua: record.rua.iter().map(|u| (u.uri().to_string(), u.max_size() as u64)).collect(),
    };
    let named = |r: &MethodResult, key: &str| r.value_of(key).unwrap_or_default().to_string();
    let dkim = results
        .iter()
        .filter(|r| r.method == "dkim" && r.value_of("header.d").is_some())
        .map(|r| (named(r, "header.d"), named(r, "header.s"), r.result))
        .collect();
    let spf = results
        .iter()
        .filter(|r| r.method == "spf")
        .map(|r| match r.value_of("smtp.helo") {
            Some(helo) => (helo.to_string(), "helo", r.result),
            None => (mail_from_domain.to_string(), "mfrom", r.result),
        })
        .collect();
    Some(DmarcFacts {
        published,
        source_ip,
        envelope_from: mail_from_domain.to_ascii_lowercase(),
        header_from,
        dkim_aligned: matches!(output.dkim_result(), DmarcResult::Pass),
        spf_aligned: matches!(output.spf_result(), DmarcResult::Pass),
        dkim,
        spf,
    })
}

/// RFC 8601 3: iprev, with the address checked as `policy.iprev`.
fn iprev_result(output: &IprevOutput, ip: IpAddr) -> MethodResult {
    let (result, reason) = match &output.result {
        IprevResult::Pass => ("pass", None),
        IprevResult::Fail(e) => ("fail", Some(e.to_string())),
        IprevResult::TempError(e) => ("temperror", Some(e.to_string())),
        IprevResult::PermError(e) => ("permerror", Some(e.to_string())),
        IprevResult::None => ("none", None),
    };
    with_reason(MethodResult::new("iprev", result), reason).property("policy.iprev", ip.to_string())
}

/// RFC 7208 2.6 results under RFC 8601 2.7.2's names.
fn spf_result(output: &SpfOutput, property: &'static str, identity: &str) -> MethodResult {
    let result = match output.result() {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    };
    MethodResult::new("spf", result).property(property, identity)
}

fn is_sha1(output: &DkimOutput<'_>) -> bool {
    output.signature().is_some_and(|s| s.a == mail_auth::common::crypto::Algorithm::RsaSha1)
}

/// RFC 8601 2.7.1: one dkim resinfo per signature, naming it by `header.d`, `header.s`
/// and the first characters of `header.b` (RFC 6008), so two signatures are told apart.
/// An rsa-sha1 signature is `policy` (RFC 8301 3.1: verifiers must not accept it).
fn dkim_result(output: &DkimOutput<'_>) -> MethodResult {
    let sha1 = (is_sha1(output), Some("rsa-sha1 is not accepted (RFC 8301)".to_string()));
    let (result, reason) = match output.result() {
        _ if sha1.0 => ("policy", sha1.1),
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
        DkimResult::Fail(e) => ("fail", Some(e.to_string())),
        DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::None => ("none", None),
    };
    let mut resinfo = with_reason(MethodResult::new("dkim", result), reason);
    if let Some(signature) = output.signature() {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(&signature.b);
        resinfo = resinfo
            .property("header.d", signature.d.clone())
            .property("header.s", signature.s.clone())
            .property("header.b", b.chars().take(8).collect::<String>());
    }
    resinfo
}

fn with_reason(resinfo: MethodResult, reason: Option<String>) -> MethodResult {
    match reason {
        Some(reason) => resinfo.reason(reason),
        None => resinfo,
    }
}

/// The DMARC verdict for the From domain (`from`: the first From address).
fn dmarc_verdict(output: &DmarcOutput, from: &str) -> DmarcVerdict {
    let domain = if output.domain().is_empty() {
        from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
    } else {
        output.domain().to_ascii_lowercase()
    };
    match output.result() {
        DmarcResult::Pass => DmarcVerdict::Pass { domain },
        DmarcResult::Fail(_) => {
            let policy = match output.policy() {
                Policy::Reject => DmarcPolicy::Reject,
                Policy::Quarantine => DmarcPolicy::Quarantine,
                Policy::None | Policy::Unspecified => DmarcPolicy::None,
            };
            DmarcVerdict::Fail { domain, policy }
        }
        DmarcResult::TempError(_) => DmarcVerdict::TempError { domain },
        DmarcResult::PermError(_) | DmarcResult::None => DmarcVerdict::None,
    }
}

/// RFC 7489 11.2: `dmarc=` with `header.from` and, for a failure, the policy applied
/// (`policy.dmarc`); none when the message has no From domain to check.
fn dmarc_result(output: &DmarcOutput, verdict: &DmarcVerdict) -> Option<MethodResult> {
    let domain = match verdict {
        DmarcVerdict::Pass { domain } | DmarcVerdict::Fail { domain, .. } | DmarcVerdict::TempError { domain } => {
            domain.clone()
        }
        DmarcVerdict::None if output.domain().is_empty() => return None,
        DmarcVerdict::None => output.domain().to_ascii_lowercase(),
    };
    let result = match output.result() {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    };
    let mut resinfo = MethodResult::new("dmarc", result).property("header.from", domain);
    if let DmarcVerdict::Fail { policy, .. } = verdict {
        let applied = match policy {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        };
        resinfo = resinfo.property("policy.dmarc", applied);
    }
    Some(resinfo)
}
