//! The hostile-code probe (feature `hostile-probe`, test builds only): `POST /__hostile` runs
//! what an attacker's code inside this worker would try — open files, walk directories for
//! credentials, signal, trace and read other processes, log in to PostgreSQL with every
//! credential found — and reports each outcome. The compartment tests assert that all of it
//! fails; a control run without the walls shows the same probe succeeding.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

/// What to try.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Probe {
    /// Files to open and read.
    read: Vec<PathBuf>,
    /// Trees to walk: every file found readable is listed and searched for PostgreSQL URLs.
    walk: Vec<PathBuf>,
    /// Processes to signal (signal 0), attach to with ptrace, and read the memory of.
    processes: Vec<i32>,
    /// PostgreSQL URLs to try besides those found.
    postgres: Vec<String>,
}

fn outcome(action: &str, target: impl std::fmt::Display, result: Result<String, String>) -> Value {
    let ok = result.is_ok();
    let detail = result.unwrap_or_else(|e| e);
    json!({"action": action, "target": target.to_string(), "ok": ok, "detail": detail})
}

pub async fn run(Json(probe): Json<Probe>) -> Json<Value> {
    let mut outcomes = Vec::new();
    let mut found = Vec::new();
    for path in &probe.read {
        let r = std::fs::read(path).map(|b| format!("{} bytes", b.len()));
        outcomes.push(outcome(
            "read",
            path.display(),
            r.map_err(|e| e.to_string()),
        ));
    }
    let mut readable = Vec::new();
    for root in &probe.walk {
        walk(root, &mut readable, &mut found, 0);
    }
    for (name, value) in std::env::vars() {
        scan(&value, &mut found);
        if name.contains("PASSWORD") || name.contains("TOKEN") || name.contains("KEY") {
            outcomes.push(outcome("environment", &name, Ok("present".into())));
        }
    }
    for pid in &probe.processes {
        outcomes.extend(processes(*pid));
    }
    // The seccomp wall alone: reading this process's own memory is allowed by every other wall.
    outcomes.push(outcome(
        "process_vm_readv",
        "self",
        read_memory(std::process::id() as i32),
    ));
    found.extend(probe.postgres.iter().cloned());
    found.sort();
    found.dedup();
    for url in &found {
        outcomes.push(outcome("postgres", redact(url), connect(url).await));
    }
    Json(json!({
        "uid": nix::unistd::getuid().as_raw(),
        "outcomes": outcomes,
        "readable": readable,
        "credentials_found": found.len(),
    }))
}

fn walk(path: &Path, readable: &mut Vec<String>, found: &mut Vec<String>, depth: usize) {
    if depth > 12 {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            walk(&entry.path(), readable, found, depth + 1);
        }
    } else if meta.is_file()
        && let Ok(bytes) = std::fs::read(path)
    {
        readable.push(path.display().to_string());
        scan(&String::from_utf8_lossy(&bytes), found);
    }
}

/// PostgreSQL URLs in `text`.
fn scan(text: &str, found: &mut Vec<String>) {
    for scheme in ["postgres://", "postgresql://"] {
        let mut rest = text;
        while let Some(at) = rest.find(scheme) {
            let url: String = rest[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\0'))
                .collect();
            rest = &rest[at + scheme.len()..];
            found.push(url);
        }
    }
}

fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    }
}

async fn connect(url: &str) -> Result<String, String> {
    let attempt = async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("logged in as {}", row.get::<_, String>(0)))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn processes(pid: i32) -> Vec<Value> {
    use nix::sys::ptrace;
    use nix::unistd::Pid;
    let target = Pid::from_raw(pid);
    let mut out = vec![outcome(
        "signal",
        pid,
        nix::sys::signal::kill(target, None)
            .map(|()| "may signal".to_owned())
            .map_err(|e| e.to_string()),
    )];
    // Seize (no stop), and if it worked, interrupt, wait and detach so the target goes on.
    let traced = ptrace::seize(target, ptrace::Options::empty());
    if traced.is_ok() {
        let _ = ptrace::interrupt(target);
        let _ = nix::sys::wait::waitpid(target, Some(nix::sys::wait::WaitPidFlag::__WALL));
        let _ = ptrace::detach(target, None);
    }
    out.push(outcome(
        "ptrace",
        pid,
        traced
            .map(|()| "attached".to_owned())
            .map_err(|e| e.to_string()),
    ));
    out.push(outcome("process_vm_readv", pid, read_memory(pid)));
    for file in ["environ", "mem", "cmdline"] {
        let path = format!("/proc/{pid}/{file}");
        let r = std::fs::File::open(&path)
            .and_then(|mut f| {
                let mut buf = [0u8; 64];
                std::io::Read::read(&mut f, &mut buf)
            })
            .map(|n| format!("{n} bytes"));
        out.push(outcome("read", path, r.map_err(|e| e.to_string())));
    }
    out
}

static TARGET: [u8; 16] = *b"bulkhead-probe!!";

/// Reads 16 bytes at this binary's `TARGET` address in `pid` (the same address in this
/// process; in another the permission check comes first, then the address).
fn read_memory(pid: i32) -> Result<String, String> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let mut buf = [0u8; 16];
    let remote = RemoteIoVec {
        base: TARGET.as_ptr() as usize,
        len: TARGET.len(),
    };
    process_vm_readv(
        nix::unistd::Pid::from_raw(pid),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &[remote],
    )
    .map(|n| format!("{n} bytes"))
    .map_err(|e| e.to_string())
}
