//! `bulkhead verify`: the four isolation questions answered with evidence, for every app and
//! tenant of a live deployment.
//!
//! 1. Data (`catalog.*`, `probe.*`, `data.rs`): can a query, or a forgotten filter, reach
//!    another tenant's rows? The catalog is read as the administrator; the probes run with each
//!    app's own credentials from the vault.
//! 2. Identity (`identity.*`, `identity.rs`): does a token of one tenant carry authority in
//!    another?
//! 3. Boundary (`boundary.*`, `boundary.rs`): does everything run inside the operator's
//!    boundary?
//! 4. Levels (`levels.observed`): is each tenant where tenants.yaml says it is?
//!
//! The input is a [`Deployment`] — what to check, described — not the server's configuration;
//! the output a [`Report`] (`report.rs`: format, signature) the binary prints. `canary.rs` runs
//! the checks on a timer inside the server; [`sockets`] reads a process's TCP sockets from
//! /proc for the boundary check. The format is in `docs/verify.md`. No HTTP here.

mod boundary;
mod canary;
mod compartments;
mod data;
mod error;
mod identity;
mod report;
pub mod sockets;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bulkhead_control::platform::Platform;
use bulkhead_control::registry;
use bulkhead_model::{AppId, AppManifest};
use serde_json::{Value, json};

pub use canary::Canary;
pub use error::{Error, Result};
pub use report::{FORMAT, Finding, Report, Signature, Status, check_signature, public_key, sign};

use crate::boundary::boundary_checks;
use crate::data::{Cluster, TenantInfo, data_checks, level_checks};
use crate::identity::identity_checks;
use crate::report::Checks;

/// The deployment profile as configured, and whether it is the one verify accepts
/// (self-managed, deny by default).
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile as it goes into the report.
    pub json: Value,
    pub self_managed: bool,
    pub deny_by_default: bool,
    /// One line of evidence (mode, control plane, egress, residency).
    pub summary: String,
}

/// What to check: a live deployment, described.
pub struct Deployment {
    /// The control plane: registry, vault (each app's credentials for the probes).
    pub platform: Platform,
    /// The platform database as the administrator (its host reaches every app database).
    pub platform_db: bulkhead_pg::PgConfig,
    /// The master key: opens the local realms' key store and derives the report's signing key.
    pub master_key: [u8; 32],
    pub profile: Profile,
    /// Each app's own egress allow-list (`[egress.apps]`).
    pub app_egress: BTreeMap<String, Vec<String>>,
    /// URLs of the other peers the server may connect to (vault, object storage).
    pub peers: Vec<String>,
    /// The master key's file, which no worker may be able to read.
    pub master_key_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("profile", &self.profile)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// Opens the deployment afresh (each canary run gets its own connections).
pub type OpenDeployment =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Deployment>> + Send>> + Send + Sync>;

/// Runs every check against `d`; with `serve_pid`, also the sockets of that server.
pub async fn run_checks(d: &Deployment, serve_pid: Option<u32>) -> Result<Report> {
    let p = &d.platform;
    let cluster = Cluster {
        admin: d.platform_db.clone(),
    };
    let mut checks = Checks {
        findings: Vec::new(),
    };
    let mut apps = Vec::new();
    let mut ids = Vec::new();
    for (id, manifest) in registry::apps(&p.client).await? {
        let m: AppManifest = serde_json::from_value(manifest)?;
        ids.push(AppId::parse(&id)?);
        let mut tenants = Vec::new();
        for record in registry::tenants(&p.client, &m.app).await? {
            tenants.push(TenantInfo {
                id: record.id.clone(),
                level: record.isolation,
                record,
            });
        }
        apps.push((m, tenants));
    }
    // A check that cannot run is a failure in the report, not a missing report.
    for (m, tenants) in &apps {
        if let Err(e) = data_checks(&mut checks, &cluster, p, m, tenants, &ids).await {
            checks.add(
                "verify.error",
                m.app.as_str(),
                false,
                format!("data checks: {}", crate::error::chain(&e)),
            );
        }
        if let Err(e) = level_checks(&mut checks, &cluster, p, m, tenants).await {
            checks.add(
                "verify.error",
                m.app.as_str(),
                false,
                format!("level checks: {}", crate::error::chain(&e)),
            );
        }
    }
    if let Err(e) = identity_checks(&mut checks, d, &apps).await {
        checks.add(
            "verify.error",
            "platform",
            false,
            format!("identity checks: {}", crate::error::chain(&e)),
        );
    }
    boundary_checks(&mut checks, d, &apps, serve_pid);
    let count = |s: Status| checks.findings.iter().filter(|f| f.status == s).count();
    let summary = json!({"pass": count(Status::Pass), "fail": count(Status::Fail), "skip": count(Status::Skip)});
    Ok(Report {
        format: FORMAT.to_owned(),
        generated_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        deployment: d.profile.json.clone(),
        findings: checks.findings,
        summary,
        signature: None,
    })
}
