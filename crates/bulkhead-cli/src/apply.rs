//! `bulkhead apply -f tenants.yaml`: reconcile declared tenants with the registry, in every
//! registered app. Plans first; `--dry-run` stops there. Idempotent: a second run has nothing
//! to do. Raising a tenant's isolation level moves its data to the new level; lowering it is
//! refused unless `--allow-downgrade`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_control::reconcile::{Action, ApplyOptions, Step, plan};
use bulkhead_control::registry;
use bulkhead_model::tenants;
use bulkhead_model::{AppId, AppManifest};

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
    /// How many tenants to provision at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    #[command(flatten)]
    target: crate::app::Target,
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
        if args.dry_run {
            return Ok(true);
        }
        // The realm store (and the master key) only when a tenant signs in locally.
        let local = specs.iter().any(|s| {
            matches!(
                s.identity,
                bulkhead_model::tenants::IdentitySpec::Local { .. }
            )
        });
        let realms = if local && !todo.is_empty() {
            Some(bulkhead_server::platform::realm_store(&config)?)
        } else {
            None
        };
        let options = ApplyOptions {
            quiesce: crate::app::MOVE_QUIESCE,
            realms: realms.as_ref(),
            now: bulkhead_server::platform::now(),
            parallel: args.parallel.max(1),
        };
        let bar = if args.target.json || todo.len() < 2 {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(todo.len() as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // Even with nothing to do, each app's worker configuration is published again when it
        // lags the registry (a run cut short before publishing).
        let applied = platform
            .apply_plan(&manifests, &specs, &steps, &options, |_, done| {
                if let Some(t) = done {
                    bar.inc(1);
                    bar.set_message(t.to_owned());
                }
            })
            .await;
        bar.finish_and_clear();
        let applied = applied?;
        if todo.is_empty() {
            if !args.target.json {
                println!("nothing to do");
            }
            return Ok(true);
        }
        for a in applied
            .iter()
            .filter(|a| a.moved.is_some() && !args.target.json)
        {
            let step = steps
                .iter()
                .find(|s| s.app == a.app && s.tenant == a.tenant);
            if let (
                Some(moved),
                Some(Step {
                    action: Action::Move { from },
                    isolation,
                    ..
                }),
            ) = (a.moved, step)
            {
                println!(
                    "moved {} of {} from {from} to {isolation} ({moved} records)",
                    a.tenant, a.app
                );
            }
        }
        if !args.target.json {
            println!("applied");
        }
        Ok(true)
    })
}
