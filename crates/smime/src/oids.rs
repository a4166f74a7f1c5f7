//! The object identifiers this crate reads and writes, each with where it is defined.

use const_oid::ObjectIdentifier as Oid;

/// id-data, RFC 5652 section 4.
pub const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData, RFC 5652 section 5.1.
pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-envelopedData, RFC 5652 section 6.1.
pub const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
/// id-ct-authEnvelopedData, RFC 5083 section 1.
pub const ID_AUTH_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.23");
/// rsaEncryption (RSAES-PKCS1-v1_5 key transport), RFC 3370 section 4.2.1.
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// id-RSAES-OAEP, RFC 3560.
pub const RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
/// sha256WithRSAEncryption, RFC 4055 section 5.
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// id-aes128-CBC, id-aes192-CBC, id-aes256-CBC: RFC 3565 section 4.1.
pub const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
/// id-aes128-GCM, id-aes192-GCM, id-aes256-GCM: RFC 5084 section 3.2.
pub const AES128_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.6");
pub const AES192_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.26");
pub const AES256_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.46");
/// des-ede3-cbc, RFC 3370 section 5.1.
pub const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
/// id-at-commonName, RFC 5280 appendix A.1.
pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
/// id-kp-emailProtection, RFC 5280 section 4.2.1.12.
pub const KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
/// anyExtendedKeyUsage, RFC 5280 section 4.2.1.12.
pub const ANY_EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37.0");
/// Certificate extensions, RFC 5280 section 4.2.1.
pub const CE_SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
pub const CE_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub const CE_SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
pub const CE_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub const CE_AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
pub const CE_EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
