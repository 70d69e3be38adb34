//! The whole platform against a PostgreSQL that accepts only TLS: `bulkhead up` with a
//! `verify-full` URL provisions the example (an app database, a schema tenant, a database
//! tenant with a worker of its own), and every connection the server and its workers hold is
//! encrypted; a wrong CA stops it with a clear error. The HTTPS listener, and OpenBao over
//! HTTPS.

use std::process::Command;

use bulkhead_testkit::pgtls::TlsCluster;

use crate::support::{BIN, Running, request, workdir};
use crate::up::login;

#[tokio::test(flavor = "multi_thread")]
async fn tls_the_platform_and_its_workers_reach_postgres_only_over_verified_tls() {
    let pg = TlsCluster::start("bulkhead").await.unwrap();
    let ca = pg.ca_file().display().to_string();
    // Two hosts, the first one down, and read-write servers only: the workers keep the list
    // (they would find nothing at the first host alone).
    let down = bulkhead_pgcluster::free_port().unwrap();
    let url = pg.url(
        &format!("localhost:{down},localhost"),
        "bulkhead",
        &format!("sslmode=verify-full&sslrootcert={ca}&target_session_attrs=read-write"),
    );
    let cwd = workdir();
    let mut up = Running::spawn(
        cwd.path(),
        &["up", "--listen", "127.0.0.1:0", "--database-url", &url],
    );
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    // Served by the app's worker (acme, globex) and by initech's own worker.
    for tenant in ["acme", "globex", "initech"] {
        let token = format!("Bearer {}", login(addr, tenant, "alice"));
        let (status, body) = request(
            addr,
            "POST",
            &format!("/t/{tenant}/api/ticket"),
            &[("Authorization", &token)],
            Some(("application/json", r#"{"title":"over tls"}"#)),
        );
        assert_eq!(status, 201, "{tenant}: {body}");
        let (status, body) = request(
            addr,
            "GET",
            &format!("/t/{tenant}/api/ticket"),
            &[("Authorization", &token)],
            None,
        );
        assert_eq!(status, 200, "{tenant}: {body}");
        assert!(body.contains("over tls"), "{body}");
    }
    // Every client session on the server, the workers' included, is encrypted.
    let direct = pg.url(
        "localhost",
        "bulkhead",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let config: bulkhead_pg::PgConfig = direct.parse().unwrap();
    let (client, conn) = config.connect().await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT s.ssl), count(DISTINCT a.usename)
               FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    let (plain, users): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(plain, 0, "a plaintext session");
    assert!(users >= 3, "the platform and the apps' roles: {users}");
    drop(up);

    // A CA that signed nothing here: `up` stops at once and says why.
    let other = pg.other_ca_file().display().to_string();
    let wrong = pg.url(
        "localhost",
        "bulkhead",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    fails_for_an_unknown_issuer(
        cwd.path(),
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--no-example",
            "--database-url",
            &wrong,
        ],
    );
}

/// Runs `bulkhead args` in `dir` and expects it to fail naming the untrusted certificate.
fn fails_for_an_unknown_issuer(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("BULKHEAD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// A client that trusts only `ca` and reaches `localhost` at `addr`.
fn client_trusting(ca: &std::path::Path, addr: std::net::SocketAddr) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", addr)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn healthz(client: &reqwest::Client, addr: std::net::SocketAddr) -> Result<u16, String> {
    client
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_the_https_listener_serves_its_certificate_and_takes_a_renewed_one_on_sighup() {
    use bulkhead_testkit::certs::TestCa;
    let cwd = workdir();
    let dir = cwd.path();
    let first = TestCa::new(&dir.join("ca"), "first-ca").unwrap();
    let second = TestCa::new(&dir.join("ca"), "second-ca").unwrap();
    let install = |(crt, key): (std::path::PathBuf, std::path::PathBuf)| {
        std::fs::copy(crt, dir.join("server.crt")).unwrap();
        std::fs::copy(key, dir.join("server.key")).unwrap();
    };
    install(first.issue("first", "DNS:localhost").unwrap());
    std::fs::write(
        dir.join("bulkhead.toml"),
        "[serve]\ntls_cert_file = \"server.crt\"\ntls_key_file = \"server.key\"\n",
    )
    .unwrap();
    let mut up = Running::spawn(dir, &["up", "--listen", "127.0.0.1:0", "--no-example"]);
    let addr = up.wait_listening();
    let trusts_first = client_trusting(&first.pem(), addr);
    let trusts_second = client_trusting(&second.pem(), addr);
    assert_eq!(healthz(&trusts_first, addr).await, Ok(200));
    let err = healthz(&trusts_second, addr).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // A renewed certificate (here from another CA), then SIGHUP: new handshakes use it.
    install(second.issue("second", "DNS:localhost").unwrap());
    up.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while healthz(&trusts_second, addr).await != Ok(200) {
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Connections already open keep the certificate they were made with; new ones do not.
    assert_eq!(healthz(&trusts_first, addr).await, Ok(200));
    let fresh = client_trusting(&first.pem(), addr);
    assert!(healthz(&fresh, addr).await.is_err());
    // A pair that does not load is refused and the served one stays.
    std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
    up.signal("HUP");
    assert!(up.wait_logged("did not load"));
    assert_eq!(healthz(&trusts_second, addr).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_openbao_over_https_is_reached_with_its_ca_by_the_platform_and_the_workers() {
    use bulkhead_testkit::openbao::OpenBao;
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let bao = OpenBao::start_tls().unwrap();
    let cwd = workdir();
    let dir = cwd.path();
    std::fs::write(dir.join("bao.token"), bao.root_token()).unwrap();
    let key: String = (0..32).map(|i| format!("{:02x}", i * 5 + 1)).collect();
    std::fs::write(dir.join("master.hex"), &key).unwrap();
    let config = |ca: &str| {
        format!(
            "database_url = \"{}\"\n[vault]\nbackend = \"openbao\"\naddress = \"{}\"\ntoken_file = \"bao.token\"\nmaster_key_file = \"master.hex\"\n{ca}",
            db.superuser_url(),
            bao.addr(),
        )
    };
    let helpdesk = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    ))
    .unwrap();
    let create = ["app", "create", "-m", helpdesk.to_str().unwrap()];
    // Without its CA the server's certificate is refused, and the command says why.
    std::fs::write(dir.join("bulkhead.toml"), config("")).unwrap();
    fails_for_an_unknown_issuer(dir, &create);
    // With it: the platform provisions, and the app's worker boots from the vault over HTTPS.
    let ca = bao.ca_file().unwrap();
    std::fs::write(
        dir.join("bulkhead.toml"),
        config(&format!("ca_file = \"{}\"\n", ca.display())),
    )
    .unwrap();
    crate::support::run(dir, &create);
    crate::support::run(dir, &["tenant", "create", "acme", "--app", "helpdesk"]);
    let mut serve = Running::spawn(dir, &["serve", "--listen", "127.0.0.1:0"]);
    let addr = serve.wait_serving();
    let (status, body) = crate::support::get(addr, "/apps/helpdesk/t/acme/openapi.json");
    assert_eq!(status, 200, "{body}");
    let worker = serve.worker_pid(None);
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("BULKHEAD_VAULT_CA_PEM=-----BEGIN CERTIFICATE-----"),
        "the worker trusts the CA it was given"
    );
}
