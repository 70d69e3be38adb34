//! App manifests: the entities an app declares, parsed from YAML and validated as a whole.
//!
//! ```yaml
//! app: helpdesk
//! entities:
//!   customer:
//!     fields:
//!       name: { type: text, required: true, unique: true, search: true }
//!   ticket:
//!     owner: author                 # filled with the acting user's id
//!     fields:
//!       title: { type: text, required: true, search: true }
//!       prio: { type: int, default: 3 }
//!       status: { type: enum, values: [open, closed], default: open }
//!       customer: { type: ref, entity: customer }
//!       body: text                  # shorthand for { type: text }
//!     unique: [[customer, title]]
//!     indexes: [[status, prio]]
//!   country:
//!     cross_tenant: true            # global reference data, no tenant column
//!     fields:
//!       code: { type: text, required: true, unique: true }
//! cross_tenant_reads: [ticket]      # entities this app may read across tenants, audited
//! ```
//!
//! Validation reports every problem at once, each with `file:line:col` and a path such as
//! `entities.ticket.fields.prio`.

mod declarations;
mod functions;
mod permissions;
mod route_schema;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AppId, Ident};
pub use crate::values::ValueProblem;
use crate::yaml::{self, Pos};

pub use functions::{BrowserStorage, FunctionLimits, FunctionRef, Functions, ROUTE_METHODS, Route};
pub use permissions::{ANONYMOUS_ROLE, Action, Effective, RolePermission, Scope};
pub use route_schema::{BodyProblem, RouteResponse, check_body};
pub use types::{FieldType, TYPE_NAMES};
pub(crate) use validate::Validator;

/// One field of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: Ident,
    #[serde(flatten)]
    pub ty: FieldType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub search: bool,
    #[serde(default)]
    pub index: bool,
}

/// One entity (a table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub name: Ident,
    pub fields: Vec<Field>,
    /// Global reference data: no tenant column, readable by every tenant, written only by
    /// the admin path.
    #[serde(default)]
    pub cross_tenant: bool,
    /// The field filled with the acting user's id on insert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ident>,
    /// Composite unique constraints (each led by `tenant_id` in the schema).
    #[serde(default)]
    pub unique: Vec<Vec<Ident>>,
    /// Extra indexes (each led by `tenant_id` in the schema).
    #[serde(default)]
    pub indexes: Vec<Vec<Ident>>,
    /// Per-role permissions. Absent: every caller but an anonymous one may do everything. Present: roles not listed may do nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<RolePermission>>,
}

/// A validated app manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppManifest {
    pub app: AppId,
    pub entities: Vec<Entity>,
    /// Tenant entities this app may read across tenants through the audited escape hatch.
    #[serde(default)]
    pub cross_tenant_reads: Vec<Ident>,
    /// Feature flags with the app's defaults; tenants override them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<FlagDecl>,
    /// Configuration settings with a JSON Schema and the app's defaults; tenants override them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<SettingDecl>,
    /// The app's own JavaScript functions and their routes (a mini-app bundle).
    #[serde(default, skip_serializing_if = "Functions::is_empty")]
    pub functions: Functions,
}

/// The value type of a feature flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    Bool,
    String,
    Number,
    Json,
}

impl FlagKind {
    /// Whether `value` has this kind's JSON type.
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            FlagKind::Bool => value.is_boolean(),
            FlagKind::String => value.is_string(),
            FlagKind::Number => value.is_number(),
            FlagKind::Json => !value.is_null(),
        }
    }
}

/// A feature flag declared by the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagDecl {
    pub name: Ident,
    #[serde(rename = "type")]
    pub kind: FlagKind,
    pub default: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether callers without credentials (the `anonymous` role) may evaluate it; default no.
    #[serde(default)]
    pub anonymous: bool,
}

/// A configuration setting declared by the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingDecl {
    pub name: Ident,
    /// The JSON Schema every value (default and overrides) must satisfy.
    pub schema: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Secret values live in the app's vault space and are never listed in plain.
    #[serde(default)]
    pub secret: bool,
    /// Whether callers without credentials (the `anonymous` role) may read it; default no,
    /// never for a secret setting.
    #[serde(default)]
    pub anonymous: bool,
}

impl AppManifest {
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name.as_str() == name)
    }

    pub fn tenant_entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities.iter().filter(|e| e.is_tenant_scoped())
    }

    pub fn global_entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities.iter().filter(|e| e.cross_tenant)
    }

    pub fn flag(&self, name: &str) -> Option<&FlagDecl> {
        self.flags.iter().find(|f| f.name.as_str() == name)
    }

    pub fn setting(&self, name: &str) -> Option<&SettingDecl> {
        self.settings.iter().find(|f| f.name.as_str() == name)
    }

    /// Whether the manifest grants cross-tenant reads of `entity`.
    pub fn grants_cross_tenant(&self, entity: &str) -> bool {
        self.cross_tenant_reads.iter().any(|e| e.as_str() == entity)
    }

    /// Parses and validates a manifest. `source` names the file in error messages.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self, ManifestError> {
        let root = yaml::parse(text).map_err(|errs| ManifestError {
            source: source.to_owned(),
            problems: errs
                .into_iter()
                .map(|e| Problem {
                    pos: e.pos,
                    path: String::new(),
                    message: e.message,
                })
                .collect(),
        })?;
        let mut v = Validator::default();
        let manifest = v.manifest(&root);
        match manifest {
            Some(m) if v.problems.is_empty() => Ok(m),
            _ => {
                v.problems.sort_by_key(|p| (p.pos.line, p.pos.col));
                Err(ManifestError {
                    source: source.to_owned(),
                    problems: v.problems,
                })
            }
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    /// Dotted path such as `entities.ticket.fields.prio`; empty for syntax errors.
    pub path: String,
    pub message: String,
}

/// Every problem of a manifest, each rendered as `file:line:col: path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} has {} problem(s):", self.source, self.problems.len())?;
        for p in &self.problems {
            if p.path.is_empty() {
                writeln!(
                    f,
                    "  {}:{}:{}: {}",
                    self.source, p.pos.line, p.pos.col, p.message
                )?;
            } else {
                writeln!(
                    f,
                    "  {}:{}:{}: {}: {}",
                    self.source, p.pos.line, p.pos.col, p.path, p.message
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}
