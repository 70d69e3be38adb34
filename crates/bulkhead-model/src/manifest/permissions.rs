//! Per-role permissions of an entity and how a caller's roles combine into one.

use serde::{Deserialize, Serialize};

use super::{Entity, Field};
use crate::ids::Ident;

/// How many rows an action reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    None,
    /// Rows whose owner field is the acting user.
    Own,
    All,
}

/// The role that requests without credentials act as (public endpoints).
pub const ANONYMOUS_ROLE: &str = "anonymous";

/// What one role may do with an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolePermission {
    pub role: String,
    pub read: Scope,
    pub create: Scope,
    pub update: Scope,
    pub delete: Scope,
    /// Fields this role never sees (and cannot filter or sort by).
    #[serde(default)]
    pub hidden: Vec<Ident>,
    /// Fields this role may read but not write.
    #[serde(default)]
    pub readonly: Vec<Ident>,
}

/// An action on an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

/// The combined permission of a caller's roles for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub scope: Scope,
    /// Hidden from every one of the caller's roles that may read.
    pub hidden: Vec<String>,
    /// Read-only for every one of the caller's roles that may write.
    pub readonly: Vec<String>,
}

impl Entity {
    /// What `roles` may do: the widest scope of any role; a field is hidden or read-only
    /// only if it is so for every role that grants the action.
    pub fn effective(&self, roles: &[String], action: Action) -> Effective {
        let Some(perms) = &self.permissions else {
            // Only a caller that is nothing but anonymous is kept out.
            let anonymous = !roles.is_empty() && roles.iter().all(|r| r == ANONYMOUS_ROLE);
            return Effective {
                scope: if anonymous { Scope::None } else { Scope::All },
                hidden: Vec::new(),
                readonly: Vec::new(),
            };
        };
        let granting: Vec<&RolePermission> = perms
            .iter()
            .filter(|p| roles.contains(&p.role))
            .filter(|p| p.scope(action) != Scope::None)
            .collect();
        let scope = granting
            .iter()
            .map(|p| p.scope(action))
            .max()
            .unwrap_or(Scope::None);
        let all = |pick: fn(&RolePermission) -> &Vec<Ident>| -> Vec<String> {
            let Some(first) = granting.first() else {
                return Vec::new();
            };
            pick(first)
                .iter()
                .filter(|f| granting.iter().all(|p| pick(p).contains(f)))
                .map(|f| f.to_string())
                .collect()
        };
        Effective {
            scope,
            hidden: all(|p| &p.hidden),
            readonly: all(|p| &p.readonly),
        }
    }
}

impl RolePermission {
    pub fn scope(&self, action: Action) -> Scope {
        match action {
            Action::Read => self.read,
            Action::Create => self.create,
            Action::Update => self.update,
            Action::Delete => self.delete,
        }
    }
}

impl Entity {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name.as_str() == name)
    }

    /// Tenant entities have a `tenant_id` column and row-level security.
    pub fn is_tenant_scoped(&self) -> bool {
        !self.cross_tenant
    }
}
