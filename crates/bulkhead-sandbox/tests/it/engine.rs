//! The engine on its own, with a host that answers from memory: fresh contexts, limits,
//! refused imports and the checker. The worker-level tests (real tenants, real PostgreSQL,
//! over HTTP) are in `bulkhead-cli/tests/it/functions.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulkhead_model::ErrorCode;
use bulkhead_model::bundle::Bundle;
use bulkhead_model::manifest::{FunctionLimits, FunctionRef};
use bulkhead_sandbox::{Caller, Engine, Host, HostError, Invocation, Program};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Memory {
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Host for Memory {
    fn call(&mut self, op: &str, args: Value, _deadline: Instant) -> Result<Value, HostError> {
        self.calls
            .lock()
            .unwrap()
            .push((op.to_owned(), args.clone()));
        match op {
            "storage.get" => Ok(json!({"seen": args["key"]})),
            "db.get" if args["id"] == "missing" => {
                Err(HostError::new(ErrorCode::NotFound, "no such ticket"))
            }
            _ => Ok(json!({"op": op, "args": args})),
        }
    }
}

const MANIFEST: &str = "app: demo\nentities:\n  ticket:\n    fields:\n      title: text\n";

fn bundle(modules: &[(&str, &str)]) -> Bundle {
    let mut files = BTreeMap::new();
    files.insert("manifest.yaml".to_owned(), MANIFEST.as_bytes().to_vec());
    for (p, s) in modules {
        files.insert((*p).to_owned(), s.as_bytes().to_vec());
    }
    Bundle::new(files).unwrap()
}

fn program(modules: &[(&str, &str)], limits: FunctionLimits) -> Arc<Program> {
    Arc::new(Program::new(&bundle(modules), limits))
}

fn call(export: &str) -> Invocation {
    Invocation {
        function: FunctionRef::parse(&format!("main.{export}")).unwrap(),
        request: json!({"method": "GET", "path": "/x", "params": {}, "query": {}, "body": null}),
        caller: Caller {
            id: Some("u1".into()),
            roles: vec!["agent".into()],
        },
    }
}

async fn run(
    engine: &Engine,
    p: &Arc<Program>,
    export: &str,
) -> Result<bulkhead_sandbox::Answer, bulkhead_sandbox::Failure> {
    engine
        .invoke(p.clone(), call(export), Box::new(Memory::default()))
        .await
}

#[tokio::test]
async fn sandbox_functions_answer_through_the_host_and_globals_do_not_survive() {
    let engine = Engine::new(1).unwrap();
    let p = program(
        &[
            (
                "functions/main.js",
                r#"
import { db, storage, files, http, search, flags, config, log, user, respond } from "bulkhead";
import api from "bulkhead";
import { twice } from "./lib/util.js";
export function kinds() { return [db, storage, files, http, search, flags, config, log, user, respond].map((x) => typeof x).concat([Object.keys(api).length]); }
export async function get(req) {
  const t = await db.get("ticket", "t1");
  const s = await storage.get("k");
  return { t, s, user: user.id, roles: user.roles, n: twice(2), path: req.path };
}
export function leave() { globalThis.leftover = "secret"; Object.prototype.polluted = 1; return 1; }
export function look() { return { leftover: typeof globalThis.leftover, polluted: ({}).polluted === undefined, api: typeof globalThis.__bulkhead_api }; }
export function created() { return respond(201, { ok: true }, { "x-a": "b" }); }
export async function missing() { return await db.get("ticket", "missing"); }
export function throws() { null.x; }
"#,
            ),
            (
                "functions/lib/util.js",
                "export const twice = (n) => n * 2;",
            ),
        ],
        FunctionLimits::default(),
    );
    let a = run(&engine, &p, "get").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["t"]["op"], "db.get");
    assert_eq!(a.body["t"]["args"]["id"], "t1");
    assert_eq!(a.body["s"]["seen"], "k");
    assert_eq!(a.body["user"], "u1");
    assert_eq!(a.body["n"], 4);
    assert_eq!(a.body["path"], "/x");
    let kinds = run(&engine, &p, "kinds").await.unwrap();
    assert_eq!(
        kinds.body,
        json!([
            "object", "object", "object", "object", "object", "object", "object", "object",
            "object", "function", 10
        ])
    );
    run(&engine, &p, "leave").await.unwrap();
    let look = run(&engine, &p, "look").await.unwrap();
    assert_eq!(
        look.body,
        json!({"leftover": "undefined", "polluted": true, "api": "undefined"})
    );
    let c = run(&engine, &p, "created").await.unwrap();
    assert_eq!(c.status, 201);
    assert_eq!(c.headers, vec![("x-a".to_owned(), "b".to_owned())]);
    let m = run(&engine, &p, "missing").await.unwrap_err();
    assert_eq!(m.code, ErrorCode::NotFound);
    let t = run(&engine, &p, "throws").await.unwrap_err();
    assert_eq!(t.code, ErrorCode::FunctionFailed);
    assert!(t.stack.unwrap().contains("functions/main.js"));
    let n = run(&engine, &p, "nothing").await.unwrap_err();
    assert_eq!(n.code, ErrorCode::FunctionNotFound);
}

#[tokio::test]
async fn sandbox_limits_end_the_invocation_with_their_code_and_the_next_one_runs() {
    let engine = Engine::new(1).unwrap();
    let limits = FunctionLimits {
        memory_mb: 32,
        time_ms: 300,
        host_calls: 5,
        promises: 1000,
        output_kb: 64,
        ..FunctionLimits::default()
    };
    let p = program(
        &[(
            "functions/main.js",
            r#"
import { storage } from "bulkhead";
export function spin() { for (;;) {} }
export async function spinLater() { await null; for (;;) {} }
export function deep() { const f = (n) => f(n + 1) + 1; return f(0); }
export function big() { const keep = []; for (;;) keep.push(new Array(100000).fill(7)); }
export function gib() { return "x".repeat(1024 * 1024 * 1024).length; }
export function storm() { for (let i = 0; i < 1e7; i++) Promise.resolve(i).then(() => {}); return 1; }
export function huge() { return "y".repeat(200 * 1024); }
export async function chatty() { for (let i = 0; i < 10; i++) await storage.get("k" + i); }
export function fine() { return "ok"; }
"#,
        )],
        limits,
    );
    for (export, code) in [
        ("spin", ErrorCode::LimitTime),
        ("spinLater", ErrorCode::LimitTime),
        ("deep", ErrorCode::LimitStack),
        ("big", ErrorCode::LimitMemory),
        ("gib", ErrorCode::LimitMemory),
        ("storm", ErrorCode::LimitPromises),
        ("huge", ErrorCode::LimitOutput),
        ("chatty", ErrorCode::LimitHostCalls),
    ] {
        let e = run(&engine, &p, export).await.unwrap_err();
        assert_eq!(e.code, code, "{export}: {e:?}");
        let ok = run(&engine, &p, "fine").await.unwrap();
        assert_eq!(ok.body, "ok", "after {export}");
    }
    let stats = engine.stats();
    assert!(
        stats
            .runtimes_discarded
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8
    );
}

/// Resident memory of this test process (nextest runs each test in its own), bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn sandbox_memory_returns_to_its_baseline_after_limits() {
    let engine = Engine::new(1).unwrap();
    let limits = FunctionLimits {
        memory_mb: 32,
        time_ms: 2000,
        ..FunctionLimits::default()
    };
    let p = program(
        &[(
            "functions/main.js",
            r#"
export function big() { const keep = []; for (;;) keep.push(new Array(100000).fill(7)); }
export function gib() { return "x".repeat(1024 * 1024 * 1024).length; }
export function objects() { const keep = []; for (;;) keep.push({ a: [1, 2, 3], s: "s" + keep.length }); }
export function storm() { for (let i = 0; i < 1e7; i++) Promise.resolve(i).then(() => {}); return 1; }
export function fine() { return "ok"; }
export function nothing() { throw null; }
"#,
        )],
        limits,
    );
    // The allocator, not a guess from the thrown value, says a limit was hit: an app's own
    // `throw null` is its exception (QuickJS's out-of-memory may surface as a thrown null).
    let own = run(&engine, &p, "nothing").await.unwrap_err();
    assert_eq!(own.code, ErrorCode::FunctionFailed, "{own:?}");
    for _ in 0..20 {
        run(&engine, &p, "fine").await.unwrap();
    }
    let baseline = resident_bytes();
    // Each of these reaches its 32 MiB limit (or the promise limit): 40 × 32 MiB held on to
    // would be 1.25 GiB.
    for round in 0..10 {
        for export in ["big", "gib", "objects", "storm"] {
            let e = run(&engine, &p, export).await.unwrap_err();
            assert!(e.code.is_limit(), "{export} in round {round}: {e:?}");
        }
    }
    for _ in 0..20 {
        assert_eq!(run(&engine, &p, "fine").await.unwrap().body, "ok");
    }
    let after = resident_bytes();
    let grown = after.saturating_sub(baseline);
    eprintln!(
        "resident: baseline {} MiB, after 40 limit hits {} MiB",
        baseline >> 20,
        after >> 20
    );
    assert!(
        grown < 48 << 20,
        "resident memory grew by {} MiB (baseline {} MiB)",
        grown >> 20,
        baseline >> 20
    );
}

#[tokio::test]
async fn sandbox_imports_reach_only_bulkhead_and_the_bundle() {
    let engine = Engine::new(1).unwrap();
    let p = program(
        &[
            (
                "functions/main.js",
                r#"
export async function dynamic(req) {
  const out = {};
  for (const name of ["fs", "std", "os", "../manifest.yaml", "./../../etc/passwd", "https://example.com/x.js", "functions/main.js", "./lib.js"]) {
    try { await import(name); out[name] = "loaded"; } catch (e) { out[name] = "refused"; }
  }
  out.globals = ["std", "os", "performance", "require", "process", "fetch", "XMLHttpRequest"].filter((g) => typeof globalThis[g] !== "undefined");
  return out;
}
"#,
            ),
            ("functions/lib.js", "export const x = 1;"),
        ],
        FunctionLimits::default(),
    );
    let a = run(&engine, &p, "dynamic").await.unwrap();
    for refused in [
        "fs",
        "std",
        "os",
        "../manifest.yaml",
        "./../../etc/passwd",
        "https://example.com/x.js",
    ] {
        assert_eq!(a.body[refused], "refused", "{refused}");
    }
    assert_eq!(a.body["functions/main.js"], "loaded");
    assert_eq!(a.body["./lib.js"], "loaded");
    assert_eq!(a.body["globals"], json!([]));
}

#[test]
fn sandbox_checker_lists_every_problem_with_its_place_and_runs_nothing() {
    let manifest = "app: demo\nentities:\n  ticket:\n    fields:\n      title: text\nfunctions:\n  routes:\n    - { method: GET, path: /a, function: main.list }\n    - { method: GET, path: /b, function: main.nope }\n    - { method: GET, path: /c, function: gone.list }\n";
    let mut files = BTreeMap::new();
    files.insert("manifest.yaml".to_owned(), manifest.as_bytes().to_vec());
    files.insert(
        "functions/main.js".to_owned(),
        b"export function list() { return 1; }\nthrow new Error('ran');\n".to_vec(),
    );
    files.insert(
        "functions/other.js".to_owned(),
        b"import fs from \"fs\";\nexport const x = fs;\n".to_vec(),
    );
    files.insert(
        "functions/broken.js".to_owned(),
        b"export function f() {\n  return 1 +;\n}\n".to_vec(),
    );
    let problems = bulkhead_sandbox::check::check(&Bundle::new(files).unwrap()).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.starts_with("functions/broken.js:2:") && p.contains("syntax error")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("functions/other.js:1:16") && p.contains("\"fs\"")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("manifest.yaml:9:") && p.contains("does not export \"nope\"")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|p| p.starts_with("manifest.yaml:10:")
            && p.contains("functions/gone.js is not in the bundle")),
        "{text:#?}"
    );
    assert_eq!(problems.len(), 4, "{text:#?}");

    let good = bundle(&[("functions/main.js", "export function list() { return 1; }")]);
    assert!(bulkhead_sandbox::check::check(&good).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_a_full_pool_answers_unavailable_instead_of_queueing_without_bound() {
    let engine = Engine::new(1).unwrap();
    let limits = FunctionLimits {
        time_ms: 50,
        ..FunctionLimits::default()
    };
    let p = program(
        &[(
            "functions/main.js",
            "export function spin() { for (;;) {} }",
        )],
        limits,
    );
    // One thread, 32 places in the queue: of 40 at once, at least 7 are turned away.
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (engine, p) = (engine.clone(), p.clone());
            tokio::spawn(async move { run(&engine, &p, "spin").await })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for c in calls {
        let code = c.await.unwrap().unwrap_err().code;
        *codes.entry(code.as_str()).or_insert(0) += 1;
    }
    assert!(
        codes.get("unavailable").copied().unwrap_or(0) >= 7,
        "{codes:?}"
    );
    assert_eq!(codes.values().sum::<i32>(), 40);
    assert!(
        codes
            .keys()
            .all(|c| *c == "unavailable" || *c == "limit_time"),
        "{codes:?}"
    );
}

/// Work a function leaves queued when it answers (promise reactions it did not await) runs
/// out inside its own invocation: within its limits, with the platform closed to it, and
/// never in a later invocation (whose host, limits and time are another request's).
#[tokio::test]
async fn sandbox_work_left_after_the_answer_stays_in_its_invocation() {
    let engine = Engine::new(1).unwrap();
    let limits = FunctionLimits {
        time_ms: 300,
        memory_mb: 32,
        ..FunctionLimits::default()
    };
    let p = program(
        &[(
            "functions/main.js",
            r#"
import { db } from "bulkhead";
// Runs `f` a score of reactions later: after the answer has settled.
const later = (f) => { let p = Promise.resolve(); for (let i = 0; i < 20; i++) p = p.then(() => 0); p.then(f); };
export function late() { later(() => db.get("ticket", "late")); return "answered"; }
export function spin() { later(() => { for (;;) {} }); return "answered"; }
export function grow() {
  later(() => { const a = []; for (;;) a.push(new Array(1e5).fill(1)); });
  return "answered";
}
export function weak() { return [typeof WeakRef, typeof FinalizationRegistry]; }
export function fine() { return "fine"; }
"#,
        )],
        limits,
    );
    // A late platform call is refused: the first invocation's host sees only what came before
    // its answer, and the next invocation's host nothing of the first one's.
    let first = Memory::default();
    let answer = engine
        .invoke(p.clone(), call("late"), Box::new(first.clone()))
        .await
        .unwrap();
    assert_eq!(answer.body, "answered");
    let next = Memory::default();
    let answer = engine
        .invoke(p.clone(), call("fine"), Box::new(next.clone()))
        .await
        .unwrap();
    assert_eq!(answer.body, "fine");
    assert!(
        first.calls.lock().unwrap().is_empty(),
        "a call after the answer reached the host"
    );
    assert!(next.calls.lock().unwrap().is_empty());
    assert_eq!(engine.stats().runtimes_discarded.load(Ordering::Relaxed), 0);

    // Left-over work that would spin or grow without bound ends at the invocation's own
    // limits (its runtime is discarded) instead of in the next context's preparation, where
    // no invocation's limits apply.
    for (n, export) in ["spin", "grow"].into_iter().enumerate() {
        let answer = run(&engine, &p, export).await.unwrap();
        assert_eq!(answer.body, "answered");
        assert_eq!(run(&engine, &p, "fine").await.unwrap().body, "fine");
        assert_eq!(
            engine.stats().runtimes_discarded.load(Ordering::Relaxed),
            n as u64 + 1,
            "{export}: left-over work escaped the invocation's limits"
        );
    }
    // Nothing the collector schedules after an invocation can run in a later one.
    assert_eq!(
        run(&engine, &p, "weak").await.unwrap().body,
        json!(["undefined", "undefined"])
    );
}
