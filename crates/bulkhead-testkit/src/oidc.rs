//! A real OpenID Connect provider (npm `oidc-provider`, installed by scripts/test-deps into
//! `crates/bulkhead-testkit/oidc/node_modules`) on 127.0.0.1, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

pub const CLIENT_ID: &str = "bulkhead-test";
pub const CLIENT_SECRET: &str = "bulkhead-test-secret";

/// What to start.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    /// The issuer to claim; default `http://127.0.0.1:<port>`.
    pub issuer: Option<String>,
    pub kid: String,
    pub audience: String,
    pub roles: Vec<String>,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            kid: "key-1".into(),
            audience: "https://api.example/".into(),
            roles: vec!["agent".into()],
        }
    }
}

/// A running provider.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    port: u16,
    issuer: String,
}

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl OidcProvider {
    /// Starts the provider; a port taken between choosing and binding it (the provider then
    /// exits without its ready line) is retried on another port, and a provider that says
    /// nothing within 30 s is killed rather than waited on for ever.
    pub fn start(options: &OidcOptions) -> anyhow::Result<Self> {
        let dir = script_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!(
                "npm oidc-provider is not installed in {}: run scripts/test-deps",
                dir.display()
            );
        }
        let mut last = anyhow!("the OpenID provider did not start");
        for _ in 0..3 {
            match Self::start_once(&dir, options) {
                Ok(provider) => return Ok(provider),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(dir: &std::path::Path, options: &OidcOptions) -> anyhow::Result<Self> {
        let port = bulkhead_pgcluster::free_port()?;
        let issuer = options
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("ISSUER", &issuer)
            .env("KID", &options.kid)
            .env("AUDIENCE", &options.audience)
            .env("ROLES", options.roles.join(","))
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node (is Node.js installed? run scripts/test-deps)")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the provider never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).context("waiting for the provider");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the OpenID provider said nothing within 30 s");
            }
        };
        if !line.starts_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the OpenID provider did not start: {line:?}");
        }
        Ok(Self {
            child,
            port,
            issuer,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the provider is served (its issuer too, unless another one was claimed).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    /// An access token from the client-credentials grant for `audience` (a resource indicator).
    pub fn token(&self, audience: &str) -> anyhow::Result<String> {
        let body = format!(
            "grant_type=client_credentials&scope=api&resource={}",
            audience.replace(':', "%3A").replace('/', "%2F")
        );
        let basic = base64_basic(CLIENT_ID, CLIENT_SECRET);
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {basic}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let json = response
            .split("\r\n\r\n")
            .nth(1)
            .ok_or_else(|| anyhow!("no body: {response}"))?;
        let v: serde_json::Value = serde_json::from_str(json).with_context(|| response.clone())?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no access_token: {response}"))
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
