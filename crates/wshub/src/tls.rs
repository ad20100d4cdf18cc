//! [`TlsConfig`]: TLS for the stand-alone [`Server`](crate::Server) with rustls, so that it
//! serves `wss://` and `https://` itself.

use std::{fmt, path::Path, sync::Arc};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::{TlsAcceptor, rustls};

use crate::Error;

/// A server certificate chain and its private key, ready to accept TLS connections.
///
/// ```no_run
/// # async fn run() -> Result<(), wshub::Error> {
/// let tls = wshub::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let hub = wshub::Hub::default();
/// let router = hub.router();
/// let server = wshub::Server::start_tls("0.0.0.0:443", hub, router, tls).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) from files.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file that cannot be read or parsed, or the key that does
    /// not fit the certificate.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| Error::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let certs = read(cert_chain.as_ref())?;
        let key = read(private_key.as_ref())?;
        Self::from_pem(&certs, &key).map_err(|error| match error {
            Error::Tls(message) => Error::Tls(format!(
                "{message} ({}, {})",
                cert_chain.as_ref().display(),
                private_key.as_ref().display()
            )),
            other => other,
        })
    }

    /// Parses a PEM certificate chain (leaf first) and a PEM private key.
    ///
    /// # Errors
    /// [`Error::Tls`] when either does not parse or the key does not fit the certificate.
    pub fn from_pem(cert_chain: &[u8], private_key: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("bad certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Tls(
                "no certificate in the certificate PEM".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key)
            .map_err(|e| Error::Tls(format!("bad private key PEM: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit: {e}")))?;
        // WebSocket upgrades are HTTP/1.1 requests (RFC 6455 §4.1).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Uses a rustls configuration built by the caller (client authentication, ciphers,
    /// certificate resolvers). Its ALPN list should offer `http/1.1`.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
        }
    }
}
