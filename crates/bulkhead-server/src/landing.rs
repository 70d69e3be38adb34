//! `GET /`: what a person opening the server's address in a browser sees instead of a JSON 404.
//! Under `bulkhead up` (a local, first-run installation) it says what runs and where: each app
//! and tenant with its front-end, API document and sign-in discovery, the demo users, the
//! operational endpoints. Under `bulkhead serve` (production, often public) it names nothing —
//! no app, no tenant — so it tells a stranger nothing a tenant would not want told. A client
//! that does not ask for HTML gets the same as JSON.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use bulkhead_control::registry;
use deadpool_postgres::Pool;
use serde_json::{Value, json};

/// What `/` may show.
pub(crate) enum Landing {
    /// `bulkhead up`: the registry's apps and tenants, read per request; the demo users when
    /// the example app was provisioned.
    Up { pool: Pool, example: bool },
    /// `bulkhead serve`: nothing named.
    Serve,
}

pub(crate) fn router(landing: Landing) -> Router {
    Router::new()
        .route("/", axum::routing::get(page))
        .with_state(Arc::new(landing))
}

async fn page(State(landing): State<Arc<Landing>>, headers: HeaderMap) -> Response {
    let index = match landing.as_ref() {
        Landing::Serve => json!({
            "bulkhead": "serve",
            "apps": "under /apps/<app>/ or the hosts routed to them (serve.hosts)",
            "health": "/healthz",
            "ready": "/readyz",
        }),
        Landing::Up { pool, example } => match up_index(pool, *example).await {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, "reading the registry for the start page");
                json!({"bulkhead": "up", "error": "the registry could not be read; see the log"})
            }
        },
    };
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        Html(render(&index)).into_response()
    } else {
        axum::Json(index).into_response()
    }
}

/// The apps and tenants of an `up` installation, with the paths that reach them.
async fn up_index(pool: &Pool, example: bool) -> Result<Value, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let client = pool.get().await.map_err(|e| fail(&e))?;
    let apps = registry::apps(&**client).await.map_err(|e| fail(&e))?;
    // With one app its tenants are served at the root; with several, under /apps/<app>/.
    let single = apps.len() == 1;
    let mut out = Vec::new();
    for (app, _) in &apps {
        let id = bulkhead_model::AppId::parse(app).map_err(|e| fail(&e))?;
        let base = if single {
            String::new()
        } else {
            format!("/apps/{app}")
        };
        let tenants: Vec<Value> = registry::tenants(&**client, &id)
            .await
            .map_err(|e| fail(&e))?
            .iter()
            .map(|t| {
                let t_id = t.id.as_str();
                json!({
                    "id": t_id,
                    "isolation": t.isolation.as_str(),
                    "status": t.status.as_str(),
                    "front_end": format!("{base}/t/{t_id}/app/"),
                    "api": format!("{base}/t/{t_id}/api/"),
                    "openapi": format!("{base}/t/{t_id}/openapi.json"),
                    "sign_in": format!("/realms/{t_id}/.well-known/openid-configuration"),
                })
            })
            .collect();
        out.push(json!({"app": app, "tenants": tenants}));
    }
    let demo: Vec<Value> = if example {
        crate::demo::TENANTS
            .iter()
            .flat_map(|(tenant, _)| {
                [("alice", "agent"), ("bob", "customer")].map(|(user, role)| {
                    json!({
                        "tenant": tenant,
                        "user": user,
                        "password": crate::demo::demo_password(tenant, user),
                        "role": role,
                    })
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(json!({
        "bulkhead": "up",
        "apps": out,
        "demo_users": demo,
        "token": "/realms/<tenant>/protocol/openid-connect/token",
        "health": "/healthz",
        "ready": "/readyz",
        "metrics": "/metrics",
    }))
}

fn text(v: &Value) -> String {
    htmlescape::encode_minimal(v.as_str().unwrap_or_default())
}

fn link(v: &Value) -> String {
    // Minimal escaping covers a double-quoted attribute too (`"` and `'` are escaped).
    let href = htmlescape::encode_minimal(v.as_str().unwrap_or_default());
    format!("<a href=\"{href}\">{}</a>", text(v))
}

/// The index as a page: plain HTML, no script, readable without styles.
fn render(index: &Value) -> String {
    let mut body = String::new();
    let mode = index["bulkhead"].as_str().unwrap_or_default();
    let _ = write!(
        body,
        "<h1>Bulkhead is running</h1><p>Started with <code>bulkhead {}</code>.</p>",
        htmlescape::encode_minimal(mode)
    );
    if let Some(apps) = index["apps"].as_array() {
        for app in apps {
            let _ = write!(
                body,
                "<h2>App <code>{}</code></h2><table><thead><tr><th scope=\"col\">Tenant</th><th scope=\"col\">Isolation</th><th scope=\"col\">Status</th><th scope=\"col\">Front-end</th><th scope=\"col\">API document</th><th scope=\"col\">Sign-in (OpenID discovery)</th></tr></thead><tbody>",
                text(&app["app"])
            );
            for t in app["tenants"].as_array().into_iter().flatten() {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    text(&t["id"]),
                    text(&t["isolation"]),
                    text(&t["status"]),
                    link(&t["front_end"]),
                    link(&t["openapi"]),
                    link(&t["sign_in"]),
                );
            }
            body.push_str("</tbody></table>");
        }
        if apps.is_empty() {
            body.push_str("<p>No app is registered yet: <code>bulkhead app create -m manifest.yaml</code>.</p>");
        }
    } else if let Some(apps) = index["apps"].as_str() {
        let _ = write!(
            body,
            "<p>Apps are reached {}.</p>",
            htmlescape::encode_minimal(apps)
        );
    }
    if let Some(users) = index["demo_users"].as_array().filter(|u| !u.is_empty()) {
        body.push_str("<h2>Demo users</h2><table><thead><tr><th scope=\"col\">Tenant</th><th scope=\"col\">User</th><th scope=\"col\">Password</th><th scope=\"col\">Role</th></tr></thead><tbody>");
        for u in users {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                text(&u["tenant"]),
                text(&u["user"]),
                text(&u["password"]),
                text(&u["role"]),
            );
        }
        body.push_str("</tbody></table><p>A token: <code>curl -s &lt;this server&gt;/realms/acme/protocol/openid-connect/token -d grant_type=password -d client_id=helpdesk -d username=alice -d password=…</code></p>");
    }
    body.push_str("<h2>Operations</h2><ul>");
    for (key, what) in [
        ("health", "liveness"),
        ("ready", "readiness"),
        ("metrics", "Prometheus metrics"),
    ] {
        if index[key].is_string() {
            let _ = write!(body, "<li>{} — {what}</li>", link(&index[key]));
        }
    }
    body.push_str("</ul>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Bulkhead</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:.25rem .5rem;text-align:left}}</style></head><body><main>{body}</main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_on_the_page() {
        let index = json!({
            "bulkhead": "up",
            "apps": [{"app": "<b>x</b>", "tenants": [{
                "id": "a&b", "isolation": "row", "status": "active",
                "front_end": "/t/\"x\"/app/", "openapi": "/o", "sign_in": "/s"
            }]}],
            "demo_users": [],
            "health": "/healthz",
        });
        let page = render(&index);
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"), "{page}");
        assert!(page.contains("a&amp;b"), "{page}");
        assert!(!page.contains("<b>x</b>"), "{page}");
        assert!(!page.contains("href=\"/t/\"x\""), "{page}");
    }

    #[test]
    fn the_production_page_names_no_app_or_tenant() {
        let page = render(&json!({
            "bulkhead": "serve",
            "apps": "under /apps/<app>/ or the hosts routed to them (serve.hosts)",
            "health": "/healthz",
            "ready": "/readyz",
        }));
        assert!(page.contains("Bulkhead is running"), "{page}");
        assert!(!page.contains("<table>"), "{page}");
    }
}
