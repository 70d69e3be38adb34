//! The example mini-app in a real browser (Debian's headless Chromium, driven by
//! playwright-core): its front-end over the platform's SDK, signed in by the tenant realm's
//! session cookies, by tenant path and by tenant host. The scenario (`browser_sdk.mjs`) reports
//! what the page showed and what its script could do; this test compares that with what the
//! REST API gives each tenant's own token.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Running, request, workdir};
use crate::up::login;

fn create_tickets(addr: std::net::SocketAddr, tenant: &str, token: &str, n: usize) {
    let auth = format!("Bearer {token}");
    for i in 0..n {
        let body = format!(r#"{{"title":"{tenant} ticket {i}"}}"#);
        let (status, text) = request(
            addr,
            "POST",
            &format!("/t/{tenant}/api/ticket"),
            &[("Authorization", &auth)],
            Some(("application/json", &body)),
        );
        assert_eq!(status, 201, "{text}");
    }
}

fn open_titles(addr: std::net::SocketAddr, tenant: &str, token: &str) -> Vec<String> {
    let auth = format!("Bearer {token}");
    let (status, body) = request(
        addr,
        "GET",
        &format!("/t/{tenant}/api/ticket?status=open&order=-created_at&limit=50"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect()
}

fn titles(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sandbox_browser_sdk_signs_in_per_tenant_and_a_page_reaches_no_other_tenant() {
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let (acme_token, globex_token) = (login(addr, "acme", "alice"), login(addr, "globex", "alice"));
    create_tickets(addr, "acme", &acme_token, 7);
    create_tickets(addr, "globex", &globex_token, 3);
    let acme_open = open_titles(addr, "acme", &acme_token);
    let globex_open = open_titles(addr, "globex", &globex_token);
    assert_eq!((acme_open.len(), globex_open.len()), (7, 3));
    assert!(acme_open.iter().all(|t| !globex_open.contains(t)));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/browser_sdk.mjs");
    let origin = format!("http://{addr}");
    let port = addr.port().to_string();
    let seen = bulkhead_testkit::browser::run_scenario(
        &script,
        &[&origin, &port],
        Duration::from_secs(180),
    )
    .unwrap();
    let pretty = serde_json::to_string_pretty(&seen).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{pretty}");

    // acme's realm refuses globex's password, and the page shows the realm's own error code.
    assert!(
        seen["wrong_password"]
            .as_str()
            .unwrap()
            .starts_with("invalid_grant"),
        "{pretty}"
    );

    // The page of acme's agent shows acme's tickets (the newest five), signed in by the form.
    let acme = &seen["acme_first"];
    assert!(
        acme["who"].as_str().unwrap().ends_with(" (agent)"),
        "{pretty}"
    );
    assert_eq!(acme["open_count"], acme_open.len().to_string());
    assert_eq!(
        titles(&acme["tickets"]),
        acme_open[..acme_open.len().min(5)]
    );
    assert_eq!(acme["agent_visible"], true);
    assert_eq!(acme["error"], "");

    // What the page's script could do: its own tenant's data, never the HttpOnly session,
    // no write without the CSRF token, and nothing at another tenant's path.
    let p = &seen["acme_probe"];
    assert_eq!(p["session_cookie_readable"], false, "{pretty}");
    assert_eq!(p["me"]["id"].as_str().map(str::is_empty), Some(false));
    assert_eq!(p["prefs"]["theme"], "dark");
    assert_eq!(p["tenant_storage_read"], "answered");
    assert_eq!(p["tenant_storage_write"], "answered");
    assert_eq!(titles(&p["db_open_titles"]), acme_open);
    assert_eq!(p["write_without_csrf"], 403);
    assert_eq!(p["other_tenant_status"], 403);
    assert_eq!(p["other_tenant_code"], "tenant_mismatch");
    assert_eq!(p["other_tenant_sdk"], "tenant_mismatch");
    assert_eq!(p["spelled"], "answered");
    let keys = titles(&p["user_keys"]);
    assert!(keys.contains(&"../globex/prefs".to_owned()), "{pretty}");
    // Signing out ends the session for the SDK too.
    assert_eq!(seen["acme_after_logout"], "unauthorized", "{pretty}");

    // globex's page: globex's tickets, no trace of acme's message or alice-at-acme's theme.
    let g = &seen["globex"];
    assert_eq!(
        titles(&g["tickets"]),
        globex_open[..globex_open.len().min(5)]
    );
    assert_eq!(g["message"], "", "{pretty}");
    assert_eq!(g["theme"], "light");

    // acme by its host: the same tenant (its message, alice's theme), no tenant in any URL.
    let h = &seen["acme_host"];
    assert_eq!(h["message"], "hello from acme", "{pretty}");
    assert_eq!(h["theme"], "dark");
    assert_eq!(titles(&h["tickets"]), titles(&acme["tickets"]));
    let loaded = titles(&seen["acme_host_loaded"]);
    for url in ["/sdk/bulkhead.js", "/sdk/session", "/me", "/app/app.js"] {
        let want = format!("http://acme.localhost:{port}{url}");
        assert!(loaded.contains(&want), "{want} not in {loaded:?}");
    }

    // acme's customer: no agent section, and the tenant's storage is not theirs to read.
    let b = &seen["bob"];
    assert_eq!(b["agent_visible"], false, "{pretty}");
    assert_eq!(seen["bob_probe"]["tenant_storage_read"], "forbidden");
    assert_eq!(seen["bob_probe"]["tenant_storage_write"], "forbidden");
    assert_eq!(seen["bob_probe"]["user_storage_write"], "answered");
    assert_eq!(seen["bob_probe"]["prefs"], Value::Null);
}
