//! Runs PostgreSQL's binaries, as the `postgres` OS user when this process is root.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result, find_bin_dir, io_err};

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    bin: PathBuf,
    /// `(uid, gid)` of the `postgres` OS user when we are root and must switch to it.
    server_user: Option<(u32, u32)>,
}

impl Runner {
    pub fn detect() -> Result<Self> {
        let bin = find_bin_dir()?;
        let euid = std::fs::metadata("/proc/self")
            .map_err(io_err(Path::new("/proc/self")))?
            .uid();
        let server_user = if euid == 0 {
            Some((id_of("-u")?, id_of("-g")?))
        } else {
            None
        };
        Ok(Self { bin, server_user })
    }

    /// A command for one of the server binaries, run from `cwd` (which the server user can
    /// enter: root's own working directory may be closed to it).
    pub fn command(&self, program: &str, cwd: &Path) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.server_user {
            Some(_) => {
                let mut c = Command::new(runuser());
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.current_dir(cwd);
        cmd
    }

    /// Runs a server binary to completion; a non-zero exit becomes an error with its stderr.
    pub fn run<S: AsRef<OsStr>>(&self, what: &str, cwd: &Path, args: &[S]) -> Result<String> {
        let program = what.split_whitespace().next().unwrap_or(what);
        let out = self
            .command(program, cwd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Command {
                what: what.to_owned(),
                detail: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                what: what.to_owned(),
                detail: format!(
                    "{}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            })
        }
    }

    /// Makes `path` owned by the server user (a no-op unless we are root).
    pub fn give_to_server_user(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.server_user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
        }
        Ok(())
    }

    /// Fails clearly when the server user cannot enter `dir` (a parent closed to it).
    pub fn check_reachable(&self, dir: &Path) -> Result<()> {
        if self.server_user.is_none() {
            return Ok(());
        }
        let ok = Command::new(runuser())
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(dir)
            .current_dir("/")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(Error::DirNotReachable {
                dir: dir.to_path_buf(),
            })
        }
    }
}

fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("runuser")
}

fn id_of(flag: &str) -> Result<u32> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|_| Error::NoPostgresUser)?;
    if !out.status.success() {
        return Err(Error::NoPostgresUser);
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::NoPostgresUser)
}
