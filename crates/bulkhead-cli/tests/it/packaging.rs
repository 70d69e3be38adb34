//! The systemd units: hardened, and valid for systemd itself.

use crate::support::BIN;

const UNITS: &[(&str, &str)] = &[
    (
        "bulkhead.service",
        include_str!("../../../../packaging/systemd/bulkhead.service"),
    ),
    (
        "bulkhead-worker@.service",
        include_str!("../../../../packaging/systemd/bulkhead-worker@.service"),
    ),
];

#[test]
fn the_systemd_units_are_hardened_and_verify() {
    for (name, unit) in UNITS {
        let set = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::trim)
        };
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectHome", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
            ("UMask", "0077"),
        ] {
            assert_eq!(set(key), Some(value), "{name}: {key}");
        }
        assert!(
            set("User").is_some_and(|u| u.starts_with("bulkhead")),
            "{name}: a dedicated user"
        );
        assert!(
            !unit.contains("BULKHEAD_BOOT_CREDENTIAL="),
            "{name}: no credential in the unit"
        );
    }
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    for (name, unit) in UNITS {
        std::fs::write(
            dir.path().join(name),
            unit.replace("/usr/local/bin/bulkhead", BIN),
        )
        .unwrap();
    }
    for name in ["bulkhead.service", "bulkhead-worker@helpdesk.service"] {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
