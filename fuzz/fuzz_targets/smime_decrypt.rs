//! S/MIME decryption on attacker-made input (`vouchmail client fetch` reads whatever
//! arrives in the mailbox): `vouchmail_smime::decrypt` with a fixed test key (RSA 1024, so
//! that each RSA operation is cheap; the parsing is the same), and the certificate parser
//! (PUBCERT and CERT read certificates from peers).
//!
//! The first byte picks how the rest is used, so that the fuzzer gets deep without a
//! corpus: as the whole message; as the base64 body of an `application/pkcs7-mime`
//! message; or as edits to one of three valid messages for the test key (made by `openssl
//! cms -encrypt -aes256`, `openssl smime -encrypt -stream` in BER with DES-EDE3,
//! `openssl cms -encrypt -aes128 -keyid`, and AuthEnvelopedData by `openssl cms -encrypt
//! -aes-256-gcm`, which no edit may make decrypt to other content). Checked: no panic, the errors have a text, a
//! decryption never yields more octets than the message held, and an unedited seed
//! decrypts to its text.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use vouchmail_smime::{decrypt, Certificate, PrivateKey};

const KEY: &str = include_str!("shared/smime/fuzz.key");
const CERT: &str = include_str!("shared/smime/fuzz.crt");
const SEED_TEXT: &[u8] = b"Content-Type: text/plain\r\n\r\nfuzz\r\n";
const SEEDS: [&[u8]; 4] = [
    include_bytes!("shared/smime/aes256.der"),
    include_bytes!("shared/smime/des3-ber.der"),
    include_bytes!("shared/smime/aes128-keyid.der"),
    include_bytes!("shared/smime/aes256-gcm.der"),
];
/// The AuthEnvelopedData seed (RFC 5083): whatever is edited, it decrypts to its own text
/// or not at all (the GCM tag).
const AUTHENTICATED_SEED: usize = 3;

fn identity() -> &'static (PrivateKey, Certificate) {
    static ID: OnceLock<(PrivateKey, Certificate)> = OnceLock::new();
    ID.get_or_init(|| {
        (PrivateKey::parse(KEY.as_bytes()).expect("test key"), Certificate::parse(CERT.as_bytes()).expect("test cert"))
    })
}

fn check(message: &[u8]) {
    let (key, cert) = identity();
    match decrypt(message, key, cert) {
        Ok(plain) => assert!(plain.len() <= message.len()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => check(rest),
        1 => {
            let body = base64::engine::general_purpose::STANDARD.encode(rest);
            let mut message = b"From: a@example.test\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
            for line in body.as_bytes().chunks(76) {
                message.extend_from_slice(line);
                message.extend_from_slice(b"\r\n");
            }
            check(&message);
        }
        2 => {
            // Edits to a valid message: pairs of (position, xor), then a cut.
            let Some((&which, edits)) = rest.split_first() else { return };
            let seed = usize::from(which) % SEEDS.len();
            let mut message = SEEDS[seed].to_vec();
            if edits.is_empty() {
                let (key, cert) = identity();
                assert_eq!(decrypt(&message, key, cert).as_deref(), Ok(SEED_TEXT));
            }
            let mut pairs = edits.chunks_exact(3);
            for p in &mut pairs {
                let at = usize::from(u16::from_be_bytes([p[0], p[1]])) % message.len();
                message[at] ^= p[2];
            }
            if let [cut, ..] = pairs.remainder() {
                let keep = message.len() - usize::from(*cut) % message.len();
                message.truncate(keep);
            }
            check(&message);
            if seed == AUTHENTICATED_SEED {
                let (key, cert) = identity();
                if let Ok(text) = decrypt(&message, key, cert) {
                    assert_eq!(text, SEED_TEXT, "an edited AuthEnvelopedData decrypted to other content");
                }
            }
        }
        _ => {
            // A certificate from a peer: parse it and ask everything of it.
            if let Ok(cert) = Certificate::parse(rest) {
                let _ = cert.addresses();
                let _ = cert.subject();
                let _ = cert.serial_hex();
                let _ = cert.not_before();
                let _ = cert.not_after();
                let _ = cert.validate_for("fuzz@example.test", std::time::SystemTime::now());
                let _ = cert.to_pem();
                let _ = vouchmail_smime::encrypt(b"x", &[cert]);
            }
        }
    }
});
