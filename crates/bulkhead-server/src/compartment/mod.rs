//! Each worker's OS compartment. Between fork and exec the supervisor's child enters the app's
//! network namespace (with `--isolate-network`), becomes the worker's own uid and gid (as root;
//! every capability goes with the change), sets `PR_SET_NO_NEW_PRIVS`, restricts itself with a
//! Landlock ruleset — system libraries, its executable, its own vault files read-only, its own
//! private, search and files directories read-write, nothing else; no signals or abstract
//! sockets outside its domain — and installs a seccomp filter against ptrace, process_vm_*,
//! mount, namespaces, bpf, keyctl and friends. The worker's code, its dependencies and
//! anything they run before `main`, starts inside all of it.
//!
//! Where the host cannot (not root, no Landlock), the server starts anyway and says so: in
//! its start-up log, in `/readyz` and in `bulkhead verify` (`boundary.compartments`). With
//! `[compartments] mode = "required"` it refuses to start instead.
//!
//! - `uids`: the uid each worker runs as, stable across restarts.
//! - `walls`: the Landlock ruleset, the seccomp programs, and the child's side.

mod uids;
mod walls;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{CompartmentMode, CompartmentsConfig};
use crate::error::{Context, Error, Result};

/// The walls as the start-up log, `/readyz` and `verify` name them.
pub const WALLS: [&str; 6] = [
    "own_uid",
    "no_capabilities",
    "no_new_privs",
    "landlock",
    "seccomp",
    "private_dirs",
];

/// Which walls this server puts around its workers, and why any are missing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub walls: Vec<&'static str>,
    pub missing: Vec<String>,
}

/// The host's means and the uid allocation.
#[derive(Debug)]
pub struct Compartments {
    mode: CompartmentMode,
    root: bool,
    landlock: Option<landlock::ABI>,
    seccomp: bool,
    data_dir: PathBuf,
    uids: Mutex<uids::Uids>,
}

/// What one worker reaches on disk.
#[derive(Debug, Clone)]
pub struct WorkerPaths {
    /// The `bulkhead` executable (read and execute).
    pub exe: PathBuf,
    /// The app's directory in the embedded vault (read only; group-readable by the worker).
    pub vault: Option<PathBuf>,
    /// Directories the worker owns and writes: its search copies, its local bucket.
    pub owned: Vec<PathBuf>,
}

/// One worker's compartment, ready to be installed on its command.
#[derive(Debug)]
pub struct Prepared {
    child: walls::Child,
    env: Vec<(&'static str, PathBuf)>,
}

impl Compartments {
    /// Finds what this host offers; with `required`, refuses when anything is missing.
    pub fn new(config: &CompartmentsConfig, data_dir: &Path) -> Result<Self> {
        let data_dir = std::path::absolute(data_dir)?;
        let on = config.mode != CompartmentMode::Off;
        let compartments = Self {
            mode: config.mode,
            root: on && nix::unistd::geteuid().is_root(),
            landlock: if on { walls::landlock_abi() } else { None },
            seccomp: on
                && std::fs::read_to_string("/proc/self/status")
                    .is_ok_and(|s| s.contains("Seccomp_filters:")),
            uids: Mutex::new(uids::Uids::load(
                data_dir.join("compartments/uids.json"),
                config.uid_min,
                config.uid_max,
            )?),
            data_dir,
        };
        let report = compartments.report();
        if config.mode == CompartmentMode::Required && !report.missing.is_empty() {
            return Err(Error::Config(format!(
                "[compartments] mode = \"required\", but this host cannot put up every wall: {}",
                report.missing.join("; ")
            )));
        }
        Ok(compartments)
    }

    pub fn report(&self) -> Report {
        let mut walls = Vec::new();
        let mut missing = Vec::new();
        if self.mode == CompartmentMode::Off {
            missing.push(
                "every wall: [compartments] mode = \"off\" (workers run as the server's user, unconfined)"
                    .to_owned(),
            );
            return Report {
                mode: "off",
                walls,
                missing,
            };
        }
        if self.root {
            walls.extend(["own_uid", "no_capabilities", "private_dirs"]);
        } else {
            missing.push(
                "own_uid, no_capabilities, private_dirs: the server does not run as root, so its \
                 workers share its uid and can read what it can"
                    .to_owned(),
            );
        }
        walls.push("no_new_privs");
        match self.landlock {
            Some(_) => walls.push("landlock"),
            None => missing.push(
                "landlock: the kernel offers none (Linux 5.13+ with landlock in lsm=)".to_owned(),
            ),
        }
        if self.seccomp {
            walls.push("seccomp");
        } else {
            missing.push("seccomp: the kernel offers no seccomp filters".to_owned());
        }
        walls.sort_by_key(|w| WALLS.iter().position(|x| x == w));
        Report {
            mode: match self.mode {
                CompartmentMode::Auto => "auto",
                CompartmentMode::Required => "required",
                CompartmentMode::Off => "off",
            },
            walls,
            missing,
        }
    }

    /// Says at start-up which walls the workers get, and warns about every missing one.
    pub fn log(&self) {
        let report = self.report();
        if report.missing.is_empty() {
            tracing::info!(walls = ?report.walls, "worker compartments: every wall in place");
        } else {
            for missing in &report.missing {
                tracing::warn!(walls = ?report.walls, missing = %missing, "worker compartments are incomplete");
            }
        }
    }

    /// Prepares the compartment of the worker named `key` (an app): its uid, its directories
    /// (created, owned by it, mode 0700), its vault files readable by its group only, the
    /// directories above them traversable, the Landlock ruleset and the seccomp programs.
    pub fn prepare(
        &self,
        key: &str,
        paths: &WorkerPaths,
        netns: Option<&Path>,
    ) -> Result<Prepared> {
        let netns = netns
            .map(|p| {
                std::fs::File::open(p)
                    .map(std::os::fd::OwnedFd::from)
                    .with_context(|| format!("opening the network namespace {}", p.display()))
            })
            .transpose()?;
        if self.mode == CompartmentMode::Off {
            return Ok(Prepared {
                child: walls::Child {
                    netns,
                    uid: None,
                    no_new_privs: false,
                    ruleset: None,
                    seccomp: Vec::new(),
                },
                env: Vec::new(),
            });
        }
        let uid = if self.root {
            Some(
                self.uids
                    .lock()
                    .map_err(|_| Error::msg("the uid allocation is poisoned"))?
                    .of(key)?,
            )
        } else {
            None
        };
        let private = self.private_dir(key);
        let tmp = private.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut owned = vec![private.clone()];
        owned.extend(paths.owned.iter().cloned());
        for dir in &owned {
            std::fs::create_dir_all(dir)?;
            if let Some(uid) = uid {
                own_tree(dir, Some(uid), uid, None, None)
                    .with_context(|| format!("handing {} to uid {uid}", dir.display()))?;
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if let (Some(vault), Some(uid)) = (&paths.vault, uid) {
            std::fs::create_dir_all(vault)?;
            own_tree(vault, None, uid, Some(0o750), Some(0o640))
                .with_context(|| format!("opening {} to gid {uid}", vault.display()))?;
        }
        if let Some(uid) = uid {
            let mut reached: Vec<&Path> = owned.iter().map(PathBuf::as_path).collect();
            reached.extend(paths.vault.as_deref());
            reached.push(&paths.exe);
            for path in reached {
                self.traversable(path, uid)?;
            }
        }
        let ruleset = match self.landlock {
            Some(abi) => {
                let mut grants = walls::Grants::default();
                grants
                    .exec
                    .extend(walls::SYSTEM_EXEC.iter().map(PathBuf::from));
                grants.exec.push(paths.exe.clone());
                grants
                    .read
                    .extend(walls::SYSTEM_READ.iter().map(PathBuf::from));
                grants.read.extend(paths.vault.iter().cloned());
                grants
                    .write
                    .extend(walls::SYSTEM_WRITE.iter().map(PathBuf::from));
                grants.write.extend(owned.iter().cloned());
                Some(walls::ruleset(abi, &grants)?)
            }
            None => None,
        };
        let seccomp = if self.seccomp {
            walls::seccomp_programs()?
        } else {
            Vec::new()
        };
        Ok(Prepared {
            child: walls::Child {
                netns,
                uid,
                no_new_privs: true,
                ruleset,
                seccomp,
            },
            env: vec![("TMPDIR", tmp), ("HOME", private)],
        })
    }

    /// The private directory (home, temporary files) of the worker named `key`.
    pub fn private_dir(&self, key: &str) -> PathBuf {
        private_dir_in(&self.data_dir, key)
    }

    /// Every directory above `path` must let `uid` through: those under the data directory
    /// are made traversable (o+x, no listing); any other is the operator's to fix.
    fn traversable(&self, path: &Path, uid: u32) -> Result<()> {
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            let meta = std::fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
            let mode = meta.mode();
            let passes = mode & 0o001 != 0
                || (meta.uid() == uid && mode & 0o100 != 0)
                || (meta.gid() == uid && mode & 0o010 != 0);
            if passes {
                continue;
            }
            if dir.starts_with(&self.data_dir) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
            } else {
                return Err(Error::Config(format!(
                    "a worker (uid {uid}) cannot reach {}: {} is not searchable by others \
                     (chmod o+x it, or move the path under the data directory)",
                    path.display(),
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// The private directory of the worker named `key` under `data_dir`.
pub fn private_dir_in(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join("compartments").join(key.replace('/', "+"))
}

/// Hands a tree to `uid` (or only to group `gid`), never following a symbolic link and never
/// touching a file with more than one link (a worker could have linked someone else's file
/// into its own directory).
fn own_tree(
    path: &Path,
    uid: Option<u32>,
    gid: u32,
    dir_mode: Option<u32>,
    file_mode: Option<u32>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() || (meta.is_file() && meta.nlink() > 1) {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, uid, Some(gid))?;
    if meta.is_dir() {
        if let Some(mode) = dir_mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        for entry in std::fs::read_dir(path)? {
            own_tree(&entry?.path(), uid, gid, dir_mode, file_mode)?;
        }
    } else if let Some(mode) = file_mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl Prepared {
    /// The worker's temporary and home directory in its environment, and the walls, entered
    /// by the child before `exec`.
    pub fn install(self, cmd: &mut tokio::process::Command) {
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        let mut child = self.child;
        // SAFETY: `pre_exec` runs the closure in the forked child before `exec`. `Child::enter`
        // only makes system calls (setns, setgroups, setresgid, setresuid, prctl,
        // landlock_restrict_self, seccomp) on values prepared before the fork, and allocates
        // nothing on its way to success, so it is sound in a child of a multi-threaded parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || child.enter());
        }
    }
}
