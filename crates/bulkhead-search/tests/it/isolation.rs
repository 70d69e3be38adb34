//! What one tenant's caller can find: only its tenant's rows, only rows it may read, only
//! fields it may see, whatever the query string says.

use bulkhead_model::IsolationLevel::{Database, Row, Schema};
use bulkhead_search::Error;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_same_document_in_two_tenants_never_mixes_and_queries_cannot_widen_the_scope() {
    let app = App::new(&[("alpha", Row), ("bravo", Row), ("silo", Database)]).await;
    let dir = tempfile::tempdir().unwrap();
    let idx = app.indexes(dir.path());
    for t in ["alpha", "bravo", "silo"] {
        let ctx = app.agent(t);
        ctx.db()
            .insert(
                "article",
                &json!({"title": "printer on fire", "body": format!("only in {t}")}),
            )
            .await
            .unwrap();
    }
    // The same row id in both shared-table tenants (set up as the superuser).
    let same = "11111111-2222-3333-4444-555555555555";
    let su = app.superuser().await;
    su.execute(
        "UPDATE article SET id = $1::text::uuid WHERE tenant_id IN ('alpha', 'bravo')",
        &[&same],
    )
    .await
    .unwrap();
    idx.sync_all(false).await;

    let alpha = app.agent("alpha");
    let page = idx.search(&alpha, &req("printer")).await.unwrap();
    assert_eq!(page.hits.len(), 1);
    assert_eq!(page.hits[0].id, same);
    assert_eq!(page.hits[0].record["body"], "only in alpha");
    assert_eq!(page.total, 1);
    assert_eq!(page.facets["article"], 1);
    assert!(
        page.hits[0].highlights["title"].contains("<b>printer</b>"),
        "{:?}",
        page.hits[0].highlights
    );
    // Another tenant's words find nothing, however the query is spelled.
    for q in [
        "bravo",
        "silo",
        "\"only in bravo\"",
        "printer OR bravo",
        "bravo OR silo OR *",
        "article.body:bravo",
        "(bravo)",
        "printer -alpha",
        "",
        "*",
    ] {
        let found = hits(&idx, &alpha, q).await;
        assert!(
            found.iter().all(|(e, id)| e == "article" && id == same),
            "{q:?} found {found:?}"
        );
        let bodies: Vec<String> = idx
            .search(&alpha, &req(q))
            .await
            .unwrap()
            .hits
            .iter()
            .map(|h| h.record["body"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            bodies.iter().all(|b| b == "only in alpha"),
            "{q:?}: {bodies:?}"
        );
    }
    // The scope fields are not searchable by name, nor regular expressions.
    for q in [
        "entity:article",
        "key:article",
        "owner:x",
        "tenant_id:bravo",
        "body:bravo",
        "article.views:0",
        "article.title:/pri.*/",
        "-alpha",
    ] {
        let err = idx.search(&alpha, &req(q)).await.unwrap_err();
        assert!(matches!(err, Error::BadQuery(_)), "{q:?}: {err}");
    }
    // Bravo's and the silo's copies hold their own rows.
    let bravo = idx
        .search(&app.agent("bravo"), &req("printer"))
        .await
        .unwrap();
    assert_eq!(bravo.hits.len(), 1);
    assert_eq!(bravo.hits[0].record["body"], "only in bravo");
    let silo = idx.search(&app.agent("silo"), &req("*")).await.unwrap();
    assert_eq!(silo.hits.len(), 1);
    assert_eq!(silo.hits[0].record["body"], "only in silo");
    // Each tenant's copy is its own directory.
    assert!(idx.tenant_dir(&tid("alpha")).join("meta.json").exists());
    assert_ne!(idx.tenant_dir(&tid("alpha")), idx.tenant_dir(&tid("bravo")));
}

#[tokio::test]
async fn own_readers_find_only_their_rows_and_never_hidden_fields() {
    let app = App::new(&[("acme", Schema)]).await;
    let dir = tempfile::tempdir().unwrap();
    let idx = app.indexes(dir.path());
    let ann = app.ctx_as("acme", "ann", &["customer"]);
    let bob = app.ctx_as("acme", "bob", &["customer"]);
    let agent = app.agent("acme");
    let mine = ann
        .db()
        .insert("ticket", &json!({"title": "broken keyboard"}))
        .await
        .unwrap();
    bob.db()
        .insert("ticket", &json!({"title": "broken mouse"}))
        .await
        .unwrap();
    agent
        .db()
        .update(
            "ticket",
            mine["id"].as_str().unwrap(),
            &json!({"internal_note": "refund suspected fraud"}),
        )
        .await
        .unwrap();
    agent
        .db()
        .insert("article", &json!({"title": "broken things FAQ"}))
        .await
        .unwrap();
    idx.sync_all(false).await;

    let ann_hits = idx.search(&ann, &req("broken")).await.unwrap();
    let mut titles: Vec<&str> = ann_hits.hits.iter().map(|h| title(&h.record)).collect();
    titles.sort();
    assert_eq!(titles, ["broken keyboard", "broken things FAQ"]);
    assert_eq!(
        ann_hits.facets["ticket"], 1,
        "facets count only ann's tickets"
    );
    assert_eq!(ann_hits.total, 2);
    // The hidden field is neither searched nor returned nor highlighted.
    assert!(
        idx.search(&ann, &req("fraud"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    let err = idx
        .search(&ann, &req("ticket.internal_note:fraud"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadQuery(_)), "{err}");
    assert!(
        ann_hits
            .hits
            .iter()
            .all(|h| h.record.get("internal_note").is_none())
    );
    // The agent reads everything.
    let agent_hits = idx.search(&agent, &req("fraud")).await.unwrap();
    assert_eq!(agent_hits.hits.len(), 1);
    assert!(agent_hits.hits[0].highlights["internal_note"].contains("<b>fraud</b>"));
    assert_eq!(hits(&idx, &agent, "broken").await.len(), 3);
    // An entity filter: searchable only; forbidden for a role without read.
    let only = bulkhead_search::SearchRequest {
        entity: Some("ticket".into()),
        ..req("broken")
    };
    assert_eq!(idx.search(&bob, &only).await.unwrap().hits.len(), 1);
    let label = bulkhead_search::SearchRequest {
        entity: Some("label".into()),
        ..req("x")
    };
    assert!(matches!(
        idx.search(&agent, &label).await.unwrap_err(),
        Error::UnknownEntity(_)
    ));
    let stranger = app.ctx_as("acme", "zed", &["visitor"]);
    assert!(matches!(
        idx.search(&stranger, &only).await.unwrap_err(),
        Error::Forbidden(_)
    ));
    assert!(
        idx.search(&stranger, &req("broken"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    // A row whose owner changed is re-checked against the database, not the index.
    let before = idx.search(&ann, &req("keyboard")).await.unwrap();
    assert_eq!(before.hits.len(), 1);
    let su = app.superuser().await;
    su.batch_execute(
        "ALTER TABLE t_acme.ticket DISABLE TRIGGER bulkhead_search_outbox; \
         UPDATE t_acme.ticket SET reporter = 'bob' WHERE title = 'broken keyboard'; \
         ALTER TABLE t_acme.ticket ENABLE TRIGGER bulkhead_search_outbox",
    )
    .await
    .unwrap();
    idx.sync_all(false).await;
    assert!(
        idx.search(&ann, &req("keyboard"))
            .await
            .unwrap()
            .hits
            .is_empty(),
        "the stale index entry says ann; the row says bob"
    );
}

#[tokio::test]
async fn pages_highlights_and_query_errors() {
    let app = App::new(&[("acme", Row)]).await;
    let dir = tempfile::tempdir().unwrap();
    let idx = app.indexes(dir.path());
    let agent = app.agent("acme");
    let rows: Vec<serde_json::Value> = (0..25)
        .map(|i| json!({"title": format!("invoice {i} <script>alert(1)</script>")}))
        .collect();
    agent.db().insert_many("article", &rows).await.unwrap();
    agent
        .db()
        .insert("article", &json!({"title": "unrelated"}))
        .await
        .unwrap();
    idx.sync_all(false).await;

    let mut r = bulkhead_search::SearchRequest {
        limit: Some(10),
        ..req("invoice")
    };
    let mut sizes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let page = idx.search(&agent, &r).await.unwrap();
        assert_eq!(page.total, 25);
        sizes.push(page.hits.len());
        for h in &page.hits {
            assert!(seen.insert(h.id.clone()), "{} twice", h.id);
            let hl = &h.highlights["title"];
            assert!(hl.contains("<b>invoice</b>"), "{hl}");
            assert!(!hl.contains("<script>"), "highlights are escaped: {hl}");
        }
        match page.next_cursor {
            Some(c) => r.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    // Phrases and boolean operators.
    assert_eq!(hits(&idx, &agent, "\"invoice 7\"").await.len(), 1);
    assert_eq!(hits(&idx, &agent, "invoice AND 7").await.len(), 1);
    assert_eq!(hits(&idx, &agent, "invoice OR unrelated").await.len(), 26);
    assert_eq!(hits(&idx, &agent, "article.title:unrelated").await.len(), 1);
    for bad in ["\"unclosed", "title:(", "a AND (b", "article.title:[a TO"] {
        match idx.search(&agent, &req(bad)).await {
            Err(Error::BadQuery(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for cursor in ["x", "-1", "99999999"] {
        let r = bulkhead_search::SearchRequest {
            cursor: Some(cursor.into()),
            ..req("invoice")
        };
        assert!(matches!(
            idx.search(&agent, &r).await,
            Err(Error::BadQuery(_))
        ));
    }
    let r = bulkhead_search::SearchRequest {
        limit: Some(0),
        ..req("invoice")
    };
    assert!(matches!(
        idx.search(&agent, &r).await,
        Err(Error::BadQuery(_))
    ));
}
