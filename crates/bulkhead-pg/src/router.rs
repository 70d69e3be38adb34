//! The pool router: one bounded pool per database an app's worker reaches.
//!
//! The app database gets a pool for the runtime role (and one for the cross-tenant role when
//! granted). Each `database`-level tenant gets its own pool, created on first use and evicted
//! when idle, under a global budget of connections for tenant pools. Every checkout waits at
//! most `wait`, then fails with `pool_exhausted`.
//!
//! Reuse safety: Bulkhead only ever sets transaction-local state (`set_config(…, true)`, which
//! also covers `role` and `search_path`), so a connection whose transaction ended carries
//! nothing over. A connection whose work did not run to the end of its transaction (an error
//! on the wire, a dropped future) is detached from its pool and closed by [`Conn`]'s drop,
//! never handed to the next tenant.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_model::TenantId;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};

use crate::error::{Error, Result};
use crate::provision::Secret;

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections in the app database's runtime pool.
    pub app_pool_size: usize,
    /// Connections in each `database`-level tenant's pool.
    pub tenant_pool_size: usize,
    /// Total connections all tenant pools together may hold.
    pub tenant_budget: usize,
    /// Longest wait for a connection (and for connecting).
    pub wait: Duration,
    /// A tenant pool unused this long is closed.
    pub idle: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            app_pool_size: 16,
            tenant_pool_size: 4,
            tenant_budget: 64,
            wait: Duration::from_secs(5),
            idle: Duration::from_secs(300),
        }
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub role: String,
    pub password: Secret,
    /// How the connection is secured (the same for every database of the cluster).
    pub tls: crate::tls::Tls,
    /// Other hosts, failover, and the address to dial instead of `host`.
    pub reach: Reach,
}

/// How to reach the cluster beyond its first host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Hosts tried in order after the first (the platform URL's other `host:port` pairs).
    pub more_hosts: Vec<(String, u16)>,
    /// `target_session_attrs=read-write`: skip servers in recovery (standbys).
    pub read_write: bool,
    /// Dial this address for the first host while keeping its name for TLS (a worker in a
    /// network namespace reaches the database through a relay on its link).
    pub hostaddr: Option<std::net::IpAddr>,
}

fn make_pool(ep: &Endpoint, size: usize, wait: Duration) -> Result<Pool> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&ep.host).port(ep.port);
    if let Some(addr) = ep.reach.hostaddr {
        cfg.hostaddr(addr);
    } else {
        for (host, port) in &ep.reach.more_hosts {
            cfg.host(host).port(*port);
        }
    }
    if ep.reach.read_write {
        cfg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    cfg.dbname(&ep.database)
        .user(&ep.role)
        .password(ep.password.expose())
        .application_name("bulkhead")
        .connect_timeout(wait)
        .ssl_mode(ep.tls.wire_mode());
    let manager = Manager::from_config(
        cfg,
        ep.tls.connector(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(wait),
            create: Some(wait),
            recycle: Some(wait),
        })
        .build()
        .map_err(|e| Error::Internal(format!("building a pool: {e}")))
}

/// A checked-out connection. Unless [`Conn::finish`] is called after its transaction ended,
/// dropping it closes the connection instead of returning it to the pool.
#[allow(missing_debug_implementations)]
pub struct Conn {
    obj: Option<Object>,
    finished: bool,
}

impl Conn {
    pub fn client(&self) -> Result<&Object> {
        self.obj
            .as_ref()
            .ok_or_else(|| Error::Internal("connection already released".into()))
    }

    pub fn client_mut(&mut self) -> Result<&mut Object> {
        self.obj
            .as_mut()
            .ok_or_else(|| Error::Internal("connection already released".into()))
    }

    /// The transaction ended (committed or rolled back): the connection may be reused.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.finished
            && let Some(obj) = self.obj.take()
        {
            tracing::debug!("closing a connection whose transaction did not end cleanly");
            drop(Object::take(obj));
        }
    }
}

pub async fn checkout(pool: &Pool, wait: Duration) -> Result<Conn> {
    match pool.get().await {
        Ok(obj) => Ok(Conn {
            obj: Some(obj),
            finished: false,
        }),
        Err(deadpool_postgres::PoolError::Timeout(_)) => Err(Error::PoolExhausted {
            waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => Err(e.into()),
    }
}

struct TenantPool {
    pool: Pool,
    last_used: Instant,
}

/// Pools of one app's worker.
pub struct Router {
    pub settings: PoolSettings,
    main: std::sync::RwLock<Pool>,
    main_endpoint: Mutex<Endpoint>,
    cross: Option<Pool>,
    tenants: Mutex<HashMap<TenantId, TenantPool>>,
    /// Tenant pools opened so far (each beyond the budget's room closed another first).
    opened: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(main: &Endpoint, cross: Option<&Endpoint>, settings: PoolSettings) -> Result<Self> {
        Ok(Self {
            main: std::sync::RwLock::new(make_pool(main, settings.app_pool_size, settings.wait)?),
            main_endpoint: Mutex::new(main.clone()),
            cross: cross
                .map(|ep| make_pool(ep, settings.app_pool_size.min(4), settings.wait))
                .transpose()?,
            tenants: Mutex::new(HashMap::new()),
            opened: Default::default(),
            settings,
        })
    }

    /// The app database's runtime pool.
    pub fn main(&self) -> Result<Pool> {
        self.main
            .read()
            .map(|p| p.clone())
            .map_err(|_| Error::Internal("pool lock poisoned".into()))
    }

    /// Replaces the runtime pool with one that logs in with `password` (after a credential
    /// rotation). Connections already checked out finish on the old pool.
    pub fn set_main_password(&self, password: Secret) -> Result<()> {
        let mut ep = self
            .main_endpoint
            .lock()
            .map_err(|_| Error::Internal("pool lock poisoned".into()))?;
        ep.password = password;
        let pool = make_pool(&ep, self.settings.app_pool_size, self.settings.wait)?;
        let mut main = self
            .main
            .write()
            .map_err(|_| Error::Internal("pool lock poisoned".into()))?;
        main.close();
        *main = pool;
        Ok(())
    }

    pub fn cross(&self) -> Option<&Pool> {
        self.cross.as_ref()
    }

    /// The pool of a `database`-level tenant, created on first use. Makes room under the
    /// budget by closing least recently used idle pools; fails with `pool_exhausted` when
    /// every pool is busy.
    pub fn tenant(&self, tenant: &TenantId, ep: &Endpoint) -> Result<Pool> {
        let mut pools = self
            .tenants
            .lock()
            .map_err(|_| Error::Internal("tenant pool registry poisoned".into()))?;
        let now = Instant::now();
        if let Some(p) = pools.get_mut(tenant) {
            p.last_used = now;
            return Ok(p.pool.clone());
        }
        Self::evict(&mut pools, |p| {
            now.duration_since(p.last_used) >= self.settings.idle
        });
        let size = self.settings.tenant_pool_size;
        while (pools.len() + 1) * size > self.settings.tenant_budget {
            let victim = pools
                .iter()
                .filter(|(_, p)| {
                    let s = p.pool.status();
                    s.size == s.available
                })
                .min_by_key(|(_, p)| p.last_used)
                .map(|(t, _)| t.clone());
            match victim {
                Some(t) => {
                    if let Some(p) = pools.remove(&t) {
                        p.pool.close();
                    }
                }
                None => {
                    return Err(Error::PoolExhausted { waited_ms: 0 });
                }
            }
        }
        let pool = make_pool(ep, size, self.settings.wait)?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pools.insert(
            tenant.clone(),
            TenantPool {
                pool: pool.clone(),
                last_used: now,
            },
        );
        Ok(pool)
    }

    fn evict(
        pools: &mut HashMap<TenantId, TenantPool>,
        idle: impl Fn(&TenantPool) -> bool,
    ) -> usize {
        let victims: Vec<TenantId> = pools
            .iter()
            .filter(|(_, p)| {
                let s = p.pool.status();
                idle(p) && s.size == s.available
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in &victims {
            if let Some(p) = pools.remove(t) {
                p.pool.close();
            }
        }
        victims.len()
    }

    /// Closes tenant pools unused for longer than the idle setting; returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        match self.tenants.lock() {
            Ok(mut pools) => Self::evict(&mut pools, |p| {
                now.duration_since(p.last_used) >= self.settings.idle
            }),
            Err(_) => 0,
        }
    }

    /// Drops a tenant's pool (tenant removed or moved).
    pub fn forget(&self, tenant: &TenantId) {
        if let Ok(mut pools) = self.tenants.lock()
            && let Some(p) = pools.remove(tenant)
        {
            p.pool.close();
        }
    }

    /// How many tenant pools were opened so far.
    pub fn tenant_pools_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many tenant pools are open.
    pub fn tenant_pools(&self) -> usize {
        self.tenants.lock().map(|p| p.len()).unwrap_or(0)
    }
}
