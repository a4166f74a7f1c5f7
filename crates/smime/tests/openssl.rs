//! Interoperability with the real openssl CLI, both directions, and the failure cases.
//! Skipped (with a message) only when no `openssl` binary is on PATH; scripts/test.sh
//! installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use vouchmail_smime::{
    decrypt, encrypt, encrypt_message, encrypt_message_with, encrypt_with, extract_cms, keygen, Certificate,
    ContentCipher, Error, OuterHeaders, PrivateKey,
};

const ENTITY: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nPatient 1234567F: results attached.\r\nGr\xc3\xbc\xc3\x9fe, Glen\r\n";

fn have_openssl() -> bool {
    let ok = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: no openssl binary on PATH (scripts/test.sh installs it)");
    }
    ok
}

/// openssl's exit status and stderr, for the runs that must fail.
fn openssl_fails(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(!out.status.success(), "openssl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Identity {
    address: String,
    key_pem: String,
    cert_pem: String,
}

impl Identity {
    fn key(&self) -> PrivateKey {
        PrivateKey::parse(self.key_pem.as_bytes()).unwrap()
    }
    fn cert(&self) -> Certificate {
        Certificate::parse(self.cert_pem.as_bytes()).unwrap()
    }
    fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let name = self.address.replace('@', "_");
        let (k, c) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.crt")));
        std::fs::write(&k, &self.key_pem).unwrap();
        std::fs::write(&c, &self.cert_pem).unwrap();
        (k, c)
    }
}

/// Three identities made by our keygen (made once; RSA key generation takes a moment).
fn ours() -> &'static [Identity; 3] {
    static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        ["glen@galkam.test", "abc555@lrsupport.test", "third@example.test"].map(|address| {
            let (key_pem, cert_pem) = keygen(address, 30).unwrap();
            Identity { address: address.into(), key_pem, cert_pem }
        })
    })
}

/// An identity made by `openssl req` (no keyUsage/extendedKeyUsage, PKCS#8 key).
fn openssl_identity(dir: &Path, address: &str) -> Identity {
    let (k, c) = (dir.join("o.key"), dir.join("o.crt"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path(&k),
        "-out",
        path(&c),
        "-days",
        "2",
        "-subj",
        &format!("/CN={address}"),
        "-addext",
        &format!("subjectAltName=email:{address}"),
    ]);
    Identity {
        address: address.into(),
        key_pem: std::fs::read_to_string(&k).unwrap(),
        cert_pem: std::fs::read_to_string(&c).unwrap(),
    }
}

fn headers() -> OuterHeaders {
    OuterHeaders {
        from: "glen@galkam.test".into(),
        to: vec!["abc555@lrsupport.test".into(), "third@example.test".into()],
        date: "Wed, 02 Dec 2026 01:50:00 +0000".into(),
        message_id: "abc.123@galkam.test".into(),
        subject: Some("Results für 1234567F".into()),
    }
}

#[test]
fn keygen_cert_reads_in_openssl_and_openssl_encrypts_to_it() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = &ours()[0];
    let (k, c) = id.write(dir.path());
    let text = String::from_utf8(openssl(&["x509", "-noout", "-text", "-in", path(&c)])).unwrap();
    assert!(text.contains("email:glen@galkam.test"), "{text}");
    assert!(text.contains("E-mail Protection"), "{text}");
    assert!(text.contains("Digital Signature, Key Encipherment"), "{text}");
    assert!(text.contains("Subject: CN = glen@galkam.test"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // The self-signature verifies and openssl sees the purpose.
    openssl(&["verify", "-CAfile", path(&c), "-purpose", "smimeencrypt", path(&c)]);
    // The key is PKCS#8 that openssl reads and it matches the certificate.
    assert!(id.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let m1 = openssl(&["pkey", "-in", path(&k), "-pubout"]);
    let m2 = openssl(&["x509", "-in", path(&c), "-noout", "-pubkey"]);
    assert_eq!(m1, m2);

    // openssl smime -encrypt accepts our certificate, and we decrypt what it made.
    let input = dir.path().join("in.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let msg = openssl(&["smime", "-encrypt", "-aes256", "-in", path(&input), path(&c)]);
    assert_eq!(decrypt(&msg, &id.key(), &id.cert()).unwrap(), ENTITY);
}

#[test]
fn ours_encrypts_openssl_smime_and_cms_decrypt() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = &ours()[1];
    let (k, c) = id.write(dir.path());
    let msg = encrypt_message(ENTITY, &[id.cert()], &headers()).unwrap();
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let plain = openssl(&["smime", "-decrypt", "-in", path(&file), "-recip", path(&c), "-inkey", path(&k)]);
    assert_eq!(plain, ENTITY);
    let plain = openssl(&["cms", "-decrypt", "-in", path(&file), "-recip", path(&c), "-inkey", path(&k)]);
    assert_eq!(plain, ENTITY);
    // openssl sees AES-256-CBC and one ktri by issuerAndSerialNumber.
    let der = dir.path().join("msg.der");
    std::fs::write(&der, extract_cms(&msg).unwrap()).unwrap();
    let dump = String::from_utf8(openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", path(&der)])).unwrap();
    assert!(dump.contains("aes-256-cbc"), "{dump}");
    assert!(dump.contains("issuerAndSerialNumber"), "{dump}");
    assert!(dump.contains("rsaEncryption"), "{dump}");
    // And we read our own.
    assert_eq!(decrypt(&msg, &id.key(), &id.cert()).unwrap(), ENTITY);
}

#[test]
fn message_format() {
    let id = &ours()[0];
    let msg = String::from_utf8(encrypt_message(ENTITY, &[id.cert()], &headers()).unwrap()).unwrap();
    let (head, body) = msg.split_once("\r\n\r\n").unwrap();
    for line in [
        "From: glen@galkam.test",
        "To: abc555@lrsupport.test,\r\n third@example.test",
        "Date: Wed, 02 Dec 2026 01:50:00 +0000",
        "Message-ID: <abc.123@galkam.test>",
        "Subject: =?UTF-8?B?",
        "MIME-Version: 1.0",
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=smime.p7m",
    ] {
        assert!(head.contains(line), "{line} not in {head}");
    }
    assert!(!msg.replace("\r\n", "").contains('\n'), "bare LF");
    let lines: Vec<&str> = body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines.len() > 2);
    assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
    assert!(lines.last().unwrap().len() <= 76);
    // A bare-LF entity is put in canonical form (RFC 8551 3.1.1).
    let lf = b"Content-Type: text/plain\n\nline\n";
    let out = decrypt(&encrypt(lf, &[id.cert()]).unwrap(), &id.key(), &id.cert()).unwrap();
    assert_eq!(out, b"Content-Type: text/plain\r\n\r\nline\r\n");
}

#[test]
fn openssl_encrypts_ours_decrypts_every_cipher_and_form() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = openssl_identity(dir.path(), "them@example.test");
    let (k, c) = (dir.path().join("o.key"), dir.path().join("o.crt"));
    let _ = k;
    let input = dir.path().join("in.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let (key, cert) = (id.key(), id.cert());
    cert.validate_for("them@example.test", SystemTime::now()).unwrap();
    let cases: &[&[&str]] = &[
        &["smime", "-encrypt", "-aes256"],
        &["smime", "-encrypt", "-aes128"],
        &["smime", "-encrypt", "-aes192"],
        &["smime", "-encrypt"],                       // DES-EDE3-CBC, openssl smime's default
        &["smime", "-encrypt", "-aes256", "-stream"], // BER, indefinite lengths
        &["smime", "-encrypt", "-aes256", "-outform", "DER"],
        &["smime", "-encrypt", "-aes256", "-outform", "PEM"],
        &["cms", "-encrypt", "-aes256"],
        &["cms", "-encrypt", "-aes256", "-keyid"], // subjectKeyIdentifier
        &["cms", "-encrypt", "-aes256", "-stream", "-outform", "DER"],
    ];
    for case in cases {
        let mut args: Vec<&str> = case.to_vec();
        args.extend(["-in", path(&input), path(&c)]);
        let msg = openssl(&args);
        let got = decrypt(&msg, &key, &cert).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        assert_eq!(got, ENTITY, "{case:?}");
    }
    // A PKCS#1 key (`RSA PRIVATE KEY`) is read too.
    let pkcs1 = openssl(&["rsa", "-in", path(&dir.path().join("o.key")), "-traditional"]);
    let msg = openssl(&["smime", "-encrypt", "-aes256", "-in", path(&input), path(&c)]);
    assert_eq!(decrypt(&msg, &PrivateKey::parse(&pkcs1).unwrap(), &cert).unwrap(), ENTITY);
}

#[test]
fn three_recipients_each_decrypt() {
    let ids = ours();
    let mut certs: Vec<Certificate> = ids.iter().map(Identity::cert).collect();
    // The sender's own certificate given again is one recipient info, not two.
    certs.push(ids[0].cert());
    let msg = encrypt_message(ENTITY, &certs, &headers()).unwrap();
    for id in ids {
        assert_eq!(decrypt(&msg, &id.key(), &id.cert()).unwrap(), ENTITY, "{}", id.address);
    }
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let der = dir.path().join("msg.der");
    std::fs::write(&der, extract_cms(&msg).unwrap()).unwrap();
    let dump = String::from_utf8(openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", path(&der)])).unwrap();
    assert_eq!(dump.matches("d.ktri:").count(), 3, "{dump}");
    for id in ids {
        let (k, c) = id.write(dir.path());
        let plain = openssl(&["cms", "-decrypt", "-in", path(&file), "-recip", path(&c), "-inkey", path(&k)]);
        assert_eq!(plain, ENTITY, "{}", id.address);
    }
    // And openssl to three: each of ours reads it.
    let input = dir.path().join("in.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let paths: Vec<PathBuf> = ids.iter().map(|id| id.write(dir.path()).1).collect();
    let mut args = vec!["smime", "-encrypt", "-aes256", "-in", path(&input)];
    args.extend(paths.iter().map(|p| path(p)));
    let msg = openssl(&args);
    for id in ids {
        assert_eq!(decrypt(&msg, &id.key(), &id.cert()).unwrap(), ENTITY, "{}", id.address);
    }
}

#[test]
fn tampered_and_misaddressed_fail_cleanly() {
    let ids = ours();
    let (a, b) = (&ids[0], &ids[1]);
    let der = encrypt(ENTITY, &[a.cert()]).unwrap();

    // For somebody else.
    assert_eq!(decrypt(&der, &b.key(), &b.cert()), Err(Error::NotForUs));
    // A key that is not the certificate's.
    assert!(matches!(decrypt(&der, &b.key(), &a.cert()), Err(Error::InvalidInput(_))));

    // The padding byte flipped: flipping the last byte of the next-to-last ciphertext block
    // with 0x80 makes the last plaintext byte at least 0x80, never valid padding.
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 17] ^= 0x80;
    assert_eq!(decrypt(&bad, &a.key(), &a.cert()), Err(Error::Decryption));

    // A single-byte change anywhere never panics, and nearly always fails. (Some bytes
    // are not checked, such as the inner content type; and CBC has no integrity, so a
    // change in the middle of the ciphertext garbles one block and still decrypts.)
    let mut failed = 0;
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0x5a;
        match decrypt(&bad, &a.key(), &a.cert()) {
            Err(_) => failed += 1,
            Ok(out) if out == ENTITY => {}
            Ok(_) => {}
        }
    }
    assert!(failed * 10 >= der.len() * 7, "only {failed} of {} changes failed", der.len());
    // Changing the encrypted key never gives the plaintext (RFC 3218: a random key is used).
    let key_at = der.windows(4).position(|w| w == [0x04, 0x82, 0x01, 0x00]).unwrap() + 4;
    for i in [key_at, key_at + 1, key_at + 128, key_at + 255] {
        let mut bad = der.clone();
        bad[i] ^= 0x01;
        assert_ne!(decrypt(&bad, &a.key(), &a.cert()).ok().as_deref(), Some(ENTITY), "key byte {i}");
    }
    // Truncations.
    for len in [0, 1, 2, 10, 100, der.len() / 2, der.len() - 1] {
        assert!(decrypt(&der[..len], &a.key(), &a.cert()).is_err(), "truncated to {len}");
    }
    // A whole message with its base64 cut short, or not S/MIME at all.
    let msg = encrypt_message(ENTITY, &[a.cert()], &headers()).unwrap();
    let cut = &msg[..msg.len() - 200];
    assert!(matches!(decrypt(cut, &a.key(), &a.cert()), Err(Error::Malformed(_))));
    let plain = b"From: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
    assert!(matches!(decrypt(plain, &a.key(), &a.cert()), Err(Error::Malformed(_))));
    assert!(decrypt(b"", &a.key(), &a.cert()).is_err());
}

#[test]
fn openssl_made_message_for_someone_else_and_tampered() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let them = openssl_identity(dir.path(), "them@example.test");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let msg = openssl(&["smime", "-encrypt", "-aes256", "-in", path(&input), path(&dir.path().join("o.crt"))]);
    let me = &ours()[0];
    assert_eq!(decrypt(&msg, &me.key(), &me.cert()), Err(Error::NotForUs));
    // Garble the base64 body's middle: an error or garbage, never the entity, never a panic.
    let text = String::from_utf8(msg).unwrap();
    let mut garbled = text.clone().into_bytes();
    let at = text.find("\n\n").unwrap() + 100;
    garbled[at] = if garbled[at] == b'A' { b'B' } else { b'A' };
    match decrypt(&garbled, &them.key(), &them.cert()) {
        Ok(out) => assert_ne!(out, ENTITY),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn certificate_inspection_and_validation() {
    let id = &ours()[0];
    let cert = id.cert();
    assert_eq!(cert.addresses(), vec!["glen@galkam.test".to_string()]);
    let now = SystemTime::now();
    assert!(cert.not_before() <= now && now < cert.not_after());
    let days = cert.not_after().duration_since(cert.not_before()).unwrap().as_secs() / 86_400;
    assert_eq!(days, 30);
    cert.validate_for("glen@galkam.test", now).unwrap();
    cert.validate_for("Glen@Galkam.TEST", now).unwrap();
    let e = cert.validate_for("other@galkam.test", now).unwrap_err();
    assert_eq!(e.to_string(), "certificate is for glen@galkam.test, not other@galkam.test");
    let e = cert.validate_for("glen@galkam.test", now + Duration::from_secs(31 * 86_400)).unwrap_err();
    assert!(e.to_string().starts_with("certificate expired on "), "{e}");
    let e = cert.validate_for("glen@galkam.test", now - Duration::from_secs(86_400)).unwrap_err();
    assert!(e.to_string().starts_with("certificate is not valid before "), "{e}");
    // DER and PEM give the same certificate; garbage is a Parse error.
    let der = cert.to_der().unwrap();
    assert_eq!(Certificate::parse(&der).unwrap(), cert);
    assert_eq!(Certificate::parse(cert.to_pem().unwrap().as_bytes()).unwrap(), cert);
    let with_text = format!("subject=...\n{}", id.cert_pem);
    assert_eq!(Certificate::parse(with_text.as_bytes()).unwrap(), cert);
    for bad in [&b""[..], b"hello", &der[..der.len() - 1], b"-----BEGIN CERTIFICATE-----\nMII\n"] {
        assert!(matches!(Certificate::parse(bad), Err(Error::Parse(_))), "{bad:?}");
    }
    assert!(matches!(PrivateKey::parse(b"nope"), Err(Error::Parse(_))));
    let e = Certificate::parse(b"hello").unwrap_err().to_string();
    assert!(e.starts_with("certificate does not parse: "), "{e}");
    // Bad keygen input.
    assert!(matches!(keygen("no-at-sign", 30), Err(Error::InvalidInput(_))));
    assert!(matches!(keygen("a b@c", 30), Err(Error::InvalidInput(_))));
    assert!(matches!(keygen("a@b", 0), Err(Error::InvalidInput(_))));
    assert!(matches!(encrypt(ENTITY, &[]), Err(Error::InvalidInput(_))));
}

#[test]
fn certificates_openssl_makes_are_judged() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (k, c) = (dir.path().join("s.key"), dir.path().join("s.crt"));
    let make = |extra: &[&str]| {
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            path(&k),
            "-out",
            path(&c),
            "-days",
            "2",
            "-subj",
            "/CN=sig@example.test",
            "-addext",
            "subjectAltName=email:sig@example.test",
        ];
        args.extend_from_slice(extra);
        openssl(&args);
        Certificate::parse(&std::fs::read(&c).unwrap()).unwrap()
    };
    // openssl starts validity at the current second; read the clock after each certificate
    // is made (making an RSA key can take seconds on a loaded machine).
    let now = || SystemTime::now() + Duration::from_secs(2);
    let sign_only = make(&["-addext", "keyUsage=critical,digitalSignature"]);
    let e = sign_only.validate_for("sig@example.test", now()).unwrap_err();
    assert_eq!(e.to_string(), "certificate's keyUsage does not allow keyEncipherment");
    let tls = make(&["-addext", "extendedKeyUsage=serverAuth"]);
    let e = tls.validate_for("sig@example.test", now()).unwrap_err();
    assert_eq!(e.to_string(), "certificate's extendedKeyUsage does not include emailProtection");
    let ok = make(&["-addext", "extendedKeyUsage=emailProtection", "-addext", "keyUsage=keyEncipherment"]);
    ok.validate_for("sig@example.test", now()).unwrap();
    // No rfc822Name at all.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path(&k),
        "-out",
        path(&c),
        "-days",
        "2",
        "-subj",
        "/CN=x",
    ]);
    let bare = Certificate::parse(&std::fs::read(&c).unwrap()).unwrap();
    assert!(bare.addresses().is_empty());
    let e = bare.validate_for("x@example.test", now()).unwrap_err();
    assert_eq!(e.to_string(), "certificate has no rfc822Name in subjectAltName");
    // An EC certificate cannot be encrypted to.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path(&k),
        "-out",
        path(&c),
        "-days",
        "2",
        "-subj",
        "/CN=ec",
        "-addext",
        "subjectAltName=email:ec@example.test",
    ]);
    let ec = Certificate::parse(&std::fs::read(&c).unwrap()).unwrap();
    let e = ec.validate_for("ec@example.test", now()).unwrap_err();
    assert!(e.to_string().starts_with("certificate's key is not RSA"), "{e}");
    assert!(matches!(encrypt(ENTITY, &[ec]), Err(Error::InvalidInput(_))));
}

#[test]
fn keygen_long_address_has_empty_subject_and_critical_san() {
    let address = format!("{}@example.test", "a".repeat(60));
    let (key_pem, cert_pem) = keygen(&address, 1).unwrap();
    let cert = Certificate::parse(cert_pem.as_bytes()).unwrap();
    assert_eq!(cert.subject(), "");
    cert.validate_for(&address, SystemTime::now() + Duration::from_secs(1)).unwrap();
    // Backdated: a peer whose clock is half an hour behind takes it too.
    cert.validate_for(&address, SystemTime::now() - Duration::from_secs(1800)).unwrap();
    let key = PrivateKey::parse(key_pem.as_bytes()).unwrap();
    assert_eq!(decrypt(&encrypt(ENTITY, std::slice::from_ref(&cert)).unwrap(), &key, &cert).unwrap(), ENTITY);
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("long.crt");
    std::fs::write(&c, &cert_pem).unwrap();
    let text = String::from_utf8(openssl(&["x509", "-noout", "-text", "-in", path(&c)])).unwrap();
    assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
    assert!(text.contains(&format!("email:{address}")), "{text}");
}

/// SPEC 10, issue 19 item 9: `send --cipher aes256-gcm` is S/MIME 4.0 AuthEnvelopedData
/// (RFC 5083) with id-aes256-GCM, a 12-octet nonce and a 16-octet ICV (RFC 5084 3.2), which
/// `openssl cms -decrypt` reads; a changed ciphertext octet makes openssl refuse it too.
#[test]
fn ours_gcm_decrypts_in_openssl_cms() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ids = ours();
    let certs: Vec<Certificate> = ids[..2].iter().map(Identity::cert).collect();
    let msg = encrypt_message_with(ENTITY, &certs, &headers(), ContentCipher::Aes256Gcm).unwrap();
    let text = String::from_utf8(msg.clone()).unwrap();
    assert!(text.contains("smime-type=authEnveloped-data; name=smime.p7m\r\n"), "{text}");
    let file = dir.path().join("gcm.eml");
    std::fs::write(&file, &msg).unwrap();
    for id in &ids[..2] {
        let (k, c) = id.write(dir.path());
        let plain = openssl(&["cms", "-decrypt", "-in", path(&file), "-recip", path(&c), "-inkey", path(&k)]);
        assert_eq!(plain, ENTITY, "{}", id.address);
        assert_eq!(decrypt(&msg, &id.key(), &id.cert()).unwrap(), ENTITY, "{}", id.address);
    }
    // What openssl sees: AuthEnvelopedData, aes-256-gcm, GCMParameters with a 12-octet
    // nonce and aes-ICVlen 16, a 16-octet mac, two ktri.
    let der = dir.path().join("gcm.der");
    std::fs::write(&der, extract_cms(&msg).unwrap()).unwrap();
    let dump = String::from_utf8(openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", path(&der)])).unwrap();
    assert!(dump.contains("id-smime-ct-authEnvelopedData"), "{dump}");
    assert!(dump.contains("aes-256-gcm"), "{dump}");
    assert_eq!(dump.matches("d.ktri:").count(), 2, "{dump}");
    let parsed = String::from_utf8(openssl(&["asn1parse", "-inform", "DER", "-in", path(&der)])).unwrap();
    let lines: Vec<&str> = parsed.lines().collect();
    let at = lines.iter().position(|l| l.ends_with(":aes-256-gcm")).unwrap_or_else(|| panic!("{parsed}"));
    assert!(lines[at + 1].contains("cons: SEQUENCE"), "{parsed}");
    assert!(lines[at + 2].contains("l=  12 prim: OCTET STRING"), "nonce: {parsed}");
    assert!(lines[at + 3].contains("prim: INTEGER") && lines[at + 3].ends_with(":10"), "ICV length: {parsed}");
    let last = lines.last().unwrap();
    assert!(last.contains("l=  16 prim: OCTET STRING"), "mac: {parsed}");

    // A flipped ciphertext octet: openssl refuses it (the tag), and so do we.
    let mut bad = extract_cms(&msg).unwrap();
    let n = bad.len();
    bad[n - 19] ^= 0x01;
    let bad_file = dir.path().join("bad.der");
    std::fs::write(&bad_file, &bad).unwrap();
    let (k, c) = ids[0].write(dir.path());
    openssl_fails(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        path(&bad_file),
        "-recip",
        path(&c),
        "-inkey",
        path(&k),
    ]);
    assert_eq!(decrypt(&bad, &ids[0].key(), &ids[0].cert()), Err(Error::Decryption));
}

/// The other way: `openssl cms -encrypt -aes-256-gcm` (and the other AES-GCM key sizes,
/// forms and recipient identifiers) read by ours; a changed octet of its ciphertext or ICV
/// fails the tag check (Error::Decryption, which `fetch` reports as FAILED).
#[test]
fn openssl_gcm_encrypts_ours_decrypts_and_checks_the_tag() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = openssl_identity(dir.path(), "them@example.test");
    let c = dir.path().join("o.crt");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let (key, cert) = (id.key(), id.cert());
    let cases: &[&[&str]] = &[
        &["cms", "-encrypt", "-aes-256-gcm"],
        &["cms", "-encrypt", "-aes-128-gcm"],
        &["cms", "-encrypt", "-aes-192-gcm"],
        &["cms", "-encrypt", "-aes-256-gcm", "-keyid"], // subjectKeyIdentifier
        &["cms", "-encrypt", "-aes-256-gcm", "-outform", "DER"],
        &["cms", "-encrypt", "-aes-256-gcm", "-outform", "PEM"],
        &["cms", "-encrypt", "-aes-256-gcm", "-stream", "-outform", "DER"], // BER
    ];
    for case in cases {
        let mut args: Vec<&str> = case.to_vec();
        args.extend(["-in", path(&input), path(&c)]);
        let msg = openssl(&args);
        let got = decrypt(&msg, &key, &cert).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        assert_eq!(got, ENTITY, "{case:?}");
    }
    // openssl's S/MIME message says smime-type=authEnveloped-data.
    let msg = openssl(&["cms", "-encrypt", "-aes-256-gcm", "-in", path(&input), path(&c)]);
    assert!(String::from_utf8_lossy(&msg).contains("smime-type=authEnveloped-data"));
    // Every octet of the ciphertext and the ICV is checked.
    let der = openssl(&["cms", "-encrypt", "-aes-256-gcm", "-outform", "DER", "-in", path(&input), path(&c)]);
    let n = der.len();
    assert_eq!(&der[n - 18..n - 16], [0x04, 0x10], "DER ends with the 16-octet mac");
    for at in (n - 18 - ENTITY.len()..n - 18).chain(n - 16..n) {
        let mut bad = der.clone();
        bad[at] ^= 0x20;
        assert_eq!(decrypt(&bad, &key, &cert), Err(Error::Decryption), "octet {at} of {n}");
    }
    // The same for what we make, read by ours: the cipher does not change who may read.
    let ours = encrypt_with(ENTITY, std::slice::from_ref(&cert), ContentCipher::Aes256Gcm).unwrap();
    assert_eq!(decrypt(&ours, &key, &cert).unwrap(), ENTITY);
}
