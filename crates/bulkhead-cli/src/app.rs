//! `bulkhead app create|plan|migrate|list|rotate-credentials|deploy|versions|rollback` and
//! `bulkhead tenant create|show|list|suspend|resume|export|delete`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_control::platform::Platform;
use bulkhead_control::registry;
use bulkhead_model::tenants::{IdentitySpec, TenantSpec};
use bulkhead_model::{AppId, AppManifest, TenantId};

use bulkhead_server::config::{Config, Overrides, Secret};
pub(crate) use bulkhead_server::platform::{app_bucket, manifest_of, platform, write_private};

/// Where the platform database and the embedded vault are.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The platform database (default: the embedded cluster under --data-dir).
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Create (or finish creating) an app from its manifest: database, roles, passwords into the
    /// vault, registry, audit. Writes the app's boot credential to <data-dir>/boot/<app> (0600).
    Create {
        /// The app manifest (YAML).
        #[arg(short = 'm', long)]
        manifest: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Show what migrating the app to a changed manifest would do to its shared schema.
    Plan {
        /// The new manifest (YAML).
        #[arg(short = 'm', long)]
        manifest: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Migrate the app's shared schema, then every tenant schema and database, in parallel
    /// with a bound and a progress bar. Failures are reported per tenant without stopping the
    /// others; running it again finishes what failed. Destructive steps (dropping entities or
    /// fields, changing fields) need --allow-destructive.
    Migrate {
        #[arg(short = 'm', long)]
        manifest: PathBuf,
        #[arg(long)]
        allow_destructive: bool,
        /// How many tenants to migrate at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        #[command(flatten)]
        target: Target,
    },
    /// List registered apps.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Set a new database password for the app's runtime role and store it in the vault; the
    /// old password stops working.
    RotateCredentials {
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check a bundle directory (manifest.yaml, functions/, public/) — manifest errors, JavaScript
    /// syntax errors, imports outside the bundle and routes naming missing exports, every one
    /// with file:line:col — then store it as an immutable version and activate it. Workers
    /// switch without a restart; requests in flight finish on their version. Audited.
    Deploy {
        /// The bundle directory.
        dir: PathBuf,
        /// Only check the bundle; store and activate nothing.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the stored bundle versions of an app, newest first, the active one marked.
    Versions {
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Activate a stored bundle version again (audited).
    Rollback {
        app: String,
        /// The version to activate (see `bulkhead app versions`).
        #[arg(long)]
        to: i64,
        #[command(flatten)]
        target: Target,
    },
    /// Issue a boot credential for running the app's worker outside `bulkhead serve` (e.g.
    /// `bulkhead-worker@.service`): written to `--out` (mode 0600, must not exist), never to
    /// the terminal. It opens the app's vault space only.
    BootCredential {
        app: String,
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create (or finish creating) tenants of an app at an isolation level, each with its own
    /// local realm or the given OpenID provider. Several ids are provisioned `--parallel` at a
    /// time with a progress bar; a tenant that exists at another level is refused (`tenant
    /// move` changes levels). `bulkhead apply -f tenants.yaml` declares tenants from a file.
    Create {
        /// The tenant ids (one or more).
        #[arg(required = true, num_args = 1..)]
        tenants: Vec<String>,
        #[arg(long)]
        app: String,
        /// row (shared tables), schema (own schema and role) or database (own database and
        /// login credentials).
        #[arg(long, default_value = "row")]
        isolation: String,
        /// Sign-in through this OpenID provider (its issuer URL) instead of a local realm.
        #[arg(long, requires = "audience")]
        oidc_issuer: Option<String>,
        /// The audience the provider's access tokens carry for this app.
        #[arg(long)]
        audience: Option<String>,
        /// Data residency label stored with the tenant (e.g. `eu`).
        #[arg(long)]
        residency: Option<String>,
        /// At the `database` level, serve the tenant from a worker of its own that holds only
        /// its database credential (default true; ignored at the other levels).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        dedicated_worker: bool,
        /// How many tenants to provision at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Move a tenant's data to another isolation level: suspended meanwhile, copied and
    /// checked, old level removed, then served again. Resumable: run it again after a failure.
    /// Lowering the level needs --allow-downgrade.
    Move {
        tenant: String,
        #[arg(long)]
        app: String,
        /// row, schema or database.
        #[arg(long)]
        to: String,
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show one tenant: level, status, identity, network policy, residency.
    Show {
        tenant: String,
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// List an app's tenants.
    List {
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Suspend a tenant: it resolves like an unknown tenant until resumed.
    Suspend {
        tenant: String,
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Resume a suspended tenant.
    Resume {
        tenant: String,
        #[arg(long)]
        app: String,
        #[command(flatten)]
        target: Target,
    },
    /// Write one tenant's data as JSON lines (`{"entity", "record"}`), from any isolation level.
    Export {
        tenant: String,
        #[arg(long)]
        app: String,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a tenant of an app: its data at its level, its secrets, its files, its registry
    /// entry. Irreversible: requires --confirm.
    Delete {
        tenant: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) fn config(config_path: &Path, t: &Target) -> anyhow::Result<Config> {
    Ok(Config::load(
        config_path,
        Overrides {
            database_url: t.database_url.clone().map(Secret::new),
            data_dir: t.data_dir.clone(),
            ..Overrides::default()
        },
    )?)
}

/// The platform handle for a subcommand's target options.
pub(crate) async fn platform_for(config_path: &Path, target: &Target) -> anyhow::Result<Platform> {
    Ok(platform(&config(config_path, target)?).await?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn run_app(config_path: &Path, cmd: AppCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            AppCommand::Create { manifest, target } => {
                let config = config(config_path, &target)?;
                let text = std::fs::read_to_string(&manifest)
                    .with_context(|| format!("reading {}", manifest.display()))?;
                let m = AppManifest::from_yaml(&text, &manifest.display().to_string())?;
                let mut p = platform(&config).await?;
                let boot = p.create_app(&m, None).await?;
                let path = config.data_dir.join("boot").join(m.app.as_str());
                write_private(&path, boot.to_secret_string().expose())?;
                if target.json {
                    println!(
                        "{}",
                        serde_json::json!({"app": m.app, "boot_credential_file": path})
                    );
                } else {
                    println!("app {} ready; boot credential in {}", m.app, path.display());
                }
            }
            AppCommand::Plan { manifest, target } => {
                let p = platform(&config(config_path, &target)?).await?;
                let m = read_manifest(&manifest)?;
                let plan = p.provisioner.plan(&m).await?;
                if target.json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else if plan.is_empty() {
                    println!("{}: nothing to do", m.app);
                } else {
                    for step in &plan.steps {
                        let mark = if step.is_destructive() {
                            "DESTRUCTIVE "
                        } else {
                            ""
                        };
                        println!("{mark}{}", step.describe());
                    }
                }
            }
            AppCommand::Migrate {
                manifest,
                allow_destructive,
                parallel,
                target,
            } => {
                let mut p = platform(&config(config_path, &target)?).await?;
                let m = read_manifest(&manifest)?;
                manifest_of(&p, m.app.as_str()).await?;
                return migrate(&mut p, &m, allow_destructive, parallel.max(1), target.json).await;
            }
            AppCommand::List { target } => {
                let p = platform(&config(config_path, &target)?).await?;
                let apps = registry::apps(&p.client).await?;
                if target.json {
                    let ids: Vec<&String> = apps.iter().map(|(id, _)| id).collect();
                    println!("{}", serde_json::to_string(&ids)?);
                } else {
                    for (id, _) in apps {
                        println!("{id}");
                    }
                }
            }
            AppCommand::BootCredential { app, out, target } => {
                let p = platform(&config(config_path, &target)?).await?;
                let id = bulkhead_model::AppId::parse(&app)?;
                let credential = p.vault.boot_credential(&id).await?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| format!("creating {} (it must not exist)", out.display()))?;
                file.write_all(format!("{}\n", credential.to_secret_string().expose()).as_bytes())?;
                println!("boot credential of {app} written to {}", out.display());
            }
            AppCommand::Deploy { dir, check, target } => {
                let (bundle, manifest) = match crate::bundle::load_checked(&dir)? {
                    Ok(ok) => ok,
                    Err(problems) => {
                        if target.json {
                            println!(
                                "{}",
                                serde_json::json!({"error": {"code": "invalid_bundle", "problems": problems}})
                            );
                        } else {
                            eprintln!("{} has {} problem(s):", dir.display(), problems.len());
                            for p in &problems {
                                eprintln!("  {p}");
                            }
                        }
                        anyhow::bail!("the bundle was refused; nothing was stored or activated");
                    }
                };
                if check {
                    println!("{}: the bundle is valid ({})", dir.display(), bundle.digest());
                    return Ok(());
                }
                let mut p = platform(&config(config_path, &target)?).await?;
                let v = p.deploy_bundle(&bundle, &manifest).await?;
                if target.json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!(
                        "deployed {} version {} ({}, {} files) and activated it",
                        manifest.app, v.version, v.digest, v.files
                    );
                }
            }
            AppCommand::Versions { app, target } => {
                let p = platform(&config(config_path, &target)?).await?;
                let versions = p.bundle_versions(&AppId::parse(&app)?).await?;
                if target.json {
                    println!("{}", serde_json::to_string_pretty(&versions)?);
                } else {
                    println!("{:<8} {:<7} {:<21} {:<12} digest", "version", "active", "created", "by");
                    for v in versions {
                        println!(
                            "{:<8} {:<7} {:<21} {:<12} {}",
                            v.version,
                            if v.active { "*" } else { "" },
                            v.created_at,
                            v.actor,
                            v.digest
                        );
                    }
                }
            }
            AppCommand::Rollback { app, to, target } => {
                let mut p = platform(&config(config_path, &target)?).await?;
                let v = p.rollback_bundle(&AppId::parse(&app)?, to).await?;
                if target.json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!("{app}: version {} ({}) is active again", v.version, v.digest);
                }
            }
            AppCommand::RotateCredentials { app, target } => {
                let mut p = platform(&config(config_path, &target)?).await?;
                let m = manifest_of(&p, &app).await?;
                p.rotate_credentials(&m).await?;
                println!("rotated the runtime credentials of {app}");
            }
        }
        Ok(())
    })
}

pub fn run_tenant(config_path: &Path, cmd: TenantCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            TenantCommand::List { app, target } => {
                let p = platform(&config(config_path, &target)?).await?;
                let tenants = registry::tenants(&p.client, &AppId::parse(&app)?).await?;
                if target.json {
                    println!("{}", serde_json::to_string_pretty(&tenants)?);
                } else {
                    println!("{:<24} {:<9} {:<10} identity", "tenant", "level", "status");
                    for t in tenants {
                        let provider = match t.identity {
                            IdentitySpec::Local { .. } => "\"local\"",
                            IdentitySpec::Oidc { .. } => "\"oidc\"",
                        };
                        println!(
                            "{:<24} {:<9} {:<10} {provider}",
                            t.id.as_str(),
                            t.isolation.as_str(),
                            t.status.as_str()
                        );
                    }
                }
            }
            TenantCommand::Create {
                tenants,
                app,
                isolation,
                oidc_issuer,
                audience,
                residency,
                dedicated_worker,
                parallel,
                target,
            } => {
                let cfg = config(config_path, &target)?;
                let mut p = platform(&cfg).await?;
                let m = manifest_of(&p, &app).await?;
                let isolation: bulkhead_model::IsolationLevel =
                    isolation.parse().map_err(anyhow::Error::msg)?;
                let specs = tenants
                    .iter()
                    .map(|tenant| {
                        let identity = match (&oidc_issuer, &audience) {
                            (Some(issuer), Some(audience)) => IdentitySpec::Oidc {
                                issuer: issuer.clone(),
                                audience: audience.clone(),
                                jwks_url: None,
                                roles_claim: "roles".into(),
                            },
                            _ => IdentitySpec::Local {
                                realm: tenant.clone(),
                            },
                        };
                        Ok(TenantSpec {
                            id: TenantId::parse(tenant)?,
                            namespace: tenant.clone(),
                            isolation,
                            identity,
                            network: Default::default(),
                            residency: cfg.deployment.residency_or_default(residency.clone()),
                            dedicated_worker,
                            line: 0,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                create_tenants(&cfg, &mut p, &m, &specs, parallel, target.json).await?;
                if target.json {
                    match specs.as_slice() {
                        [one] => println!("{}", serde_json::to_string(one)?),
                        many => println!("{}", serde_json::to_string(many)?),
                    }
                } else {
                    for spec in &specs {
                        println!(
                            "tenant {} of {app} ready ({})",
                            spec.id.as_str(),
                            isolation.as_str()
                        );
                    }
                }
            }
            TenantCommand::Move {
                tenant,
                app,
                to,
                allow_downgrade,
                target,
            } => {
                let mut p = platform(&config(config_path, &target)?).await?;
                let (m, from) = tenant_of(&p, &app, &tenant).await?;
                let to: bulkhead_model::IsolationLevel = to.parse().map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    allow_downgrade || to >= from,
                    "lowering {tenant} from {} to {} moves its data into storage shared with other tenants; pass --allow-downgrade",
                    from.as_str(),
                    to.as_str()
                );
                let moved = p
                    .move_tenant(
                        &m,
                        &TenantId::parse(&tenant)?,
                        to,
                        MOVE_QUIESCE,
                        None,
                    )
                    .await
                    .with_context(|| format!("moving {tenant} (run it again to finish)"))?;
                println!(
                    "tenant {tenant} of {app}: {} -> {} ({moved} records)",
                    from.as_str(),
                    to.as_str()
                );
            }
            TenantCommand::Show {
                tenant,
                app,
                target,
            } => {
                let p = platform(&config(config_path, &target)?).await?;
                let record = registry::tenant(&p.client, &AppId::parse(&app)?, &tenant)
                    .await?
                    .with_context(|| format!("tenant {tenant} of app {app} is not registered"))?;
                if target.json {
                    println!("{}", serde_json::to_string_pretty(&record)?);
                } else {
                    for (key, value) in [
                        ("tenant", record.id.to_string()),
                        ("app", record.app.clone()),
                        ("isolation", record.isolation.as_str().to_owned()),
                        ("placement", record.placement.clone()),
                        ("status", record.status.as_str().to_owned()),
                        ("residency", record.residency.clone().unwrap_or_else(|| "-".into())),
                        ("identity", serde_json::to_string(&record.identity)?),
                        ("network", serde_json::to_string(&record.network)?),
                    ] {
                        println!("{key:<10} {value}");
                    }
                }
            }
            TenantCommand::Export {
                tenant,
                app,
                output,
                target,
            } => {
                let mut p = platform(&config(config_path, &target)?).await?;
                let (m, level) = tenant_of(&p, &app, &tenant).await?;
                let tenant_id = TenantId::parse(&tenant)?;
                let lines = p.provisioner.export_tenant(&m, &tenant_id, level).await?;
                let mut text = lines.join("\n");
                if !text.is_empty() {
                    text.push('\n');
                }
                match output {
                    Some(path) => {
                        write_private(&path, &text)?;
                        eprintln!("exported {} records to {}", lines.len(), path.display());
                    }
                    None => print!("{text}"),
                }
                bulkhead_control::audit::append(
                    &mut p.client,
                    &bulkhead_control::audit::Entry {
                        actor: &p.actor,
                        action: "tenant.export",
                        target: &format!("{app}/{tenant}"),
                        detail: serde_json::json!({ "records": lines.len() }),
                    },
                )
                .await?;
            }
            TenantCommand::Delete {
                tenant,
                app,
                confirm,
                target,
            } => {
                anyhow::ensure!(
                    confirm,
                    "deleting tenant {tenant} of {app} removes its data, secrets and files for good; pass --confirm"
                );
                let cfg = config(config_path, &target)?;
                let mut p = platform(&cfg).await?;
                let (m, level) = tenant_of(&p, &app, &tenant).await?;
                let bucket = app_bucket(&cfg, &p, &m.app).await?;
                let realms = bulkhead_server::platform::realm_store(&cfg)?;
                let files = p
                    .delete_tenant(
                        &m,
                        &TenantId::parse(&tenant)?,
                        level,
                        Some(&bucket),
                        Some(&realms),
                    )
                    .await?;
                if level == bulkhead_model::IsolationLevel::Database {
                    bulkhead_server::supervise::remove_worker_dirs(
                        &cfg,
                        &m.app.tenant_space(&TenantId::parse(&tenant)?),
                    )?;
                }
                println!("deleted tenant {tenant} of {app} ({}, {files} files)", level.as_str());
            }
            TenantCommand::Suspend {
                tenant,
                app,
                target,
            } => {
                set_status(config_path, &app, &tenant, &target, true).await?;
            }
            TenantCommand::Resume {
                tenant,
                app,
                target,
            } => {
                set_status(config_path, &app, &tenant, &target, false).await?;
            }
        }
        Ok(())
    })
}

async fn set_status(
    config_path: &Path,
    app: &str,
    tenant: &str,
    target: &Target,
    suspended: bool,
) -> anyhow::Result<()> {
    let mut p = platform(&config(config_path, target)?).await?;
    let (app_id, tenant_id) = (AppId::parse(app)?, TenantId::parse(tenant)?);
    anyhow::ensure!(
        p.set_tenant_status(&app_id, &tenant_id, suspended).await?,
        "tenant {tenant} of app {app} is not registered"
    );
    let status = if suspended { "suspended" } else { "active" };
    println!("tenant {tenant} of {app}: {status}");
    Ok(())
}

/// The manifest of `app` and the isolation level of its `tenant`, from the registry.
async fn tenant_of(
    p: &Platform,
    app: &str,
    tenant: &str,
) -> anyhow::Result<(AppManifest, bulkhead_model::IsolationLevel)> {
    let m = manifest_of(p, app).await?;
    let record = registry::tenant(&p.client, &m.app, tenant)
        .await?
        .with_context(|| format!("tenant {tenant} of app {app} is not registered"))?;
    Ok((m, record.isolation))
}

fn read_manifest(path: &Path) -> anyhow::Result<AppManifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(AppManifest::from_yaml(&text, &path.display().to_string())?)
}

async fn migrate(
    p: &mut Platform,
    m: &AppManifest,
    allow_destructive: bool,
    parallel: usize,
    json: bool,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let run = p
        .migrate_all(m, allow_destructive, parallel, |total, done| {
            bar.set_length(total as u64);
            if let Some(t) = done {
                bar.inc(1);
                bar.set_message(t.to_owned());
            }
        })
        .await?;
    bar.finish_and_clear();
    let (shared, results) = (&run.shared, &run.tenants);
    if json {
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|(t, r)| match r {
                Ok(rep) => serde_json::json!({"tenant": t, "ok": true, "version": rep.version, "steps": rep.plan.steps.len()}),
                Err(e) => serde_json::json!({"tenant": t, "ok": false, "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"shared": {"version": shared.version, "steps": shared.plan.steps.len()}, "tenants": out})
        );
    } else {
        println!(
            "shared schema: version {} ({} steps)",
            shared.version,
            shared.plan.steps.len()
        );
        for (t, r) in results {
            match r {
                Ok(rep) => println!(
                    "tenant {t}: version {} ({} steps)",
                    rep.version,
                    rep.plan.steps.len()
                ),
                Err(e) => println!("tenant {t}: FAILED: {e}"),
            }
        }
    }
    let failed = run.failed();
    anyhow::ensure!(
        failed == 0,
        "{failed} tenant(s) failed to migrate; run it again to retry them"
    );
    Ok(())
}

/// How long a tenant stays suspended before its data moves: longer than a worker's reload
/// interval, so no running worker still writes to the old level.
/// `tenant create` of one or more tenants: planned like `apply` (so a second run has nothing
/// to do), refused whole before any change when a tenant exists at another level or an id is
/// given twice, then provisioned `parallel` at a time with one worker-configuration
/// publication, a progress bar for two or more.
async fn create_tenants(
    cfg: &Config,
    p: &mut Platform,
    m: &AppManifest,
    specs: &[TenantSpec],
    parallel: usize,
    quiet: bool,
) -> anyhow::Result<()> {
    use bulkhead_control::reconcile::{Action, ApplyOptions, plan};
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = specs.iter().find(|s| !seen.insert(s.id.as_str())) {
        anyhow::bail!("tenant {} is given twice", twice.id.as_str());
    }
    let app = AppId::parse(m.app.as_str())?;
    let known = registry::tenants(&p.client, &app).await?;
    let steps: Vec<_> = plan(&[(m.app.to_string(), known)], specs, false)
        .into_iter()
        .filter(|s| specs.iter().any(|t| t.id.as_str() == s.tenant))
        .collect();
    for step in &steps {
        match &step.action {
            Action::Move { from } => anyhow::bail!(
                "tenant {} of {} exists at the {from} level; `bulkhead tenant move {} --app {} --to {}` changes it (nothing was created)",
                step.tenant,
                step.app,
                step.tenant,
                step.app,
                step.isolation
            ),
            Action::Refused(why) => anyhow::bail!(
                "tenant {} of {}: {why} (nothing was created)",
                step.tenant,
                step.app
            ),
            _ => {}
        }
    }
    let local = specs
        .iter()
        .any(|s| matches!(s.identity, IdentitySpec::Local { .. }));
    let realms = if local {
        Some(bulkhead_server::platform::realm_store(cfg)?)
    } else {
        None
    };
    let options = ApplyOptions {
        quiesce: MOVE_QUIESCE,
        realms: realms.as_ref(),
        now: bulkhead_server::platform::now(),
        parallel: parallel.max(1),
    };
    let todo = steps
        .iter()
        .filter(|s| matches!(s.action, Action::Create | Action::Update))
        .count();
    let bar = if quiet || todo < 2 {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(todo as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let applied = p
        .apply_plan(
            std::slice::from_ref(m),
            specs,
            &steps,
            &options,
            |_, done| {
                if let Some(t) = done {
                    bar.inc(1);
                    bar.set_message(t.to_owned());
                }
            },
        )
        .await;
    bar.finish_and_clear();
    applied?;
    Ok(())
}

pub const MOVE_QUIESCE: std::time::Duration = std::time::Duration::from_secs(3);
