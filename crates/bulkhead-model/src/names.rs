//! The one place where ids become PostgreSQL names, and the one identifier-quoting helper.
//!
//! Every schema, database and role name of the platform comes from a function here. Names
//! longer than PostgreSQL's 63-byte limit are shortened deterministically with a hash suffix,
//! so two different ids never silently truncate to the same name.

use crate::ids::{AppId, Ident, TenantId};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// Quotes an identifier for SQL. Input is always a validated id or name; quoting (and doubling
/// any quote) is defence in depth, not the validation.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal for the few DDL statements that cannot take parameters (role
/// passwords as SCRAM verifiers, policy expressions). Never used for user data.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    // FNV-1a 64: stable across releases and platforms, no dependency.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let suffix = format!("_{hash:016x}");
    let mut cut = MAX_NAME - suffix.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &name[..cut], suffix)
}

/// The app's own database.
pub fn app_database(app: &AppId) -> String {
    bounded(format!("bh_{app}"))
}

/// NOLOGIN role that owns every object of the app.
pub fn owner_role(app: &AppId) -> String {
    bounded(format!("bh_{app}_owner"))
}

/// The app's runtime login role: DML only, RLS applies.
pub fn runtime_role(app: &AppId) -> String {
    bounded(format!("bh_{app}_rt"))
}

/// The app's cross-tenant login role: SELECT on granted entities only.
pub fn cross_tenant_role(app: &AppId) -> String {
    bounded(format!("bh_{app}_xt"))
}

/// The schema that holds shared (row-level) tenant tables and global tables.
pub const SHARED_SCHEMA: &str = "public";

/// Schema of a `schema`-level tenant inside the app database.
pub fn tenant_schema(tenant: &TenantId) -> String {
    bounded(format!("t_{tenant}"))
}

/// Role of a `schema`-level tenant (NOLOGIN, assumed with SET ROLE inside a transaction) or
/// login role of a `database`-level tenant.
pub fn tenant_role(app: &AppId, tenant: &TenantId) -> String {
    bounded(format!("bh_{app}_t_{tenant}"))
}

/// Database of a `database`-level tenant.
pub fn tenant_database(app: &AppId, tenant: &TenantId) -> String {
    bounded(format!("bh_{app}_t_{tenant}"))
}

/// The table of an entity (inside whichever schema holds it).
pub fn table(entity: &Ident) -> String {
    entity.as_str().to_owned()
}

/// A constraint, index or policy name built from parts, bounded to PostgreSQL's limit.
pub fn object(parts: &[&str]) -> String {
    bounded(parts.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_wraps_and_doubles_quotes() {
        assert_eq!(quote_ident("ticket"), "\"ticket\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn long_names_are_bounded_and_stay_distinct() {
        let app = AppId::parse(&"a".repeat(40)).unwrap();
        let t1 = TenantId::parse(&format!("{}1", "t".repeat(39))).unwrap();
        let t2 = TenantId::parse(&format!("{}2", "t".repeat(39))).unwrap();
        let r1 = tenant_role(&app, &t1);
        let r2 = tenant_role(&app, &t2);
        assert!(r1.len() <= 63 && r2.len() <= 63);
        assert_ne!(r1, r2);
        assert_eq!(r1, tenant_role(&app, &t1), "deterministic");
    }

    #[test]
    fn short_names_are_readable() {
        let app = AppId::parse("helpdesk").unwrap();
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(app_database(&app), "bh_helpdesk");
        assert_eq!(runtime_role(&app), "bh_helpdesk_rt");
        assert_eq!(tenant_schema(&t), "t_acme");
        assert_eq!(tenant_database(&app, &t), "bh_helpdesk_t_acme");
    }
}
