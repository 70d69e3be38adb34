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

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AppId, Ident, PLATFORM_COLUMNS};
use crate::values;
pub use crate::values::ValueProblem;
use crate::yaml::{self, Node, Pos};

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    Text {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<u32>,
    },
    Int,
    Bigint,
    Numeric,
    Bool,
    Timestamp,
    Date,
    Uuid,
    Json,
    Enum {
        values: Vec<String>,
    },
    Ref {
        entity: Ident,
    },
}

/// The type names a manifest may use, in the order error messages list them.
pub const TYPE_NAMES: &[&str] = &[
    "text",
    "int",
    "bigint",
    "numeric",
    "bool",
    "timestamp",
    "date",
    "uuid",
    "json",
    "enum",
    "ref",
];

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Text { .. } => "text",
            FieldType::Int => "int",
            FieldType::Bigint => "bigint",
            FieldType::Numeric => "numeric",
            FieldType::Bool => "bool",
            FieldType::Timestamp => "timestamp",
            FieldType::Date => "date",
            FieldType::Uuid => "uuid",
            FieldType::Json => "json",
            FieldType::Enum { .. } => "enum",
            FieldType::Ref { .. } => "ref",
        }
    }

    /// Checks a JSON value against this type. `Null` is handled by the caller (required-ness).
    pub fn check(&self, value: &Value) -> Result<(), ValueProblem> {
        let wrong = || ValueProblem::WrongType {
            expected: self.expected(),
        };
        match self {
            FieldType::Text { max_length } => {
                values::text(value.as_str().ok_or_else(wrong)?, *max_length)
            }
            FieldType::Int => {
                let n = value.as_i64().ok_or_else(wrong)?;
                i32::try_from(n)
                    .map(drop)
                    .map_err(|_| ValueProblem::OutOfRange {
                        detail: format!("{n} does not fit a 32-bit integer"),
                    })
            }
            FieldType::Bigint => value.as_i64().map(drop).ok_or_else(|| {
                if value.is_number() {
                    ValueProblem::OutOfRange {
                        detail: format!("{value} does not fit a 64-bit integer"),
                    }
                } else {
                    wrong()
                }
            }),
            FieldType::Numeric => match value {
                Value::Number(_) => Ok(()),
                Value::String(s) => values::decimal(s),
                _ => Err(wrong()),
            },
            FieldType::Bool => value.as_bool().map(drop).ok_or_else(wrong),
            FieldType::Timestamp => values::timestamp(value.as_str().ok_or_else(wrong)?),
            FieldType::Date => values::date(value.as_str().ok_or_else(wrong)?),
            FieldType::Uuid | FieldType::Ref { .. } => {
                values::uuid(value.as_str().ok_or_else(wrong)?).map_err(|_| wrong())
            }
            FieldType::Json => values::json(value),
            FieldType::Enum { values } => {
                let s = value.as_str().ok_or_else(wrong)?;
                if values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(ValueProblem::OutOfRange {
                        detail: format!("{s:?} is not one of {}", values.join(", ")),
                    })
                }
            }
        }
    }

    fn expected(&self) -> String {
        match self {
            FieldType::Text { .. } => "a string".into(),
            FieldType::Int => "a 32-bit integer".into(),
            FieldType::Bigint => "a 64-bit integer".into(),
            FieldType::Numeric => "a number or a decimal string".into(),
            FieldType::Bool => "true or false".into(),
            FieldType::Timestamp => "an RFC 3339 timestamp string".into(),
            FieldType::Date => "a YYYY-MM-DD date string".into(),
            FieldType::Uuid => "a UUID string".into(),
            FieldType::Ref { entity } => format!("the id (UUID string) of a {entity}"),
            FieldType::Json => "any JSON value".into(),
            FieldType::Enum { values } => format!("one of {}", values.join(", ")),
        }
    }
}

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

/// The value of `key` in a mapping's entries.
fn field_of<'n>(fields: &'n [(String, Pos, Node)], key: &str) -> Option<&'n Node> {
    fields.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n)
}

/// Collects validation problems; shared by manifests and `tenants.yaml`.
#[derive(Default)]
pub(crate) struct Validator {
    pub(crate) problems: Vec<Problem>,
}

impl Validator {
    pub(crate) fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            pos,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The entries of a mapping, reporting keys outside `allowed`.
    pub(crate) fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'n [(String, Pos, Node)]> {
        match node {
            Node::Map { entries, .. } => {
                if !allowed.is_empty() {
                    for (key, pos, _) in entries {
                        if !allowed.contains(&key.as_str()) {
                            self.problem(
                                *pos,
                                &join(path, key),
                                format!(
                                    "unknown key {key:?}, expected one of {}",
                                    allowed.join(", ")
                                ),
                            );
                        }
                    }
                }
                Some(entries)
            }
            other => {
                self.problem(
                    other.pos(),
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &str) -> bool {
        match node {
            Node::Scalar {
                value, plain: true, ..
            } if value == "true" => true,
            Node::Scalar {
                value, plain: true, ..
            } if value == "false" => false,
            other => {
                self.problem(other.pos(), path, "expected true or false");
                false
            }
        }
    }

    fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match node {
            Node::Scalar { value, .. } => Some(value),
            other => {
                self.problem(
                    other.pos(),
                    path,
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn ident(&mut self, node: &Node, path: &str) -> Option<Ident> {
        let s = self.string(node, path)?;
        match Ident::parse(s) {
            Ok(id) => Some(id),
            Err(e) => {
                self.problem(node.pos(), path, e.to_string());
                None
            }
        }
    }

    fn ident_at(&mut self, name: &str, pos: Pos, path: &str) -> Option<Ident> {
        if PLATFORM_COLUMNS.contains(&name) {
            self.problem(
                pos,
                path,
                format!("{name:?} is a platform column and cannot be declared"),
            );
            return None;
        }
        match Ident::parse(name) {
            Ok(id) => Some(id),
            Err(e) => {
                self.problem(pos, path, e.to_string());
                None
            }
        }
    }

    fn ident_list(&mut self, node: &Node, path: &str) -> Vec<(Ident, Pos)> {
        match node {
            Node::Seq { items, .. } => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    self.ident(item, &p).map(|id| (id, item.pos()))
                })
                .collect(),
            other => {
                self.problem(
                    other.pos(),
                    path,
                    format!("expected a list, found {}", other.kind()),
                );
                Vec::new()
            }
        }
    }

    fn manifest(&mut self, root: &Node) -> Option<AppManifest> {
        let entries = self.map(
            root,
            "",
            &["app", "entities", "cross_tenant_reads", "flags", "settings"],
        )?;
        let mut app = None;
        let mut entities = Vec::new();
        let mut entity_positions = Vec::new();
        let mut reads = Vec::new();
        let mut flags = Vec::new();
        let mut settings = Vec::new();
        for (key, pos, node) in entries {
            match key.as_str() {
                "app" => {
                    if let Some(s) = self.string(node, "app") {
                        match AppId::parse(s) {
                            Ok(id) => app = Some(id),
                            Err(e) => self.problem(node.pos(), "app", e.to_string()),
                        }
                    }
                }
                "entities" => {
                    if let Some(list) = self.map(node, "entities", &[]) {
                        for (name, epos, enode) in list {
                            let path = format!("entities.{name}");
                            let Some(ident) = self.ident_at(name, *epos, &path) else {
                                continue;
                            };
                            if let Some(entity) = self.entity(ident, enode, &path) {
                                entity_positions.push(*epos);
                                entities.push(entity);
                            }
                        }
                    }
                }
                "cross_tenant_reads" => reads = self.ident_list(node, "cross_tenant_reads"),
                "flags" => flags = self.flags(node),
                "settings" => settings = self.settings(node),
                _ => {}
            }
            let _ = pos;
        }
        let Some(app) = app else {
            if !entries.iter().any(|(k, _, _)| k == "app") {
                self.problem(root.pos(), "app", "missing: every manifest names its app");
            }
            return None;
        };
        if entities.is_empty() && !entries.iter().any(|(k, _, _)| k == "entities") {
            self.problem(
                root.pos(),
                "entities",
                "missing: declare at least one entity",
            );
        }
        self.cross_checks(&entities, &entity_positions, &reads);
        Some(AppManifest {
            app,
            entities,
            cross_tenant_reads: reads.into_iter().map(|(id, _)| id).collect(),
            flags,
            settings,
        })
    }

    /// The named, well-formed entries of a `flags:` or `settings:` section: name, position,
    /// path, the declaration node and its keys.
    #[allow(clippy::type_complexity)]
    fn declarations<'n>(
        &mut self,
        node: &'n Node,
        section: &str,
        keys: &[&str],
    ) -> Vec<(Ident, Pos, String, &'n Node, &'n [(String, Pos, Node)])> {
        let mut out = Vec::new();
        let Some(entries) = self.map(node, section, &[]) else {
            return out;
        };
        for (name, pos, decl) in entries {
            let path = format!("{section}.{name}");
            let Some(ident) = self.ident_at(name, *pos, &path) else {
                continue;
            };
            if let Some(fields) = self.map(decl, &path, keys) {
                out.push((ident, *pos, path, decl, fields));
            }
        }
        out
    }

    /// `flags: { name: { type: bool|string|number|json, default: …, description: … } }`.
    fn flags(&mut self, node: &Node) -> Vec<FlagDecl> {
        let mut out = Vec::new();
        for (name, pos, path, decl, fields) in self.declarations(
            node,
            "flags",
            &["type", "default", "description", "anonymous"],
        ) {
            let get = |k: &str| field_of(fields, k);
            let kind = match get("type").and_then(|n| self.string(n, &join(&path, "type"))) {
                Some("bool") => Some(FlagKind::Bool),
                Some("string") => Some(FlagKind::String),
                Some("number") => Some(FlagKind::Number),
                Some("json") => Some(FlagKind::Json),
                Some(other) => {
                    let at = get("type").map(Node::pos).unwrap_or(pos);
                    self.problem(
                        at,
                        &join(&path, "type"),
                        format!(
                            "unknown flag type {other:?}, expected bool, string, number or json"
                        ),
                    );
                    None
                }
                None => {
                    self.problem(
                        decl.pos(),
                        &join(&path, "type"),
                        "missing: bool, string, number or json",
                    );
                    None
                }
            };
            let Some(default_node) = get("default") else {
                self.problem(
                    decl.pos(),
                    &join(&path, "default"),
                    "missing: every flag has a default",
                );
                continue;
            };
            let default = default_node.to_json();
            let Some(kind) = kind else { continue };
            if !kind.accepts(&default) {
                self.problem(
                    default_node.pos(),
                    &join(&path, "default"),
                    format!(
                        "expected a {} value",
                        serde_json::to_value(kind)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or("valid")
                    ),
                );
                continue;
            }
            let description = get("description")
                .and_then(|n| self.string(n, &join(&path, "description")))
                .map(str::to_owned);
            let anonymous =
                get("anonymous").is_some_and(|n| self.bool(n, &join(&path, "anonymous")));
            out.push(FlagDecl {
                name,
                kind,
                default,
                description,
                anonymous,
            });
        }
        out
    }

    /// `settings: { name: { schema: {JSON Schema}, default: …, secret: bool } }`.
    fn settings(&mut self, node: &Node) -> Vec<SettingDecl> {
        let mut out = Vec::new();
        for (name, pos, path, decl, fields) in self.declarations(
            node,
            "settings",
            &["schema", "default", "secret", "anonymous"],
        ) {
            let get = |k: &str| field_of(fields, k);
            let schema = match get("schema") {
                Some(n @ Node::Map { .. }) => n.to_json(),
                Some(other) => {
                    self.problem(
                        other.pos(),
                        &join(&path, "schema"),
                        "expected a JSON Schema (a mapping)",
                    );
                    continue;
                }
                None => {
                    self.problem(
                        decl.pos(),
                        &join(&path, "schema"),
                        "missing: every setting has a JSON Schema",
                    );
                    continue;
                }
            };
            let secret = get("secret").is_some_and(|n| self.bool(n, &join(&path, "secret")));
            let default = get("default").map(Node::to_json);
            if secret && default.is_some() {
                let at = get("default").map(Node::pos).unwrap_or(pos);
                self.problem(
                    at,
                    &join(&path, "default"),
                    "a secret setting has no default in the manifest",
                );
                continue;
            }
            let anonymous =
                get("anonymous").is_some_and(|n| self.bool(n, &join(&path, "anonymous")));
            if secret && anonymous {
                let at = get("anonymous").map(Node::pos).unwrap_or(pos);
                self.problem(
                    at,
                    &join(&path, "anonymous"),
                    "a secret setting is never readable without credentials",
                );
                continue;
            }
            out.push(SettingDecl {
                name,
                schema,
                default,
                secret,
                anonymous,
            });
        }
        out
    }

    fn entity(&mut self, name: Ident, node: &Node, path: &str) -> Option<Entity> {
        let entries = self.map(
            node,
            path,
            &[
                "fields",
                "cross_tenant",
                "owner",
                "unique",
                "indexes",
                "permissions",
            ],
        )?;
        let mut entity = Entity {
            name,
            fields: Vec::new(),
            cross_tenant: false,
            owner: None,
            unique: Vec::new(),
            indexes: Vec::new(),
            permissions: None,
        };
        let mut perm_node: Option<(&Node, String)> = None;
        let mut owner_pos = Pos::default();
        for (key, _, value) in entries {
            let p = join(path, key);
            match key.as_str() {
                "fields" => {
                    if let Some(fields) = self.map(value, &p, &[]) {
                        for (fname, fpos, fnode) in fields {
                            let fp = join(&p, fname);
                            let Some(id) = self.ident_at(fname, *fpos, &fp) else {
                                continue;
                            };
                            if let Some(field) = self.field(id, fnode, &fp) {
                                entity.fields.push(field);
                            }
                        }
                    }
                }
                "cross_tenant" => entity.cross_tenant = self.bool(value, &p),
                "permissions" => perm_node = Some((value, p.clone())),
                "owner" => {
                    owner_pos = value.pos();
                    entity.owner = self.ident(value, &p);
                }
                "unique" | "indexes" => {
                    let sets = match value {
                        Node::Seq { items, .. } => items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| {
                                let ip = format!("{p}[{i}]");
                                (self.ident_list(item, &ip), ip)
                            })
                            .collect::<Vec<_>>(),
                        other => {
                            self.problem(other.pos(), &p, "expected a list of field lists");
                            Vec::new()
                        }
                    };
                    for (set, ip) in sets {
                        let mut names = Vec::new();
                        for (id, pos) in set {
                            if names.contains(&id) {
                                self.problem(pos, &ip, format!("field {id} listed twice"));
                            }
                            names.push(id);
                        }
                        if !names.is_empty() {
                            if key == "unique" {
                                entity.unique.push(names);
                            } else {
                                entity.indexes.push(names);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if entity.fields.is_empty() && !entries.iter().any(|(k, _, _)| k == "fields") {
            self.problem(node.pos(), path, "missing key \"fields\"");
        }
        if let Some((node, p)) = perm_node {
            entity.permissions = Some(self.permissions(&entity, node, &p));
        }
        if let Some(owner) = entity.owner.clone() {
            match entity.field(owner.as_str()) {
                None => entity.fields.push(Field {
                    name: owner,
                    ty: FieldType::Text { max_length: None },
                    required: false,
                    default: None,
                    unique: false,
                    search: false,
                    index: true,
                }),
                Some(f) if !matches!(f.ty, FieldType::Text { .. }) => self.problem(
                    owner_pos,
                    &join(path, "owner"),
                    format!("owner field {owner} must be of type text"),
                ),
                Some(_) => {}
            }
            if entity.cross_tenant {
                self.problem(
                    owner_pos,
                    &join(path, "owner"),
                    "a cross_tenant (global) entity has no owner",
                );
            }
        }
        Some(entity)
    }

    fn scope(&mut self, node: &Node, path: &str, has_owner: bool) -> Scope {
        match self.string(node, path) {
            Some("all") => Scope::All,
            Some("none") => Scope::None,
            Some("own") if has_owner => Scope::Own,
            Some("own") => {
                self.problem(
                    node.pos(),
                    path,
                    "scope own needs the entity's owner field (owner: <field>)",
                );
                Scope::None
            }
            Some(other) => {
                self.problem(
                    node.pos(),
                    path,
                    format!("unknown scope {other:?}, expected one of all, own, none"),
                );
                Scope::None
            }
            None => Scope::None,
        }
    }

    fn permissions(&mut self, entity: &Entity, node: &Node, path: &str) -> Vec<RolePermission> {
        let Some(entries) = self.map(node, path, &[]) else {
            return Vec::new();
        };
        let has_owner = entity.owner.is_some();
        let mut out = Vec::new();
        for (role, pos, rnode) in entries {
            let rpath = join(path, role);
            let role_ok = role.len() <= 63
                && role.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && role.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !role_ok {
                self.problem(*pos, &rpath, "role names match ^[a-z][a-z0-9_-]{0,62}$");
                continue;
            }
            let Some(keys) = self.map(
                rnode,
                &rpath,
                &["read", "create", "update", "delete", "hidden", "readonly"],
            ) else {
                continue;
            };
            let mut perm = RolePermission {
                role: role.clone(),
                read: Scope::None,
                create: Scope::None,
                update: Scope::None,
                delete: Scope::None,
                hidden: Vec::new(),
                readonly: Vec::new(),
            };
            for (key, _, v) in keys {
                let kp = join(&rpath, key);
                match key.as_str() {
                    "read" => perm.read = self.scope(v, &kp, has_owner),
                    "create" => perm.create = self.scope(v, &kp, has_owner),
                    "update" => perm.update = self.scope(v, &kp, has_owner),
                    "delete" => perm.delete = self.scope(v, &kp, has_owner),
                    "hidden" | "readonly" => {
                        let list = self.ident_list(v, &kp);
                        for (f, fpos) in &list {
                            if entity.field(f.as_str()).is_none() {
                                self.problem(*fpos, &kp, format!("unknown field \"{f}\""));
                            }
                        }
                        let names = list.into_iter().map(|(f, _)| f).collect();
                        if key == "hidden" {
                            perm.hidden = names;
                        } else {
                            perm.readonly = names;
                        }
                    }
                    _ => {}
                }
            }
            out.push(perm);
        }
        out
    }

    fn field(&mut self, name: Ident, node: &Node, path: &str) -> Option<Field> {
        // Shorthand: `title: text`.
        if let Node::Scalar { value, .. } = node {
            let ty = self.simple_type(value, node.pos(), path)?;
            return Some(Field {
                name,
                ty,
                required: false,
                default: None,
                unique: false,
                search: false,
                index: false,
            });
        }
        let entries = self.map(
            node,
            path,
            &[
                "type",
                "required",
                "default",
                "unique",
                "search",
                "index",
                "values",
                "entity",
                "max_length",
            ],
        )?;
        let get = |k: &str| entries.iter().find(|(key, _, _)| key == k).map(|e| &e.2);
        let Some(type_node) = get("type") else {
            self.problem(node.pos(), path, "missing key \"type\"");
            return None;
        };
        let type_path = join(path, "type");
        let type_name = self.string(type_node, &type_path)?;
        let ty = match type_name {
            "enum" => {
                let vpath = join(path, "values");
                let Some(values) = get("values") else {
                    self.problem(node.pos(), path, "an enum needs \"values\"");
                    return None;
                };
                let values: Vec<String> = match values {
                    Node::Seq { items, .. } if !items.is_empty() => items
                        .iter()
                        .filter_map(|v| self.string(v, &vpath).map(str::to_owned))
                        .collect(),
                    other => {
                        self.problem(other.pos(), &vpath, "expected a non-empty list of strings");
                        return None;
                    }
                };
                for (i, v) in values.iter().enumerate() {
                    if values[..i].contains(v) {
                        self.problem(
                            get("values").map(Node::pos).unwrap_or_default(),
                            &vpath,
                            format!("duplicate enum value {v:?}"),
                        );
                    }
                }
                FieldType::Enum { values }
            }
            "ref" => {
                let Some(target) = get("entity") else {
                    self.problem(node.pos(), path, "a ref needs \"entity\"");
                    return None;
                };
                FieldType::Ref {
                    entity: self.ident(target, &join(path, "entity"))?,
                }
            }
            other => self.simple_type(other, type_node.pos(), &type_path)?,
        };
        for (k, needs) in [
            ("values", "enum"),
            ("entity", "ref"),
            ("max_length", "text"),
        ] {
            if let Some(n) = get(k)
                && ty.name() != needs
            {
                self.problem(
                    n.pos(),
                    &join(path, k),
                    format!("{k:?} only applies to type {needs}"),
                );
            }
        }
        let ty = match (ty, get("max_length")) {
            (FieldType::Text { .. }, Some(n)) => match n.to_json().as_u64() {
                Some(max) if (1..=10_000_000).contains(&max) => FieldType::Text {
                    max_length: u32::try_from(max).ok(),
                },
                _ => {
                    self.problem(
                        n.pos(),
                        &join(path, "max_length"),
                        "expected a positive integer",
                    );
                    FieldType::Text { max_length: None }
                }
            },
            (ty, _) => ty,
        };
        let mut field = Field {
            name,
            ty,
            required: false,
            default: None,
            unique: false,
            search: false,
            index: false,
        };
        for (key, flag) in [
            ("required", &mut field.required),
            ("unique", &mut field.unique),
            ("search", &mut field.search),
            ("index", &mut field.index),
        ] {
            if let Some(n) = get(key) {
                *flag = self.bool(n, &join(path, key));
            }
        }
        if let Some(n) = get("default") {
            let dpath = join(path, "default");
            let value = n.to_json();
            if matches!(field.ty, FieldType::Ref { .. }) {
                self.problem(n.pos(), &dpath, "a ref cannot have a default");
            } else if let Err(p) = field.ty.check(&value) {
                let msg = match p {
                    ValueProblem::WrongType { expected } => {
                        format!("default {value} is not {expected}")
                    }
                    ValueProblem::OutOfRange { detail } => format!("default {detail}"),
                };
                self.problem(n.pos(), &dpath, msg);
            } else {
                field.default = Some(value);
            }
        }
        if field.search && !matches!(field.ty, FieldType::Text { .. } | FieldType::Enum { .. }) {
            self.problem(
                get("search").map(Node::pos).unwrap_or_default(),
                &join(path, "search"),
                "only text and enum fields can be searched",
            );
        }
        if field.unique && matches!(field.ty, FieldType::Json) {
            self.problem(
                get("unique").map(Node::pos).unwrap_or_default(),
                &join(path, "unique"),
                "a json field cannot be unique",
            );
        }
        Some(field)
    }

    fn simple_type(&mut self, name: &str, pos: Pos, path: &str) -> Option<FieldType> {
        Some(match name {
            "text" => FieldType::Text { max_length: None },
            "int" => FieldType::Int,
            "bigint" => FieldType::Bigint,
            "numeric" => FieldType::Numeric,
            "bool" => FieldType::Bool,
            "timestamp" => FieldType::Timestamp,
            "date" => FieldType::Date,
            "uuid" => FieldType::Uuid,
            "json" => FieldType::Json,
            "enum" | "ref" => {
                self.problem(
                    pos,
                    path,
                    format!("type {name} needs the long form {{ type: {name}, … }}"),
                );
                return None;
            }
            other => {
                self.problem(
                    pos,
                    path,
                    format!(
                        "unknown type {other:?}, expected one of {}",
                        TYPE_NAMES.join(", ")
                    ),
                );
                return None;
            }
        })
    }

    /// Checks that need the whole manifest: references, unique/index field names, grants.
    fn cross_checks(&mut self, entities: &[Entity], positions: &[Pos], reads: &[(Ident, Pos)]) {
        for (entity, pos) in entities.iter().zip(positions) {
            let path = format!("entities.{}", entity.name);
            for field in &entity.fields {
                if let FieldType::Ref { entity: target } = &field.ty {
                    let fpath = format!("{path}.fields.{}.entity", field.name);
                    match entities.iter().find(|e| e.name == *target) {
                        None => self.problem(
                            *pos,
                            &fpath,
                            format!("refers to entity \"{target}\", which is not declared"),
                        ),
                        Some(t) if entity.cross_tenant && !t.cross_tenant => self.problem(
                            *pos,
                            &fpath,
                            format!(
                                "global entity {} cannot refer to tenant entity {target}",
                                entity.name
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            for (kind, sets) in [("unique", &entity.unique), ("indexes", &entity.indexes)] {
                for (i, set) in sets.iter().enumerate() {
                    for name in set {
                        if entity.field(name.as_str()).is_none() {
                            self.problem(
                                *pos,
                                &format!("{path}.{kind}[{i}]"),
                                format!("unknown field \"{name}\""),
                            );
                        }
                    }
                }
            }
        }
        for (i, (name, pos)) in reads.iter().enumerate() {
            let path = format!("cross_tenant_reads[{i}]");
            match entities.iter().find(|e| e.name == *name) {
                None => self.problem(*pos, &path, format!("unknown entity \"{name}\"")),
                Some(e) if e.cross_tenant => self.problem(
                    *pos,
                    &path,
                    format!(
                        "{name} is global (cross_tenant: true) and readable by every tenant already"
                    ),
                ),
                Some(_) => {}
            }
            if reads[..i].iter().any(|(n, _)| n == name) {
                self.problem(*pos, &path, format!("{name} listed twice"));
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"app: helpdesk
entities:
  customer:
    fields:
      name: { type: text, required: true, unique: true, search: true }
  ticket:
    owner: author
    fields:
      title: { type: text, required: true, search: true, max_length: 200 }
      prio: { type: int, default: 3 }
      status: { type: enum, values: [open, closed], default: open }
      customer: { type: ref, entity: customer }
      country: { type: ref, entity: country }
      body: text
      due: date
      paid: numeric
    unique: [[customer, title]]
    indexes: [[status, prio]]
  country:
    cross_tenant: true
    fields:
      code: { type: text, required: true, unique: true }
cross_tenant_reads: [ticket]
"#;

    #[test]
    fn a_good_manifest_parses_with_everything_in_it() {
        let m = AppManifest::from_yaml(GOOD, "helpdesk.yaml").unwrap();
        assert_eq!(m.app.as_str(), "helpdesk");
        let ticket = m.entity("ticket").unwrap();
        assert_eq!(ticket.field("prio").unwrap().default, Some(3.into()));
        assert_eq!(
            ticket.field("author").unwrap().ty,
            FieldType::Text { max_length: None },
            "owner field is added as text"
        );
        assert!(m.entity("country").unwrap().cross_tenant);
        assert!(m.grants_cross_tenant("ticket"));
        assert!(!m.grants_cross_tenant("customer"));
    }

    #[test]
    fn a_manifest_round_trips_through_json() {
        let m = AppManifest::from_yaml(GOOD, "x").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: AppManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(m, back);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_line_and_path() {
        let bad = r#"app: helpdesk
entities:
  ticket:
    fields:
      prio: { type: integer }
      select: text
      customer: { type: ref, entity: client }
      tenant_id: text
      status: { type: enum, values: [a, b], default: c }
    unique: [[nope]]
  Bad-Name:
    fields: { x: text }
cross_tenant_reads: [missing]
"#;
        let err = AppManifest::from_yaml(bad, "helpdesk.yaml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "helpdesk.yaml:5:21: entities.ticket.fields.prio.type: unknown type \"integer\", expected one of text, int"
            ),
            "{text}"
        );
        assert!(text.contains("entities.ticket.fields.select"), "{text}");
        assert!(text.contains("client"), "{text}");
        assert!(text.contains("platform column"), "{text}");
        assert!(
            text.contains("entities.ticket.fields.status.default"),
            "{text}"
        );
        assert!(text.contains("entities.ticket.unique[0]"), "{text}");
        assert!(text.contains("entities.Bad-Name"), "{text}");
        assert!(text.contains("cross_tenant_reads[0]"), "{text}");
        assert!(err.problems.len() >= 8, "{text}");
    }

    #[test]
    fn unknown_keys_and_duplicate_names_are_refused() {
        let bad = "app: helpdesk\nentities:\n  ticket:\n    feilds: {}\n    fields:\n      a: text\n      a: int\n";
        let err = AppManifest::from_yaml(bad, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key \"a\""), "{err}");
    }

    #[test]
    fn flags_and_settings_are_declared_with_typed_defaults() {
        let good = "app: hd\nentities:\n  t:\n    fields:\n      a: text\nflags:\n  beta: { type: bool, default: true }\n  layout: { type: json, default: { cols: 2 } }\nsettings:\n  sla: { schema: { type: integer }, default: 48 }\n  key: { schema: { type: string }, secret: true }\n";
        let m = AppManifest::from_yaml(good, "m.yaml").unwrap();
        assert_eq!(m.flag("beta").unwrap().default, serde_json::json!(true));
        assert_eq!(m.flag("layout").unwrap().default["cols"], 2);
        assert!(m.setting("key").unwrap().secret);
        let bad = "app: hd\nentities:\n  t:\n    fields:\n      a: text\nflags:\n  beta: { type: bool, default: yes please }\n  odd: { type: color, default: red }\n  nodefault: { type: bool }\nsettings:\n  s: { schema: 5 }\n  k: { schema: { type: string }, secret: true, default: x }\n";
        let err = AppManifest::from_yaml(bad, "m.yaml")
            .unwrap_err()
            .to_string();
        for expected in [
            "m.yaml:7:",
            "flags.beta.default: expected a bool value",
            "flags.odd.type: unknown flag type",
            "flags.nodefault.default: missing",
            "settings.s.schema: expected a JSON Schema",
            "settings.k.default: a secret setting has no default",
        ] {
            assert!(err.contains(expected), "{expected} in {err}");
        }
    }

    #[test]
    fn unknown_entity_keys_are_refused() {
        let bad =
            "app: helpdesk\nentities:\n  ticket:\n    feilds: {}\n    fields:\n      a: text\n";
        let err = AppManifest::from_yaml(bad, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.yaml:4:5: entities.ticket.feilds: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn a_global_entity_cannot_point_at_tenant_data_or_be_granted() {
        let bad = "app: helpdesk\nentities:\n  t:\n    fields: { a: text }\n  g:\n    cross_tenant: true\n    fields:\n      r: { type: ref, entity: t }\ncross_tenant_reads: [g]\n";
        let err = AppManifest::from_yaml(bad, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot refer to tenant entity"), "{err}");
        assert!(err.contains("readable by every tenant already"), "{err}");
    }

    #[test]
    fn permissions_combine_roles_and_validate() {
        let yaml = "app: helpdesk\nentities:\n  ticket:\n    owner: author\n    fields:\n      title: text\n      note: text\n      status: text\n    permissions:\n      agent: { read: all, create: all, update: all, delete: all }\n      customer: { read: own, create: all, update: own, hidden: [note], readonly: [status] }\n      anonymous: { read: all, hidden: [note, status] }\n";
        let m = AppManifest::from_yaml(yaml, "m.yaml").unwrap();
        let t = m.entity("ticket").unwrap();
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = t.effective(&roles(&["customer"]), Action::Read);
        assert_eq!(
            (c.scope, c.hidden.clone()),
            (Scope::Own, vec!["note".to_owned()])
        );
        assert_eq!(
            t.effective(&roles(&["customer"]), Action::Delete).scope,
            Scope::None
        );
        assert_eq!(
            t.effective(&roles(&["customer"]), Action::Update).readonly,
            ["status"]
        );
        let both = t.effective(&roles(&["customer", "agent"]), Action::Read);
        assert_eq!((both.scope, both.hidden.len()), (Scope::All, 0));
        assert_eq!(
            t.effective(&roles(&["stranger"]), Action::Read).scope,
            Scope::None
        );
        let anon = t.effective(&roles(&["anonymous"]), Action::Read);
        assert_eq!(anon.hidden, ["note", "status"]);
        // Without a permissions block: signed-in roles may do all, anonymous nothing.
        let open =
            AppManifest::from_yaml("app: x1\nentities:\n  a:\n    fields: { b: text }\n", "m")
                .unwrap();
        let a = open.entity("a").unwrap();
        assert_eq!(
            a.effective(&roles(&["user"]), Action::Delete).scope,
            Scope::All
        );
        assert_eq!(
            a.effective(&roles(&["anonymous"]), Action::Read).scope,
            Scope::None
        );

        let bad = "app: helpdesk\nentities:\n  ticket:\n    fields:\n      title: text\n    permissions:\n      agent: { read: own, write: all, hidden: [nope] }\n      Bad: { read: all }\n";
        let err = AppManifest::from_yaml(bad, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entities.ticket.permissions.agent.read: scope own needs"),
            "{err}"
        );
        assert!(
            err.contains("entities.ticket.permissions.agent.write: unknown key"),
            "{err}"
        );
        assert!(err.contains("unknown field \"nope\""), "{err}");
        assert!(err.contains("entities.ticket.permissions.Bad"), "{err}");
    }

    #[test]
    fn values_are_checked_by_type() {
        assert!(FieldType::Int.check(&Value::from(5)).is_ok());
        assert!(matches!(
            FieldType::Int.check(&Value::from(1_i64 << 40)),
            Err(ValueProblem::OutOfRange { .. })
        ));
        assert!(matches!(
            FieldType::Int.check(&Value::from("5")),
            Err(ValueProblem::WrongType { .. })
        ));
        assert!(
            FieldType::Uuid
                .check(&Value::from("0b6e6c1e-5a4f-4e4b-9c1e-000000000000"))
                .is_ok()
        );
        assert!(FieldType::Uuid.check(&Value::from("nope")).is_err());
        assert!(FieldType::Date.check(&Value::from("2026-11-23")).is_ok());
        assert!(FieldType::Date.check(&Value::from("2026-13-23")).is_err());
        assert!(
            FieldType::Timestamp
                .check(&Value::from("2026-11-23T10:00:00Z"))
                .is_ok()
        );
        assert!(
            FieldType::Timestamp
                .check(&Value::from("2026-11-23T10:00:00+01:00"))
                .is_ok()
        );
        assert!(FieldType::Numeric.check(&Value::from("12.50")).is_ok());
        assert!(FieldType::Numeric.check(&Value::from("12.5.0")).is_err());
        assert!(
            FieldType::Text {
                max_length: Some(3)
            }
            .check(&Value::from("abcd"))
            .is_err()
        );
        assert!(
            FieldType::Text { max_length: None }
                .check(&Value::from("a\0b"))
                .is_err()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("BULKHEAD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
        ))]

        /// Any Unicode as a name, type, default or enum value gives a manifest or positioned
        /// problems, never a panic; a default the manifest accepts passes its type's check.
        #[test]
        fn arbitrary_unicode_scalars_never_panic(
            name in "\\PC{0,20}", ty in "\\PC{0,12}|timestamp|date|numeric|uuid|json|int",
            default in "\\PC{0,40}", value in "\\PC{0,10}"
        ) {
            let doc = format!(
                "app: hd\nentities:\n  {name}:\n    fields:\n      f: {{ type: {ty}, default: \"{default}\" }}\n      e: {{ type: enum, values: [\"{value}\", b] }}\nflags:\n  {name}: {{ type: {ty}, default: {default} }}\n"
            );
            if let Ok(m) = AppManifest::from_yaml(&doc, "manifest.yaml") {
                for e in &m.entities {
                    for f in &e.fields {
                        if let Some(d) = &f.default {
                            proptest::prop_assert!(f.ty.check(d).is_ok(), "{d:?}");
                        }
                    }
                }
            }
        }
    }
}
