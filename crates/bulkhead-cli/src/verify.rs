//! `bulkhead verify`: arguments, the deployment described from the configuration, and the
//! report printed. The checks, the report format and the canary are in `bulkhead-verify`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bulkhead_server::config::{Config, ControlPlane, EgressPosture};
use bulkhead_verify::{Deployment, Profile, Report, Status};

use crate::app::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sign the report with the platform's verification key (for an auditor).
    #[arg(long)]
    sign: bool,
    /// Also write the report (JSON) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check the signature of a report instead of verifying: exit 0 when it is intact.
    #[arg(long, value_name = "REPORT")]
    check_signature: Option<PathBuf>,
    /// The platform's verification public key (hex) to check against; default: derived from
    /// this installation's master key.
    #[arg(long)]
    public_key: Option<String>,
    /// Also check the sockets of a running `bulkhead serve` (and its workers) on this host.
    #[arg(long)]
    serve_pid: Option<u32>,
    #[command(flatten)]
    target: Target,
}

/// The deployment `config` describes, opened for the checks.
pub async fn deployment(config: &Config) -> anyhow::Result<Deployment> {
    let d = &config.deployment;
    Ok(Deployment {
        platform: bulkhead_server::platform::platform(config).await?,
        platform_db: bulkhead_server::platform::platform_db(config)?,
        master_key: bulkhead_server::platform::master_key(config, false)?,
        profile: Profile {
            json: serde_json::to_value(d)?,
            self_managed: d.control_plane == ControlPlane::SelfManaged,
            deny_by_default: d.egress == EgressPosture::DenyByDefault,
            summary: format!(
                "mode {:?}, control plane {:?}, egress {:?}, data residency {}",
                d.mode,
                d.control_plane,
                d.egress,
                d.data_residency.as_deref().unwrap_or("-")
            ),
        },
        app_egress: config.egress.apps.clone(),
        peers: [&config.vault.address, &config.files.s3_endpoint]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        master_key_file: Some(config.vault.master_key_file(&config.data_dir)),
    })
}

/// The verify canary as the server runs it.
#[derive(Debug)]
pub struct CanaryMetrics(Arc<bulkhead_verify::Canary>);

impl bulkhead_server::Canary for CanaryMetrics {
    fn metrics(&self) -> String {
        self.0.metrics()
    }
}

/// Starts the canary for `config`: each run opens the deployment afresh.
pub fn canary(config: &Config, every: std::time::Duration) -> Arc<dyn bulkhead_server::Canary> {
    let config = config.clone();
    let open: bulkhead_verify::OpenDeployment = Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            deployment(&config)
                .await
                .map_err(|e| bulkhead_verify::Error::Deployment(format!("{e:#}")))
        })
    });
    Arc::new(CanaryMetrics(bulkhead_verify::Canary::start(open, every)))
}

fn print_table(report: &Report) {
    println!("{:<28} {:<28} {:<5} evidence", "check", "scope", "");
    for f in &report.findings {
        let status = match f.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        println!(
            "{:<28} {:<28} {:<5} {}",
            f.check, f.scope, status, f.evidence
        );
    }
    println!(
        "\n{} passed, {} failed, {} skipped",
        report.summary["pass"], report.summary["fail"], report.summary["skip"]
    );
}

/// `bulkhead verify`; `Ok(false)` when any check failed (or a signature does not check).
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<bool> {
    let config = crate::app::config(config_path, &args.target)?;
    if let Some(file) = &args.check_signature {
        let report: Report = serde_json::from_slice(
            &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{} is not a verify report", file.display()))?;
        let public = match &args.public_key {
            Some(k) => k.clone(),
            None => {
                bulkhead_verify::public_key(&bulkhead_server::platform::master_key(&config, false)?)
            }
        };
        let ok = bulkhead_verify::check_signature(&report, &public)?;
        println!(
            "{}: signature {} (key {public})",
            file.display(),
            if ok { "valid" } else { "INVALID" }
        );
        return Ok(ok);
    }
    crate::app::runtime()?.block_on(async {
        let d = deployment(&config).await?;
        let mut report = bulkhead_verify::run_checks(&d, args.serve_pid).await?;
        if args.sign {
            bulkhead_verify::sign(&mut report, &d.master_key)?;
        }
        let json = serde_json::to_string_pretty(&report)?;
        if let Some(out) = &args.out {
            std::fs::write(out, &json).with_context(|| format!("writing {}", out.display()))?;
        }
        if args.target.json {
            println!("{json}");
        } else {
            print_table(&report);
        }
        Ok(report.summary["fail"] == 0)
    })
}
