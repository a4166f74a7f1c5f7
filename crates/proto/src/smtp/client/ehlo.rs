//! Client side: the service extensions a server announces in its EHLO reply (RFC 5321 4.1.1.1).

use crate::sasl::Mechanism;

/// What the server offers. A HELO session (RFC 5321 4.1.4 fallback) offers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// True after EHLO succeeded (false after the HELO fallback).
    pub extended: bool,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870: `Some(0)` means SIZE without a fixed limit.
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3461.
    pub dsn: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 3030.
    pub chunking: bool,
    /// RFC 4954: whether AUTH was announced at all (then MAIL carries AUTH=, RFC 4954 5).
    pub auth: bool,
    /// The mechanisms we know among those announced.
    pub auth_mechanisms: Vec<Mechanism>,
    /// Every announced mechanism name, upper-cased, known or not (e.g. RCRAM-MD5).
    pub auth_names: Vec<String>,
    /// Every EHLO keyword, upper-cased (e.g. CERT, ENTITIES, ATRN).
    pub keywords: Vec<String>,
}

impl Capabilities {
    /// Parses the lines of a 250 reply to EHLO; the first line is the server's name.
    pub fn from_ehlo(lines: &[String]) -> Capabilities {
        let mut caps = Capabilities { extended: true, ..Capabilities::default() };
        for line in lines.iter().skip(1) {
            let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            let upper = keyword.to_ascii_uppercase();
            if !caps.keywords.contains(&upper) {
                caps.keywords.push(upper.clone());
            }
            match upper.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    // RFC 1870 4: an absent or zero value means no fixed maximum.
                    caps.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0));
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "CHUNKING" => caps.chunking = true,
                // `AUTH=LOGIN PLAIN` is an old, pre-RFC 4954 form some servers still send.
                "AUTH" => {
                    caps.auth = true;
                    for name in words {
                        let upper = name.to_ascii_uppercase();
                        if !caps.auth_names.contains(&upper) {
                            caps.auth_names.push(upper);
                        }
                        if let Some(m) = Mechanism::from_name(name) {
                            if !caps.auth_mechanisms.contains(&m) {
                                caps.auth_mechanisms.push(m);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// The server announced this EHLO keyword (RFC 5321 4.1.1.1), in any case.
    pub fn offers(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|k| k.eq_ignore_ascii_case(keyword))
    }

    /// The server lists this SASL mechanism on its AUTH line (RFC 4954 3), in any case.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth_names.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn typical_postfix_ehlo() {
        let caps = Capabilities::from_ehlo(&lines(&[
            "mx.example",
            "PIPELINING",
            "SIZE 10240000",
            "VRFY",
            "ETRN",
            "STARTTLS",
            "AUTH PLAIN LOGIN CRAM-MD5",
            "AUTH=PLAIN LOGIN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]));
        assert!(caps.extended && caps.pipelining && caps.starttls && caps.dsn);
        assert!(caps.eight_bit_mime && caps.smtputf8 && caps.chunking && caps.auth);
        assert_eq!(caps.size, Some(10_240_000));
        assert_eq!(caps.auth_mechanisms, [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5]);
    }

    #[test]
    fn size_without_value_and_case() {
        let caps = Capabilities::from_ehlo(&lines(&["x", "size", "pipelining"]));
        assert_eq!(caps.size, Some(0));
        assert!(caps.pipelining);
        assert!(!caps.auth);
    }

    #[test]
    fn any_keyword_and_mechanism_can_be_asked_for() {
        // SPEC 8: the Messenger verbs and mechanisms this crate has no field for.
        let caps = Capabilities::from_ehlo(&lines(&[
            "home.test",
            "cert",
            "ENTITIES",
            "AUTH CRAM-MD5 rcram-md5 X-RCRAM-VERIFY",
        ]));
        assert!(caps.offers("CERT") && caps.offers("entities") && !caps.offers("ATRN"));
        assert!(caps.offers_auth("RCRAM-MD5") && caps.offers_auth("x-rcram-verify") && caps.offers_auth("CRAM-MD5"));
        assert!(!caps.offers_auth("PLAIN"));
        assert_eq!(caps.auth_mechanisms, [Mechanism::CramMd5]);
    }
}
