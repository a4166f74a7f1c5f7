//! Client TLS for STARTTLS (RFC 3207): one configuration that accepts any certificate
//! (opportunistic and "encrypt" levels, as RFC 7435 and Postfix do), one that verifies it
//! against CA certificates ("verify"); and the ODMR customer's, which checks its provider
//! by CA, by fingerprint, or (only when asked) not at all.

use crate::support::error::{Error, ErrorKind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;

use super::route::TlsPolicy;
pub use crate::config::values::{parse_fingerprint, ServerTrust};

/// Where Debian keeps the system's CA bundle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate (unauthenticated encryption, RFC 7435), or with `pin` exactly the
/// one with that SHA-256 fingerprint. Either way the handshake signatures are checked, so
/// the session is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct KeyHolder {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl KeyHolder {
    fn any() -> KeyHolder {
        KeyHolder { pin: None, provider: provider() }
    }
}

impl ServerCertVerifier for KeyHolder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(sha256) if Sha256::digest(end_entity.as_ref()).as_slice() != sha256 => {
                Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The connectors of every policy.
#[derive(Clone)]
pub struct Connectors {
    any: TlsConnector,
    verified: Option<TlsConnector>,
}

impl Connectors {
    /// `ca_file`: CA certificates for "verify" (default: the system bundle, if present).
    pub fn new(ca_file: Option<&Path>) -> Result<Connectors, Error> {
        let any = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KeyHolder::any()))
            .with_no_client_auth();
        let bundle = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let verified = match load_roots(bundle) {
            Ok(roots) => Some(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ),
            // A configured file must load; a missing system bundle only disables "verify".
            Err(e) if ca_file.is_some() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "no CA bundle: outbound tls = \"verify\" will fail");
                None
            }
        };
        Ok(Connectors {
            any: TlsConnector::from(Arc::new(any)),
            verified: verified.map(|c| TlsConnector::from(Arc::new(c))),
        })
    }

    /// The connector for a policy; `None` when "verify" has no CA certificates.
    pub fn for_policy(&self, policy: TlsPolicy) -> Option<&TlsConnector> {
        match policy {
            TlsPolicy::Verify => self.verified.as_ref(),
            _ => Some(&self.any),
        }
    }
}

/// The federation's trust (SPEC 8 "Trust between servers"): the system's roots plus
/// `[messenger] ca_file`, used both ways: to verify a peer's server certificate when we
/// call it, and to check that a client certificate a peer presented names its host.
#[derive(Clone)]
pub struct PeerTrust {
    roots: Arc<RootCertStore>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerTrust {
    /// None when no root is available at all.
    pub fn load(extra: Option<&Path>) -> Result<Option<PeerTrust>, Error> {
        let mut roots = load_roots(Path::new(SYSTEM_BUNDLE)).unwrap_or_else(|_| RootCertStore::empty());
        if let Some(path) = extra {
            roots.roots.extend(load_roots(path)?.roots);
        }
        if roots.is_empty() {
            return Ok(None);
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .build()
            .map_err(|e| Error::new(ErrorKind::Config, format!("CA certificates: {e}")))?;
        Ok(Some(PeerTrust { roots, verifier }))
    }

    /// A connector that verifies a server's certificate for the name dialed and, when
    /// `identity` is given, presents it as our client certificate (SPEC 8.2 step 3).
    pub fn connector(&self, identity: Option<&ClientIdentity>) -> Result<TlsConnector, Error> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?
            .with_root_certificates(Arc::clone(&self.roots));
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|e| Error::new(ErrorKind::Config, format!("client certificate: {e}")))?,
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// Whether `chain` (a peer's client certificate and its intermediates, whose key the
    /// handshake proved) verifies against these roots as a server certificate for `host`:
    /// the same test a call to `host` would apply (SPEC 8.2 step 3).
    pub fn vouches_for(&self, chain: &[CertificateDer<'_>], host: &str) -> bool {
        let (Some((end_entity, intermediates)), Some(name)) = (chain.split_first(), server_name(host)) else {
            return false;
        };
        self.verifier.verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now()).is_ok()
    }
}

/// A certificate chain and its key, presented as a TLS client certificate.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads a PEM chain and its PEM key.
    pub fn load(cert: &Path, key: &Path) -> Result<ClientIdentity, Error> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", cert.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::new(ErrorKind::Config, format!("bad certificate in {}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(Error::new(ErrorKind::Config, format!("no certificate in {}", cert.display())));
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read the key {}: {e}", key.display())))?;
        Ok(ClientIdentity { chain, key })
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", path.display())))?
    {
        let cert =
            cert.map_err(|e| Error::new(ErrorKind::Config, format!("bad certificate in {}: {e}", path.display())))?;
        // Skip certificates rustls cannot use rather than failing the whole bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::new(ErrorKind::Config, format!("no CA certificate in {}", path.display())));
    }
    Ok(roots)
}

/// The TLS server name for a host: a DNS name, or an IP address for literals.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// SHA-256 of a DER certificate, as colon-separated upper-case hex (openssl's spelling).
pub fn fingerprint_text(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The certificate the server presented, whatever the verdict on it: a refusal can then
/// say which certificate was refused.
#[derive(Debug, Clone, Default)]
pub struct Presented(Arc<Mutex<Option<String>>>);

impl Presented {
    /// Its SHA-256 fingerprint, once a handshake got that far.
    pub fn fingerprint(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Records the presented certificate, then lets another verifier decide.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    presented: Presented,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.presented.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint_text(end_entity.as_ref()));
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connector that checks the server's certificate as `trust` says and, when given,
/// presents a client certificate (the ODMR customer authenticating with SASL EXTERNAL).
/// The host name checked is the [`ServerName`] given to `connect`.
pub fn client_connector(
    trust: &ServerTrust,
    client: Option<(&Path, &Path)>,
) -> Result<(TlsConnector, Presented), Error> {
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::SystemRoots | ServerTrust::CaFile(_) => {
            let roots = match trust {
                ServerTrust::CaFile(path) => load_roots(path)?,
                _ => load_roots(Path::new(SYSTEM_BUNDLE)).map_err(|e| {
                    Error::config(
                        "tls_ca",
                        format!("no system CA certificates to check the server against ({e}); give a CA file or a fingerprint"),
                    )
                })?,
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, format!("CA certificates: {e}")))?
        }
        ServerTrust::Fingerprint(sha256) => Arc::new(KeyHolder { pin: Some(*sha256), provider: provider() }),
        ServerTrust::Insecure => Arc::new(KeyHolder::any()),
    };
    let presented = Presented::default();
    let verifier = Arc::new(Recording { inner: verifier, presented: presented.clone() });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let identity = ClientIdentity::load(cert, key)?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| Error::new(ErrorKind::Config, format!("client certificate: {e}")))?
        }
    };
    Ok((TlsConnector::from(Arc::new(config)), presented))
}

/// The certificate error inside a failed handshake's I/O error, if that is why it failed.
pub fn certificate_error(error: &std::io::Error) -> Option<&CertificateError> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(e) => Some(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_in_any_usual_spelling() {
        let lower = "ab".repeat(32);
        let openssl = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&lower).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&openssl).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&format!(" {openssl}\n")).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint(&"ab".repeat(31)).is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"+a".repeat(32)).is_err());
        assert_eq!(fingerprint_text(b"x").len(), 32 * 3 - 1);
    }

    #[test]
    fn trust_options_are_exclusive() {
        assert_eq!(ServerTrust::from_options(None, None, false).unwrap(), ServerTrust::SystemRoots);
        assert_eq!(ServerTrust::from_options(None, None, true).unwrap(), ServerTrust::Insecure);
        assert!(!ServerTrust::Insecure.authenticates());
        assert!(ServerTrust::from_options(Some(Path::new("ca.pem")), None, true).is_err());
        assert!(ServerTrust::from_options(None, Some(&"00".repeat(32)), true).is_err());
    }
}
