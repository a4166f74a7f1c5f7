//! TLS with rustls: the server certificate (configured, or self-signed on first start),
//! optional client certificates for SASL EXTERNAL, and a stream that is plain or TLS.

use crate::support::error::{Error, ErrorKind};
use crate::support::live::Live;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use vouchmail_proto::smtp::session::TlsInfo;
use vouchmail_store::Store;

/// A verified client certificate's facts, for mapping it to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// The subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// True when the certificate chains to the configured client CA; otherwise only its
    /// fingerprint may be trusted (the handshake proved the key, nothing vouched for the name).
    pub ca_verified: bool,
}

/// The server side TLS setup shared by every listener; every clone sees a reload (SIGHUP:
/// new certificate files take effect for the next handshake).
#[derive(Clone)]
pub struct Tls {
    current: Live<Loaded>,
    ask_peers: bool,
}

/// What one load of the certificate files made.
struct Loaded {
    acceptor: TlsAcceptor,
    /// Whether client certificates are checked against a CA.
    ca_configured: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads the configured certificate, or creates (once) a self-signed one for the host
    /// name in the data folder. `Config::load` has already checked that each configured
    /// file holds PEM of its kind, naming the key; this stays for configs built in code.
    pub fn from_config(config: &Config) -> Result<Tls, Error> {
        Tls::build(config, false)
    }

    /// For the Messenger listener: also asks every client for a certificate and takes any
    /// whose key the handshake proves, so that a home server can check one presented by
    /// a verifier against the federation's roots (SPEC 8.2 step 3, [`peer_chain`]).
    pub fn for_peers(config: &Config) -> Result<Tls, Error> {
        Tls::build(config, true)
    }

    fn build(config: &Config, ask_peers: bool) -> Result<Tls, Error> {
        Ok(Tls { current: Live::new(Tls::load(config, ask_peers)?), ask_peers })
    }

    /// Reads the certificate files again (SIGHUP); on an error the current ones stay.
    pub fn reload(&self, config: &Config) -> Result<(), Error> {
        self.current.set(Tls::load(config, self.ask_peers)?);
        Ok(())
    }

    /// The acceptor of the files loaded last.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.get().acceptor.clone()
    }

    fn load(config: &Config, ask_peers: bool) -> Result<Loaded, Error> {
        let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => self_signed(config)?,
            _ => return Err(Error::new(ErrorKind::Config, "tls.cert and tls.key must be set together")),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", cert_path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::new(ErrorKind::Config, format!("bad certificate in {}: {e}", cert_path.display())))?;
        if certs.is_empty() {
            return Err(Error::new(ErrorKind::Config, format!("no certificate in {}", cert_path.display())));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read the key {}: {e}", key_path.display())))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        let ca_configured = config.tls.client_ca.is_some();
        let builder = match &config.tls.client_ca {
            Some(ca_path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca_path)
                    .map_err(|e| Error::new(ErrorKind::Config, format!("cannot read {}: {e}", ca_path.display())))?
                {
                    let cert = cert.map_err(|e| {
                        Error::new(ErrorKind::Config, format!("bad certificate in {}: {e}", ca_path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::new(ErrorKind::Config, format!("bad CA certificate in {}: {e}", ca_path.display()))
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| Error::new(ErrorKind::Config, format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None if config.tls.request_client_cert || ask_peers => {
                builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider())))
            }
            None => builder.with_no_client_auth(),
        };
        let server_config = builder
            .with_single_cert(certs, key)
            .map_err(|e| Error::new(ErrorKind::Config, format!("tls.cert and tls.key do not match: {e}")))?;
        Ok(Loaded { acceptor: TlsAcceptor::from(Arc::new(server_config)), ca_configured })
    }

    /// The client certificate of a finished handshake, if one was presented.
    pub fn client_certificate(&self, stream: &TlsStream<TcpStream>) -> Option<ClientCertificate> {
        let (_, connection) = stream.get_ref();
        let cert = connection.peer_certificates()?.first()?;
        let fingerprint = hex(&Sha256::digest(cert.as_ref()));
        let subject = crate::net::x509::subject_of(cert.as_ref()).unwrap_or_default();
        Some(ClientCertificate { fingerprint, subject, ca_verified: self.current.get().ca_configured })
    }
}

/// The certificate files the server presents: the configured pair, or where the
/// self-signed one is kept (made by [`Tls::from_config`] at start).
pub fn certificate_files(config: &Config) -> (PathBuf, PathBuf) {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (config.data_dir.join("tls").join("cert.pem"), config.data_dir.join("tls").join("key.pem")),
    }
}

/// The certificate chain the peer presented in this connection's TLS handshake (its key
/// proven by the handshake, nothing else checked yet), if any.
pub fn peer_chain(stream: &MaybeTls) -> Option<Vec<CertificateDer<'static>>> {
    let MaybeTls::Tls(tls) = stream else { return None };
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
}

/// The RFC 9266 tls-exporter channel binding of a connection (for SCRAM-SHA-256-PLUS).
pub fn channel_binding(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let (_, connection) = stream.get_ref();
    // RFC 9266 2: only with TLS 1.3 (or 1.2 with extended master secret, which rustls
    // always negotiates, but we keep to 1.3 to be safe).
    if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    connection.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None).ok()
}

/// Protocol version and cipher suite, for logs and the Received field.
pub fn describe(stream: &TlsStream<TcpStream>) -> (String, String) {
    let (_, connection) = stream.get_ref();
    let version = connection.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let cipher = connection.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default();
    (version.replace("TLSv1_", "TLSv1."), cipher)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `<data_dir>/tls/cert.pem` and `key.pem` naming the host name (CN and SAN), and
/// makes them again when the configured host name is no longer the one they name.
fn self_signed(config: &Config) -> Result<(PathBuf, PathBuf), Error> {
    let (cert_path, key_path) = certificate_files(config);
    let dir = config.data_dir.join("tls");
    // The Messenger name too, when it differs: the certificate is also what the
    // federation client presents (SPEC 8.2 step 3).
    let mut wanted = vec![config.hostname.clone()];
    if !config.messenger_hostname().eq_ignore_ascii_case(&config.hostname) {
        wanted.push(config.messenger_hostname().to_string());
    }
    if cert_path.exists() && key_path.exists() {
        match names_of(&cert_path) {
            Some(names) if wanted.iter().all(|w| names.iter().any(|n| n.eq_ignore_ascii_case(w))) => {
                return Ok((cert_path, key_path));
            }
            names => tracing::info!(
                cert = %cert_path.display(),
                old = ?names.unwrap_or_default(),
                hostname = %config.hostname,
                "the self-signed certificate names another host; making a new one"
            ),
        }
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot create {}: {e}", dir.display())))?;
    let mut params = rcgen::CertificateParams::new(wanted).map_err(|e| {
        Error::new(ErrorKind::Config, format!("cannot make a certificate for {}: {e}", config.hostname))
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, config.hostname.clone());
    let key =
        rcgen::KeyPair::generate().map_err(|e| Error::new(ErrorKind::Config, format!("cannot generate a key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot generate a certificate: {e}")))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot write {}: {e}", cert_path.display())))?;
    tracing::info!(cert = %cert_path.display(), hostname = %config.hostname, "created a self-signed certificate");
    Ok((cert_path, key_path))
}

/// The DNS names (SAN) a PEM certificate file names; None if it does not parse.
fn names_of(path: &Path) -> Option<Vec<String>> {
    let der = CertificateDer::from_pem_file(path).ok()?;
    crate::net::x509::dns_names(der.as_ref())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::support::files::write_private(path, bytes)
        .map_err(|e| Error::new(ErrorKind::Config, format!("cannot write {}: {e}", path.display())))
}

/// Asks for a client certificate and accepts any: the handshake still proves the client
/// holds its key, so the certificate can be pinned by fingerprint (`user cert-map
/// --fingerprint`). Names in it are not trusted.
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server-side connection before or after STARTTLS.
pub type MaybeTls = crate::net::stream::Connection<TlsStream<TcpStream>>;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the server side of a TLS handshake and gathers what the session needs to know.
pub async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    store: &dyn Store,
) -> Option<(Box<tokio_rustls::server::TlsStream<TcpStream>>, TlsInfo)> {
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    let (version, cipher) = describe(&stream);
    let mut external_identity = None;
    if let Some(cert) = tls.client_certificate(&stream) {
        // A name is trusted only when a configured CA vouched for it.
        let subject = cert.ca_verified.then_some(cert.subject.as_str());
        match store.cert_mapping_account(&cert.fingerprint, subject).await {
            Ok(account) => external_identity = account,
            Err(e) => tracing::warn!(error = %e, "cannot look up the client certificate mapping"),
        }
        tracing::debug!(fingerprint = %cert.fingerprint, subject = %cert.subject, account = ?external_identity, "client certificate");
    }
    let info = TlsInfo { version, cipher, channel_binding: channel_binding(&stream), external_identity };
    Some((Box::new(stream), info))
}

/// Writes `pending` (the 220 / +OK to STARTTLS or STLS) and runs the TLS handshake on the
/// connection, replacing it in place. None: the connection is unusable and must be closed.
pub async fn upgrade(stream: &mut MaybeTls, pending: &[u8], tls: Option<&Tls>, store: &dyn Store) -> Option<TlsInfo> {
    stream.write_all(pending).await.ok()?;
    let tls = tls?;
    let MaybeTls::Plain(tcp) = std::mem::replace(stream, MaybeTls::Closed) else { return None };
    let (tls_stream, info) = handshake(tls, tcp, store).await?;
    *stream = MaybeTls::Tls(tls_stream);
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_names_the_hostname_and_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            Config { hostname: "mx.one.test".into(), data_dir: dir.path().to_path_buf(), ..Config::default() };
        let (cert, _) = self_signed(&config).unwrap();
        assert_eq!(names_of(&cert), Some(vec!["mx.one.test".to_string()]));
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(crate::net::x509::subject_of(der.as_ref()).as_deref(), Some("CN=mx.one.test"));
        let first = std::fs::read(&cert).unwrap();
        self_signed(&config).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first, "kept while the name holds");
        config.hostname = "mx.two.test".into();
        self_signed(&config).unwrap();
        assert_eq!(names_of(&cert), Some(vec!["mx.two.test".to_string()]));
    }
}
