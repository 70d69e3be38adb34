//! Per-tenant feature flags and settings: the override shapes and flag evaluation.
//!
//! A flag is declared in the manifest with a type and the app's default. A tenant may override
//! it: a value for everyone, rules for users or roles, and a percentage rollout whose buckets
//! come from a stable hash of flag, tenant and user — the same user gets the same answer on
//! every worker, and one tenant's overrides never touch another's evaluation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{FlagDecl, FlagKind};

/// A tenant's override of one flag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagOverride {
    /// The value for everyone the rules and rollout do not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Checked in order; the first rule naming the user or one of their roles wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// Targets users and roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub value: Value,
}

/// `percent` of users (by stable hash) get `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub percent: u8,
    pub value: Value,
}

/// What a tenant's workers know of its options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantOptions {
    /// Flag overrides by flag name.
    #[serde(default)]
    pub flags: BTreeMap<String, FlagOverride>,
    /// Setting overrides by setting name (secret ones are held apart, never listed).
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
}

/// Why an evaluation gave its value (OpenFeature reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The app's default: the tenant has no override.
    Default,
    /// The tenant's value for everyone.
    Static,
    /// A user or role rule matched.
    TargetingMatch,
    /// The percentage rollout put the user in.
    Split,
}

/// An evaluated flag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub value: Value,
    pub reason: Reason,
    /// Which branch gave the value: `default`, `tenant`, `rule-<n>`, `rollout`.
    pub variant: String,
}

impl FlagOverride {
    /// Checks every value against the flag's type; returns the offending path.
    pub fn check(&self, decl: &FlagDecl) -> Result<(), String> {
        let bad = |path: String| {
            Err(format!(
                "{path}: expected a {} value for flag {}",
                kind_name(decl.kind),
                decl.name
            ))
        };
        if let Some(v) = &self.value
            && !decl.kind.accepts(v)
        {
            return bad("value".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !decl.kind.accepts(&rule.value) {
                return bad(format!("rules[{i}].value"));
            }
            if rule.users.is_empty() && rule.roles.is_empty() {
                return Err(format!("rules[{i}]: name users or roles"));
            }
        }
        if let Some(r) = &self.rollout {
            if r.percent > 100 {
                return Err("rollout.percent: between 0 and 100".into());
            }
            if !decl.kind.accepts(&r.value) {
                return bad("rollout.value".into());
            }
        }
        Ok(())
    }
}

fn kind_name(kind: FlagKind) -> &'static str {
    match kind {
        FlagKind::Bool => "bool",
        FlagKind::String => "string",
        FlagKind::Number => "number",
        FlagKind::Json => "json",
    }
}

/// The bucket (0..100) of a user for a flag in a tenant: FNV-1a over the three, stable across
/// processes, releases and machines.
pub fn bucket(flag: &str, tenant: &str, user: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [flag, tenant, user] {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (h % 100) as u8
}

/// Evaluates a flag for a user (`user` empty for anonymous callers) with its roles.
pub fn evaluate(
    decl: &FlagDecl,
    over: Option<&FlagOverride>,
    tenant: &str,
    user: &str,
    roles: &[String],
) -> Evaluation {
    let Some(over) = over else {
        return Evaluation {
            value: decl.default.clone(),
            reason: Reason::Default,
            variant: "default".into(),
        };
    };
    for (i, rule) in over.rules.iter().enumerate() {
        let by_user = !user.is_empty() && rule.users.iter().any(|u| u == user);
        let by_role = rule.roles.iter().any(|r| roles.contains(r));
        if by_user || by_role {
            return Evaluation {
                value: rule.value.clone(),
                reason: Reason::TargetingMatch,
                variant: format!("rule-{i}"),
            };
        }
    }
    if let Some(r) = &over.rollout
        && !user.is_empty()
        && bucket(decl.name.as_str(), tenant, user) < r.percent
    {
        return Evaluation {
            value: r.value.clone(),
            reason: Reason::Split,
            variant: "rollout".into(),
        };
    }
    match &over.value {
        Some(v) => Evaluation {
            value: v.clone(),
            reason: Reason::Static,
            variant: "tenant".into(),
        },
        None => Evaluation {
            value: decl.default.clone(),
            reason: Reason::Default,
            variant: "default".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ident;
    use serde_json::json;

    fn decl() -> FlagDecl {
        FlagDecl {
            name: Ident::parse("new_editor").unwrap(),
            kind: FlagKind::Bool,
            default: json!(false),
            description: None,
            anonymous: false,
        }
    }

    #[test]
    fn defaults_overrides_rules_and_rollout_in_that_order() {
        let d = decl();
        let e = evaluate(&d, None, "acme", "u1", &[]);
        assert_eq!((e.value, e.reason), (json!(false), Reason::Default));
        let over = FlagOverride {
            value: Some(json!(true)),
            rules: vec![Rule {
                users: vec![],
                roles: vec!["customer".into()],
                value: json!(false),
            }],
            rollout: None,
        };
        let e = evaluate(&d, Some(&over), "acme", "u1", &["agent".into()]);
        assert_eq!((e.value, e.reason), (json!(true), Reason::Static));
        let e = evaluate(&d, Some(&over), "acme", "u1", &["customer".into()]);
        assert_eq!(
            (e.value, e.reason, e.variant.as_str()),
            (json!(false), Reason::TargetingMatch, "rule-0")
        );
    }

    #[test]
    fn rollout_buckets_are_stable_and_proportional() {
        let d = decl();
        let over = FlagOverride {
            value: None,
            rules: vec![],
            rollout: Some(Rollout {
                percent: 30,
                value: json!(true),
            }),
        };
        let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let on = users
            .iter()
            .filter(|u| evaluate(&d, Some(&over), "acme", u, &[]).value == json!(true))
            .count();
        assert!((2_700..3_300).contains(&on), "{on} of 10000 at 30%");
        // Stable: the same answer every time; another tenant buckets independently.
        assert_eq!(
            bucket("new_editor", "acme", "user-7"),
            bucket("new_editor", "acme", "user-7")
        );
        let same = users
            .iter()
            .filter(|u| bucket("new_editor", "acme", u) == bucket("new_editor", "beta", u))
            .count();
        assert!(same < 500, "{same}: tenants must not share buckets");
        // Anonymous callers are never in a rollout.
        assert_eq!(
            evaluate(&d, Some(&over), "acme", "", &[]).reason,
            Reason::Default
        );
    }

    #[test]
    fn override_values_must_match_the_flag_type() {
        let d = decl();
        let bad = FlagOverride {
            value: Some(json!("yes")),
            ..FlagOverride::default()
        };
        assert!(bad.check(&d).unwrap_err().starts_with("value"));
        let bad_rule = FlagOverride {
            rules: vec![Rule {
                users: vec!["u".into()],
                roles: vec![],
                value: json!(1),
            }],
            ..FlagOverride::default()
        };
        assert!(
            bad_rule
                .check(&d)
                .unwrap_err()
                .starts_with("rules[0].value")
        );
        let bad_pct = FlagOverride {
            rollout: Some(Rollout {
                percent: 101,
                value: json!(true),
            }),
            ..FlagOverride::default()
        };
        assert!(bad_pct.check(&d).is_err());
    }
}
