//! The HTTPS listener (`[serve] tls_cert_file`, `tls_key_file`): rustls on the accepted
//! connections, the certificate and key read again on SIGHUP — a renewed certificate is used by
//! the next handshake, open connections keep theirs, and a pair that does not load leaves the
//! old one in place (logged). Handshakes run in their own tasks, so a slow client holds up no
//! other; one that does not finish within [`HANDSHAKE_TIMEOUT`] is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::Context;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The served certificate, replaceable while the server runs.
#[derive(Debug)]
pub(crate) struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    /// Reads the pair; an error names the file at fault.
    pub(crate) fn load(cert_file: PathBuf, key_file: PathBuf) -> crate::error::Result<Arc<Self>> {
        let current = RwLock::new(Arc::new(read_pair(&cert_file, &key_file)?));
        Ok(Arc::new(Self {
            cert_file,
            key_file,
            current,
        }))
    }

    /// Reads the files again; on failure the served pair stays.
    pub(crate) fn reload(&self) -> crate::error::Result<()> {
        let pair = Arc::new(read_pair(&self.cert_file, &self.key_file)?);
        if let Ok(mut current) = self.current.write() {
            *current = pair;
        }
        Ok(())
    }

    /// Reloads on every SIGHUP for as long as the process runs.
    pub(crate) fn reload_on_sighup(self: &Arc<Self>) -> crate::error::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let certs = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match certs.reload() {
                    Ok(()) => tracing::info!(
                        cert = %certs.cert_file.display(),
                        "SIGHUP: TLS certificate reloaded"
                    ),
                    Err(e) => tracing::warn!(
                        error = %format!("{e:#}"),
                        "SIGHUP: the TLS certificate did not load; serving the previous one"
                    ),
                }
            }
        });
        Ok(())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn read_pair(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> crate::error::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| crate::error::Error::msg(format!("{e:?}")))
        .with_context(|| format!("reading serve.tls_cert_file {}", cert_file.display()))?;
    crate::error::ensure!(
        !certs.is_empty(),
        "serve.tls_cert_file {} holds no certificate",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| crate::error::Error::msg(format!("{e:?}")))
        .with_context(|| format!("reading serve.tls_key_file {}", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| crate::error::Error::msg(e.to_string()))
        .with_context(|| format!("serve.tls_key_file {}", key_file.display()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .map_err(|e| crate::error::Error::msg(e.to_string()))
        .with_context(|| {
            format!(
                "serve.tls_key_file {} is not the key of serve.tls_cert_file {}",
                key_file.display(),
                cert_file.display()
            )
        })?;
    Ok(pair)
}

/// TLS connections, handshaken, for `axum::serve`.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, certs: Arc<Certs>) -> crate::error::Result<Self> {
        let local = tcp.local_addr()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::error::Error::msg(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (never while the server runs): nothing more arrives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
