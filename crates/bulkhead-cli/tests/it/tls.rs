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
