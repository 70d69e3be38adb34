//! `boundary.compartments`: each worker of a running server is its own OS compartment — its
//! own uid (not the server's, not another worker's), no capabilities, `no_new_privs`, a
//! seccomp filter — and cannot read the master key by its file permissions. Evidence from
//! `/proc/<pid>/status` and the key file's mode (Landlock leaves no trace there; the server
//! reports it in `/readyz`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What `/proc/<pid>/status` says of a process.
#[derive(Debug)]
struct Walls {
    pid: u32,
    uid: u32,
    cap_eff: String,
    no_new_privs: bool,
    seccomp: bool,
}

fn walls(pid: u32) -> Option<Walls> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(Walls {
        pid,
        uid: field("Uid")?.split_whitespace().next()?.parse().ok()?,
        cap_eff: field("CapEff")?.to_owned(),
        no_new_privs: field("NoNewPrivs") == Some("1"),
        seccomp: field("Seccomp") == Some("2"),
    })
}

/// Whether `uid` may read `file` by its owner, group and mode (root may read anything).
fn may_read(uid: u32, file: &Path) -> Option<bool> {
    let meta = std::fs::metadata(file).ok()?;
    let mode = meta.mode();
    Some(
        uid == 0
            || mode & 0o004 != 0
            || (meta.uid() == uid && mode & 0o400 != 0)
            || (meta.gid() == uid && mode & 0o040 != 0),
    )
}

pub(crate) fn check(pid: u32, master_key: Option<&Path>) -> (bool, String) {
    let Some(server) = walls(pid) else {
        return (false, format!("pid {pid}: no such process readable here"));
    };
    let workers: Vec<Walls> = crate::sockets::children(pid)
        .into_iter()
        .filter_map(walls)
        .collect();
    if workers.is_empty() {
        return (false, format!("pid {pid} has no worker processes"));
    }
    let mut missing = Vec::new();
    for w in &workers {
        if w.uid == server.uid {
            missing.push(format!(
                "worker {} shares uid {} with the server",
                w.pid, w.uid
            ));
        }
        if let Some(other) = workers.iter().find(|o| o.pid < w.pid && o.uid == w.uid) {
            missing.push(format!(
                "workers {} and {} share uid {}",
                other.pid, w.pid, w.uid
            ));
        }
        if !w.cap_eff.trim_start_matches('0').is_empty() {
            missing.push(format!("worker {} has capabilities {}", w.pid, w.cap_eff));
        }
        if !w.no_new_privs {
            missing.push(format!("worker {} lacks no_new_privs", w.pid));
        }
        if !w.seccomp {
            missing.push(format!("worker {} has no seccomp filter", w.pid));
        }
        if let Some(key) = master_key
            && may_read(w.uid, key) != Some(false)
        {
            let mode = std::fs::metadata(key).map(|m| format!("{:o}", m.mode() & 0o777));
            missing.push(format!(
                "worker {} (uid {}) may read the master key {} (mode {})",
                w.pid,
                w.uid,
                key.display(),
                mode.unwrap_or_else(|e| e.to_string())
            ));
        }
    }
    if missing.is_empty() {
        let uids: Vec<String> = workers.iter().map(|w| w.uid.to_string()).collect();
        (
            true,
            format!(
                "{} workers as uids {} (server {}): no capabilities, no_new_privs, seccomp; \
                 the master key is unreadable to them",
                workers.len(),
                uids.join(", "),
                server.uid
            ),
        )
    } else {
        (false, format!("walls missing: {}", missing.join("; ")))
    }
}
