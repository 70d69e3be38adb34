//! External realms against a real OpenID provider (npm oidc-provider).

use std::collections::HashMap;

use bulkhead_identity::external::{ExternalRealm, ExternalRealms};
use bulkhead_identity::jwt::Alg;
use bulkhead_model::TenantId;
use bulkhead_testkit::oidc::{OidcOptions, OidcProvider};

const AUDIENCE: &str = "https://helpdesk.example/";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn realm_for(p: &OidcProvider, audience: &str) -> ExternalRealm {
    ExternalRealm {
        issuer: p.issuer().to_owned(),
        jwks_url: Some(p.jwks_url()),
        audience: audience.to_owned(),
        roles_claim: "roles".into(),
        algorithms: vec![Alg::RS256],
        leeway_secs: 30,
    }
}

#[tokio::test]
async fn a_real_providers_token_is_accepted_and_a_same_kid_impostor_is_not() {
    let options = OidcOptions {
        audience: AUDIENCE.into(),
        ..OidcOptions::default()
    };
    let real = OidcProvider::start(&options).unwrap();
    // A second provider instance claiming the same issuer and kid, with its own key.
    let impostor = OidcProvider::start(&OidcOptions {
        issuer: Some(real.issuer().to_owned()),
        ..options.clone()
    })
    .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let realms =
        ExternalRealms::new(HashMap::from([(acme.clone(), realm_for(&real, AUDIENCE))])).unwrap();

    let good = real.token(AUDIENCE).unwrap();
    let v = realms.verify(&acme, &good, now()).await.unwrap();
    assert_eq!(v.strings("roles"), ["agent"]);

    let forged = impostor.token(AUDIENCE).unwrap();
    assert!(
        realms.verify(&acme, &forged, now()).await.is_err(),
        "same kid, other key"
    );

    // The same good token for another audience, tenant or at another time: refused.
    let other_aud = ExternalRealms::new(HashMap::from([(
        acme.clone(),
        realm_for(&real, "https://billing.example/"),
    )]))
    .unwrap();
    assert!(other_aud.verify(&acme, &good, now()).await.is_err());
    let beta = TenantId::parse("beta").unwrap();
    assert!(realms.verify(&beta, &good, now()).await.is_err());
    assert!(realms.verify(&acme, &good, now() + 3600).await.is_err());
}

#[tokio::test]
async fn an_unreachable_jwks_url_fails_closed() {
    let acme = TenantId::parse("acme").unwrap();
    let real = OidcProvider::start(&OidcOptions {
        audience: AUDIENCE.into(),
        ..OidcOptions::default()
    })
    .unwrap();
    let mut realm = realm_for(&real, AUDIENCE);
    realm.jwks_url = Some(format!(
        "http://127.0.0.1:{}/jwks",
        bulkhead_pgcluster_free_port()
    ));
    let realms = ExternalRealms::new(HashMap::from([(acme.clone(), realm)])).unwrap();
    let token = real.token(AUDIENCE).unwrap();
    assert!(realms.verify(&acme, &token, now()).await.is_err());
}

#[tokio::test]
async fn keys_are_found_by_discovery_only_when_it_names_the_configured_issuer() {
    let acme = TenantId::parse("acme").unwrap();
    let options = OidcOptions {
        audience: AUDIENCE.into(),
        ..OidcOptions::default()
    };
    let real = OidcProvider::start(&options).unwrap();
    let mut realm = realm_for(&real, AUDIENCE);
    realm.jwks_url = None;
    let realms = ExternalRealms::new(HashMap::from([(acme.clone(), realm)])).unwrap();
    let token = real.token(AUDIENCE).unwrap();
    realms.verify(&acme, &token, now()).await.unwrap();

    // A provider served at one address whose discovery document names another issuer does
    // not get to choose the keys of a realm configured with its address.
    let other = OidcProvider::start(&OidcOptions {
        issuer: Some("https://login.acme.example".into()),
        ..options
    })
    .unwrap();
    let realm = ExternalRealm {
        issuer: other.url(),
        ..realm_for(&other, AUDIENCE)
    };
    let realms = ExternalRealms::new(HashMap::from([(
        acme.clone(),
        ExternalRealm {
            jwks_url: None,
            ..realm
        },
    )]))
    .unwrap();
    let err = realms
        .verify(&acme, &other.token(AUDIENCE).unwrap(), now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names issuer"), "{err}");
}

fn bulkhead_pgcluster_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn key_urls_inside_a_token_are_never_fetched() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let real = OidcProvider::start(&OidcOptions {
        audience: AUDIENCE.into(),
        ..OidcOptions::default()
    })
    .unwrap();
    // An attacker's key server: it must never see a connection.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/keys", trap.local_addr().unwrap());
    let acme = TenantId::parse("acme").unwrap();
    let realms =
        ExternalRealms::new(HashMap::from([(acme.clone(), realm_for(&real, AUDIENCE))])).unwrap();
    let good = real.token(AUDIENCE).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut header: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    for (name, kid) in [("jku", "key-1"), ("x5u", "key-1"), ("jku", "unknown-kid")] {
        header[name] = serde_json::json!(trap_url);
        header["kid"] = serde_json::json!(kid);
        let forged = format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        assert!(
            realms.verify(&acme, &forged, now()).await.is_err(),
            "{name}"
        );
        header.as_object_mut().unwrap().remove(name);
    }
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the token's key URL was contacted: {other:?}"),
    }
}
