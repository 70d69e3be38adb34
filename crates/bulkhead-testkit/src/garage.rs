//! A real single-node Garage S3 server (crate `garage`, installed by scripts/test-deps with
//! `cargo install`) on 127.0.0.1 with a fresh layout, killed and removed on drop.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The S3 region the test server answers for.
pub const REGION: &str = "garage";

/// A running Garage node with its admin token.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    s3_port: u16,
    admin_port: u16,
    admin_token: String,
    dir: PathBuf,
}

/// `garage` on PATH, or where `cargo install` puts it.
fn garage_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BULKHEAD_GARAGE") {
        return Ok(p.into());
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/garage"));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .context("Garage (garage) not found on PATH or in ~/.cargo/bin: run scripts/test-deps")
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

impl Garage {
    pub fn start() -> anyhow::Result<Self> {
        let bin = garage_binary()?;
        let free = bulkhead_pgcluster::free_port;
        let (rpc_port, s3_port, admin_port) = (free()?, free()?, free()?);
        let admin_token = random_hex(32)?;
        let dir =
            std::env::temp_dir().join(format!("bulkhead-garage-{}-{s3_port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\nadmin_token = \"{admin_token}\"\n",
                d = dir.display(),
                secret = random_hex(32)?,
            ),
        )?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut garage = Self {
            child,
            s3_port,
            admin_port,
            admin_token,
            dir,
        };
        garage.wait_port(admin_port)?;
        // One node, one zone: assign it a role and apply the first layout.
        let node = garage.cli(&["node", "id", "-q"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        garage.cli(&["layout", "apply", "--version", "1"])?;
        garage.wait_port(s3_port)?;
        Ok(garage)
    }

    fn wait_port(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Garage exited during start ({status}): {}",
                    std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("Garage did not listen on {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Runs a `garage` CLI command against this node and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(garage_binary()?)
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!(
                "garage {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
