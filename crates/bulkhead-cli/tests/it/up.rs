//! `bulkhead up`: reuse of the embedded cluster, readiness that follows the database, and a
//! clean stop on Ctrl-C and SIGTERM.

use std::path::Path;
use std::time::Duration;

use bulkhead_pgcluster::{Cluster, Durability, Opened, StopMode, process_alive, wait_until};

use bulkhead_verify::sockets::{Socket, children, sockets_of};

use crate::support::{Running, get, wait_status, workdir};

fn cluster_in(cwd: &Path) -> Cluster {
    let (cluster, opened) =
        Cluster::open_or_init(&cwd.join(".bulkhead/postgres"), Durability::Durable).unwrap();
    assert_eq!(
        opened,
        Opened::Reused,
        "bulkhead up should have created the cluster"
    );
    cluster
}

async fn superuser(cluster: &Cluster) -> tokio_postgres::Client {
    let url = cluster.superuser_url("bulkhead");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn assert_no_server_left(cluster: &Cluster, pid: u32) {
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "postmaster {pid} still alive after bulkhead exited"
    );
    assert!(!cluster.data_dir().join("postmaster.pid").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_reuses_its_cluster_and_leaves_no_server_after_ctrl_c_or_sigterm() {
    let cwd = workdir();
    let mut first = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = first.wait_listening();
    assert!(first.wait_logged("created a new PostgreSQL cluster"));
    assert_eq!(get(addr, "/healthz").0, 200);
    wait_status(addr, "/readyz", 200);

    let cluster = cluster_in(cwd.path());
    let pid = cluster
        .postmaster_pid()
        .expect("postgres runs while bulkhead up runs");
    superuser(&cluster)
        .await
        .batch_execute("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('first run')")
        .await
        .unwrap();

    first.signal("INT");
    assert!(first.wait().success(), "Ctrl-C should be a clean exit");
    assert_no_server_left(&cluster, pid);

    let mut second = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = second.wait_listening();
    assert!(second.wait_logged("reusing the PostgreSQL cluster"));
    wait_status(addr, "/readyz", 200);
    let cluster = cluster_in(cwd.path());
    let pid = cluster.postmaster_pid().unwrap();
    let note: String = superuser(&cluster)
        .await
        .query_one("SELECT note FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        note, "first run",
        "the second run must see the first run's data"
    );

    second.signal("TERM");
    assert!(second.wait().success(), "SIGTERM should be a clean exit");
    assert_no_server_left(&cluster, pid);
}

#[test]
fn readyz_goes_unready_while_postgres_is_stopped_and_ready_when_it_returns() {
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    wait_status(addr, "/readyz", 200);

    let mut cluster = cluster_in(cwd.path());
    cluster.stop(StopMode::Fast).unwrap();
    wait_status(addr, "/readyz", 503);
    let (_, body) = get(addr, "/readyz");
    assert!(body.contains("database_unavailable"), "{body}");
    assert_eq!(
        get(addr, "/healthz").0,
        200,
        "liveness does not depend on the database"
    );

    cluster.start().unwrap();
    wait_status(addr, "/readyz", 200);
    let pid = cluster.postmaster_pid().unwrap();

    up.signal("INT");
    assert!(up.wait().success());
    // The server was restarted by the test, not by bulkhead, but the reaper armed by bulkhead
    // still stops whatever runs in its directory when bulkhead exits.
    assert!(wait_until(Duration::from_secs(15), || !process_alive(pid)));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_with_a_database_url_uses_that_server_and_starts_none() {
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let cwd = workdir();
    let url = db.superuser_url();
    let mut up = Running::spawn(
        cwd.path(),
        &["up", "--listen", "127.0.0.1:0", "--database-url", &url],
    );
    let addr = up.wait_listening();
    wait_status(addr, "/readyz", 200);
    assert!(
        !cwd.path().join(".bulkhead/postgres").exists(),
        "no embedded cluster with --database-url"
    );
    up.signal("TERM");
    assert!(up.wait().success());
    // The external server is untouched.
    db.superuser().await.unwrap();
}

pub(crate) fn login(addr: std::net::SocketAddr, tenant: &str, user: &str) -> String {
    let form = format!(
        "grant_type=password&client_id=helpdesk&username={user}&password={user}-at-{tenant}"
    );
    let (status, body) = crate::support::request(
        addr,
        "POST",
        &format!("/realms/{tenant}/protocol/openid-connect/token"),
        &[],
        Some(("application/x-www-form-urlencoded", &form)),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn up_serves_the_example_app_to_two_isolated_tenants() {
    use crate::support::request;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let alice = login(addr, "acme", "alice");
    let auth = format!("Bearer {alice}");
    let json = "application/json";
    let (status, body) = request(
        addr,
        "POST",
        "/t/acme/api/ticket",
        &[("Authorization", &auth)],
        Some((json, r#"{"title":"printer on fire"}"#)),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = request(
        addr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 200);
    assert!(body.contains("printer on fire"));
    // globex (schema level) sees none of it, and acme's token has no authority there.
    let globex = format!("Bearer {}", login(addr, "globex", "alice"));
    let (_, body) = request(
        addr,
        "GET",
        "/t/globex/api/ticket",
        &[("Authorization", &globex)],
        None,
    );
    assert!(!body.contains("printer on fire"), "{body}");
    let (status, _) = request(
        addr,
        "GET",
        "/t/globex/api/ticket",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 403);
    // initech lives in its own database, reached with a password from the vault.
    let initech = format!("Bearer {}", login(addr, "initech", "alice"));
    let (status, body) = request(
        addr,
        "POST",
        "/t/initech/api/ticket",
        &[("Authorization", &initech)],
        Some((json, r#"{"title":"silo ticket"}"#)),
    );
    assert_eq!(status, 201, "{body}");
    let (_, body) = request(
        addr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &auth)],
        None,
    );
    assert!(!body.contains("silo ticket"), "{body}");
    // A customer sees only their own tickets and never the internal note.
    let bob = format!("Bearer {}", login(addr, "acme", "bob"));
    let (_, body) = request(
        addr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &bob)],
        None,
    );
    assert!(
        !body.contains("printer on fire") && !body.contains("internal_note"),
        "{body}"
    );
    // Public announcements need no token, tenant by host only.
    let (status, _) = request(addr, "GET", "/t/acme/api/announcement", &[], None);
    assert_eq!(status, 401, "a path selector is not a host");
    // Hostile input through the gateway and the worker, with and without credentials: a JSON
    // 4xx every time (these were 500s, and a panic that dropped the connection, before).
    let host = [("Host", "acme.localhost")];
    let with_auth = [("Authorization", auth.as_str())];
    for (path, headers, body, want) in [
        (
            "/t/acme/api/ticket?title[contains]=a%00b",
            &with_auth[..],
            None,
            400,
        ),
        (
            "/t/acme/api/ticket?created_at[gt]=2026-11-23T10:00:00%2B99:00",
            &with_auth[..],
            None,
            400,
        ),
        (
            "/t/acme/api/ticket?due=2026-02-30",
            &with_auth[..],
            None,
            400,
        ),
        (
            "/api/announcement?created_at[gt]=2026-11-2%C3%A910:00:00Z",
            &host[..],
            None,
            400,
        ),
        (
            "/api/announcement?headline[contains]=%ED%A0%80",
            &host[..],
            None,
            400,
        ),
        ("/config", &host[..], None, 401),
        (
            "/t/acme/api/ticket",
            &with_auth[..],
            Some(("text/plain", r#"{"title":"x"}"#)),
            415,
        ),
        ("/t/acme/api/nope/nope/nope", &with_auth[..], None, 404),
    ] {
        let method = if body.is_some() { "POST" } else { "GET" };
        let (status, text) = request(addr, method, path, headers, body);
        assert_eq!(status, want, "{path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert!(
            v["error"]["code"].is_string(),
            "{path}: the JSON error shape: {text}"
        );
    }
    let big = format!(r#"{{"title":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, text) = request(
        addr,
        "POST",
        "/t/acme/api/ticket",
        &with_auth,
        Some((json, &big)),
    );
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(r#""code":"payload_too_large""#), "{text}");
    let (status, _) = request(addr, "GET", "/api/announcement", &host, None);
    assert_eq!(status, 200, "the worker still serves, anonymous by host");
    // The provisioning is in the hash-chained audit log, which verifies.
    let bin = crate::support::BIN;
    let out = std::process::Command::new(bin)
        .args(["audit", "verify"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("intact"), "{text}");
    let out = std::process::Command::new(bin)
        .args(["audit", "list", "--json"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<(String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("app.create", "helpdesk"),
        ("tenant.create", "helpdesk/acme"),
        ("tenant.create", "helpdesk/globex"),
        ("tenant.create", "helpdesk/initech"),
    ] {
        assert!(
            actions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {actions:?}"
        );
    }
    // No connection of its own to anything but its PostgreSQL and its own processes: every
    // connected socket of the gateway and its workers points at loopback, at the cluster's
    // port or at a port one of them listens on (the search follower ran meanwhile too).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = request(
            addr,
            "GET",
            "/t/acme/search?q=printer",
            &[("Authorization", &auth)],
            None,
        );
        if body.contains("<b>printer</b>") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pg_port = cluster_in(cwd.path()).port();
    let mut pids = vec![up.pid()];
    pids.extend(children(up.pid()));
    assert!(
        pids.len() >= 2,
        "the gateway and the helpdesk worker: {pids:?}"
    );
    let sockets: Vec<(u32, Socket)> = pids
        .iter()
        .flat_map(|p| sockets_of(*p).into_iter().map(move |s| (*p, s)))
        .collect();
    let listening: Vec<u16> = sockets
        .iter()
        .filter(|(_, s)| s.listening)
        .map(|(_, s)| s.local.port())
        .collect();
    // Outbound: connected, and not accepted on one of their own listening ports.
    let connected: Vec<&(u32, Socket)> = sockets
        .iter()
        .filter(|(_, s)| s.remote.port() != 0 && !listening.contains(&s.local.port()))
        .collect();
    assert!(
        connected.iter().any(|(_, s)| s.remote.port() == pg_port),
        "{sockets:?}"
    );
    for (pid, s) in connected {
        assert!(
            s.remote.ip().is_loopback()
                && (s.remote.port() == pg_port || listening.contains(&s.remote.port())),
            "process {pid} has a connection of its own: {s:?}"
        );
    }
    up.signal("TERM");
    assert!(up.wait().success());
}

/// schemathesis (installed by scripts/test-deps into .tools/venv) generates requests from the
/// served OpenAPI document with a bounded number of examples per operation: no response may be
/// a server error or violate the document. Strings are drawn from all of UTF-8, NUL included;
/// 50 examples per operation, as an agent and as a customer; `BULKHEAD_SCHEMATHESIS_EXAMPLES`
/// changes the number.
#[test]
fn the_rest_api_conforms_to_its_openapi_document_schemathesis() {
    let st = std::env::var_os("BULKHEAD_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.tools/venv/bin/schemathesis")
        });
    assert!(
        st.exists(),
        "schemathesis not found at {}: run scripts/test-deps",
        st.display()
    );
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    let examples = std::env::var("BULKHEAD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".into());
    // An agent sees every field; a customer's records lack the hidden ones and its writes are
    // refused: the document must hold for both.
    for user in ["alice", "bob"] {
        let token = login(addr, "acme", user);
        let out = std::process::Command::new(&st)
            .arg("run")
            .arg(format!("http://{addr}/t/acme/openapi.json"))
            .args(["--url", &format!("http://{addr}/t/acme")])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", &examples, "--seed", "20261123"])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            ])
            .args(["--generation-allow-x00", "true", "--generation-codec", "utf-8"])
            .arg("--no-color")
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(cwd.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{user}: {stdout}");
        assert!(
            out.status.success(),
            "schemathesis found problems as {user}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("passed"), "{stdout}");
    }
    up.signal("TERM");
    assert!(up.wait().success());
}

#[test]
fn apply_reconciles_tenants_yaml_idempotently_and_refuses_unsafe_changes() {
    use std::process::Command;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    let file = cwd.path().join("tenants.yaml");
    let declared = r#"tenants:
  - id: acme
    storage: { namespace: "acme", isolation: "row" }
    identity: { provider: "local", realm: "acme" }
  - id: globex
    storage: { namespace: "globex", isolation: "schema" }
    identity: { provider: "local", realm: "globex" }
  - id: partner-acme
    storage: { namespace: "partner", isolation: "database" }
    identity: { provider: "oidc", issuer: "https://login.acme.example", audience: "helpdesk" }
    network:  { default: "deny", allow: ["api.acme-partner.com"] }
"#;
    std::fs::write(&file, declared).unwrap();
    let apply = |extra: &[&str]| {
        let out = Command::new(crate::support::BIN)
            .arg("apply")
            .arg("-f")
            .arg(&file)
            .args(extra)
            .current_dir(cwd.path())
            // Tenants that declare no residency get the deployment's.
            .env("BULKHEAD_DEPLOYMENT__DATA_RESIDENCY", "eu-central")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, plan, _) = apply(&["--dry-run"]);
    assert!(ok, "{plan}");
    assert!(
        plan.contains("partner-acme") && plan.contains("create"),
        "{plan}"
    );
    let (ok, out, err) = apply(&[]);
    assert!(ok && out.contains("applied"), "{out}\n{err}");
    // Second run: nothing to do.
    let (ok, out, _) = apply(&[]);
    assert!(ok && out.contains("nothing to do"), "{out}");
    let shown = Command::new(crate::support::BIN)
        .args([
            "tenant",
            "show",
            "partner-acme",
            "--app",
            "helpdesk",
            "--json",
        ])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["residency"], "eu-central", "{shown}");
    // An egress entry that is not a host, wildcard or address: refused with file:line, nothing
    // applied.
    std::fs::write(
        &file,
        declared.replace(
            "\"api.acme-partner.com\"",
            "\"https://api.acme-partner.com/x\"",
        ),
    )
    .unwrap();
    let (ok, _, err) = apply(&[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("tenants.yaml:11") && err.contains("network.allow"),
        "{err}"
    );
    // A wildcard over a top-level domain: refused by the same parser the workers use.
    std::fs::write(
        &file,
        declared.replace("\"api.acme-partner.com\"", "\"*.com\""),
    )
    .unwrap();
    let (ok, _, err) = apply(&[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("tenants.yaml:11:") && err.contains("a wildcard needs a domain of two labels"),
        "{err}"
    );
    std::fs::write(&file, declared).unwrap();
    let (ok, out, _) = apply(&[]);
    assert!(ok && out.contains("nothing to do"), "{out}");
    // The new silo's password and its place in the worker's configuration are in the app's
    // vault: a restarted worker boots with it (it would stay unreadable otherwise).
    let pid = up.worker_pid(None).to_string();
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    let token = format!("Bearer {}", login(addr, "acme", "alice"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = crate::support::request(
            addr,
            "GET",
            "/t/partner-acme/api/ticket",
            &[("Authorization", &token)],
            None,
        );
        // A token of acme at partner-acme: 403 means the worker resolved the new tenant.
        if status == 403 {
            break;
        }
        assert!(status == 503 || status == 404, "unexpected {status}");
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted worker never served partner-acme"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Lowering isolation is refused and changes nothing.
    std::fs::write(
        &file,
        declared.replace("isolation: \"database\"", "isolation: \"row\""),
    )
    .unwrap();
    let (ok, out, _) = apply(&[]);
    assert!(
        !ok && out.contains("REFUSED") && out.contains("lowering"),
        "{out}"
    );
    // With --allow-downgrade the tenant's data moves, and the next run has nothing to do.
    let (ok, out, err) = apply(&["--allow-downgrade"]);
    assert!(
        ok && out.contains("moved partner-acme of helpdesk from database to row"),
        "{out}\n{err}"
    );
    let (ok, out, _) = apply(&["--allow-downgrade"]);
    assert!(ok && out.contains("nothing to do"), "{out}");
    // Served again at its new level once the worker has re-read its configuration.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::support::request(
        addr,
        "GET",
        "/t/partner-acme/api/ticket",
        &[("Authorization", &token)],
        None,
    )
    .0 != 403
    {
        assert!(
            std::time::Instant::now() < deadline,
            "partner-acme not served after its move"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A typo names file:line and the field.
    std::fs::write(
        &file,
        declared.replace("isolation: \"schema\"", "isolaton: \"schema\""),
    )
    .unwrap();
    let (ok, _, err) = apply(&[]);
    assert!(
        !ok && err.contains("tenants.yaml:6:") && err.contains("isolaton"),
        "{err}"
    );
    // Every change is audited and the chain still verifies.
    let out = Command::new(crate::support::BIN)
        .args(["audit", "list", "--json"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "tenant.create" && r["target"] == "helpdesk/partner-acme")
    );
    up.signal("TERM");
    assert!(up.wait().success());
}

#[test]
fn app_and_tenant_commands_provision_rotate_and_audit() {
    use std::process::Command;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let up_addr = up.wait_listening();
    // A browser at `/` learns what runs and where: every demo tenant with its front-end, API
    // document and sign-in, and the demo users; a client asking for JSON gets the same.
    let (status, page) = crate::support::request(
        up_addr,
        "GET",
        "/",
        &[("Accept", "text/html,application/xhtml+xml")],
        None,
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.starts_with("<!doctype html>"), "{page}");
    for tenant in ["acme", "globex", "initech"] {
        for want in [
            format!("href=\"/t/{tenant}/app/\""),
            format!("href=\"/t/{tenant}/openapi.json\""),
            format!("href=\"/realms/{tenant}/.well-known/openid-configuration\""),
        ] {
            assert!(page.contains(&want), "{want} missing: {page}");
        }
    }
    assert!(page.contains("alice-at-acme"), "{page}");
    let (status, index) = crate::support::get(up_addr, "/");
    assert_eq!(status, 200, "{index}");
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let helpdesk = &index["apps"][0];
    assert_eq!(helpdesk["app"], "helpdesk");
    // What the page links to is there.
    let openapi = helpdesk["tenants"][0]["openapi"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = crate::support::get(up_addr, &openapi);
    assert_eq!(status, 200, "{openapi}");
    let sign_in = helpdesk["tenants"][0]["sign_in"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = crate::support::get(up_addr, &sign_in);
    assert_eq!(status, 200, "{sign_in}");
    let manifest = cwd.path().join("notes.yaml");
    std::fs::write(
        &manifest,
        "app: notes\nentities:\n  note:\n    fields:\n      text: text\n",
    )
    .unwrap();
    let exec = |args: &[&str]| {
        Command::new(crate::support::BIN)
            .args(args)
            .current_dir(cwd.path())
            .output()
            .unwrap()
    };
    let run = |args: &[&str]| {
        let out = exec(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let out = run(&["app", "create", "-m", manifest.to_str().unwrap()]);
    assert!(out.contains("app notes ready"), "{out}");
    let boot = std::fs::read_to_string(cwd.path().join(".bulkhead/boot/notes")).unwrap();
    assert!(boot.starts_with("embedded:"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cwd.path().join(".bulkhead/boot/notes"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let apps: serde_json::Value = serde_json::from_str(&run(&["app", "list", "--json"])).unwrap();
    assert!(apps.as_array().unwrap().iter().any(|a| a == "notes"));
    run(&["app", "rotate-credentials", "notes"]);
    // Rotating the running app's credentials: its worker keeps serving, new logins included.
    let token = format!("Bearer {}", login(up_addr, "acme", "alice"));
    run(&["app", "rotate-credentials", "helpdesk"]);
    for _ in 0..20 {
        let (status, body) = crate::support::request(
            up_addr,
            "GET",
            "/t/acme/api/ticket",
            &[("Authorization", &token)],
            None,
        );
        assert_eq!(status, 200, "{body}");
    }
    run(&["tenant", "suspend", "acme", "--app", "helpdesk"]);
    let list = run(&["tenant", "list", "--app", "helpdesk"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("acme") && l.contains("suspended")),
        "{list}"
    );
    run(&["tenant", "resume", "acme", "--app", "helpdesk"]);
    // Several tenants in one command; again, nothing changes; one at another level or an id
    // given twice is refused before anything is created.
    let fail = |args: &[&str]| {
        let out = exec(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let many = [
        "tenant",
        "create",
        "bulk-1",
        "bulk-2",
        "bulk-3",
        "--app",
        "notes",
        "--isolation",
        "schema",
    ];
    let out = run(&many);
    assert_eq!(out.matches("ready (schema)").count(), 3, "{out}");
    run(&many);
    let err = fail(&[
        "tenant",
        "create",
        "bulk-4",
        "bulk-2",
        "--app",
        "notes",
        "--isolation",
        "database",
    ]);
    assert!(
        err.contains("bulk-2") && err.contains("tenant move"),
        "{err}"
    );
    let err = fail(&["tenant", "create", "bulk-5", "bulk-5", "--app", "notes"]);
    assert!(err.contains("given twice"), "{err}");
    let list = run(&["tenant", "list", "--app", "notes"]);
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("bulk-") && l.contains("schema"))
            .count(),
        3,
        "{list}"
    );
    assert!(
        !list.contains("bulk-4") && !list.contains("bulk-5"),
        "{list}"
    );
    // Export from a database-level tenant, then delete it.
    let addr = up_addr;
    let token = format!("Bearer {}", login(addr, "initech", "alice"));
    let (status, _) = crate::support::request(
        addr,
        "POST",
        "/t/initech/api/ticket",
        &[("Authorization", &token)],
        Some(("application/json", r#"{"title":"exported"}"#)),
    );
    assert_eq!(status, 201);
    let export = run(&["tenant", "export", "initech", "--app", "helpdesk"]);
    assert!(
        export.contains(r#""entity":"ticket""#) && export.contains("exported"),
        "{export}"
    );
    assert!(!export.contains("acme"), "only initech's rows: {export}");
    // What the tenant leaves behind on this host: a file, a setting, its index copy — all in
    // its own worker's places (initech has a worker of its own).
    let (status, body) = crate::support::request(
        addr,
        "PUT",
        "/t/initech/files/report.txt",
        &[("Authorization", &token)],
        Some(("text/plain", "initech's report")),
    );
    assert!(status < 300, "{status} {body}");
    run(&[
        "config",
        "set",
        "support_email",
        "\"help@initech.example\"",
        "--app",
        "helpdesk",
        "--tenant",
        "initech",
    ]);
    let data = cwd.path().join(".bulkhead");
    let places = [
        data.join("files/helpdesk--initech"),
        data.join("search/helpdesk--initech"),
        data.join("compartments/helpdesk--initech"),
    ];
    let files = bulkhead_testkit::files_under(&places[0]);
    assert!(
        files
            .iter()
            .any(|f| std::fs::read(f).is_ok_and(|b| b == b"initech's report")),
        "{files:?}"
    );
    let eventually = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    eventually("initech's index copy", &|| {
        !bulkhead_testkit::files_under(&places[1]).is_empty()
    });
    let refused = Command::new(crate::support::BIN)
        .args(["tenant", "delete", "initech", "--app", "helpdesk"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "delete needs --confirm");
    run(&[
        "tenant",
        "delete",
        "initech",
        "--app",
        "helpdesk",
        "--confirm",
    ]);
    let list = run(&["tenant", "list", "--app", "helpdesk"]);
    assert!(!list.contains("initech"), "{list}");
    // Its worker stops and its file, index copy and private directory go with it.
    eventually("the deleted tenant's places are removed", &|| {
        places.iter().all(|p| !p.exists())
    });
    // Created again under the same id (and level), the tenant starts empty: the old accounts,
    // settings and files are gone.
    run(&[
        "tenant",
        "create",
        "initech",
        "--app",
        "helpdesk",
        "--isolation",
        "database",
    ]);
    let setting = run(&["config", "get", "--app", "helpdesk", "--tenant", "initech"]);
    assert!(!setting.contains("initech.example"), "{setting}");
    assert!(
        bulkhead_testkit::files_under(&places[0]).is_empty(),
        "a file survived the tenant"
    );
    // The gateway learns of the new tenant within its two-second registry refresh (404 until).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = crate::support::request(
            addr,
            "POST",
            "/realms/initech/protocol/openid-connect/token",
            &[],
            Some((
                "application/x-www-form-urlencoded",
                "grant_type=password&client_id=helpdesk&username=alice&password=alice-at-initech",
            )),
        );
        if status != 404 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        status, 400,
        "the deleted tenant's user cannot sign in: {body}"
    );
    let audit: serde_json::Value =
        serde_json::from_str(&run(&["audit", "list", "--json"])).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "app.create",
        "app.rotate-credentials",
        "tenant.suspend",
        "tenant.resume",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(run(&["audit", "verify"]).contains("intact"));
    up.signal("TERM");
    assert!(up.wait().success());
}

#[test]
fn a_worker_boots_from_its_own_vault_credential_and_holds_no_other_secret() {
    use crate::support::request;
    use std::process::Command;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    let boot_file = cwd.path().join(".bulkhead/boot/helpdesk");
    let boot_env = boot_file.to_str().unwrap().to_owned();
    let mut worker = Running::spawn_env(
        cwd.path(),
        &[
            "worker",
            "--app",
            "helpdesk",
            "--vault-dir",
            ".bulkhead/vault",
        ],
        &[("BULKHEAD_BOOT_CREDENTIAL_FILE", &boot_env)],
    );
    let waddr = worker.wait_ready();
    // Data written through the platform is served by the worker, to the right tenant only.
    let alice = format!("Bearer {}", login(addr, "acme", "alice"));
    let json = "application/json";
    let (status, _) = request(
        addr,
        "POST",
        "/t/acme/api/ticket",
        &[("Authorization", &alice)],
        Some((json, r#"{"title":"via platform"}"#)),
    );
    assert_eq!(status, 201);
    let (status, body) = request(
        waddr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &alice)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("via platform"));
    let (status, _) = request(waddr, "GET", "/t/acme/api/ticket", &[], None);
    assert_eq!(status, 401);
    let globex = format!("Bearer {}", login(addr, "globex", "alice"));
    let (status, _) = request(
        waddr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &globex)],
        None,
    );
    assert_eq!(status, 403);
    // initech (`database` level) has a worker of its own: the app's worker does not know it
    // (it holds no password of it), and the server routes initech's requests to its worker.
    let initech = format!("Bearer {}", login(addr, "initech", "alice"));
    let silo = |at| {
        request(
            at,
            "POST",
            "/t/initech/api/ticket",
            &[("Authorization", &initech)],
            Some((json, r#"{"title":"silo via worker"}"#)),
        )
    };
    let (status, body) = silo(waddr);
    assert_eq!(
        status, 404,
        "the app's worker serves a dedicated tenant: {body}"
    );
    let (status, body) = silo(addr);
    assert_eq!(status, 201, "the tenant's own worker serves it: {body}");
    // The worker's environment holds its boot credential's location, and no secret at all.
    let environ = std::fs::read(format!("/proc/{}/environ", worker.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let cluster: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cwd.path().join(".bulkhead/postgres/cluster.json")).unwrap(),
    )
    .unwrap();
    let superuser_password = cluster["password"].as_str().unwrap();
    assert!(
        !environ.contains(superuser_password),
        "no platform admin password"
    );
    assert!(
        !environ.contains("postgres://") && !environ.contains("embedded:"),
        "no URL, no key"
    );
    assert!(environ.contains("BULKHEAD_BOOT_CREDENTIAL_FILE="));
    worker.signal("INT");
    worker.wait();

    // Another app's boot credential does not open this app's vault space.
    let notes = cwd.path().join("notes.yaml");
    std::fs::write(
        &notes,
        "app: notes\nentities:\n  note:\n    fields:\n      text: text\n",
    )
    .unwrap();
    let out = Command::new(crate::support::BIN)
        .args(["app", "create", "-m", notes.to_str().unwrap()])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = cwd.path().join(".bulkhead/boot/notes");
    let out = Command::new(crate::support::BIN)
        .args([
            "worker",
            "--app",
            "helpdesk",
            "--vault-dir",
            ".bulkhead/vault",
        ])
        .env("BULKHEAD_BOOT_CREDENTIAL_FILE", &other)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused this worker's boot credential"),
        "{err}"
    );
    // An unreachable vault: bounded retries, then a clear non-zero exit.
    let out = Command::new(crate::support::BIN)
        .args([
            "worker",
            "--app",
            "helpdesk",
            "--vault-dir",
            "no-such-vault",
            "--vault-attempts",
            "2",
        ])
        .env("BULKHEAD_BOOT_CREDENTIAL_FILE", &boot_file)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stayed unreadable after 2 attempts"));
    up.signal("TERM");
    assert!(up.wait().success());
}

#[test]
fn up_routes_to_the_apps_worker_and_restarts_it_when_it_dies() {
    use crate::support::request;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    let pid = up.worker_pid(None);
    let token = format!("Bearer {}", login(addr, "acme", "alice"));
    let (status, _) = request(
        addr,
        "GET",
        "/t/acme/api/ticket",
        &[("Authorization", &token)],
        None,
    );
    assert_eq!(status, 200);
    // The worker is a separate process that holds no platform secret in its environment.
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    assert!(
        !environ.contains("postgres://") && !environ.contains("embedded:"),
        "{environ}"
    );
    // Kill it: the gateway answers 503 while it restarts, then serves again.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let restarted = up.worker_pid(Some(pid));
    assert_ne!(restarted, pid, "a new worker process");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = request(
            addr,
            "GET",
            "/t/acme/api/ticket",
            &[("Authorization", &token)],
            None,
        );
        if status == 200 {
            break;
        }
        assert!(status == 503, "{status} {body}");
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    up.signal("TERM");
    assert!(up.wait().success());
    assert!(
        bulkhead_pgcluster::wait_until(std::time::Duration::from_secs(10), || {
            !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read_to_string(e.path().join("cmdline"))
                    .is_ok_and(|c| c.contains("worker") && c.contains(cwd.path().to_str().unwrap()))
            })
        }),
        "no worker left behind"
    );
}

#[test]
fn app_migrate_plans_then_migrates_every_tenant_and_refuses_destruction_without_the_flag() {
    use std::process::Command;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    up.wait_listening();
    let original = include_str!("../../../../examples/helpdesk/manifest.yaml");
    let v2 = original.replace(
        "      internal_note: text\n",
        "      internal_note: text\n      severity: { type: int, default: 1 }\n",
    );
    assert_ne!(v2, original);
    let file = cwd.path().join("helpdesk-v2.yaml");
    std::fs::write(&file, &v2).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::support::BIN)
            .args(args)
            .current_dir(cwd.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let f = file.to_str().unwrap();
    let (ok, plan) = run(&["app", "plan", "-m", f]);
    assert!(ok && plan.contains("add field ticket.severity"), "{plan}");
    let (ok, out) = run(&["app", "migrate", "-m", f]);
    assert!(ok, "{out}");
    assert!(
        out.contains("tenant globex: version 2") && out.contains("tenant initech: version 2"),
        "{out}"
    );
    let (ok, out) = run(&["app", "migrate", "-m", f, "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["shared"]["steps"], 0, "second run: nothing to do");
    // Dropping a field is destructive.
    let v3 = v2.replace("      due: date\n", "");
    std::fs::write(&file, v3).unwrap();
    let (ok, out) = run(&["app", "migrate", "-m", f]);
    assert!(!ok && out.contains("destructive"), "{out}");
    up.signal("TERM");
    assert!(up.wait().success());
}

/// `[log] format = "json"` reaches the workers: their lines arrive on the server's stderr as
/// JSON of their own, not re-wrapped as text inside the server's lines.
#[test]
fn worker_logs_follow_the_servers_json_format() {
    let cwd = workdir();
    let mut up = Running::spawn_env(
        cwd.path(),
        &["up", "--listen", "127.0.0.1:0"],
        &[("BULKHEAD_LOG__FORMAT", "json")],
    );
    up.wait_listening();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        if let Some(l) = up.lines_with("worker listening").into_iter().next() {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no worker line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["fields"]["message"], "worker listening", "{v}");
    assert_eq!(v["fields"]["app"], "helpdesk", "{v}");
    for l in up.lines_with("") {
        assert!(
            serde_json::from_str::<serde_json::Value>(&l).is_ok(),
            "a text line: {l}"
        );
    }
    up.signal("TERM");
    assert!(up.wait().success());
}

/// The server's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// The gateway holds neither a large upload nor its download whole: both stream between the
/// client and the app's worker. Seen in the server process's peak memory, which a 9 MiB body
/// read whole on the way in (or out) would raise by at least that much.
#[test]
fn a_large_upload_and_its_download_stream_through_the_gateway() {
    const SIZE: usize = 9 * 1024 * 1024;
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let token = login(addr, "acme", "alice");
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];
    // Warm: the paths, pools and buffers a first upload and download set up.
    for _ in 0..2 {
        let (status, body) = crate::support::request(
            addr,
            "PUT",
            "/t/acme/files/warm.txt",
            &headers,
            Some(("text/plain", &"w".repeat(256 * 1024))),
        );
        assert!(status < 300, "{status} {body}");
        let (status, _) =
            crate::support::request(addr, "GET", "/t/acme/files/warm.txt", &headers, None);
        assert_eq!(status, 200);
    }
    let content = "x".repeat(SIZE);
    let before = peak_rss_kib(up.pid());
    let (status, body) = crate::support::request(
        addr,
        "PUT",
        "/t/acme/files/large.txt",
        &headers,
        Some(("text/plain", &content)),
    );
    assert!(status < 300, "{status} {body}");
    let (status, body) =
        crate::support::request(addr, "GET", "/t/acme/files/large.txt", &headers, None);
    assert_eq!(status, 200);
    assert_eq!(body.matches('x').count(), SIZE, "the whole file came back");
    let grown = peak_rss_kib(up.pid()).saturating_sub(before);
    assert!(
        grown < 4 * 1024,
        "the server's peak memory grew by {grown} KiB for a {} KiB upload and download",
        SIZE / 1024
    );
    // Past the limit: a declared length is refused at once, a chunked body when it crosses
    // it — both 413, and nothing is stored.
    // The files limit of a worker route (`bulkhead_runtime::files::DEFAULT_MAX_BYTES`).
    let over = "y".repeat(10 * 1024 * 1024 + 1);
    let (status, body) = raw_put(
        addr,
        "/t/acme/files/over.txt",
        &auth,
        over.as_bytes(),
        false,
    );
    assert_eq!(status, 413, "{body}");
    let (status, body) = raw_put(addr, "/t/acme/files/over.txt", &auth, over.as_bytes(), true);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let (status, _) =
        crate::support::request(addr, "GET", "/t/acme/files/over.txt", &headers, None);
    assert_eq!(status, 404, "nothing of the refused uploads is stored");
    up.signal("TERM");
    assert!(up.wait().success());
}

/// A PUT whose body is sent in 1 MiB pieces — with its length declared, or `chunked` (length
/// unknown); the status and text of the answer, read until the server closes (it may answer
/// early and reset the connection while the body is still being sent).
fn raw_put(
    addr: std::net::SocketAddr,
    path: &str,
    auth: &str,
    body: &[u8],
    chunked: bool,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\n{framing}\r\n\r\n"
    );
    let mut sent = stream.write_all(head.as_bytes());
    for piece in body.chunks(1024 * 1024) {
        if sent.is_err() {
            break;
        }
        sent = if chunked {
            stream
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| stream.write_all(piece))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(piece)
        };
    }
    if chunked {
        let _ = sent.and_then(|()| stream.write_all(b"0\r\n\r\n"));
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    (status, answer)
}
