//! The whole platform against a PostgreSQL that accepts only TLS: `bulkhead up` with a
//! `verify-full` URL provisions the example (an app database, a schema tenant, a database
//! tenant with a worker of its own), and every connection the server and its workers hold is
//! encrypted; a wrong CA stops it with a clear error.

use std::process::Command;

use bulkhead_testkit::pgtls::TlsCluster;

use crate::support::{BIN, Running, request, workdir};
use crate::up::login;

#[tokio::test(flavor = "multi_thread")]
async fn tls_the_platform_and_its_workers_reach_postgres_only_over_verified_tls() {
    let pg = TlsCluster::start("bulkhead").await.unwrap();
    let ca = pg.ca_file().display().to_string();
    let url = pg.url(
        "localhost",
        "bulkhead",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
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
    let config: bulkhead_pg::PgConfig = url.parse().unwrap();
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
    let out = Command::new(BIN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--no-example",
            "--database-url",
            &wrong,
        ])
        .current_dir(cwd.path())
        .env_remove("BULKHEAD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
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
