//! A certificate authority for tests: servers on loopback get certificates for their
//! host names that verify against one CA file, as on the internet (SPEC 8 "Trust between
//! servers"), without touching the system's roots.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA whose certificate is written to `ca.pem` in a folder of the caller's.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
    dir: PathBuf,
}

/// A certificate issued by a [`TestCa`], as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `<dir>/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert_pem = cert.pem();
        std::fs::create_dir_all(dir).expect("CA folder");
        std::fs::write(dir.join("ca.pem"), &cert_pem).expect("ca.pem");
        TestCa { cert, key, cert_pem, dir: dir.to_path_buf() }
    }

    /// The CA certificate's file: what a server's `ca_file` names.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `names` (DNS names, subjectAltName and the first as CN), written
    /// to `<dir>/<first name>.pem` and `.key`.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate parameters");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("certificate");
        let issued = Issued {
            cert: self.dir.join(format!("{}.pem", names[0])),
            key: self.dir.join(format!("{}.key", names[0])),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("certificate file");
        std::fs::write(&issued.key, key.serialize_pem()).expect("key file");
        issued
    }
}
