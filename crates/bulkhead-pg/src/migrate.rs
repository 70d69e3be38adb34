//! Versioned migrations. Each schema or database that holds an app's tables records every
//! applied manifest in `bulkhead_migrations`; a changed manifest yields a [`Plan`] of steps
//! against the last recorded one. Additive steps apply directly; destructive ones (dropping an
//! entity or field, changing a field) need the explicit flag. A migration runs in one
//! transaction, as the app's owner role, under an advisory lock: it applies whole or not at all.

use bulkhead_model::names::{self, quote_ident as q};
use bulkhead_model::{AppManifest, Entity, Ident};
use serde::Serialize;
use tokio_postgres::Client;

use crate::ddl::{self, Target};
use crate::error::{Error, Result};

pub const MIGRATIONS_TABLE: &str = "bulkhead_migrations";

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    CreateEntity {
        entity: Ident,
    },
    AddField {
        entity: Ident,
        field: Ident,
    },
    AddUnique {
        entity: Ident,
        fields: Vec<Ident>,
    },
    AddIndex {
        entity: Ident,
        fields: Vec<Ident>,
    },
    DropIndex {
        entity: Ident,
        fields: Vec<Ident>,
    },
    DropUnique {
        entity: Ident,
        fields: Vec<Ident>,
    },
    ChangeField {
        entity: Ident,
        field: Ident,
    },
    DropField {
        entity: Ident,
        field: Ident,
    },
    DropEntity {
        entity: Ident,
    },
    /// Only non-schema properties changed (search marks, grants): recorded, no table change.
    Metadata,
}

impl Step {
    /// Steps that can lose data or refuse existing rows.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Step::ChangeField { .. } | Step::DropField { .. } | Step::DropEntity { .. }
        )
    }

    pub fn describe(&self) -> String {
        let list = |f: &[Ident]| f.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ");
        match self {
            Step::CreateEntity { entity } => format!("create entity {entity}"),
            Step::AddField { entity, field } => format!("add field {entity}.{field}"),
            Step::AddUnique { entity, fields } => {
                format!("add unique ({}) on {entity}", list(fields))
            }
            Step::AddIndex { entity, fields } => {
                format!("add index ({}) on {entity}", list(fields))
            }
            Step::DropIndex { entity, fields } => {
                format!("drop index ({}) on {entity}", list(fields))
            }
            Step::DropUnique { entity, fields } => {
                format!("drop unique ({}) on {entity}", list(fields))
            }
            Step::ChangeField { entity, field } => format!("change field {entity}.{field}"),
            Step::DropField { entity, field } => format!("drop field {entity}.{field}"),
            Step::DropEntity { entity } => format!("drop entity {entity}"),
            Step::Metadata => "record manifest (no table changes)".into(),
        }
    }
}

/// What a migration will do (or did) to one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn destructive_steps(&self) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.is_destructive()).collect()
    }
}

/// Computes the steps from `old` (the last applied manifest, if any) to `new` for the tables
/// that `target` holds.
pub fn plan(old: Option<&AppManifest>, new: &AppManifest, target: &Target) -> Plan {
    let mut steps = Vec::new();
    let new_entities = ddl::entities_here(new, target);
    let old_entities = old
        .map(|m| ddl::entities_here(m, target))
        .unwrap_or_default();
    fn find<'m>(list: &[&'m Entity], name: &Ident) -> Option<&'m Entity> {
        list.iter().find(|e| e.name == *name).copied()
    }
    for entity in &new_entities {
        match find(&old_entities, &entity.name) {
            None => steps.push(Step::CreateEntity {
                entity: entity.name.clone(),
            }),
            Some(prev) if prev.cross_tenant != entity.cross_tenant => {
                steps.push(Step::DropEntity {
                    entity: entity.name.clone(),
                });
                steps.push(Step::CreateEntity {
                    entity: entity.name.clone(),
                });
            }
            Some(prev) => entity_steps(prev, entity, &mut steps),
        }
    }
    for entity in &old_entities {
        if find(&new_entities, &entity.name).is_none() {
            steps.push(Step::DropEntity {
                entity: entity.name.clone(),
            });
        }
    }
    if steps.is_empty() && old != Some(new) {
        steps.push(Step::Metadata);
    }
    Plan { steps }
}

fn entity_steps(prev: &Entity, entity: &Entity, steps: &mut Vec<Step>) {
    let name = || entity.name.clone();
    for field in &entity.fields {
        match prev.field(field.name.as_str()) {
            None => steps.push(Step::AddField {
                entity: name(),
                field: field.name.clone(),
            }),
            Some(old) => {
                let same = old.ty == field.ty
                    && old.required == field.required
                    && old.default == field.default
                    && old.unique == field.unique
                    && old.index == field.index;
                if !same {
                    steps.push(Step::ChangeField {
                        entity: name(),
                        field: field.name.clone(),
                    });
                }
            }
        }
    }
    for field in &prev.fields {
        if entity.field(field.name.as_str()).is_none() {
            steps.push(Step::DropField {
                entity: name(),
                field: field.name.clone(),
            });
        }
    }
    for set in &entity.unique {
        if !prev.unique.contains(set) {
            steps.push(Step::AddUnique {
                entity: name(),
                fields: set.clone(),
            });
        }
    }
    for set in &prev.unique {
        if !entity.unique.contains(set) {
            steps.push(Step::DropUnique {
                entity: name(),
                fields: set.clone(),
            });
        }
    }
    for set in &entity.indexes {
        if !prev.indexes.contains(set) {
            steps.push(Step::AddIndex {
                entity: name(),
                fields: set.clone(),
            });
        }
    }
    for set in &prev.indexes {
        if !entity.indexes.contains(set) {
            steps.push(Step::DropIndex {
                entity: name(),
                fields: set.clone(),
            });
        }
    }
}

/// SQL for a plan. Tables first, then every new foreign key (so order and cycles don't matter).
fn statements(
    plan: &Plan,
    old: Option<&AppManifest>,
    new: &AppManifest,
    schema: &str,
) -> Result<Vec<String>> {
    let entity = |m: &AppManifest, name: &Ident| {
        m.entity(name.as_str())
            .cloned()
            .ok_or_else(|| Error::Internal(format!("plan names unknown entity {name}")))
    };
    let old_entity = |name: &Ident| match old {
        Some(m) => entity(m, name),
        None => Err(Error::Internal("plan drops from an empty schema".into())),
    };
    let mut out = Vec::new();
    let mut fks = Vec::new();
    for step in &plan.steps {
        match step {
            Step::CreateEntity { entity: e } => {
                let e = entity(new, e)?;
                out.extend(ddl::create_entity(schema, &e));
                fks.extend(ddl::foreign_keys(schema, new, &e));
            }
            Step::AddField { entity: e, field } => {
                let e = entity(new, e)?;
                let f = e
                    .field(field.as_str())
                    .ok_or_else(|| Error::Internal(format!("unknown field {field}")))?;
                out.extend(ddl::add_field(schema, new, &e, f));
            }
            Step::ChangeField {
                entity: name,
                field,
            } => {
                let e = entity(new, name)?;
                let before = old_entity(name)?;
                let (Some(o), Some(n)) = (before.field(field.as_str()), e.field(field.as_str()))
                else {
                    return Err(Error::Internal(format!("unknown field {field}")));
                };
                out.extend(ddl::change_field(schema, new, &e, o, n));
            }
            Step::DropField { entity: e, field } => {
                out.push(ddl::drop_field(schema, &old_entity(e)?, field.as_str()));
            }
            Step::DropEntity { entity: e } => out.push(ddl::drop_entity(schema, &old_entity(e)?)),
            Step::AddUnique { entity: e, fields } => {
                out.push(ddl::add_unique(schema, &entity(new, e)?, fields));
            }
            Step::DropUnique { entity: e, fields } => {
                out.push(ddl::drop_unique(schema, &old_entity(e)?, fields));
            }
            Step::AddIndex { entity: e, fields } => {
                out.push(ddl::add_index(schema, &entity(new, e)?, fields));
            }
            Step::DropIndex { entity: e, fields } => {
                out.push(ddl::drop_index(schema, &old_entity(e)?, fields));
            }
            Step::Metadata => {}
        }
    }
    out.extend(fks);
    Ok(out)
}

/// The outcome of migrating one target.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub target: String,
    /// The version now recorded (unchanged when the plan was empty).
    pub version: i32,
    pub plan: Plan,
}

/// The last applied manifest in `schema`, if any. Creates the migrations table when missing.
async fn last_applied(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
) -> Result<(i32, Option<AppManifest>)> {
    let table = format!("{}.{}", q(schema), q(MIGRATIONS_TABLE));
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
               version integer PRIMARY KEY,
               manifest jsonb NOT NULL,
               plan jsonb NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .await
        .map_err(Error::Database)?;
    let row = client
        .query_opt(
            &format!("SELECT version, manifest FROM {table} ORDER BY version DESC LIMIT 1"),
            &[],
        )
        .await
        .map_err(Error::Database)?;
    match row {
        None => Ok((0, None)),
        Some(row) => {
            let manifest: serde_json::Value = row.get(1);
            let manifest = serde_json::from_value(manifest)
                .map_err(|e| Error::Internal(format!("recorded manifest unreadable: {e}")))?;
            Ok((row.get(0), Some(manifest)))
        }
    }
}

/// The last recorded version and manifest of each of `schemas` (in its slot; `None` where
/// there is no migrations table yet), read in one statement per 256 schemas — nothing locked or
/// created: what a no-op migrate of many schema tenants compares with instead of a connection,
/// a lock and a transaction per schema.
pub async fn recorded_in_schemas(
    client: &Client,
    schemas: &[String],
) -> Result<Vec<Option<(i32, AppManifest)>>> {
    let present: std::collections::HashSet<String> = client
        .query(
            "SELECT schemaname::text FROM pg_tables WHERE tablename = $1 AND schemaname = ANY($2)",
            &[&MIGRATIONS_TABLE, &schemas],
        )
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = vec![None; schemas.len()];
    let slots: Vec<(usize, &String)> = schemas
        .iter()
        .enumerate()
        .filter(|(_, s)| present.contains(*s))
        .collect();
    for chunk in slots.chunks(256) {
        // Identifiers quoted; the only other text is each slot's number.
        let sql = chunk
            .iter()
            .map(|(i, schema)| {
                format!(
                    "(SELECT {i}::int4, version, manifest FROM {}.{} ORDER BY version DESC LIMIT 1)",
                    q(schema),
                    q(MIGRATIONS_TABLE)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for row in client.query(&sql, &[]).await.map_err(Error::Database)? {
            let slot = usize::try_from(row.get::<_, i32>(0))
                .map_err(|e| Error::Internal(e.to_string()))?;
            let manifest: serde_json::Value = row.get(2);
            let manifest = serde_json::from_value(manifest)
                .map_err(|e| Error::Internal(format!("recorded manifest unreadable: {e}")))?;
            if let Some(place) = out.get_mut(slot) {
                *place = Some((row.get(1), manifest));
            }
        }
    }
    Ok(out)
}

/// Computes the plan for `target` without changing anything.
pub async fn plan_for(client: &mut Client, m: &AppManifest, target: &Target) -> Result<Plan> {
    let tx = client.transaction().await.map_err(Error::Database)?;
    let schema = target.schema();
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &MIGRATIONS_TABLE],
        )
        .await
        .map_err(Error::Database)?
        .is_some();
    let old = if exists {
        last_applied(&tx, &schema).await?.1
    } else {
        None
    };
    Ok(plan(old.as_ref(), m, target))
}

/// Migrates one target to `m`, as the app's owner role, in one transaction.
///
/// `client` is an admin connection to the database that holds the target. `cross_role_exists`
/// says whether the app's cross-tenant role exists (to revoke from it when grants go away).
pub async fn apply(
    client: &mut Client,
    m: &AppManifest,
    target: &Target,
    allow_destructive: bool,
    cross_role_exists: bool,
) -> Result<MigrationReport> {
    let schema = target.schema();
    let owner = names::owner_role(&m.app);
    let tx = client.transaction().await.map_err(Error::Database)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('bulkhead.migrate'), hashtext($1))",
        &[&schema],
    )
    .await
    .map_err(Error::Database)?;
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning; SET LOCAL ROLE {}",
        q(&owner)
    ))
    .await
    .map_err(Error::Database)?;
    let (version, old) = last_applied(&tx, &schema).await?;
    let plan = plan(old.as_ref(), m, target);
    let destructive = plan.destructive_steps();
    if !destructive.is_empty() && !allow_destructive {
        let list: Vec<String> = destructive.iter().map(|s| s.describe()).collect();
        return Err(Error::DestructiveChange(list.join("; ")));
    }
    let mut sql = statements(&plan, old.as_ref(), m, &schema)?;
    if matches!(target, Target::Shared) {
        sql.insert(0, ddl::audit_table());
    }
    if cross_role_exists
        && (m.cross_tenant_reads.is_empty()
            || !matches!(target, Target::Shared | Target::TenantSchema(_)))
    {
        let cross = q(&names::cross_tenant_role(&m.app));
        sql.push(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {cross}",
            q(&schema)
        ));
        sql.push(format!("REVOKE ALL ON SCHEMA {} FROM {cross}", q(&schema)));
    }
    sql.extend(ddl::security(m, target));
    for stmt in &sql {
        tx.batch_execute(stmt).await.map_err(|e| {
            tracing::warn!(statement = %stmt, error = %e, "migration statement failed");
            Error::from_db(e, "migration", false)
        })?;
    }
    let version = if plan.is_empty() {
        version
    } else {
        let manifest = serde_json::to_value(m).map_err(|e| Error::Internal(e.to_string()))?;
        let plan_json = serde_json::to_value(&plan).map_err(|e| Error::Internal(e.to_string()))?;
        tx.execute(
            &format!(
                "INSERT INTO {}.{} (version, manifest, plan) VALUES ($1, $2, $3)",
                q(&schema),
                q(MIGRATIONS_TABLE)
            ),
            &[&(version + 1), &manifest, &plan_json],
        )
        .await
        .map_err(Error::Database)?;
        version + 1
    };
    tx.commit().await.map_err(Error::Database)?;
    Ok(MigrationReport {
        target: target.describe(),
        version,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> AppManifest {
        AppManifest::from_yaml(yaml, "t").unwrap()
    }

    const V1: &str = "app: shop\nentities:\n  purchase:\n    fields:\n      total: int\n";

    #[test]
    fn a_new_manifest_creates_every_entity() {
        let plan = plan(None, &m(V1), &Target::Shared);
        assert_eq!(plan.steps.len(), 1);
        assert!(matches!(plan.steps[0], Step::CreateEntity { .. }));
        assert!(plan.destructive_steps().is_empty());
    }

    #[test]
    fn adding_fields_and_entities_is_additive() {
        let v2 = m(
            "app: shop\nentities:\n  purchase:\n    fields:\n      total: int\n      note: text\n    indexes: [[total]]\n  item:\n    fields:\n      sku: text\n",
        );
        let plan = plan(Some(&m(V1)), &v2, &Target::Shared);
        let described: Vec<String> = plan.steps.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "add field purchase.note",
                "add index (total) on purchase",
                "create entity item"
            ]
        );
        assert!(plan.destructive_steps().is_empty());
    }

    #[test]
    fn dropping_or_changing_is_destructive() {
        let v2 = m("app: shop\nentities:\n  purchase:\n    fields:\n      total: bigint\n");
        let plan2 = plan(Some(&m(V1)), &v2, &Target::Shared);
        assert_eq!(plan2.destructive_steps().len(), 1);
        let v3 = m("app: shop\nentities:\n  other:\n    fields:\n      x: int\n");
        let plan3 = plan(Some(&m(V1)), &v3, &Target::Shared);
        assert!(
            plan3
                .steps
                .iter()
                .any(|s| matches!(s, Step::DropEntity { .. }))
        );
    }

    #[test]
    fn an_unchanged_manifest_has_an_empty_plan() {
        assert!(plan(Some(&m(V1)), &m(V1), &Target::Shared).is_empty());
    }
}
