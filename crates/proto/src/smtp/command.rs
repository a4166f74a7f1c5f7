//! SMTP command parsing (RFC 5321 4.1) with the ESMTP parameters vouchmail supports.
//!
//! A command line arrives here without its line ending. Parsing never panics: every
//! malformed input becomes the [`SmtpError`] the server should answer with.

use super::address::{parse_forward_path, parse_reverse_path, ForwardPath, ReversePath};
use super::reply::{Reply, SmtpError};
pub use super::xtext::{xtext_decode, xtext_encode, DsnReturn};

/// A parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
        params: RcptParams,
    },
    Data,
    /// RFC 3030 2: `BDAT <size> [LAST]`.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    /// RFC 4954 4: `AUTH mechanism [initial-response]`.
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    /// RFC 1985: `ETRN [@|#]node`.
    Etrn(String),
    /// RFC 2645 5.2.1: `ATRN [domain[,domain]...]`.
    Atrn(Vec<String>),
    /// SPEC 8.1: `CERT <address>` or `CERT <published-id>` (Messenger port).
    Cert(crate::messenger::CertTarget),
    /// SPEC 8.1: `PUBCERT`, then the PEM lines.
    Pubcert,
    /// SPEC 8.4: `ENTITIES [<since-serial>]`.
    Entities(u64),
    /// SPEC 8.4: `BOOK <query>`.
    Book(String),
    /// `NOTIFY <record>` (SPEC 8.3).
    Notify(crate::messenger::tracking::Record),
    /// `RECEIPT <message-id> DECRYPTED|FAILED` (SPEC 8.3).
    Receipt(crate::messenger::tracking::Receipt),
    /// `TRACK [<since>]` (SPEC 8.3): None for all records.
    Track(Option<i64>),
}

/// BODY= values (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// The AUTH= parameter of MAIL (RFC 4954 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthParam {
    /// `AUTH=<>`: the client does not assert the message is authentic.
    Unauthenticated,
    /// The decoded xtext identity.
    Identity(String),
}

impl AuthParam {
    /// The wire form, xtext-encoded.
    pub fn to_wire(&self) -> String {
        match self {
            AuthParam::Unauthenticated => "<>".to_string(),
            AuthParam::Identity(id) => xtext_encode(id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// RFC 1870 SIZE declaration.
    pub size: Option<u64>,
    pub body: BodyType,
    /// RFC 6531 3.4.
    pub smtputf8: bool,
    pub ret: Option<DsnReturn>,
    /// RFC 3461 4.4, decoded from xtext.
    pub envid: Option<String>,
    pub auth: Option<AuthParam>,
}

/// NOTIFY= (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub fn never(&self) -> bool {
        !self.success && !self.failure && !self.delay
    }

    pub fn to_wire(&self) -> String {
        if self.never() {
            return "NEVER".to_string();
        }
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        parts.join(",")
    }

    pub fn parse(value: &str) -> Option<Notify> {
        let mut notify = Notify::default();
        let mut never = false;
        for item in value.split(',') {
            match item.to_ascii_uppercase().as_str() {
                "NEVER" => never = true,
                "SUCCESS" => notify.success = true,
                "FAILURE" => notify.failure = true,
                "DELAY" => notify.delay = true,
                _ => return None,
            }
        }
        // RFC 3461 4.1: NEVER must appear alone.
        if never && (notify.success || notify.failure || notify.delay) {
            return None;
        }
        Some(notify)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT=addr-type;xtext (RFC 3461 4.2), decoded: (addr-type, address).
    pub orcpt: Option<(String, String)>,
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, SmtpError> {
    let line = std::str::from_utf8(line).map_err(|_| Reply::syntax("Command is not valid UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let arg = rest.trim_matches(' ');
    let no_arg = |cmd: Command| -> Result<Command, SmtpError> {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(Reply::syntax("This command takes no argument"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => Ok(Command::Helo(domain_argument(arg, "HELO")?)),
        "EHLO" => Ok(Command::Ehlo(domain_argument(arg, "EHLO")?)),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_arg(Command::Data),
        "BDAT" => parse_bdat(arg),
        "RSET" => no_arg(Command::Rset),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" if !arg.is_empty() => Ok(Command::Vrfy(arg.to_string())),
        "EXPN" if !arg.is_empty() => Ok(Command::Expn(arg.to_string())),
        "VRFY" | "EXPN" => Err(Reply::syntax("Syntax: VRFY|EXPN address")),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls),
        "AUTH" => parse_auth(arg),
        "ETRN" if !arg.is_empty() => Ok(Command::Etrn(arg.to_string())),
        "ETRN" => Err(Reply::syntax("Syntax: ETRN domain")),
        "ATRN" => parse_atrn(arg),
        "CERT" => Ok(Command::Cert(crate::messenger::parse_cert_argument(arg)?)),
        "PUBCERT" => no_arg(Command::Pubcert),
        "ENTITIES" => Ok(Command::Entities(crate::messenger::parse_entities_argument(arg)?)),
        "BOOK" => Ok(Command::Book(crate::messenger::parse_book_query(arg)?)),
        // SPEC 8.3: a malformed argument is 501 5.5.4.
        "NOTIFY" => {
            crate::messenger::tracking::parse_notify_argument(arg).map(Command::Notify).map_err(|e| e.to_reply())
        }
        "RECEIPT" => {
            crate::messenger::tracking::parse_receipt_argument(arg).map(Command::Receipt).map_err(|e| e.to_reply())
        }
        "TRACK" => crate::messenger::tracking::parse_track_argument(arg).map(Command::Track).map_err(|e| e.to_reply()),
        _ => Err(Reply::unrecognized("Command unrecognized")),
    }
}

/// RFC 5321 4.1.1.1: `EHLO Domain | address-literal`. We only check the shape loosely
/// (like Postfix, a misconfigured client name is not worth refusing mail over).
fn domain_argument(arg: &str, verb: &str) -> Result<String, SmtpError> {
    let name = arg.split(' ').next().unwrap_or("");
    if name.is_empty() {
        return Err(Reply::syntax(format!("Syntax: {verb} hostname")));
    }
    if name.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        return Err(Reply::syntax(format!("Invalid {verb} hostname")));
    }
    Ok(name.to_string())
}

/// Splits `FROM:` / `TO:` off the argument, case-insensitively, returning the path text.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = rest.trim_start_matches(' ');
    if rest.len() < keyword.len() || !rest.is_char_boundary(keyword.len()) {
        return None;
    }
    let (head, tail) = rest.split_at(keyword.len());
    head.eq_ignore_ascii_case(keyword).then_some(tail)
}

fn parse_mail(rest: &str) -> Result<Command, SmtpError> {
    let path = strip_keyword(rest, "FROM:").ok_or_else(|| Reply::syntax("Syntax: MAIL FROM:<address>"))?;
    let (from, params_text) =
        parse_reverse_path(path).map_err(|e| Reply::bad_sender_syntax(format!("Bad sender address: {e}")))?;
    let mut params = MailParams::default();
    let mut seen = Vec::new();
    for (key, value) in esmtp_params(params_text)? {
        let upper = key.to_ascii_uppercase();
        // A repeated identical parameter is harmless (Python's smtplib adds SMTPUTF8 again
        // when the caller gave it already); a conflicting repeat is an error.
        if let Some((_, earlier)) = seen.iter().find(|(k, _)| *k == upper) {
            if *earlier == value {
                continue;
            }
            return Err(Reply::syntax(format!("Conflicting parameter {upper}")));
        }
        seen.push((upper.clone(), value));
        match (upper.as_str(), value) {
            // RFC 1870 6
            ("SIZE", Some(v)) => {
                params.size = Some(v.parse().map_err(|_| Reply::syntax("Bad SIZE value"))?);
            }
            ("BODY", Some(v)) => {
                params.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    "BINARYMIME" => BodyType::BinaryMime,
                    _ => return Err(Reply::syntax("Bad BODY value")),
                }
            }
            // RFC 6531 3.4: SMTPUTF8 takes no value.
            ("SMTPUTF8", None) => params.smtputf8 = true,
            ("RET", Some(v)) => {
                params.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => DsnReturn::Full,
                    "HDRS" => DsnReturn::Headers,
                    _ => return Err(Reply::syntax("Bad RET value")),
                })
            }
            ("ENVID", Some(v)) => {
                let decoded = xtext_decode(v).ok_or_else(|| Reply::syntax("Bad ENVID xtext"))?;
                // RFC 3461 4.4: at most 100 characters.
                if v.len() > 100 {
                    return Err(Reply::syntax("ENVID too long"));
                }
                params.envid = Some(decoded);
            }
            // RFC 4954 5
            ("AUTH", Some(v)) => {
                params.auth = Some(if v == "<>" {
                    AuthParam::Unauthenticated
                } else {
                    AuthParam::Identity(xtext_decode(v).ok_or_else(|| Reply::syntax("Bad AUTH xtext"))?)
                });
            }
            _ => return Err(unsupported_parameter(&upper)),
        }
    }
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(rest: &str) -> Result<Command, SmtpError> {
    let path = strip_keyword(rest, "TO:").ok_or_else(|| Reply::syntax("Syntax: RCPT TO:<address>"))?;
    let (to, params_text) =
        parse_forward_path(path).map_err(|e| Reply::bad_recipient_syntax(format!("Bad recipient address: {e}")))?;
    let mut params = RcptParams::default();
    for (key, value) in esmtp_params(params_text)? {
        let upper = key.to_ascii_uppercase();
        match (upper.as_str(), value) {
            ("NOTIFY", Some(v)) if params.notify.is_none() => {
                params.notify = Some(Notify::parse(v).ok_or_else(|| Reply::syntax("Bad NOTIFY value"))?);
            }
            ("ORCPT", Some(v)) if params.orcpt.is_none() => {
                let (addr_type, addr) = v.split_once(';').ok_or_else(|| Reply::syntax("Bad ORCPT value"))?;
                let addr = xtext_decode(addr).ok_or_else(|| Reply::syntax("Bad ORCPT xtext"))?;
                // RFC 3461 4.2: addr-type is an atom; the whole value is at most 500 characters.
                if addr_type.is_empty()
                    || v.len() > 500
                    || !addr_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(Reply::syntax("Bad ORCPT value"));
                }
                params.orcpt = Some((addr_type.to_string(), addr));
            }
            ("NOTIFY", Some(_)) | ("ORCPT", Some(_)) => {
                return Err(Reply::syntax(format!("Duplicate parameter {upper}")));
            }
            _ => return Err(unsupported_parameter(&upper)),
        }
    }
    Ok(Command::Rcpt { to, params })
}

/// 555 for a parameter we do not know, naming at most its first 64 characters: the name
/// may fill most of a 512-octet command line, and a reply line must stay within 512
/// octets too (RFC 5321 4.5.3.1.5). Names are ASCII (see [`esmtp_params`]).
fn unsupported_parameter(name: &str) -> SmtpError {
    match name.get(..64) {
        Some(head) if head.len() < name.len() => Reply::unknown_parameter(format!("Unsupported parameter {head}...")),
        _ => Reply::unknown_parameter(format!("Unsupported parameter {name}")),
    }
}

/// RFC 5321 4.1.2 `Mail-parameters = esmtp-param *(SP esmtp-param)`.
fn esmtp_params(text: &str) -> Result<Vec<(&str, Option<&str>)>, SmtpError> {
    let mut out = Vec::new();
    for param in text.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        let key_ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value.is_none_or(|v| !v.is_empty() && v.chars().all(|c| !c.is_control() && c != '='));
        if !key_ok || !value_ok {
            return Err(Reply::syntax("Malformed ESMTP parameter"));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn parse_bdat(arg: &str) -> Result<Command, SmtpError> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| Reply::syntax("Syntax: BDAT size [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(Reply::syntax("Syntax: BDAT size [LAST]")),
    };
    if words.next().is_some() {
        return Err(Reply::syntax("Syntax: BDAT size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(arg: &str) -> Result<Command, SmtpError> {
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or_else(|| Reply::syntax("Syntax: AUTH mechanism [initial-response]"))?;
    let mut initial_response = words.next().map(str::to_string);
    // SPEC 8.2 step 2: `AUTH X-RCRAM-VERIFY <address> <verifier's name>` has two arguments.
    if mechanism.eq_ignore_ascii_case(crate::messenger::rcram::VERIFY_MECHANISM) {
        if let (Some(first), Some(second)) = (initial_response.as_mut(), words.next()) {
            first.push(' ');
            first.push_str(second);
        }
    }
    if words.next().is_some() {
        return Err(Reply::syntax("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial_response })
}

/// RFC 2645 5.2.1: `atrn = "ATRN" [SP domain *("," domain)]`, read liberally: spaces after
/// commas, any case.
fn parse_atrn(arg: &str) -> Result<Command, SmtpError> {
    if arg.is_empty() {
        return Ok(Command::Atrn(Vec::new()));
    }
    let mut domains = Vec::new();
    for item in arg.split(',') {
        let domain = item.trim_matches(' ');
        if domain.is_empty() || domain.contains(' ') || domain.chars().any(|c| c.is_control()) {
            return Err(Reply::syntax("Syntax: ATRN [domain[,domain]...]"));
        }
        domains.push(domain.to_ascii_lowercase());
    }
    Ok(Command::Atrn(domains))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Address;

    fn mailbox(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse_command(b"ehlo client.example").unwrap(), Command::Ehlo("client.example".into()));
        assert_eq!(parse_command(b"QuIt").unwrap(), Command::Quit);
        assert_eq!(parse_command(b"data").unwrap(), Command::Data);
    }

    #[test]
    fn helo_needs_a_name() {
        assert_eq!(parse_command(b"HELO").unwrap_err().code, 501);
        assert_eq!(parse_command(b"EHLO ").unwrap_err().code, 501);
    }

    #[test]
    fn mail_with_params() {
        let cmd =
            parse_command(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 AUTH=e+3Dmc2@x")
                .unwrap();
        let Command::Mail { from, params } = cmd else { panic!() };
        assert_eq!(from, ReversePath::Mailbox(mailbox("a@b.example")));
        assert_eq!(params.size, Some(1000));
        assert_eq!(params.body, BodyType::EightBitMime);
        assert_eq!(params.ret, Some(DsnReturn::Headers));
        assert_eq!(params.envid.as_deref(), Some("QQ+1"));
        assert_eq!(params.auth, Some(AuthParam::Identity("e=mc2@x".into())));
    }

    #[test]
    fn mail_null_sender_and_auth_empty() {
        let Command::Mail { from, params } = parse_command(b"mail from:<> AUTH=<>").unwrap() else { panic!() };
        assert_eq!(from, ReversePath::Null);
        assert_eq!(params.auth, Some(AuthParam::Unauthenticated));
    }

    #[test]
    fn mail_liberal_space_after_colon() {
        assert!(matches!(parse_command(b"MAIL FROM: <a@b.example>"), Ok(Command::Mail { .. })));
    }

    #[test]
    fn mail_errors() {
        assert_eq!(parse_command(b"MAIL <a@b>").unwrap_err().code, 501);
        assert_eq!(parse_command(b"MAIL FROM:<a@b> FOO=1").unwrap_err().code, 555);
        assert_eq!(parse_command(b"MAIL FROM:<a@b> SIZE=x").unwrap_err().code, 501);
        assert_eq!(parse_command(b"MAIL FROM:<a@b> SIZE=1 SIZE=2").unwrap_err().code, 501);
        assert_eq!(parse_command(b"MAIL FROM:<a@b> SMTPUTF8=yes").unwrap_err().code, 555);
        let e = parse_command(b"MAIL FROM:a@b").unwrap_err();
        assert_eq!((e.code, e.enhanced.unwrap().to_string()), (501, "5.1.7".to_string()));
    }

    #[test]
    fn rcpt_with_dsn_params() {
        let cmd =
            parse_command(b"RCPT TO:<u@local.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40x.example").unwrap();
        let Command::Rcpt { to, params } = cmd else { panic!() };
        assert_eq!(to, ForwardPath::Mailbox(mailbox("u@local.example")));
        assert_eq!(params.notify, Some(Notify { success: true, failure: true, delay: false }));
        assert_eq!(params.orcpt, Some(("rfc822".into(), "u@x.example".into())));
    }

    #[test]
    fn rcpt_errors() {
        assert_eq!(parse_command(b"RCPT TO:<u@x> NOTIFY=NEVER,SUCCESS").unwrap_err().code, 501);
        assert_eq!(parse_command(b"RCPT TO:<u@x> NOTIFY=NEVER NOTIFY=NEVER").unwrap_err().code, 501);
        assert_eq!(parse_command(b"RCPT TO:<u@x> X=1").unwrap_err().code, 555);
        let e = parse_command(b"RCPT TO:<>").unwrap_err();
        assert_eq!(e.enhanced.unwrap().to_string(), "5.1.3");
    }

    #[test]
    fn rcpt_postmaster() {
        let Command::Rcpt { to, .. } = parse_command(b"RCPT TO:<Postmaster>").unwrap() else { panic!() };
        assert_eq!(to, ForwardPath::Postmaster);
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(parse_command(b"BDAT 100").unwrap(), Command::Bdat { size: 100, last: false });
        assert_eq!(parse_command(b"bdat 0 last").unwrap(), Command::Bdat { size: 0, last: true });
        assert_eq!(parse_command(b"BDAT").unwrap_err().code, 501);
        assert_eq!(parse_command(b"BDAT -1").unwrap_err().code, 501);
        assert_eq!(parse_command(b"BDAT 1 FIRST").unwrap_err().code, 501);
        assert_eq!(parse_command(b"BDAT 99999999999999999999999").unwrap_err().code, 501);
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse_command(b"AUTH plain =").unwrap(),
            Command::Auth { mechanism: "PLAIN".into(), initial_response: Some("=".into()) }
        );
        assert_eq!(
            parse_command(b"AUTH CRAM-MD5").unwrap(),
            Command::Auth { mechanism: "CRAM-MD5".into(), initial_response: None }
        );
        assert_eq!(parse_command(b"AUTH").unwrap_err().code, 501);
    }

    #[test]
    fn atrn_is_liberal() {
        assert_eq!(parse_command(b"ATRN").unwrap(), Command::Atrn(vec![]));
        assert_eq!(
            parse_command(b"ATRN Example.org, foo.example").unwrap(),
            Command::Atrn(vec!["example.org".into(), "foo.example".into()])
        );
        assert_eq!(parse_command(b"ATRN a,,b").unwrap_err().code, 501);
    }

    #[test]
    fn unknown_and_garbage() {
        assert_eq!(parse_command(b"FROB").unwrap_err().code, 500);
        assert_eq!(parse_command(b"").unwrap_err().code, 500);
        assert_eq!(parse_command(b"\xff\xfe").unwrap_err().code, 501);
        assert_eq!(parse_command(b"DATA now").unwrap_err().code, 501);
    }

    #[test]
    fn unknown_parameter_reply_fits_a_reply_line() {
        // Caught by the session fuzz targets' reply-line check: the 555 echoed the whole
        // parameter name, up to a 522-octet reply line (RFC 5321 4.5.3.1.5: at most 512).
        let name = "X".repeat(494);
        for line in [format!("MAIL FROM:<a@b> {name}"), format!("RCPT TO:<a@b> {name}=1")] {
            assert_eq!(line.len() + 2, 512);
            let reply = parse_command(line.as_bytes()).unwrap_err();
            assert_eq!(reply.code, 555);
            assert!(reply.to_wire().len() <= 512, "{reply}");
            assert!(reply.text.starts_with(&format!("Unsupported parameter {}...", &name[..64])));
        }
        let reply = parse_command(b"MAIL FROM:<a@b> X-SHORT").unwrap_err();
        assert_eq!(reply.text, "Unsupported parameter X-SHORT");
    }

    #[test]
    fn xtext_round_trip() {
        for s in ["plain", "a+b=c", "sp ace", "ünï"] {
            assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(xtext_decode("+4"), None);
        assert_eq!(xtext_decode("+4a"), None);
        assert_eq!(xtext_decode("a=b"), None);
    }
}
