//! [`TlsConfig`]: TLS for the stand-alone [`Server`](crate::Server) with rustls, so that it
//! serves `wss://` and `https://` itself, with certificates replaced while it runs
//! ([`TlsConfig::reload`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

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
/// let server = wshub::Server::start_tls("0.0.0.0:443", hub, router, tls.clone()).await?;
/// // Later, once the files were renewed: new connections get the new certificate.
/// tls.reload()?;
/// # Ok(()) }
/// ```
///
/// Clones share one current certificate: [`TlsConfig::reload`] and [`TlsConfig::replace`]
/// on any clone change what every server using it presents to the connections it accepts
/// from then on; connections already open keep theirs.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: Arc<RwLock<TlsAcceptor>>,
    /// The certificate chain and key files, when read from files.
    files: Option<Arc<(PathBuf, PathBuf)>>,
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
        let mut config = Self::from_pem(&certs, &key).map_err(|error| match error {
            Error::Tls(message) => Error::Tls(format!(
                "{message} ({}, {})",
                cert_chain.as_ref().display(),
                private_key.as_ref().display()
            )),
            other => other,
        })?;
        config.files = Some(Arc::new((
            cert_chain.as_ref().to_path_buf(),
            private_key.as_ref().to_path_buf(),
        )));
        Ok(config)
    }

    /// Reads the files this configuration was made from ([`TlsConfig::from_pem_files`])
    /// again and, when they parse and fit, serves connections accepted from now on with
    /// them. Connections already open keep the certificate they were accepted with. On an
    /// error, nothing changes: the current certificate stays.
    ///
    /// # Errors
    /// [`Error::Tls`] as for [`TlsConfig::from_pem_files`], or when this configuration was
    /// not read from files.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(files) = &self.files else {
            return Err(Error::Tls(
                "this TLS configuration was not read from files; nothing to reload".to_owned(),
            ));
        };
        let (cert_chain, private_key) = &**files;
        let fresh = Self::from_pem_files(cert_chain, private_key)?;
        self.replace(&fresh);
        Ok(())
    }

    /// Serves connections accepted from now on with `other`'s certificate (and rustls
    /// configuration); connections already open keep theirs. The files [`TlsConfig::reload`]
    /// reads stay this configuration's own.
    pub fn replace(&self, other: &TlsConfig) {
        let fresh = other.acceptor();
        *self
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// The acceptor for the next connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
            acceptor: Arc::new(RwLock::new(TlsAcceptor::from(config))),
            files: None,
        }
    }
}
