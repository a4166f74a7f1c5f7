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

/// The value of our Authentication-Results field (RFC 8601 2.2).
pub fn authentication_results_value(authserv_id: &str, results: &[AuthResult]) -> String {
    if results.is_empty() || results.iter().all(|r| *r == AuthResult::None) {
        return format!("{authserv_id}; none");
    }
    let mut value = authserv_id.to_string();
    for result in results {
        match result {
            AuthResult::None => {}
            AuthResult::SmtpAuth { user } => value.push_str(&format!("; auth=pass smtp.auth={}", quote_value(user))),
            AuthResult::TrustedRelay => value.push_str("; x-trusted-relay=pass"),
            AuthResult::Rcram { user } => value.push_str(&format!("; x-rcram=pass smtp.auth={}", quote_value(user))),
            AuthResult::AuthKey { result, from } => {
                value.push_str(&format!("; x-authkey={} header.from={}", result.as_str(), quote_value(from)))
            }
        }
    }
    value
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
    let escaped: String = value
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    format!("\"{escaped}\"")
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
        assert_eq!(authentication_results_value("mx.example", &[AuthResult::None]), "mx.example; none");
        assert_eq!(
            authentication_results_value("mx.example", &[AuthResult::SmtpAuth { user: "alice@mx.example".into() }]),
            "mx.example; auth=pass smtp.auth=alice@mx.example"
        );
        assert_eq!(quote_value("a b"), "\"a b\"");
        assert_eq!(
            authentication_results_value("mx", &[AuthResult::Rcram { user: "glen@galkam.test".into() }]),
            "mx; x-rcram=pass smtp.auth=glen@galkam.test"
        );
        let key = AuthResult::AuthKey { result: AuthKeyResult::TempError, from: "glen@galkam.test".into() };
        assert_eq!(authentication_results_value("mx", &[key]), "mx; x-authkey=temperror header.from=glen@galkam.test");
    }
}
