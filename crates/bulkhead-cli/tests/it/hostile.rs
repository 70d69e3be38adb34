//! Hostile code inside a real worker (`cargo nextest run hostile_code`): the test build's
//! `POST /__hostile` probe runs an attacker's actions inside the helpdesk worker of a real
//! `bulkhead serve` — open the master key, the platform's database URL, another app's vault
//! files, bucket and index copies, the server's environment; walk the whole installation for
//! credentials and log in to PostgreSQL with each; signal, trace and read the server and the
//! other app's worker. With the compartments every action fails; with `mode = "off"` the same
//! probe succeeds, so the walls, not the probe, make the difference.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BIN, Running, get, request, run, workdir};

/// A served installation: two apps (helpdesk, notes) with a tenant each, the embedded vault,
/// local files and search, the platform's database URL in a file.
struct Installation {
    _dir: tempfile::TempDir,
    root: PathBuf,
    serve: Running,
    addr: std::net::SocketAddr,
}

async fn install(mode: &str) -> Installation {
    install_with(mode, &[]).await
}

/// [`install`], with more helpdesk tenants at the `database` level (each in its own worker).
async fn install_with(mode: &str, silos: &[&str]) -> Installation {
    use std::os::unix::fs::PermissionsExt;
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let dir = workdir();
    let root = dir.path().to_path_buf();
    let secret = |name: &str, text: &str| {
        std::fs::write(root.join(name), text).unwrap();
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    secret("database.url", &db.superuser_url());
    let key: String = (0..32).map(|i| format!("{:02x}", i * 5 + 1)).collect();
    secret("master.hex", &key);
    std::fs::write(
        root.join("bulkhead.toml"),
        format!(
            "database_url_file = \"database.url\"\ndata_dir = \"data\"\n[vault]\nmaster_key_file = \"master.hex\"\n[serve]\nhealth_interval_secs = 1\ncanary_interval_secs = 0\n[compartments]\nmode = \"{mode}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("notes.yaml"),
        "app: notes\nentities:\n  note:\n    fields:\n      text: text\n",
    )
    .unwrap();
    let helpdesk = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    );
    run(&root, &["app", "create", "-m", helpdesk]);
    run(&root, &["app", "create", "-m", "notes.yaml"]);
    run(&root, &["tenant", "create", "acme", "--app", "helpdesk"]);
    run(&root, &["tenant", "create", "acme", "--app", "notes"]);
    for silo in silos {
        run(
            &root,
            &[
                "tenant",
                "create",
                silo,
                "--app",
                "helpdesk",
                "--isolation",
                "database",
            ],
        );
    }
    let mut serve = Running::spawn_env(
        &root,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("BULKHEAD_PROBE_CANARY", "the-servers-own-secret")],
    );
    let addr = serve.wait_serving();
    for app in ["helpdesk", "notes"] {
        crate::support::wait_status(addr, &format!("/apps/{app}/healthz"), 200);
    }
    Installation {
        _dir: dir,
        root,
        serve,
        addr,
    }
}

/// The worker of `app` among the server's children, by its command line.
fn worker_of(serve: &Running, app: &str) -> u32 {
    worker_for(serve, app, None)
}

/// The worker of `app` (with `tenant`: that tenant's own worker) by its command line.
fn worker_for(serve: &Running, app: &str, tenant: Option<&str>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for pid in bulkhead_verify::sockets::children(serve.pid()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let has = |flag: &[u8], value: &str| {
                args.windows(2)
                    .any(|w| w[0] == flag && w[1] == value.as_bytes())
            };
            let own = args.contains(&b"--tenant".as_slice());
            if has(b"--app", app) && tenant.map_or(!own, |t| has(b"--tenant", t)) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no worker for {app} {tenant:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A field of /proc/<pid>/status.
fn status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in the status of {pid}"))
        .trim()
        .to_owned()
}

/// Runs the probe inside the helpdesk worker against everything of the platform and of notes.
fn probe(inst: &Installation) -> Value {
    let data = inst.root.join("data");
    let notes = worker_of(&inst.serve, "notes");
    let mut read = vec![
        inst.root.join("master.hex"),
        inst.root.join("database.url"),
        inst.root.join("bulkhead.toml"),
        data.join("compartments/uids.json"),
        PathBuf::from(format!("/proc/{}/environ", inst.serve.pid())),
        PathBuf::from(format!("/proc/{notes}/environ")),
    ];
    for other in [
        "vault/apps/notes",
        "search/notes",
        "files/notes",
        "compartments/notes",
    ] {
        read.push(data.join(other));
        read.extend(bulkhead_testkit::files_under(&data.join(other)));
    }
    let body = json!({
        "read": read,
        // The installation from its root (nothing there opens), and the worker's own places.
        "walk": [
            inst.root,
            data.join("vault/apps/helpdesk"),
            data.join("search/helpdesk"),
            data.join("files/helpdesk"),
            data.join("compartments/helpdesk"),
        ],
        "processes": [inst.serve.pid(), notes],
    })
    .to_string();
    let (status, text) = request(
        inst.addr,
        "POST",
        "/apps/helpdesk/__hostile",
        &[],
        Some(("application/json", &body)),
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn succeeded(report: &Value) -> Vec<String> {
    report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == true)
        .map(|o| format!("{} {}: {}", o["action"], o["target"], o["detail"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_code_in_an_app_worker_reaches_nothing_of_the_platform_or_other_apps() {
    if status(std::process::id(), "Uid").split_whitespace().next() != Some("0") {
        eprintln!("skipped: the compartment tests run as root (own uids per worker)");
        return;
    }
    let inst = install("auto").await;
    // Every wall is up on this host, and /readyz says so.
    let (_, ready) = get(inst.addr, "/readyz");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["compartments"]["missing"], json!([]), "{ready}");
    assert_eq!(
        ready["compartments"]["walls"],
        json!([
            "own_uid",
            "no_capabilities",
            "no_new_privs",
            "landlock",
            "seccomp",
            "private_dirs"
        ])
    );
    // Seen from outside: own uids, no capabilities, no_new_privs, a seccomp filter.
    let helpdesk = worker_of(&inst.serve, "helpdesk");
    let notes = worker_of(&inst.serve, "notes");
    let uid = |pid| status(pid, "Uid");
    let first = |pid| uid(pid).split_whitespace().next().unwrap().to_owned();
    assert_ne!(first(helpdesk), "0");
    assert_ne!(first(helpdesk), first(notes), "two workers share a uid");
    for pid in [helpdesk, notes] {
        assert!(
            uid(pid).split_whitespace().all(|u| u == first(pid)),
            "{}",
            uid(pid)
        );
        assert!(
            status(pid, "Groups").is_empty(),
            "supplementary groups kept"
        );
        assert_eq!(status(pid, "CapEff"), "0000000000000000");
        assert_eq!(status(pid, "CapPrm"), "0000000000000000");
        assert_eq!(status(pid, "NoNewPrivs"), "1");
        assert_eq!(status(pid, "Seccomp"), "2");
    }

    let report = probe(&inst);
    let wins = succeeded(&report);
    assert!(wins.is_empty(), "hostile code got through: {wins:#?}");
    // What the walk could read is the worker's own: its vault files, copies and directories.
    let data = inst.root.join("data");
    let own: Vec<PathBuf> = [
        "vault/apps/helpdesk",
        "search/helpdesk",
        "files/helpdesk",
        "compartments/helpdesk",
    ]
    .iter()
    .map(|d| data.join(d))
    .collect();
    let readable: Vec<String> = serde_json::from_value(report["readable"].clone()).unwrap();
    assert!(
        readable
            .iter()
            .any(|f| f.starts_with(own[0].to_str().unwrap())),
        "the worker cannot read its own vault files: {readable:?}"
    );
    let foreign: Vec<&String> = readable
        .iter()
        .filter(|f| !own.iter().any(|d| Path::new(f).starts_with(d)))
        .collect();
    assert!(foreign.is_empty(), "readable beyond its own: {foreign:#?}");
    assert_eq!(report["credentials_found"], 0, "{report}");
    // The worker still serves behind its walls.
    assert_eq!(get(inst.addr, "/apps/helpdesk/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_code_probe_succeeds_where_the_walls_are_off() {
    if status(std::process::id(), "Uid").split_whitespace().next() != Some("0") {
        eprintln!("skipped: the compartment tests run as root");
        return;
    }
    let inst = install("off").await;
    let (_, ready) = get(inst.addr, "/readyz");
    assert!(ready.contains("\"mode\":\"off\""), "{ready}");
    assert!(inst.serve.wait_logged("worker compartments are incomplete"));
    // verify names what is missing: the workers share the server's uid.
    let out = Command::new(BIN)
        .args([
            "verify",
            "--json",
            "--serve-pid",
            &inst.serve.pid().to_string(),
        ])
        .current_dir(&inst.root)
        .output()
        .unwrap();
    let verify: Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = verify["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "boundary.compartments")
        .unwrap()
        .clone();
    assert_eq!(finding["status"], "FAIL", "{finding}");
    assert!(
        finding["evidence"]
            .as_str()
            .unwrap()
            .contains("shares uid 0 with the server"),
        "{finding}"
    );
    let report = probe(&inst);
    let wins = succeeded(&report).join("\n");
    for expected in [
        "master.hex",
        "database.url",
        "vault/apps/notes",
        "/environ",
        "\"process_vm_readv\" \"self\"",
        "logged in as",
    ] {
        assert!(
            wins.contains(expected),
            "without walls the probe should reach {expected}:\n{wins}"
        );
    }
}

/// Posts a probe to `path` until the worker there answers (a tenant worker starts after the
/// server is ready).
fn probe_at(inst: &Installation, path: &str, body: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = request(
            inst.addr,
            "POST",
            path,
            &[],
            Some(("application/json", &body.to_string())),
        );
        if status == 200 {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "{path}: {status} {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_code_in_a_database_tenants_worker_reaches_no_other_tenant() {
    use bulkhead_model::{AppId, TenantId, names};
    use bulkhead_vault_admin::VaultAdmin;
    if status(std::process::id(), "Uid").split_whitespace().next() != Some("0") {
        eprintln!("skipped: the compartment tests run as root");
        return;
    }
    let inst = install_with("auto", &["initech", "umbrella"]).await;
    let data = inst.root.join("data");
    // The tenants' credentials: in their own workers' vault spaces, not in the app's.
    let key = std::fs::read(inst.root.join("master.hex")).unwrap();
    let vault = bulkhead_vault_admin::embedded::EmbeddedAdmin::open(
        &data.join("vault"),
        bulkhead_vault_admin::embedded::MasterKey::decode(&key).unwrap(),
    )
    .unwrap();
    let app = AppId::parse("helpdesk").unwrap();
    let (initech, umbrella) = (
        TenantId::parse("initech").unwrap(),
        TenantId::parse("umbrella").unwrap(),
    );
    let path = |t: &TenantId| format!("db/tenant/{t}");
    for t in [&initech, &umbrella] {
        assert!(
            vault.get(&app, &path(t)).await.is_err(),
            "the app's space holds {t}'s password"
        );
        assert!(vault.get(&app.tenant_space(t), &path(t)).await.is_ok());
    }
    assert!(
        vault
            .get(&app.tenant_space(&initech), &path(&umbrella))
            .await
            .is_err()
    );
    let password = vault
        .get(&app.tenant_space(&initech), &path(&initech))
        .await
        .unwrap();

    // The attacker holds initech's own credential (read from its worker's memory, say) and
    // every path of the installation; it tries the other silo and the app's shared database.
    let port = std::fs::read_to_string(inst.root.join("database.url"))
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let role = names::tenant_role(&app, &initech);
    let url = |db: &str| {
        format!(
            "postgres://{role}:{}@127.0.0.1:{port}/{db}",
            password.expose()
        )
    };
    let own_db = names::tenant_database(&app, &initech);
    let app_worker = worker_for(&inst.serve, "helpdesk", None);
    let probe = json!({
        "read": [
            inst.root.join("master.hex"),
            inst.root.join("database.url"),
            data.join("vault/apps/helpdesk/secrets"),
            data.join("vault/apps/helpdesk--umbrella/secrets"),
            data.join("search/helpdesk"),
            data.join("search/helpdesk--umbrella"),
            data.join("files/helpdesk"),
            data.join("compartments/helpdesk"),
        ],
        "walk": [inst.root, data.join("vault/apps/helpdesk--initech"), data.join("compartments/helpdesk--initech")],
        "processes": [inst.serve.pid(), app_worker],
        "postgres": [
            url(&names::tenant_database(&app, &umbrella)),
            url(&names::app_database(&app)),
            url(&own_db),
        ],
    });
    let report = probe_at(&inst, "/apps/helpdesk/t/initech/__hostile", &probe);
    let initech_worker = worker_for(&inst.serve, "helpdesk", Some("initech"));
    let umbrella_worker = worker_for(&inst.serve, "helpdesk", Some("umbrella"));
    let uid = |pid| {
        status(pid, "Uid")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let uids = [uid(app_worker), uid(initech_worker), uid(umbrella_worker)];
    assert!(
        uids[0] != uids[1] && uids[1] != uids[2] && uids[0] != uids[2],
        "{uids:?}"
    );
    assert_eq!(
        report["uid"].to_string(),
        uids[1],
        "the probe ran in initech's worker"
    );
    let wins = succeeded(&report);
    assert_eq!(
        wins.len(),
        1,
        "only initech's own database may open: {wins:#?}"
    );
    assert!(
        wins[0].contains(&own_db) || wins[0].contains("logged in as"),
        "{wins:?}"
    );
    let readable: Vec<String> = serde_json::from_value(report["readable"].clone()).unwrap();
    let own = [
        data.join("vault/apps/helpdesk--initech"),
        data.join("compartments/helpdesk--initech"),
    ];
    assert!(
        readable
            .iter()
            .all(|f| own.iter().any(|d| Path::new(f).starts_with(d))),
        "{readable:#?}"
    );
    // Routing is not the wall: asked directly, initech's worker knows no other tenant and
    // the app's worker does not know initech (same 404 as an unknown tenant).
    let listening = |pid: u32| {
        let port = bulkhead_verify::sockets::sockets_of(pid)
            .into_iter()
            .find(|s| s.listening)
            .unwrap()
            .local
            .port();
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    for (pid, tenant) in [
        (initech_worker, "acme"),
        (initech_worker, "umbrella"),
        (app_worker, "initech"),
    ] {
        let (code, body) = get(listening(pid), &format!("/t/{tenant}/api/ticket"));
        assert_eq!(code, 404, "{tenant} at worker {pid}: {body}");
        assert!(body.contains("tenant_not_found"), "{body}");
    }
    let (code, body) = get(listening(initech_worker), "/t/initech/api/ticket");
    assert_eq!(
        code, 401,
        "initech's worker serves initech (a token is needed): {body}"
    );
}
