//! The STARTTLS certificate: PEM files named by configuration, served with rustls on ring.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::error::IngestError;

/// Loads the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, IngestError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| IngestError::TlsCertificate {
            path: cert_path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(IngestError::TlsNoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| IngestError::TlsKey {
        path: key_path.to_owned(),
        source,
    })?;
    // The process-wide default provider is not relied upon: ring is named here explicitly.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| IngestError::TlsKeyUnusable {
            path: key_path.to_owned(),
            source,
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
