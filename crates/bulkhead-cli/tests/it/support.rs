//! Runs the `bulkhead` binary as a child process and talks HTTP to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

/// A running `bulkhead` process whose stderr is collected line by line, and whose address
/// arrives as the readiness line on stdout (`bulkhead_model::worker::Ready`), never from a log.
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    ready: Arc<Mutex<Option<SocketAddr>>>,
}

impl Running {
    pub fn spawn(cwd: &Path, args: &[&str]) -> Self {
        Self::spawn_env(cwd, args, &[])
    }

    pub fn spawn_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(env.iter().copied()).current_dir(cwd);
        Self::spawn_command(cmd)
    }

    /// Runs `cmd` (the binary under a wrapper, say) with the readiness line and logs captured.
    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("BULKHEAD_READY_STDOUT", "1")
            .env_remove("BULKHEAD_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = Arc::new(Mutex::new(None));
        let slot = ready.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                #[derive(serde::Deserialize)]
                struct Ready {
                    listening: SocketAddr,
                }
                match serde_json::from_str::<Ready>(&line) {
                    Ok(r) => *slot.lock().unwrap() = Some(r.listening),
                    Err(_) => println!("[bulkhead stdout] {line}"),
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bulkhead] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            ready,
        }
    }

    /// Waits for `bulkhead up` to report its address and returns it.
    pub fn wait_listening(&mut self) -> SocketAddr {
        self.wait_ready()
    }

    /// Waits for `bulkhead serve` to report its address and returns it.
    pub fn wait_serving(&mut self) -> SocketAddr {
        self.wait_ready()
    }

    /// Waits for the readiness line on stdout (the gateway's, or a worker's when the process
    /// is `bulkhead worker`) and returns the address.
    pub fn wait_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = *self.ready.lock().unwrap() {
                return addr;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("bulkhead exited ({status}) before it was ready");
            }
            assert!(Instant::now() < deadline, "not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Whether a log line containing `needle` arrives within 10 s. The readiness line and the
    /// log travel on different pipes read by different threads, so a line written before the
    /// readiness line may still be in flight when the address is known.
    pub fn wait_logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.logged(needle)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the (only) supervised worker, once there is one other than `not`: read from
    /// /proc, not from a log line.
    pub fn worker_pid(&self, not: Option<u32>) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = bulkhead_verify::sockets::children(self.pid())
                .into_iter()
                .find(|p| Some(*p) != not);
            if let Some(pid) = found {
                return pid;
            }
            assert!(Instant::now() < deadline, "no worker process within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bulkhead did not exit within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; returns the status code and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, &[], None)
}

/// A minimal HTTP/1.1 request with `Connection: close`; returns the status code and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((content_type, b)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    if let Some((_, b)) = body {
        head.push_str(b);
    }
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// Polls `GET path` until it answers `status`, for up to 30 s.
pub fn wait_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = get(addr, path);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {got} ({body}), wanted {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `bulkhead args` in `cwd` to completion, asserting success; returns its stdout.
pub fn run(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("BULKHEAD_DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bulkhead {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A temporary working directory the `postgres` OS user can enter.
pub fn workdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
