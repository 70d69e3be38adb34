//! The OpenAPI 3.1 document of an app's REST API, generated from the same manifest the
//! handlers validate against, so the document and the server cannot drift apart.

use bulkhead_model::manifest::RouteResponse;
use bulkhead_model::{AppManifest, Entity, Field, FieldType};
use serde_json::{Map, Value, json};

fn output_type(ty: &FieldType) -> Value {
    match ty {
        FieldType::Text { .. } => json!({"type": "string"}),
        FieldType::Int => json!({"type": "integer", "format": "int32"}),
        FieldType::Bigint => json!({"type": "integer", "format": "int64"}),
        FieldType::Numeric => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}),
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Uuid | FieldType::Ref { .. } => json!({"type": "string", "format": "uuid"}),
        FieldType::Json => json!({}),
        FieldType::Enum { values } => json!({"type": "string", "enum": values}),
    }
}

fn input_type(field: &Field) -> Value {
    let mut schema = match &field.ty {
        FieldType::Text { max_length } => {
            let mut s = json!({"type": "string", "pattern": "^[^\\u0000]*$"});
            if let Some(max) = max_length {
                s["maxLength"] = json!(max);
            }
            s
        }
        FieldType::Int => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        FieldType::Numeric => json!({"oneOf": [
            {"type": "number"},
            {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}
        ]}),
        other => output_type(other),
    };
    if !field.required {
        schema = nullable(schema);
    }
    schema
}

/// `schema` or `null`, written so that `null` matches exactly once: `null` added to a single
/// `type` (and to an `enum`), a schema that admits anything left as it is, and only a schema
/// without a `type` of its own wrapped in `oneOf` with `null`.
fn nullable(mut schema: Value) -> Value {
    let Some(obj) = schema.as_object_mut() else {
        return schema;
    };
    if obj.is_empty() {
        return schema;
    }
    if let Some(Value::String(ty)) = obj.get("type").cloned() {
        obj.insert("type".into(), json!([ty, "null"]));
        if let Some(Value::Array(values)) = obj.get_mut("enum") {
            values.push(Value::Null);
        }
        return schema;
    }
    json!({"oneOf": [schema, {"type": "null"}]})
}

/// Fields some role of the manifest does not see: absent from that role's records, so not
/// `required` in the record schema (which holds for every role).
fn hidden_from_someone(e: &Entity) -> std::collections::BTreeSet<String> {
    e.permissions
        .iter()
        .flatten()
        .flat_map(|p| p.hidden.iter().map(ToString::to_string))
        .collect()
}

fn entity_schemas(e: &Entity, schemas: &mut Map<String, Value>) {
    let name = e.name.as_str();
    let mut props = Map::new();
    props.insert(
        "id".into(),
        json!({"type": "string", "format": "uuid", "readOnly": true}),
    );
    props.insert(
        "created_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    props.insert(
        "updated_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    let mut input = Map::new();
    let mut required_in = Vec::new();
    for f in &e.fields {
        let out = output_type(&f.ty);
        props.insert(
            f.name.to_string(),
            if f.required { out } else { nullable(out) },
        );
        let is_owner = e.owner.as_ref() == Some(&f.name);
        if !is_owner {
            input.insert(f.name.to_string(), input_type(f));
            if f.required && f.default.is_none() {
                required_in.push(f.name.to_string());
            }
        }
    }
    let hidden = hidden_from_someone(e);
    let mut all: Vec<String> = vec!["id".into(), "created_at".into(), "updated_at".into()];
    all.extend(
        e.fields
            .iter()
            .map(|f| f.name.to_string())
            .filter(|f| !hidden.contains(f)),
    );
    schemas.insert(
        name.to_owned(),
        json!({"type": "object", "properties": props, "required": all, "additionalProperties": false}),
    );
    schemas.insert(
        format!("{name}_input"),
        json!({"type": "object", "properties": input, "required": required_in, "additionalProperties": false}),
    );
    schemas.insert(
        format!("{name}_patch"),
        json!({"type": "object", "properties": input, "additionalProperties": false}),
    );
    schemas.insert(
        format!("{name}_created"),
        json!({
            "type": "object",
            "properties": {
                "records": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}
            },
            "required": ["records"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        format!("{name}_page"),
        json!({
            "type": "object",
            "properties": {
                "records": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                "next_cursor": {"type": ["string", "null"]},
                "count": {"type": "integer"}
            },
            "required": ["records", "next_cursor"]
        }),
    );
}

fn errors(codes: &[u16]) -> Map<String, Value> {
    codes
        .iter()
        .map(|c| {
            (
                c.to_string(),
                json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}}),
            )
        })
        .collect()
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(code: &str, schema: &str, extra_errors: &[u16]) -> Value {
    let mut responses = errors(extra_errors);
    responses.insert(
        code.into(),
        json!({"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
    );
    Value::Object(responses)
}

/// The tenant files API (`crate::files`).
fn files_paths(paths: &mut Map<String, Value>) {
    let key = json!({"name": "key", "in": "path", "required": true,
        "description": "segments of [A-Za-z0-9._-] separated by '/'; `<entity>/<row id>/<name>` for a row's files",
        "schema": {"type": "string"}});
    let mut list = errors(&[401, 403, 404, 503]);
    list.insert("200".into(), json!({"description": "the tenant's files the caller may read",
        "content": {"application/json": {"schema": {"type": "object",
            "properties": {"files": {"type": "array", "items": {"type": "string"}}}, "required": ["files"]}}}}));
    paths.insert(
        "/files".into(),
        json!({"get": {"operationId": "list_files", "responses": list}}),
    );
    let mut get = errors(&[400, 401, 403, 404, 503]);
    get.insert("200".into(), json!({"description": "the file, as an attachment",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}));
    let mut put = errors(&[400, 401, 403, 404, 409, 413, 415, 503]);
    put.insert("201".into(), json!({"description": "stored",
        "content": {"application/json": {"schema": {"type": "object",
            "properties": {"key": {"type": "string"}, "size": {"type": "integer"}}, "required": ["key", "size"]}}}}));
    let mut del = errors(&[400, 401, 403, 404, 503]);
    del.insert("204".into(), json!({"description": "deleted"}));
    let upload_types: Map<String, Value> = crate::file_store::content_types()
        .map(|t| {
            (
                t.to_owned(),
                json!({"schema": {"type": "string", "format": "binary"}}),
            )
        })
        .collect();
    paths.insert(
        "/files/{key}".into(),
        json!({
            "parameters": [key],
            "get": {"operationId": "download_file", "responses": get, "parameters": [
                {"name": "exp", "in": "query", "description": "signed link: expiry (Unix seconds)", "schema": {"type": "integer"}},
                {"name": "sig", "in": "query", "description": "signed link: signature", "schema": {"type": "string"}}]},
            "put": {"operationId": "upload_file", "requestBody": {"required": true, "content": upload_types}, "responses": put},
            "delete": {"operationId": "delete_file", "responses": del},
        }),
    );
    let mut sign = errors(&[400, 401, 403, 404, 413, 415, 503]);
    sign.insert("200".into(), json!({"description": "a download link relative to the tenant's base",
        "content": {"application/json": {"schema": {"type": "object",
            "properties": {"path": {"type": "string"}, "expires_at": {"type": "integer"}}, "required": ["path", "expires_at"]}}}}));
    paths.insert(
        "/files-signed".into(),
        json!({"post": {"operationId": "sign_file_link",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                "properties": {"key": {"type": "string"}, "expires_in": {"type": "integer", "minimum": 1, "maximum": 86400}},
                "required": ["key"]}}}},
            "responses": sign}}),
    );
}

/// `GET /search` (`crate::search`), for apps with searchable fields.
fn search_paths(m: &AppManifest, paths: &mut Map<String, Value>) {
    let entities: Vec<String> = bulkhead_pg::search::searchable_entities(m)
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    if entities.is_empty() {
        return;
    }
    let mut responses = errors(&[400, 401, 403, 404, 503]);
    responses.insert(
        "200".into(),
        json!({"description": "one page of hits, re-checked for the caller",
        "content": {"application/json": {"schema": {"type": "object",
            "properties": {
                "hits": {"type": "array", "items": {"type": "object", "properties": {
                    "entity": {"type": "string", "enum": entities},
                    "id": {"type": "string"},
                    "score": {"type": "number"},
                    "record": {"type": "object"},
                    "highlights": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "required": ["entity", "id", "score", "record", "highlights"]}},
                "total": {"type": "integer", "minimum": 0},
                "facets": {"type": "object", "additionalProperties": {"type": "integer"}},
                "next_cursor": {"type": ["string", "null"]}},
            "required": ["hits", "total", "facets", "next_cursor"]}}}}),
    );
    paths.insert(
        "/search".into(),
        json!({"get": {"operationId": "search", "parameters": [
            {"name": "q", "in": "query", "description": "words, \"phrases\", AND/OR/-, entity.field:word; empty or * for everything", "schema": {"type": "string", "maxLength": bulkhead_search::query::MAX_QUERY_LEN}},
            {"name": "entity", "in": "query", "schema": {"type": "string", "enum": entities}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": bulkhead_search::query::MAX_LIMIT}},
            {"name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": {"type": "string"}}],
            "responses": responses}}),
    );
}

/// The names of the required ones among `fields`.
fn required(fields: &[Field]) -> Vec<&str> {
    fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name.as_str())
        .collect()
}

/// An object of declared fields as a request body takes it: the REST inputs' types, the
/// required ones required, nothing else admitted (the platform checks the same before the
/// function runs).
fn fields_input(fields: &[Field]) -> Value {
    let props: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.to_string(), input_type(f)))
        .collect();
    json!({"type": "object", "properties": props, "required": required(fields), "additionalProperties": false})
}

/// What a route declares it answers; any JSON when it declares nothing.
fn route_response(response: Option<&RouteResponse>) -> Value {
    let entity = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match response {
        None => json!({}),
        Some(RouteResponse::Entity(e)) => entity(e.as_str()),
        Some(RouteResponse::List(e)) => json!({"type": "array", "items": entity(e.as_str())}),
        Some(RouteResponse::Fields(fields)) => {
            let props: Map<String, Value> = fields
                .iter()
                .map(|f| {
                    let out = output_type(&f.ty);
                    (
                        f.name.to_string(),
                        if f.required { out } else { nullable(out) },
                    )
                })
                .collect();
            json!({"type": "object", "properties": props, "required": required(fields)})
        }
    }
}

/// Adds a mini-app's function routes (`/fn/…`) to `doc`: path parameters, the declared JSON
/// body (or any JSON for writes that declare none), the declared answer (or any JSON), and
/// the platform's errors in the error schema.
pub fn add_function_routes(doc: &mut Value, functions: &bulkhead_model::manifest::Functions) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for route in &functions.routes {
        let params: Vec<Value> = route
            .segments()
            .filter_map(Result::err)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = errors(&[400, 401, 403, 404, 500]);
        responses.insert(
            "2XX".into(),
            json!({"description": "the function's answer", "content": {"application/json": {"schema": route_response(route.response.as_ref())}}}),
        );
        responses.insert(
            "default".into(),
            json!({"description": "the function's own status and body", "content": {"application/json": {"schema": {}}}}),
        );
        let mut op = json!({
            "operationId": format!("fn_{}_{}", route.method.to_ascii_lowercase(), route.function.name().replace(['.', '/', '-'], "_")),
            "summary": format!("the app's function {}", route.function.name()),
            "tags": ["functions"],
            "parameters": params,
            "responses": responses,
        });
        if !route.body.is_empty() {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": fields_input(&route.body)}},
            });
        } else if !matches!(route.method.as_str(), "GET" | "DELETE") {
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": {}}},
            });
        }
        if let Some(role) = &route.run_as {
            op["x-bulkhead-run-as"] = json!(role);
        }
        if route.anonymous {
            op["security"] = json!([{}, {"bearer": []}]);
        }
        let path = format!("/fn{}", route.path);
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
}

/// The values `order` takes: every field a list can be sorted by, ascending or (`-`) descending.
fn order_values(e: &Entity) -> Vec<String> {
    let mut fields = vec!["id".to_owned(), "created_at".into(), "updated_at".into()];
    fields.extend(
        e.fields
            .iter()
            .filter(|f| !matches!(f.ty, FieldType::Json))
            .map(|f| f.name.to_string()),
    );
    fields
        .iter()
        .flat_map(|f| [f.clone(), format!("-{f}")])
        .collect()
}

/// A list's filters as query parameters: `field=value` (equality) and `field[op]=value` for
/// each operator that applies to the field's type (`in`: comma-separated values; `null`:
/// `true`/`false`; `contains`: a case-insensitive substring of text).
fn filter_params(e: &Entity) -> Vec<Value> {
    let mut out = Vec::new();
    for f in e.fields.iter().filter(|f| !matches!(f.ty, FieldType::Json)) {
        let name = f.name.as_str();
        let value = output_type(&f.ty);
        let param = |key: String, description: &str, schema: Value| json!({"name": key, "in": "query", "description": description, "schema": schema});
        out.push(param(name.to_owned(), "equal to", value.clone()));
        out.push(param(format!("{name}[eq]"), "equal to", value.clone()));
        out.push(param(format!("{name}[ne]"), "not equal to", value.clone()));
        if !matches!(f.ty, FieldType::Bool) {
            for (op, what) in [
                ("lt", "less than"),
                ("lte", "at most"),
                ("gt", "greater than"),
                ("gte", "at least"),
            ] {
                out.push(param(format!("{name}[{op}]"), what, value.clone()));
            }
        }
        out.push(param(
            format!("{name}[in]"),
            "one of these comma-separated values",
            json!({"type": "string"}),
        ));
        out.push(param(
            format!("{name}[null]"),
            "`true`: empty; `false`: set",
            json!({"type": "boolean"}),
        ));
        if matches!(f.ty, FieldType::Text { .. }) {
            out.push(param(
                format!("{name}[contains]"),
                "contains this text, case-insensitively (`%` and `_` literal)",
                json!({"type": "string"}),
            ));
        }
    }
    out
}

/// The document as served to a tenant: `servers` names the tenant's base, `/t/{tenant}`, with
/// the requesting tenant as the variable's default, so generated clients call the right paths.
pub fn for_tenant(mut doc: Value, tenant: &str) -> Value {
    doc["servers"] = json!([{
        "url": "/t/{tenant}",
        "description": "the tenant's API on this server (a host that names the tenant serves the same paths at its root)",
        "variables": {"tenant": {"default": tenant, "description": "the tenant id"}}
    }]);
    doc
}

/// The whole document.
pub fn document(m: &AppManifest) -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "error".into(),
        json!({
            "type": "object",
            "properties": {"error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}, "request_id": {"type": "string"}},
                "required": ["code", "message"]
            }},
            "required": ["error"]
        }),
    );
    let mut paths = Map::new();
    let common = [400, 401, 403, 404, 503];
    for e in &m.entities {
        entity_schemas(e, &mut schemas);
        let name = e.name.as_str();
        let mut params = vec![
            json!({"name": "limit", "in": "query", "description": "records per page (default 50)", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}),
            json!({"name": "after", "in": "query", "description": "the previous page's next_cursor", "schema": {"type": "string"}}),
            json!({"name": "count", "in": "query", "description": "also count every matching record", "schema": {"type": "boolean"}}),
            json!({"name": "order", "in": "query", "description": "a field to sort by, `-` first for descending; ties broken by id", "schema": {"type": "string", "enum": order_values(e)}}),
        ];
        params.extend(filter_params(e));
        let mut list = json!({
            "operationId": format!("list_{name}"), "parameters": params,
            "responses": ok("200", &format!("{name}_page"), &common),
        });
        let mut item = json!({});
        let id_param = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
        item["parameters"] = id_param;
        item["get"] =
            json!({"operationId": format!("get_{name}"), "responses": ok("200", name, &common)});
        let mut collection = json!({ "get": list.take() });
        if !e.cross_tenant {
            collection["post"] = json!({
                "operationId": format!("create_{name}"), "requestBody": body(&format!("{name}_input")),
                "responses": ok("201", name, &[400, 401, 403, 404, 409, 413, 415, 503]),
            });
            item["patch"] = json!({
                "operationId": format!("patch_{name}"), "requestBody": body(&format!("{name}_patch")),
                "responses": ok("200", name, &[400, 401, 403, 404, 409, 413, 415, 503]),
            });
            let mut del = errors(&[400, 401, 403, 404, 409, 503]);
            del.insert("204".into(), json!({"description": "deleted"}));
            item["delete"] = json!({"operationId": format!("delete_{name}"), "responses": del});
            paths.insert(
                format!("/api/{name}/_bulk"),
                json!({"post": {
                    "operationId": format!("bulk_create_{name}"),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "array", "minItems": 1, "maxItems": 1000,
                        "items": {"$ref": format!("#/components/schemas/{name}_input")}}}}},
                    "responses": ok("201", &format!("{name}_created"), &[400, 401, 403, 404, 409, 413, 415, 503]),
                }}),
            );
        }
        paths.insert(format!("/api/{name}"), collection);
        paths.insert(format!("/api/{name}/{{id}}"), item);
    }
    files_paths(&mut paths);
    search_paths(m, &mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {"title": format!("{} (Bulkhead app)", m.app), "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_gets_paths_and_schemas_and_global_ones_are_read_only() {
        let m = AppManifest::from_yaml(
            "app: shop\nentities:\n  item:\n    owner: author\n    fields:\n      name: { type: text, required: true }\n      n: int\n  country:\n    cross_tenant: true\n    fields:\n      code: text\n",
            "t",
        )
        .unwrap();
        let doc = document(&m);
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/item"]["post"].is_object());
        assert!(doc["paths"]["/api/item/{id}"]["delete"].is_object());
        assert!(
            doc["paths"]["/api/country"]["post"].is_null(),
            "global data is read-only"
        );
        let input = &doc["components"]["schemas"]["item_input"];
        assert_eq!(input["required"], json!(["name"]));
        assert!(
            input["properties"]["author"].is_null(),
            "the owner field is not writable"
        );
    }

    #[test]
    fn the_record_schema_holds_for_every_role_and_null_matches_once() {
        let m = AppManifest::from_yaml(
            "app: shop\nentities:\n  item:\n    fields:\n      name: { type: text, required: true }\n      note: text\n      data: json\n      state: { type: enum, values: [a, b] }\n    permissions:\n      agent: { read: all, create: all, update: all, delete: all }\n      customer: { read: all, create: none, update: none, delete: none, hidden: [note] }\n",
            "t",
        )
        .unwrap();
        let doc = for_tenant(document(&m), "acme");
        let item = &doc["components"]["schemas"]["item"];
        let required: Vec<&str> = item["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"name") && !required.contains(&"note"),
            "{required:?}"
        );
        // A json field admits null already; others add it to their one type (and enum).
        assert_eq!(item["properties"]["data"], json!({}));
        assert_eq!(
            item["properties"]["note"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(item["properties"]["state"]["enum"], json!(["a", "b", null]));
        assert!(!doc.to_string().contains(r#"{"oneOf":[{},"#), "{doc}");
        assert_eq!(doc["servers"][0]["url"], "/t/{tenant}");
        assert_eq!(doc["servers"][0]["variables"]["tenant"]["default"], "acme");
        // Filters and orders are documented parameters.
        let params = doc["paths"]["/api/item"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        for want in [
            "name[contains]",
            "name[gte]",
            "state[in]",
            "note[null]",
            "order",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        let order = params.iter().find(|p| p["name"] == "order").unwrap();
        assert!(
            order["schema"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("-name"))
        );
    }
}
