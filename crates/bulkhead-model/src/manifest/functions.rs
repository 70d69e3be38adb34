//! The `functions:` section: an app's own JavaScript functions (a mini-app bundle's
//! `functions/` modules), the routes that call them and the limits of each invocation.
//!
//! ```yaml
//! functions:
//!   limits: { memory_mb: 64, time_ms: 2000 }
//!   routes:
//!     - { method: GET, path: /notes, function: notes.list, roles: [agent] }
//!     - { method: GET, path: /status, function: status.show, anonymous: true }
//! ```
//!
//! `function: notes.list` is the export `list` of `functions/notes.js`.
//!
//! `storage: { read: [agent], write: [admin] }` lets browsers (the SDK served at
//! `/sdk/bulkhead.js`) read or write the tenant-wide storage directly with those roles; without
//! it only functions reach it. A user's own storage (`storage.user`) is always theirs.

use serde::{Deserialize, Serialize};

use super::Field;
use super::route_schema::RouteResponse;
use super::validate::{Validator, field_of, join, role_name_ok};
use crate::yaml::Node;

/// The methods a route may answer.
pub const ROUTE_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Limits of one invocation; exceeding one ends it with its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLimits {
    /// Heap of the invocation's runtime, MiB.
    pub memory_mb: u32,
    /// CPU and wall time of the invocation, milliseconds (host calls included).
    pub time_ms: u32,
    /// Native stack of the interpreter, KiB (bounds recursion).
    pub stack_kb: u32,
    /// The response body, KiB.
    pub output_kb: u32,
    /// Promises the invocation may create.
    pub promises: u32,
    /// Calls into the `bulkhead` module (database, storage, …).
    pub host_calls: u32,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            time_ms: 2000,
            stack_kb: 512,
            output_kb: 1024,
            promises: 10_000,
            host_calls: 1_000,
        }
    }
}

/// Upper bounds an app may configure (an operator's guard against a manifest asking for all
/// of the worker's memory).
const MAX_LIMITS: FunctionLimits = FunctionLimits {
    memory_mb: 1024,
    time_ms: 60_000,
    stack_kb: 8 * 1024,
    output_kb: 16 * 1024,
    promises: 1_000_000,
    host_calls: 100_000,
};

/// A function of the bundle: export `export` of `functions/{module}.js`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRef {
    pub module: String,
    pub export: String,
}

impl FunctionRef {
    /// The bundle path of the module: `functions/{module}.js`.
    pub fn module_path(&self) -> String {
        format!("functions/{}.js", self.module)
    }

    /// `module.export` as written in the manifest.
    pub fn name(&self) -> String {
        format!("{}.{}", self.module, self.export)
    }

    /// Parses `module.export`; the module may name a sub-directory (`admin/users.list`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((module, export)) = s.rsplit_once('.') else {
            return Err(format!(
                "{s:?} is not `module.export` (the export of functions/<module>.js)"
            ));
        };
        let segment_ok = |seg: &str| {
            !seg.is_empty()
                && seg.len() <= 64
                && seg.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        if !module.split('/').all(segment_ok) {
            return Err(format!(
                "module {module:?}: path segments of lower-case letters, digits, '_' and '-'"
            ));
        }
        let export_ok = export.len() <= 64
            && export
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && export
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !export_ok {
            return Err(format!("export {export:?} is not a JavaScript identifier"));
        }
        Ok(Self {
            module: module.to_owned(),
            export: export.to_owned(),
        })
    }
}

/// One route: `method path` under `/fn` calls `function`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub method: String,
    /// `/notes/{id}`: literal segments and `{name}` parameters.
    pub path: String,
    pub function: FunctionRef,
    /// Roles allowed to call it; empty: every authenticated caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Callers without credentials may call it on hosts that name the tenant.
    #[serde(default)]
    pub anonymous: bool,
    /// The app's service role for this route: its data calls use this role's permissions
    /// instead of the caller's (`user` still names the caller, and rows a caller owns stay
    /// theirs). Only roles the manifest's permissions name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// The JSON body the route takes, checked before the function runs; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<Field>,
    /// What the function answers (for the OpenAPI document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RouteResponse>,
}

impl Route {
    /// The path's segments: `Ok(literal)` or `Err(parameter name)`.
    pub fn segments(&self) -> impl Iterator<Item = Result<&str, &str>> {
        self.path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(param) => Err(param),
                    None => Ok(s),
                },
            )
    }

    /// The parameters when `path` (without `/fn`) matches this route.
    pub fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let given: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mine: Vec<_> = self.segments().collect();
        if given.len() != mine.len() {
            return None;
        }
        let mut params = Vec::new();
        for (g, m) in given.iter().zip(mine) {
            match m {
                Ok(lit) if lit == *g => {}
                Ok(_) => return None,
                Err(name) => params.push((name.to_owned(), (*g).to_owned())),
            }
        }
        Some(params)
    }
}

/// Roles whose browsers may reach the tenant-wide storage directly (through the SDK); empty:
/// nobody (functions always may, and decide for their callers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserStorage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
}

impl BrowserStorage {
    /// Whether a caller with `roles` may read (`write == false`) or write tenant storage.
    pub fn allows(&self, roles: &[String], write: bool) -> bool {
        let allowed = if write { &self.write } else { &self.read };
        allowed.iter().any(|r| roles.contains(r))
    }

    fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }
}

/// The app's functions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Functions {
    #[serde(default)]
    pub limits: FunctionLimits,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "BrowserStorage::is_empty")]
    pub storage: BrowserStorage,
}

impl Functions {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && self.limits == FunctionLimits::default()
            && self.storage.is_empty()
    }

    /// The route `method path` selects, with its parameters.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        self.routes
            .iter()
            .find_map(|r| r.matches(method, path).map(|p| (r, p)))
    }
}

fn path_ok(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > 200 {
        return Err("longer than 200 characters".into());
    }
    let mut seen = Vec::new();
    for seg in path.trim_start_matches('/').split('/') {
        if seg.is_empty() {
            if path == "/" {
                continue;
            }
            return Err("empty segment".into());
        }
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(format!(
                    "parameter {{{name}}}: lower-case letters, digits, '_'"
                ));
            }
            if seen.contains(&name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            seen.push(name);
        } else if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "segment {seg:?}: letters, digits, '-', '_', '.' or a {{parameter}}"
            ));
        }
    }
    Ok(())
}

impl Validator {
    /// `functions: { limits: {...}, routes: [...] }`.
    pub(super) fn functions(&mut self, node: &Node) -> Functions {
        let mut out = Functions::default();
        let Some(entries) = self.map(node, "functions", &["limits", "routes", "storage"]) else {
            return out;
        };
        if let Some(limits) = field_of(entries, "limits") {
            out.limits = self.limits(limits);
        }
        if let Some(storage) = field_of(entries, "storage")
            && let Some(access) = self.map(storage, "functions.storage", &["read", "write"])
        {
            let mut roles = |key: &str| match field_of(access, key) {
                Some(n) => self
                    .ident_list(n, &join("functions.storage", key))
                    .into_iter()
                    .map(|(r, _)| r.as_str().to_owned())
                    .collect(),
                None => Vec::new(),
            };
            out.storage = BrowserStorage {
                read: roles("read"),
                write: roles("write"),
            };
        }
        if let Some(routes) = field_of(entries, "routes") {
            match routes {
                Node::Seq { items, .. } => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(r) = self.route(item, &format!("functions.routes[{i}]")) {
                            if out
                                .routes
                                .iter()
                                .any(|o| o.method == r.method && o.path == r.path)
                            {
                                self.problem(
                                    item.pos(),
                                    &format!("functions.routes[{i}]"),
                                    format!("{} {} is declared twice", r.method, r.path),
                                );
                            }
                            out.routes.push(r);
                        }
                    }
                }
                other => self.problem(
                    other.pos(),
                    "functions.routes",
                    format!("expected a list, found {}", other.kind()),
                ),
            }
        }
        out
    }

    fn limits(&mut self, node: &Node) -> FunctionLimits {
        let mut limits = FunctionLimits::default();
        let keys = [
            "memory_mb",
            "time_ms",
            "stack_kb",
            "output_kb",
            "promises",
            "host_calls",
        ];
        let Some(entries) = self.map(node, "functions.limits", &keys) else {
            return limits;
        };
        for (key, _, value) in entries {
            let path = join("functions.limits", key);
            let (slot, max) = match key.as_str() {
                "memory_mb" => (&mut limits.memory_mb, MAX_LIMITS.memory_mb),
                "time_ms" => (&mut limits.time_ms, MAX_LIMITS.time_ms),
                "stack_kb" => (&mut limits.stack_kb, MAX_LIMITS.stack_kb),
                "output_kb" => (&mut limits.output_kb, MAX_LIMITS.output_kb),
                "promises" => (&mut limits.promises, MAX_LIMITS.promises),
                "host_calls" => (&mut limits.host_calls, MAX_LIMITS.host_calls),
                _ => continue,
            };
            match value.to_json().as_u64() {
                Some(n) if n >= 1 && n <= u64::from(max) => *slot = n as u32,
                _ => self.problem(
                    value.pos(),
                    &path,
                    format!("expected a whole number from 1 to {max}"),
                ),
            }
        }
        limits
    }

    fn route(&mut self, node: &Node, path: &str) -> Option<Route> {
        let entries = self.map(
            node,
            path,
            &[
                "method",
                "path",
                "function",
                "roles",
                "anonymous",
                "run_as",
                "body",
                "response",
            ],
        )?;
        let mut ok = true;
        let need = |v: &mut Self, key: &str| -> Option<String> {
            match field_of(entries, key) {
                Some(n) => v.string(n, &join(path, key)).map(str::to_owned),
                None => {
                    v.problem(node.pos(), &join(path, key), "missing");
                    None
                }
            }
        };
        let method = need(self, "method");
        let route_path = need(self, "path");
        let function = need(self, "function");
        let method = method.and_then(|m| {
            let upper = m.to_ascii_uppercase();
            if ROUTE_METHODS.contains(&upper.as_str()) {
                Some(upper)
            } else {
                let at = field_of(entries, "method").map_or(node.pos(), Node::pos);
                self.problem(
                    at,
                    &join(path, "method"),
                    format!("{m:?}: expected one of {}", ROUTE_METHODS.join(", ")),
                );
                None
            }
        });
        if let Some(p) = &route_path
            && let Err(e) = path_ok(p)
        {
            let at = field_of(entries, "path").map_or(node.pos(), Node::pos);
            self.problem(at, &join(path, "path"), e);
            ok = false;
        }
        let function = function.and_then(|f| match FunctionRef::parse(&f) {
            Ok(f) => Some(f),
            Err(e) => {
                let at = field_of(entries, "function").map_or(node.pos(), Node::pos);
                self.problem(at, &join(path, "function"), e);
                None
            }
        });
        let roles = match field_of(entries, "roles") {
            Some(n) => self
                .ident_list(n, &join(path, "roles"))
                .into_iter()
                .map(|(r, _)| r.as_str().to_owned())
                .collect(),
            None => Vec::new(),
        };
        let anonymous = field_of(entries, "anonymous")
            .map(|n| self.bool(n, &join(path, "anonymous")))
            .unwrap_or(false);
        let run_as = field_of(entries, "run_as").and_then(|n| {
            let at = join(path, "run_as");
            let role = self.string(n, &at)?.to_owned();
            if !role_name_ok(&role) {
                self.problem(n.pos(), &at, "role names match ^[a-z][a-z0-9_-]{0,62}$");
                return None;
            }
            if role == super::ANONYMOUS_ROLE {
                self.problem(n.pos(), &at, "a route cannot run as the anonymous role");
                return None;
            }
            // Known roles are those the entities' permissions name: checked once all are read.
            self.named_roles.push((role.clone(), n.pos(), at));
            Some(role)
        });
        let body = field_of(entries, "body")
            .map(|n| self.route_body(n, &join(path, "body")))
            .unwrap_or_default();
        if !body.is_empty() && method.as_deref() == Some("GET") {
            self.problem(node.pos(), &join(path, "body"), "a GET route takes no body");
        }
        let response = field_of(entries, "response")
            .and_then(|n| self.route_response(n, &join(path, "response")));
        if let Some(r) = &response
            && let Some(entity) = r.entity()
        {
            let at = field_of(entries, "response").map_or(node.pos(), Node::pos);
            self.named_entities
                .push((entity.as_str().to_owned(), at, join(path, "response")));
        }
        if !ok {
            return None;
        }
        Some(Route {
            method: method?,
            path: route_path?,
            function: function?,
            roles,
            anonymous,
            run_as,
            body,
            response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_and_routes_parse_and_match() {
        let f = FunctionRef::parse("admin/users.list").unwrap();
        assert_eq!(f.module_path(), "functions/admin/users.js");
        for bad in [
            "list", ".list", "a..b", "../x.y", "A.b", "a.1b", "a/.b", "a.b-c",
        ] {
            assert!(FunctionRef::parse(bad).is_err(), "{bad}");
        }
        let r = Route {
            method: "GET".into(),
            path: "/notes/{id}".into(),
            function: f,
            roles: vec![],
            anonymous: false,
            run_as: None,
            body: vec![],
            response: None,
        };
        assert_eq!(
            r.matches("get", "/notes/7"),
            Some(vec![("id".into(), "7".into())])
        );
        assert_eq!(r.matches("GET", "/notes"), None);
        assert_eq!(r.matches("POST", "/notes/7"), None);
        assert_eq!(r.matches("GET", "/notes/7/x"), None);
        assert!(path_ok("/a/{x}/{x}").is_err());
        assert!(path_ok("a").is_err());
        assert!(path_ok("/a//b").is_err());
        assert!(path_ok("/").is_ok());
    }

    #[test]
    fn browser_storage_grants_only_the_listed_roles_and_typos_are_problems() {
        let base = "app: notes\nentities:\n  t:\n    fields: { n: text }\n";
        let m = crate::AppManifest::from_yaml(
            &format!(
                "{base}functions:\n  storage: {{ read: [agent, customer], write: [agent] }}\n"
            ),
            "m.yaml",
        )
        .unwrap();
        let s = &m.functions.storage;
        let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(s.allows(&roles(&["customer"]), false));
        assert!(!s.allows(&roles(&["customer"]), true));
        assert!(s.allows(&roles(&["agent"]), true));
        assert!(!BrowserStorage::default().allows(&roles(&["agent"]), false));
        let err = crate::AppManifest::from_yaml(
            &format!("{base}functions:\n  storage: {{ reed: [agent] }}\n"),
            "m.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("reed"), "{err}");
    }
}
