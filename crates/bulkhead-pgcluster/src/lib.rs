//! Private PostgreSQL clusters run from the system's server binaries.
//!
//! Two users: `bulkhead up` keeps a durable cluster under `./.bulkhead/postgres`, and
//! `bulkhead-testkit` starts an ephemeral one per test process. Both get the same shape: a
//! directory holding `data/`, `server.log`, the Unix socket and `cluster.json` (port and the
//! generated superuser password, mode 0600); the server listens on 127.0.0.1 only and accepts
//! nothing but scram-sha-256 password logins over TCP.
//!
//! When the process runs as root, every PostgreSQL binary runs as the `postgres` OS user (the
//! server refuses to run as root) and the directory is owned by that user.
//!
//! This crate speaks no SQL and must not: it manages processes and files only. It never logs
//! the password, and it only ever stops or removes clusters whose directory it was given.

mod command;
mod state;

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use command::Runner;
pub use state::Password;
use state::State;

/// The superuser role every cluster is created with.
pub const SUPERUSER: &str = "postgres";

/// Errors from managing a cluster; every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries not found (looked for initdb and pg_ctl in {looked}); \
         run scripts/deps, or set BULKHEAD_PG_BIN to the directory that holds them"
    )]
    BinariesMissing { looked: String },
    #[error("running as root but the 'postgres' OS user does not exist; run scripts/deps")]
    NoPostgresUser,
    #[error(
        "the postgres OS user cannot reach {dir}: a parent directory is not searchable by it; \
         choose a data directory under a world-searchable path"
    )]
    DirNotReachable { dir: PathBuf },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cluster state file {path} is unreadable: {detail}; remove the directory to start over"
    )]
    BadState { path: PathBuf, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How the server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Normal settings, for data that must survive a crash (`bulkhead up`).
    Durable,
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: tests only.
    Ephemeral,
}

/// How fast [`Cluster::stop`] stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, exit.
    Fast,
    /// Exit at once; crash recovery on next start. For throw-away clusters.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// Whether [`Cluster::open_or_init`] created the cluster or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Created,
    Reused,
}

/// Whether [`Cluster::start`] started the server or found it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Started,
    AlreadyRunning,
}

/// A cluster directory and the means to run its server.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    runner: Runner,
    state: State,
}

impl Cluster {
    /// Opens the cluster in `dir`, creating it with `initdb` when it does not exist yet.
    ///
    /// Creation is resumable: the state file (with the generated password) is written before
    /// `initdb` and marked complete after it, so a crash in between re-runs `initdb` next time.
    /// Concurrent callers on the same directory are serialised by a lock file.
    pub fn open_or_init(dir: &Path, durability: Durability) -> Result<(Self, Opened)> {
        let runner = Runner::detect()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let dir = dir.canonicalize().map_err(io_err(dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        runner.give_to_server_user(&dir)?;
        runner.check_reachable(&dir)?;
        let _lock = lock(&dir)?;

        let state_path = dir.join("cluster.json");
        let mut state = match State::load(&state_path)? {
            Some(state) => state,
            None => {
                let state = State::new(free_port()?);
                state.save(&state_path)?;
                state
            }
        };
        let cluster_dir = dir.clone();
        if state.initialized && dir.join("data").join("PG_VERSION").exists() {
            return Ok((
                Self {
                    dir: cluster_dir,
                    runner,
                    state,
                },
                Opened::Reused,
            ));
        }

        let data = dir.join("data");
        if data.exists() {
            tracing::warn!(dir = %data.display(), "removing a half-initialised data directory");
            fs::remove_dir_all(&data).map_err(io_err(&data))?;
        }
        let pwfile = dir.join("pwfile");
        write_private(&pwfile, state.password.expose().as_bytes())?;
        runner.give_to_server_user(&pwfile)?;
        let out = runner.run(
            "initdb",
            &dir,
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-local=peer".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
                "-N".as_ref(),
            ],
        );
        let _ = fs::remove_file(&pwfile);
        out?;

        let conf = data.join("postgresql.conf");
        let mut extra = format!(
            "\n# Added by Bulkhead\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\nmax_connections = 300\n",
            dir.display()
        );
        if durability == Durability::Ephemeral {
            extra.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        append(&conf, &extra)?;
        state.initialized = true;
        state.save(&state_path)?;
        Ok((
            Self {
                dir: cluster_dir,
                runner,
                state,
            },
            Opened::Created,
        ))
    }

    /// Starts the server unless it is already running. Keeps the last port when it is free,
    /// otherwise picks a new one and records it.
    pub fn start(&mut self) -> Result<Started> {
        let _lock = lock(&self.dir)?;
        if let Some(port) = self.running_port() {
            self.state.port = port;
            return Ok(Started::AlreadyRunning);
        }
        let mut last_err = None;
        for _ in 0..3 {
            if !port_is_free(self.state.port) {
                self.state.port = free_port()?;
            }
            self.state.save(&self.dir.join("cluster.json"))?;
            let port_opt = format!("-p {}", self.state.port);
            let result = self.runner.run(
                "pg_ctl start",
                &self.dir,
                &[
                    "-D".as_ref(),
                    self.data_dir().as_os_str(),
                    "-l".as_ref(),
                    self.log_path().as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    port_opt.as_ref(),
                    "start".as_ref(),
                ],
            );
            match result {
                Ok(_) => return Ok(Started::Started),
                Err(err) => {
                    // A port taken between the check and the bind: try another one.
                    self.state.port = free_port()?;
                    last_err = Some(err);
                }
            }
        }
        Err(self.with_log_tail(last_err))
    }

    /// Stops the server; a server that is not running is not an error.
    pub fn stop(&self, mode: StopMode) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.runner
            .run(
                "pg_ctl stop",
                &self.dir,
                &[
                    "-D".as_ref(),
                    self.data_dir().as_os_str(),
                    "-m".as_ref(),
                    mode.as_arg().as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "stop".as_ref(),
                ],
            )
            .map(drop)
    }

    /// True when a live postmaster owns the data directory.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The postmaster's process id, when it is alive.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster_file()
            .and_then(|lines| lines.first()?.trim().parse().ok())
            .filter(|pid| process_alive(*pid))
    }

    fn running_port(&self) -> Option<u16> {
        self.postmaster_pid()?;
        self.postmaster_file()?.get(3)?.trim().parse().ok()
    }

    fn postmaster_file(&self) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    /// The directory holding everything of this cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Always 127.0.0.1: the server listens nowhere else.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.state.port
    }

    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    pub fn password(&self) -> &Password {
        &self.state.password
    }

    /// A `postgres://` URL for the superuser on `database`, password included: never log it.
    pub fn superuser_url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            SUPERUSER,
            self.state.password.expose(),
            self.host(),
            self.state.port,
            database
        )
    }

    /// Spawns a watchdog process that stops the server (and with `remove_dir`, deletes the
    /// directory) as soon as this process exits — normally, by panic, or killed. It waits for
    /// end-of-file on a pipe whose only writer is held by the returned [`Reaper`], so the kernel
    /// closes it whatever way this process ends. It runs in its own process group so that a
    /// signal sent to this process's group does not take it down first.
    pub fn reap_on_exit(&self, remove_dir: bool) -> Result<Reaper> {
        use std::os::unix::process::CommandExt;
        let mut stop = self.runner.command("pg_ctl", &self.dir);
        stop.args(["-D"])
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let mut argv: Vec<std::ffi::OsString> = vec![stop.get_program().to_os_string()];
        argv.extend(stop.get_args().map(|a| a.to_os_string()));
        let script = r#"cat >/dev/null
"$@" >/dev/null 2>&1
if [ -n "$BULKHEAD_REAP_DIR" ]; then rm -rf -- "$BULKHEAD_REAP_DIR"; fi"#;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg("bulkhead-reaper")
            .args(argv)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if remove_dir {
            cmd.env("BULKHEAD_REAP_DIR", &self.dir);
        } else {
            cmd.env_remove("BULKHEAD_REAP_DIR");
        }
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            what: "spawning the reaper".into(),
            detail: e.to_string(),
        })?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Command {
            what: "spawning the reaper".into(),
            detail: "no stdin pipe".into(),
        })?;
        Ok(Reaper {
            _stdin: stdin,
            child,
        })
    }

    fn with_log_tail(&self, err: Option<Error>) -> Error {
        let tail = fs::read_to_string(self.log_path())
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            })
            .unwrap_or_default();
        let detail = match err {
            Some(e) => format!("{e}; server log tail:\n{tail}"),
            None => format!("server did not start; server log tail:\n{tail}"),
        };
        Error::Command {
            what: "pg_ctl start".into(),
            detail,
        }
    }
}

/// Holds the write end of the reaper's pipe; dropping it (or exiting) triggers the reaper.
#[derive(Debug)]
pub struct Reaper {
    _stdin: ChildStdin,
    child: Child,
}

impl Reaper {
    /// Ends the reaper without letting it act (the cluster turned out to belong to another
    /// process).
    pub fn disarm(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the server binaries: `BULKHEAD_PG_BIN`, then Debian's versioned directories, then PATH.
pub fn find_bin_dir() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("BULKHEAD_PG_BIN") {
        candidates.push(dir.into());
    }
    for v in ["18", "17", "16", "15"] {
        candidates.push(format!("/usr/lib/postgresql/{v}/bin").into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .cloned()
        .ok_or_else(|| Error::BinariesMissing {
            looked: candidates
                .iter()
                .take(5)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whether a process with this id exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    let port = listener
        .local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn lock(dir: &Path) -> Result<fs::File> {
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.lock().map_err(io_err(&path))?;
    Ok(file)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_made_up_one_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 7));
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert!(port > 0);
        assert!(port_is_free(port));
    }
}
