//! `bulkhead serve`: production configuration (an existing PostgreSQL, OpenBao as the vault),
//! several apps each in its own supervised worker, routing, health checks, tenants changed
//! while running, and a tenant whose users sign in at its own OpenID provider.

use std::process::Command;
use std::time::{Duration, Instant};

use bulkhead_testkit::oidc::{OidcOptions, OidcProvider};
use bulkhead_testkit::openbao::OpenBao;

use crate::support::{BIN, Running, get, request, run, workdir};

const AUDIENCE: &str = "https://helpdesk.example/";

/// Polls until `check` holds, for up to 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(addr: std::net::SocketAddr, sample: &str) -> Option<u64> {
    let (_, body) = get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// One variable of process `pid`'s environment.
fn env_var(pid: u32, name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .split('\0')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} not in the environment of {pid}"))
}

/// The pid of the newest worker of `app`, from serve's log.
fn worker_pid(serve: &Running, app: &str) -> u32 {
    let lines = serve.lines_with("worker started");
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains(&format!("app={app}")))
        .unwrap();
    line.split("pid=").nth(1).unwrap()[..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_each_app_in_its_own_worker_routes_watches_and_follows_tenant_changes() {
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let bao = OpenBao::start().unwrap();
    let idp = OidcProvider::start(&OidcOptions {
        audience: AUDIENCE.into(),
        ..OidcOptions::default()
    })
    .unwrap();
    let idp_port: u16 = idp
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let cwd = workdir();
    let dir = cwd.path();
    std::fs::write(dir.join("bao.token"), bao.root_token()).unwrap();
    let admin_token = "admin-token-0123456789abcdef0123456789";
    std::fs::write(dir.join("admin.token"), admin_token).unwrap();
    let key: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
    std::fs::write(dir.join("master.hex"), &key).unwrap();
    std::fs::write(
        dir.join("bulkhead.toml"),
        format!(
            "database_url = \"{}\"\n[vault]\nbackend = \"openbao\"\naddress = \"{}\"\ntoken_file = \"bao.token\"\nmaster_key_file = \"master.hex\"\n[serve]\nhealth_interval_secs = 1\nhealth_failures = 3\nadmin_token_file = \"admin.token\"\n[serve.hosts]\n\"notes.test\" = \"notes\"\n[egress]\nproxy_listen = \"127.0.0.1:0\"\n[egress.apps]\nhelpdesk = [\"127.0.0.1:{}\"]\n",
            db.superuser_url(),
            bao.addr(),
            idp_port
        ),
    )
    .unwrap();
    let helpdesk = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    ))
    .unwrap();
    std::fs::write(
        dir.join("notes.yaml"),
        "app: notes\nentities:\n  note:\n    fields:\n      text: text\n",
    )
    .unwrap();
    run(dir, &["app", "create", "-m", helpdesk.to_str().unwrap()]);
    run(dir, &["app", "create", "-m", "notes.yaml"]);
    run(dir, &["tenant", "create", "acme", "--app", "helpdesk"]);
    run(dir, &["tenant", "create", "acme", "--app", "notes"]);
    run(
        dir,
        &[
            "tenant",
            "create",
            "partner",
            "--app",
            "helpdesk",
            "--isolation",
            "schema",
            "--oidc-issuer",
            idp.issuer(),
            "--audience",
            AUDIENCE,
            "--residency",
            "eu",
        ],
    );
    let shown: serde_json::Value = serde_json::from_str(&run(
        dir,
        &["tenant", "show", "partner", "--app", "helpdesk", "--json"],
    ))
    .unwrap();
    assert_eq!(shown["isolation"], "schema");
    assert_eq!(shown["residency"], "eu");
    assert_eq!(shown["identity"]["provider"], "oidc");

    let mut serve = Running::spawn(dir, &["serve", "--listen", "127.0.0.1:0"]);
    let addr = serve.wait_serving();

    // The start page of a production server names no app and no tenant, as HTML or JSON.
    for accept in ["text/html", "application/json"] {
        let (status, body) = request(addr, "GET", "/", &[("Accept", accept)], None);
        assert_eq!(status, 200, "{body}");
        for name in ["acme", "partner", "helpdesk", "notes"] {
            assert!(!body.contains(name), "{name} on the start page: {body}");
        }
    }

    // The OIDC tenant's own provider signs its users in; the token means nothing elsewhere.
    let token = idp.token(AUDIENCE).unwrap();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, body) = request(
        addr,
        "GET",
        "/apps/helpdesk/t/partner/api/ticket",
        &auth,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = request(addr, "GET", "/apps/helpdesk/t/acme/api/ticket", &auth, None);
    assert_eq!(status, 401, "a partner token in tenant acme");
    let (status, _) = request(
        addr,
        "GET",
        "/apps/helpdesk/t/partner/api/ticket",
        &[],
        None,
    );
    assert_eq!(status, 401);

    // The worker serves the tenant's files from the app's bucket (local backend here).
    let (status, body) = request(
        addr,
        "PUT",
        "/apps/helpdesk/t/partner/files/notes/a.txt",
        &auth,
        Some(("text/plain", "partner's note")),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = request(
        addr,
        "GET",
        "/apps/helpdesk/t/partner/files/notes/a.txt",
        &auth,
        None,
    );
    assert_eq!((status, body.as_str()), (200, "partner's note"));
    assert!(
        dir.join(".bulkhead/files/helpdesk/tenants/partner/notes/a.txt")
            .exists()
    );

    // The worker follows the tenant's outbox into its own search index; a rebuild requested
    // with the CLI is honoured by the running worker.
    let (status, body) = request(
        addr,
        "POST",
        "/apps/helpdesk/t/partner/api/ticket",
        &auth,
        Some(("application/json", r#"{"title": "lantern flickers"}"#)),
    );
    assert_eq!(status, 201, "{body}");
    let search = || {
        request(
            addr,
            "GET",
            "/apps/helpdesk/t/partner/search?q=lantern",
            &auth,
            None,
        )
    };
    eventually("the new ticket found by search", || {
        let (status, body) = search();
        status == 200 && body.contains("<b>lantern</b> flickers")
    });
    assert!(
        dir.join(".bulkhead/search/helpdesk/partner/meta.json")
            .exists()
    );
    let rebuilds = || {
        serve
            .lines_with("search index rebuilt")
            .iter()
            .filter(|l| l.contains("tenant=partner"))
            .count()
    };
    let before = rebuilds();
    let out = run(
        dir,
        &[
            "search", "rebuild", "--app", "helpdesk", "--tenant", "partner",
        ],
    );
    assert!(out.contains("rebuild requested"), "{out}");
    eventually("the worker rebuilt partner's index", || rebuilds() > before);
    assert!(search().1.contains("lantern"));

    // Routing: by prefix, by host, and nothing by guess when several apps run.
    let (status, body) = get(addr, "/apps/notes/t/acme/openapi.json");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/api/note") && !body.contains("/api/ticket"));
    let (status, body) = request(
        addr,
        "GET",
        "/t/acme/openapi.json",
        &[("Host", "notes.test")],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/api/note"));
    let (status, body) = get(addr, "/t/acme/openapi.json");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/apps/<app>/"), "{body}");
    let (status, _) = get(addr, "/apps/nope/t/acme/openapi.json");
    assert_eq!(status, 404);

    // Each app's worker holds only its own boot credential, and not in its environment.
    let pid = worker_pid(&serve, "helpdesk");
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    for secret in [bao.root_token(), key.as_str(), "approle:", "postgres://"] {
        assert!(!environ.contains(secret), "{secret} in {environ}");
    }
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!cmdline.contains(bao.root_token()) && !cmdline.contains("approle:"));

    // The worker got the egress proxy and its app's token: with them, a client of its own
    // reaches what the app's list allows (the IdP's port here) and nothing else.
    let proxy = env_var(pid, "BULKHEAD_EGRESS_PROXY");
    let proxy_token = env_var(pid, "BULKHEAD_EGRESS_PROXY_TOKEN");
    let connect_as = |tenant: &str, target: &str, token: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&proxy).unwrap();
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{tenant}:{token}"),
        );
        write!(
            s,
            "CONNECT {target} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let connect = |target: &str, token: &str| connect_as("partner", target, token);
    assert!(connect(&format!("127.0.0.1:{idp_port}"), &proxy_token).contains(" 200 "));
    let pg_port = db.cluster().port();
    assert!(connect(&format!("127.0.0.1:{pg_port}"), &proxy_token).contains(" 403 "));
    assert!(connect(&format!("127.0.0.1:{idp_port}"), "guessed").contains(" 407 "));
    // A token names its app: the notes worker's token cannot claim a helpdesk tenant, and its
    // own tenant gets only the notes app's (empty) lists.
    let notes_token = env_var(worker_pid(&serve, "notes"), "BULKHEAD_EGRESS_PROXY_TOKEN");
    assert_ne!(notes_token, proxy_token);
    let idp_target = format!("127.0.0.1:{idp_port}");
    assert!(connect_as("partner", &idp_target, &notes_token).contains(" 403 "));
    assert!(connect_as("acme", &idp_target, &notes_token).contains(" 403 "));
    assert_eq!(
        metric(
            addr,
            "bulkhead_egress_denials_total{app=\"helpdesk\",source=\"proxy\",reason=\"address_not_allowed\"}"
        ),
        Some(1),
        "the proxy's refusal is counted"
    );

    // Suspending takes effect in the running worker, and so does resuming: no restart.
    assert_eq!(
        metric(addr, "bulkhead_worker_starts_total{app=\"helpdesk\"}"),
        Some(1)
    );
    run(dir, &["tenant", "suspend", "partner", "--app", "helpdesk"]);
    eventually("partner refused while suspended", || {
        let (status, body) = request(
            addr,
            "GET",
            "/apps/helpdesk/t/partner/api/ticket",
            &auth,
            None,
        );
        status == 404 && body.contains("tenant_not_found")
    });
    run(dir, &["tenant", "resume", "partner", "--app", "helpdesk"]);
    eventually("partner served after resume", || {
        request(
            addr,
            "GET",
            "/apps/helpdesk/t/partner/api/ticket",
            &auth,
            None,
        )
        .0 == 200
    });
    // A flag changed with the CLI reaches the running worker's OFREP endpoint.
    let flag = |tenant: &str| {
        let (_, body) = request(
            addr,
            "POST",
            &format!("/apps/helpdesk/t/{tenant}/ofrep/v1/evaluate/flags/new_editor"),
            &auth,
            Some(("application/json", "{}")),
        );
        body
    };
    assert!(
        flag("partner").contains("\"value\":false"),
        "{}",
        flag("partner")
    );
    run(
        dir,
        &[
            "flags",
            "set",
            "new_editor",
            "--app",
            "helpdesk",
            "--tenant",
            "partner",
            "--value",
            "true",
        ],
    );
    eventually("the flag override served", || {
        flag("partner").contains("\"value\":true")
    });
    // The admin API does the same with the same checks; only with its token.
    let admin_bearer = format!("Bearer {admin_token}");
    let admin = [("Authorization", admin_bearer.as_str())];
    let flags_url = "/admin/v1/apps/helpdesk/tenants/partner/flags";
    assert_eq!(request(addr, "GET", flags_url, &[], None).0, 401);
    assert_eq!(request(addr, "GET", flags_url, &auth, None).0, 401);
    let (status, body) = request(addr, "GET", flags_url, &admin, None);
    assert_eq!(status, 200, "{body}");
    let (status, listed) = request(addr, "GET", "/admin/v1/apps/helpdesk/tenants", &admin, None);
    assert_eq!(status, 200, "{listed}");
    assert!(listed.contains(r#""data_residency":"eu""#), "{listed}");
    assert!(body.contains("new_editor"), "{body}");
    let (status, body) = request(
        addr,
        "PUT",
        &format!("{flags_url}/new_editor"),
        &admin,
        Some(("application/json", r#"{"value": false}"#)),
    );
    assert_eq!(status, 200, "{body}");
    eventually("the admin API's override served", || {
        flag("partner").contains("\"value\":false")
    });
    let (status, body) = request(
        addr,
        "PUT",
        "/admin/v1/apps/helpdesk/tenants/partner/config/sla_hours",
        &admin,
        Some(("application/json", r#"{"value": 9999}"#)),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"settings.sla_hours\""), "{body}");
    let (status, body) = request(
        addr,
        "POST",
        "/admin/v1/apps/helpdesk/search/rebuild",
        &admin,
        Some(("application/json", r#"{"tenant": "partner"}"#)),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"rebuild_requested":["partner"]}"#)
    );
    let err = Command::new(BIN)
        .args([
            "config",
            "set",
            "sla_hours",
            "9999",
            "--app",
            "helpdesk",
            "--tenant",
            "partner",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("settings.sla_hours"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );

    // A tenant created while serving is served without a restart too.
    run(
        dir,
        &[
            "tenant",
            "create",
            "silo",
            "--app",
            "notes",
            "--isolation",
            "database",
        ],
    );
    eventually("new database tenant served", || {
        get(addr, "/apps/notes/t/silo/openapi.json").0 == 200
    });
    // The gateway's realm endpoints follow the registry too: a suspended tenant's realm
    // publishes no keys (so nothing can be verified or issued for it) until it is resumed.
    let certs = "/realms/silo/protocol/openid-connect/certs";
    eventually("the new tenant's realm published", || {
        get(addr, certs).0 == 200
    });
    run(dir, &["tenant", "suspend", "silo", "--app", "notes"]);
    eventually("a suspended tenant's realm refused", || {
        get(addr, certs).0 == 404
    });
    run(dir, &["tenant", "resume", "silo", "--app", "notes"]);
    eventually("the resumed tenant's realm back", || {
        get(addr, certs).0 == 200
    });
    assert_eq!(
        metric(addr, "bulkhead_worker_starts_total{app=\"helpdesk\"}"),
        Some(1)
    );
    assert_eq!(
        metric(addr, "bulkhead_worker_starts_total{app=\"notes\"}"),
        Some(1)
    );

    // A hung worker fails its health checks and is replaced.
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    eventually("the hung worker replaced", || {
        metric(
            addr,
            "bulkhead_worker_unhealthy_restarts_total{app=\"helpdesk\"}",
        ) == Some(1)
            && metric(addr, "bulkhead_worker_up{app=\"helpdesk\"}") == Some(1)
    });
    assert_ne!(worker_pid(&serve, "helpdesk"), pid);
    eventually("served by the new worker", || {
        request(
            addr,
            "GET",
            "/apps/helpdesk/t/partner/api/ticket",
            &auth,
            None,
        )
        .0 == 200
    });
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();

    serve.signal("TERM");
    assert!(serve.wait().success());
}

/// Runs `bash -c script` inside process `pid`'s network namespace; whether it succeeded and
/// what it printed.
fn in_netns_of(pid: u32, script: &str) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["timeout", "5", "bash", "-c", script])
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
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_workers_reach_only_the_egress_proxy_and_their_own_relays() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let tools = ["ip", "nsenter", "curl", "bash"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    // Creating a namespace needs CAP_SYS_ADMIN/CAP_NET_ADMIN, which a root in a restricted
    // container may lack: try it.
    let probe = format!("bulkhead-probe-{}", std::process::id());
    let netns = root
        && Command::new("ip")
            .args(["netns", "add", &probe])
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    if !(root && tools && netns) {
        println!(
            "skipped: needs root, ip netns, nsenter, curl and bash (root={root} tools={tools} netns={netns})"
        );
        return;
    }
    // A service on the host's loopback: the partner the app may call, by address entry.
    let partner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let partner_port = partner.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in partner.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\npartner ok",
            );
        }
    });
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let cwd = workdir();
    let dir = cwd.path();
    std::fs::write(
        dir.join("bulkhead.toml"),
        format!(
            "database_url = \"{}\"\n[vault]\nmaster_key_file = \"master.hex\"\n[egress.apps]\nhelpdesk = [\"127.0.0.1:{partner_port}\"]\n",
            db.superuser_url()
        ),
    )
    .unwrap();
    let key: String = (0..32).map(|i| format!("{:02x}", i * 5 + 1)).collect();
    std::fs::write(dir.join("master.hex"), key).unwrap();
    let helpdesk = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    ))
    .unwrap();
    run(dir, &["app", "create", "-m", helpdesk.to_str().unwrap()]);
    run(dir, &["tenant", "create", "acme", "--app", "helpdesk"]);
    let mut serve = Running::spawn(
        dir,
        &["serve", "--listen", "127.0.0.1:0", "--isolate-network"],
    );
    let addr = serve.wait_serving();
    // The app works: its database is reached through the relay on the namespace's link.
    let (status, body) = request(
        addr,
        "GET",
        "/api/announcement",
        &[("Host", "acme.localhost")],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let pid = worker_pid(&serve, "helpdesk");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the worker has its own network namespace"
    );
    // Inside it: the host's loopback services and the internet are unreachable by raw sockets.
    for target in [
        format!("127.0.0.1/{partner_port}"),
        format!("127.0.0.1/{}", db.cluster().port()),
        "1.1.1.1/80".to_owned(),
        format!("10.254.0.1/{}", addr.port()),
    ] {
        let (ok, out) = in_netns_of(pid, &format!("exec 3<>/dev/tcp/{target}"));
        assert!(
            !ok,
            "a raw socket to {target} from the worker's namespace: {out}"
        );
    }
    // Through the proxy, with the app's token: the allowed partner answers, nothing else.
    let (proxy, token) = (
        env_var(pid, "BULKHEAD_EGRESS_PROXY"),
        env_var(pid, "BULKHEAD_EGRESS_PROXY_TOKEN"),
    );
    let curl = |url: &str| {
        in_netns_of(
            pid,
            &format!("curl -s -o - -w ' %{{http_code}}' --proxy http://acme:{token}@{proxy} {url}"),
        )
        .1
    };
    assert!(curl(&format!("http://127.0.0.1:{partner_port}/")).contains("partner ok 200"));
    assert!(curl(&format!("http://127.0.0.1:{}/", db.cluster().port())).ends_with(" 403"));
    assert!(curl("http://169.254.169.254/latest/meta-data").ends_with(" 403"));
    serve.signal("TERM");
    assert!(serve.wait().success());
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("bulkhead-helpdesk"),
        "the namespace is removed at exit"
    );
}
