//! Keys and certificates: `keygen` for the user's own pair, and the inspection of a
//! certificate someone publishes (PUBCERT) or that CERT returns.

use std::time::{Duration, SystemTime};

use der::asn1::{BitString, Ia5String, OctetString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::error::{Error, Result};
use crate::oids;
use crate::text::find;

/// Smallest RSA modulus accepted for keys and certificates (RFC 8551 section 4.1: agents
/// SHOULD NOT use less than 2048 bits). The largest is the `rsa` crate's limit, 4096.
pub const MIN_RSA_BITS: usize = 2048;
/// The size of the keys `keygen` makes.
pub const KEYGEN_RSA_BITS: usize = 2048;
/// The longest validity `keygen` accepts, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// The user's RSA private key.
#[derive(Clone)]
pub struct PrivateKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(RSA {} bits)", self.key.size() * 8)
    }
}

impl PrivateKey {
    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`, what `keygen` and `openssl req` write)
    /// or PKCS#1 (`RSA PRIVATE KEY`). Also takes DER PKCS#8.
    pub fn parse(bytes: &[u8]) -> Result<PrivateKey> {
        let key = if let Some(der) = pem_block(bytes, "PRIVATE KEY")? {
            RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| Error::Parse(format!("private key does not parse: {e}")))?
        } else if let Some(der) = pem_block(bytes, "RSA PRIVATE KEY")? {
            RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| Error::Parse(format!("private key does not parse: {e}")))?
        } else if pem_block(bytes, "ENCRYPTED PRIVATE KEY")?.is_some() {
            return Err(Error::Parse("private key is encrypted, which is not supported".into()));
        } else {
            RsaPrivateKey::from_pkcs8_der(bytes)
                .map_err(|_| Error::Parse("private key does not parse: neither PEM nor PKCS#8 DER".into()))?
        };
        Ok(PrivateKey { key })
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String> {
        let pem = self.key.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Crypto(e.to_string()))?;
        Ok(pem.as_str().to_owned())
    }

    pub(crate) fn rsa(&self) -> &RsaPrivateKey {
        &self.key
    }
}

/// A parsed X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    cert: x509_cert::Certificate,
}

impl Certificate {
    /// Reads a certificate in PEM (the first `CERTIFICATE` block; other text around it is
    /// ignored) or DER.
    pub fn parse(bytes: &[u8]) -> Result<Certificate> {
        match pem_block(bytes, "CERTIFICATE")? {
            Some(der) => Certificate::from_der(&der),
            None => Certificate::from_der(bytes),
        }
    }

    /// Reads a DER certificate; nothing may follow it.
    pub fn from_der(der: &[u8]) -> Result<Certificate> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| Error::Parse(format!("certificate does not parse: {e}")))?;
        Ok(Certificate { cert })
    }

    /// The certificate in DER.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        self.cert.to_der().map_err(|e| Error::Crypto(e.to_string()))
    }

    /// The certificate in PEM.
    pub fn to_pem(&self) -> Result<String> {
        Ok(pem_encode("CERTIFICATE", &self.to_der()?))
    }

    /// The rfc822Name entries of subjectAltName (RFC 5280 section 4.2.1.6; RFC 8550
    /// section 3 puts the S/MIME address there), in certificate order.
    pub fn addresses(&self) -> Vec<String> {
        let Some(ext) = self.extension(oids::CE_SUBJECT_ALT_NAME) else { return Vec::new() };
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else { return Vec::new() };
        san.0
            .iter()
            .filter_map(|name| match name {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The subject, as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The serial number in hex.
    pub fn serial_hex(&self) -> String {
        self.cert.tbs_certificate.serial_number.as_bytes().iter().map(|b| format!("{b:02X}")).collect()
    }

    pub fn not_before(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_before.to_system_time()
    }

    pub fn not_after(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_after.to_system_time()
    }

    /// Checks that the certificate can be used to encrypt mail to `address` at `now`: it is
    /// within its validity (RFC 5280 section 4.1.2.5), one of its rfc822Names is the address
    /// (compared without regard to ASCII case, as vouchmail's addresses are), its key is RSA
    /// of 2048 to 4096 bits, and where it has keyUsage or extendedKeyUsage they allow
    /// keyEncipherment and emailProtection (RFC 8550 sections 4.4.2 and 4.4.4). The error is
    /// [`Error::Certificate`] whose text is the reason.
    pub fn validate_for(&self, address: &str, now: SystemTime) -> Result<()> {
        let validity = &self.cert.tbs_certificate.validity;
        if now < self.not_before() {
            return Err(reject(format!("certificate is not valid before {}", validity.not_before)));
        }
        if now > self.not_after() {
            return Err(reject(format!("certificate expired on {}", validity.not_after)));
        }
        let names = self.addresses();
        if names.is_empty() {
            return Err(reject("certificate has no rfc822Name in subjectAltName".into()));
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(address)) {
            return Err(reject(format!("certificate is for {}, not {address}", names.join(", "))));
        }
        let key = self.rsa_public_key()?;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(reject(format!("certificate's RSA key has {bits} bits, fewer than {MIN_RSA_BITS}")));
        }
        if let Some(ext) = self.extension(oids::CE_KEY_USAGE) {
            let usage = KeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|_| reject("certificate's keyUsage does not parse".into()))?;
            if !usage.key_encipherment() {
                return Err(reject("certificate's keyUsage does not allow keyEncipherment".into()));
            }
        }
        if let Some(ext) = self.extension(oids::CE_EXT_KEY_USAGE) {
            let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|_| reject("certificate's extendedKeyUsage does not parse".into()))?;
            if !eku.0.iter().any(|o| *o == oids::KP_EMAIL_PROTECTION || *o == oids::ANY_EXTENDED_KEY_USAGE) {
                return Err(reject("certificate's extendedKeyUsage does not include emailProtection".into()));
            }
        }
        Ok(())
    }

    /// The RSA public key; [`Error::Certificate`] if the key is not RSA or is larger than
    /// 4096 bits.
    pub(crate) fn rsa_public_key(&self) -> Result<RsaPublicKey> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != oids::RSA_ENCRYPTION {
            return Err(Error::Certificate(format!(
                "certificate's key is not RSA ({}); only RSA key transport is supported",
                spki.algorithm.oid
            )));
        }
        let der = spki.to_der().map_err(|e| Error::Crypto(e.to_string()))?;
        RsaPublicKey::from_public_key_der(&der)
            .map_err(|e| Error::Certificate(format!("certificate's RSA key is not usable: {e}")))
    }

    pub(crate) fn inner(&self) -> &x509_cert::Certificate {
        &self.cert
    }

    /// The subjectKeyIdentifier: the extension's value, or when there is none the SHA-1 of
    /// the subjectPublicKey bits (RFC 5280 section 4.2.1.2, method 1), as other agents do.
    pub(crate) fn subject_key_identifier(&self) -> Option<Vec<u8>> {
        if let Some(ext) = self.extension(oids::CE_SUBJECT_KEY_IDENTIFIER) {
            return OctetString::from_der(ext.extn_value.as_bytes()).ok().map(|o| o.as_bytes().to_vec());
        }
        let bits = self.cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        Some(sha1_digest(bits))
    }

    fn extension(&self, oid: const_oid::ObjectIdentifier) -> Option<&Extension> {
        self.cert.tbs_certificate.extensions.as_ref()?.iter().find(|e| e.extn_id == oid)
    }
}

fn sha1_digest(bytes: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).to_vec()
}

fn reject(reason: String) -> Error {
    Error::Certificate(reason)
}

/// Checks that `address` can be an rfc822Name: `local@domain` in printable ASCII
/// (IA5String, RFC 5280 section 4.2.1.6; internationalized addresses would need RFC 8398's
/// SmtpUTF8Mailbox), at most 254 octets.
fn check_address(address: &str) -> Result<()> {
    let bad = |why: &str| Error::InvalidInput(format!("address {address:?}: {why}"));
    if address.is_empty() || address.len() > 254 {
        return Err(bad("must be 1 to 254 characters"));
    }
    if !address.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be printable ASCII without spaces"));
    }
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => Ok(()),
        _ => Err(bad("must be local@domain")),
    }
}

/// How far before now a new certificate's validity starts, so that a peer whose clock is
/// behind ours does not refuse it as not yet valid (PUBCERT, CERT answers, decryption).
pub const KEYGEN_BACKDATE: Duration = Duration::from_secs(3600);

/// Makes an RSA key of [`KEYGEN_RSA_BITS`] and a self-signed S/MIME certificate for
/// `address`, valid for `days` days from [`KEYGEN_BACKDATE`] ago. Returns
/// `(key_pem, cert_pem)`: the key as PKCS#8 PEM, the certificate as PEM.
pub fn keygen(address: &str, days: u32) -> Result<(String, String)> {
    let not_before = SystemTime::now().checked_sub(KEYGEN_BACKDATE).unwrap_or(SystemTime::UNIX_EPOCH);
    keygen_with(address, days, not_before, KEYGEN_RSA_BITS)
}

/// [`keygen`] with the start of validity and the key size chosen (2048 to 4096 bits).
pub fn keygen_with(address: &str, days: u32, not_before: SystemTime, bits: usize) -> Result<(String, String)> {
    check_address(address)?;
    if days == 0 || days > MAX_DAYS {
        return Err(Error::InvalidInput(format!("days must be 1 to {MAX_DAYS}, not {days}")));
    }
    if !(MIN_RSA_BITS..=4096).contains(&bits) {
        return Err(Error::InvalidInput(format!("RSA key size must be {MIN_RSA_BITS} to 4096 bits, not {bits}")));
    }
    let key = RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| Error::Crypto(format!("RSA key generation: {e}")))?;
    let cert_der = self_signed(address, days, not_before, &key)?;
    let key_pem = PrivateKey { key }.to_pem()?;
    Ok((key_pem, pem_encode("CERTIFICATE", &cert_der)))
}

fn crypto<E: std::fmt::Display>(e: E) -> Error {
    Error::Crypto(e.to_string())
}

fn extension<T: Encode>(oid: const_oid::ObjectIdentifier, critical: bool, value: &T) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(crypto)?).map_err(crypto)?,
    })
}

/// Converts to the Time choice RFC 5280 section 4.1.2.5 asks for: UTCTime through 2049,
/// GeneralizedTime from 2050, whole seconds.
fn rfc5280_time(t: SystemTime) -> Result<Time> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_err(crypto)?.as_secs();
    let dt = der::DateTime::from_unix_duration(Duration::from_secs(secs)).map_err(crypto)?;
    if dt.year() <= 2049 {
        Ok(Time::UtcTime(der::asn1::UtcTime::from_date_time(dt).map_err(crypto)?))
    } else {
        Ok(Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt)))
    }
}

fn self_signed(address: &str, days: u32, not_before: SystemTime, key: &RsaPrivateKey) -> Result<Vec<u8>> {
    let public = RsaPublicKey::from(key);
    let spki_der = public.to_public_key_der().map_err(crypto)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(crypto)?;

    // Subject CN=<address>; the rfc822Name below is what S/MIME agents match (RFC 8550
    // section 3). An address longer than ub-common-name (64, RFC 5280 appendix A.1) gets
    // an empty subject instead, and then the subjectAltName must be critical (RFC 5280
    // section 4.2.1.6).
    let with_cn = address.len() <= 64;
    let name: Name = if with_cn {
        let cn = AttributeTypeAndValue {
            oid: oids::COMMON_NAME,
            value: Any::encode_from(&Utf8StringRef::new(address).map_err(crypto)?).map_err(crypto)?,
        };
        RdnSequence(vec![RelativeDistinguishedName(SetOfVec::try_from(vec![cn]).map_err(crypto)?)])
    } else {
        RdnSequence(Vec::new())
    };

    // A positive serial of at most 20 octets, unpredictable (RFC 5280 section 4.1.2.2).
    let mut serial = [0u8; 16];
    OsRng.try_fill_bytes(&mut serial).map_err(crypto)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let serial_number = SerialNumber::new(&serial).map_err(crypto)?;

    let not_after = not_before
        .checked_add(Duration::from_secs(u64::from(days) * 86_400))
        .ok_or_else(|| Error::InvalidInput("validity overflows".into()))?;
    let validity = Validity { not_before: rfc5280_time(not_before)?, not_after: rfc5280_time(not_after)? };

    // Key identifier: SHA-1 of the subjectPublicKey (RFC 5280 section 4.2.1.2, method 1).
    let key_id = sha1_digest(spki.subject_public_key.raw_bytes());
    let extensions = vec![
        // An end entity, not a CA (RFC 5280 section 4.2.1.9).
        extension(oids::CE_BASIC_CONSTRAINTS, true, &BasicConstraints { ca: false, path_len_constraint: None })?,
        // RFC 8550 section 4.4.2: digitalSignature to sign, keyEncipherment for RSA key
        // transport; RFC 5280 section 4.2.1.3 says SHOULD be critical.
        extension(oids::CE_KEY_USAGE, true, &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment))?,
        // RFC 8550 section 4.4.4: emailProtection. Not critical, as most S/MIME certificates.
        extension(oids::CE_EXT_KEY_USAGE, false, &ExtendedKeyUsage(vec![oids::KP_EMAIL_PROTECTION]))?,
        // RFC 5280 section 4.2.1.6: critical only when the subject is empty.
        extension(
            oids::CE_SUBJECT_ALT_NAME,
            !with_cn,
            &SubjectAltName(vec![GeneralName::Rfc822Name(Ia5String::new(address).map_err(crypto)?)]),
        )?,
        extension(oids::CE_SUBJECT_KEY_IDENTIFIER, false, &OctetString::new(key_id.clone()).map_err(crypto)?)?,
        extension(
            oids::CE_AUTHORITY_KEY_IDENTIFIER,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(key_id).map_err(crypto)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?,
    ];

    // sha256WithRSAEncryption with NULL parameters (RFC 4055 section 5).
    let algorithm = AlgorithmIdentifierOwned { oid: oids::SHA256_WITH_RSA, parameters: Some(Any::null()) };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number,
        signature: algorithm.clone(),
        issuer: name.clone(),
        validity,
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(crypto)?;
    let signature = SigningKey::<Sha256>::new(key.clone()).try_sign(&tbs_der).map_err(crypto)?;
    let cert = x509_cert::Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature.to_bytes()).map_err(crypto)?,
    };
    cert.to_der().map_err(crypto)
}

/// Finds the first `-----BEGIN <label>-----` block in `bytes` and decodes it. `None` when
/// there is no such block (the input may be DER).
fn pem_block(bytes: &[u8], label: &str) -> Result<Option<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = find(bytes, begin.as_bytes()) else { return Ok(None) };
    let body = &bytes[start + begin.len()..];
    let Some(stop) = find(body, end.as_bytes()) else {
        return Err(Error::Parse(format!("PEM {label} without its END line does not parse")));
    };
    crate::text::decode_base64(&body[..stop])
        .map(Some)
        .map_err(|_| Error::Parse(format!("PEM {label} does not parse: bad base64")))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in crate::text::encode_base64_lines(der, 64) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
