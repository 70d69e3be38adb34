//! Validated identifiers: [`TenantId`], [`AppId`] and [`Ident`] (entity and field names).
//!
//! Every per-tenant or per-app resource name (schema, database, role, prefix) is derived from
//! these types by [`crate::names`], never by string concatenation at call sites.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Ids that would collide with platform paths, hosts or PostgreSQL's own names.
const RESERVED_IDS: &[&str] = &[
    "public",
    "admin",
    "api",
    "www",
    "app",
    "apps",
    "auth",
    "login",
    "logout",
    "realms",
    "static",
    "assets",
    "healthz",
    "readyz",
    "metrics",
    "system",
    "root",
    "default",
    "postgres",
    "template0",
    "template1",
    "bulkhead",
    "internal",
    "information-schema",
];

/// Prefixes reserved for PostgreSQL and the platform.
const RESERVED_ID_PREFIXES: &[&str] = &["pg-", "bh-", "bulkhead-"];

/// Why an id or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{what} {value:?} must match ^[a-z][a-z0-9-]{{1,39}}$ (2–40 characters: lowercase letters, digits, '-'; starting with a letter)"
    )]
    BadId { what: &'static str, value: String },
    #[error("{what} {value:?} is reserved")]
    ReservedId { what: &'static str, value: String },
    #[error(
        "name {value:?} must match ^[a-z][a-z0-9_]{{0,62}}$ (lowercase letters, digits, '_'; starting with a letter)"
    )]
    BadName { value: String },
    #[error("name {value:?} is reserved (SQL keyword or platform column)")]
    ReservedName { value: String },
}

fn check_id(what: &'static str, value: &str) -> Result<(), IdError> {
    let bytes = value.as_bytes();
    let shape_ok = (2..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !shape_ok || value.ends_with('-') || value.contains("--") {
        return Err(IdError::BadId {
            what,
            value: value.to_owned(),
        });
    }
    if RESERVED_IDS.contains(&value) || RESERVED_ID_PREFIXES.iter().any(|p| value.starts_with(p)) {
        return Err(IdError::ReservedId {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (shape and reserved list).
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_id($what, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

id_type!(
    /// A tenant's id. Parsing validates it; it says nothing about whether the tenant exists —
    /// only the runtime's resolution does, and only a resolved tenant yields tenant data.
    TenantId,
    "tenant id"
);
id_type!(
    /// An app's id.
    AppId,
    "app id"
);

impl AppId {
    /// The vault space and compartment of tenant `tenant`'s own worker of this app:
    /// `app--tenant`. No parsed app id contains `--`, so it never names an app.
    pub fn tenant_space(&self, tenant: &TenantId) -> AppId {
        AppId(format!("{}--{tenant}", self.0))
    }
}

/// Columns the platform adds to every table; app fields may not use these names.
pub const PLATFORM_COLUMNS: &[&str] = &["id", "tenant_id", "created_at", "updated_at"];

/// SQL keywords refused as entity or field names (PostgreSQL's reserved words and a few
/// non-reserved ones that confuse readers of generated SQL).
const RESERVED_NAMES: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "delete",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "insert",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "oid",
    "ctid",
    "xmin",
    "xmax",
    "cmin",
    "cmax",
    "tableoid",
];

/// An entity or field name: `^[a-z][a-z0-9_]{0,62}$`, not an SQL keyword or platform column,
/// not starting with `pg_` or `bulkhead_`. Becomes an SQL identifier only through
/// [`crate::names::quote_ident`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bytes = value.as_bytes();
        let shape_ok = (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !shape_ok {
            return Err(IdError::BadName {
                value: value.to_owned(),
            });
        }
        if RESERVED_NAMES.contains(&value)
            || value.starts_with("pg_")
            || value.starts_with("bulkhead_")
        {
            return Err(IdError::ReservedName {
                value: value.to_owned(),
            });
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn good_ids_parse() {
        for ok in ["acme", "a1", "acme-corp", "t-2026"] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn bad_and_reserved_ids_are_refused() {
        for bad in [
            "",
            "a",
            "Acme",
            "1acme",
            "acme_corp",
            "acme-",
            "a--b",
            "acme corp",
            "acme;drop",
            "ümlaut",
            "acme\0",
        ] {
            assert!(
                matches!(TenantId::parse(bad), Err(IdError::BadId { .. })),
                "{bad:?}"
            );
        }
        for reserved in [
            "public",
            "admin",
            "api",
            "www",
            "pg-catalog",
            "bh-x",
            "postgres",
        ] {
            assert!(
                matches!(TenantId::parse(reserved), Err(IdError::ReservedId { .. })),
                "{reserved}"
            );
        }
        assert!(TenantId::parse(&"a".repeat(41)).is_err());
        assert!(TenantId::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn names_refuse_keywords_platform_prefixes_and_bad_shapes() {
        for bad in ["Select", "1x", "a-b", "", "x y", "\"x\""] {
            assert!(
                matches!(Ident::parse(bad), Err(IdError::BadName { .. })),
                "{bad}"
            );
        }
        for reserved in ["select", "user", "order", "pg_class", "bulkhead_x", "ctid"] {
            assert!(
                matches!(Ident::parse(reserved), Err(IdError::ReservedName { .. })),
                "{reserved}"
            );
        }
        assert!(Ident::parse("ticket_2").is_ok());
    }

    proptest! {
        #[test]
        fn every_accepted_tenant_id_is_a_safe_identifier(s in "\\PC{0,45}") {
            if let Ok(id) = TenantId::parse(&s) {
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(id.as_str().len() <= 40);
            }
        }

        #[test]
        fn every_accepted_name_is_a_safe_identifier(s in "[a-z_0-9\"; -]{0,70}") {
            if let Ok(id) = Ident::parse(&s) {
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            }
        }
    }
}
