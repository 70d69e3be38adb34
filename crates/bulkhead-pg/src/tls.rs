//! TLS to PostgreSQL with rustls, for every connection the platform and its workers open.
//!
//! [`PgConfig`] is a connection description: tokio-postgres's `Config` and its TLS
//! ([`PgTls`]: libpq's `sslmode`, root certificates, a client certificate), parsed from a
//! libpq URL. tokio-postgres itself knows only `sslmode=disable|prefer|require` and no
//! certificate options, so the URL's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` are taken
//! out here and applied by the rustls configuration (`verify-ca`: the chain; `verify-full`: the
//! chain and the host name; `prefer`/`require` without roots: encryption only, as libpq). The
//! rest of the URL — several hosts, `target_session_attrs`, `channel_binding` — is
//! tokio-postgres's. Channel binding (`SCRAM-SHA-256-PLUS`) comes with `tokio-postgres-rustls`.

use std::str::FromStr;
use std::sync::Arc;

use bulkhead_model::Secret;
pub use bulkhead_model::pgtls::{PgTls, SslMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The TLS connector every PostgreSQL connection of the platform uses.
pub type Connector = MakeRustlsConnect;

/// A [`PgTls`] with the connector built from it once (cheap to clone).
#[derive(Clone)]
pub struct Tls {
    spec: PgTls,
    connector: Connector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec.fmt(f)
    }
}

impl Tls {
    pub fn new(spec: PgTls) -> Result<Self> {
        Ok(Self {
            connector: connector(&spec)?,
            spec,
        })
    }

    /// Plaintext: for a cluster the platform started itself on the loopback interface.
    pub fn disabled() -> Result<Self> {
        Self::new(PgTls {
            mode: SslMode::Disable,
            ..PgTls::default()
        })
    }

    pub fn spec(&self) -> &PgTls {
        &self.spec
    }

    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// tokio-postgres's own `sslmode` for this TLS.
    pub fn wire_mode(&self) -> tokio_postgres::config::SslMode {
        match self.spec.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// A PostgreSQL connection description with its TLS.
#[derive(Clone)]
pub struct PgConfig {
    pub pg: tokio_postgres::Config,
    tls: Tls,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("ports", &self.pg.get_ports())
            .field("dbname", &self.pg.get_dbname())
            .field("user", &self.pg.get_user())
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::ops::Deref for PgConfig {
    type Target = tokio_postgres::Config;
    fn deref(&self) -> &Self::Target {
        &self.pg
    }
}

impl std::ops::DerefMut for PgConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.pg
    }
}

impl FromStr for PgConfig {
    type Err = Error;

    /// A libpq URL (`postgres://user:password@host:port,host2:port/db?sslmode=verify-full&
    /// sslrootcert=/etc/ca.pem`), certificate files read now. Key/value strings
    /// (`host=… user=…`) are tokio-postgres's: `sslmode=disable|prefer|require` only.
    fn from_str(url: &str) -> Result<Self> {
        let (pg, tls) = parse_url(url)?;
        PgConfig::new(pg, tls)
    }
}

impl PgConfig {
    /// `pg` with `tls` (its `sslmode` set to what tokio-postgres must do for it).
    pub fn new(pg: tokio_postgres::Config, tls: PgTls) -> Result<Self> {
        Ok(Self::with_tls(pg, Tls::new(tls)?))
    }

    fn with_tls(mut pg: tokio_postgres::Config, tls: Tls) -> Self {
        pg.ssl_mode(tls.wire_mode());
        Self { pg, tls }
    }

    /// A description of a local cluster the platform started itself (the embedded cluster of
    /// `up`, test clusters): plaintext on the loopback interface.
    pub fn local(pg: tokio_postgres::Config) -> Result<Self> {
        Ok(Self::with_tls(pg, Tls::disabled()?))
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn connector(&self) -> Connector {
        self.tls.connector()
    }

    /// Connects; the connection future must be spawned by the caller.
    pub async fn connect(
        &self,
    ) -> std::result::Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, Stream>,
        ),
        tokio_postgres::Error,
    > {
        self.pg.connect(self.tls.connector()).await
    }
}

/// The stream of a [`Connector`]'s connections (its own type is private to the crate).
pub type Stream =
    <Connector as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// The URL's own TLS options taken out, the rest left to tokio-postgres.
fn parse_url(url: &str) -> Result<(tokio_postgres::Config, PgTls)> {
    let bad_url = |e: tokio_postgres::Error| Error::Tls(format!("not a valid PostgreSQL URL: {e}"));
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.parse().map_err(bad_url)?, PgTls::default()));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut tls = PgTls::default();
    let (mut root, mut cert, mut key) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| Error::Tls(format!("{k} is not UTF-8")))
        };
        match k {
            "sslmode" => tls.mode = value()?.parse().map_err(Error::Tls)?,
            "sslrootcert" => root = Some(value()?),
            "sslcert" => cert = Some(value()?),
            "sslkey" => key = Some(value()?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let pg: tokio_postgres::Config = rest.parse().map_err(bad_url)?;
    let read = |what: &str, path: &str| {
        std::fs::read_to_string(path).map_err(|e| Error::Tls(format!("reading {what} {path}: {e}")))
    };
    match root.as_deref() {
        Some("system") => tls.system_roots = true,
        Some(path) => tls.root_pem = Some(read("sslrootcert", path)?),
        None => {}
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls.client = Some((read("sslcert", &cert)?, Secret::new(read("sslkey", &key)?)));
        }
        (None, None) => {}
        _ => return Err(Error::Tls("sslcert and sslkey go together".into())),
    }
    Ok((pg, tls))
}

/// The rustls side of `tls`.
fn connector(tls: &PgTls) -> Result<Connector> {
    let bad = |e: rustls::Error| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(tls)?;
    if roots.is_none() && matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        return Err(Error::Tls(format!(
            "sslmode={} needs sslrootcert (a PEM file of the CA certificates, or `system`)",
            tls.mode.as_str()
        )));
    }
    let chain = match roots {
        // `prefer` does not check, as libpq; `require` checks when given roots.
        Some(roots) if tls.mode != SslMode::Prefer => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Tls(e.to_string()))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(Verifier {
        chain,
        check_name: tls.mode == SslMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls(format!("sslcert: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                .map_err(|e| Error::Tls(format!("sslkey: {e}")))?;
            builder.with_client_auth_cert(certs, key).map_err(bad)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The root certificates `tls` names, if any.
fn roots(tls: &PgTls) -> Result<Option<RootCertStore>> {
    let mut store = RootCertStore::empty();
    if let Some(pem) = &tls.root_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::Tls(format!("sslrootcert: {e}")))?;
            store
                .add(cert)
                .map_err(|e| Error::Tls(format!("sslrootcert: {e}")))?;
        }
        if store.is_empty() {
            return Err(Error::Tls("sslrootcert holds no certificate".into()));
        }
    }
    if tls.system_roots {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Tls(
                "sslrootcert=system: the system has no root certificates".into(),
            ));
        }
    }
    Ok((!store.is_empty()).then_some(store))
}

/// The server's certificate as `sslmode` asks: with `chain`, it must lead to a root (rustls's
/// verifier, which checks the chain before the name — so a name error means the chain held);
/// with `check_name` (`verify-full`), it must also name the host. Without `chain` (`prefer`,
/// `require` without roots) the connection is encrypted but the server not authenticated, as
/// with libpq. The handshake's signature is checked against the certificate either way.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
