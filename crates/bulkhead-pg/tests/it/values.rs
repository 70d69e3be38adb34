//! Every value a field's check accepts round-trips through a real PostgreSQL for its column
//! type; every value it rejects is a 400-class error naming the field — never a database error.
//! The same values as filters never reach a database error either. `BULKHEAD_FUZZ_CASES` sets
//! the cases per run (small by default).

use bulkhead_model::{Entity, FieldType, IsolationLevel};
use bulkhead_pg::{Error, Filter, TenantContext};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::support::App;

const VALUES: &str = r#"app: APP
entities:
  v:
    fields:
      t: text
      n: numeric
      d: date
      ts: timestamp
      u: uuid
      j: json
      i: int
      b: bigint
      e: { type: enum, values: [open, "é"] }
      s: { type: text, max_length: 5 }
"#;

fn cases() -> u32 {
    std::env::var("BULKHEAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "\\p{Any}{0,20}",
        "[a\u{0}\u{202e}\u{0301}%_\\\\]{0,12}",
        Just("x".repeat(10_000)),
        Just("e\u{301}\u{301}\u{301}".into()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field and a value for it: mostly near-misses of the field's own syntax, some anything.
fn field_value() -> impl Strategy<Value = (&'static str, Value)> {
    let ts = "[0-9]{4}-[0-9]{2}-[0-3][0-9][Tt X][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{1,8})?(Z|z|[+-][0-2][0-9]:[0-6][0-9]|)";
    prop_oneof![
        hostile_text().prop_map(|s| ("t", Value::from(s))),
        hostile_text().prop_map(|s| ("s", Value::from(s))),
        hostile_text().prop_map(|s| ("e", Value::from(s))),
        "-?[0-9]{1,30}(\\.[0-9]{1,30})?|\\PC{0,10}".prop_map(|s| ("n", Value::from(s))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| ("n", Value::from(f))),
        any::<i64>().prop_map(|n| ("n", Value::from(n))),
        "[0-9]{4}-[0-1][0-9]-[0-3][0-9]|\\PC{0,12}".prop_map(|s| ("d", Value::from(s))),
        ts.prop_map(|s| ("ts", Value::from(s))),
        "\\PC{0,30}".prop_map(|s| ("ts", Value::from(s))),
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\\PC{0,40}"
            .prop_map(|s| ("u", Value::from(s))),
        json_value().prop_map(|v| ("j", v)),
        any::<i64>().prop_map(|n| ("i", Value::from(n))),
        any::<i64>().prop_map(|n| ("b", Value::from(n))),
        any::<u64>().prop_map(|n| ("b", Value::from(n))),
    ]
}

/// The decimal PostgreSQL prints for a decimal string: no leading zeros, no negative zero.
fn numeric_text(s: &str) -> String {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.chars().all(|c| c == '0');
    let sign = if neg && !zero { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

fn instant(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// What the database must give back for an accepted value.
fn assert_round_trip(ty: &FieldType, sent: &Value, got: &Value) -> Result<(), TestCaseError> {
    match (ty, sent) {
        (FieldType::Numeric, Value::String(s)) => {
            let want = numeric_text(s);
            prop_assert_eq!(got.as_str(), Some(want.as_str()))
        }
        (FieldType::Numeric, Value::Number(n)) => {
            let back: f64 = got.as_str().unwrap().parse().unwrap();
            prop_assert_eq!(Some(back), n.as_f64(), "{}", got);
        }
        (FieldType::Timestamp, Value::String(s)) => {
            prop_assert_eq!(instant(got.as_str().unwrap()), instant(s))
        }
        (FieldType::Uuid, Value::String(s)) => {
            let want = s.to_lowercase();
            prop_assert_eq!(got.as_str(), Some(want.as_str()))
        }
        (FieldType::Json, _) => prop_assert!(same_json(got, sent), "{} != {}", got, sent),
        _ => prop_assert_eq!(got, sent),
    }
    Ok(())
}

/// JSON equality as JSON means it: numbers by value (jsonb keeps `1e16` as `10000000000000000`,
/// which serde reads back as an integer), everything else exactly.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

async fn one_case(
    ctx: &TenantContext,
    entity: &Entity,
    field: &str,
    value: Value,
) -> Result<(), TestCaseError> {
    let ty = entity.field(field).unwrap().ty.clone();
    let accepted = ty.check(&value).is_ok();
    let db = ctx.db();
    let written = db.insert("v", &json!({ field: value.clone() })).await;
    match (accepted, written) {
        (true, Ok(row)) => assert_round_trip(&ty, &value, &row[field])?,
        (true, Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "{field}={value}: accepted by the check, refused by the database: {e:?}"
            )));
        }
        (false, Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "{field}={value}: refused by the check but written"
            )));
        }
        (false, Err(e)) => match &e {
            Error::WrongType { field: f, .. } | Error::OutOfRange { field: f, .. } => {
                prop_assert_eq!(f.as_str(), field)
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "{field}={value}: expected a field error, got {other:?}"
                )));
            }
        },
    }
    // Written straight to JSON, a page is byte for byte the text of the records as values.
    let page = db.query("v").limit(3).fetch().await.unwrap();
    let text = db.query("v").limit(3).fetch_json().await.unwrap();
    prop_assert_eq!(
        String::from_utf8(text.records).unwrap(),
        serde_json::to_string(&page.records).unwrap()
    );
    prop_assert_eq!(&text.next_cursor, &page.next_cursor);
    // Read into a type straight from the rows, the same records as the values.
    let typed = db.query("v").limit(3).fetch_as::<Value>().await.unwrap();
    prop_assert_eq!(&typed, &page);
    for record in &page.records {
        let id = record["id"].as_str().unwrap();
        let one = db.get_json("v", id).await.unwrap();
        prop_assert_eq!(
            String::from_utf8(one).unwrap(),
            serde_json::to_string(record).unwrap()
        );
        prop_assert_eq!(&db.get_as::<Value>("v", id).await.unwrap(), record);
    }
    // The same value as every filter operator: a result or a client error, never the database's.
    let mut filters = vec![Filter::Contains(
        field.to_owned(),
        value.as_str().unwrap_or("x").to_owned(),
    )];
    if !matches!(ty, FieldType::Json) && !value.is_null() {
        filters.extend([
            Filter::Eq(field.to_owned(), value.clone()),
            Filter::Ne(field.to_owned(), value.clone()),
            Filter::Gte(field.to_owned(), value.clone()),
            Filter::In(field.to_owned(), vec![value.clone()]),
        ]);
    }
    for f in filters {
        if let Err(e) = db.query("v").filter(f.clone()).fetch().await {
            prop_assert_eq!(e.code().http_status(), 400, "{:?}: {:?}", f, e);
        }
    }
    Ok(())
}

#[test]
fn accepted_values_round_trip_and_rejected_ones_name_the_field() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(App::new(VALUES, &[("acme", IsolationLevel::Row)]));
    let ctx = app.ctx("acme");
    let entity = app.manifest.entity("v").unwrap();
    let mut runner = TestRunner::new(Config::with_cases(cases()));
    runner
        .run(&field_value(), |(field, value)| {
            rt.block_on(one_case(&ctx, entity, field, value))
        })
        .unwrap();
}

#[tokio::test]
async fn values_at_the_edges_of_each_type() {
    let app = App::new(VALUES, &[("acme", IsolationLevel::Row)]).await;
    let ctx = app.ctx("acme");
    let entity = app.manifest.entity("v").unwrap();
    let max_int = "9".repeat(bulkhead_model::values::NUMERIC_MAX_INT_DIGITS);
    let max_frac = format!(
        "0.{}",
        "9".repeat(bulkhead_model::values::NUMERIC_MAX_FRAC_DIGITS)
    );
    let cases = [
        ("n", json!(max_int)),
        ("n", json!(format!("{max_int}9"))),
        ("n", json!(max_frac)),
        ("n", json!(format!("{max_frac}9"))),
        ("ts", json!("0001-01-01T00:00:00Z")),
        ("ts", json!("9999-12-31T23:59:59.999999Z")),
        ("ts", json!("2026-11-23T10:00:00+15:59")),
        ("ts", json!("2026-11-23T10:00:00+16:00")),
        ("ts", json!("2026-11-23T10:00:00+99:00")),
        ("ts", json!("0000-06-01T00:00:00Z")),
        ("d", json!("0001-01-01")),
        ("d", json!("0000-01-01")),
        ("d", json!("2026-02-30")),
        ("j", json!({"k": "nul\u{0}"})),
        ("j", json!({"nul\u{0}": 1})),
        ("t", json!("nul\u{0}")),
        ("i", json!(i64::from(i32::MAX) + 1)),
    ];
    for (field, value) in cases {
        one_case(&ctx, entity, field, value.clone())
            .await
            .unwrap_or_else(|e| panic!("{field}={value}: {e}"));
    }
}

/// A list ordered by a field follows the field's type, not its text: numbers by value (the
/// select list reads them as text, and an ORDER BY naming the output column would sort
/// `"10"` before `"9"`), and pages continued by cursor agree with that order, in a row
/// tenant's shared table and a schema tenant's own (a database tenant's is the row shape).
#[tokio::test]
async fn lists_order_by_the_field_type_and_pages_follow_that_order() {
    let app = App::new(
        VALUES,
        &[
            ("acme", IsolationLevel::Row),
            ("globex", IsolationLevel::Schema),
        ],
    )
    .await;
    let values = ["9", "10", "100", "-1", "2.5", "0.75", "1000"];
    let mut want: Vec<f64> = values.iter().map(|v| v.parse().unwrap()).collect();
    want.sort_by(f64::total_cmp);
    for tenant in ["acme", "globex"] {
        let ctx = app.ctx(tenant);
        let db = ctx.db();
        for v in values {
            db.insert("v", &json!({ "n": v })).await.unwrap();
        }
        for (direction, want) in [
            (bulkhead_pg::Direction::Asc, want.clone()),
            (
                bulkhead_pg::Direction::Desc,
                want.iter().rev().copied().collect(),
            ),
        ] {
            let numbers = |records: &[Value]| -> Vec<f64> {
                records
                    .iter()
                    .map(|r| r["n"].as_str().unwrap().parse().unwrap())
                    .collect()
            };
            let whole = db
                .query("v")
                .order_by("n", direction)
                .fetch()
                .await
                .unwrap();
            assert_eq!(numbers(&whole.records), want, "{tenant} {direction:?}");
            // Two at a time by cursor: the same order, nothing twice, nothing missed.
            let mut paged = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = db.query("v").order_by("n", direction).limit(2);
                if let Some(c) = &after {
                    q = q.after(c);
                }
                let page = q.fetch().await.unwrap();
                paged.extend(numbers(&page.records));
                match page.next_cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            assert_eq!(paged, want, "{tenant} {direction:?} by cursor");
        }
    }
}
