//! Hostile input from outside against the example app, as agent, customer and anonymous: every
//! refusal is a 4xx with the JSON error shape — never a 5xx, never a dropped connection — and the
//! service answers the next request normally.

use serde_json::{Value, json};

use crate::rest::{ACME, Stack, stack_with};

fn helpdesk() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/helpdesk/manifest.yaml"
    ))
    .unwrap();
    text.replacen("app: helpdesk", "app: APP", 1)
}

/// Percent-encodes every byte but the unreserved ones.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "\u{0}",
        "a\u{0}b",
        "\u{202e}fdp.exe",
        "e\u{301}\u{301}\u{301}",
        "2026-11-23T10:00:00+99:00",
        "2026-11-23T10:00:00+16:00",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.9999999Z",
        "2026-11-2é10:00:00Z",
        "2026-11-23T1é:00:00Z",
        "2026-02-30",
        "٣٤",
        "1e400",
        "99999999999999999999",
        "NaN",
        "",
        "%_\\",
        "0b6e6c1e-5a4f-4e4b-9c1e-00000000000é",
        "true,\u{0},2026-02-30",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("x".repeat(10_000));
    v
}

const OPS: [&str; 9] = [
    "",
    "[ne]",
    "[lt]",
    "[lte]",
    "[gt]",
    "[gte]",
    "[in]",
    "[contains]",
    "[null]",
];

/// A 4xx must carry `{"error": {"code", "message"}}`; anything else must be a success.
fn assert_no_server_error(what: &str, status: u16, body: &[u8]) {
    assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    if status >= 400 {
        let v: Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| panic!("{what}: {status} without JSON: {body:?}"));
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
    }
}

async fn healthy(s: &Stack, token: &str) {
    let (st, body) = s
        .send("GET", ACME, "/api/announcement", Some(token), &[], None)
        .await;
    assert_eq!(st.as_u16(), 200, "the service still answers: {body}");
}

#[tokio::test]
async fn edge_input_hostile_filter_values_on_every_field_and_operator() {
    let s = stack_with(&helpdesk()).await;
    let agent = s.user_token("acme", "edgar", &["agent"]).await;
    let customer = s.user_token("acme", "carla", &["customer"]).await;
    let manifest =
        bulkhead_model::AppManifest::from_yaml(&helpdesk().replace("APP", "hd"), "m.yaml").unwrap();
    let values = hostile_values();
    let callers = [
        ("agent", Some(agent.as_str())),
        ("customer", Some(&customer)),
        ("anonymous", None),
    ];
    for entity in &manifest.entities {
        let fields = entity
            .fields
            .iter()
            .map(|f| f.name.to_string())
            .chain(["id", "created_at", "updated_at"].map(String::from));
        for field in fields {
            for op in OPS {
                for v in &values {
                    for (who, token) in callers {
                        let path = format!(
                            "/api/{}?{}={}",
                            entity.name,
                            enc(&format!("{field}{op}")),
                            enc(v)
                        );
                        let (st, _, body) = s.raw("GET", ACME, &path, token, &[], Vec::new()).await;
                        let what = format!(
                            "{who} {field}{op}={:?}",
                            v.chars().take(40).collect::<String>()
                        );
                        assert_no_server_error(&what, st.as_u16(), &body);
                    }
                }
            }
            healthy(&s, &agent).await;
        }
    }
}

/// Method, path, headers, body, expected status and code (empty: any code).
type Case<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test]
async fn edge_input_malformed_requests_get_the_json_error_shape() {
    let s = stack_with(&helpdesk()).await;
    let agent = s.user_token("acme", "edgar", &["agent"]).await;
    let tok = Some(agent.as_str());
    let json_ct = [("content-type", "application/json")];
    let cases: Vec<Case> = vec![
        // Invalid UTF-8 (a surrogate's encoding, a lone byte) in the query string and the path.
        (
            "GET",
            "/api/ticket?title=%ED%A0%80".into(),
            vec![],
            vec![],
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/ticket?title%FF=1".into(),
            vec![],
            vec![],
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/ticket/%FF%FE".into(),
            vec![],
            vec![],
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/ticket/not-a-uuid".into(),
            vec![],
            vec![],
            400,
            "wrong_type",
        ),
        (
            "GET",
            "/api/ticket?prio[between]=1".into(),
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/ticket?prio[null]=maybe".into(),
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/ticket?count=yes".into(),
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/ticket?limit=%E2%88%9E".into(),
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/api/ticket?after=%C3%A9%C3%A9".into(),
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "GET",
            "/no/such/route".into(),
            vec![],
            vec![],
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/ticket".into(),
            vec![],
            vec![],
            405,
            "method_not_allowed",
        ),
        // Bodies: wrong content type, not JSON, a lone surrogate escape, too large.
        (
            "POST",
            "/api/ticket".into(),
            vec![("content-type", "text/plain")],
            br#"{"title":"x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/ticket".into(),
            vec![],
            br#"{"title":"x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            b"{not json".to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"\ud800"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            vec![b' '; 2 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"a\u0000b"}"#.to_vec(),
            400,
            "out_of_range",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"t","due":"2026-02-30"}"#.to_vec(),
            400,
            "out_of_range",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"t","prio":1e400}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"t","prio":2147483648}"#.to_vec(),
            400,
            "out_of_range",
        ),
        (
            "POST",
            "/api/ticket".into(),
            json_ct.to_vec(),
            br#"{"title":"t","customer":"0b6e6c1e-5a4f-4e4b-9c1e-00000000000\u00e9"}"#.to_vec(),
            400,
            "wrong_type",
        ),
        (
            "POST",
            "/api/ticket/_bulk".into(),
            json_ct.to_vec(),
            br#"[{"title":"ok"},{"title":"\u0000"}]"#.to_vec(),
            400,
            "out_of_range",
        ),
        (
            "POST",
            "/ofrep/v1/evaluate/flags".into(),
            vec![("content-type", "text/plain")],
            br#"{"context":{}}"#.to_vec(),
            400,
            "",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (st, hdrs, bytes) = s.raw(method, ACME, &path, tok, &headers, body).await;
        let what = format!("{method} {path}");
        assert_eq!(
            st.as_u16(),
            status,
            "{what}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            hdrs.contains_key("x-request-id"),
            "{what}: every answer has a request id"
        );
        let v: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{what}: not JSON"));
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{what}: {v}");
        }
    }
    // Nothing of the refused bulk create was written.
    let (_, list) = s
        .send("GET", ACME, "/api/ticket?title=ok", tok, &[], None)
        .await;
    assert_eq!(list["records"], json!([]), "all or nothing");
    healthy(&s, &agent).await;
}

#[tokio::test]
async fn anonymous_callers_get_only_the_flags_and_settings_granted_to_them() {
    let yaml = helpdesk()
        .replace(
            "max_attachments: { type: number, default: 5 }",
            "max_attachments: { type: number, default: 5, anonymous: true }",
        )
        .replace(
            "settings:\n",
            "settings:\n  brand: { schema: { type: string }, default: Acme, anonymous: true }\n",
        );
    let granted = stack_with(&yaml).await;
    let (st, body) = granted.send("GET", ACME, "/config", None, &[], None).await;
    assert_eq!(st.as_u16(), 200, "{body}");
    assert_eq!(
        body["settings"],
        json!({"brand": "Acme"}),
        "only the granted setting"
    );
    let (st, body) = granted
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags",
            None,
            &[],
            Some("{}".into()),
        )
        .await;
    assert_eq!(st.as_u16(), 200, "{body}");
    let keys: Vec<&str> = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["max_attachments"]);
    let (st, _) = granted
        .send(
            "POST",
            ACME,
            "/ofrep/v1/evaluate/flags/new_editor",
            None,
            &[],
            Some("{}".into()),
        )
        .await;
    assert_eq!(st.as_u16(), 401, "an ungranted flag needs credentials");

    // The example app grants nothing: no credentials, no settings.
    let plain = stack_with(&helpdesk()).await;
    for (method, path) in [
        ("GET", "/config"),
        ("POST", "/ofrep/v1/evaluate/flags"),
        ("POST", "/ofrep/v1/evaluate/flags/new_editor"),
    ] {
        let body = (method == "POST").then(|| "{}".to_owned());
        let (st, v) = plain.send(method, ACME, path, None, &[], body).await;
        assert_eq!(st.as_u16(), 401, "{method} {path}: {v}");
    }
    let agent = plain.user_token("acme", "edgar", &["agent"]).await;
    let (st, body) = plain
        .send("GET", ACME, "/config", Some(&agent), &[], None)
        .await;
    assert_eq!(st.as_u16(), 200);
    assert!(body["settings"]["sla_hours"].is_number(), "{body}");
}

#[tokio::test]
async fn a_reference_to_a_row_the_caller_cannot_read_is_the_same_error_as_a_missing_one() {
    let s = stack_with(&helpdesk()).await;
    let alice = s.user_token("acme", "alicia", &["customer"]).await;
    let bob = s.user_token("acme", "bob", &["customer"]).await;
    let (st, ticket) = s
        .send(
            "POST",
            ACME,
            "/api/ticket",
            Some(&alice),
            &[],
            Some(json!({"title": "alicia's"}).to_string()),
        )
        .await;
    assert_eq!(st.as_u16(), 201, "{ticket}");
    let theirs = ticket["id"].as_str().unwrap();
    let random = "0b6e6c1e-5a4f-4e4b-9c1e-000000000000";
    let mut answers = Vec::new();
    for id in [theirs, random] {
        let body = json!({"ticket": id, "text": "hello"}).to_string();
        let (st, v) = s
            .send("POST", ACME, "/api/comment", Some(&bob), &[], Some(body))
            .await;
        answers.push((st.as_u16(), v));
    }
    assert_eq!(answers[0].0, 409, "{:?}", answers[0]);
    assert_eq!(
        answers[0], answers[1],
        "no existence oracle: the same answer for both"
    );
    // Alicia may comment on her own ticket; Bob cannot move his comment onto hers.
    let body = json!({"ticket": theirs, "text": "mine"}).to_string();
    let (st, _) = s
        .send("POST", ACME, "/api/comment", Some(&alice), &[], Some(body))
        .await;
    assert_eq!(st.as_u16(), 201);
    let (_, own) = s
        .send(
            "POST",
            ACME,
            "/api/comment",
            Some(&bob),
            &[],
            Some(json!({"text": "loose"}).to_string()),
        )
        .await;
    let path = format!("/api/comment/{}", own["id"].as_str().unwrap());
    let (st, v) = s
        .send(
            "PATCH",
            ACME,
            &path,
            Some(&bob),
            &[],
            Some(json!({"ticket": theirs}).to_string()),
        )
        .await;
    assert_eq!(st.as_u16(), 409, "{v}");
    assert_eq!(v, answers[1].1, "the same answer as a missing row");
}
