//! Positioned validation of a whole manifest: every problem at once, each with its place.

use super::*;
use crate::ids::{AppId, Ident, PLATFORM_COLUMNS};
use crate::yaml::{Node, Pos};

/// The value of `key` in a mapping's entries.
pub(super) fn field_of<'n>(fields: &'n [(String, Pos, Node)], key: &str) -> Option<&'n Node> {
    fields.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n)
}

/// Collects validation problems; shared by manifests and `tenants.yaml`.
#[derive(Default)]
pub(crate) struct Validator {
    pub(crate) problems: Vec<Problem>,
    /// Roles named outside the entities (a route's `run_as`), checked against the roles the
    /// permissions name once every entity is read.
    pub(super) named_roles: Vec<(String, Pos, String)>,
    /// Entities named outside `entities` (a route's `response`), checked the same way.
    pub(super) named_entities: Vec<(String, Pos, String)>,
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

    pub(super) fn bool(&mut self, node: &Node, path: &str) -> bool {
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

    pub(super) fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
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

    pub(super) fn ident(&mut self, node: &Node, path: &str) -> Option<Ident> {
        let s = self.string(node, path)?;
        match Ident::parse(s) {
            Ok(id) => Some(id),
            Err(e) => {
                self.problem(node.pos(), path, e.to_string());
                None
            }
        }
    }

    pub(super) fn ident_at(&mut self, name: &str, pos: Pos, path: &str) -> Option<Ident> {
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

    pub(super) fn ident_list(&mut self, node: &Node, path: &str) -> Vec<(Ident, Pos)> {
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

    pub(super) fn manifest(&mut self, root: &Node) -> Option<AppManifest> {
        let entries = self.map(
            root,
            "",
            &[
                "app",
                "entities",
                "cross_tenant_reads",
                "flags",
                "settings",
                "functions",
            ],
        )?;
        let mut app = None;
        let mut entities = Vec::new();
        let mut entity_positions = Vec::new();
        let mut reads = Vec::new();
        let mut flags = Vec::new();
        let mut settings = Vec::new();
        let mut functions = Functions::default();
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
                "functions" => functions = self.functions(node),
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
        self.named_checks(&entities);
        Some(AppManifest {
            app,
            entities,
            cross_tenant_reads: reads.into_iter().map(|(id, _)| id).collect(),
            flags,
            settings,
            functions,
        })
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
            if !role_name_ok(role) {
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

    pub(super) fn field(&mut self, name: Ident, node: &Node, path: &str) -> Option<Field> {
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

impl Validator {
    /// Roles and entities the functions name exist in the manifest.
    fn named_checks(&mut self, entities: &[Entity]) {
        for (role, pos, path) in std::mem::take(&mut self.named_roles) {
            // An entity without permissions lets every authenticated role do everything.
            let known = entities.iter().any(|e| match &e.permissions {
                None => true,
                Some(list) => list.iter().any(|p| p.role == role),
            });
            if !known {
                self.problem(
                    pos,
                    &path,
                    format!("no entity's permissions name the role \"{role}\""),
                );
            }
        }
        for (entity, pos, path) in std::mem::take(&mut self.named_entities) {
            if !entities.iter().any(|e| e.name.as_str() == entity) {
                self.problem(pos, &path, format!("unknown entity \"{entity}\""));
            }
        }
    }
}

/// Role names: `^[a-z][a-z0-9_-]{0,62}$`.
pub(super) fn role_name_ok(role: &str) -> bool {
    role.len() <= 63
        && role.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
