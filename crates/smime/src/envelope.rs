//! CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083): encryption
//! with the `cms` crate's builder (its types for AuthEnvelopedData, which `cms` 0.2 does not
//! build), and decryption by walking the BER structure (see `ber`), since what other agents
//! send need not be DER.

use std::fmt;
use std::str::FromStr;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, KeyEncryptionInfo, KeyTransRecipientInfoBuilder,
    RecipientInfoBuilder,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{EncryptedContentInfo, RecipientIdentifier, RecipientInfos};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Encode, Tag};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use spki::AlgorithmIdentifierOwned;

use crate::ber::{
    self, Tlv, CLASS_CONTEXT, CLASS_UNIVERSAL, TAG_INTEGER, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, TAG_SET,
};
use crate::cert::{Certificate, PrivateKey};
use crate::error::{Error, Result};
use crate::gcm;
use crate::message::{extract_cms, wrap_message, OuterHeaders};
use crate::oids;

/// The content encryption of a message sent (`vouchmail client send --cipher NAME`, SPEC
/// 10). Decryption needs no choice: [`decrypt`] reads both, and what `openssl` sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentCipher {
    /// `aes256-cbc`, the default: EnvelopedData (RFC 5652 section 6) with AES-256-CBC
    /// (RFC 3565), `smime-type=enveloped-data`; every S/MIME agent reads it. CBC has no
    /// integrity of its own (RFC 8551 section 2.7).
    #[default]
    Aes256Cbc,
    /// `aes256-gcm`: S/MIME 4.0 AuthEnvelopedData (RFC 5083) with AES-256-GCM (RFC 5084
    /// section 3.2: id-aes256-GCM, a 12-octet nonce, a 16-octet ICV),
    /// `smime-type=authEnveloped-data` (RFC 8551 section 3.2.2); a changed octet makes
    /// decryption fail rather than give garbage. `openssl cms -decrypt` reads it (OpenSSL
    /// 3.0 and later; `openssl smime` does not).
    Aes256Gcm,
}

impl ContentCipher {
    /// Every cipher, the default first.
    pub const ALL: [ContentCipher; 2] = [ContentCipher::Aes256Cbc, ContentCipher::Aes256Gcm];

    /// The name `send --cipher` takes.
    pub fn name(self) -> &'static str {
        match self {
            ContentCipher::Aes256Cbc => "aes256-cbc",
            ContentCipher::Aes256Gcm => "aes256-gcm",
        }
    }
}

impl fmt::Display for ContentCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContentCipher {
    type Err = Error;

    /// A name of [`ContentCipher::name`], in any case; anything else is
    /// [`Error::InvalidInput`] naming the ciphers there are.
    fn from_str(s: &str) -> Result<ContentCipher> {
        let name = s.trim();
        ContentCipher::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
            Error::InvalidInput(format!("unknown cipher {name:?} (aes256-cbc, the default, or aes256-gcm)"))
        })
    }
}

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
/// ([`canonicalize`]). [`encrypt_with`] with the default [`ContentCipher`].
pub fn encrypt(entity: &[u8], recipients: &[Certificate]) -> Result<Vec<u8>> {
    encrypt_with(entity, recipients, ContentCipher::default())
}

/// [`encrypt`] with the given content encryption: EnvelopedData with AES-256-CBC, or
/// AuthEnvelopedData (RFC 5083 section 2.1) with AES-256-GCM (RFC 5084 section 3.2). The
/// recipients are the same KeyTransRecipientInfos either way.
pub fn encrypt_with(entity: &[u8], recipients: &[Certificate], cipher: ContentCipher) -> Result<Vec<u8>> {
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
    match cipher {
        ContentCipher::Aes256Cbc => enveloped_cbc(&content, keys),
        ContentCipher::Aes256Gcm => auth_enveloped_gcm(&content, keys),
    }
}

/// EnvelopedData with AES-256-CBC, by the `cms` builder.
fn enveloped_cbc(content: &[u8], keys: Vec<(RecipientIdentifier, RsaPublicKey)>) -> Result<Vec<u8>> {
    // One generator per recipient builder (each holds it mutably until `build_with_rng`),
    // and one for the content key and IV; all are the operating system's.
    let mut rngs: Vec<OsRng> = keys.iter().map(|_| OsRng).collect();
    let mut builder = EnvelopedDataBuilder::new(None, content, ContentEncryptionAlgorithm::Aes256Cbc, None)
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

/// AuthEnvelopedData (RFC 5083 section 2.1) with AES-256-GCM (RFC 5084 section 3.2), written
/// field by field with the `cms` crate's types:
///
/// ```text
/// AuthEnvelopedData ::= SEQUENCE {
///   version CMSVersion,                               -- 0 (RFC 5083 2.1)
///   originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,  -- absent
///   recipientInfos RecipientInfos,
///   authEncryptedContentInfo EncryptedContentInfo,    -- id-data, id-aes256-GCM
///   authAttrs [1] IMPLICIT AuthAttributes OPTIONAL,   -- absent: content is id-data
///   mac MessageAuthenticationCode,                    -- the GCM ICV
///   unauthAttrs [2] IMPLICIT UnauthAttributes OPTIONAL }  -- absent
/// ```
fn auth_enveloped_gcm(content: &[u8], keys: Vec<(RecipientIdentifier, RsaPublicKey)>) -> Result<Vec<u8>> {
    let crypto = |e: &dyn fmt::Display| Error::Crypto(e.to_string());
    // A fresh key for this message only, and a random nonce (NIST SP 800-38D 8.2.2).
    let mut cek = [0u8; gcm::KEY_LEN];
    let mut nonce = [0u8; gcm::NONCE_LEN];
    OsRng.try_fill_bytes(&mut cek).map_err(|e| crypto(&e))?;
    OsRng.try_fill_bytes(&mut nonce).map_err(|e| crypto(&e))?;
    let (ciphertext, icv) = gcm::seal_aes256(&cek, &nonce, content)?;
    let mut infos = Vec::with_capacity(keys.len());
    for (rid, key) in keys {
        let mut rng = OsRng;
        let mut ktri =
            KeyTransRecipientInfoBuilder::new(rid, KeyEncryptionInfo::Rsa(key), &mut rng).map_err(|e| crypto(&e))?;
        infos.push(ktri.build(&cek).map_err(|e| crypto(&e))?);
    }
    cek.fill(0);
    // RecipientInfos is a SET OF: DER sorts it (the `der` crate does so on conversion).
    let recipient_infos = RecipientInfos::try_from(infos).map_err(|e| crypto(&e))?;
    let params = gcm::Params { nonce: nonce.to_vec(), icv_len: gcm::ICV_LEN };
    let content_info = EncryptedContentInfo {
        content_type: oids::ID_DATA,
        content_enc_alg: AlgorithmIdentifierOwned { oid: oids::AES256_GCM, parameters: Some(params.to_any()?) },
        encrypted_content: Some(OctetString::new(ciphertext).map_err(|e| crypto(&e))?),
    };
    let mut fields = CmsVersion::V0.to_der().map_err(|e| crypto(&e))?;
    fields.extend(recipient_infos.to_der().map_err(|e| crypto(&e))?);
    fields.extend(content_info.to_der().map_err(|e| crypto(&e))?);
    fields.extend(OctetString::new(icv).map_err(|e| crypto(&e))?.to_der().map_err(|e| crypto(&e))?);
    let info = ContentInfo {
        content_type: oids::ID_AUTH_ENVELOPED_DATA,
        content: Any::new(Tag::Sequence, fields).map_err(|e| crypto(&e))?,
    };
    info.to_der().map_err(|e| crypto(&e))
}

/// [`encrypt`] and [`wrap_message`] in one: the complete message to send.
pub fn encrypt_message(entity: &[u8], recipients: &[Certificate], headers: &OuterHeaders) -> Result<Vec<u8>> {
    encrypt_message_with(entity, recipients, headers, ContentCipher::default())
}

/// [`encrypt_with`] and [`wrap_message`] in one: the complete message to send, its
/// `smime-type` the cipher's (RFC 8551 section 3.2.2).
pub fn encrypt_message_with(
    entity: &[u8],
    recipients: &[Certificate],
    headers: &OuterHeaders,
    cipher: ContentCipher,
) -> Result<Vec<u8>> {
    wrap_message(&encrypt_with(entity, recipients, cipher)?, headers)
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
enum CbcCipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl CbcCipher {
    fn from_oid(oid: ObjectIdentifier) -> Result<CbcCipher> {
        match oid {
            o if o == oids::AES128_CBC => Ok(CbcCipher::Aes128),
            o if o == oids::AES192_CBC => Ok(CbcCipher::Aes192),
            o if o == oids::AES256_CBC => Ok(CbcCipher::Aes256),
            o if o == oids::DES_EDE3_CBC => Ok(CbcCipher::DesEde3),
            other => Err(Error::Unsupported(format!("content encryption algorithm {other}"))),
        }
    }

    fn key_len(self) -> usize {
        match self {
            CbcCipher::Aes128 => 16,
            CbcCipher::Aes192 | CbcCipher::DesEde3 => 24,
            CbcCipher::Aes256 => 32,
        }
    }

    fn block_len(self) -> usize {
        match self {
            CbcCipher::DesEde3 => 8,
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
            CbcCipher::Aes128 => run::<cbc::Decryptor<aes::Aes128>>(key, iv, ciphertext),
            CbcCipher::Aes192 => run::<cbc::Decryptor<aes::Aes192>>(key, iv, ciphertext),
            CbcCipher::Aes256 => run::<cbc::Decryptor<aes::Aes256>>(key, iv, ciphertext),
            CbcCipher::DesEde3 => run::<cbc::Decryptor<des::TdesEde3>>(key, iv, ciphertext),
        }
    }
}

/// The encrypted content and what opens it.
enum Sealed {
    /// EnvelopedData's CBC content (RFC 5652 section 6.3).
    Cbc { cipher: CbcCipher, iv: Vec<u8>, ciphertext: Vec<u8> },
    /// AuthEnvelopedData's AES-GCM content (RFC 5083 section 2.1, RFC 5084 section 3.2):
    /// `aad` is what RFC 5083 section 2.2 authenticates besides the content, `mac` the ICV.
    Gcm { aes: gcm::AesKey, params: gcm::Params, aad: Vec<u8>, ciphertext: Vec<u8>, mac: Vec<u8> },
}

impl Sealed {
    fn key_len(&self) -> usize {
        match self {
            Sealed::Cbc { cipher, .. } => cipher.key_len(),
            Sealed::Gcm { aes, .. } => aes.key_len(),
        }
    }

    fn open(&self, key: &[u8]) -> Result<Vec<u8>> {
        match self {
            Sealed::Cbc { cipher, iv, ciphertext } => cipher.decrypt(key, iv, ciphertext),
            Sealed::Gcm { aes, params, aad, ciphertext, mac } => gcm::open(*aes, key, params, aad, ciphertext, mac),
        }
    }
}

/// What decryption needs from an EnvelopedData or AuthEnvelopedData.
struct Envelope<'a> {
    recipients: Vec<Tlv<'a>>,
    sealed: Sealed,
}

/// Walks ContentInfo and EnvelopedData (RFC 5652 sections 3 and 6.1) or AuthEnvelopedData
/// (RFC 5083 section 2.1); the two share everything up to the EncryptedContentInfo.
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
    let authenticated = content_type == oids::ID_AUTH_ENVELOPED_DATA;
    if !authenticated && content_type != oids::ID_ENVELOPED_DATA {
        return Err(Error::Unsupported(format!("content type {content_type}, not enveloped-data")));
    }
    let what = if authenticated { "AuthEnvelopedData" } else { "EnvelopedData" };
    // content [0] EXPLICIT ANY DEFINED BY contentType
    let explicit = match parts.get(1) {
        Some(t) if t.is(CLASS_CONTEXT, true, 0) => *t,
        _ => return Err(malformed("ContentInfo without its [0] content")),
    };
    let inner = explicit.children()?;
    let enveloped = expect(inner.first(), TAG_SEQUENCE, &format!("an {what} SEQUENCE"))?;
    let fields = enveloped.children()?;
    let mut fields = fields.iter().peekable();
    expect(fields.next(), TAG_INTEGER, &format!("the {what} version"))?;
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
    let algorithm_oid = oid(algorithm.first().ok_or_else(|| malformed("empty AlgorithmIdentifier"))?)?;
    let ciphertext = match eci.get(2) {
        Some(t) if t.class == CLASS_CONTEXT && t.number == 0 => t.octets()?,
        Some(_) => return Err(malformed("unexpected field in EncryptedContentInfo")),
        None => return Err(Error::Unsupported("detached encrypted content".into())),
    };
    if !authenticated {
        let cipher = CbcCipher::from_oid(algorithm_oid)?;
        // The parameters are the IV as an OCTET STRING (RFC 3565 section 4.1, RFC 3370 5.1).
        let iv_tlv = expect(algorithm.get(1), TAG_OCTET_STRING, "the IV OCTET STRING")?;
        let iv = iv_tlv.octets()?;
        if iv.len() != cipher.block_len() {
            return Err(malformed("IV of the wrong length"));
        }
        if ciphertext.is_empty() || ciphertext.len() % cipher.block_len() != 0 {
            return Err(malformed("encrypted content is not a whole number of blocks"));
        }
        // unprotectedAttrs [1] IMPLICIT OPTIONAL may follow: nothing to check.
        return Ok(Envelope { recipients, sealed: Sealed::Cbc { cipher, iv, ciphertext } });
    }
    let aes = gcm::AesKey::from_oid(algorithm_oid)
        .ok_or_else(|| Error::Unsupported(format!("content-authenticated-encryption algorithm {algorithm_oid}")))?;
    let params = gcm::Params::parse(algorithm.get(1))?;
    // authAttrs [1] IMPLICIT AuthAttributes OPTIONAL. RFC 5083 section 2.2: when present,
    // their DER encoding with the SET OF tag in place of [1] is the AAD; absent, the AAD is
    // empty.
    let aad = match fields.peek() {
        Some(t) if t.class == CLASS_CONTEXT && t.number == 1 => {
            if !t.constructed {
                return Err(malformed("authAttrs is not a SET"));
            }
            let set = Tlv { class: CLASS_UNIVERSAL, constructed: true, number: TAG_SET, contents: t.contents };
            fields.next();
            set.to_der()?
        }
        _ => Vec::new(),
    };
    // mac MessageAuthenticationCode (an OCTET STRING): the ICV, of aes-ICVlen octets.
    let mac = expect(fields.next(), TAG_OCTET_STRING, "the AuthEnvelopedData mac")?.octets()?;
    if mac.len() != params.icv_len {
        return Err(malformed("mac length differs from the GCMParameters aes-ICVlen"));
    }
    // unauthAttrs [2] IMPLICIT OPTIONAL may follow: not authenticated, not used.
    Ok(Envelope { recipients, sealed: Sealed::Gcm { aes, params, aad, ciphertext, mac } })
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

/// Decrypts an S/MIME enveloped-data or authEnveloped-data message for `cert` with `key`,
/// returning the inner MIME entity as it was encrypted. `message` is a whole message
/// (headers and base64 body, as [`encrypt_message`], `openssl smime -encrypt` and `openssl
/// cms -encrypt` make), PEM, or the raw DER/BER ContentInfo.
///
/// EnvelopedData (RFC 5652 section 6) with AES-CBC or DES-EDE3-CBC, and AuthEnvelopedData
/// (RFC 5083) with AES-GCM (RFC 5084 section 3.2), are read. The recipient is found by
/// issuerAndSerialNumber or subjectKeyIdentifier. A failed RSA unwrap is not reported as
/// such: as RFC 3218 section 2.3 advises against Bleichenbacher's attack, a random key of
/// the right length is used instead and decryption goes on, so it ends in the same
/// [`Error::Decryption`] as bad content. With AES-GCM any changed octet of the content, its
/// authenticated attributes or the ICV is that error too (the ICV check, RFC 5083 section
/// 2.2); CBC has no integrity, so content altered in the middle may decrypt to garbage
/// without an error (RFC 8551 section 2.7 points to signing or AuthEnvelopedData for that).
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
    let key_len = envelope.sealed.key_len();
    // RFC 3218 section 2.3: the random key is made before the RSA operation, whatever its
    // outcome, and taken when the unwrap fails or gives a key of the wrong length.
    let mut random_key = vec![0u8; key_len];
    OsRng.try_fill_bytes(&mut random_key).map_err(|e| Error::Crypto(e.to_string()))?;
    // Blinded RSA decryption; see the crate documentation on RUSTSEC-2023-0071.
    let unwrapped = key.rsa().decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &encrypted_key);
    let cek = match unwrapped {
        Ok(k) if k.len() == key_len => k,
        _ => random_key,
    };
    envelope.sealed.open(&cek)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::cert::keygen;

    const ENTITY: &[u8] = b"Content-Type: text/plain\r\n\r\nAuthenticated, or nothing.\r\n";

    /// Two identities (RSA key generation takes a moment: made once).
    fn ids() -> &'static [(PrivateKey, Certificate); 2] {
        static IDS: OnceLock<[(PrivateKey, Certificate); 2]> = OnceLock::new();
        IDS.get_or_init(|| {
            ["a@gcm.test", "b@gcm.test"].map(|address| {
                let (key, cert) = keygen(address, 2).unwrap();
                (PrivateKey::parse(key.as_bytes()).unwrap(), Certificate::parse(cert.as_bytes()).unwrap())
            })
        })
    }

    fn content_type(der: &[u8]) -> ObjectIdentifier {
        let (info, _) = ber::read(der).unwrap();
        oid(&info.children().unwrap()[0]).unwrap()
    }

    #[test]
    fn cipher_names() {
        assert_eq!(ContentCipher::default(), ContentCipher::Aes256Cbc);
        for c in ContentCipher::ALL {
            assert_eq!(c.name().parse::<ContentCipher>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!("AES256-GCM".parse::<ContentCipher>().unwrap(), ContentCipher::Aes256Gcm);
        let e = "aes128-ecb".parse::<ContentCipher>().unwrap_err();
        assert!(matches!(&e, Error::InvalidInput(s) if s.contains("aes256-gcm")), "{e}");
    }

    #[test]
    fn gcm_round_trip_to_two_recipients() {
        let [(ka, ca), (kb, cb)] = ids();
        let der = encrypt_with(ENTITY, &[ca.clone(), cb.clone(), ca.clone()], ContentCipher::Aes256Gcm).unwrap();
        assert_eq!(content_type(&der), oids::ID_AUTH_ENVELOPED_DATA);
        let envelope = parse_envelope(&der).unwrap();
        assert_eq!(envelope.recipients.len(), 2, "the certificate given twice is one recipient");
        match &envelope.sealed {
            Sealed::Gcm { aes, params, aad, ciphertext, mac } => {
                assert_eq!(*aes, gcm::AesKey::Aes256);
                assert_eq!((params.nonce.len(), params.icv_len, mac.len()), (12, 16, 16));
                assert!(aad.is_empty());
                assert_eq!(ciphertext.len(), ENTITY.len(), "GCM adds no padding");
            }
            Sealed::Cbc { .. } => panic!("not AES-GCM"),
        }
        assert_eq!(decrypt(&der, ka, ca).unwrap(), ENTITY);
        assert_eq!(decrypt(&der, kb, cb).unwrap(), ENTITY);
        // Two messages never share a key or nonce.
        let again = encrypt_with(ENTITY, std::slice::from_ref(ca), ContentCipher::Aes256Gcm).unwrap();
        let nonce = |d: &[u8]| match parse_envelope(d).unwrap().sealed {
            Sealed::Gcm { params, .. } => params.nonce,
            Sealed::Cbc { .. } => Vec::new(),
        };
        assert_ne!(nonce(&der), nonce(&again));
        // The whole message says authEnveloped-data and reads back.
        let headers = OuterHeaders {
            from: "a@gcm.test".into(),
            to: vec!["b@gcm.test".into()],
            date: "Wed, 02 Dec 2026 09:00:00 +0000".into(),
            message_id: "1@gcm.test".into(),
            subject: None,
        };
        let msg = encrypt_message_with(ENTITY, std::slice::from_ref(cb), &headers, ContentCipher::Aes256Gcm).unwrap();
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(
            text.contains("Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n")
        );
        assert_eq!(decrypt(&msg, kb, cb).unwrap(), ENTITY);
    }

    #[test]
    fn the_default_stays_enveloped_data_with_aes256_cbc() {
        let [(ka, ca), _] = ids();
        let der = encrypt(ENTITY, std::slice::from_ref(ca)).unwrap();
        assert_eq!(content_type(&der), oids::ID_ENVELOPED_DATA);
        assert!(matches!(parse_envelope(&der).unwrap().sealed, Sealed::Cbc { cipher: CbcCipher::Aes256, .. }));
        assert_eq!(decrypt(&der, ka, ca).unwrap(), ENTITY);
        let named = encrypt_with(ENTITY, std::slice::from_ref(ca), ContentCipher::Aes256Cbc).unwrap();
        assert_eq!(content_type(&named), oids::ID_ENVELOPED_DATA);
        let text = String::from_utf8(
            encrypt_message(
                ENTITY,
                std::slice::from_ref(ca),
                &OuterHeaders {
                    from: "a@gcm.test".into(),
                    to: vec!["a@gcm.test".into()],
                    date: "x".into(),
                    message_id: "2@gcm.test".into(),
                    subject: None,
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert!(text.contains("smime-type=enveloped-data;"), "{text}");
    }

    /// RFC 5083 2.2: the ICV covers the content; a changed octet anywhere gives an error or
    /// (in a field nothing reads, such as the other recipient's) the entity itself, never
    /// other content.
    #[test]
    fn gcm_flipped_octets_fail_the_tag_check() {
        let [(ka, ca), (_, cb)] = ids();
        let der = encrypt_with(ENTITY, std::slice::from_ref(ca), ContentCipher::Aes256Gcm).unwrap();
        let n = der.len();
        // The DER ends with the ciphertext, then the mac: 04 10 and 16 octets.
        assert_eq!(&der[n - 18..n - 16], [0x04, 0x10]);
        for at in [n - 19, n - 18 - ENTITY.len(), n - 18 - ENTITY.len() / 2, n - 1, n - 16] {
            let mut bad = der.clone();
            bad[at] ^= 0x01;
            assert_eq!(decrypt(&bad, ka, ca), Err(Error::Decryption), "octet {at} of {n}");
        }
        let mut failed = 0;
        for at in 0..n {
            let mut bad = der.clone();
            bad[at] ^= 0x5a;
            match decrypt(&bad, ka, ca) {
                Ok(out) => assert_eq!(out, ENTITY, "octet {at}: changed content came out"),
                Err(_) => failed += 1,
            }
        }
        assert!(failed * 10 >= n * 9, "only {failed} of {n} changes failed");
        // For somebody else.
        let for_b = encrypt_with(ENTITY, std::slice::from_ref(cb), ContentCipher::Aes256Gcm).unwrap();
        assert_eq!(decrypt(&for_b, ka, ca), Err(Error::NotForUs));
    }
}
