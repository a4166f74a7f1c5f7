//! The RFC 8551 message around the CMS object: writing `application/pkcs7-mime` with the
//! ordinary headers outside, and finding the CMS object in a message someone sent.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::ber::{CLASS_UNIVERSAL, TAG_OID};
use crate::error::{Error, Result};
use crate::oids;
use crate::text::{decode_base64, encode_base64_lines};

/// The headers a sent message carries outside its encryption (RFC 8551 section 3.2.1 puts
/// only the MIME entity inside; these stay readable for transport). Values must not contain
/// CR, LF or NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OuterHeaders {
    pub from: String,
    pub to: Vec<String>,
    /// An RFC 5322 date-time, as the caller formats it.
    pub date: String,
    /// With or without the angle brackets.
    pub message_id: String,
    /// May be any UTF-8; non-ASCII is sent as RFC 2047 encoded-words.
    pub subject: Option<String>,
}

/// Line length of the base64 body: RFC 2045 section 6.8 allows at most 76.
pub const BASE64_LINE: usize = 76;

fn check_value(name: &str, value: &str) -> Result<()> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Error::InvalidInput(format!("{name} header contains CR, LF or NUL")));
    }
    Ok(())
}

/// RFC 2047 "B" encoded-words for a non-ASCII subject, each at most 75 characters
/// (RFC 2047 section 2), split on character boundaries and folded onto continuation lines.
fn encode_subject(subject: &str) -> String {
    if subject.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return subject.to_owned();
    }
    // "=?UTF-8?B?" + "?=" is 12 characters; 45 octets make 60 base64 characters.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in subject.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(&chunk)));
    }
    words.join("\r\n ")
}

/// The `smime-type` of a ContentInfo (RFC 8551 section 3.2.2): `authEnveloped-data` for
/// AuthEnvelopedData (RFC 5083), `enveloped-data` for anything else (what
/// [`crate::encrypt`] made before there was a choice).
fn smime_type(content_info_der: &[u8]) -> &'static str {
    let content_type = crate::ber::read(content_info_der)
        .ok()
        .and_then(|(info, _)| info.children().ok())
        .and_then(|parts| parts.first().filter(|t| t.is(CLASS_UNIVERSAL, false, TAG_OID)).map(|t| t.contents.to_vec()));
    match content_type {
        Some(oid) if oid == oids::ID_AUTH_ENVELOPED_DATA.as_bytes() => "authEnveloped-data",
        _ => "enveloped-data",
    }
}

/// Wraps a DER `ContentInfo` (from [`crate::encrypt`] or [`crate::encrypt_with`]) as an
/// RFC 8551 section 3.2 message: the caller's headers, `MIME-Version`, `Content-Type:
/// application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m` (section 3.2.2;
/// `smime-type=authEnveloped-data` for AuthEnvelopedData),
/// `Content-Disposition: attachment; filename=smime.p7m` (section 3.2.1) and a base64
/// body in lines of 76. Lines end in CRLF.
pub fn wrap_message(content_info_der: &[u8], headers: &OuterHeaders) -> Result<Vec<u8>> {
    check_value("From", &headers.from)?;
    check_value("Date", &headers.date)?;
    check_value("Message-ID", &headers.message_id)?;
    for to in &headers.to {
        check_value("To", to)?;
    }
    if let Some(subject) = &headers.subject {
        check_value("Subject", subject)?;
    }
    if headers.to.is_empty() {
        return Err(Error::InvalidInput("no To address".into()));
    }
    let mut out = String::new();
    out.push_str(&format!("From: {}\r\n", headers.from));
    out.push_str(&format!("To: {}\r\n", headers.to.join(",\r\n ")));
    if let Some(subject) = &headers.subject {
        out.push_str(&format!("Subject: {}\r\n", encode_subject(subject)));
    }
    out.push_str(&format!("Date: {}\r\n", headers.date));
    let id = headers.message_id.trim();
    if id.starts_with('<') && id.ends_with('>') {
        out.push_str(&format!("Message-ID: {id}\r\n"));
    } else {
        out.push_str(&format!("Message-ID: <{id}>\r\n"));
    }
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: application/pkcs7-mime; smime-type={}; name=smime.p7m\r\n",
        smime_type(content_info_der)
    ));
    out.push_str("Content-Transfer-Encoding: base64\r\n");
    out.push_str("Content-Disposition: attachment; filename=smime.p7m\r\n");
    out.push_str("\r\n");
    for line in encode_base64_lines(content_info_der, BASE64_LINE) {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
}

/// Splits a message at its first empty line into unfolded header fields and the body.
fn split_message(message: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = message[pos..].iter().position(|&b| b == b'\n').map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        pos = end;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        if text.starts_with([' ', '\t']) {
            // A folded continuation (RFC 5322 section 2.2.3).
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(text.trim());
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (fields, &message[pos.min(message.len())..])
}

/// A parameter of a structured header value (`name=value` or `name="value"`).
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Finds the CMS object in what was received: raw DER or BER (it starts with a SEQUENCE),
/// PEM (`-----BEGIN PKCS7-----` or `CMS`), or an RFC 8551 message whose Content-Type is
/// `application/pkcs7-mime` or the older `application/x-pkcs7-mime` (RFC 8551 section 3.2;
/// openssl writes the latter) with a base64 or binary body.
pub fn extract_cms(message: &[u8]) -> Result<Vec<u8>> {
    if message.first() == Some(&0x30) {
        return Ok(message.to_vec());
    }
    for label in ["PKCS7", "CMS"] {
        let begin = format!("-----BEGIN {label}-----");
        if message.starts_with(begin.as_bytes()) {
            let end = format!("-----END {label}-----");
            let body = &message[begin.len()..];
            let stop = crate::text::find(body, end.as_bytes())
                .ok_or_else(|| Error::Malformed(format!("PEM {label} without its END line")))?;
            return decode_base64(&body[..stop]).map_err(|_| Error::Malformed("bad base64 in PEM".into()));
        }
    }
    let (fields, body) = split_message(message);
    let header = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let content_type =
        header("content-type").ok_or_else(|| Error::Malformed("no Content-Type: not an S/MIME message".into()))?;
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/pkcs7-mime") && !media.eq_ignore_ascii_case("application/x-pkcs7-mime")
    {
        return Err(Error::Malformed(format!("Content-Type {media} is not application/pkcs7-mime")));
    }
    // RFC 8551 section 3.2.2: smime-type tells what the CMS object is; absent, find out
    // from the object itself. Both encrypted kinds are read: enveloped-data and (RFC 5083,
    // S/MIME 4.0) authEnveloped-data; the CMS content type then decides which it is.
    if let Some(kind) = parameter(content_type, "smime-type") {
        if !kind.eq_ignore_ascii_case("enveloped-data") && !kind.eq_ignore_ascii_case("authEnveloped-data") {
            return Err(Error::Unsupported(format!("smime-type={kind}, not enveloped-data or authEnveloped-data")));
        }
    }
    let encoding = header("content-transfer-encoding").unwrap_or("7bit").to_ascii_lowercase();
    match encoding.as_str() {
        "base64" => decode_base64(body).map_err(|_| Error::Malformed("body is not valid base64".into())),
        "binary" | "8bit" | "7bit" if body.first() == Some(&0x30) => Ok(body.to_vec()),
        // Some agents leave out the header but send base64 all the same.
        "7bit" => decode_base64(body).map_err(|_| Error::Malformed("body is not valid base64".into())),
        other => Err(Error::Malformed(format!("Content-Transfer-Encoding {other} with a body that is not CMS"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_encoding() {
        assert_eq!(encode_subject("plain"), "plain");
        let e = encode_subject("Grüße aus Köln, ein längerer Betreff für die Faltung über 45 Oktette");
        for word in e.split("\r\n ") {
            assert!(word.len() <= 75 && word.starts_with("=?UTF-8?B?") && word.ends_with("?="), "{word}");
        }
    }

    #[test]
    fn header_injection_refused() {
        let h = OuterHeaders {
            from: "a@b".into(),
            to: vec!["c@d".into()],
            date: "x".into(),
            message_id: "m@b".into(),
            subject: Some("hi\r\nBcc: evil@x".into()),
        };
        assert!(matches!(wrap_message(b"\x30\x00", &h), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn finds_cms_in_messages() {
        let msg = b"From: a\r\nContent-Type: application/x-pkcs7-mime;\r\n smime-type=enveloped-data; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMAA=\r\n";
        assert_eq!(extract_cms(msg).unwrap(), vec![0x30, 0x00]);
        let lf = b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: BASE64\n\nMA\nA=\n";
        assert_eq!(extract_cms(lf).unwrap(), vec![0x30, 0x00]);
        let auth = b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMAA=\r\n";
        assert_eq!(extract_cms(auth).unwrap(), vec![0x30, 0x00]);
        let signed = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMAA=\r\n";
        assert!(matches!(extract_cms(signed), Err(Error::Unsupported(_))));
        assert!(matches!(extract_cms(b"Content-Type: text/plain\r\n\r\nhi"), Err(Error::Malformed(_))));
        assert!(matches!(extract_cms(b""), Err(Error::Malformed(_))));
    }
}
