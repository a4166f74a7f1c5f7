//! Trace fields the server adds: Received (RFC 5321 4.4) and Authentication-Results
//! (RFC 8601).

use std::net::IpAddr;
use std::time::SystemTime;

use crate::time::rfc5322_date;

/// RFC 3848 and RFC 6531 4.3 WITH protocol types.
pub fn with_protocol(extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> &'static str {
    match (extended, smtputf8, tls, authenticated) {
        (false, _, _, _) => "SMTP",
        (true, false, false, false) => "ESMTP",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, false) => "ESMTPS",
        (true, false, true, true) => "ESMTPSA",
        // RFC 6531 4.3: a transaction with SMTPUTF8.
        (true, true, false, false) => "UTF8SMTP",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

/// What goes into one Received field.
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// The HELO/EHLO name the client gave.
    pub helo: &'a str,
    pub peer_ip: IpAddr,
    /// Our name.
    pub by: &'a str,
    /// From [`with_protocol`].
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// RFC 5321 4.4: the FOR clause only when there is exactly one recipient, so the other
    /// recipients of a message are not disclosed.
    pub single_recipient: Option<&'a str>,
    pub time: SystemTime,
}

/// The value of a Received field (RFC 5321 4.4 Time-stamp-line), without the name.
pub fn received_value(info: &ReceivedInfo<'_>) -> String {
    let helo: String = info.helo.chars().filter(|c| !c.is_control() && *c != '(' && *c != ')').collect();
    let literal = match info.peer_ip {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let mut value =
        format!("from {helo} ({literal}) by {} (vouchmail) with {} id {}", info.by, info.protocol, info.queue_id);
    if let Some(rcpt) = info.single_recipient {
        value.push_str(&format!(" for <{rcpt}>"));
    }
    value.push_str("; ");
    value.push_str(&rfc5322_date(info.time));
    value
}

/// One method result of an Authentication-Results field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// No authentication method applied (RFC 8601 2.2 `none`).
    None,
    /// SMTP AUTH as a local user (RFC 8601 2.7.4).
    SmtpAuth { user: String },
    /// Relayed by a trusted peer (our ODMR provider in a reversed session, a configured
    /// relay): SPEC 2 `x-trusted-relay=pass`.
    TrustedRelay,
    /// SMTP AUTH with RCRAM-MD5 on the Messenger port, verified by the address's home
    /// server (SPEC 8.2): `x-rcram=pass smtp.auth=<address>`.
    Rcram { user: String },
    /// The From address's `X-Auth-Key` checked with its domain's Authentication Server
    /// (SPEC 7.5): `x-authkey=pass|fail|none|temperror header.from=<address>`.
    AuthKey { result: AuthKeyResult, from: String },
    /// A DMARC pass that the recipient domain counts (SPEC 2, 13): `dmarc=pass
    /// header.from=<domain>`, written with the other [`MethodResult`]s of the message.
    Dmarc { domain: String },
}

/// The result of one method that checks the sending domain (SPEC 13: `iprev`, `spf`,
/// `dkim`, `dmarc`) as one resinfo of Authentication-Results (RFC 8601 2.2):
/// `method=result (reason) ptype.property=value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    pub method: &'static str,
    /// RFC 8601 2.7 result keyword: pass, fail, softfail, neutral, none, temperror,
    /// permerror, policy.
    pub result: &'static str,
    /// RFC 8601 2.2 `reason=`: why, in words, when it did not pass.
    pub reason: Option<String>,
    /// `ptype.property` and its value, in order (`smtp.mailfrom`, `header.d`, ...).
    pub properties: Vec<(&'static str, String)>,
}

impl MethodResult {
    pub fn new(method: &'static str, result: &'static str) -> MethodResult {
        MethodResult { method, result, reason: None, properties: Vec::new() }
    }

    pub fn property(mut self, name: &'static str, value: impl Into<String>) -> MethodResult {
        self.properties.push((name, value.into()));
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> MethodResult {
        self.reason = Some(reason.into());
        self
    }

    /// The value of the first property called `name`.
    pub fn value_of(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn write(&self, out: &mut String) {
        out.push_str(self.method);
        out.push('=');
        out.push_str(self.result);
        if let Some(reason) = &self.reason {
            out.push_str(" reason=");
            out.push_str(&quoted(reason));
        }
        for (name, value) in &self.properties {
            out.push(' ');
            out.push_str(name);
            out.push('=');
            out.push_str(&quote_value(value));
        }
    }
}

/// The outcome of an AuthKey check (SPEC 7.5), as `X-Auth-Key-Status` and in
/// Authentication-Results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKeyResult {
    Pass,
    Fail,
    None,
    TempError,
}

impl AuthKeyResult {
    /// The Authentication-Results result keyword (RFC 8601 2.7).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKeyResult::Pass => "pass",
            AuthKeyResult::Fail => "fail",
            AuthKeyResult::None => "none",
            AuthKeyResult::TempError => "temperror",
        }
    }

    /// The `X-Auth-Key-Status` value (SPEC 7.5).
    pub fn status(self) -> &'static str {
        match self {
            AuthKeyResult::Pass => "valid",
            AuthKeyResult::Fail => "invalid",
            AuthKeyResult::None => "none",
            AuthKeyResult::TempError => "temperror",
        }
    }
}

/// The value of our Authentication-Results field (RFC 8601 2.2): the checks of the sending
/// domain (`checks`, SPEC 13), then the SPEC 2 methods (`results`); `none` when there is
/// neither. The field writer folds it (`headers::write_field`), so that many DKIM signatures
/// keep every line within 78 octets where a value allows (RFC 5322 2.1.1).
pub fn authentication_results_value(authserv_id: &str, checks: &[MethodResult], results: &[AuthResult]) -> String {
    let mut resinfos: Vec<String> = Vec::new();
    for check in checks {
        let mut text = String::new();
        check.write(&mut text);
        resinfos.push(text);
    }
    for result in results {
        match result {
            // Written by its check, with the SPF and DKIM results it stands on.
            AuthResult::None | AuthResult::Dmarc { .. } => {}
            AuthResult::SmtpAuth { user } => resinfos.push(format!("auth=pass smtp.auth={}", quote_value(user))),
            AuthResult::TrustedRelay => resinfos.push("x-trusted-relay=pass".into()),
            AuthResult::Rcram { user } => resinfos.push(format!("x-rcram=pass smtp.auth={}", quote_value(user))),
            AuthResult::AuthKey { result, from } => {
                resinfos.push(format!("x-authkey={} header.from={}", result.as_str(), quote_value(from)))
            }
        }
    }
    if resinfos.is_empty() {
        return format!("{authserv_id}; none");
    }
    format!("{authserv_id}; {}", resinfos.join("; "))
}

/// A quoted-string (RFC 2045 5.1) of free text: controls dropped, `"` and `\` escaped.
fn quoted(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    format!("\"{escaped}\"")
}

/// RFC 8601 2.2 `value` is a token or a quoted-string (RFC 2045 5.1).
fn quote_value(value: &str) -> String {
    let tspecial = |c: char| "()<>,;:\\\"/[]?= ".contains(c) || c.is_control();
    if !value.is_empty() && !value.chars().any(tspecial) {
        return value.to_string();
    }
    // An address is fine as `local@domain` when its local part is a dot-atom (RFC 8601 2.2).
    if value.contains('@') && !value.chars().any(|c| c.is_control() || c == ' ' || c == '"' || c == '\\' || c == ';') {
        return value.to_string();
    }
    quoted(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn protocol_names_follow_rfc3848() {
        assert_eq!(with_protocol(false, true, true, false), "SMTP");
        assert_eq!(with_protocol(true, false, false, false), "ESMTP");
        assert_eq!(with_protocol(true, true, true, false), "ESMTPSA");
        assert_eq!(with_protocol(true, false, false, true), "UTF8SMTP");
        assert_eq!(with_protocol(true, false, true, true), "UTF8SMTPA");
        assert_eq!(with_protocol(true, true, false, true), "UTF8SMTPS");
        assert_eq!(with_protocol(true, true, true, true), "UTF8SMTPSA");
    }

    #[test]
    fn received_field() {
        let info = ReceivedInfo {
            helo: "client.example",
            peer_ip: "192.0.2.1".parse().unwrap(),
            by: "mx.example",
            protocol: "ESMTP",
            queue_id: "abc",
            single_recipient: Some("u@mx.example"),
            time: UNIX_EPOCH + Duration::from_secs(0),
        };
        assert_eq!(
            received_value(&info),
            "from client.example ([192.0.2.1]) by mx.example (vouchmail) with ESMTP id abc for <u@mx.example>; Thu, 01 Jan 1970 00:00:00 +0000"
        );
    }

    #[test]
    fn received_strips_comment_breakers_from_helo() {
        let info = ReceivedInfo {
            helo: "evil)\r\nX-Injected: 1",
            peer_ip: "::1".parse().unwrap(),
            by: "mx",
            protocol: "SMTP",
            queue_id: "q",
            single_recipient: None,
            time: UNIX_EPOCH,
        };
        let value = received_value(&info);
        assert!(!value.contains('\n') && !value.contains('\r'));
        assert!(value.starts_with("from evilX-Injected: 1 ([IPv6:::1])"));
    }

    #[test]
    fn authentication_results_none_and_pass() {
        assert_eq!(authentication_results_value("mx.example", &[], &[AuthResult::None]), "mx.example; none");
        assert_eq!(
            authentication_results_value(
                "mx.example",
                &[],
                &[AuthResult::SmtpAuth { user: "alice@mx.example".into() }]
            ),
            "mx.example; auth=pass smtp.auth=alice@mx.example"
        );
        assert_eq!(quote_value("a b"), "\"a b\"");
        assert_eq!(
            authentication_results_value("mx", &[], &[AuthResult::Rcram { user: "glen@galkam.test".into() }]),
            "mx; x-rcram=pass smtp.auth=glen@galkam.test"
        );
        let key = AuthResult::AuthKey { result: AuthKeyResult::TempError, from: "glen@galkam.test".into() };
        assert_eq!(
            authentication_results_value("mx", &[], &[key]),
            "mx; x-authkey=temperror header.from=glen@galkam.test"
        );
    }

    /// As RFC 8601 Appendix B.6's example, with our methods: the checks of the sending
    /// domain first, then the SPEC 2 method; an IPv6 address and a reason are quoted.
    #[test]
    fn authentication_results_with_domain_checks() {
        let checks = [
            MethodResult::new("iprev", "pass").property("policy.iprev", "2001:db8::1"),
            MethodResult::new("spf", "pass").property("smtp.mailfrom", "sender@example.com"),
            MethodResult::new("dkim", "fail")
                .reason("body hash did not verify")
                .property("header.d", "example.com")
                .property("header.s", "sel")
                .property("header.b", "abc+/123"),
            MethodResult::new("dmarc", "pass").property("header.from", "example.com"),
        ];
        let value = authentication_results_value(
            "mx.example.org",
            &checks,
            &[AuthResult::Dmarc { domain: "example.com".into() }],
        );
        assert_eq!(
            value,
            "mx.example.org; iprev=pass policy.iprev=\"2001:db8::1\"; spf=pass smtp.mailfrom=sender@example.com; \
             dkim=fail reason=\"body hash did not verify\" header.d=example.com header.s=sel header.b=\"abc+/123\"; \
             dmarc=pass header.from=example.com"
        );
        let with_key = authentication_results_value(
            "mx",
            &checks[1..2],
            &[AuthResult::AuthKey { result: AuthKeyResult::Pass, from: "a@example.com".into() }],
        );
        assert_eq!(with_key, "mx; spf=pass smtp.mailfrom=sender@example.com; x-authkey=pass header.from=a@example.com");
    }
}
