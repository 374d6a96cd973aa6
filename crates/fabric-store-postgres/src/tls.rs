//! TLS to PostgreSQL as the URL's `sslmode` asks, with libpq's meanings: `disable` (and no
//! `sslmode`) connects in plain; `prefer` uses TLS when the server offers it; `require`
//! insists on TLS without checking the certificate (unless `sslrootcert` names a CA file,
//! which makes it `verify-ca`, as in libpq); `verify-ca` checks that a trusted CA signed the
//! server's certificate; `verify-full` also that it names the host. Trusted CAs come from
//! `sslrootcert=FILE` (PEM), else the public web's roots. rustls with the ring provider.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no `sslrootcert`: those
//! two parameters are taken out of the URL here, and the rest goes to tokio-postgres.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fabric_store::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS parameters of a URL, and the URL without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub mode: TlsMode,
    pub root_cert: Option<PathBuf>,
    /// The URL for tokio-postgres: without `sslmode` and `sslrootcert`.
    pub rest: String,
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidArgument(format!("database URL: {}", message.into()))
}

/// Takes `sslmode` and `sslrootcert` out of `url` (`postgres://...?k=v&...` or the
/// `k=v k=v` form).
pub(crate) fn split(url: &str) -> Result<TlsParams, StoreError> {
    let uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, query, separator) = if uri {
        match url.split_once('?') {
            Some((head, query)) => (head.to_owned() + "?", query, '&'),
            None => (url.to_owned(), "", '&'),
        }
    } else {
        (String::new(), url, ' ')
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split(separator).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(match value {
                    "disable" => TlsMode::Disable,
                    "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                })
            }
            Some(("sslrootcert", value)) if !value.is_empty() => {
                root_cert = Some(PathBuf::from(value))
            }
            _ => kept.push(pair),
        }
    }
    let mut mode = mode.unwrap_or(TlsMode::Disable);
    if mode == TlsMode::Require && root_cert.is_some() {
        mode = TlsMode::VerifyCa;
    }
    let joined = kept.join(&separator.to_string());
    let rest = if uri {
        if joined.is_empty() {
            head.trim_end_matches('?').to_owned()
        } else {
            head + &joined
        }
    } else {
        joined
    };
    Ok(TlsParams {
        mode,
        root_cert,
        rest,
    })
}

impl TlsParams {
    /// tokio-postgres's mode: it only chooses whether TLS is tried and insisted on;
    /// the verifier of [`TlsParams::connector`] decides what is checked.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector every connection of the store uses (unused with `disable`).
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => Arc::new(Verifier {
                chain: None,
                algorithms,
            }),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = Arc::new(roots(self.root_cert.as_deref())?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| invalid(format!("TLS roots: {e}")))?;
                if self.mode == TlsMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(Verifier {
                        chain: Some(webpki),
                        algorithms,
                    })
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The CAs in `path` (PEM), or the webpki roots.
fn roots(path: Option<&Path>) -> Result<rustls::RootCertStore, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = path else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let bad = |reason: String| invalid(format!("sslrootcert {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// `require` (no `chain`: any certificate, the handshake's signatures still checked) and
/// `verify-ca` (a trusted chain, whatever name it carries).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_both_url_forms() {
        let p =
            split("postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(p.mode, TlsMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(p.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(p.ssl_mode(), SslMode::Require);

        let p = split("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (p.mode, p.rest.as_str()),
            (TlsMode::Require, "postgres://u@h/db")
        );
        let p = split("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            p.mode,
            TlsMode::VerifyCa,
            "require with a root file verifies the CA"
        );

        let p = split("host=h user=u sslmode=prefer dbname=d").unwrap();
        assert_eq!(
            (p.mode, p.rest.as_str()),
            (TlsMode::Prefer, "host=h user=u dbname=d")
        );

        let p = split("postgres://u@h/db").unwrap();
        assert_eq!((p.mode, p.ssl_mode()), (TlsMode::Disable, SslMode::Disable));

        let err = split("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(
            err.to_string().contains("sslmode=allow is not one of"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_or_empty_root_file_is_named() {
        let p =
            split("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let err = p.connector().err().expect("a missing file");
        assert!(
            err.to_string()
                .contains("sslrootcert /nonexistent/ca.pem: cannot read it"),
            "{err}"
        );
        for mode in ["disable", "prefer", "require", "verify-full"] {
            let p = split(&format!("postgres://h/db?sslmode={mode}")).unwrap();
            assert!(p.connector().is_ok(), "{mode}");
        }
    }
}
