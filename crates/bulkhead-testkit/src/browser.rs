//! A real browser for front-end tests: Debian's Chromium (`/usr/bin/chromium`, installed by
//! scripts/test-deps), driven by npm `playwright-core` (installed by scripts/test-deps into
//! `crates/bulkhead-testkit/browser/node_modules`; it downloads no browser).
//!
//! A test writes its scenario as a Node.js module that starts the browser with
//! `(await import(process.env.BULKHEAD_BROWSER + "/launch.mjs")).launch()` and prints one JSON
//! object as its last line; [`run_scenario`] runs it and returns that object, and the test
//! asserts on it in Rust.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Chromium, as Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs `node script args…` with the browser's paths in its environment, killing it after
/// `deadline`; the scenario's last stdout line parsed as JSON.
pub fn run_scenario(
    script: &Path,
    args: &[&str],
    deadline: Duration,
) -> anyhow::Result<serde_json::Value> {
    let dir = driver_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        bail!(
            "npm playwright-core is not installed in {}: run scripts/test-deps",
            dir.display()
        );
    }
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: run scripts/test-deps (Debian package chromium)");
    }
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .env("BULKHEAD_BROWSER", &dir)
        .env("BULKHEAD_CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting node")?;
    // Read both pipes on threads so a chatty browser never blocks on a full pipe.
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        None => bail!(
            "the browser scenario ran over {deadline:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
        Some(s) if !s.success() => {
            bail!("the browser scenario failed ({s})\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
        Some(_) => {}
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| {
        format!("the scenario's last line is not JSON\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}
