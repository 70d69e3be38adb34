//! The tenant's key-value store ([`TenantKv`], `ctx.kv(scope)`): JSON values under string
//! keys, for the tenant as a whole or for the calling user, in the tenant's own location
//! (`bulkhead_kv`, [`crate::ddl::KV_TABLE`]) under forced row-level security. The tenant
//! comes from the context, never from a key: a key is only ever a key.

use super::*;

/// Longest key, in characters.
pub const KV_KEY_MAX: usize = 512;
/// Largest value, as JSON text.
pub const KV_VALUE_MAX: usize = 64 * 1024;
/// Most entries one `list` returns.
pub const KV_LIST_MAX: i64 = 1000;

/// Whose keys: the tenant's, or the calling user's (`storage.user.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvScope {
    Tenant,
    User,
}

/// The key-value store of one tenant, reached through its [`TenantContext`].
#[derive(Debug, Clone, Copy)]
pub struct TenantKv<'c> {
    pub(super) ctx: &'c TenantContext,
    pub(super) scope: KvScope,
}

const ENTITY: &str = "storage";

impl TenantKv<'_> {
    fn owner(&self) -> Result<String> {
        match self.scope {
            KvScope::Tenant => Ok(String::new()),
            KvScope::User => match &self.ctx.actor.user_id {
                Some(id) if !id.is_empty() => Ok(id.clone()),
                _ => Err(Error::Forbidden {
                    entity: ENTITY.into(),
                    action: "user storage",
                    field: None,
                }),
            },
        }
    }

    fn table(&self) -> String {
        format!("{}.{}", q(&self.ctx.schema()), q(crate::ddl::KV_TABLE))
    }

    fn key(key: &str) -> Result<String> {
        if key.is_empty() || key.chars().count() > KV_KEY_MAX || key.contains('\0') {
            return Err(Error::OutOfRange {
                entity: ENTITY.into(),
                field: "key".into(),
                detail: format!("a key has 1 to {KV_KEY_MAX} characters, no NUL"),
            });
        }
        Ok(key.to_owned())
    }

    fn params(&self, rest: Vec<Param>) -> Result<Vec<Param>> {
        let mut p: Vec<Param> = vec![
            Box::new(self.ctx.tenant().as_str().to_owned()),
            Box::new(self.owner()?),
        ];
        p.extend(rest);
        Ok(p)
    }

    /// The value under `key`, `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Value>> {
        let stmt = format!(
            "SELECT value FROM {} WHERE tenant_id = $1 AND owner = $2 AND key = $3",
            self.table()
        );
        let params = self.params(vec![Box::new(Self::key(key)?)])?;
        let rows = self.ctx.run_scoped(ENTITY, false, &stmt, &params).await?;
        Ok(rows.first().map(|r| r.get::<_, Value>(0)))
    }

    /// Stores `value` under `key` (replacing what was there).
    pub async fn set(&self, key: &str, value: &Value) -> Result<()> {
        let text = value.to_string();
        if text.len() > KV_VALUE_MAX {
            return Err(Error::OutOfRange {
                entity: ENTITY.into(),
                field: "value".into(),
                detail: format!("a value is at most {KV_VALUE_MAX} bytes of JSON"),
            });
        }
        let stmt = format!(
            "INSERT INTO {} (tenant_id, owner, key, value) VALUES ($1, $2, $3, $4::jsonb) \
             ON CONFLICT (tenant_id, owner, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            self.table()
        );
        let params = self.params(vec![Box::new(Self::key(key)?), Box::new(value.clone())])?;
        self.ctx.run_scoped(ENTITY, false, &stmt, &params).await?;
        Ok(())
    }

    /// Removes `key`; whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let stmt = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND owner = $2 AND key = $3 RETURNING key",
            self.table()
        );
        let params = self.params(vec![Box::new(Self::key(key)?)])?;
        let rows = self.ctx.run_scoped(ENTITY, true, &stmt, &params).await?;
        Ok(!rows.is_empty())
    }

    /// Keys starting with `prefix`, in key order, with their values (at most
    /// [`KV_LIST_MAX`]).
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
        if prefix.chars().count() > KV_KEY_MAX || prefix.contains('\0') {
            return Err(Error::OutOfRange {
                entity: ENTITY.into(),
                field: "prefix".into(),
                detail: format!("a prefix has at most {KV_KEY_MAX} characters, no NUL"),
            });
        }
        let stmt = format!(
            "SELECT key, value FROM {} WHERE tenant_id = $1 AND owner = $2 \
             AND starts_with(key, $3) ORDER BY key LIMIT {KV_LIST_MAX}",
            self.table()
        );
        let params = self.params(vec![Box::new(prefix.to_owned())])?;
        let rows = self.ctx.run_scoped(ENTITY, false, &stmt, &params).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, Value>(1)))
            .collect())
    }
}
