//! The verify canary the server runs (`[serve] canary_interval_secs`): every check on a timer,
//! failures in the error log, new ones in the audit log, the last results as Prometheus text.

use bulkhead_control::platform::Platform;
use serde_json::json;

use crate::report::{Finding, Report, Status};
use crate::{OpenDeployment, run_checks};

/// The latest canary run, for `/metrics`.
#[derive(Debug, Default)]
pub struct Canary {
    last: std::sync::RwLock<Option<Report>>,
}

impl Canary {
    /// Runs every check shortly after start and then every `every` (as `serve` does): failures go to the error
    /// log, and those new since the previous run to the audit log (`verify.failure`).
    pub fn start(open: OpenDeployment, every: std::time::Duration) -> std::sync::Arc<Self> {
        let canary = std::sync::Arc::new(Self::default());
        let state = canary.clone();
        tokio::spawn(async move {
            let mut previous: Vec<(String, String)> = Vec::new();
            // Let the workers start first.
            tokio::time::sleep(every.min(std::time::Duration::from_secs(5))).await;
            loop {
                let run = match open().await {
                    Ok(d) => run_checks(&d, Some(std::process::id()))
                        .await
                        .map(|r| (r, d)),
                    Err(e) => Err(e),
                };
                match run {
                    Ok((report, mut d)) => {
                        let failed: Vec<&Finding> = report
                            .findings
                            .iter()
                            .filter(|f| f.status == Status::Fail)
                            .collect();
                        for f in &failed {
                            tracing::error!(check = %f.check, scope = %f.scope, evidence = %f.evidence, "verify canary: check failed");
                        }
                        let now: Vec<(String, String)> = failed
                            .iter()
                            .map(|f| (f.check.clone(), f.scope.clone()))
                            .collect();
                        if let Err(e) =
                            audit_new_failures(&mut d.platform, &failed, &previous).await
                        {
                            tracing::error!(error = %crate::error::chain(&e), "verify canary: cannot write the audit log");
                        }
                        previous = now;
                        if let Ok(mut slot) = state.last.write() {
                            *slot = Some(report);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %crate::error::chain(&e), "verify canary could not run")
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        canary
    }

    /// Prometheus text for the latest run.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let Ok(last) = self.last.read() else {
            return out;
        };
        let Some(report) = last.as_ref() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# HELP bulkhead_verify_last_run_timestamp_seconds When the verify canary last ran.\n# TYPE bulkhead_verify_last_run_timestamp_seconds gauge\nbulkhead_verify_last_run_timestamp_seconds {}",
            report.generated_at
        );
        let _ = writeln!(
            out,
            "# HELP bulkhead_verify_checks Checks of the last canary run by status.\n# TYPE bulkhead_verify_checks gauge"
        );
        for status in ["pass", "fail", "skip"] {
            let _ = writeln!(
                out,
                "bulkhead_verify_checks{{status=\"{}\"}} {}",
                status.to_uppercase(),
                report.summary[status]
            );
        }
        let _ = writeln!(
            out,
            "# HELP bulkhead_verify_failed A check that failed in the last canary run.\n# TYPE bulkhead_verify_failed gauge"
        );
        for f in report.findings.iter().filter(|f| f.status == Status::Fail) {
            let _ = writeln!(
                out,
                "bulkhead_verify_failed{{check=\"{}\",scope=\"{}\"}} 1",
                f.check, f.scope
            );
        }
        out
    }
}

async fn audit_new_failures(
    p: &mut Platform,
    failed: &[&Finding],
    previous: &[(String, String)],
) -> crate::Result<()> {
    let fresh: Vec<&&Finding> = failed
        .iter()
        .filter(|f| !previous.contains(&(f.check.clone(), f.scope.clone())))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    for f in fresh {
        bulkhead_control::audit::append(
            &mut p.client,
            &bulkhead_control::audit::Entry {
                actor: "verify-canary",
                action: "verify.failure",
                target: &f.scope,
                detail: json!({"check": f.check, "evidence": f.evidence}),
            },
        )
        .await?;
    }
    Ok(())
}
