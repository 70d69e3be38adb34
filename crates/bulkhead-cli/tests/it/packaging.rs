//! The systemd units: hardened, and valid for systemd itself.

use crate::support::BIN;

const UNIT: &str = include_str!("../../../../packaging/systemd/bulkhead.service");

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn set(key: &str) -> Option<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::trim)
        .next_back()
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectHome", "yes"),
        (
            "CapabilityBoundingSet",
            "CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE",
        ),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "0077"),
    ] {
        assert_eq!(set(key), Some(value), "bulkhead.service: {key}");
    }
    assert!(
        !UNIT.contains("BULKHEAD_BOOT_CREDENTIAL="),
        "no credential in the unit"
    );
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulkhead.service");
    std::fs::write(&path, UNIT.replace("/usr/local/bin/bulkhead", BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit's process starts on this machine with exactly the unit's privileges — root with
/// only `CapabilityBoundingSet`, `NoNewPrivileges` — the way systemd would start it (here
/// with `setpriv`, as PID 1 is not systemd): it serves, every worker gets every wall, and the
/// server holds no capability beyond the set.
#[tokio::test(flavor = "multi_thread")]
async fn the_systemd_units_privileges_start_the_server_and_its_compartments() {
    use std::os::unix::fs::PermissionsExt;
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    if !me.lines().any(|l| l.starts_with("Uid:\t0")) {
        println!("skipped: the unit runs as root");
        return;
    }
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let cwd = crate::support::workdir();
    let root = cwd.path();
    let secret = |name: &str, text: &str| {
        std::fs::write(root.join(name), text).unwrap();
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    secret("database.url", &db.superuser_url());
    secret("master.hex", &"3c".repeat(32));
    std::fs::write(
        root.join("bulkhead.toml"),
        "database_url_file = \"database.url\"\ndata_dir = \"state\"\n[vault]\nmaster_key_file = \"master.hex\"\n[serve]\ncanary_interval_secs = 0\n[compartments]\nmode = \"required\"\n",
    )
    .unwrap();
    let helpdesk = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    );
    crate::support::run(root, &["app", "create", "-m", helpdesk]);
    crate::support::run(root, &["tenant", "create", "acme", "--app", "helpdesk"]);
    // The unit's privileges, spelled for setpriv.
    let caps: Vec<String> = set("CapabilityBoundingSet")
        .unwrap()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(set("NoNewPrivileges"), Some("yes"));
    let exec = set("ExecStart").unwrap();
    let args: Vec<&str> = exec
        .split_whitespace()
        .skip(1)
        .filter(|a| !a.starts_with("--config") && !a.starts_with("/etc/"))
        .collect();
    assert_eq!(args, ["serve"], "the unit runs `bulkhead serve`");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg("--no-new-privs")
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg("--inh-caps=-all")
        .arg(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(root)
        .env_remove("BULKHEAD_DATABASE_URL");
    let mut serve = crate::support::Running::spawn_command(cmd);
    let addr = serve.wait_serving();
    crate::support::wait_status(addr, "/apps/helpdesk/healthz", 200);
    let (_, ready) = crate::support::get(addr, "/readyz");
    assert!(ready.contains("\"missing\":[]"), "{ready}");
    // The server holds the set and nothing more; its worker holds nothing.
    let status = |pid: u32, field: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{field}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap()
    };
    let wanted: u64 = [7u32, 6, 0, 3, 1] // setuid setgid chown fowner dac_override
        .iter()
        .map(|bit| 1u64 << bit)
        .sum();
    let eff = u64::from_str_radix(&status(serve.pid(), "CapEff"), 16).unwrap();
    assert_eq!(eff, wanted, "the server's capabilities: {eff:x}");
    assert_eq!(status(serve.pid(), "NoNewPrivs"), "1");
    let worker = serve.worker_pid(None);
    assert_eq!(status(worker, "CapEff"), "0000000000000000");
    assert_ne!(status(worker, "Uid").split_whitespace().next(), Some("0"));
    assert_eq!(status(worker, "Seccomp"), "2");
}

/// The hostile-code probe is in test builds only: with dev-dependencies the worker has the
/// `hostile-probe` feature, without them (what `cargo build --release` builds) it does not.
#[test]
fn release_builds_have_no_hostile_code_probe() {
    let tree = |edges: &str| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["tree", "--locked", "--offline", "-p", "bulkhead-cli", "-i"])
            .args(["bulkhead-worker", "-e", edges])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(
        tree("features").contains("\"hostile-probe\""),
        "the tests enable the probe"
    );
    let release = tree("no-dev,features");
    assert!(
        !release.contains("hostile-probe"),
        "a normal dependency enables the probe:\n{release}"
    );
}
