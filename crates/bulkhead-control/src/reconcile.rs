//! Reconciling `tenants.yaml` with the registry: the plan `bulkhead apply` shows and then carries
//! out. Pure: the registry records and the declared specs in, the steps out.

use bulkhead_model::tenants::TenantSpec;
use serde::Serialize;

use crate::registry;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// Move the tenant's data to another isolation level (it is suspended meanwhile).
    Move {
        from: String,
    },
    NoChange,
    /// Not applied: the reason.
    Refused(String),
    /// Registered but not declared: reported, never deleted by `apply`.
    Drift,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub app: String,
    pub tenant: String,
    pub isolation: String,
    pub action: Action,
}

/// What `apply` would do in every app: create, update, move (raise; lower only with
/// `allow_downgrade`), nothing, refuse with the reason and the file's line, or report drift.
pub fn plan(
    apps: &[(String, Vec<registry::TenantRecord>)],
    specs: &[TenantSpec],
    allow_downgrade: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (app, known) in apps {
        for spec in specs {
            let action = match known.iter().find(|k| k.id == spec.id) {
                None => Action::Create,
                Some(k) if k.isolation != spec.isolation => {
                    let lower = spec.isolation < k.isolation;
                    if lower && !allow_downgrade {
                        Action::Refused(format!(
                            "lowering isolation from {} to {} (line {}) moves the tenant's data into storage shared with other tenants; pass --allow-downgrade to do it",
                            k.isolation.as_str(),
                            spec.isolation.as_str(),
                            spec.line,
                        ))
                    } else {
                        Action::Move {
                            from: k.isolation.as_str().to_owned(),
                        }
                    }
                }
                Some(k)
                    if k.identity != spec.identity
                        || k.network != spec.network
                        || k.residency != spec.residency
                        || k.dedicated_worker != spec.dedicated_worker =>
                {
                    Action::Update
                }
                Some(_) => Action::NoChange,
            };
            steps.push(Step {
                app: app.clone(),
                tenant: spec.id.to_string(),
                isolation: spec.isolation.as_str().to_owned(),
                action,
            });
        }
        for k in known {
            if !specs.iter().any(|s| s.id == k.id) {
                steps.push(Step {
                    app: app.clone(),
                    tenant: k.id.to_string(),
                    isolation: k.isolation.as_str().to_owned(),
                    action: Action::Drift,
                });
            }
        }
    }
    steps
}

impl crate::platform::Platform {
    /// Carries out one step of a plan for `spec` in `manifest`'s app: a move first (suspended
    /// meanwhile; resumable: run it again to finish), then the declaration (provisioned at its
    /// level, registered, its realm in `realms`, the app's workers told). Returns how many
    /// records moved; steps that change nothing do nothing.
    pub async fn apply_step(
        &mut self,
        manifest: &bulkhead_model::AppManifest,
        spec: &TenantSpec,
        action: &Action,
        quiesce: std::time::Duration,
        realms: Option<&bulkhead_identity::store::RealmStore>,
        now: u64,
    ) -> crate::Result<Option<usize>> {
        let moved = match action {
            Action::Move { .. } => Some(
                self.move_tenant(manifest, &spec.id, spec.isolation, quiesce, None)
                    .await?,
            ),
            Action::Create | Action::Update => None,
            Action::NoChange | Action::Drift | Action::Refused(_) => return Ok(None),
        };
        self.declare_tenant_with_realm(manifest, spec, realms, now)
            .await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_model::tenants;

    fn rec(id: &str, iso: &str) -> registry::TenantRecord {
        registry::TenantRecord {
            app: "helpdesk".into(),
            id: bulkhead_model::TenantId::parse(id).unwrap(),
            isolation: iso.parse().unwrap(),
            placement: "default".into(),
            identity: bulkhead_model::tenants::IdentitySpec::Local { realm: id.into() },
            network: bulkhead_model::tenants::NetworkSpec::default(),
            residency: None,
            status: registry::TenantStatus::Active,
            features: serde_json::json!({}),
            config: serde_json::json!({}),
            dedicated_worker: true,
            created_micros: 0,
        }
    }

    #[test]
    fn plans_create_nochange_refusal_and_drift() {
        let specs = tenants::parse(
            "tenants:\n  - id: acme\n    storage: { namespace: acme, isolation: row }\n    identity: { provider: local, realm: acme }\n  - id: globex\n    storage: { namespace: g, isolation: row }\n  - id: newco\n    storage: { namespace: n, isolation: database }\n",
            "t.yaml",
        )
        .unwrap();
        let apps = vec![(
            "helpdesk".to_owned(),
            vec![
                rec("acme", "row"),
                rec("globex", "schema"),
                rec("old", "row"),
            ],
        )];
        let steps = plan(&apps, &specs, false);
        let actions: Vec<(&str, &Action)> = steps
            .iter()
            .map(|s| (s.tenant.as_str(), &s.action))
            .collect();
        assert_eq!(actions[0], ("acme", &Action::NoChange));
        assert!(matches!(actions[1], ("globex", Action::Refused(why)) if why.contains("lowering")));
        assert_eq!(actions[2], ("newco", &Action::Create));
        assert_eq!(actions[3], ("old", &Action::Drift));
        // With --allow-downgrade the lowering becomes a move; raising is always a move.
        let steps = plan(&apps, &specs, true);
        assert_eq!(
            steps[1].action,
            Action::Move {
                from: "schema".into()
            }
        );
        let raised = tenants::parse(
            "tenants:\n  - id: acme\n    storage: { namespace: acme, isolation: database }\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            plan(&apps, &raised, false)[0].action,
            Action::Move { from: "row".into() }
        );
    }
}
