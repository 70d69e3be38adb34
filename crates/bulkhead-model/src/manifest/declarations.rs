//! Validation of the `flags:` and `settings:` sections.

use super::validate::{Validator, field_of, join};
use super::{FlagDecl, FlagKind, SettingDecl};
use crate::ids::Ident;
use crate::yaml::{Node, Pos};

impl Validator {
    /// The named, well-formed entries of a `flags:` or `settings:` section: name, position,
    /// path, the declaration node and its keys.
    #[allow(clippy::type_complexity)]
    pub(super) fn declarations<'n>(
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
    pub(super) fn flags(&mut self, node: &Node) -> Vec<FlagDecl> {
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
    pub(super) fn settings(&mut self, node: &Node) -> Vec<SettingDecl> {
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
}
