//! The one explicit escape: audited, granted, read-only reads across tenants on the app's
//! cross-tenant role ([`CrossTenantQuery`]).

use super::*;

/// A granted, audited read across tenants (see [`TenantContext::cross_tenant`]).
pub struct CrossTenantQuery<'c> {
    pub(super) ctx: &'c TenantContext,
    pub(super) entity: &'c Entity,
    pub(super) reason: String,
    pub(super) filter: Option<Filter>,
    pub(super) limit: i64,
}

impl std::fmt::Debug for CrossTenantQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossTenantQuery")
            .field("entity", &self.entity.name)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl CrossTenantQuery<'_> {
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = Some(Filter::and_then(self.filter.take(), f));
        self
    }

    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }

    /// The matching rows of every `row` and `schema` tenant, each with its `tenant_id`,
    /// ordered by tenant and id. The audit record commits with the read or not at all.
    pub async fn fetch(self) -> Result<Vec<Value>> {
        if !(1..=sql::MAX_LIMIT).contains(&self.limit) {
            return Err(Error::BadQuery(format!(
                "limit must be between 1 and {}",
                sql::MAX_LIMIT
            )));
        }
        let inner = &self.ctx.inner;
        let mut schemas = vec![names::SHARED_SCHEMA.to_owned()];
        if let Ok(tenants) = inner.tenants.read() {
            let mut list: Vec<String> = tenants
                .values()
                .filter(|p| p.level == IsolationLevel::Schema)
                .map(|p| names::tenant_schema(&p.tenant))
                .collect();
            list.sort();
            schemas.extend(list);
        }
        let mut binder = sql::Binder::default();
        let mut branches = Vec::new();
        for schema in &schemas {
            let spec = QuerySpec {
                filter: self.filter.clone(),
                limit: self.limit,
                ..QuerySpec::default()
            };
            branches.push(sql::cross_branch(&mut binder, schema, self.entity, &spec)?);
        }
        let stmt = format!(
            "SELECT * FROM ({}) AS cross_tenant ORDER BY 1, 2 LIMIT {}",
            branches.join(" UNION ALL "),
            self.limit
        );
        let pool = inner
            .router
            .cross()
            .ok_or_else(|| Error::CrossTenantDenied {
                entity: self.entity.name.to_string(),
            })?;
        let mut conn = router::checkout(pool, inner.router.settings.wait).await?;
        let entity = self.entity.name.as_str();
        let client = conn.client_mut()?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let rows = tx
            .query(&stmt, &sql::param_refs(&binder.params))
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let records = rows
            .iter()
            .map(|r| sql::record_from_row(self.entity, r, true))
            .collect::<Result<Vec<_>>>()?;
        let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
        tx.execute(
            &format!(
                "INSERT INTO {}.{} (app, entity, reason, actor, request_id, tenant_id, row_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                q(names::SHARED_SCHEMA),
                q(crate::ddl::AUDIT_TABLE)
            ),
            &[
                &inner.manifest.app.as_str(),
                &entity,
                &self.reason,
                &self.ctx.actor.user_id,
                &self.ctx.actor.request_id,
                &self.ctx.placement.tenant.as_str(),
                &count,
            ],
        )
        .await
        .map_err(|e| Error::from_db(e, entity, false))?;
        tx.commit()
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        conn.finish();
        Ok(records)
    }
}
