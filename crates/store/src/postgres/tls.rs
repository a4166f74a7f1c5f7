//! TLS to the database server: rustls with ring (the rest of vouchmail's TLS), the
//! server's certificate verified for the host name of the URL against the system's roots
//! plus `[store] ca_file`.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{StoreError, StoreResult};

/// Where Debian keeps the system's CA bundle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client for the pool's connections.
pub(super) fn connector(ca_file: Option<&Path>) -> StoreResult<MakeRustlsConnect> {
    // A missing system bundle is not an error when ca_file names the server's CA.
    let mut roots = read_roots(Path::new(SYSTEM_BUNDLE)).unwrap_or_else(|_| RootCertStore::empty());
    if let Some(path) = ca_file {
        roots.roots.extend(read_roots(path)?.roots);
    }
    if roots.is_empty() {
        return Err(StoreError::Invalid(format!(
            "no CA certificates to verify the database server against (none in {SYSTEM_BUNDLE}); set store.ca_file"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn read_roots(path: &Path) -> StoreResult<RootCertStore> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| StoreError::Invalid(format!("cannot read {shown}: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| StoreError::Invalid(format!("bad certificate in {shown}: {e}")))?;
        // A certificate rustls cannot use is skipped rather than failing the whole bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(StoreError::Invalid(format!("no CA certificate in {shown}")));
    }
    Ok(roots)
}
