//! Statement texts built once per data plane instead of once per operation: a get by id's text
//! (the same for every id and every tenant sharing the schema), a first page's without a
//! filter (one per order and limit: the limit is in the text, see [`sql::select_sql`]), and the
//! single-statement form of each read ([`sql::self_scoped_read`]). Building them took half of a
//! get's instructions in the library (callgrind: 16,600 of 38,600 for `get_sql`, 2,200 for the self-scoped form).
//!
//! Only texts are kept, never parameters: the tenant and every value are bound per use. A
//! text names its schema, so the key does too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bulkhead_model::{Entity, TenantId};

use crate::error::Result;
use crate::sql::{self, Direction, Param, QuerySpec};

/// How many texts of each kind (shapes, self-scoped forms) are kept. Reads with filters differ
/// in their text by the filter's shape, and each schema tenant has its own schema, so their
/// number is not bounded by the manifest; past this, texts are built per use as before.
const MAX_TEXTS: usize = 4096;

#[derive(Default)]
pub(super) struct Texts {
    /// A statement's shape (`get`/`list`, schema, entity, order, each ended by `\0`) → its
    /// text: [`sql::get_sql`]'s without an extra filter, [`sql::select_sql`]'s for a first
    /// page without a filter.
    shapes: RwLock<HashMap<String, Arc<str>>>,
    /// A read's text → its self-scoped form (`None`: the text is not a tenant read).
    scoped: RwLock<HashMap<Box<str>, Option<Arc<str>>>>,
}

impl Texts {
    /// A get by id of `entity` in `schema` without an extra filter: its text and its
    /// parameters, exactly as [`sql::get_sql`] makes them.
    pub(super) fn get(
        &self,
        schema: &str,
        entity: &Entity,
        tenant: Option<&TenantId>,
        id: &str,
    ) -> Result<(Arc<str>, Vec<Param>)> {
        self.shaped(
            format!("get\0{schema}\0{}\0", entity.name),
            || sql::get_params(entity, tenant, id),
            || sql::get_sql(schema, entity, tenant, id, None),
        )
    }

    /// A list of `entity` in `schema`: its text and parameters, exactly as
    /// [`sql::select_sql`] makes them; built once per order and limit for a first page without a
    /// filter.
    pub(super) fn list(
        &self,
        schema: &str,
        entity: &Entity,
        tenant: Option<&TenantId>,
        spec: &QuerySpec,
    ) -> Result<(Arc<str>, Vec<Param>)> {
        if spec.filter.is_some() || spec.after.is_some() {
            let (text, params) = sql::select_sql(schema, entity, tenant, spec)?;
            return Ok((text.into(), params));
        }
        let dir = match spec.direction {
            Direction::Asc => "asc",
            Direction::Desc => "desc",
        };
        self.shaped(
            format!(
                "list\0{schema}\0{}\0{}\0{dir}\0{}",
                entity.name, spec.order_field, spec.limit
            ),
            || sql::first_page_params(entity, tenant, spec.limit),
            || sql::select_sql(schema, entity, tenant, spec),
        )
    }

    /// The text kept for `shape` with `params()`, or `build()`'s, kept while there is room.
    fn shaped(
        &self,
        shape: String,
        params: impl FnOnce() -> Result<Vec<Param>>,
        build: impl FnOnce() -> Result<(String, Vec<Param>)>,
    ) -> Result<(Arc<str>, Vec<Param>)> {
        let known = self.shapes.read().ok().and_then(|m| m.get(&shape).cloned());
        if let Some(text) = known {
            return Ok((text, params()?));
        }
        let (text, params) = build()?;
        let text: Arc<str> = Arc::from(text);
        if let Ok(mut m) = self.shapes.write()
            && m.len() < MAX_TEXTS
        {
            m.insert(shape, text.clone());
        }
        Ok((text, params))
    }

    /// [`sql::self_scoped_read`] of `stmt`, built once per text.
    pub(super) fn self_scoped(&self, stmt: &str) -> Option<Arc<str>> {
        if let Some(known) = self.scoped.read().ok().and_then(|m| m.get(stmt).cloned()) {
            return known;
        }
        let wrapped: Option<Arc<str>> = sql::self_scoped_read(stmt).map(Arc::from);
        if let Ok(mut m) = self.scoped.write()
            && m.len() < MAX_TEXTS
        {
            m.insert(stmt.into(), wrapped.clone());
        }
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entities() -> Vec<Entity> {
        bulkhead_model::AppManifest::from_yaml(
            "app: shop\nentities:\n  ticket:\n    fields:\n      title: { type: text, required: true }\n      prio: int\n  country:\n    cross_tenant: true\n    fields:\n      code: text\n",
            "t",
        )
        .unwrap()
        .entities
    }

    fn entity() -> Entity {
        entities().remove(0)
    }

    const ID: &str = "00000000-0000-4000-8000-000000000001";

    #[test]
    fn a_cached_get_is_the_text_and_parameters_get_sql_makes() {
        let texts = Texts::default();
        let e = entity();
        let a = TenantId::parse("acme").unwrap();
        let b = TenantId::parse("globex").unwrap();
        for (schema, tenant, id) in [
            ("public", &a, ID),
            ("public", &b, "00000000-0000-4000-8000-000000000002"),
            ("t_acme", &a, ID),
            ("t_globex", &b, ID),
        ] {
            // Twice: built, then from the cache.
            for _ in 0..2 {
                let (text, params) = texts.get(schema, &e, Some(tenant), id).unwrap();
                let (want, want_params) = sql::get_sql(schema, &e, Some(tenant), id, None).unwrap();
                assert_eq!(&*text, want);
                assert_eq!(format!("{params:?}"), format!("{want_params:?}"));
                assert!(text.contains(&format!("\"{schema}\".")), "{text}");
            }
        }
        // A bad id is refused from the cache as when built.
        for bad in ["not-a-uuid", "", "00000000-0000-4000-8000-00000000000g"] {
            assert_eq!(
                texts
                    .get("public", &e, Some(&a), bad)
                    .unwrap_err()
                    .to_string(),
                sql::get_sql("public", &e, Some(&a), bad, None)
                    .unwrap_err()
                    .to_string()
            );
        }
        // Global reference data: no tenant, the id alone.
        let country = &entities()[1];
        for _ in 0..2 {
            let (text, params) = texts.get("public", country, None, ID).unwrap();
            let (want, want_params) = sql::get_sql("public", country, None, ID, None).unwrap();
            assert_eq!(
                (&*text, format!("{params:?}")),
                (want.as_str(), format!("{want_params:?}"))
            );
        }
        // A tenant entity without its tenant fails closed, cached or not.
        assert!(texts.get("public", &e, None, ID).is_err());
    }

    #[test]
    fn a_cached_first_page_is_the_text_and_parameters_select_sql_makes() {
        let texts = Texts::default();
        let e = entity();
        let a = TenantId::parse("acme").unwrap();
        let b = TenantId::parse("globex").unwrap();
        let spec = |order: &str, direction, limit, after: Option<String>, filter| QuerySpec {
            filter,
            order_field: order.into(),
            direction,
            limit,
            after,
        };
        let cursor = sql::encode_cursor(&serde_json::json!(3), &serde_json::json!(ID));
        let cases = [
            (
                "public",
                &a,
                spec("created_at", Direction::Asc, 20, None, None),
            ),
            (
                "public",
                &b,
                spec("created_at", Direction::Asc, 7, None, None),
            ),
            (
                "public",
                &a,
                spec("created_at", Direction::Desc, 20, None, None),
            ),
            ("public", &a, spec("prio", Direction::Asc, 20, None, None)),
            (
                "t_acme",
                &a,
                spec("created_at", Direction::Asc, 20, None, None),
            ),
            (
                "t_globex",
                &b,
                spec("created_at", Direction::Asc, 20, None, None),
            ),
            // Not cached, and still right.
            (
                "public",
                &a,
                spec("prio", Direction::Asc, 20, Some(cursor), None),
            ),
            (
                "public",
                &a,
                spec(
                    "id",
                    Direction::Asc,
                    5,
                    None,
                    Some(sql::Filter::eq("title", "x")),
                ),
            ),
        ];
        for (schema, tenant, spec) in &cases {
            for _ in 0..2 {
                let (text, params) = texts.list(schema, &e, Some(tenant), spec).unwrap();
                let (want, want_params) = sql::select_sql(schema, &e, Some(tenant), spec).unwrap();
                assert_eq!(&*text, want);
                assert_eq!(format!("{params:?}"), format!("{want_params:?}"));
            }
        }
        // Refused from the cache as when built: a limit out of range, a tenant entity
        // without its tenant, an unknown or json order field.
        for (tenant, spec) in [
            (Some(&a), spec("created_at", Direction::Asc, 0, None, None)),
            (
                Some(&a),
                spec("created_at", Direction::Asc, 100_000, None, None),
            ),
            (None, spec("created_at", Direction::Asc, 20, None, None)),
            (Some(&a), spec("nope", Direction::Asc, 20, None, None)),
        ] {
            assert_eq!(
                texts
                    .list("public", &e, tenant, &spec)
                    .unwrap_err()
                    .to_string(),
                sql::select_sql("public", &e, tenant, &spec)
                    .unwrap_err()
                    .to_string()
            );
        }
    }

    #[test]
    fn self_scoped_texts_are_those_of_self_scoped_read() {
        let texts = Texts::default();
        let e = entity();
        let a = TenantId::parse("acme").unwrap();
        let (get, _) = sql::get_sql("public", &e, Some(&a), ID, None).unwrap();
        for _ in 0..2 {
            assert_eq!(
                texts.self_scoped(&get).as_deref(),
                sql::self_scoped_read(&get).as_deref()
            );
            assert_eq!(texts.self_scoped("SELECT 1"), None);
        }
    }

    #[test]
    fn the_caches_are_bounded() {
        let texts = Texts::default();
        let e = entity();
        let a = TenantId::parse("acme").unwrap();
        for i in 0..MAX_TEXTS + 10 {
            texts.get(&format!("t_{i}"), &e, Some(&a), ID).unwrap();
            texts.self_scoped(&format!("SELECT {i}"));
        }
        assert_eq!(texts.shapes.read().unwrap().len(), MAX_TEXTS);
        assert_eq!(texts.scoped.read().unwrap().len(), MAX_TEXTS);
        // Past the bound, texts are still right, only not kept.
        let (text, _) = texts.get("t_last", &e, Some(&a), ID).unwrap();
        assert!(text.contains("\"t_last\"."));
    }
}
