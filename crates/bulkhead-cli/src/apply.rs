//! `bulkhead apply -f tenants.yaml`: reconcile declared tenants with the registry, in every
//! registered app. Plans first; `--dry-run` stops there. Idempotent: a second run has nothing
//! to do. Raising a tenant's isolation level moves its data to the new level; lowering it is
//! refused unless `--allow-downgrade`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_control::registry;
use bulkhead_model::tenants::{self, TenantSpec};
use bulkhead_model::{AppId, AppManifest};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tenants file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Show the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow lowering a tenant's isolation level (database → schema → row), which moves its
    /// data into storage shared with other tenants.
    #[arg(long)]
    allow_downgrade: bool,
    #[command(flatten)]
    target: crate::app::Target,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Action {
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
struct Step {
    app: String,
    tenant: String,
    isolation: String,
    action: Action,
}

fn plan(
    apps: &[(String, Vec<registry::TenantRecord>)],
    specs: &[TenantSpec],
    allow_downgrade: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (app, known) in apps {
        for spec in specs {
            let identity = serde_json::to_value(&spec.identity).unwrap_or_default();
            let network = serde_json::to_value(&spec.network).unwrap_or_default();
            let action = match known.iter().find(|k| k.id == spec.id.as_str()) {
                None => Action::Create,
                Some(k) if k.isolation != spec.isolation.as_str() => {
                    let lower = k
                        .isolation
                        .parse::<bulkhead_model::IsolationLevel>()
                        .is_ok_and(|known| spec.isolation < known);
                    if lower && !allow_downgrade {
                        Action::Refused(format!(
                            "lowering isolation from {} to {} (line {}) moves the tenant's data into storage shared with other tenants; pass --allow-downgrade to do it",
                            k.isolation,
                            spec.isolation.as_str(),
                            spec.line,
                        ))
                    } else {
                        Action::Move {
                            from: k.isolation.clone(),
                        }
                    }
                }
                Some(k)
                    if k.identity != identity
                        || k.network != network
                        || k.residency != spec.residency =>
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
            if !specs.iter().any(|s| s.id.as_str() == k.id) {
                steps.push(Step {
                    app: app.clone(),
                    tenant: k.id.clone(),
                    isolation: k.isolation.clone(),
                    action: Action::Drift,
                });
            }
        }
    }
    steps
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut specs = tenants::parse(&text, &args.file.display().to_string())?;
    let config = crate::app::config(config_path, &args.target)?;
    // A tenant without a residency label gets the deployment's (before planning, so a
    // second run finds nothing to change).
    for spec in &mut specs {
        spec.residency = config
            .deployment
            .residency_or_default(spec.residency.take());
    }
    crate::app::runtime()?.block_on(async {
        let mut platform = bulkhead_server::platform::platform(&config).await?;
        let mut apps = Vec::new();
        let mut manifests = Vec::new();
        for (id, manifest) in registry::apps(&platform.client).await? {
            let app = AppId::parse(&id)?;
            apps.push((id, registry::tenants(&platform.client, &app).await?));
            manifests.push(serde_json::from_value::<AppManifest>(manifest)?);
        }
        anyhow::ensure!(!apps.is_empty(), "no apps are registered yet");
        let steps = plan(&apps, &specs, args.allow_downgrade);
        if args.target.json {
            println!("{}", serde_json::to_string_pretty(&steps)?);
        } else {
            for s in &steps {
                let what = match &s.action {
                    Action::Create => "create".to_owned(),
                    Action::Update => "update".to_owned(),
                    Action::Move { from } => format!("move from {from} (suspended while it moves)"),
                    Action::NoChange => "no change".to_owned(),
                    Action::Drift => "drift: registered but not declared (left as is)".to_owned(),
                    Action::Refused(why) => format!("REFUSED: {why}"),
                };
                println!("{:<16} {:<24} {:<9} {what}", s.app, s.tenant, s.isolation);
            }
        }
        if steps.iter().any(|s| matches!(s.action, Action::Refused(_))) {
            eprintln!("error: the plan has refused changes; nothing was applied");
            return Ok(false);
        }
        let todo: Vec<&Step> = steps
            .iter()
            .filter(|s| {
                matches!(
                    s.action,
                    Action::Create | Action::Update | Action::Move { .. }
                )
            })
            .collect();
        if args.dry_run || todo.is_empty() {
            if todo.is_empty() && !args.target.json {
                println!("nothing to do");
            }
            return Ok(true);
        }
        for step in todo {
            let manifest = manifests
                .iter()
                .find(|m| m.app.as_str() == step.app)
                .context("manifest of a registered app")?;
            let spec = specs
                .iter()
                .find(|s| s.id.as_str() == step.tenant)
                .context("declared tenant")?;
            if let Action::Move { from } = &step.action {
                let moved = platform
                    .move_tenant(
                        manifest,
                        &spec.id,
                        spec.isolation,
                        crate::app::MOVE_QUIESCE,
                        None,
                    )
                    .await
                    .with_context(|| {
                        format!(
                            "moving {} of {} from {from} to {} (run apply again to finish)",
                            spec.id,
                            step.app,
                            spec.isolation.as_str()
                        )
                    })?;
                if !args.target.json {
                    println!(
                        "moved {} of {} from {from} to {} ({moved} records)",
                        spec.id,
                        step.app,
                        spec.isolation.as_str()
                    );
                }
            }
            // Provisions at its level, registers it, and tells the app's running workers
            // (a silo's password and the tenant list go to the app's vault space).
            bulkhead_server::platform::declare_tenant(&config, &mut platform, manifest, spec)
                .await?;
        }
        if !args.target.json {
            println!("applied");
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, iso: &str) -> registry::TenantRecord {
        registry::TenantRecord {
            app: "helpdesk".into(),
            id: id.into(),
            isolation: iso.into(),
            placement: "default".into(),
            identity: serde_json::json!({"provider": "local", "realm": id}),
            network: serde_json::json!({"default": "deny", "allow": []}),
            residency: None,
            status: "active".into(),
            features: serde_json::json!({}),
            config: serde_json::json!({}),
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
