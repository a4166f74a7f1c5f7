//! Reading certificates, with RustCrypto `x509-cert` (the one X.509 parser of the server):
//! the checks of a user's certificate for PUBCERT and `vouchmail cert import` (SPEC 8.1:
//! it must parse, be current, and name the user's address in a subjectAltName
//! rfc822Name; no chain is built, the certificate is the user's own, for others to encrypt
//! to), a TLS client certificate's subject (SASL EXTERNAL), and the DNS names of our own.

use crate::support::error::{Error, ErrorKind};
use sha2::Digest;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// What the store keeps of a checked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// The rfc822Name entries of its subjectAltName, as written.
    pub emails: Vec<String>,
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The DER of the first `CERTIFICATE` block of PEM text (RFC 7468 5.1).
pub fn first_pem_certificate(pem: &str) -> Result<Vec<u8>, Error> {
    let start =
        pem.find(BEGIN).ok_or_else(|| Error::invalid("no PEM certificate (-----BEGIN CERTIFICATE----- missing)"))?;
    let body = &pem[start + BEGIN.len()..];
    let end = body.find(END).ok_or_else(|| Error::invalid("PEM certificate not ended by -----END CERTIFICATE-----"))?;
    let text: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Error::invalid("PEM certificate is not base64"))?;
    if der.is_empty() {
        return Err(Error::new(ErrorKind::Invalid, "empty PEM certificate"));
    }
    Ok(der)
}

/// Parses a DER certificate and reads what the checks need.
pub fn parse_der(der: &[u8]) -> Result<CheckedCertificate, Error> {
    let cert = Certificate::from_der(der)
        .map_err(|e| Error::new(ErrorKind::Invalid, format!("certificate does not parse: {e}")))?;
    let validity = &cert.tbs_certificate.validity;
    let seconds = |t: &x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    let emails = subject_alt_names(&cert)?
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(email) => Some(email.as_str().to_string()),
            _ => None,
        })
        .collect();
    // Re-encoded: what is stored is exactly one certificate, whatever followed it.
    let der = cert.to_der().map_err(|e| Error::new(ErrorKind::Invalid, format!("certificate does not encode: {e}")))?;
    let fingerprint = sha2::Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
    Ok(CheckedCertificate {
        der,
        not_before: seconds(&validity.not_before),
        not_after: seconds(&validity.not_after),
        fingerprint,
        emails,
    })
}

/// SPEC 8.1: the certificate parses, is current at `now`, and one of its rfc822Names is
/// `address` (compared without regard to case, as the store keeps addresses). The error
/// is the reason given with `554 5.7.0`.
pub fn check_pem_for(pem: &str, address: &str, now: i64) -> Result<CheckedCertificate, Error> {
    let checked = parse_der(&first_pem_certificate(pem)?)?;
    if now < checked.not_before {
        return Err(Error::new(ErrorKind::Invalid, "certificate is not valid yet"));
    }
    if now > checked.not_after {
        return Err(Error::new(ErrorKind::Invalid, "certificate has expired"));
    }
    if !checked.emails.iter().any(|e| e.eq_ignore_ascii_case(address)) {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("certificate does not name {address} in subjectAltName rfc822Name"),
        ));
    }
    Ok(checked)
}

/// The entries of the certificate's subjectAltName extensions (RFC 5280 4.2.1.6).
fn subject_alt_names(cert: &Certificate) -> Result<Vec<GeneralName>, Error> {
    let mut names = Vec::new();
    for extension in cert.tbs_certificate.extensions.iter().flatten() {
        if extension.extn_id != SUBJECT_ALT_NAME {
            continue;
        }
        let san = SubjectAltName::from_der(extension.extn_value.as_bytes())
            .map_err(|e| Error::new(ErrorKind::Invalid, format!("subjectAltName does not parse: {e}")))?;
        names.extend(san.0);
    }
    Ok(names)
}

/// The subject DN of a DER certificate in the RFC 4514 form (`CN=a,O=b`); None if it does
/// not parse.
pub fn subject_of(der: &[u8]) -> Option<String> {
    Certificate::from_der(der).ok().map(|cert| cert.tbs_certificate.subject.to_string())
}

/// The dNSName entries of a DER certificate's subjectAltName; None if it does not parse.
pub fn dns_names(der: &[u8]) -> Option<Vec<String>> {
    let cert = Certificate::from_der(der).ok()?;
    let names = subject_alt_names(&cert).ok()?;
    Some(
        names
            .into_iter()
            .filter_map(|name| match name {
                GeneralName::DnsName(dns) => Some(dns.as_str().to_string()),
                _ => None,
            })
            .collect(),
    )
}

/// id-ce-subjectAltName (RFC 5280 4.2.1.6).
const SUBJECT_ALT_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.29.17");

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate naming `email`, valid from the start of year `from` to
    /// the start of year `to`.
    fn make(email: &str, from: i32, to: i32) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().unwrap())];
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn now() -> i64 {
        vouchmail_proto::time::unix_seconds(std::time::SystemTime::now())
    }

    #[test]
    fn a_current_certificate_naming_the_user_passes() {
        let pem = make("Abc555@lrsupport.test", 2000, 2090);
        let checked = check_pem_for(&pem, "abc555@lrsupport.test", now()).unwrap();
        assert_eq!(checked.emails, vec!["Abc555@lrsupport.test"]);
        assert_eq!(checked.fingerprint.len(), 64);
        assert_eq!(first_pem_certificate(&pem).unwrap(), checked.der);
        let other = check_pem_for(&pem, "glen@galkam.test", now()).unwrap_err().to_string();
        assert!(other.contains("does not name glen@galkam.test"), "{other}");
        let expired = make("a@b.test", 2000, 2001);
        assert!(check_pem_for(&expired, "a@b.test", now()).unwrap_err().to_string().contains("expired"));
        let future = make("a@b.test", 2090, 2091);
        assert!(check_pem_for(&future, "a@b.test", now()).unwrap_err().to_string().contains("not valid yet"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(check_pem_for(bad, "a@b.test", now()).is_err(), "{bad:?}");
        }
    }
}
