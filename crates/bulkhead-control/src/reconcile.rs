//! Reconciling `tenants.yaml` with the registry: the plan `bulkhead apply` shows (pure: the
//! registry records and the declared specs in, the steps out), and carrying it out.

use bulkhead_model::tenants::{IdentitySpec, TenantSpec};
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
    // Looked up by id: planning N tenants is O(N).
    let declared: std::collections::HashSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    for (app, known) in apps {
        let by_id: std::collections::HashMap<&str, &registry::TenantRecord> =
            known.iter().map(|k| (k.id.as_str(), k)).collect();
        for spec in specs {
            let action = match by_id.get(spec.id.as_str()) {
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
            if !declared.contains(k.id.as_str()) {
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

/// How [`Platform::apply_plan`](crate::platform::Platform::apply_plan) runs.
#[derive(Debug)]
pub struct ApplyOptions<'a> {
    /// How long a moving tenant stays suspended before its data moves (longer than a worker's
    /// reload interval).
    pub quiesce: std::time::Duration,
    /// Where tenants that sign in locally get their realm; `None` leaves realms alone.
    pub realms: Option<&'a bulkhead_identity::store::RealmStore>,
    /// Seconds since the epoch, for new realm keys.
    pub now: u64,
    /// Tenants provisioned at a time (each on connections of its own).
    pub parallel: usize,
}

/// What a step that changed something did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub app: String,
    pub tenant: String,
    /// Records moved, for a move.
    pub moved: Option<usize>,
}

/// Why `apply` stopped part-way: what was done before, and the first failure. Running it
/// again finishes the rest.
#[derive(Debug, thiserror::Error)]
#[error("{what} (run apply again to finish): {source}")]
pub struct ApplyError {
    /// What failed: `tenant T of A`, or `the worker configuration of A`.
    pub what: String,
    /// The steps that were carried out before it stopped.
    pub done: Vec<Applied>,
    #[source]
    pub source: crate::Error,
}

impl crate::platform::Platform {
    /// Carries out a plan's creations, updates and moves: moves one at a time (each suspends
    /// its tenant meanwhile), then every tenant's provisioning (and realm) `parallel` at a time,
    /// their registration and audit one by one, and last one worker-configuration publication
    /// per app — also for apps with nothing to do, so a run cut short before publishing is
    /// finished by the next. The cost per tenant does not grow with the number of tenants:
    /// nothing here lists every tenant per tenant. `progress(total, done)` reports each
    /// provisioned tenant. Idempotent and resumable: a second run has nothing to do.
    pub async fn apply_plan(
        &mut self,
        manifests: &[bulkhead_model::AppManifest],
        specs: &[TenantSpec],
        steps: &[Step],
        options: &ApplyOptions<'_>,
        progress: impl Fn(usize, Option<&str>) + Sync,
    ) -> std::result::Result<Vec<Applied>, ApplyError> {
        use futures_util::StreamExt;
        let mut done = Vec::new();
        let fail = |step: &Step, done: &mut Vec<Applied>, source| ApplyError {
            what: format!("tenant {} of {}", step.tenant, step.app),
            done: std::mem::take(done),
            source,
        };
        let manifest_of: std::collections::HashMap<&str, &bulkhead_model::AppManifest> =
            manifests.iter().map(|m| (m.app.as_str(), m)).collect();
        let spec_of: std::collections::HashMap<&str, &TenantSpec> =
            specs.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut todo = Vec::new();
        for step in steps {
            if !matches!(
                step.action,
                Action::Create | Action::Update | Action::Move { .. }
            ) {
                continue;
            }
            let found = manifest_of
                .get(step.app.as_str())
                .zip(spec_of.get(step.tenant.as_str()));
            match found {
                Some((&m, &spec)) => todo.push((step, m, spec)),
                None => {
                    let why = crate::Error::Internal("a step of no declared app or tenant".into());
                    return Err(fail(step, &mut done, why));
                }
            }
        }
        if let Some(store) = options.realms
            && todo
                .iter()
                .any(|(_, _, s)| matches!(s.identity, IdentitySpec::Local { .. }))
            && let Err(e) = store.migrate().await
        {
            let why = crate::Error::Internal(format!("the realm store: {e}"));
            return Err(fail(todo[0].0, &mut done, why));
        }
        // Moves first, one at a time: each records its own steps and tells the workers.
        let mut moved = std::collections::HashMap::new();
        for (step, m, spec) in &todo {
            if matches!(step.action, Action::Move { .. }) {
                match self
                    .move_tenant(m, &spec.id, spec.isolation, options.quiesce, None)
                    .await
                {
                    Ok(n) => {
                        moved.insert(step.tenant.as_str(), n);
                    }
                    Err(e) => return Err(fail(step, &mut done, e)),
                }
            }
        }
        // Provisioning, several at a time: each tenant's own roles, schema or database, and
        // realm. Nothing in it is shared between tenants but the app's runtime role, which
        // only gains memberships.
        progress(todo.len(), None);
        let this = &*self;
        let progress = &progress;
        let total = todo.len();
        let provisioned: Vec<(usize, crate::Result<()>)> =
            futures_util::stream::iter(todo.iter().enumerate())
                .map(|(i, (_, m, spec))| async move {
                    let mut r = this
                        .ensure_tenant(m, &spec.id, spec.isolation, spec.dedicated())
                        .await;
                    if r.is_ok()
                        && matches!(spec.identity, IdentitySpec::Local { .. })
                        && let Some(store) = options.realms
                    {
                        r = store
                            .create_realm(&spec.id, options.now)
                            .await
                            .map_err(|e| {
                                crate::Error::Internal(format!("the realm of {}: {e}", spec.id))
                            });
                    }
                    progress(total, Some(spec.id.as_str()));
                    (i, r)
                })
                .buffer_unordered(options.parallel.max(1))
                .collect()
                .await;
        let mut provisioned = provisioned;
        provisioned.sort_by_key(|(i, _)| *i);
        // Registration in plan order, then one publication per app — also after a failure,
        // so what was registered is served.
        let mut first_failure = None;
        for (i, r) in provisioned {
            let (step, m, spec) = todo[i];
            let r = match r {
                Ok(()) => self.register_tenant(m, spec).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => done.push(Applied {
                    app: step.app.clone(),
                    tenant: step.tenant.clone(),
                    moved: moved.get(step.tenant.as_str()).copied(),
                }),
                Err(e) => {
                    first_failure.get_or_insert((step, e));
                }
            }
        }
        for m in manifests {
            if let Err(source) = self.sync_worker_config(&m.app).await {
                return Err(ApplyError {
                    what: format!("the worker configuration of {}", m.app),
                    done,
                    source,
                });
            }
        }
        match first_failure {
            Some((step, e)) => Err(fail(step, &mut done, e)),
            None => Ok(done),
        }
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
