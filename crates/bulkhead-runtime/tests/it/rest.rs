use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_model::{IsolationLevel, TenantId};
use bulkhead_runtime::auth::LocalRealms;
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{ResolverConfig, Strategy};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const MANIFEST: &str = r#"app: APP
entities:
  customer:
    fields:
      name: { type: text, required: true, unique: true }
  ticket:
    owner: author
    fields:
      title: { type: text, required: true, max_length: 100, search: true }
      prio: { type: int, default: 3 }
      status: { type: enum, values: [open, closed], default: open }
      customer: { type: ref, entity: customer }
  article:
    fields:
      headline: { type: text, required: true, search: true }
    permissions:
      agent: { read: all, create: all, update: all, delete: all }
      anonymous: { read: all }
flags:
  new_editor: { type: bool, default: false }
  theme: { type: string, default: light }
settings:
  support_email: { schema: { type: string, format: email }, default: help@example.com }
  smtp_password: { schema: { type: string }, secret: true }
"#;

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) struct Stack {
    svc: axum::Router,
    /// The worker's side of outbound HTTP: each tenant's allow-list.
    pub(crate) http: Arc<bulkhead_runtime::http::HttpOut>,
    realm_routes: axum::Router,
    realms: RealmStore,
    app: String,
    pub(crate) options: Arc<bulkhead_runtime::options::OptionsStore>,
    search: bulkhead_search::SearchIndexes,
    _files: tempfile::TempDir,
    _search: tempfile::TempDir,
}

/// Largest upload in these tests.
const FILE_LIMIT: usize = 64 * 1024;

async fn stack() -> Stack {
    stack_with(MANIFEST).await
}

/// [`stack_with`] plus app code's own routes, mounted as an app mounts them
/// ([`bulkhead_runtime::app`]).
pub(crate) async fn stack_with(yaml: &str) -> Stack {
    stack_with_routes(yaml, axum::Router::new()).await
}

/// The REST stack as a worker serves it (edge layer, tenant resolution, the app's routes) for
/// a manifest whose `app:` is `APP`, with tenants `acme` (row) and `beta` (schema) and the
/// agent `alice` in each.
pub(crate) async fn stack_with_routes(yaml: &str, custom: axum::Router<Arc<Api>>) -> Stack {
    let fixture = bulkhead_fixtures::App::new(
        yaml,
        &[
            ("acme", IsolationLevel::Row),
            ("beta", IsolationLevel::Schema),
        ],
    )
    .await;
    let cluster = fixture.cluster;
    let app = fixture.app_name().to_owned();
    let plane = fixture.plane.clone();
    // The platform database holds the realms (never the app database).
    let platform = cluster.fresh_db().await.unwrap();
    let manager = Manager::from_config(
        platform.superuser_config(),
        bulkhead_testkit::tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(4).build().unwrap();
    let realms = RealmStore::new(pool, rand::random(), RealmSettings::default());
    realms.migrate().await.unwrap();
    for t in ["acme", "beta"] {
        realms.create_realm(&tid(t), now()).await.unwrap();
        realms
            .create_user(&tid(t), "alice", "correct horse", &["agent"])
            .await
            .unwrap();
    }
    let auth = Arc::new(LocalRealms {
        store: realms.clone(),
        audience: app.clone(),
    });
    let files_root = tempfile::tempdir().unwrap();
    let options = Arc::new(bulkhead_runtime::options::OptionsStore::default());
    let api =
        Api::new(plane.clone(), auth).with_files(Some(bulkhead_runtime::files::FilesApi::new(
            bulkhead_files::AppBucket::local(
                files_root.path(),
                &bulkhead_model::AppId::parse(&app).unwrap(),
            )
            .unwrap(),
            rand::random(),
            FILE_LIMIT,
        )));
    let http = Arc::new(bulkhead_runtime::http::HttpOut::new(
        bulkhead_egress::Egress::new(
            bulkhead_model::AppId::parse(&app).unwrap(),
            bulkhead_egress::AllowList::default(),
            bulkhead_egress::EgressConfig::default(),
        ),
    ));
    let api = api.with_options(options.clone()).with_http(http.clone());
    let search_dir = tempfile::tempdir().unwrap();
    let search = bulkhead_search::SearchIndexes::new(
        plane.clone(),
        bulkhead_search::SearchConfig {
            dir: search_dir.path().to_owned(),
            ..Default::default()
        },
    );
    let api = Arc::new(api.with_search(search.clone()));
    let config = ResolverConfig {
        strategies: vec![
            Strategy::Header("x-tenant".into()),
            Strategy::PathPrefix,
            Strategy::Subdomain,
        ],
        domains: vec!["api.example.com".into()],
        base_domains: vec!["apps.example.com".into()],
        custom_domains: HashMap::new(),
        trusted_proxies: vec![],
    };
    let directory = Arc::new(PlaneDirectory(plane));
    let realm_routes =
        bulkhead_runtime::realms::router(Arc::new(bulkhead_runtime::realms::Realms {
            store: realms.clone(),
            directory: directory.clone(),
            clients: vec![app.clone()],
            secure_cookies: false,
        }));
    Stack {
        svc: bulkhead_runtime::app(api, config, custom),
        realm_routes,
        http,
        realms,
        app,
        options,
        search,
        _files: files_root,
        _search: search_dir,
    }
}

impl Stack {
    async fn token(&self, tenant: &str) -> String {
        self.realms
            .login(
                &tid(tenant),
                "alice",
                "correct horse",
                &self.app,
                now(),
                None,
            )
            .await
            .unwrap()
            .access_token
    }

    /// Creates `user` with `roles` in `tenant` and returns an access token for it.
    pub(crate) async fn user_token(&self, tenant: &str, user: &str, roles: &[&str]) -> String {
        let password = format!("{user} password");
        self.realms
            .create_user(&tid(tenant), user, &password, roles)
            .await
            .unwrap();
        self.realms
            .login(&tid(tenant), user, &password, &self.app, now(), None)
            .await
            .unwrap()
            .access_token
    }

    /// Any request with raw bytes; returns status, headers and body.
    pub(crate) async fn raw(
        &self,
        method: &str,
        host: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .svc
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 22).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut all = headers.to_vec();
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        let bytes = body.map(String::into_bytes).unwrap_or_default();
        let (status, _, bytes) = self.raw(method, host, path, token, &all, bytes).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

pub(crate) const ACME: &str = "acme.apps.example.com";
const BETA: &str = "beta.apps.example.com";

#[tokio::test]
async fn the_rest_api_serves_crud_with_typed_json_errors() {
    let s = stack().await;
    let t = s.token("acme").await;
    let tok = Some(t.as_str());
    let (st, cust) = s
        .send(
            "POST",
            ACME,
            "/api/customer",
            tok,
            &[],
            Some(json!({"name": "Initech"}).to_string()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{cust}");
    let body = json!({"title": "Printer", "prio": 1, "customer": cust["id"], "author": "mallory"});
    let (st, ticket) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            tok,
            &[],
            Some(body.to_string()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ticket}");
    assert_ne!(ticket["author"], "mallory", "the owner field is the caller");
    let id = ticket["id"].as_str().unwrap().to_owned();
    let bulk = json!([{"title": "a", "prio": 2}, {"title": "b", "prio": 5}]).to_string();
    let (st, _) = s
        .send("POST", ACME, "/api/ticket/_bulk", tok, &[], Some(bulk))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, page) = s
        .send(
            "GET",
            ACME,
            "/api/ticket?prio[lt]=3&order=-prio&count=true&limit=1",
            tok,
            &[],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["count"], 2);
    assert_eq!(page["records"][0]["title"], "a");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = s
        .send(
            "GET",
            ACME,
            &format!("/api/ticket?prio[lt]=3&order=-prio&limit=1&after={cursor}"),
            tok,
            &[],
            None,
        )
        .await;
    assert_eq!(next["records"][0]["title"], "Printer");
    let (st, patched) = s
        .send(
            "PATCH",
            ACME,
            &format!("/api/ticket/{id}"),
            tok,
            &[],
            Some(json!({"status": "closed"}).to_string()),
        )
        .await;
    assert_eq!(
        (st, patched["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    let (st, _) = s
        .send("DELETE", ACME, &format!("/api/ticket/{id}"), tok, &[], None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, err) = s
        .send("GET", ACME, &format!("/api/ticket/{id}"), tok, &[], None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Errors: stable code, message, the field at fault; nothing half-written.
    let cases = [
        (
            json!({"title": "x", "prio": "high"}).to_string(),
            StatusCode::BAD_REQUEST,
            "wrong_type",
            Some("prio"),
        ),
        (
            json!({"title": "x", "nope": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown_field",
            Some("nope"),
        ),
        (
            json!({"prio": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some("title"),
        ),
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            None,
        ),
        (
            json!({"title": "x", "customer": "00000000-0000-4000-8000-000000000000"}).to_string(),
            StatusCode::CONFLICT,
            "reference_not_found",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let (st, err) = s
            .send("POST", ACME, "/api/ticket", tok, &[], Some(body.clone()))
            .await;
        assert_eq!(st, status, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}");
        assert_eq!(err["error"]["field"].as_str(), field, "{body}");
    }
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            tok,
            &[],
            Some("x".repeat(2 * 1024 * 1024)),
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, err) = s.send("GET", ACME, "/api/nope", tok, &[], None).await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_entity"))
    );
    let (st, err) = s
        .send("GET", ACME, "/api/ticket?prio[zz]=1", tok, &[], None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let (_, page) = s
        .send("GET", ACME, "/api/ticket?count=true", tok, &[], None)
        .await;
    assert_eq!(page["count"], 2);
}

#[tokio::test]
async fn tokens_bind_to_their_tenant_and_forgeries_are_401() {
    let s = stack().await;
    let acme = s.token("acme").await;
    // Works where it belongs.
    let (st, _) = s
        .send("GET", ACME, "/api/ticket", Some(&acme), &[], None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // A realm-A token at tenant B's host: not valid there.
    let (st, err) = s
        .send("GET", BETA, "/api/ticket", Some(&acme), &[], None)
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    // A's token with a selector naming B: 403.
    for (path, headers) in [
        ("/api/ticket", vec![("x-tenant", "beta")]),
        ("/t/beta/api/ticket", vec![]),
    ] {
        let (st, err) = s
            .send("GET", "api.example.com", path, Some(&acme), &headers, None)
            .await;
        assert_eq!(
            (st, err["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("tenant_mismatch")),
            "{path}"
        );
    }
    // No token, garbage, alg none, an ID-token type, a tampered role claim.
    let parts: Vec<&str> = acme.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let with_header = |h: Value| format!("{}.{}.{}", B64.encode(h.to_string()), parts[1], parts[2]);
    let mut none = header.clone();
    none["alg"] = json!("none");
    let mut id_typ = header.clone();
    id_typ["typ"] = json!("JWT");
    let mut admin = claims.clone();
    admin["roles"] = json!(["admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(admin.to_string()),
        parts[2]
    );
    let unsigned = format!("{}.{}.", B64.encode(none.to_string()), parts[1]);
    for bad in [
        None,
        Some("garbage".to_owned()),
        Some(unsigned),
        Some(with_header(id_typ)),
        Some(tampered),
    ] {
        let (st, _) = s
            .send("GET", ACME, "/api/ticket", bad.as_deref(), &[], None)
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    // The OpenAPI document is served and describes the entities.
    let (st, doc) = s.send("GET", ACME, "/openapi.json", None, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/ticket/{id}"]["patch"].is_object());
}

impl Stack {
    async fn realm(&self, method: &str, path: &str, form: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req
            .body(
                form.map(|f| Body::from(f.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = self.realm_routes.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn realm_endpoints_log_in_refresh_revoke_and_publish_keys() {
    let s = stack().await;
    let base = "/realms/acme/protocol/openid-connect";
    let (st, d) = s
        .realm("GET", "/realms/acme/.well-known/openid-configuration", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d["issuer"], "http://127.0.0.1:8080/realms/acme");
    let (st, _) = s
        .realm(
            "GET",
            "/realms/ghost/.well-known/openid-configuration",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A malformed form is an OAuth error an OAuth client can parse.
    let (st, e) = s
        .realm("POST", &format!("{base}/token"), Some("username=%FF"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_request", "{e}");
    let login = format!(
        "grant_type=password&client_id={}&username=alice&password=correct+horse",
        s.app
    );
    let (st, tokens) = s
        .realm("POST", &format!("{base}/token"), Some(&login))
        .await;
    assert_eq!(st, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (st, _) = s
        .send("GET", ACME, "/api/ticket", Some(&access), &[], None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // The token's kid is published in the realm's JWKS, and only there.
    let kid =
        serde_json::from_slice::<Value>(&B64.decode(access.split('.').next().unwrap()).unwrap())
            .unwrap()["kid"]
            .clone();
    let (_, jwks) = s.realm("GET", &format!("{base}/certs"), None).await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
    );
    let (_, beta_jwks) = s
        .realm("GET", "/realms/beta/protocol/openid-connect/certs", None)
        .await;
    assert!(
        !beta_jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
    );

    // Wrong password, unknown client: refused.
    let bad = format!(
        "grant_type=password&client_id={}&username=alice&password=nope",
        s.app
    );
    assert_eq!(
        s.realm("POST", &format!("{base}/token"), Some(&bad))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let other_client =
        "grant_type=password&client_id=billing&username=alice&password=correct+horse";
    assert_eq!(
        s.realm("POST", &format!("{base}/token"), Some(other_client))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Refresh rotates; revocation ends the session.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (st, next) = s
        .realm(
            "POST",
            &format!("{base}/token"),
            Some(&format!("grant_type=refresh_token&refresh_token={rt}")),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let rt2 = next["refresh_token"].as_str().unwrap();
    assert_eq!(
        s.realm(
            "POST",
            &format!("{base}/revoke"),
            Some(&format!("token={rt2}"))
        )
        .await
        .0,
        StatusCode::OK
    );
    let (st, _) = s
        .realm(
            "POST",
            &format!("{base}/token"),
            Some(&format!("grant_type=refresh_token&refresh_token={rt2}")),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn public_reads_resolve_by_host_only_and_need_an_anonymous_grant() {
    let s = stack().await;
    let t = s.token("acme").await;
    let body = json!({"headline": "Maintenance tonight"}).to_string();
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/api/article",
            Some(&t),
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    // Anonymous read where the manifest grants it, tenant from the host.
    let (st, page) = s.send("GET", ACME, "/api/article", None, &[], None).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["records"][0]["headline"], "Maintenance tonight");
    // Not via a client-chosen selector.
    let (st, _) = s
        .send(
            "GET",
            "api.example.com",
            "/api/article",
            None,
            &[("x-tenant", "acme")],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Not for entities or actions without the grant.
    let (st, _) = s.send("GET", ACME, "/api/ticket", None, &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .send("POST", ACME, "/api/article", None, &[], Some(body))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Another tenant's public data is its own.
    let (st, page) = s.send("GET", BETA, "/api/article", None, &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["records"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn browser_sessions_use_host_only_httponly_cookies_and_csrf_protects_writes() {
    let s = stack().await;
    let form = format!("client_id={}&username=alice&password=correct+horse", s.app);
    let req = Request::builder()
        .method("POST")
        .uri("/realms/acme/session")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let resp = s.realm_routes.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let find = |name: &str| {
        cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap()
            .clone()
    };
    let session = find("bulkhead_session");
    let csrf = find("bulkhead_csrf");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "host-only: {session}"
    );
    assert!(
        !csrf.contains("HttpOnly"),
        "the page must read the CSRF token: {csrf}"
    );
    assert!(find("bulkhead_refresh").contains("Path=/realms/acme/"));
    let value = |c: &str| {
        c.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    };
    let (session, csrf) = (value(&session), value(&csrf));
    let jar = format!("bulkhead_session={session}; bulkhead_csrf={csrf}");

    let (st, _) = s
        .send("GET", ACME, "/api/ticket", None, &[("cookie", &jar)], None)
        .await;
    assert_eq!(st, StatusCode::OK, "reads with the session cookie");
    let body = Some(json!({"title": "from the browser"}).to_string());
    let (st, err) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            None,
            &[("cookie", &jar)],
            body.clone(),
        )
        .await;
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "no CSRF header"
    );
    let wrong = "0".repeat(csrf.len());
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            None,
            &[("cookie", &jar), ("x-csrf-token", &wrong)],
            body.clone(),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "wrong CSRF header");
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            None,
            &[("cookie", &jar), ("x-csrf-token", &csrf)],
            body,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    // The session cookie of acme carries no authority at beta's host.
    let (st, _) = s
        .send("GET", BETA, "/api/ticket", None, &[("cookie", &jar)], None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// The files API: tenant prefixes, validated keys, checked content types and sizes, signed
/// links bound to tenant, object and expiry, and an entity row's permissions for its files.
#[tokio::test]
async fn files_are_tenant_scoped_validated_signed_and_follow_row_permissions() {
    let s = stack().await;
    let alice = s.token("acme").await;
    let alice = Some(alice.as_str());
    let text = [("content-type", "text/plain")];
    let (st, _, body) = s
        .raw(
            "PUT",
            ACME,
            "/files/notes/hello.txt",
            alice,
            &text,
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (st, headers, body) = s
        .raw("GET", ACME, "/files/notes/hello.txt", alice, &[], vec![])
        .await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"hello".as_slice()));
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );

    // Another tenant, same key: nothing there, and its listing is empty.
    let beta = s.token("beta").await;
    let beta = Some(beta.as_str());
    let (st, _, _) = s
        .raw("GET", BETA, "/files/notes/hello.txt", beta, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = s.send("GET", BETA, "/files", beta, &[], None).await;
    assert_eq!(list["files"], json!([]));
    // acme's token at beta's host, and no token at all: refused.
    let (st, _, _) = s
        .raw("GET", BETA, "/files/notes/hello.txt", alice, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = s
        .raw("GET", ACME, "/files/notes/hello.txt", None, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Traversal in every spelling is refused before any I/O.
    for path in [
        "/files/../beta/notes/hello.txt",
        "/files/notes/../../x",
        "/files/%2e%2e/x",
        "/files/notes/%2E%2E/%2E%2E/x",
        "/files/%2fetc/passwd",
        "/files/notes%5c..%5cx",
        "/files/notes/./hello.txt",
        "/files/%E2%80%A4%E2%80%A4/x",
        "/files/notes//hello.txt",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let (st, _, body) = s.raw(method, ACME, path, alice, &text, b"x".to_vec()).await;
            assert!(
                st == StatusCode::BAD_REQUEST || st == StatusCode::NOT_FOUND,
                "{method} {path}: {st} {}",
                String::from_utf8_lossy(&body)
            );
            assert_ne!(st, StatusCode::OK);
        }
    }
    let (_, list) = s.send("GET", ACME, "/files", alice, &[], None).await;
    assert_eq!(list["files"], json!(["notes/hello.txt"]));

    // Content types are declared, allowed and true to the content; sizes are bounded.
    for (ct, content) in [
        ("image/png", b"not a png".to_vec()),
        ("application/x-msdownload", b"MZ".to_vec()),
        ("", b"x".to_vec()),
    ] {
        let (st, _, _) = s
            .raw(
                "PUT",
                ACME,
                "/files/notes/bad.bin",
                alice,
                &[("content-type", ct)],
                content,
            )
            .await;
        assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
    let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
    let (st, _, _) = s
        .raw(
            "PUT",
            ACME,
            "/files/notes/pic.png",
            alice,
            &[("content-type", "image/png")],
            png,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _, _) = s
        .raw(
            "PUT",
            ACME,
            "/files/notes/big.txt",
            alice,
            &text,
            vec![b'a'; FILE_LIMIT + 1],
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, list) = s.send("GET", ACME, "/files", alice, &[], None).await;
    assert_eq!(list["files"], json!(["notes/hello.txt", "notes/pic.png"]));

    // Signed links: work without a token for their tenant and object until they expire.
    let sign = |key: &str, secs: u64| json!({"key": key, "expires_in": secs}).to_string();
    let (st, link) = s
        .send(
            "POST",
            ACME,
            "/files-signed",
            alice,
            &[],
            Some(sign("notes/hello.txt", 60)),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{link}");
    let path = format!("/{}", link["path"].as_str().unwrap());
    let (st, _, body) = s.raw("GET", ACME, &path, None, &[], vec![]).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"hello".as_slice()));
    let (st, _, _) = s.raw("GET", BETA, &path, None, &[], vec![]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a link of acme at beta");
    let other = path.replace("hello.txt", "pic.png");
    let (st, _, _) = s.raw("GET", ACME, &other, None, &[], vec![]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a link for another object");
    let longer = path.replace("exp=", "exp=9");
    let (st, _, _) = s.raw("GET", ACME, &longer, None, &[], vec![]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "an extended expiry");
    let (_, short) = s
        .send(
            "POST",
            ACME,
            "/files-signed",
            alice,
            &[],
            Some(sign("notes/hello.txt", 1)),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let short = format!("/{}", short["path"].as_str().unwrap());
    let (st, _, _) = s.raw("GET", ACME, &short, None, &[], vec![]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "an expired link");

    // A row's files obey the row: carol (customer) may not read articles, so not their files.
    let (st, article) = s
        .send(
            "POST",
            ACME,
            "/api/article",
            alice,
            &[],
            Some(json!({"headline": "Launch"}).to_string()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{article}");
    let key = format!("article/{}/spec.txt", article["id"].as_str().unwrap());
    let (st, _, _) = s
        .raw(
            "PUT",
            ACME,
            &format!("/files/{key}"),
            alice,
            &text,
            b"spec".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s.realms
        .create_user(&tid("acme"), "carol", "carol password", &["customer"])
        .await
        .unwrap();
    let carol = s
        .realms
        .login(&tid("acme"), "carol", "carol password", &s.app, now(), None)
        .await
        .unwrap()
        .access_token;
    let carol = Some(carol.as_str());
    let (st, _, _) = s
        .raw("GET", ACME, &format!("/files/{key}"), carol, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = s
        .raw("DELETE", ACME, &format!("/files/{key}"), carol, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/files-signed",
            carol,
            &[],
            Some(sign(&key, 60)),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, list) = s.send("GET", ACME, "/files", carol, &[], None).await;
    assert_eq!(list["files"], json!(["notes/hello.txt", "notes/pic.png"]));
    let (_, list) = s.send("GET", ACME, "/files", alice, &[], None).await;
    assert_eq!(list["files"].as_array().unwrap().len(), 3);
    // A file of a row that does not exist, or not keyed by a row: refused.
    let (st, _, _) = s
        .raw(
            "PUT",
            ACME,
            "/files/article/5b0c7a36-0000-4000-8000-000000000000/x.txt",
            alice,
            &text,
            b"x".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = s
        .raw(
            "PUT",
            ACME,
            "/files/article/x.txt",
            alice,
            &text,
            b"x".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Delete.
    let (st, _, _) = s
        .raw("DELETE", ACME, "/files/notes/hello.txt", alice, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = s
        .raw("GET", ACME, "/files/notes/hello.txt", alice, &[], vec![])
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Flags over OFREP and settings over `/config`: one tenant's overrides never change another's
/// evaluation; responses have OFREP's shapes; bulk results carry an ETag; secrets stay secret.
#[tokio::test]
async fn flags_and_config_follow_the_tenant_over_ofrep() {
    use bulkhead_model::options::{FlagOverride, Rule, TenantOptions};
    use bulkhead_runtime::options::LiveOptions;
    let s = stack().await;
    let alice = s.token("acme").await;
    let alice = Some(alice.as_str());
    let beta = s.token("beta").await;
    let beta = Some(beta.as_str());
    // Defaults everywhere before any override.
    let (st, one) = s
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/new_editor",
            alice,
            &[],
            Some("{\"context\": {}}".into()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(
        one,
        json!({"key": "new_editor", "value": false, "reason": "DEFAULT", "variant": "default", "metadata": {}})
    );
    // acme turns it on for agents only; beta is untouched.
    s.options.set(
        tid("acme"),
        LiveOptions {
            options: TenantOptions {
                flags: [
                    (
                        "new_editor".to_owned(),
                        FlagOverride {
                            value: Some(json!(false)),
                            rules: vec![Rule {
                                users: vec![],
                                roles: vec!["agent".into()],
                                value: json!(true),
                            }],
                            rollout: None,
                        },
                    ),
                    (
                        "theme".to_owned(),
                        FlagOverride {
                            value: None,
                            rules: vec![Rule {
                                users: vec!["someone-else".into()],
                                roles: vec![],
                                value: json!("dark"),
                            }],
                            rollout: None,
                        },
                    ),
                ]
                .into(),
                settings: [("support_email".to_owned(), json!("acme@example.com"))].into(),
            },
            secrets: [("smtp_password".to_owned(), json!("hunter2"))].into(),
        },
    );
    let (_, one) = s
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/new_editor",
            alice,
            &[],
            None,
        )
        .await;
    assert_eq!(
        (one["value"].clone(), one["reason"].clone()),
        (json!(true), json!("TARGETING_MATCH"))
    );
    let (_, other) = s
        .send(
            "POST",
            BETA,
            "/ofrep/v1/evaluate/flags/new_editor",
            beta,
            &[],
            None,
        )
        .await;
    assert_eq!(
        (other["value"].clone(), other["reason"].clone()),
        (json!(false), json!("DEFAULT"))
    );
    // Targeting follows the authenticated caller, not a targetingKey the client claims.
    let claim = json!({"context": {"targetingKey": "someone-else"}}).to_string();
    let (_, theme) = s
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/theme",
            alice,
            &[],
            Some(claim),
        )
        .await;
    assert_eq!(
        (theme["value"].clone(), theme["reason"].clone()),
        (json!("light"), json!("DEFAULT"))
    );
    // Unknown flag and bad context: OFREP error shapes.
    let (st, nf) = s
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/nope",
            alice,
            &[],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        (nf["key"].clone(), nf["errorCode"].clone()),
        (json!("nope"), json!("FLAG_NOT_FOUND"))
    );
    let (st, bad) = s
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/theme",
            alice,
            &[],
            Some("{\"context\": 5}".into()),
        )
        .await;
    assert_eq!(
        (st, bad["errorCode"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_CONTEXT"))
    );
    // Bulk evaluation with an ETag; the same ETag gives 304.
    let (st, headers, body) = s
        .raw(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags",
            alice,
            &[("content-type", "application/json")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let bulk: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(bulk["flags"].as_array().unwrap().len(), 2);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (st, _, _) = s
        .raw(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags",
            alice,
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    let (st, beta_headers, _) = s
        .raw(
            "POST",
            BETA,
            "/ofrep/v1/evaluate/flags",
            beta,
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "beta's flags differ from acme's");
    assert_ne!(beta_headers["etag"].to_str().unwrap(), etag);
    // No credentials at a tenant selected by path: refused.
    let (st, _) = s
        .send(
            "POST",
            "api.example.com",
            "/t/acme/ofrep/v1/evaluate/flags/theme",
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Config: the override, the default, and the secret redacted.
    let (_, cfg) = s.send("GET", ACME, "/config", alice, &[], None).await;
    assert_eq!(cfg["settings"]["support_email"], "acme@example.com");
    assert_eq!(
        cfg["settings"]["smtp_password"],
        json!({"secret": true, "set": true})
    );
    assert!(!cfg.to_string().contains("hunter2"));
    let (_, cfg) = s.send("GET", BETA, "/config", beta, &[], None).await;
    assert_eq!(cfg["settings"]["support_email"], "help@example.com");
    assert_eq!(
        cfg["settings"]["smtp_password"],
        json!({"secret": true, "set": false})
    );
}

#[tokio::test]
async fn search_over_http_sees_only_the_resolved_tenant_and_the_callers_rows() {
    let s = stack().await;
    let acme = s.token("acme").await;
    let beta = s.token("beta").await;
    for (host, token, headline) in [
        (ACME, &acme, "kettle descaling guide"),
        (BETA, &beta, "kettle warranty terms"),
    ] {
        let (st, _) = s
            .send(
                "POST",
                host,
                "/api/article",
                Some(token),
                &[],
                Some(json!({"headline": headline}).to_string()),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, _) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            Some(&acme),
            &[],
            Some(json!({"title": "kettle broken"}).to_string()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s.search.sync_all(false).await;

    let (st, page) = s
        .send("GET", ACME, "/search?q=kettle", Some(&acme), &[], None)
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["facets"], json!({"article": 1, "ticket": 1}));
    let texts: Vec<String> = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h["record"]["headline"]
                .as_str()
                .or(h["record"]["title"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(texts.iter().all(|t| !t.contains("warranty")), "{texts:?}");
    let article = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["entity"] == "article")
        .unwrap();
    assert_eq!(
        article["highlights"]["headline"],
        "<b>kettle</b> descaling guide"
    );
    // The other tenant's token, a tenant selector that disagrees, extra parameters.
    let (st, _) = s
        .send("GET", ACME, "/search?q=kettle", Some(&beta), &[], None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, body) = s
        .send(
            "GET",
            ACME,
            "/search?q=kettle",
            Some(&acme),
            &[("x-tenant", "beta")],
            None,
        )
        .await;
    assert!(st.is_client_error(), "{st} {body}");
    let (st, body) = s
        .send(
            "GET",
            ACME,
            "/search?q=kettle&tenant_id=beta",
            Some(&acme),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (st, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("tenant_id"))
    );
    let (st, body) = s
        .send(
            "GET",
            ACME,
            "/search?q=article.headline:(",
            Some(&acme),
            &[],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        (&body["error"]["code"], &body["error"]["field"]),
        (&json!("bad_query"), &json!("q"))
    );
    let (st, body) = s
        .send(
            "GET",
            ACME,
            "/search?q=kettle&entity=customer",
            Some(&acme),
            &[],
            None,
        )
        .await;
    assert_eq!(body["error"]["code"], "unknown_entity", "{st}");
    // Anonymous readers on the tenant's host find the articles they may read, no tickets.
    let (st, page) = s
        .send("GET", ACME, "/search?q=kettle", None, &[], None)
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["facets"], json!({"article": 1}));
    assert_eq!(
        page["hits"][0]["record"]["headline"],
        "kettle descaling guide"
    );
    let (st, _) = s
        .send(
            "GET",
            ACME,
            "/search?q=kettle&entity=ticket",
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
