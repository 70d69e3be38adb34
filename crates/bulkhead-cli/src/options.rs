//! `bulkhead flags get|set` and `bulkhead config get|set`: a tenant's feature flag overrides
//! and settings, and `bulkhead search rebuild`. Running workers pick changes up within seconds;
//! every change is audited.

use std::path::Path;

use anyhow::Context;
use bulkhead_model::TenantId;
use bulkhead_model::options::FlagOverride;
use serde_json::{Value, json};

use crate::app::{Target, manifest_of, platform_for, runtime};

/// One tenant of one app, and where the platform is.
#[derive(Debug, clap::Args)]
pub struct TenantTarget {
    #[arg(long)]
    app: String,
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum FlagsCommand {
    /// Show the app's flags: type, default and the tenant's override.
    Get {
        #[command(flatten)]
        at: TenantTarget,
    },
    /// Override a flag for a tenant: `--value true` for everyone, or `--override` with rules
    /// and a rollout, e.g. '{"value": false, "rules": [{"roles": ["agent"], "value": true}],
    /// "rollout": {"percent": 20, "value": true}}'. `--clear` goes back to the app's default.
    Set {
        name: String,
        /// The value for everyone (JSON: true, "dark", 3, {...}).
        #[arg(long, conflicts_with_all = ["override", "clear"])]
        value: Option<String>,
        /// The whole override (JSON).
        #[arg(long = "override", conflicts_with = "clear")]
        r#override: Option<String>,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        at: TenantTarget,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Show the app's settings for a tenant (secret values are never shown).
    Get {
        #[command(flatten)]
        at: TenantTarget,
    },
    /// Set a tenant's value of a setting, validated against the setting's JSON Schema (the
    /// error names the field). VALUE is JSON, or else taken as a string. Secret settings go
    /// to the app's vault space. `--clear` goes back to the app's default.
    Set {
        name: String,
        value: Option<String>,
        #[arg(long, conflicts_with = "value")]
        clear: bool,
        #[command(flatten)]
        at: TenantTarget,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SearchCommand {
    /// Rebuild a tenant's search index (or every tenant's with --all) from the database: a
    /// request in the tenant's outbox that every worker's copy honours on its next pass.
    Rebuild {
        #[arg(long)]
        app: String,
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        tenant: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run_search(config_path: &Path, cmd: SearchCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let SearchCommand::Rebuild {
            app,
            tenant,
            all: _,
            target,
        } = cmd;
        let mut p = platform_for(config_path, &target).await?;
        let m = manifest_of(&p, &app).await?;
        let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
        let asked = p.request_search_rebuild(&m, tenant.as_ref()).await?;
        if target.json {
            println!("{}", json!({"app": app, "rebuild_requested": asked}));
        } else {
            for t in &asked {
                println!("search index of {app}/{t}: rebuild requested");
            }
        }
        Ok(())
    })
}

impl TenantTarget {
    /// The platform, the app's manifest and the tenant id.
    async fn open(
        &self,
        config_path: &Path,
    ) -> anyhow::Result<(
        bulkhead_control::platform::Platform,
        bulkhead_model::AppManifest,
        TenantId,
    )> {
        let p = platform_for(config_path, &self.target).await?;
        let m = manifest_of(&p, &self.app).await?;
        let t = TenantId::parse(&self.tenant)?;
        Ok((p, m, t))
    }
}

fn json_arg(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

pub fn run_flags(config_path: &Path, cmd: FlagsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            FlagsCommand::Get { at } => {
                let (p, m, t) = at.open(config_path).await?;
                let rows = p.tenant_flags(&m, &t).await?;
                if at.target.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!("{:<24} {:<7} {:<16} override", "flag", "type", "default");
                    for r in &rows {
                        println!(
                            "{:<24} {:<7} {:<16} {}",
                            r["flag"].as_str().unwrap_or_default(),
                            r["type"].as_str().unwrap_or_default(),
                            r["default"].to_string(),
                            if r["override"].is_null() {
                                "-".to_owned()
                            } else {
                                r["override"].to_string()
                            }
                        );
                    }
                }
            }
            FlagsCommand::Set {
                name,
                value,
                r#override,
                clear,
                at,
            } => {
                let (mut p, m, t) = at.open(config_path).await?;
                let over = match (value, r#override, clear) {
                    (_, _, true) => None,
                    (Some(v), None, false) => Some(FlagOverride {
                        value: Some(json_arg(&v)),
                        ..FlagOverride::default()
                    }),
                    (None, Some(o), false) => Some(
                        serde_json::from_str::<FlagOverride>(&o)
                            .with_context(|| format!("--override for flag {name}"))?,
                    ),
                    _ => anyhow::bail!("give --value, --override or --clear"),
                };
                p.set_tenant_flag(&m, &t, &name, over.as_ref()).await?;
                println!("flag {name} of {} for tenant {t}: set", at.app);
            }
        }
        Ok(())
    })
}

pub fn run_config(config_path: &Path, cmd: ConfigCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            ConfigCommand::Get { at } => {
                let (p, m, t) = at.open(config_path).await?;
                let rows = p.tenant_settings(&m, &t).await?;
                if at.target.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for r in &rows {
                        println!(
                            "{:<24} {}{}",
                            r["setting"].as_str().unwrap_or_default(),
                            r["value"],
                            if r["overridden"] == true {
                                ""
                            } else {
                                "  (default)"
                            }
                        );
                    }
                }
            }
            ConfigCommand::Set {
                name,
                value,
                clear,
                at,
            } => {
                let (mut p, m, t) = at.open(config_path).await?;
                let value = match (value, clear) {
                    (_, true) => None,
                    (Some(v), false) => Some(json_arg(&v)),
                    (None, false) => anyhow::bail!("give a VALUE or --clear"),
                };
                p.set_tenant_setting(&m, &t, &name, value.as_ref()).await?;
                println!("setting {name} of {} for tenant {t}: set", at.app);
            }
        }
        Ok(())
    })
}
