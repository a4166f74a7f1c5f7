//! Client TLS for STARTTLS (RFC 3207): one configuration that accepts any certificate
//! (opportunistic and "encrypt" levels, as RFC 7435 and Postfix do), one that verifies it
//! against CA certificates ("verify").

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

use super::route::TlsPolicy;

/// Where Debian keeps the system's CA bundle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted to whoever holds the key (unauthenticated encryption, RFC 7435).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
    pub fn new(ca_file: Option<&Path>) -> Result<Connectors, String> {
        let any = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth();
        let bundle = ca_file.unwrap_or(Path::new(SYSTEM_BUNDLE));
        let verified = match load_roots(bundle) {
            Ok(roots) => Some(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
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

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {}: {e}", path.display()))? {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        // Skip certificates rustls cannot use rather than failing the whole bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", path.display()));
    }
    Ok(roots)
}

/// The TLS server name for a host: a DNS name, or an IP address for literals.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}
