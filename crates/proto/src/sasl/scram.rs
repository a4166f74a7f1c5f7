//! SCRAM-SHA-256 primitives and message syntax (RFC 5802, RFC 7677), shared by both sides.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::SaslError;

type HmacSha256 = Hmac<Sha256>;

/// The only channel-binding type supported (RFC 9266; TLS 1.3 has no tls-unique).
pub(crate) const CB_NAME: &str = "tls-exporter";

/// RFC 5802 2.2 HMAC(key, str) with SHA-256.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 5802 2.2 H(str).
pub(crate) fn h(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// RFC 5802 2.2 Hi(str, salt, i), i.e. PBKDF2-HMAC-SHA-256 with one output block.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    out
}

/// RFC 5802 3: ClientKey := HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key(salted: &[u8; 32]) -> [u8; 32] {
    hmac(salted, b"Client Key")
}

/// RFC 5802 3: ServerKey := HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key(salted: &[u8; 32]) -> [u8; 32] {
    hmac(salted, b"Server Key")
}

/// RFC 5802 5.1 `n`/`a`: `,` and `=` become `=2C` and `=3D`.
pub(crate) fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 5802 5.1: decodes a saslname; any other `=` sequence is an error.
pub(crate) fn decode_saslname(name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(SaslError::Malformed);
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802 7 `printable`: %x21-2B / %x2D-7E.
pub(crate) fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// RFC 5802 7 `gs2-cbind-flag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CbFlag {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client uses this binding.
    Used(String),
}

/// A parsed client-first-message (RFC 5802 7).
#[derive(Debug, Clone)]
pub(crate) struct ClientFirst {
    pub cbind: CbFlag,
    pub authzid: Option<String>,
    /// The gs2-header text, echoed (base64) in the client-final `c=`.
    pub gs2_header: String,
    pub bare: String,
    pub username: String,
    pub nonce: String,
}

pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, SaslError> {
    let msg = std::str::from_utf8(msg).map_err(|_| SaslError::Malformed)?;
    let (flag, rest) = msg.split_once(',').ok_or(SaslError::Malformed)?;
    let (authz, bare) = rest.split_once(',').ok_or(SaslError::Malformed)?;
    let cbind = match flag {
        "n" => CbFlag::None,
        "y" => CbFlag::ClientOnly,
        _ => match flag.strip_prefix("p=") {
            Some(name) if !name.is_empty() => CbFlag::Used(name.to_owned()),
            _ => return Err(SaslError::Malformed),
        },
    };
    let authzid = match authz {
        "" => None,
        _ => Some(decode_saslname(authz.strip_prefix("a=").ok_or(SaslError::Malformed)?)?),
    };
    let mut attrs = bare.split(',');
    // RFC 5802 5.1 `m`: a reserved extension must cause failure; so does a missing `n`.
    let username = attrs.next().and_then(|a| a.strip_prefix("n=")).ok_or(SaslError::Malformed)?;
    let username = decode_saslname(username)?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(SaslError::Malformed)?;
    if username.is_empty() || !valid_nonce(nonce) {
        return Err(SaslError::Malformed);
    }
    Ok(ClientFirst {
        cbind,
        authzid,
        gs2_header: msg[..flag.len() + authz.len() + 2].to_owned(),
        bare: bare.to_owned(),
        username,
        nonce: nonce.to_owned(),
    })
}

/// A parsed client-final-message (RFC 5802 7).
pub(crate) struct ClientFinal {
    /// Decoded `c=`: gs2-header plus any channel-binding data.
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub without_proof: String,
    pub proof: [u8; 32],
}

pub(crate) fn parse_client_final(msg: &[u8]) -> Result<ClientFinal, SaslError> {
    let msg = std::str::from_utf8(msg).map_err(|_| SaslError::Malformed)?;
    // RFC 5802 7: the proof is the last attribute.
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(SaslError::Malformed)?;
    let proof = STANDARD.decode(proof).map_err(|_| SaslError::Malformed)?;
    let proof: [u8; 32] = proof.try_into().map_err(|_| SaslError::Malformed)?;
    let mut attrs = without_proof.split(',');
    let cb = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(SaslError::Malformed)?;
    let channel_binding = STANDARD.decode(cb).map_err(|_| SaslError::Malformed)?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(SaslError::Malformed)?;
    Ok(ClientFinal { channel_binding, nonce: nonce.to_owned(), without_proof: without_proof.to_owned(), proof })
}

/// A parsed server-first-message (RFC 5802 7).
pub(crate) struct ServerFirst {
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

pub(crate) fn parse_server_first(msg: &[u8]) -> Result<ServerFirst, SaslError> {
    let msg = std::str::from_utf8(msg).map_err(|_| SaslError::Malformed)?;
    let mut attrs = msg.split(',');
    // RFC 5802 5.1 `m` in the server-first-message also fails here.
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(SaslError::Malformed)?;
    let salt = attrs.next().and_then(|a| a.strip_prefix("s=")).ok_or(SaslError::Malformed)?;
    let iter = attrs.next().and_then(|a| a.strip_prefix("i=")).ok_or(SaslError::Malformed)?;
    let salt = STANDARD.decode(salt).map_err(|_| SaslError::Malformed)?;
    let iterations = iter.parse().map_err(|_| SaslError::Malformed)?;
    if !valid_nonce(nonce) || salt.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(ServerFirst { nonce: nonce.to_owned(), salt, iterations })
}

/// The outcome a server-final-message reports (RFC 5802 7).
pub(crate) enum ServerFinal {
    Verifier([u8; 32]),
    Error,
}

pub(crate) fn parse_server_final(msg: &[u8]) -> Result<ServerFinal, SaslError> {
    let msg = std::str::from_utf8(msg).map_err(|_| SaslError::Malformed)?;
    let first = msg.split(',').next().unwrap_or_default();
    if first.starts_with("e=") {
        return Ok(ServerFinal::Error);
    }
    let v = first.strip_prefix("v=").ok_or(SaslError::Malformed)?;
    let v = STANDARD.decode(v).map_err(|_| SaslError::Malformed)?;
    Ok(ServerFinal::Verifier(v.try_into().map_err(|_| SaslError::Malformed)?))
}

/// RFC 5802 3: AuthMessage.
pub(crate) fn auth_message(client_first_bare: &str, server_first: &str, without_proof: &str) -> String {
    format!("{client_first_bare},{server_first},{without_proof}")
}

pub(crate) fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = *a;
    out.iter_mut().zip(b).for_each(|(o, x)| *o ^= x);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_round_trip() {
        assert_eq!(encode_saslname("a=b,c"), "a=3Db=2Cc");
        assert_eq!(decode_saslname("a=3Db=2Cc").unwrap(), "a=b,c");
        assert_eq!(decode_saslname("a=4"), Err(SaslError::Malformed));
        assert_eq!(decode_saslname("a="), Err(SaslError::Malformed));
        assert_eq!(decode_saslname("=2").map_err(|_| ()), Err(()));
    }

    #[test]
    fn hi_matches_pbkdf2_sha256_vector() {
        // RFC 7914 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), first 32 bytes.
        let out = hi(b"passwd", b"salt", 1);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
    }

    #[test]
    fn client_first_parsing() {
        let cf = parse_client_first(b"n,a=ad=3Dmin,n=us=2Cer,r=abc,x=ext").unwrap();
        assert_eq!(cf.gs2_header, "n,a=ad=3Dmin,");
        assert_eq!(cf.authzid.as_deref(), Some("ad=min"));
        assert_eq!(cf.username, "us,er");
        assert_eq!(cf.bare, "n=us=2Cer,r=abc,x=ext");
        let cf = parse_client_first(b"p=tls-exporter,,n=u,r=x").unwrap();
        assert_eq!(cf.cbind, CbFlag::Used("tls-exporter".into()));
        for bad in [
            &b"n,,m=ext,n=u,r=x"[..],
            b"x,,n=u,r=x",
            b"n,b=z,n=u,r=x",
            b"n,,n=,r=x",
            b"n,,n=u,r=",
            b"n,,n=u,r=a\x7fb",
            b"n,,n=u",
            b"n,n=u,r=x",
            b"p=,,n=u,r=x",
            b"\xff,,n=u,r=x",
        ] {
            assert!(parse_client_first(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
