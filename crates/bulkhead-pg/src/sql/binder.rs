//! Bound parameters: every value checked against its field's type and bound with an explicit
//! cast, never spliced into SQL text.

use bulkhead_model::{Entity, FieldType, TenantId, ValueProblem};
use serde_json::Value;

use super::Param;
use crate::error::{Error, Result};

/// Collects parameters and hands out `$n` placeholders.
#[derive(Default)]
#[allow(missing_debug_implementations)]
pub struct Binder {
    pub params: Vec<Param>,
    /// For a statement that scopes itself ([`super::self_scoped_insert_sql`]): its tenant
    /// (parameter `$1`, set by the scope subquery) is named by the subquery's column.
    scope: Option<TenantId>,
}

/// The scope subquery's column, as a self-scoped statement names its tenant.
pub(crate) const SCOPE_TENANT: &str = "bulkhead_scope.tenant";

impl Binder {
    /// A binder for a statement that scopes itself to `tenant`: `$1` is the tenant, and the
    /// tenant's conditions and values name [`SCOPE_TENANT`], so that each depends on the
    /// setting having been made.
    pub(crate) fn scoped(tenant: &TenantId) -> Self {
        let mut b = Self::default();
        b.push(Box::new(tenant.as_str().to_owned()));
        b.scope = Some(tenant.clone());
        b
    }

    pub(crate) fn push(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    /// Whether this binder is [`Binder::scoped`].
    pub(crate) fn is_scoped(&self) -> bool {
        self.scope.is_some()
    }

    pub fn tenant(&mut self, tenant: &TenantId) -> String {
        if self.scope.as_ref() == Some(tenant) {
            return SCOPE_TENANT.to_owned();
        }
        format!("{}::text", self.push(Box::new(tenant.as_str().to_owned())))
    }

    pub(crate) fn text(&mut self, s: String) -> String {
        format!("{}::text", self.push(Box::new(s)))
    }

    /// Binds a checked value of type `ty` (or NULL) and returns the cast placeholder.
    pub(crate) fn value(
        &mut self,
        entity: &Entity,
        field: &str,
        ty: &FieldType,
        v: &Value,
    ) -> Result<String> {
        if v.is_null() {
            let p = self.push(Box::new(None::<String>));
            return Ok(format!("{p}::text::{}", crate::ddl::sql_type(ty)));
        }
        ty.check(v).map_err(|p| problem(entity, field, p))?;
        Ok(match ty {
            FieldType::Int => {
                let n = v.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0);
                format!("{}::int4", self.push(Box::new(n)))
            }
            FieldType::Bigint => format!("{}::int8", self.push(Box::new(v.as_i64().unwrap_or(0)))),
            FieldType::Bool => format!(
                "{}::bool",
                self.push(Box::new(v.as_bool().unwrap_or(false)))
            ),
            FieldType::Json => format!("{}::jsonb", self.push(Box::new(v.clone()))),
            FieldType::Text { .. } | FieldType::Enum { .. } => {
                self.text(v.as_str().unwrap_or_default().to_owned())
            }
            FieldType::Numeric => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{}::numeric", self.text(s))
            }
            other => {
                let s = v.as_str().unwrap_or_default().to_owned();
                format!("{}::{}", self.text(s), crate::ddl::sql_type(other))
            }
        })
    }
}

pub(crate) fn problem(entity: &Entity, field: &str, p: ValueProblem) -> Error {
    match p {
        ValueProblem::WrongType { expected } => Error::WrongType {
            entity: entity.name.to_string(),
            field: field.to_owned(),
            expected,
        },
        ValueProblem::OutOfRange { detail } => Error::OutOfRange {
            entity: entity.name.to_string(),
            field: field.to_owned(),
            detail,
        },
    }
}
