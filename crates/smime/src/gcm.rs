//! AES-GCM content encryption for AuthEnvelopedData (RFC 5083, with the algorithm of
//! RFC 5084 section 3.2): the GCMParameters, sealing the content (AES-256, a 12-octet
//! nonce, a 16-octet ICV) and opening it with the ICV checked.
//!
//! Every content-encryption key is fresh and used for one message only, so a random nonce
//! never meets a second one under the same key (NIST SP 800-38D section 8: an IV must not
//! repeat under one key).
//!
//! The ICV length comes from the sender (aes-ICVlen and the `mac` octets): both must agree
//! and lie in RFC 5084's 12 to 16, so a forger cannot shrink the check to a few octets.

use aes_gcm::aead::consts::{U12, U13, U14, U15, U16};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::aes::cipher::{BlockCipher, BlockEncrypt, BlockSizeUser};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::{AeadInPlace, AesGcm, KeyInit};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Encode, Tag as DerTag};

use crate::ber::{Tlv, CLASS_UNIVERSAL, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE};
use crate::error::{Error, Result};
use crate::oids;

/// The nonce length written and read: 12 octets, the size RFC 5084 section 3.2 recommends
/// (and NIST SP 800-38D's 96-bit IV; `openssl cms` uses it too).
pub const NONCE_LEN: usize = 12;
/// The ICV length written: 16 octets, the longest of RFC 5084 section 3.2's
/// AES-GCM-ICVlen (12 to 16), as `openssl cms` writes.
pub const ICV_LEN: usize = 16;
/// The AES-256 key length written.
pub const KEY_LEN: usize = 32;
/// RFC 5084 section 3.2: `aes-ICVlen AES-GCM-ICVlen DEFAULT 12`.
const DEFAULT_ICV_LEN: usize = 12;

/// The AES key sizes read: id-aes128-GCM, id-aes192-GCM and id-aes256-GCM (RFC 5084
/// section 3.2; RFC 8551 section 2.7 requires receiving agents to read the first and the
/// last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesKey {
    Aes128,
    Aes192,
    Aes256,
}

impl AesKey {
    pub fn from_oid(oid: ObjectIdentifier) -> Option<AesKey> {
        match oid {
            o if o == oids::AES128_GCM => Some(AesKey::Aes128),
            o if o == oids::AES192_GCM => Some(AesKey::Aes192),
            o if o == oids::AES256_GCM => Some(AesKey::Aes256),
            _ => None,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            AesKey::Aes128 => 16,
            AesKey::Aes192 => 24,
            AesKey::Aes256 => 32,
        }
    }
}

/// GCMParameters (RFC 5084 section 3.2):
///
/// ```text
/// GCMParameters ::= SEQUENCE {
///   aes-nonce        OCTET STRING, -- recommended size is 12 octets
///   aes-ICVlen       AES-GCM-ICVlen DEFAULT 12 }
/// AES-GCM-ICVlen ::= INTEGER (12 | 13 | 14 | 15 | 16)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub nonce: Vec<u8>,
    pub icv_len: usize,
}

impl Params {
    /// Reads the parameters of a content-encryption AlgorithmIdentifier. Only the
    /// 12-octet nonce is implemented (what RFC 5084 recommends and every agent seen sends).
    pub fn parse(parameters: Option<&Tlv<'_>>) -> Result<Params> {
        let seq = match parameters {
            Some(t) if t.is(CLASS_UNIVERSAL, true, TAG_SEQUENCE) => t.children()?,
            _ => return Err(Error::Malformed("AES-GCM without its GCMParameters SEQUENCE".into())),
        };
        let nonce = match seq.first() {
            Some(t) if t.is_universal(TAG_OCTET_STRING) => t.octets()?,
            _ => return Err(Error::Malformed("GCMParameters without its aes-nonce".into())),
        };
        let icv_len = match seq.get(1) {
            None => DEFAULT_ICV_LEN,
            Some(t) if !t.constructed && t.is_universal(TAG_INTEGER) => match t.contents {
                // DER and BER alike write 12 to 16 in one octet (a leading zero octet
                // would be a non-minimal BER encoding; accept it all the same).
                [n] | [0, n] if (12..=16).contains(n) => usize::from(*n),
                _ => return Err(Error::Malformed("GCMParameters aes-ICVlen is not 12 to 16".into())),
            },
            Some(_) => return Err(Error::Malformed("GCMParameters aes-ICVlen is not an INTEGER".into())),
        };
        if seq.len() > 2 {
            return Err(Error::Malformed("GCMParameters with more than two fields".into()));
        }
        if nonce.len() != NONCE_LEN {
            return Err(Error::Unsupported(format!("AES-GCM nonce of {} octets (only 12)", nonce.len())));
        }
        Ok(Params { nonce, icv_len })
    }

    /// The DER GCMParameters, for the AlgorithmIdentifier's `parameters`. aes-ICVlen is
    /// written even when it is 12 (DER leaves a DEFAULT value out, but only 16 is written
    /// here).
    pub fn to_any(&self) -> Result<Any> {
        let crypto = |e: der::Error| Error::Crypto(e.to_string());
        let icv = u8::try_from(self.icv_len).map_err(|_| Error::InvalidInput("ICV length".into()))?;
        let mut fields = OctetString::new(self.nonce.clone()).map_err(crypto)?.to_der().map_err(crypto)?;
        if self.icv_len != DEFAULT_ICV_LEN {
            fields.extend(icv.to_der().map_err(crypto)?);
        }
        Any::new(DerTag::Sequence, fields).map_err(crypto)
    }
}

/// AES-256-GCM encryption of `plaintext` with no additional authenticated data (RFC 5083
/// section 2.2: the AAD is empty when authAttrs is absent, as it is here). Returns the
/// ciphertext (the same length as the plaintext) and the 16-octet ICV, which goes in the
/// `mac` field (RFC 5083 section 2.1).
pub fn seal_aes256(key: &[u8], nonce: &[u8], plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let cipher = AesGcm::<Aes256, U12, U16>::new_from_slice(key).map_err(|_| Error::Crypto("AES-256 key".into()))?;
    let nonce: Nonce<AesGcm<Aes256, U12, U16>> =
        GenericArray::from_exact_iter(nonce.iter().copied()).ok_or_else(|| Error::Crypto("AES-GCM nonce".into()))?;
    let mut buffer = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&nonce, b"", &mut buffer)
        .map_err(|_| Error::Crypto("AES-GCM encryption (content too long?)".into()))?;
    Ok((buffer, tag.to_vec()))
}

/// Decrypts and checks the ICV against `mac`. Any failure, a wrong key or a changed octet
/// of the ciphertext, the AAD or the tag, is the one [`Error::Decryption`], and nothing of
/// the plaintext is returned.
pub fn open(aes: AesKey, key: &[u8], params: &Params, aad: &[u8], ciphertext: &[u8], mac: &[u8]) -> Result<Vec<u8>> {
    match aes {
        AesKey::Aes128 => open_aes::<Aes128>(key, params, aad, ciphertext, mac),
        AesKey::Aes192 => open_aes::<Aes192>(key, params, aad, ciphertext, mac),
        AesKey::Aes256 => open_aes::<Aes256>(key, params, aad, ciphertext, mac),
    }
}

fn open_aes<A>(key: &[u8], params: &Params, aad: &[u8], ciphertext: &[u8], mac: &[u8]) -> Result<Vec<u8>>
where
    A: BlockCipher + BlockSizeUser<BlockSize = U16> + BlockEncrypt + KeyInit,
{
    let (nonce, ct) = (params.nonce.as_slice(), ciphertext);
    match params.icv_len {
        12 => open_as::<AesGcm<A, U12, U12>>(key, nonce, aad, ct, mac),
        13 => open_as::<AesGcm<A, U12, U13>>(key, nonce, aad, ct, mac),
        14 => open_as::<AesGcm<A, U12, U14>>(key, nonce, aad, ct, mac),
        15 => open_as::<AesGcm<A, U12, U15>>(key, nonce, aad, ct, mac),
        16 => open_as::<AesGcm<A, U12, U16>>(key, nonce, aad, ct, mac),
        _ => Err(Error::Malformed("GCMParameters aes-ICVlen is not 12 to 16".into())),
    }
}

fn open_as<C: KeyInit + AeadInPlace>(key: &[u8], nonce: &[u8], aad: &[u8], ct: &[u8], mac: &[u8]) -> Result<Vec<u8>> {
    let cipher = C::new_from_slice(key).map_err(|_| Error::Decryption)?;
    let nonce: Nonce<C> = GenericArray::from_exact_iter(nonce.iter().copied()).ok_or(Error::Decryption)?;
    let tag: Tag<C> = GenericArray::from_exact_iter(mac.iter().copied()).ok_or(Error::Decryption)?;
    let mut buffer = ct.to_vec();
    // aes-gcm 0.10.3 and later leave no plaintext in the buffer when the tag is wrong
    // (RUSTSEC-2023-0096); it is dropped here anyway.
    cipher.decrypt_in_place_detached(&nonce, aad, &mut buffer, &tag).map_err(|_| Error::Decryption)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ber;

    fn params_of(der: &[u8]) -> Result<Params> {
        let (tlv, _) = ber::read(der)?;
        Params::parse(Some(&tlv))
    }

    #[test]
    fn parameters_round_trip_and_default_icv() {
        let p = Params { nonce: vec![7; 12], icv_len: 16 };
        let der = p.to_any().unwrap().to_der().unwrap();
        assert_eq!(&der[..4], [0x30, 17, 0x04, 12]);
        assert_eq!(&der[16..], [0x02, 0x01, 0x10]);
        assert_eq!(params_of(&der).unwrap(), p);
        // aes-ICVlen left out is 12 (RFC 5084 3.2).
        let mut short = vec![0x30, 14, 0x04, 12];
        short.extend([1; 12]);
        assert_eq!(params_of(&short).unwrap(), Params { nonce: vec![1; 12], icv_len: 12 });
        // Out of range, other nonce lengths, missing or extra fields.
        let mut bad_icv = der.clone();
        bad_icv[18] = 17;
        assert!(matches!(params_of(&bad_icv), Err(Error::Malformed(_))));
        let mut nonce8 = vec![0x30, 13, 0x04, 8];
        nonce8.extend([1; 8]);
        nonce8.extend([0x02, 0x01, 0x10]);
        assert!(matches!(params_of(&nonce8), Err(Error::Unsupported(_))));
        assert!(matches!(params_of(&[0x30, 0x00]), Err(Error::Malformed(_))));
        assert!(matches!(Params::parse(None), Err(Error::Malformed(_))));
        let mut extra = der.clone();
        extra[1] += 2;
        extra.extend([0x05, 0x00]);
        assert!(matches!(params_of(&extra), Err(Error::Malformed(_))));
    }

    #[test]
    fn seal_open_and_every_flipped_octet_fails() {
        let (key, params) = ([3u8; 32], Params { nonce: vec![9; 12], icv_len: 16 });
        let (ct, tag) = seal_aes256(&key, &params.nonce, b"hello GCM").unwrap();
        assert_eq!((ct.len(), tag.len()), (9, 16));
        assert_eq!(open(AesKey::Aes256, &key, &params, b"", &ct, &tag).unwrap(), b"hello GCM");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(open(AesKey::Aes256, &key, &params, b"", &bad, &tag), Err(Error::Decryption));
        }
        for i in 0..tag.len() {
            let mut bad = tag.clone();
            bad[i] ^= 0x80;
            assert_eq!(open(AesKey::Aes256, &key, &params, b"", &ct, &bad), Err(Error::Decryption));
        }
        // Other AAD, key, nonce, a cut tag or another ICV length: no plaintext.
        assert_eq!(open(AesKey::Aes256, &key, &params, b"x", &ct, &tag), Err(Error::Decryption));
        assert_eq!(open(AesKey::Aes256, &[4; 32], &params, b"", &ct, &tag), Err(Error::Decryption));
        let other = Params { nonce: vec![8; 12], icv_len: 16 };
        assert_eq!(open(AesKey::Aes256, &key, &other, b"", &ct, &tag), Err(Error::Decryption));
        assert_eq!(open(AesKey::Aes256, &key, &params, b"", &ct, &tag[..12]), Err(Error::Decryption));
        let twelve = Params { icv_len: 12, ..params.clone() };
        assert_eq!(open(AesKey::Aes256, &key, &twelve, b"", &ct, &tag), Err(Error::Decryption));
        // A key of the wrong size for the algorithm (RFC 3218's random key is always the
        // right size, but a peer's OID need not match what was wrapped).
        assert_eq!(open(AesKey::Aes128, &key, &params, b"", &ct, &tag), Err(Error::Decryption));
        // A truncated (12-octet) ICV is the first 12 octets of the full one (NIST SP
        // 800-38D 7.1), so the ICV lengths other than 16 open too.
        assert_eq!(open(AesKey::Aes256, &key, &twelve, b"", &ct, &tag[..12]).unwrap(), b"hello GCM");
    }
}
