//! What a function route declares about its exchange, beyond the path: the JSON body it takes
//! (checked by the platform before the function runs), what it answers (for the OpenAPI
//! document) and the service role its data calls run as.
//!
//! ```yaml
//! - method: POST
//!   path: /tickets
//!   function: intake.open
//!   anonymous: true
//!   run_as: intake              # the data calls use the `intake` role's permissions
//!   body:                       # the fields' syntax of entities
//!     title: { type: text, required: true, max_length: 200 }
//!     priority: { type: enum, values: [low, high] }
//!   response: ticket            # or [ticket], or a map of fields
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Field;
use super::validate::{Validator, join};
use crate::ids::Ident;
use crate::values::ValueProblem;
use crate::yaml::Node;
use crate::{Coded, ErrorCode};

/// What a route answers, as the OpenAPI document describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteResponse {
    /// One record of the entity (`response: ticket`).
    Entity(Ident),
    /// A list of its records (`response: [ticket]`).
    List(Ident),
    /// An object of these fields (`response: { count: int }`).
    Fields(Vec<Field>),
}

impl RouteResponse {
    /// The entity it names, if any.
    pub fn entity(&self) -> Option<&Ident> {
        match self {
            RouteResponse::Entity(e) | RouteResponse::List(e) => Some(e),
            RouteResponse::Fields(_) => None,
        }
    }
}

/// Why a request body does not match the route's declared `body`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyProblem {
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
}

impl Coded for BodyProblem {
    fn code(&self) -> ErrorCode {
        self.code
    }
    fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// Checks `body` against the declared fields: a JSON object with no other keys, every
/// required field present and not null, every value of its field's type. Nothing declared:
/// anything goes (the function decides).
pub fn check_body(fields: &[Field], body: &Value) -> Result<(), BodyProblem> {
    if fields.is_empty() {
        return Ok(());
    }
    let problem = |code, field: Option<&str>, message: String| BodyProblem {
        code,
        field: field.map(str::to_owned),
        message,
    };
    let Some(object) = body.as_object() else {
        return Err(problem(
            ErrorCode::WrongType,
            None,
            "this route takes a JSON object".into(),
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !fields.iter().any(|f| f.name.as_str() == k.as_str()))
    {
        return Err(problem(
            ErrorCode::UnknownField,
            Some(unknown),
            format!("this route takes no field {unknown:?}"),
        ));
    }
    for field in fields {
        let name = field.name.as_str();
        match object.get(name) {
            None | Some(Value::Null) if field.required => {
                return Err(problem(
                    ErrorCode::MissingField,
                    Some(name),
                    format!("{name} is required"),
                ));
            }
            None | Some(Value::Null) => {}
            Some(v) => field.ty.check(v).map_err(|p| match p {
                ValueProblem::WrongType { expected } => problem(
                    ErrorCode::WrongType,
                    Some(name),
                    format!("{name} must be {expected}"),
                ),
                ValueProblem::OutOfRange { detail } => problem(
                    ErrorCode::OutOfRange,
                    Some(name),
                    format!("{name}: {detail}"),
                ),
            })?,
        }
    }
    Ok(())
}

impl Validator {
    /// `body:` of a route: fields in the entities' syntax (only `type`, `required` and the
    /// type's own keys mean something here).
    pub(super) fn route_body(&mut self, node: &Node, path: &str) -> Vec<Field> {
        let Some(entries) = self.map(node, path, &[]) else {
            return Vec::new();
        };
        let mut fields = Vec::new();
        for (name, pos, fnode) in entries {
            let fpath = join(path, name);
            // JSON keys, not columns: `id` or `created_at` may be declared, a tenant never.
            if name == "tenant_id" {
                self.problem(
                    *pos,
                    &fpath,
                    "no route takes or answers a tenant id: the platform decides the tenant",
                );
                continue;
            }
            let ident = match Ident::parse(name) {
                Ok(id) => id,
                Err(e) => {
                    self.problem(*pos, &fpath, e.to_string());
                    continue;
                }
            };
            let Some(field) = self.field(ident, fnode, &fpath) else {
                continue;
            };
            if field.unique || field.search || field.index || field.default.is_some() {
                self.problem(
                    *pos,
                    &fpath,
                    "unique, search, index and default describe stored fields, not a request body",
                );
            }
            fields.push(field);
        }
        fields
    }

    /// `response:` of a route: an entity name, `[entity]`, or a map of fields.
    pub(super) fn route_response(&mut self, node: &Node, path: &str) -> Option<RouteResponse> {
        match node {
            Node::Scalar { .. } => self.ident(node, path).map(RouteResponse::Entity),
            Node::Seq { items, .. } if items.len() == 1 => {
                self.ident(&items[0], path).map(RouteResponse::List)
            }
            Node::Seq { .. } => {
                self.problem(
                    node.pos(),
                    path,
                    "a list response names one entity: [ticket]",
                );
                None
            }
            _ => Some(RouteResponse::Fields(self.route_body(node, path))),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::AppManifest;

    const BASE: &str = "app: desk\nentities:\n  ticket:\n    fields: { title: text }\n    permissions:\n      agent: { read: all, create: all }\n      intake: { create: all }\n";

    fn with_route(route: &str) -> Result<AppManifest, String> {
        AppManifest::from_yaml(
            &format!("{BASE}functions:\n  routes:\n    - {route}\n"),
            "manifest.yaml",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_declares_its_body_response_and_service_role() {
        let m = with_route(
            "{ method: POST, path: /in, function: a.b, anonymous: true, run_as: intake, body: { title: { type: text, required: true, max_length: 5 }, n: int }, response: ticket }",
        )
        .unwrap();
        let r = &m.functions.routes[0];
        assert_eq!(r.run_as.as_deref(), Some("intake"));
        assert_eq!(r.body.len(), 2);
        assert_eq!(
            r.response,
            Some(RouteResponse::Entity(Ident::parse("ticket").unwrap()))
        );
        let list =
            with_route("{ method: GET, path: /l, function: a.b, response: [ticket] }").unwrap();
        assert!(matches!(
            list.functions.routes[0].response,
            Some(RouteResponse::List(_))
        ));
        let fields =
            with_route("{ method: GET, path: /c, function: a.b, response: { count: int } }")
                .unwrap();
        assert!(
            matches!(&fields.functions.routes[0].response, Some(RouteResponse::Fields(f)) if f.len() == 1)
        );
    }

    #[test]
    fn unknown_roles_and_entities_and_misplaced_keys_are_problems_with_their_place() {
        for (route, want) in [
            (
                "{ method: POST, path: /in, function: a.b, run_as: admin }",
                "role \"admin\"",
            ),
            (
                "{ method: POST, path: /in, function: a.b, run_as: anonymous }",
                "anonymous role",
            ),
            (
                "{ method: POST, path: /in, function: a.b, run_as: Admin }",
                "role names",
            ),
            (
                "{ method: GET, path: /in, function: a.b, response: nothing }",
                "unknown entity \"nothing\"",
            ),
            (
                "{ method: GET, path: /in, function: a.b, response: [ticket, ticket] }",
                "one entity",
            ),
            (
                "{ method: GET, path: /in, function: a.b, body: { t: text } }",
                "GET route takes no body",
            ),
            (
                "{ method: POST, path: /in, function: a.b, body: { t: { type: text, unique: true } } }",
                "stored fields",
            ),
            (
                "{ method: POST, path: /in, function: a.b, body: { t: { type: txt } } }",
                "functions.routes[0].body.t",
            ),
            (
                "{ method: POST, path: /in, function: a.b, body: { tenant_id: text } }",
                "no route takes or answers a tenant id",
            ),
        ] {
            let err = with_route(route).unwrap_err();
            assert!(err.contains(want), "{route}: {err}");
            assert!(err.contains("manifest.yaml:"), "{route}: no place in {err}");
        }
    }

    fn body_fields() -> Vec<Field> {
        with_route("{ method: POST, path: /in, function: a.b, body: { title: { type: text, required: true, max_length: 5 }, n: int, due: date } }")
            .unwrap()
            .functions
            .routes[0]
            .body
            .clone()
    }

    #[test]
    fn bodies_are_checked_against_the_declared_fields_with_the_field_at_fault() {
        let fields = body_fields();
        assert_eq!(check_body(&fields, &json!({"title": "hi", "n": 3})), Ok(()));
        assert_eq!(check_body(&[], &json!("anything")), Ok(()));
        for (body, code, field) in [
            (json!(null), ErrorCode::WrongType, None),
            (json!([1]), ErrorCode::WrongType, None),
            (json!({}), ErrorCode::MissingField, Some("title")),
            (
                json!({"title": null}),
                ErrorCode::MissingField,
                Some("title"),
            ),
            (
                json!({"title": "hi", "tenant_id": "globex"}),
                ErrorCode::UnknownField,
                Some("tenant_id"),
            ),
            (json!({"title": 5}), ErrorCode::WrongType, Some("title")),
            (
                json!({"title": "too long"}),
                ErrorCode::OutOfRange,
                Some("title"),
            ),
            (
                json!({"title": "a", "n": 1e20}),
                ErrorCode::WrongType,
                Some("n"),
            ),
            (
                json!({"title": "a", "n": 3_000_000_000i64}),
                ErrorCode::OutOfRange,
                Some("n"),
            ),
            (
                json!({"title": "a", "due": "2026-13-01"}),
                ErrorCode::OutOfRange,
                Some("due"),
            ),
        ] {
            let p = check_body(&fields, &body).unwrap_err();
            assert_eq!((p.code, p.field.as_deref()), (code, field), "{body}: {p}");
        }
    }

    proptest! {
        /// Arbitrary Unicode keys and text never panic, and a key that is not declared is
        /// always named as the one at fault.
        #[test]
        fn arbitrary_bodies_get_an_answer_and_undeclared_keys_are_named(key in "\\PC{0,12}", text in "\\PC{0,12}") {
            let fields = body_fields();
            let body = json!({ "title": "ok", key.clone(): text.clone() });
            match check_body(&fields, &body) {
                Ok(()) => prop_assert!(["title", "n", "due"].contains(&key.as_str())),
                Err(p) => {
                    if !["title", "n", "due"].contains(&key.as_str()) {
                        prop_assert_eq!(p.code, ErrorCode::UnknownField);
                        prop_assert_eq!(p.field.as_deref(), Some(key.as_str()));
                    }
                }
            }
            let _ = check_body(&fields, &json!({ "title": text }));
        }
    }
}
