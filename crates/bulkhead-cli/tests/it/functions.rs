//! Mini-app functions over HTTP against the real server and workers of `bulkhead up`: the
//! example bundle for row, schema and database tenants, hostile code in the sandbox, limits,
//! and deploys (checked, versioned, rolled back) while requests keep arriving.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Running, request, workdir};
use crate::up::login;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/helpdesk");

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![];
    if !token.is_empty() {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, text) = request(
        addr,
        method,
        path,
        &headers,
        body.map(|b| ("application/json", b)),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The example's manifest with `functions:` replaced by `routes` (YAML list items).
fn manifest_with(routes: &[&str]) -> String {
    let example = std::fs::read_to_string(Path::new(EXAMPLE).join("manifest.yaml")).unwrap();
    let base = example.split("\nfunctions:").next().unwrap();
    let mut out =
        format!("{base}\nfunctions:\n  limits: {{ memory_mb: 32, time_ms: 1000 }}\n  routes:\n");
    for r in routes {
        out.push_str(&format!("    - {r}\n"));
    }
    out
}

fn write_bundle(dir: &Path, manifest: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("functions")).unwrap();
    std::fs::write(dir.join("manifest.yaml"), manifest).unwrap();
    for (p, text) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn bulkhead(cwd: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("BULKHEAD_DATABASE_URL")
        .output()
        .unwrap()
}

/// Waits until `GET path` answers `want` (the workers reload their configuration every 2 s).
fn wait_for(addr: SocketAddr, path: &str, token: &str, want: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(addr, "GET", path, token, None);
        if status == 200 && &body == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sandbox_the_example_bundle_serves_row_schema_and_database_tenants_each_its_own_data() {
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let tokens: Vec<(&str, String)> = ["acme", "globex", "initech"]
        .iter()
        .map(|t| (*t, login(addr, t, "alice")))
        .collect();
    for (tenant, token) in &tokens {
        let note = format!(r#"{{"text":"the {tenant} team's note"}}"#);
        let (status, body) = call(
            addr,
            "PUT",
            &format!("/t/{tenant}/fn/notes/hello"),
            token,
            Some(&note),
        );
        assert_eq!(status, 201, "{tenant}: {body}");
        let (status, body) = call(
            addr,
            "GET",
            &format!("/t/{tenant}/fn/dashboard"),
            token,
            None,
        );
        assert_eq!(status, 200, "{tenant}: {body}");
        assert_eq!(body["sla_hours"], 48);
    }
    // Each tenant lists its own note only — the same code, three isolation levels (initech
    // through its own worker).
    for (tenant, token) in &tokens {
        let (status, body) = call(addr, "GET", &format!("/t/{tenant}/fn/notes"), token, None);
        assert_eq!(status, 200);
        let notes = body.as_array().unwrap();
        assert_eq!(notes.len(), 1, "{tenant}: {body}");
        assert_eq!(notes[0]["text"], format!("the {tenant} team's note"));
    }
    // Another tenant's token is refused as everywhere else; roles and credentials are checked.
    let acme = &tokens[0].1;
    let (status, _) = call(addr, "GET", "/t/globex/fn/notes", acme, None);
    assert_eq!(status, 403);
    let bob = login(addr, "acme", "bob");
    let (status, body) = call(addr, "GET", "/t/acme/fn/notes", &bob, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = call(addr, "GET", "/t/acme/fn/notes", "", None);
    assert_eq!(status, 401);
    // Per-user storage: bob's preferences are his.
    let (status, _) = call(
        addr,
        "PUT",
        "/t/acme/fn/me/prefs",
        &bob,
        Some(r#"{"theme":"dark"}"#),
    );
    assert_eq!(status, 200);
    let (_, mine) = call(addr, "GET", "/t/acme/fn/me/prefs", &bob, None);
    assert_eq!(mine, json!({"theme": "dark"}));
    let (_, alices) = call(addr, "GET", "/t/acme/fn/me/prefs", acme, None);
    assert_eq!(alices, json!({"theme": "light"}));
    // `anonymous` routes answer callers without credentials on a host that names the tenant,
    // never on a /t/{tenant} path; other routes still want a token there.
    let (status, body) = request(
        addr,
        "GET",
        "/fn/status",
        &[("Host", "acme.localhost")],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"app": "helpdesk", "ok": true})
    );
    let (status, _) = call(addr, "GET", "/t/acme/fn/status", "", None);
    assert_eq!(status, 401, "a path selector is not a host");

    // The public request form: the declared body is checked before the function runs (the
    // field at fault, nothing filed), then the ticket is filed as the route's `intake` service
    // role — an anonymous caller may not create tickets itself — for the host's tenant only.
    let on_acme = [("Host", "acme.localhost")];
    let post = |body: &str| {
        let (status, text) = request(
            addr,
            "POST",
            "/fn/requests",
            &on_acme,
            Some(("application/json", body)),
        );
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        )
    };
    for (body, code, field) in [
        ("{}", "missing_field", "title"),
        (
            r#"{"title":"x","status":"closed"}"#,
            "unknown_field",
            "status",
        ),
        (r#"{"title":7}"#, "wrong_type", "title"),
        (
            r#"{"title":"x","tenant_id":"globex"}"#,
            "unknown_field",
            "tenant_id",
        ),
    ] {
        let (status, answer) = post(body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (_, before) = call(addr, "GET", "/t/acme/api/ticket?limit=200", acme, None);
    let (status, filed) = post(r#"{"title":"the printer is on fire"}"#);
    assert_eq!(status, 201, "{filed}");
    assert_eq!(filed["title"], "the printer is on fire");
    let id = filed["id"].as_str().unwrap();
    let (status, ticket) = call(addr, "GET", &format!("/t/acme/api/ticket/{id}"), acme, None);
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(ticket["status"], "open");
    let (_, after) = call(addr, "GET", "/t/acme/api/ticket?limit=200", acme, None);
    assert_eq!(
        after["records"].as_array().unwrap().len(),
        before["records"].as_array().unwrap().len() + 1,
        "the refused bodies filed nothing"
    );
    let globex = &tokens[1].1;
    let (status, _) = call(
        addr,
        "GET",
        &format!("/t/globex/api/ticket/{id}"),
        globex,
        None,
    );
    assert_eq!(status, 404, "filed at acme, not at globex");
    // Without the service role, the same anonymous caller may not file a ticket.
    let (status, _) = request(
        addr,
        "POST",
        "/api/ticket",
        &on_acme,
        Some(("application/json", r#"{"title":"direct"}"#)),
    );
    assert_eq!(status, 401);
    let (status, _) = request(
        addr,
        "GET",
        "/fn/notes",
        &[("Host", "acme.localhost")],
        None,
    );
    assert_eq!(status, 401);
    let (status, body) = request(addr, "GET", "/app/", &[("Host", "initech.localhost")], None);
    assert_eq!(status, 200);
    assert!(body.contains("Helpdesk dashboard"));

    // The function routes are in the app's OpenAPI document.
    let (_, doc) = call(addr, "GET", "/t/acme/openapi.json", acme, None);
    assert!(
        doc["paths"]["/fn/dashboard"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
    assert_eq!(
        doc["paths"]["/fn/notes/{name}"]["put"]["parameters"][0]["name"],
        "name"
    );
    assert!(doc["paths"]["/fn/status"]["get"]["security"].is_array());
    let form = &doc["paths"]["/fn/requests"]["post"];
    let schema = &form["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["required"], json!(["title"]), "{form}");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["title"]["maxLength"], 200);
    assert_eq!(
        form["responses"]["2XX"]["content"]["application/json"]["schema"]["properties"]["id"]["format"],
        "uuid"
    );
    assert_eq!(form["x-bulkhead-run-as"], "intake");

    // The front-end, per tenant, with its headers.
    for tenant in ["acme", "globex", "initech"] {
        let raw = raw_get(addr, &format!("/t/{tenant}/app/"));
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let head = raw.to_ascii_lowercase();
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{raw}"
        );
        assert!(head.contains("x-content-type-options: nosniff"));
        assert!(head.contains("content-type: text/html"));
        assert!(raw.contains("Helpdesk dashboard"));
    }
    for path in [
        "/t/acme/app/../manifest.yaml",
        "/t/acme/app/%2e%2e/manifest.yaml",
        "/t/acme/app/nope.js",
    ] {
        let raw = raw_get(addr, path);
        assert!(raw.starts_with("HTTP/1.1 404"), "{path}: {raw}");
    }
}

fn raw_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

const HOSTILE: &str = r#"
import * as everything from "bulkhead";
import { db, storage, files, http, search } from "bulkhead";

// Everything reachable from the context, as text: globals, the module, prototypes, sources.
export async function probe() {
  const seen = new Set();
  const out = [];
  function walk(v, depth) {
    if (v === null || v === undefined || depth > 5) return;
    const t = typeof v;
    if (t === "string") { out.push(v); return; }
    if (t !== "object" && t !== "function") { out.push(String(v)); return; }
    if (seen.has(v)) return;
    seen.add(v);
    if (t === "function") { try { out.push(Function.prototype.toString.call(v)); } catch (e) {} }
    for (const k of Reflect.ownKeys(v)) {
      out.push(String(k));
      let d;
      try { d = Object.getOwnPropertyDescriptor(v, k); } catch (e) { continue; }
      if (d && "value" in d) walk(d.value, depth + 1);
      if (d && d.get) { try { walk(d.get.call(v), depth + 1); } catch (e) {} }
    }
    try { walk(Object.getPrototypeOf(v), depth + 1); } catch (e) {}
  }
  walk(globalThis, 0);
  walk(everything, 0);
  try { null.x; } catch (e) { out.push(String(e.stack)); }
  try { await db.get("ticket", "00000000-0000-0000-0000-000000000000"); } catch (e) {
    out.push(String(e.stack), e.message, String(e.code), JSON.stringify(e));
  }
  try { await db.query("ticket").where({ tenant_id: "globex" }).fetch(); } catch (e) { out.push(e.message); }
  return { text: out.join("\n"), items: out.length };
}

export function pollute() {
  Object.prototype.polluted = "yes";
  Array.prototype.map = function () { return ["hijacked"]; };
  JSON.stringify = () => "{\"hijacked\":true}";
  globalThis.leak = "left by an earlier request";
  try { db.get = () => "hijacked"; } catch (e) {}
  try { Object.getPrototypeOf(db.query("ticket")).fetch = () => "hijacked"; } catch (e) {}
  return { ok: true };
}

export async function check() {
  const page = await db.query("ticket").limit(1).fetch();
  return {
    polluted: ({}).polluted === undefined ? null : ({}).polluted,
    leak: typeof globalThis.leak === "undefined" ? null : globalThis.leak,
    map: [1, 2].map((x) => x * 2),
    get: String(db.get).includes("hijacked"),
    fetched: Array.isArray(page.records),
  };
}

export async function spell() {
  for (const k of ["globex:note:x", "../globex/note:x", "t/globex/x", "globex", "GLOBEX", "%2e%2e%2fglobex", "acme/../globex", "tenant_id=globex"]) {
    await storage.set(k, { from: "acme" });
  }
  return (await storage.list("")).map((e) => e.key);
}

export async function keys() {
  return (await storage.list("")).map((e) => e.key);
}

export async function importer() {
  const r = {};
  for (const n of ["fs", "std", "os", "../manifest.yaml", "bulkhead:stop", "http://127.0.0.1/x.js", "./hostile.js"]) {
    try { await import(n); r[n] = "loaded"; } catch (e) { r[n] = "refused"; }
  }
  return r;
}

export async function fetcher() {
  const r = {};
  for (const url of ["http://127.0.0.1:1/", "http://localhost/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.0.0.1/", "file:///etc/passwd", "https://example.com/"]) {
    try { const res = await http.fetch(url); r[url] = "fetched " + res.status; } catch (e) { r[url] = e.code; }
  }
  return r;
}

export async function txThrow() {
  try {
    await db.transaction(async (tx) => {
      await tx.insert("ticket", { title: "rolled back" });
      throw new Error("undo");
    });
  } catch (e) {}
  return await db.count("ticket", { title: "rolled back" });
}
export async function txCommit() {
  const n = await db.transaction(async (tx) => {
    await tx.insert("ticket", { title: "committed" });
    await tx.insert("ticket", { title: "committed" });
    return await tx.count("ticket", { title: "committed" });
  });
  return [n, await db.count("ticket", { title: "committed" })];
}
export async function txAbandon() {
  db.transaction(async (tx) => {
    await tx.insert("ticket", { title: "abandoned" });
    await new Promise(() => {});
  });
  return "left open";
}
export async function countOf(req) { return await db.count("ticket", { title: req.query.title }); }

export async function find(req) {
  return (await search.query(req.query.q)).hits.map((h) => h.record.title);
}

export async function fileOps() {
  await files.put("notes/hello.txt", "hello from a function");
  const refused = {};
  for (const key of ["../globex/notes/hello.txt", "/etc/passwd", "notes/../../x", "globex/../notes/x"]) {
    try { await files.put(key, "x"); refused[key] = "written"; } catch (e) { refused[key] = e.code; }
  }
  return { text: await files.get("notes/hello.txt"), keys: await files.list(), refused };
}
export async function fileList() { return await files.list(); }

export function spin() { for (;;) {} }
export function deep() { const f = (n) => f(n + 1) + 1; return f(0); }
export function gib() { return "x".repeat(1024 * 1024 * 1024).length; }
export function storm() { for (let i = 0; i < 1e7; i++) Promise.resolve(i).then(() => {}); return 1; }
export function huge() { return "y".repeat(2 * 1024 * 1024); }
export function fails() { throw new Error("a deliberate failure in hostile.js"); }
export function fine() { return "fine"; }
export async function across() {
  const rows = await db.crossTenant("ticket", "support case 4711").limit(500).fetch();
  return { tenants: [...new Set(rows.map((r) => r.tenant_id))].sort() };
}
export async function acrossDenied() {
  try {
    await db.crossTenant("customer", "not granted").fetch();
    return "read";
  } catch (e) {
    return e.code;
  }
}
"#;

const HOSTILE_ROUTES: &[&str] = &[
    "{ method: GET, path: /probe, function: hostile.probe }",
    "{ method: POST, path: /pollute, function: hostile.pollute }",
    "{ method: GET, path: /check, function: hostile.check }",
    "{ method: POST, path: /spell, function: hostile.spell }",
    "{ method: GET, path: /keys, function: hostile.keys }",
    "{ method: GET, path: /importer, function: hostile.importer }",
    "{ method: GET, path: /fetcher, function: hostile.fetcher }",
    "{ method: POST, path: /tx-throw, function: hostile.txThrow }",
    "{ method: POST, path: /tx-commit, function: hostile.txCommit }",
    "{ method: POST, path: /tx-abandon, function: hostile.txAbandon }",
    "{ method: GET, path: /count, function: hostile.countOf }",
    "{ method: GET, path: /find, function: hostile.find }",
    "{ method: POST, path: /files, function: hostile.fileOps }",
    "{ method: GET, path: /files, function: hostile.fileList }",
    "{ method: GET, path: /spin, function: hostile.spin }",
    "{ method: GET, path: /deep, function: hostile.deep }",
    "{ method: GET, path: /gib, function: hostile.gib }",
    "{ method: GET, path: /storm, function: hostile.storm }",
    "{ method: GET, path: /huge, function: hostile.huge }",
    "{ method: GET, path: /fails, function: hostile.fails }",
    "{ method: GET, path: /fine, function: hostile.fine }",
    "{ method: GET, path: /across, function: hostile.across, roles: [agent] }",
    "{ method: GET, path: /across-denied, function: hostile.acrossDenied }",
];

#[test]
fn sandbox_hostile_functions_find_no_other_tenant_and_their_limits_leave_the_worker_serving() {
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let bundle = cwd.path().join("hostile");
    write_bundle(
        &bundle,
        &manifest_with(HOSTILE_ROUTES),
        &[("functions/hostile.js", HOSTILE)],
    );
    let out = bulkhead(cwd.path(), &["app", "deploy", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme = login(addr, "acme", "alice");
    let globex = login(addr, "globex", "alice");
    wait_for(addr, "/t/acme/fn/fine", &acme, &json!("fine"));

    // The one explicit escape, from a function: a read across tenants of an entity the
    // manifest grants (`cross_tenant_reads: [ticket]`) sees row and schema tenants, never a
    // database tenant; an entity it does not grant is refused.
    let initech = login(addr, "initech", "alice");
    for (tenant, token) in [("acme", &acme), ("globex", &globex), ("initech", &initech)] {
        let (status, body) = call(
            addr,
            "POST",
            &format!("/t/{tenant}/api/ticket"),
            token,
            Some(r#"{"title":"a ticket to read across"}"#),
        );
        assert_eq!(status, 201, "{tenant}: {body}");
    }
    let (status, body) = call(addr, "GET", "/t/acme/fn/across", &acme, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenants"], json!(["acme", "globex"]), "{body}");
    let (status, body) = call(addr, "GET", "/t/acme/fn/across-denied", &acme, None);
    assert_eq!((status, body), (200, json!("cross_tenant_denied")));

    // Nothing reachable from inside names a tenant: no global, prototype, stack, error or
    // module internal carries the tenant id, and a filter on tenant_id is refused.
    for (tenant, token) in [("acme", &acme), ("globex", &globex)] {
        let (status, body) = call(addr, "GET", &format!("/t/{tenant}/fn/probe"), token, None);
        assert_eq!(status, 200, "{body}");
        let text = body["text"].as_str().unwrap();
        assert!(
            body["items"].as_u64().unwrap() > 100,
            "the probe saw too little: {text}"
        );
        for id in ["acme", "globex", "initech"] {
            assert!(
                !text.contains(id),
                "{tenant}'s function found {id:?}: {}",
                text.lines()
                    .filter(|l| l.contains(id))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }

    // What one request does to built-ins, the module's objects or globals is gone for the
    // next, of the same tenant or another.
    let (status, _) = call(addr, "POST", "/t/acme/fn/pollute", &acme, None);
    assert_eq!(status, 200);
    let clean =
        json!({"polluted": null, "leak": null, "map": [2, 4], "get": false, "fetched": true});
    for (tenant, token) in [("acme", &acme), ("globex", &globex)] {
        let (status, body) = call(addr, "GET", &format!("/t/{tenant}/fn/check"), token, None);
        assert_eq!((status, &body), (200, &clean), "{tenant}");
    }

    // Storage keys that spell another tenant stay keys of this tenant.
    let (status, keys) = call(addr, "POST", "/t/acme/fn/spell", &acme, None);
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys.as_array().unwrap().len(), 8, "{keys}");
    let (_, theirs) = call(addr, "GET", "/t/globex/fn/keys", &globex, None);
    assert_eq!(theirs, json!([]), "globex sees acme's keys");
    let initech = login(addr, "initech", "alice");
    let (_, theirs) = call(addr, "GET", "/t/initech/fn/keys", &initech, None);
    assert_eq!(theirs, json!([]));

    // Imports reach only the bundle and the platform's module.
    let (_, imports) = call(addr, "GET", "/t/acme/fn/importer", &acme, None);
    for refused in [
        "fs",
        "std",
        "os",
        "../manifest.yaml",
        "bulkhead:stop",
        "http://127.0.0.1/x.js",
    ] {
        assert_eq!(imports[refused], "refused", "{refused}: {imports}");
    }
    assert_eq!(imports["./hostile.js"], "loaded");

    // db.transaction: all or nothing; one left open when the invocation ends writes nothing.
    let (status, body) = call(addr, "POST", "/t/acme/fn/tx-throw", &acme, None);
    assert_eq!((status, &body), (200, &json!(0)));
    let (status, body) = call(addr, "POST", "/t/acme/fn/tx-commit", &acme, None);
    assert_eq!((status, &body), (200, &json!([2, 2])));
    let (status, _) = call(addr, "POST", "/t/acme/fn/tx-abandon", &acme, None);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let (_, n) = call(addr, "GET", "/t/acme/fn/count?title=abandoned", &acme, None);
    assert_eq!(n, json!(0));
    let (_, n) = call(
        addr,
        "GET",
        "/t/globex/fn/count?title=committed",
        &globex,
        None,
    );
    assert_eq!(n, json!(0), "acme's committed rows are not globex's");

    // search.query sees the resolved tenant's index only.
    let (status, _) = call(
        addr,
        "POST",
        "/t/acme/api/ticket",
        &acme,
        Some(r#"{"title":"printer on fire"}"#),
    );
    assert_eq!(status, 201);
    wait_for(
        addr,
        "/t/acme/fn/find?q=printer",
        &acme,
        &json!(["printer on fire"]),
    );
    let (_, found) = call(addr, "GET", "/t/globex/fn/find?q=printer", &globex, None);
    assert_eq!(found, json!([]));

    // files: the tenant's own prefix; keys that climb out are refused.
    let (status, body) = call(addr, "POST", "/t/acme/fn/files", &acme, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], "hello from a function");
    assert_eq!(body["keys"], json!(["notes/hello.txt"]));
    for (key, code) in body["refused"].as_object().unwrap() {
        assert_eq!(
            code, "bad_query",
            "{key}: refused by the key rules, before any I/O"
        );
    }
    let (_, theirs) = call(addr, "GET", "/t/globex/fn/files", &globex, None);
    assert_eq!(theirs, json!([]));

    // Outbound HTTP goes through the tenant's allow-list (deny by default): loopback, the
    // metadata address, private networks, other schemes and unlisted hosts are refused.
    let (_, fetched) = call(addr, "GET", "/t/acme/fn/fetcher", &acme, None);
    for (url, code) in fetched.as_object().unwrap() {
        assert!(
            code == "forbidden" || code == "bad_request",
            "{url} was not refused: {code}"
        );
    }
    assert_eq!(fetched.as_object().unwrap().len(), 7, "{fetched}");

    // Limits: each ends its invocation with its code; the worker answers the next request.
    for (path, status, code) in [
        ("spin", 504, "limit_time"),
        ("deep", 500, "limit_stack"),
        ("gib", 500, "limit_memory"),
        ("storm", 500, "limit_promises"),
        ("huge", 500, "limit_output"),
    ] {
        let (got, body) = call(addr, "GET", &format!("/t/acme/fn/{path}"), &acme, None);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        let (got, body) = call(addr, "GET", "/t/globex/fn/fine", &globex, None);
        assert_eq!((got, &body), (200, &json!("fine")), "after {path}");
    }

    // An exception: an opaque 500 with the request id; the log has the JavaScript stack.
    let (status, body) = call(addr, "GET", "/t/acme/fn/fails", &acme, None);
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "function_failed");
    assert!(!body.to_string().contains("deliberate"), "{body}");
    let id = body["error"]["request_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = up
            .lines_with(&id)
            .into_iter()
            .filter(|l| l.contains("deliberate"))
            .collect();
        if !lines.is_empty() {
            assert_eq!(lines.len(), 1, "said once: {lines:?}");
            let line = &lines[0];
            assert!(line.contains("request failed"), "{line}");
            assert!(line.contains("function hostile.fails"), "{line}");
            assert!(line.contains("functions/hostile.js"), "the stack: {line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the stack for {id}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sandbox_deploys_are_checked_versioned_and_rolled_back_while_requests_keep_succeeding() {
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));
    let acme = login(addr, "acme", "alice");
    let routes = &["{ method: GET, path: /version, function: version.show }"];

    // A broken bundle: every problem listed with its place, nothing stored or activated.
    let broken = cwd.path().join("broken");
    write_bundle(
        &broken,
        &format!(
            "{}    - {{ method: GET, path: /gone, function: gone.show }}\n    - {{ method: GET, path: /nope, function: version.nope }}\n",
            manifest_with(routes)
        ),
        &[
            (
                "functions/version.js",
                "import fs from \"fs\";\nexport function show() { return 1; }\n",
            ),
            (
                "functions/syntax.js",
                "export function f() {\n  return 1 +;\n}\n",
            ),
        ],
    );
    let out = bulkhead(cwd.path(), &["app", "deploy", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "functions/syntax.js:2:",
        "functions/version.js:1:16: import \"fs\"",
        "functions/gone.js is not in the bundle",
        "nothing was stored or activated",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    let versions = |cwd: &Path| -> Vec<Value> {
        let out = bulkhead(cwd, &["app", "versions", "helpdesk", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(versions(cwd.path()).len(), 1, "only the example's version");

    // Two good versions, deployed and rolled back while requests keep arriving (a third,
    // below, carries a front-end file larger than one vault entry may hold — OpenBao raft:
    // 1 MiB — so its bundle reaches the workers in pieces).
    let big: String = (0..60_000)
        .map(|i| format!("line {i:07} of a big front-end file\n"))
        .collect();
    assert!(big.len() > 2 * 1024 * 1024);
    let deploy = |n: u32| {
        let dir = cwd.path().join(format!("v{n}"));
        let slow_routes = [
            routes[0],
            "{ method: GET, path: /slow, function: version.slow }",
        ];
        let version = format!(
            "export function show() {{ return {n}; }}\n\
             export function slow() {{ const end = Date.now() + 8000; while (Date.now() < end) {{}} return {n}; }}\n"
        );
        let mut files = vec![("functions/version.js", version.as_str())];
        if n == 3 {
            files.push(("public/big.txt", big.as_str()));
        }
        write_bundle(
            &dir,
            &manifest_with(&slow_routes).replace("time_ms: 1000", "time_ms: 15000"),
            &files,
        );
        let out = bulkhead(cwd.path(), &["app", "deploy", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    deploy(1);
    wait_for(addr, "/t/acme/fn/version", &acme, &json!(1));
    let hammer = {
        let token = acme.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..1000 {
                let (status, body) = call(addr, "GET", "/t/acme/fn/version", &token, None);
                assert_eq!(status, 200, "a request failed during an activation: {body}");
                *seen.entry(body.to_string()).or_insert(0) += 1;
            }
            seen
        })
    };
    // A request that started on version 1 finishes on it, while version 2 takes over.
    let slow = {
        let token = acme.clone();
        std::thread::spawn(move || call(addr, "GET", "/t/acme/fn/slow", &token, None))
    };
    std::thread::sleep(Duration::from_millis(300));
    deploy(2);
    wait_for(addr, "/t/acme/fn/version", &acme, &json!(2));
    assert!(
        !slow.is_finished(),
        "version 2 should be active while the slow request still runs"
    );
    let (status, answered) = slow.join().unwrap();
    // A database tenant's own worker switches too (its space gets the bundle's copy).
    let initech = login(addr, "initech", "alice");
    wait_for(addr, "/t/initech/fn/version", &initech, &json!(2));
    assert_eq!(
        (status, answered),
        (200, json!(1)),
        "the in-flight request changed version"
    );
    let listed = versions(cwd.path());
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["active"], true);
    let v2_of_1 = listed[1]["version"].as_i64().unwrap();
    let out = bulkhead(
        cwd.path(),
        &["app", "rollback", "helpdesk", "--to", &v2_of_1.to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(addr, "/t/acme/fn/version", &acme, &json!(1));
    wait_for(addr, "/t/initech/fn/version", &initech, &json!(1));
    let seen = hammer.join().unwrap();
    assert_eq!(seen.values().sum::<i32>(), 1000);
    // Redeploying the same content reuses its version.
    deploy(2);
    assert_eq!(versions(cwd.path()).len(), 3);
    // The pieces came together again: in the app's worker and in the database tenant's own
    // worker, whose vault space got its copy piece by piece.
    deploy(3);
    wait_for(addr, "/t/acme/fn/version", &acme, &json!(3));
    wait_for(addr, "/t/initech/fn/version", &initech, &json!(3));
    for tenant in ["acme", "initech"] {
        let (status, text) = request(addr, "GET", &format!("/t/{tenant}/app/big.txt"), &[], None);
        assert_eq!(status, 200, "{tenant}");
        assert!(
            text == big,
            "{tenant}: {} bytes instead of {}",
            text.len(),
            big.len()
        );
    }
    // Each deploy and rollback is in the audit log.
    let out = bulkhead(cwd.path(), &["audit", "list", "--json"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("app.deploy") && audit.contains("app.rollback"),
        "{audit}"
    );
}
