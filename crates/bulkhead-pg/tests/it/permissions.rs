//! Permissions per entity and role, enforced inside TenantDb: lists, counts, gets, updates and
//! deletes all obey them.

use bulkhead_model::{ErrorCode, IsolationLevel};
use bulkhead_pg::Filter;
use serde_json::json;

use crate::support::App;

const MANIFEST: &str = r#"app: APP
entities:
  ticket:
    owner: author
    fields:
      title: { type: text, required: true }
      note: text
      status: { type: enum, values: [open, closed], default: open }
    permissions:
      agent: { read: all, create: all, update: all, delete: all }
      customer: { read: own, create: all, update: own, delete: none, hidden: [note], readonly: [status] }
      anonymous: { read: all, hidden: [note] }
"#;

#[tokio::test]
async fn own_scope_sees_only_own_rows_and_gets_404_on_others() {
    let app = App::new(MANIFEST, &[("acme", IsolationLevel::Row)]).await;
    let alice = app.ctx_as("acme", "alice", &["customer"]);
    let bob = app.ctx_as("acme", "bob", &["customer"]);
    let agent = app.ctx_as("acme", "carol", &["agent"]);
    let a1 = alice
        .db()
        .insert("ticket", &json!({"title": "alice 1"}))
        .await
        .unwrap();
    alice
        .db()
        .insert("ticket", &json!({"title": "alice 2"}))
        .await
        .unwrap();
    let b1 = bob
        .db()
        .insert("ticket", &json!({"title": "bob 1"}))
        .await
        .unwrap();
    agent
        .db()
        .update(
            "ticket",
            b1["id"].as_str().unwrap(),
            &json!({"note": "internal"}),
        )
        .await
        .unwrap();

    let page = alice.db().query("ticket").fetch().await.unwrap();
    let titles: Vec<&str> = page
        .records
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["alice 1", "alice 2"]);
    assert_eq!(alice.db().query("ticket").count().await.unwrap(), 2);
    assert_eq!(agent.db().query("ticket").count().await.unwrap(), 3);
    let bid = b1["id"].as_str().unwrap();
    assert_eq!(
        alice.db().get("ticket", bid).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        alice
            .db()
            .update("ticket", bid, &json!({"title": "mine now"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    // Delete is not granted to customers at all.
    assert_eq!(
        alice
            .db()
            .delete("ticket", a1["id"].as_str().unwrap())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
    assert_eq!(
        agent.db().get("ticket", bid).await.unwrap()["title"],
        "bob 1"
    );
    // A role the manifest does not list may do nothing.
    let stranger = app.ctx_as("acme", "eve", &["stranger"]);
    assert_eq!(
        stranger
            .db()
            .query("ticket")
            .count()
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn field_restrictions_hold_on_read_and_write() {
    let app = App::new(MANIFEST, &[("acme", IsolationLevel::Schema)]).await;
    let alice = app.ctx_as("acme", "alice", &["customer"]);
    let agent = app.ctx_as("acme", "carol", &["agent"]);
    let t = alice
        .db()
        .insert("ticket", &json!({"title": "t"}))
        .await
        .unwrap();
    assert!(
        t.get("note").is_none(),
        "hidden field not returned on create: {t}"
    );
    let id = t["id"].as_str().unwrap();
    agent
        .db()
        .update("ticket", id, &json!({"note": "secret"}))
        .await
        .unwrap();
    let seen = alice.db().get("ticket", id).await.unwrap();
    assert!(seen.get("note").is_none(), "{seen}");
    let listed = alice.db().query("ticket").fetch().await.unwrap();
    assert!(listed.records[0].get("note").is_none());
    // Cannot probe a hidden field through filters or ordering.
    let err = alice
        .db()
        .query("ticket")
        .filter(Filter::eq("note", "secret"))
        .count()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownField);
    let err = alice
        .db()
        .query("ticket")
        .order_by("note", bulkhead_pg::Direction::Asc)
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownField);
    // Read-only and hidden fields cannot be written.
    for patch in [json!({"status": "closed"}), json!({"note": "x"})] {
        let err = alice.db().update("ticket", id, &patch).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden, "{patch}");
    }
    let err = alice
        .db()
        .insert("ticket", &json!({"title": "x", "status": "closed"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    // Agents see and write everything.
    assert_eq!(
        agent.db().get("ticket", id).await.unwrap()["note"],
        "secret"
    );
    agent
        .db()
        .update("ticket", id, &json!({"status": "closed"}))
        .await
        .unwrap();
    // Anonymous may read, without the hidden field, and write nothing.
    let anon = app.ctx_as("acme", "", &["anonymous"]);
    let page = anon.db().query("ticket").fetch().await.unwrap();
    assert!(page.records[0].get("note").is_none());
    // Written as JSON text too: the same records, the hidden field left out.
    let text = anon.db().query("ticket").fetch_json().await.unwrap();
    let text = String::from_utf8(text.records).unwrap();
    assert_eq!(text, serde_json::to_string(&page.records).unwrap());
    assert!(!text.contains("\"note\""), "{text}");
    // Read into the caller's own type: the same records, and the hidden field absent, so a type
    // that requires it does not fit and one that allows it sees nothing.
    let typed = anon
        .db()
        .query("ticket")
        .fetch_as::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(typed, page);
    #[derive(serde::Deserialize, Debug)]
    struct Seen {
        title: String,
        status: Status,
        note: Option<String>,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Status {
        Open,
        Closed,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Demands {
        #[allow(dead_code)]
        note: String,
    }
    let seen = anon.db().query("ticket").fetch_as::<Seen>().await.unwrap();
    assert_eq!(seen.records.len(), page.records.len());
    assert!(seen.records.iter().all(|r| r.note.is_none()), "{seen:?}");
    assert_eq!(seen.records[0].title, page.records[0]["title"]);
    assert_eq!(seen.records[0].status, Status::Closed);
    let err = anon.db().get_as::<Demands>("ticket", id).await.unwrap_err();
    assert!(format!("{err}").contains("note"), "{err}");
    let agent_sees = agent.db().get_as::<Demands>("ticket", id).await.unwrap();
    assert_eq!(agent_sees.note, "secret");
    // One record as JSON text: the value's text, for each role.
    for who in [&anon, &agent] {
        let text = String::from_utf8(who.db().get_json("ticket", id).await.unwrap()).unwrap();
        let value = who.db().get("ticket", id).await.unwrap();
        assert_eq!(text, serde_json::to_string(&value).unwrap());
    }
    let text = anon.db().get_json("ticket", id).await.unwrap();
    assert!(!String::from_utf8(text).unwrap().contains("note"));
    assert_eq!(
        anon.db()
            .insert("ticket", &json!({"title": "spam"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
}
