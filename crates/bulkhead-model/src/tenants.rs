//! `tenants.yaml`: the operator's declaration of tenants, their isolation, identity and
//! network policy. Parsed with positions, so every problem names file:line and the field.
//!
//! ```yaml
//! tenants:
//!   - id: business-unit-a
//!     storage: { namespace: "bu-a", isolation: "schema" }
//!     identity: { provider: "local", realm: "bu-a" }
//!   - id: partner-acme
//!     storage: { namespace: "acme", isolation: "database" }
//!     identity: { provider: "oidc", issuer: "https://login.acme.example", audience: "helpdesk" }
//!     network:  { default: "deny", allow: ["api.acme-partner.com"] }
//!     residency: eu
//! ```

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, Problem};
use crate::yaml::{self, Node, Pos};
use crate::{IsolationLevel, TenantId};

/// How a tenant's users sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum IdentitySpec {
    Local {
        realm: String,
    },
    Oidc {
        issuer: String,
        audience: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwks_url: Option<String>,
        roles_claim: String,
    },
}

/// Outbound network policy (deny by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub default: String,
    pub allow: Vec<String>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            default: "deny".into(),
            allow: Vec::new(),
        }
    }
}

/// One declared tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantSpec {
    pub id: TenantId,
    pub namespace: String,
    pub isolation: IsolationLevel,
    pub identity: IdentitySpec,
    pub network: NetworkSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
    /// `storage.dedicated_worker` (default true): at the `database` level the tenant is
    /// served by its own worker, which holds only this tenant's database credential; ignored
    /// at the other levels.
    pub dedicated_worker: bool,
    /// Where the entry starts in the file.
    #[serde(skip)]
    pub line: usize,
}

impl TenantSpec {
    /// Whether the tenant gets its own worker: `database` level and not opted out.
    pub fn dedicated(&self) -> bool {
        self.dedicated_worker && self.isolation == IsolationLevel::Database
    }
}

use crate::manifest::Validator as V;

impl V {
    fn field_string(
        &mut self,
        entries: &[(String, Pos, Node)],
        key: &str,
        path: &str,
        parent: Pos,
    ) -> Option<String> {
        match entries.iter().find(|(k, _, _)| k == key) {
            Some((_, _, Node::Scalar { value, .. })) if !value.is_empty() => Some(value.clone()),
            Some((_, _, n)) => {
                self.problem(
                    n.pos(),
                    &format!("{path}.{key}"),
                    "expected a non-empty string",
                );
                None
            }
            None => {
                self.problem(parent, &format!("{path}.{key}"), "missing");
                None
            }
        }
    }

    fn optional(
        &mut self,
        entries: &[(String, Pos, Node)],
        key: &str,
        path: &str,
    ) -> Option<String> {
        match entries.iter().find(|(k, _, _)| k == key) {
            Some((_, _, Node::Scalar { value, .. })) => Some(value.clone()),
            Some((_, _, n)) => {
                self.problem(n.pos(), &format!("{path}.{key}"), "expected a string");
                None
            }
            None => None,
        }
    }

    fn tenant(&mut self, node: &Node, path: &str) -> Option<TenantSpec> {
        let entries = self.map(
            node,
            path,
            &["id", "storage", "identity", "network", "residency"],
        )?;
        let pos = node.pos();
        let id = self.field_string(entries, "id", path, pos).and_then(|raw| {
            TenantId::parse(&raw)
                .map_err(|e| {
                    let p = entries
                        .iter()
                        .find(|(k, _, _)| k == "id")
                        .map(|e| e.2.pos())
                        .unwrap_or(pos);
                    self.problem(p, &format!("{path}.id"), e.to_string());
                })
                .ok()
        });
        let get = |k: &str| entries.iter().find(|(key, _, _)| key == k).map(|e| &e.2);
        let (namespace, isolation, dedicated_worker) = match get("storage") {
            None => {
                self.problem(pos, &format!("{path}.storage"), "missing");
                (None, None, true)
            }
            Some(n) => {
                let sp = format!("{path}.storage");
                match self.map(n, &sp, &["namespace", "isolation", "dedicated_worker"]) {
                    None => (None, None, true),
                    Some(s) => {
                        let dedicated = match s.iter().find(|(k, _, _)| k == "dedicated_worker") {
                            None => true,
                            Some((_, _, Node::Scalar { value, .. })) if value == "true" => true,
                            Some((_, _, Node::Scalar { value, .. })) if value == "false" => false,
                            Some((_, _, other)) => {
                                self.problem(
                                    other.pos(),
                                    &format!("{sp}.dedicated_worker"),
                                    "expected true or false",
                                );
                                true
                            }
                        };
                        let ns = self.field_string(s, "namespace", &sp, n.pos());
                        let iso = self
                            .field_string(s, "isolation", &sp, n.pos())
                            .and_then(|raw| {
                                raw.parse::<IsolationLevel>()
                                    .map_err(|e| {
                                        let p = s
                                            .iter()
                                            .find(|(k, _, _)| k == "isolation")
                                            .map(|e| e.2.pos())
                                            .unwrap_or(pos);
                                        self.problem(p, &format!("{sp}.isolation"), e);
                                    })
                                    .ok()
                            });
                        (ns, iso, dedicated)
                    }
                }
            }
        };
        let identity = match get("identity") {
            None => Some(IdentitySpec::Local {
                realm: id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            }),
            Some(n) => {
                let ip = format!("{path}.identity");
                self.map(
                    n,
                    &ip,
                    &[
                        "provider",
                        "realm",
                        "issuer",
                        "audience",
                        "jwks_url",
                        "roles_claim",
                    ],
                )
                .and_then(|s| {
                    match self.field_string(s, "provider", &ip, n.pos()).as_deref() {
                        Some("local") => Some(IdentitySpec::Local {
                            realm: self
                                .optional(s, "realm", &ip)
                                .or_else(|| id.as_ref().map(|i| i.to_string()))
                                .unwrap_or_default(),
                        }),
                        Some("oidc") => {
                            let issuer = self.field_string(s, "issuer", &ip, n.pos());
                            let audience = self.field_string(s, "audience", &ip, n.pos());
                            if let Some(iss) = &issuer
                                && !iss.starts_with("https://")
                                && !iss.starts_with("http://127.0.0.1")
                                && !iss.starts_with("http://localhost")
                            {
                                self.problem(
                                    n.pos(),
                                    &format!("{ip}.issuer"),
                                    "an issuer must be an https:// URL",
                                );
                            }
                            Some(IdentitySpec::Oidc {
                                issuer: issuer?,
                                audience: audience?,
                                jwks_url: self.optional(s, "jwks_url", &ip),
                                roles_claim: self
                                    .optional(s, "roles_claim", &ip)
                                    .unwrap_or_else(|| "roles".into()),
                            })
                        }
                        Some(other) => {
                            self.problem(
                                n.pos(),
                                &format!("{ip}.provider"),
                                format!("unknown provider {other:?}, expected local or oidc"),
                            );
                            None
                        }
                        None => None,
                    }
                })
            }
        };
        let network = match get("network") {
            None => Some(NetworkSpec::default()),
            Some(n) => {
                let np = format!("{path}.network");
                self.map(n, &np, &["default", "allow"]).map(|s| {
                    let default = self
                        .optional(s, "default", &np)
                        .unwrap_or_else(|| "deny".into());
                    if default != "deny" && default != "allow" {
                        self.problem(n.pos(), &format!("{np}.default"), "expected deny or allow");
                    }
                    let allow = match s.iter().find(|(k, _, _)| k == "allow").map(|e| &e.2) {
                        None => Vec::new(),
                        Some(Node::Seq { items, .. }) => items
                            .iter()
                            .filter_map(|i| match i {
                                // The egress policy's own parser: what validates here is
                                // exactly what workers enforce.
                                Node::Scalar { value, pos, .. } => {
                                    match crate::egress::AllowList::parse(&[value]) {
                                        Ok(_) => Some(value.clone()),
                                        Err(e) => {
                                            self.problem(*pos, &format!("{np}.allow"), e.reason);
                                            None
                                        }
                                    }
                                }
                                other => {
                                    self.problem(
                                        other.pos(),
                                        &format!("{np}.allow"),
                                        "expected a host name, *.domain, address or network, with an optional :port",
                                    );
                                    None
                                }
                            })
                            .collect(),
                        Some(other) => {
                            self.problem(
                                other.pos(),
                                &format!("{np}.allow"),
                                "expected a list of hosts",
                            );
                            Vec::new()
                        }
                    };
                    NetworkSpec { default, allow }
                })
            }
        };
        let residency = self.optional(entries, "residency", path);
        Some(TenantSpec {
            id: id?,
            namespace: namespace?,
            isolation: isolation?,
            identity: identity?,
            network: network?,
            residency,
            dedicated_worker,
            line: pos.line,
        })
    }
}

/// Parses and validates a tenants file; reports every problem at once.
pub fn parse(text: &str, source: &str) -> Result<Vec<TenantSpec>, ManifestError> {
    let fail = |problems| ManifestError {
        source: source.to_owned(),
        problems,
    };
    let root = yaml::parse(text).map_err(|errs| {
        fail(
            errs.into_iter()
                .map(|e| Problem {
                    pos: e.pos,
                    path: String::new(),
                    message: e.message,
                })
                .collect(),
        )
    })?;
    let mut v = V::default();
    let mut out = Vec::new();
    if let Some(entries) = v.map(&root, "", &["tenants"]) {
        match entries
            .iter()
            .find(|(k, _, _)| k == "tenants")
            .map(|e| &e.2)
        {
            Some(Node::Seq { items, .. }) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(t) = v.tenant(item, &format!("tenants[{i}]")) {
                        if out.iter().any(|o: &TenantSpec| o.id == t.id) {
                            v.problem(
                                item.pos(),
                                &format!("tenants[{i}].id"),
                                format!("tenant {} declared twice", t.id),
                            );
                        }
                        out.push(t);
                    }
                }
            }
            Some(other) => v.problem(other.pos(), "tenants", "expected a list"),
            None => v.problem(root.pos(), "tenants", "missing"),
        }
    }
    if v.problems.is_empty() {
        Ok(out)
    } else {
        v.problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        Err(fail(v.problems))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const GOOD: &str = r#"tenants:
  - id: business-unit-a
    storage: { namespace: "bu-a", isolation: "schema" }
    identity: { provider: "local", realm: "bu-a" }
  - id: partner-acme
    storage: { namespace: "acme", isolation: "database" }
    identity: { provider: "oidc", issuer: "https://login.acme.example", audience: "helpdesk" }
    network:  { default: "deny", allow: ["api.acme-partner.com"] }
"#;

    #[test]
    fn the_documented_shape_parses() {
        let t = parse(GOOD, "tenants.yaml").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].isolation, IsolationLevel::Schema);
        assert_eq!(t[1].line, 5);
        assert_eq!(t[1].network.allow, ["api.acme-partner.com"]);
        assert!(
            matches!(&t[1].identity, IdentitySpec::Oidc { audience, .. } if audience == "helpdesk")
        );
    }

    #[test]
    fn a_typo_names_the_line_and_field() {
        let bad = GOOD.replace("isolation: \"database\"", "isolaton: \"database\"");
        let err = parse(&bad, "tenants.yaml").unwrap_err().to_string();
        assert!(err.contains("tenants.yaml:6:"), "{err}");
        assert!(
            err.contains("tenants[1].storage.isolaton: unknown key"),
            "{err}"
        );
        let bad = GOOD.replace("\"schema\"", "\"shema\"");
        let err = parse(&bad, "tenants.yaml").unwrap_err().to_string();
        assert!(
            err.contains("tenants.yaml:3:") && err.contains("tenants[0].storage.isolation"),
            "{err}"
        );
        let bad = GOOD.replace("partner-acme", "Partner_Acme");
        assert!(
            parse(&bad, "t")
                .unwrap_err()
                .to_string()
                .contains("tenants[1].id")
        );
        let bad = GOOD.replace("https://login.acme.example", "http://login.acme.example");
        assert!(
            parse(&bad, "t")
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        let dup = GOOD.replace("partner-acme", "business-unit-a");
        assert!(
            parse(&dup, "t")
                .unwrap_err()
                .to_string()
                .contains("declared twice")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("BULKHEAD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
        ))]

        /// Any Unicode in any scalar position gives a result or positioned problems, never a
        /// panic, and every problem names a line inside the document.
        #[test]
        fn arbitrary_unicode_scalars_never_panic(
            a in "\\PC{0,30}", b in "\\PC{0,30}", c in "\\PC{0,30}", d in "\\PC{0,30}"
        ) {
            let doc = format!(
                "tenants:\n  - id: {a}\n    storage: {{ namespace: \"{b}\", isolation: {c} }}\n    identity: {{ provider: local, realm: {d} }}\n    network: {{ default: deny, allow: [\"{a}\", {d}] }}\n    residency: {b}\n"
            );
            if let Err(e) = parse(&doc, "tenants.yaml") {
                let lines = doc.lines().count() + 1;
                for p in &e.problems {
                    proptest::prop_assert!(p.pos.line <= lines, "{p:?}");
                }
            }
        }
    }
}
