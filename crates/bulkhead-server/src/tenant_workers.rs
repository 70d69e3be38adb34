//! Tenants with a worker of their own: each `database` tenant (unless it opted out) runs in a
//! worker that serves only it, booted into the tenant's vault space, which holds its database
//! credential and nothing of the app's or another tenant's. The set follows the registry
//! (re-read every two seconds): a new dedicated tenant gets its worker, a deleted one loses
//! it along with its index copies, files and private directory on this host.
//!
//! The gateway routes to these workers after resolving the tenant the way the workers do
//! (path `/t/<tenant>/`, header `x-tenant`, subdomain of a base domain). Routing is not the
//! wall: the app's worker does not know a dedicated tenant, and a tenant's worker knows only
//! its own, so a request that reached the wrong one would resolve to nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_control::registry;
use bulkhead_model::TenantId;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::supervise::{self, Launch, WorkerHandle};

/// One running tenant worker and the switch that stops it.
#[derive(Debug)]
struct Running {
    handle: WorkerHandle,
    stop: watch::Sender<bool>,
    /// The tenant's incarnation it serves: one created again gets a fresh worker.
    incarnation: i64,
}

/// The dedicated workers of every served app, by (app, tenant).
#[derive(Debug)]
pub(crate) struct TenantWorkers {
    running: RwLock<HashMap<(String, String), Running>>,
    /// The egress proxy, which issues each tenant worker a token bound to its tenant.
    proxy: Option<Arc<crate::egress_proxy::EgressProxy>>,
}

impl TenantWorkers {
    pub(crate) fn new(proxy: Option<Arc<crate::egress_proxy::EgressProxy>>) -> Self {
        Self {
            running: RwLock::default(),
            proxy,
        }
    }

    /// The worker of `tenant` of `app`, when it has one.
    pub(crate) fn worker(&self, app: &str, tenant: &str) -> Option<WorkerHandle> {
        let running = self.running.read().ok()?;
        running
            .get(&(app.to_owned(), tenant.to_owned()))
            .map(|r| r.handle.clone())
    }

    /// Whether any tenant of `app` has a worker of its own (requests for others skip the
    /// tenant lookup).
    pub(crate) fn serves(&self, app: &str) -> bool {
        self.running
            .read()
            .is_ok_and(|r| r.keys().any(|(a, _)| a == app))
    }

    pub(crate) fn handles(&self) -> Vec<WorkerHandle> {
        self.running
            .read()
            .map(|r| r.values().map(|w| w.handle.clone()).collect())
            .unwrap_or_default()
    }

    /// Starts the workers the registry asks for now and keeps following it until `shutdown`.
    /// `templates` are the app workers' launches, from which a tenant's is derived.
    pub(crate) async fn start(
        self: &Arc<Self>,
        pool: Pool,
        templates: Vec<Launch>,
        config: Arc<crate::config::Config>,
        shutdown: watch::Receiver<bool>,
    ) {
        let templates: Arc<[Launch]> = templates.into();
        self.reconcile(&pool, &templates, &config, &shutdown).await;
        let this = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
                this.reconcile(&pool, &templates, &config, &shutdown).await;
            }
        });
    }

    async fn reconcile(
        &self,
        pool: &Pool,
        templates: &[Launch],
        config: &crate::config::Config,
        shutdown: &watch::Receiver<bool>,
    ) {
        let mut wanted = Vec::new();
        let Ok(client) = pool.get().await else {
            tracing::warn!("cannot read the registry for tenant workers");
            return;
        };
        for template in templates {
            match registry::tenants(&**client, &template.app).await {
                Ok(records) => wanted.extend(
                    records
                        .into_iter()
                        .filter(|r| r.dedicated() && r.status != registry::TenantStatus::Deleting)
                        .map(|r| (template, r.id, r.created_micros)),
                ),
                Err(e) => {
                    tracing::warn!(app = %template.app, error = %e, "cannot read the app's tenants");
                    return;
                }
            }
        }
        drop(client);
        let Ok(mut running) = self.running.write() else {
            return;
        };
        running.retain(|(app, tenant), worker| {
            let keep = wanted.iter().any(|(t, id, incarnation)| {
                t.app.as_str() == app
                    && id.as_str() == tenant
                    && *incarnation == worker.incarnation
            });
            if !keep {
                let _ = worker.stop.send(true);
                tracing::info!(%app, %tenant, "tenant worker stopped: the tenant is gone or shared");
                if let Ok(tenant) = TenantId::parse(tenant)
                    && let Ok(app) = bulkhead_model::AppId::parse(app)
                    && let Err(e) = supervise::remove_worker_dirs(config, &app.tenant_space(&tenant))
                {
                    tracing::warn!(%app, %tenant, error = %e, "cannot remove the tenant worker's directories");
                }
            }
            keep
        });
        for (template, tenant, incarnation) in wanted {
            let key = (template.app.to_string(), tenant.to_string());
            if running.contains_key(&key) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            // The server's shutdown stops it too.
            let mut global = shutdown.clone();
            let relay = stop.clone();
            tokio::spawn(async move {
                let _ = global.changed().await;
                let _ = relay.send(true);
            });
            let launch = match self.launch_for(template, &tenant, config) {
                Ok(launch) => launch,
                Err(e) => {
                    tracing::error!(app = %template.app, %tenant, error = %e, "cannot prepare the tenant worker");
                    continue;
                }
            };
            match supervise::spawn(launch, stopped) {
                Ok(handle) => {
                    tracing::info!(app = %template.app, %tenant, "tenant worker starting");
                    running.insert(
                        key,
                        Running {
                            handle,
                            stop,
                            incarnation,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(app = %template.app, %tenant, error = %bulkhead_model::error_chain(&e), "cannot start the tenant worker");
                }
            }
        }
    }

    /// A tenant worker's launch: the app's, for one tenant, with its own vault files, search
    /// copies and files directory (its compartment owns them) and its own proxy token.
    fn launch_for(
        &self,
        template: &Launch,
        tenant: &TenantId,
        config: &crate::config::Config,
    ) -> crate::error::Result<Launch> {
        let space = template.app.tenant_space(tenant);
        let mut launch = template.clone();
        launch.tenant = Some(tenant.clone());
        launch.search.dir = template.search.dir.join(space.as_str());
        launch.paths = supervise::worker_paths(config, &space)?;
        launch.proxy = match (&self.proxy, &template.proxy) {
            (Some(proxy), Some((at, _))) => proxy.for_tenant(&template.app, tenant, Some(*at)),
            _ => None,
        };
        Ok(launch)
    }
}
