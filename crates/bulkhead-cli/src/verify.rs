//! `bulkhead verify`: the four isolation questions answered with evidence, for every app and
//! tenant of a live deployment.
//!
//! 1. Data (`catalog.*`, `probe.*`): can a query, or a forgotten filter, reach another
//!    tenant's rows? The catalog is read as the administrator; the probes run with each app's
//!    own credentials from the vault.
//! 2. Identity (`identity.*`): does a token of one tenant carry authority in another?
//! 3. Boundary (`boundary.*`): does everything run inside the operator's boundary?
//! 4. Levels (`levels.observed`): is each tenant where tenants.yaml says it is?
//!
//! The report is a table or JSON; `--sign` signs it with the platform's verification key
//! (Ed25519, derived from the master key), `--check-signature` checks a signed report. The
//! format is in `docs/verify.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use bulkhead_control::platform::{Platform, RUNTIME_PASSWORD, tenant_password_path};
use bulkhead_control::registry;
use bulkhead_model::names;
use bulkhead_model::{AppId, AppManifest, IsolationLevel, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::app::Target;
use bulkhead_server::config::Config;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One check on one app or tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: String,
    /// `app`, `app/tenant` or `platform`.
    pub scope: String,
    pub status: Status,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub alg: String,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    /// Base64 of the signature over the report without this field (canonical JSON).
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub generated_at: u64,
    pub deployment: Value,
    pub findings: Vec<Finding>,
    pub summary: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

pub const FORMAT: &str = "bulkhead-verify/1";

struct Checks {
    findings: Vec<Finding>,
}

impl Checks {
    fn add(
        &mut self,
        check: &str,
        scope: impl Into<String>,
        ok: bool,
        evidence: impl Into<String>,
    ) {
        self.findings.push(Finding {
            check: check.to_owned(),
            scope: scope.into(),
            status: if ok { Status::Pass } else { Status::Fail },
            evidence: evidence.into(),
        });
    }

    fn skip(&mut self, check: &str, scope: impl Into<String>, why: impl Into<String>) {
        self.findings.push(Finding {
            check: check.to_owned(),
            scope: scope.into(),
            status: Status::Skip,
            evidence: why.into(),
        });
    }
}

/// How to reach the cluster: the platform database's address and admin credentials.
#[derive(Clone)]
struct Cluster {
    admin: tokio_postgres::Config,
}

impl Cluster {
    async fn connect(cfg: tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn admin(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let mut cfg = self.admin.clone();
        cfg.dbname(db);
        Self::connect(cfg)
            .await
            .with_context(|| format!("connecting to {db} as the administrator"))
    }

    /// A connection as `role` with `password` (a probe: failure is evidence, not an error).
    async fn as_role(
        &self,
        db: &str,
        role: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, String> {
        let mut cfg = self.admin.clone();
        cfg.dbname(db).user(role).password(password);
        Self::connect(cfg).await.map_err(|e| format!("{e:#}"))
    }
}

/// Catalog checks of one location (a schema in a database).
async fn catalog(
    checks: &mut Checks,
    c: &tokio_postgres::Client,
    scope: &str,
    schema: &str,
) -> anyhow::Result<()> {
    use bulkhead_pg::catalog as cat;
    let tables = cat::tenant_tables(c, schema).await?;
    let bad: Vec<String> = tables
        .iter()
        .filter(|t| !(t.rls_enabled && t.rls_forced))
        .map(|t| {
            format!(
                "{schema}.{} (enabled {}, forced {})",
                t.table, t.rls_enabled, t.rls_forced
            )
        })
        .collect();
    checks.add(
        "catalog.rls",
        scope,
        bad.is_empty() && !tables.is_empty(),
        if bad.is_empty() {
            format!(
                "{} tenant tables in {schema}: RLS enabled and forced",
                tables.len()
            )
        } else {
            format!("not forced: {}", bad.join(", "))
        },
    );
    let has = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| s.contains(cat::TENANT_CONDITION_TEXT))
    };
    let mut problems = Vec::new();
    for t in &tables {
        let policies = cat::policies(c, schema, &t.table).await?;
        for cmd in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            let ok = policies.iter().any(|p| {
                (p.command == cmd || p.command == "ALL")
                    && match cmd {
                        "INSERT" => has(&p.with_check),
                        "UPDATE" => has(&p.using) && has(&p.with_check),
                        _ => has(&p.using),
                    }
            });
            if !ok {
                problems.push(format!(
                    "{schema}.{}: no {cmd} policy with the tenant condition",
                    t.table
                ));
            }
        }
        // A permissive policy without the condition (other than the granted cross-tenant read
        // for its own role) would widen every command it covers.
        for p in &policies {
            let cross = p.using.as_deref() == Some("true") && p.command == "SELECT";
            if p.permissive && !cross && !has(&p.using) && !has(&p.with_check) {
                problems.push(format!(
                    "{schema}.{}: a {} policy without the tenant condition",
                    t.table, p.command
                ));
            }
        }
    }
    checks.add(
        "catalog.policies",
        scope,
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} tables × 4 commands: USING and WITH CHECK carry the tenant condition",
                tables.len()
            )
        } else {
            problems.join("; ")
        },
    );
    let refs = cat::tenant_references(c, schema).await?;
    let single: Vec<String> = refs
        .iter()
        .filter(|r| !r.with_tenant)
        .map(|r| format!("{}.{}", r.table, r.name))
        .collect();
    checks.add(
        "catalog.references",
        scope,
        single.is_empty(),
        if single.is_empty() {
            format!(
                "{} references between tenant tables, all led by tenant_id",
                refs.len()
            )
        } else {
            format!("references without tenant_id: {}", single.join(", "))
        },
    );
    let public = cat::public_table_rights(c, schema).await?;
    let db_public = cat::public_connect_or_usage(c, schema).await?;
    checks.add(
        "catalog.public_privileges",
        scope,
        public.is_empty() && !db_public,
        if public.is_empty() && !db_public {
            format!("PUBLIC has no CONNECT on the database, no USAGE on {schema}, no table rights")
        } else {
            format!(
                "PUBLIC connect/usage: {db_public}; PUBLIC table rights on: {}",
                public.join(", ")
            )
        },
    );
    Ok(())
}

/// A role's attributes and what it owns in the connected database.
async fn role_ok(c: &tokio_postgres::Client, role: &str) -> anyhow::Result<(bool, String)> {
    let Some(f) = bulkhead_pg::catalog::role_facts(c, role).await? else {
        return Ok((false, format!("role {role} does not exist")));
    };
    let ok =
        !f.superuser && !f.bypass_rls && !f.create_role && !f.create_db && f.owned_relations == 0;
    Ok((
        ok,
        format!(
            "{role}: superuser {}, bypassrls {}, createrole {}, createdb {}, owns {} relations",
            f.superuser, f.bypass_rls, f.create_role, f.create_db, f.owned_relations
        ),
    ))
}

struct TenantInfo {
    id: TenantId,
    level: IsolationLevel,
    record: registry::TenantRecord,
}

async fn data_checks(
    checks: &mut Checks,
    cluster: &Cluster,
    p: &Platform,
    m: &AppManifest,
    tenants: &[TenantInfo],
    all_apps: &[AppId],
) -> anyhow::Result<()> {
    let app = &m.app;
    let app_db = names::app_database(app);
    let admin = cluster.admin(&app_db).await?;
    // Roles.
    let mut roles = vec![names::runtime_role(app)];
    roles.extend(
        tenants
            .iter()
            .filter(|t| t.level != IsolationLevel::Row)
            .map(|t| names::tenant_role(app, &t.id)),
    );
    let mut evidence = Vec::new();
    let mut all_ok = true;
    for role in &roles {
        let (ok, e) = role_ok(&admin, role).await?;
        all_ok &= ok;
        evidence.push(e);
    }
    checks.add("catalog.roles", app.as_str(), all_ok, evidence.join("; "));
    catalog(checks, &admin, app.as_str(), names::SHARED_SCHEMA).await?;
    for t in tenants {
        let scope = format!("{app}/{}", t.id);
        match t.level {
            IsolationLevel::Row => {}
            IsolationLevel::Schema => {
                catalog(checks, &admin, &scope, &names::tenant_schema(&t.id)).await?;
            }
            IsolationLevel::Database => {
                let db = names::tenant_database(app, &t.id);
                match cluster.admin(&db).await {
                    Ok(c) => catalog(checks, &c, &scope, names::SHARED_SCHEMA).await?,
                    Err(e) => checks.add("catalog.rls", &scope, false, format!("{e:#}")),
                }
            }
        }
    }
    // Probes with the app's own runtime credentials.
    let runtime = names::runtime_role(app);
    let password = p
        .vault
        .get(app, RUNTIME_PASSWORD)
        .await
        .context("reading the app's runtime password from its vault space")?;
    let rt = match cluster.as_role(&app_db, &runtime, password.expose()).await {
        Ok(c) => c,
        Err(e) => {
            checks.add(
                "probe.unscoped",
                app.as_str(),
                false,
                format!("cannot log in as {runtime}: {e}"),
            );
            return Ok(());
        }
    };
    let mut seen = Vec::new();
    for t in bulkhead_pg::catalog::tenant_tables(&admin, names::SHARED_SCHEMA).await? {
        if let Ok(n) =
            bulkhead_pg::catalog::probe_unscoped(&rt, names::SHARED_SCHEMA, &t.table).await
            && n > 0
        {
            seen.push(format!("{}: {n} rows", t.table));
        }
    }
    checks.add(
        "probe.unscoped",
        app.as_str(),
        seen.is_empty(),
        if seen.is_empty() {
            format!("as {runtime} without a tenant: every shared tenant table returns no row")
        } else {
            format!("rows visible without a tenant: {}", seen.join(", "))
        },
    );
    for t in tenants.iter().filter(|t| t.level == IsolationLevel::Schema) {
        let scope = format!("{app}/{}", t.id);
        let schema = names::tenant_schema(&t.id);
        let mut leaks = Vec::new();
        let role = names::tenant_role(app, &t.id);
        for table in bulkhead_pg::catalog::tenant_tables(&admin, &schema).await? {
            let table = table.table;
            // Without the tenant's role: refused. With it but another tenant's setting: nothing.
            if let Ok(n) = bulkhead_pg::catalog::probe_unscoped(&rt, &schema, &table).await {
                leaks.push(format!(
                    "{table} readable without the tenant role ({n} rows)"
                ));
            }
            if let Ok(n) = bulkhead_pg::catalog::probe_forged(&rt, &schema, &table, &role).await
                && n > 0
            {
                leaks.push(format!("{table}: {n} rows under a forged tenant setting"));
            }
        }
        checks.add(
            "probe.forged_tenant",
            &scope,
            leaks.is_empty(),
            if leaks.is_empty() {
                format!("{schema}: refused without the tenant role, empty under a forged setting")
            } else {
                leaks.join("; ")
            },
        );
    }
    // Other databases: other apps', and tenant silos, refuse this app's runtime role; each
    // silo's own role is refused by every other silo.
    let mut entered = Vec::new();
    let mut tried = 0;
    for other in all_apps.iter().filter(|a| *a != app) {
        tried += 1;
        if cluster
            .as_role(&names::app_database(other), &runtime, password.expose())
            .await
            .is_ok()
        {
            entered.push(format!("{runtime} entered {}", names::app_database(other)));
        }
    }
    let silos: Vec<&TenantInfo> = tenants
        .iter()
        .filter(|t| t.level == IsolationLevel::Database)
        .collect();
    for t in &silos {
        tried += 1;
        let db = names::tenant_database(app, &t.id);
        if cluster
            .as_role(&db, &runtime, password.expose())
            .await
            .is_ok()
        {
            entered.push(format!("{runtime} entered {db}"));
        }
        let Ok(own) = p.vault.get(app, &tenant_password_path(&t.id)).await else {
            continue;
        };
        for other in silos.iter().filter(|o| o.id != t.id) {
            tried += 1;
            let odb = names::tenant_database(app, &other.id);
            let role = names::tenant_role(app, &t.id);
            if cluster.as_role(&odb, &role, own.expose()).await.is_ok() {
                entered.push(format!("{role} entered {odb}"));
            }
        }
    }
    checks.add(
        "probe.other_database",
        app.as_str(),
        entered.is_empty(),
        if entered.is_empty() {
            format!("{tried} connections to other apps' and tenants' databases refused")
        } else {
            entered.join("; ")
        },
    );
    Ok(())
}

/// Where each tenant's data is, against where it was declared.
async fn level_checks(
    checks: &mut Checks,
    cluster: &Cluster,
    p: &Platform,
    m: &AppManifest,
    tenants: &[TenantInfo],
) -> anyhow::Result<()> {
    let app = &m.app;
    let admin = cluster.admin(&names::app_database(app)).await?;
    let shared = bulkhead_pg::catalog::tenant_tables(&admin, names::SHARED_SCHEMA).await?;
    let databases = bulkhead_pg::catalog::databases(&cluster.admin("postgres").await?).await?;
    for t in tenants {
        let mut shared_rows = 0i64;
        // Entity tables only: the search outbox holds row ids, not rows.
        for table in shared
            .iter()
            .filter(|s| s.table != bulkhead_pg::ddl::OUTBOX_TABLE)
        {
            shared_rows += bulkhead_pg::catalog::rows_of_tenant(
                &admin,
                names::SHARED_SCHEMA,
                &table.table,
                t.id.as_str(),
            )
            .await?;
        }
        let schema_exists =
            bulkhead_pg::catalog::schema_exists(&admin, &names::tenant_schema(&t.id)).await?;
        let db_exists = databases.contains(&names::tenant_database(app, &t.id));
        let secret = p.vault.get(app, &tenant_password_path(&t.id)).await.is_ok();
        let observed = match (shared_rows > 0, schema_exists, db_exists) {
            (false, false, true) if secret => Some(IsolationLevel::Database),
            (false, true, false) => Some(IsolationLevel::Schema),
            (_, false, false) => Some(IsolationLevel::Row),
            _ => None,
        };
        checks.add(
            "levels.observed",
            format!("{app}/{}", t.id),
            observed == Some(t.level),
            format!(
                "declared {}; rows in shared tables {shared_rows}, schema {}, database {}, database credentials in the vault {secret}",
                t.level.as_str(),
                if schema_exists { "present" } else { "absent" },
                if db_exists { "present" } else { "absent" },
            ),
        );
    }
    Ok(())
}

async fn identity_checks(
    checks: &mut Checks,
    config: &Config,
    apps: &[(AppManifest, Vec<TenantInfo>)],
) -> anyhow::Result<()> {
    let pool = bulkhead_server::platform_pool(bulkhead_server::platform::platform_db(config)?)
        .map_err(anyhow::Error::msg)?;
    let store = bulkhead_identity::store::RealmStore::new(
        pool,
        bulkhead_server::platform::master_key(config, false)?,
        Default::default(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Local realms: tenants whose identity is `local` in any app (a realm per tenant id).
    let mut local: Vec<TenantId> = Vec::new();
    for (_, tenants) in apps {
        for t in tenants {
            if t.record.identity.get("provider").and_then(Value::as_str) == Some("local")
                && !local.contains(&t.id)
            {
                local.push(t.id.clone());
            }
        }
    }
    let mut keys: Vec<(TenantId, String, Vec<u8>)> = Vec::new();
    for t in &local {
        if let Ok(set) = store.keyset(t, now).await {
            for k in set.keys {
                if let bulkhead_identity::keys::KeyMaterial::Ed25519(v) = &k.key {
                    keys.push((t.clone(), k.kid.clone(), v.to_bytes().to_vec()));
                }
            }
        }
    }
    let mut shared = Vec::new();
    for (i, (t, kid, bytes)) in keys.iter().enumerate() {
        for (u, kid2, bytes2) in &keys[i + 1..] {
            if t != u && (bytes == bytes2 || kid == kid2) {
                shared.push(format!("{t} and {u} share key {kid}"));
            }
        }
    }
    checks.add(
        "identity.keys_unique",
        "platform",
        shared.is_empty(),
        if shared.is_empty() {
            format!(
                "{} realm keys across {} local realms, none shared",
                keys.len(),
                local.len()
            )
        } else {
            shared.join("; ")
        },
    );
    let audience = "bulkhead-verify";
    for t in &local {
        let scope = t.to_string();
        let token = match store.sign_probe(t, audience, now).await {
            Ok(tok) => tok,
            Err(e) => {
                checks.add(
                    "identity.cross_tenant_token",
                    &scope,
                    false,
                    format!("cannot sign a probe: {e}"),
                );
                continue;
            }
        };
        let own = store.verify(t, &token, audience, now).await.is_ok();
        let mut accepted = Vec::new();
        for other in local.iter().filter(|o| *o != t) {
            if store.verify(other, &token, audience, now).await.is_ok() {
                accepted.push(other.to_string());
            }
        }
        checks.add(
            "identity.cross_tenant_token",
            &scope,
            own && accepted.is_empty(),
            if !own {
                "the realm rejects its own probe token (cannot conclude)".to_owned()
            } else if accepted.is_empty() {
                format!(
                    "a probe token of {t} is rejected by the {} other realms",
                    local.len() - 1
                )
            } else {
                format!("accepted by: {}", accepted.join(", "))
            },
        );
        // Forgeries: `alg: none` and HS256 keyed with the realm's public key.
        let mut parts = token.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
            continue;
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut head: Value = serde_json::from_slice(&b64.decode(header)?)?;
        head["alg"] = json!("none");
        let none = format!("{}.{payload}.", b64.encode(head.to_string()));
        head["alg"] = json!("HS256");
        let hs_input = format!("{}.{payload}", b64.encode(head.to_string()));
        let public = keys
            .iter()
            .find(|(u, _, _)| u == t)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_default();
        let mac = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(&public)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            m.update(hs_input.as_bytes());
            m.finalize().into_bytes()
        };
        let hs = format!("{hs_input}.{}", b64.encode(mac));
        let none_ok = store.verify(t, &none, audience, now).await.is_ok();
        let hs_ok = store.verify(t, &hs, audience, now).await.is_ok();
        checks.add(
            "identity.algorithms",
            &scope,
            !none_ok && !hs_ok,
            format!(
                "alg none accepted: {none_ok}; HS256 keyed with the public key accepted: {hs_ok}"
            ),
        );
    }
    Ok(())
}

fn boundary_checks(
    checks: &mut Checks,
    config: &Config,
    apps: &[(AppManifest, Vec<TenantInfo>)],
    serve_pid: Option<u32>,
) {
    let d = &config.deployment;
    checks.add(
        "boundary.profile",
        "platform",
        d.control_plane == bulkhead_server::config::ControlPlane::SelfManaged
            && d.egress == bulkhead_server::config::EgressPosture::DenyByDefault,
        format!(
            "mode {:?}, control plane {:?}, egress {:?}, data residency {}",
            d.mode,
            d.control_plane,
            d.egress,
            d.data_residency.as_deref().unwrap_or("-")
        ),
    );
    for (m, tenants) in apps {
        let app_list = config
            .egress
            .apps
            .get(m.app.as_str())
            .cloned()
            .unwrap_or_default();
        let app_allow = bulkhead_egress::AllowList::parse(&app_list).unwrap_or_default();
        for t in tenants {
            let scope = format!("{}/{}", m.app, t.id);
            let spec: bulkhead_model::tenants::NetworkSpec =
                serde_json::from_value(t.record.network.clone()).unwrap_or_default();
            checks.add(
                "boundary.egress_default",
                &scope,
                spec.default == "deny",
                format!(
                    "network default {}, {} allowed entries",
                    spec.default,
                    spec.allow.len()
                ),
            );
            let list = bulkhead_egress::AllowList::from_network(&spec.default, &spec.allow);
            let (ok, evidence) = match list {
                Err(e) => (false, format!("invalid allow-list: {e}")),
                Ok(list) => {
                    let probe = "bulkhead-verify-probe.example";
                    let name = list.allows_name(probe, 443) || app_allow.allows_name(probe, 443);
                    let metadata: std::net::IpAddr = [169, 254, 169, 254].into();
                    let meta =
                        list.allows_address(metadata, 80) || app_allow.allows_address(metadata, 80);
                    (
                        !name && !meta,
                        format!("{probe}:443 allowed {name}; 169.254.169.254:80 allowed {meta}"),
                    )
                }
            };
            checks.add("boundary.egress_probe", &scope, ok, evidence);
        }
    }
    match serve_pid {
        None => checks.skip(
            "boundary.sockets",
            "platform",
            "pass --serve-pid to check the sockets of a running `bulkhead serve` on this host",
        ),
        Some(pid) => {
            let (ok, evidence) = sockets_check(pid, config);
            checks.add("boundary.sockets", "platform", ok, evidence);
        }
    }
}

/// Every outbound socket of `pid` and its `bulkhead` children goes to a configured peer or to
/// one of their own listeners.
fn sockets_check(pid: u32, config: &Config) -> (bool, String) {
    let mut peers: Vec<u16> = Vec::new();
    if let Ok(db) = bulkhead_server::platform::platform_db(config) {
        peers.extend(db.get_ports());
    }
    for url in [&config.vault.address, &config.files.s3_endpoint]
        .into_iter()
        .flatten()
    {
        if let Ok(u) = reqwest::Url::parse(url)
            && let Some(port) = u.port_or_known_default()
        {
            peers.push(port);
        }
    }
    let mut pids = vec![pid];
    pids.extend(bulkhead_control::sockets::children(pid));
    let sockets: Vec<(u32, bulkhead_control::sockets::Socket)> = pids
        .iter()
        .flat_map(|p| {
            bulkhead_control::sockets::sockets_of(*p)
                .into_iter()
                .map(move |s| (*p, s))
        })
        .collect();
    if sockets.is_empty() {
        return (
            false,
            format!("no sockets readable for pid {pid} (not running, or not ours)"),
        );
    }
    let listening: Vec<u16> = sockets
        .iter()
        .filter(|(_, s)| s.listening)
        .map(|(_, s)| s.local.port())
        .collect();
    let foreign: Vec<String> = sockets
        .iter()
        .filter(|(_, s)| s.remote.port() != 0 && !listening.contains(&s.local.port()))
        .filter(|(_, s)| !peers.contains(&s.remote.port()) && !listening.contains(&s.remote.port()))
        .map(|(p, s)| format!("pid {p} → {}", s.remote))
        .collect();
    (
        foreign.is_empty(),
        if foreign.is_empty() {
            format!(
                "{} sockets of {} processes: only configured peers and their own listeners",
                sockets.len(),
                pids.len()
            )
        } else {
            format!("connections to unconfigured peers: {}", foreign.join(", "))
        },
    )
}

/// Runs every check against the deployment `config` points at.
pub async fn run_checks(config: &Config, serve_pid: Option<u32>) -> anyhow::Result<Report> {
    let p = bulkhead_server::platform::platform(config).await?;
    let cluster = Cluster {
        admin: bulkhead_server::platform::platform_db(config)?,
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
                id: TenantId::parse(&record.id)?,
                level: record
                    .isolation
                    .parse()
                    .map_err(|_| anyhow::anyhow!("level {}", record.isolation))?,
                record,
            });
        }
        apps.push((m, tenants));
    }
    // A check that cannot run is a failure in the report, not a missing report.
    for (m, tenants) in &apps {
        if let Err(e) = data_checks(&mut checks, &cluster, &p, m, tenants, &ids).await {
            checks.add(
                "verify.error",
                m.app.as_str(),
                false,
                format!("data checks: {e:#}"),
            );
        }
        if let Err(e) = level_checks(&mut checks, &cluster, &p, m, tenants).await {
            checks.add(
                "verify.error",
                m.app.as_str(),
                false,
                format!("level checks: {e:#}"),
            );
        }
    }
    if let Err(e) = identity_checks(&mut checks, config, &apps).await {
        checks.add(
            "verify.error",
            "platform",
            false,
            format!("identity checks: {e:#}"),
        );
    }
    boundary_checks(&mut checks, config, &apps, serve_pid);
    let count = |s: Status| checks.findings.iter().filter(|f| f.status == s).count();
    let summary = json!({"pass": count(Status::Pass), "fail": count(Status::Fail), "skip": count(Status::Skip)});
    Ok(Report {
        format: FORMAT.to_owned(),
        generated_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        deployment: serde_json::to_value(&config.deployment)?,
        findings: checks.findings,
        summary,
        signature: None,
    })
}

/// The platform's verification key: Ed25519 from a hash of the master key (domain-separated).
fn signing_key(config: &Config) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let master = bulkhead_server::platform::master_key(config, false)?;
    let mut h = Sha256::new();
    h.update(b"bulkhead verify report signing key v1");
    h.update(master);
    Ok(ed25519_dalek::SigningKey::from_bytes(&h.finalize().into()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a signature covers: the report without its signature, as compact JSON.
fn signed_bytes(report: &Report) -> anyhow::Result<Vec<u8>> {
    let mut unsigned = report.clone();
    unsigned.signature = None;
    Ok(serde_json::to_vec(&unsigned)?)
}

pub fn sign(report: &mut Report, config: &Config) -> anyhow::Result<()> {
    use ed25519_dalek::Signer;
    let key = signing_key(config)?;
    let sig = key.sign(&signed_bytes(report)?);
    report.signature = Some(Signature {
        alg: "Ed25519".into(),
        public_key: hex(key.verifying_key().as_bytes()),
        value: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    });
    Ok(())
}

/// Whether `report` carries a valid signature by `public_key` (hex).
pub fn check_signature(report: &Report, public_key: &str) -> anyhow::Result<bool> {
    use ed25519_dalek::Verifier;
    let Some(sig) = &report.signature else {
        anyhow::bail!("the report is not signed");
    };
    if !sig.public_key.eq_ignore_ascii_case(public_key) {
        return Ok(false);
    }
    let key_bytes: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(public_key.get(i * 2..i * 2 + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("the public key is 64 hex characters")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)?;
    let raw = base64::engine::general_purpose::STANDARD.decode(&sig.value)?;
    let signature = ed25519_dalek::Signature::from_slice(&raw)?;
    Ok(key.verify(&signed_bytes(report)?, &signature).is_ok())
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
            None => hex(signing_key(&config)?.verifying_key().as_bytes()),
        };
        let ok = check_signature(&report, &public)?;
        println!(
            "{}: signature {} (key {public})",
            file.display(),
            if ok { "valid" } else { "INVALID" }
        );
        return Ok(ok);
    }
    crate::app::runtime()?.block_on(async {
        let mut report = run_checks(&config, args.serve_pid).await?;
        if args.sign {
            sign(&mut report, &config)?;
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

/// The latest canary run, for `/metrics`.
#[derive(Debug, Default)]
pub struct Canary {
    last: std::sync::RwLock<Option<Report>>,
}

impl bulkhead_server::Canary for Canary {
    fn metrics(&self) -> String {
        Canary::metrics(self)
    }
}

impl Canary {
    /// Runs every check shortly after start and then every `every` (as `serve` does): failures go to the error
    /// log, and those new since the previous run to the audit log (`verify.failure`).
    pub fn start(config: Config, every: std::time::Duration) -> std::sync::Arc<Self> {
        let canary = std::sync::Arc::new(Self::default());
        let state = canary.clone();
        tokio::spawn(async move {
            let mut previous: Vec<(String, String)> = Vec::new();
            // Let the workers start first.
            tokio::time::sleep(every.min(std::time::Duration::from_secs(5))).await;
            loop {
                match run_checks(&config, Some(std::process::id())).await {
                    Ok(report) => {
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
                        if let Err(e) = audit_new_failures(&config, &failed, &previous).await {
                            tracing::error!(error = %format!("{e:#}"), "verify canary: cannot write the audit log");
                        }
                        previous = now;
                        if let Ok(mut slot) = state.last.write() {
                            *slot = Some(report);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "verify canary could not run")
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
    config: &Config,
    failed: &[&Finding],
    previous: &[(String, String)],
) -> anyhow::Result<()> {
    let fresh: Vec<&&Finding> = failed
        .iter()
        .filter(|f| !previous.contains(&(f.check.clone(), f.scope.clone())))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let mut p = bulkhead_server::platform::platform(config).await?;
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
