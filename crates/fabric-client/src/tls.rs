//! The certificates a client trusts for `https://` and `wss://` servers: a private CA's
//! PEM file, or else the public web's roots (webpki-roots); TLS by rustls with the ring
//! provider, one configuration shared by the HTTP and the WebSocket connections.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::ClientError;

/// The TLS configuration trusting the CA certificates in `ca_cert` (PEM) when given,
/// else the webpki roots.
pub(crate) fn client_config(
    ca_cert: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert {
        Some(path) => {
            let invalid = |reason: String| ClientError::CaCert {
                path: path.to_owned(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("no CERTIFICATE block found".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::CaCert {
            path: ca_cert.map(Path::to_owned).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
