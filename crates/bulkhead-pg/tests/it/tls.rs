//! TLS to PostgreSQL against a real cluster that accepts only TLS (`hostssl`), its server
//! certificate signed by a CA made for the test and naming `localhost` only.

use bulkhead_pg::PgConfig;
use bulkhead_testkit::pgtls::TlsCluster;

/// Connects with `url` and reports whether the server sees the session encrypted.
async fn encrypted(url: &str) -> Result<bool, String> {
    let config: PgConfig = url.parse().map_err(|e| format!("{e}"))?;
    let (client, conn) = config.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        format!("{e}: {}", cause.unwrap_or_default())
    })?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn tls_verify_full_holds_and_a_wrong_ca_host_name_or_plaintext_is_refused() {
    let c = TlsCluster::start("bulkhead").await.unwrap();
    let ca = c.ca_file().display().to_string();
    let other = c.other_ca_file().display().to_string();
    let url = |host: &str, params: &str| c.url(host, "bulkhead", params);

    // verify-full to the name on the certificate: encrypted and checked; channel binding
    // (SCRAM-SHA-256-PLUS) too.
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    assert_eq!(encrypted(&url("localhost", &full)).await, Ok(true));
    let bound = format!("{full}&channel_binding=require");
    assert_eq!(encrypted(&url("localhost", &bound)).await, Ok(true));
    // verify-ca checks the chain, not the name.
    let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
    assert_eq!(encrypted(&url("127.0.0.1", &ca_only)).await, Ok(true));
    // require with a root certificate is verify-ca (as libpq); without one, encryption only.
    let require_ca = format!("sslmode=require&sslrootcert={other}");
    let err = encrypted(&url("localhost", &require_ca)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(
        encrypted(&url("localhost", "sslmode=require")).await,
        Ok(true)
    );

    // Refused: a name the certificate does not carry, a CA that signed nothing here, plaintext.
    let err = encrypted(&url("127.0.0.1", &full)).await.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    let wrong = format!("sslmode=verify-full&sslrootcert={other}");
    let err = encrypted(&url("localhost", &wrong)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = encrypted(&url("localhost", "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(err.contains("no encryption"), "{err}");

    // Descriptions that cannot be used say why before connecting.
    let err = encrypted(&url("localhost", "sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(err.contains("needs sslrootcert"), "{err}");
    let err = encrypted(&url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .await
    .unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let err = encrypted(&url("localhost", "sslmode=sometimes"))
        .await
        .unwrap_err();
    assert!(err.contains("sometimes"), "{err}");
    let err = encrypted(&url("localhost", &format!("sslcert={ca}")))
        .await
        .unwrap_err();
    assert!(err.contains("sslcert and sslkey"), "{err}");
}
