//! Searching a tenant's index for one caller.
//!
//! Scope is structural: the index opened is the resolved tenant's own (its directory), and
//! the caller's query is one clause of a conjunction whose other clause lists the entities the
//! caller may read (and, for `own` readers, their owner term). `OR`, quotes or field syntax in
//! the query string can only narrow that, never widen it. Field syntax may name only fields
//! the caller can see (`entity.field`); every hit is then re-read from the database through the
//! caller's own permissions, and only rows that come back are returned.

use std::collections::{BTreeMap, HashMap};

use bulkhead_model::{Action, Scope};
use bulkhead_pg::search::searchable_entities;
use bulkhead_pg::{Filter, TenantContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::{TantivyDocument, Term};

use crate::{Error, Result, SearchIndexes};

/// Hits per page unless asked otherwise, and the most a page may hold.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// The deepest offset a cursor may reach (deeper pages cost more than they are worth).
pub const MAX_OFFSET: usize = 10_000;
/// Longest accepted query string.
pub const MAX_QUERY_LEN: usize = 1_000;

/// `GET /search?q=…&entity=…&limit=…&cursor=…`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// tantivy query syntax: words, `"phrases"`, `AND`/`OR`/`-`, `entity.field:word`.
    /// Empty or `*` matches every document the caller may read.
    #[serde(default)]
    pub q: String,
    pub entity: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// One page of hits.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub hits: Vec<Hit>,
    /// Matches in the index for this caller's scope (before rows are re-read; a row changed
    /// since the last sync can drop out of a page).
    pub total: usize,
    /// Matches per entity, same scope.
    pub facets: BTreeMap<String, usize>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub entity: String,
    pub id: String,
    pub score: f32,
    /// The row as the caller may read it now.
    pub record: Value,
    /// Field → HTML fragment with matches in `<b>…</b>` (text escaped), for searchable fields
    /// the caller can see and that matched.
    pub highlights: BTreeMap<String, String>,
}

/// What the caller may search in one entity.
struct Searchable {
    entity: String,
    owner: Option<String>,
    fields: Vec<(String, Field)>,
}

impl SearchIndexes {
    /// Searches the tenant of `ctx` as `ctx`'s actor.
    pub async fn search(&self, ctx: &TenantContext, req: &SearchRequest) -> Result<SearchPage> {
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::BadQuery(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let offset = match &req.cursor {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|o| *o <= MAX_OFFSET)
                .ok_or_else(|| Error::BadQuery("cursor is not one this API returned".into()))?,
        };
        if req.q.len() > MAX_QUERY_LEN {
            return Err(Error::BadQuery(format!(
                "q is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let scope = self.searchable_for(ctx, req.entity.as_deref())?;
        if scope.is_empty() {
            // Nothing the caller may read is searchable: an empty page, not an error.
            return Ok(SearchPage {
                hits: Vec::new(),
                total: 0,
                facets: BTreeMap::new(),
                next_cursor: None,
            });
        }
        let index = self.ready_index(ctx.tenant()).await?;
        let user_query = self.parse(&index, &scope, &req.q)?;
        let schema = self.schema();
        let scoped = |only: Option<&Searchable>| -> Box<dyn Query> {
            let clauses = scope
                .iter()
                .filter(|s| only.is_none_or(|o| o.entity == s.entity))
                .map(|s| {
                    let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(
                        Occur::Must,
                        Box::new(TermQuery::new(
                            Term::from_field_text(schema.entity, &s.entity),
                            IndexRecordOption::Basic,
                        )),
                    )];
                    if let Some(owner) = &s.owner {
                        must.push((
                            Occur::Must,
                            Box::new(TermQuery::new(
                                Term::from_field_text(schema.owner, owner),
                                IndexRecordOption::Basic,
                            )),
                        ));
                    }
                    (
                        Occur::Should,
                        Box::new(BooleanQuery::new(must)) as Box<dyn Query>,
                    )
                })
                .collect();
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, user_query.box_clone()),
                (Occur::Must, Box::new(BooleanQuery::new(clauses))),
            ]))
        };
        let searcher = index.reader.searcher();
        let query = scoped(None);
        let (top, total) = searcher.search(
            &*query,
            &(
                TopDocs::with_limit(limit + 1)
                    .and_offset(offset)
                    .order_by_score(),
                Count,
            ),
        )?;
        let mut facets = BTreeMap::new();
        for s in &scope {
            // With one entity in scope its count is the total.
            let n = if scope.len() == 1 {
                total
            } else {
                searcher.search(&*scoped(Some(s)), &Count)?
            };
            facets.insert(s.entity.clone(), n);
        }
        let has_more = top.len() > limit;
        let mut found: Vec<(f32, String, String)> = Vec::new();
        for (score, addr) in top.into_iter().take(limit) {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let key = doc
                .get_first(schema.key)
                .and_then(|v| v.as_str())
                .and_then(|k| k.split_once('/'))
                .map(|(e, id)| (e.to_owned(), id.to_owned()))
                .ok_or_else(|| Error::Index("a document without a key".into()))?;
            found.push((score, key.0, key.1));
        }
        // Re-read every hit as the caller: permissions, `own` scope and hidden fields apply
        // as for any read, and rows deleted since the last sync drop out.
        let mut records: HashMap<(String, String), Value> = HashMap::new();
        for s in &scope {
            let ids: Vec<Value> = found
                .iter()
                .filter(|(_, e, _)| *e == s.entity)
                .map(|(_, _, id)| Value::from(id.as_str()))
                .collect();
            if ids.is_empty() {
                continue;
            }
            let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
            let page = ctx
                .db()
                .query(&s.entity)
                .filter(Filter::In("id".into(), ids))
                .limit(n)
                .fetch()
                .await?;
            for r in page.records {
                if let Some(id) = r["id"].as_str() {
                    records.insert((s.entity.clone(), id.to_owned()), r.clone());
                }
            }
        }
        let mut generators: HashMap<Field, SnippetGenerator> = HashMap::new();
        let mut hits = Vec::new();
        for (score, entity, id) in found {
            let Some(record) = records.remove(&(entity.clone(), id.clone())) else {
                continue;
            };
            let mut highlights = BTreeMap::new();
            if let Some(s) = scope.iter().find(|s| s.entity == entity) {
                for (name, field) in &s.fields {
                    let Some(text) = record.get(name).and_then(Value::as_str) else {
                        continue;
                    };
                    if !generators.contains_key(field) {
                        let mut g = SnippetGenerator::create(&searcher, &*user_query, *field)?;
                        g.set_max_num_chars(200);
                        generators.insert(*field, g);
                    }
                    if let Some(g) = generators.get(field) {
                        let snippet = g.snippet(text);
                        if !snippet.highlighted().is_empty() {
                            highlights.insert(name.clone(), snippet.to_html());
                        }
                    }
                }
            }
            hits.push(Hit {
                entity,
                id,
                score,
                record,
                highlights,
            });
        }
        Ok(SearchPage {
            hits,
            total,
            facets,
            next_cursor: has_more.then(|| (offset + limit).to_string()),
        })
    }

    /// Entities (and their fields) the caller may search: readable, with an owner term for
    /// `own` readers, without fields hidden from every role of the caller.
    fn searchable_for(&self, ctx: &TenantContext, only: Option<&str>) -> Result<Vec<Searchable>> {
        let m = self.plane().manifest();
        let entities = searchable_entities(m);
        if let Some(name) = only
            && !entities.iter().any(|e| e.name.as_str() == name)
        {
            return Err(Error::UnknownEntity(name.to_owned()));
        }
        let mut out = Vec::new();
        for e in entities {
            if only.is_some_and(|o| o != e.name.as_str()) {
                continue;
            }
            let eff = e.effective(&ctx.actor().roles, Action::Read);
            let owner = match eff.scope {
                Scope::None => None,
                Scope::All => Some(None),
                Scope::Own => ctx.actor().user_id.clone().map(Some),
            };
            let Some(owner) = owner else {
                if only.is_some() {
                    return Err(Error::Forbidden(e.name.to_string()));
                }
                continue;
            };
            let fields = e
                .fields
                .iter()
                .filter(|f| f.search && !eff.hidden.iter().any(|h| h == f.name.as_str()))
                .filter_map(|f| {
                    self.schema()
                        .text
                        .get(&(e.name.to_string(), f.name.to_string()))
                        .map(|field| (f.name.to_string(), *field))
                })
                .collect();
            out.push(Searchable {
                entity: e.name.to_string(),
                owner,
                fields,
            });
        }
        Ok(out)
    }

    /// Parses the caller's query over the fields it may search. Field syntax must name one of
    /// them as `entity.field`; regular expressions are refused (unbounded cost).
    fn parse(
        &self,
        index: &crate::TenantIndex,
        scope: &[Searchable],
        q: &str,
    ) -> Result<Box<dyn Query>> {
        let q = q.trim();
        if q.is_empty() || q == "*" {
            return Ok(Box::new(AllQuery));
        }
        let allowed: Vec<(String, Field)> = scope
            .iter()
            .flat_map(|s| {
                s.fields
                    .iter()
                    .map(|(name, f)| (format!("{}.{name}", s.entity), *f))
            })
            .collect();
        let ast = tantivy::query_grammar::parse_query(q)
            .map_err(|_| Error::BadQuery(format!("cannot parse {q:?}")))?;
        check_fields(&ast, &allowed)?;
        if allowed.is_empty() {
            return Err(Error::BadQuery(
                "nothing the caller may read is searchable".into(),
            ));
        }
        let mut parser = QueryParser::for_index(
            &index.index,
            allowed.iter().map(|(_, f)| *f).collect::<Vec<_>>(),
        );
        parser.set_conjunction_by_default();
        parser
            .parse_query(q)
            .map_err(|e| Error::BadQuery(format!("{e}")))
    }
}

fn check_fields(ast: &UserInputAst, allowed: &[(String, Field)]) -> Result<()> {
    let check = |name: &Option<String>| match name {
        Some(n) if !allowed.iter().any(|(a, _)| a == n) => Err(Error::BadQuery(format!(
            "unknown search field {n:?}; searchable fields: {}",
            allowed
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Ok(()),
    };
    match ast {
        UserInputAst::Clause(clauses) => clauses
            .iter()
            .try_for_each(|(_, c)| check_fields(c, allowed)),
        UserInputAst::Boost(inner, _) => check_fields(inner, allowed),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::Literal(l) => check(&l.field_name),
            UserInputLeaf::All => Ok(()),
            UserInputLeaf::Range { field, .. } | UserInputLeaf::Set { field, .. } => check(field),
            UserInputLeaf::Exists { field } => check(&Some(field.clone())),
            UserInputLeaf::Regex { .. } => Err(Error::BadQuery(
                "regular expressions are not supported in search".into(),
            )),
        },
    }
}
