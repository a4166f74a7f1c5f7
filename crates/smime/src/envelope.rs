//! CMS EnvelopedData (RFC 5652 section 6): encryption with the `cms` crate's builder, and
//! decryption by walking the BER structure (see `ber`), since what other agents send need
//! not be DER.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use cms::builder::{ContentEncryptionAlgorithm, EnvelopedDataBuilder, KeyEncryptionInfo, KeyTransRecipientInfoBuilder};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::enveloped_data::RecipientIdentifier;
use const_oid::ObjectIdentifier;
use der::{Any, Encode};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};

use crate::ber::{
    self, Tlv, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, TAG_SET,
};
use crate::cert::{Certificate, PrivateKey};
use crate::error::{Error, Result};
use crate::message::{extract_cms, wrap_message, OuterHeaders};
use crate::oids;

/// Converts bare LF line ends to CRLF: RFC 8551 section 3.1.1 asks that the MIME entity be
/// in canonical form before it is encrypted, and that is what `openssl smime -encrypt`
/// does too.
pub fn canonicalize(entity: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entity.len() + entity.len() / 32);
    let mut prev = 0u8;
    for &b in entity {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Encrypts a MIME entity for every certificate: a DER `ContentInfo` holding EnvelopedData
/// (RFC 5652 section 6.1) with AES-256-CBC content encryption (RFC 3565; RFC 8551 section
/// 2.7 makes it a MUST), and one KeyTransRecipientInfo per certificate, identified by
/// issuerAndSerialNumber, its key wrapped with RSAES-PKCS1-v1_5 (RFC 3370 section 4.2); a
/// certificate given twice gets one. The entity is first put in canonical form
/// ([`canonicalize`]).
pub fn encrypt(entity: &[u8], recipients: &[Certificate]) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::InvalidInput("no recipient certificates".into()));
    }
    let content = canonicalize(entity);
    let mut keys: Vec<(RecipientIdentifier, RsaPublicKey)> = Vec::with_capacity(recipients.len());
    for cert in recipients {
        let key = cert
            .rsa_public_key()
            .map_err(|e| Error::InvalidInput(format!("recipient certificate {}: {e}", cert.addresses().join(", "))))?;
        let tbs = &cert.inner().tbs_certificate;
        let rid = RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        // The same certificate twice (the sender among the recipients) needs one entry.
        if !keys.iter().any(|(r, _)| *r == rid) {
            keys.push((rid, key));
        }
    }
    // One generator per recipient builder (each holds it mutably until `build_with_rng`),
    // and one for the content key and IV; all are the operating system's.
    let mut rngs: Vec<OsRng> = keys.iter().map(|_| OsRng).collect();
    let mut builder = EnvelopedDataBuilder::new(None, &content, ContentEncryptionAlgorithm::Aes256Cbc, None)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    for ((rid, key), rng) in keys.into_iter().zip(rngs.iter_mut()) {
        let ktri = KeyTransRecipientInfoBuilder::new(rid, KeyEncryptionInfo::Rsa(key), rng)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        builder.add_recipient_info(ktri).map_err(|e| Error::Crypto(e.to_string()))?;
    }
    let enveloped = builder.build_with_rng(&mut OsRng).map_err(|e| Error::Crypto(e.to_string()))?;
    let info = ContentInfo {
        content_type: oids::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(|e| Error::Crypto(e.to_string()))?,
    };
    info.to_der().map_err(|e| Error::Crypto(e.to_string()))
}

/// [`encrypt`] and [`wrap_message`] in one: the complete message to send.
pub fn encrypt_message(entity: &[u8], recipients: &[Certificate], headers: &OuterHeaders) -> Result<Vec<u8>> {
    wrap_message(&encrypt(entity, recipients)?, headers)
}

fn malformed(what: &str) -> Error {
    Error::Malformed(what.to_owned())
}

fn expect<'a>(tlv: Option<&Tlv<'a>>, number: u32, what: &str) -> Result<Tlv<'a>> {
    match tlv {
        Some(t) if t.class == CLASS_UNIVERSAL && t.number == number => Ok(*t),
        _ => Err(Error::Malformed(format!("expected {what}"))),
    }
}

fn oid(tlv: &Tlv<'_>) -> Result<ObjectIdentifier> {
    if tlv.constructed || !tlv.is_universal(TAG_OID) {
        return Err(malformed("expected an OBJECT IDENTIFIER"));
    }
    ObjectIdentifier::from_bytes(tlv.contents).map_err(|_| malformed("bad OBJECT IDENTIFIER"))
}

/// An INTEGER's content octets without redundant leading zeros, to compare serial numbers
/// written by different encoders.
fn integer_bytes(tlv: &Tlv<'_>) -> Result<Vec<u8>> {
    if tlv.constructed || !tlv.is_universal(TAG_INTEGER) || tlv.contents.is_empty() {
        return Err(malformed("expected an INTEGER"));
    }
    let skip = tlv.contents.iter().take_while(|&&b| b == 0).count().min(tlv.contents.len() - 1);
    Ok(tlv.contents[skip..].to_vec())
}

/// The content-encryption algorithms read: AES-CBC (RFC 3565 section 4.1; AES-256-CBC is the
/// one RFC 8551 section 2.7 requires) and DES-EDE3-CBC (RFC 3370 section 5.1; still what
/// `openssl smime -encrypt` uses without a cipher option).
#[derive(Clone, Copy, Debug)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl Cipher {
    fn from_oid(oid: ObjectIdentifier) -> Result<Cipher> {
        match oid {
            o if o == oids::AES128_CBC => Ok(Cipher::Aes128),
            o if o == oids::AES192_CBC => Ok(Cipher::Aes192),
            o if o == oids::AES256_CBC => Ok(Cipher::Aes256),
            o if o == oids::DES_EDE3_CBC => Ok(Cipher::DesEde3),
            other => Err(Error::Unsupported(format!("content encryption algorithm {other}"))),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 | Cipher::DesEde3 => 24,
            Cipher::Aes256 => 32,
        }
    }

    fn block_len(self) -> usize {
        match self {
            Cipher::DesEde3 => 8,
            _ => 16,
        }
    }

    /// CBC decryption and the removal of its padding (RFC 5652 section 6.3: k - (l mod k)
    /// octets each of that value). Lengths are checked by the caller.
    fn decrypt(self, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        fn run<C: BlockDecryptMut + KeyIvInit>(key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>> {
            let dec = C::new_from_slices(key, iv).map_err(|_| Error::Decryption)?;
            dec.decrypt_padded_vec_mut::<Pkcs7>(ct).map_err(|_| Error::Decryption)
        }
        match self {
            Cipher::Aes128 => run::<cbc::Decryptor<aes::Aes128>>(key, iv, ciphertext),
            Cipher::Aes192 => run::<cbc::Decryptor<aes::Aes192>>(key, iv, ciphertext),
            Cipher::Aes256 => run::<cbc::Decryptor<aes::Aes256>>(key, iv, ciphertext),
            Cipher::DesEde3 => run::<cbc::Decryptor<des::TdesEde3>>(key, iv, ciphertext),
        }
    }
}

/// What decryption needs from an EnvelopedData.
struct Envelope<'a> {
    recipients: Vec<Tlv<'a>>,
    cipher: Cipher,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Walks ContentInfo and EnvelopedData (RFC 5652 sections 3 and 6.1).
fn parse_envelope(cms: &[u8]) -> Result<Envelope<'_>> {
    let (info, rest) = ber::read(cms)?;
    if !rest.iter().all(|&b| b == 0 || b.is_ascii_whitespace()) {
        return Err(malformed("data after the ContentInfo"));
    }
    let info = expect(Some(&info), TAG_SEQUENCE, "a ContentInfo SEQUENCE")?;
    let parts = info.children()?;
    let content_type = oid(parts.first().ok_or_else(|| malformed("empty ContentInfo"))?)?;
    if content_type == oids::ID_SIGNED_DATA {
        return Err(Error::Unsupported("signed-data, not enveloped-data".into()));
    }
    if content_type == oids::ID_AUTH_ENVELOPED_DATA {
        return Err(Error::Unsupported("authenticated enveloped-data (RFC 5083)".into()));
    }
    if content_type != oids::ID_ENVELOPED_DATA {
        return Err(Error::Unsupported(format!("content type {content_type}, not enveloped-data")));
    }
    // content [0] EXPLICIT ANY DEFINED BY contentType
    let explicit = match parts.get(1) {
        Some(t) if t.is(CLASS_CONTEXT, true, 0) => *t,
        _ => return Err(malformed("ContentInfo without its [0] content")),
    };
    let inner = explicit.children()?;
    let enveloped = expect(inner.first(), TAG_SEQUENCE, "an EnvelopedData SEQUENCE")?;
    let fields = enveloped.children()?;
    let mut fields = fields.iter().peekable();
    expect(fields.next(), TAG_INTEGER, "the EnvelopedData version")?;
    // originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL: not needed to decrypt.
    if fields.peek().is_some_and(|t| t.class == CLASS_CONTEXT && t.number == 0) {
        fields.next();
    }
    let recipient_set = expect(fields.next(), TAG_SET, "the RecipientInfos SET")?;
    let recipients = recipient_set.children()?;
    // EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    //   encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL }
    let eci = expect(fields.next(), TAG_SEQUENCE, "the EncryptedContentInfo")?.children()?;
    oid(eci.first().ok_or_else(|| malformed("empty EncryptedContentInfo"))?)?;
    let algorithm = expect(eci.get(1), TAG_SEQUENCE, "the content encryption AlgorithmIdentifier")?.children()?;
    let cipher = Cipher::from_oid(oid(algorithm.first().ok_or_else(|| malformed("empty AlgorithmIdentifier"))?)?)?;
    // The parameters are the IV as an OCTET STRING (RFC 3565 section 4.1, RFC 3370 5.1).
    let iv_tlv = expect(algorithm.get(1), TAG_OCTET_STRING, "the IV OCTET STRING")?;
    let iv = iv_tlv.octets()?;
    if iv.len() != cipher.block_len() {
        return Err(malformed("IV of the wrong length"));
    }
    let ciphertext = match eci.get(2) {
        Some(t) if t.class == CLASS_CONTEXT && t.number == 0 => t.octets()?,
        Some(_) => return Err(malformed("unexpected field in EncryptedContentInfo")),
        None => return Err(Error::Unsupported("detached encrypted content".into())),
    };
    if ciphertext.is_empty() || ciphertext.len() % cipher.block_len() != 0 {
        return Err(malformed("encrypted content is not a whole number of blocks"));
    }
    Ok(Envelope { recipients, cipher, iv, ciphertext })
}

/// A KeyTransRecipientInfo (RFC 5652 section 6.2.1): `rid` and `encryptedKey`, when it is
/// one and it names `cert`.
fn match_recipient(ri: &Tlv<'_>, cert: &Certificate) -> Result<Option<(ObjectIdentifier, Vec<u8>)>> {
    // Other RecipientInfo choices are [1] to [4] (section 6.2); only ktri is a SEQUENCE.
    if !ri.is(CLASS_UNIVERSAL, true, TAG_SEQUENCE) {
        return Ok(None);
    }
    let f = ri.children()?;
    expect(f.first(), TAG_INTEGER, "the KeyTransRecipientInfo version")?;
    let rid = f.get(1).ok_or_else(|| malformed("KeyTransRecipientInfo without rid"))?;
    let tbs = &cert.inner().tbs_certificate;
    let ours = if rid.is(CLASS_UNIVERSAL, true, TAG_SEQUENCE) {
        // issuerAndSerialNumber (RFC 5652 section 10.2.4)
        let parts = rid.children()?;
        let issuer = expect(parts.first(), TAG_SEQUENCE, "the issuer Name")?;
        let serial = integer_bytes(parts.get(1).ok_or_else(|| malformed("issuerAndSerialNumber without serial"))?)?;
        let cert_issuer = tbs.issuer.to_der().map_err(|e| Error::Crypto(e.to_string()))?;
        let cert_serial = tbs.serial_number.as_bytes();
        let cert_serial = &cert_serial
            [cert_serial.iter().take_while(|&&b| b == 0).count().min(cert_serial.len().saturating_sub(1))..];
        issuer.to_der()? == cert_issuer && serial == cert_serial
    } else if rid.class == CLASS_CONTEXT && rid.number == 0 {
        // subjectKeyIdentifier [0] IMPLICIT OCTET STRING
        Some(rid.octets()?) == cert.subject_key_identifier()
    } else {
        return Err(malformed("unknown RecipientIdentifier"));
    };
    if !ours {
        return Ok(None);
    }
    let alg = expect(f.get(2), TAG_SEQUENCE, "the key encryption AlgorithmIdentifier")?.children()?;
    let alg = oid(alg.first().ok_or_else(|| malformed("empty AlgorithmIdentifier"))?)?;
    let key = expect(f.get(3), TAG_OCTET_STRING, "the encryptedKey")?.octets()?;
    Ok(Some((alg, key)))
}

/// Decrypts an S/MIME enveloped-data message for `cert` with `key`, returning the inner
/// MIME entity as it was encrypted. `message` is a whole message (headers and base64 body,
/// as [`encrypt_message`] and `openssl smime -encrypt` make), PEM, or the raw DER/BER
/// ContentInfo.
///
/// The recipient is found by issuerAndSerialNumber or subjectKeyIdentifier. A failed RSA
/// unwrap is not reported as such: as RFC 3218 section 2.3 advises against Bleichenbacher's
/// attack, a random key of the right length is used instead and decryption goes on, so it
/// ends in the same [`Error::Decryption`] as bad content (CBC has no integrity, so content
/// altered in the middle may also decrypt to garbage without an error; RFC 8551 section 2.7
/// points to signing or AuthEnvelopedData for that).
pub fn decrypt(message: &[u8], key: &PrivateKey, cert: &Certificate) -> Result<Vec<u8>> {
    let public = cert.rsa_public_key()?;
    if RsaPublicKey::from(key.rsa()) != public {
        return Err(Error::InvalidInput("the private key does not belong to the certificate".into()));
    }
    let cms = extract_cms(message)?;
    let envelope = parse_envelope(&cms)?;
    let mut found = None;
    for ri in &envelope.recipients {
        if let Some(m) = match_recipient(ri, cert)? {
            found = Some(m);
            break;
        }
    }
    let (algorithm, encrypted_key) = found.ok_or(Error::NotForUs)?;
    if algorithm == oids::RSAES_OAEP {
        return Err(Error::Unsupported("RSAES-OAEP key transport".into()));
    }
    if algorithm != oids::RSA_ENCRYPTION {
        return Err(Error::Unsupported(format!("key encryption algorithm {algorithm}")));
    }
    if encrypted_key.len() != public.size() {
        return Err(Error::Decryption);
    }
    let cipher = envelope.cipher;
    // RFC 3218 section 2.3: the random key is made before the RSA operation, whatever its
    // outcome, and taken when the unwrap fails or gives a key of the wrong length.
    let mut random_key = vec![0u8; cipher.key_len()];
    OsRng.try_fill_bytes(&mut random_key).map_err(|e| Error::Crypto(e.to_string()))?;
    // Blinded RSA decryption; see the crate documentation on RUSTSEC-2023-0071.
    let unwrapped = key.rsa().decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &encrypted_key);
    let cek = match unwrapped {
        Ok(k) if k.len() == cipher.key_len() => k,
        _ => random_key,
    };
    cipher.decrypt(&cek, &envelope.iv, &envelope.ciphertext)
}
