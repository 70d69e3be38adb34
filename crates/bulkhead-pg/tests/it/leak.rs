//! A property-based state machine: random inserts, updates, deletes, gets, queries and counts
//! by eight tenants over all three isolation levels, each checked against an in-memory model.
//! Operations aim at other tenants' rows on purpose (ids taken from other tenants' models,
//! references to other tenants' rows); no tenant may ever see, count, change or delete them.
//!
//! Cases: `BULKHEAD_LEAK_CASES` (default 16); `cargo test leak` runs it.

use std::collections::BTreeSet;

use bulkhead_model::{ErrorCode, IsolationLevel};
use bulkhead_pg::Filter;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::support::App;

const MANIFEST: &str = r#"app: APP
entities:
  box:
    fields:
      label: { type: text, required: true }
  item:
    fields:
      n: { type: int, required: true }
      box: { type: ref, entity: box }
"#;

const LEVELS: [IsolationLevel; 8] = [
    IsolationLevel::Row,
    IsolationLevel::Row,
    IsolationLevel::Row,
    IsolationLevel::Schema,
    IsolationLevel::Schema,
    IsolationLevel::Schema,
    IsolationLevel::Database,
    IsolationLevel::Database,
];

fn tenant(i: usize) -> String {
    format!("t{i}")
}

#[derive(Debug, Clone)]
enum Op {
    InsertBox {
        t: usize,
    },
    InsertItem {
        t: usize,
        n: i32,
        box_of: Option<(usize, usize)>,
    },
    Update {
        t: usize,
        target: (usize, usize),
        n: i32,
    },
    Delete {
        t: usize,
        target: (usize, usize),
    },
    Get {
        t: usize,
        target: (usize, usize),
    },
    Query {
        t: usize,
        below: i32,
    },
    Count {
        t: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..8usize;
    let target = (0..8usize, 0..16usize);
    prop_oneof![
        1 => t.clone().prop_map(|t| Op::InsertBox { t }),
        3 => (t.clone(), 0..100i32, proptest::option::of(target.clone()))
            .prop_map(|(t, n, box_of)| Op::InsertItem { t, n, box_of }),
        2 => (t.clone(), target.clone(), 0..100i32).prop_map(|(t, target, n)| Op::Update { t, target, n }),
        1 => (t.clone(), target.clone()).prop_map(|(t, target)| Op::Delete { t, target }),
        2 => (t.clone(), target).prop_map(|(t, target)| Op::Get { t, target }),
        1 => (t.clone(), 0..100i32).prop_map(|(t, below)| Op::Query { t, below }),
        1 => t.prop_map(|t| Op::Count { t }),
    ]
}

#[derive(Default, Clone)]
struct TenantModel {
    items: Vec<(String, i32)>,
    boxes: Vec<String>,
}

/// A made-up id for tenants that have no rows yet (it exists nowhere).
const GHOST: &str = "00000000-0000-4000-8000-00000000dead";

fn pick(list: &[(String, i32)], i: usize) -> Option<&(String, i32)> {
    (!list.is_empty()).then(|| &list[i % list.len()])
}

async fn reset(app: &App) {
    let su = app.superuser(&app.app.database).await;
    let mut tables = vec!["public.item".to_owned(), "public.box".to_owned()];
    for (t, level) in &app.tenants {
        if *level == IsolationLevel::Schema {
            tables.push(format!("\"t_{t}\".item"));
            tables.push(format!("\"t_{t}\".box"));
        }
    }
    su.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await
        .unwrap();
    for (t, level) in &app.tenants {
        if *level == IsolationLevel::Database {
            let c = app.superuser(&app.tenant_db(t.as_str())).await;
            c.batch_execute("TRUNCATE public.item, public.box")
                .await
                .unwrap();
        }
    }
}

async fn run_case(app: &App, ops: Vec<Op>) -> Result<(), TestCaseError> {
    reset(app).await;
    let mut model = vec![TenantModel::default(); 8];
    for op in ops {
        match op {
            Op::InsertBox { t } => {
                let r = app
                    .ctx(&tenant(t))
                    .db()
                    .insert("box", &json!({"label": "b"}))
                    .await;
                let r = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                model[t]
                    .boxes
                    .push(r["id"].as_str().unwrap_or_default().to_owned());
            }
            Op::InsertItem { t, n, box_of } => {
                let target_box = box_of.and_then(|(bt, i)| {
                    let boxes = &model[bt].boxes;
                    (!boxes.is_empty()).then(|| (bt, boxes[i % boxes.len()].clone()))
                });
                let mut record = json!({ "n": n });
                if let Some((_, b)) = &target_box {
                    record["box"] = json!(b);
                }
                let r = app.ctx(&tenant(t)).db().insert("item", &record).await;
                match target_box {
                    Some((bt, _)) if bt != t => {
                        let code = r.as_ref().err().map(|e| e.code());
                        prop_assert_eq!(
                            code,
                            Some(ErrorCode::ReferenceNotFound),
                            "{:?} -> {:?}",
                            op,
                            r
                        );
                    }
                    _ => {
                        let r = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                        model[t]
                            .items
                            .push((r["id"].as_str().unwrap_or_default().to_owned(), n));
                    }
                }
            }
            Op::Update {
                t,
                target: (tt, i),
                n,
            } => {
                let id = pick(&model[tt].items, i)
                    .map(|x| x.0.clone())
                    .unwrap_or(GHOST.into());
                let r = app
                    .ctx(&tenant(t))
                    .db()
                    .update("item", &id, &json!({ "n": n }))
                    .await;
                if tt == t && id != GHOST {
                    prop_assert!(r.is_ok(), "{:?} -> {:?}", op, r);
                    if let Some(row) = model[t].items.iter_mut().find(|x| x.0 == id) {
                        row.1 = n;
                    }
                } else {
                    prop_assert_eq!(
                        r.map_err(|e| e.code()).err(),
                        Some(ErrorCode::NotFound),
                        "{:?}",
                        op
                    );
                }
            }
            Op::Delete { t, target: (tt, i) } => {
                let id = pick(&model[tt].items, i)
                    .map(|x| x.0.clone())
                    .unwrap_or(GHOST.into());
                let r = app.ctx(&tenant(t)).db().delete("item", &id).await;
                if tt == t && id != GHOST {
                    prop_assert!(r.is_ok(), "{:?} -> {:?}", op, r);
                    model[t].items.retain(|x| x.0 != id);
                } else {
                    prop_assert_eq!(
                        r.map_err(|e| e.code()).err(),
                        Some(ErrorCode::NotFound),
                        "{:?}",
                        op
                    );
                }
            }
            Op::Get { t, target: (tt, i) } => {
                let found = pick(&model[tt].items, i).cloned();
                let id = found.as_ref().map(|x| x.0.clone()).unwrap_or(GHOST.into());
                let r = app.ctx(&tenant(t)).db().get("item", &id).await;
                match found {
                    Some((_, n)) if tt == t => {
                        let row = r.map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                        prop_assert_eq!(row["n"].as_i64(), Some(i64::from(n)));
                    }
                    _ => prop_assert_eq!(
                        r.map_err(|e| e.code()).err(),
                        Some(ErrorCode::NotFound),
                        "{:?}",
                        op
                    ),
                }
            }
            Op::Query { t, below } => {
                let page = app
                    .ctx(&tenant(t))
                    .db()
                    .query("item")
                    .filter(Filter::lt("n", below))
                    .limit(1000)
                    .fetch()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                let got: BTreeSet<String> = page
                    .records
                    .iter()
                    .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let want: BTreeSet<String> = model[t]
                    .items
                    .iter()
                    .filter(|x| x.1 < below)
                    .map(|x| x.0.clone())
                    .collect();
                prop_assert_eq!(got, want, "{:?}", op);
            }
            Op::Count { t } => {
                let n = app
                    .ctx(&tenant(t))
                    .db()
                    .query("item")
                    .count()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                prop_assert_eq!(
                    n,
                    i64::try_from(model[t].items.len()).unwrap_or(-1),
                    "{:?}",
                    op
                );
            }
        }
    }
    // Finally every tenant's whole view equals its model.
    for (t, m) in model.iter().enumerate() {
        let page = app
            .ctx(&tenant(t))
            .db()
            .query("item")
            .limit(1000)
            .fetch()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got: BTreeSet<(String, i64)> = page
            .records
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    r["n"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        let want: BTreeSet<(String, i64)> = m
            .items
            .iter()
            .map(|(id, n)| (id.clone(), i64::from(*n)))
            .collect();
        prop_assert_eq!(got, want, "final state of tenant {}", t);
    }
    Ok(())
}

#[test]
fn no_tenant_ever_sees_counts_changes_or_deletes_another_tenants_rows_leak() {
    let cases = std::env::var("BULKHEAD_LEAK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tenants: Vec<(String, IsolationLevel)> = LEVELS
        .iter()
        .enumerate()
        .map(|(i, l)| (tenant(i), *l))
        .collect();
    let refs: Vec<(&str, IsolationLevel)> = tenants.iter().map(|(t, l)| (t.as_str(), *l)).collect();
    let app = rt.block_on(App::new(MANIFEST, &refs));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        rt.block_on(run_case(&app, ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
