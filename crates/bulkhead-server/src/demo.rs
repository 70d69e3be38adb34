//! The example app `bulkhead up` serves: `examples/helpdesk` for three demo tenants, `acme`
//! (row level), `globex` (schema level) and `initech` (database level), each with its own realm
//! and demo users.
//!
//! Embedded first-run mode only: it provisions with the cluster's superuser through the control
//! plane (recorded steps, audit), keeps generated passwords in the embedded vault under
//! `<data_dir>/vault` and the master key in `<data_dir>/master.key` (mode 0600; in production
//! keep the master key off the data disk).

use std::path::Path;
use std::str::FromStr;

use crate::error::Context;
use bulkhead_identity::store::StoreError;
use bulkhead_model::tenants::{IdentitySpec, NetworkSpec, TenantSpec};
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};

use crate::gateway::Gateway;

const MANIFEST: &str = include_str!("../../../examples/helpdesk/manifest.yaml");

/// The example's bundle (its manifest, functions and front-end), as `bulkhead app deploy
/// examples/helpdesk` reads it; a test keeps this list equal to the directory.
const BUNDLE: &[(&str, &[u8])] = &[
    ("manifest.yaml", MANIFEST.as_bytes()),
    (
        "functions/dashboard.js",
        include_bytes!("../../../examples/helpdesk/functions/dashboard.js"),
    ),
    (
        "functions/lib/time.js",
        include_bytes!("../../../examples/helpdesk/functions/lib/time.js"),
    ),
    (
        "functions/notes.js",
        include_bytes!("../../../examples/helpdesk/functions/notes.js"),
    ),
    (
        "functions/requests.js",
        include_bytes!("../../../examples/helpdesk/functions/requests.js"),
    ),
    (
        "functions/status.js",
        include_bytes!("../../../examples/helpdesk/functions/status.js"),
    ),
    (
        "public/app.js",
        include_bytes!("../../../examples/helpdesk/public/app.js"),
    ),
    (
        "public/index.html",
        include_bytes!("../../../examples/helpdesk/public/index.html"),
    ),
    (
        "public/style.css",
        include_bytes!("../../../examples/helpdesk/public/style.css"),
    ),
];

/// The example app's bundle.
pub fn example_bundle() -> crate::error::Result<bulkhead_model::bundle::Bundle> {
    let files = BUNDLE
        .iter()
        .map(|(p, b)| ((*p).to_owned(), b.to_vec()))
        .collect();
    bulkhead_model::bundle::Bundle::new(files)
        .map_err(|e| crate::error::Error::msg(format!("the example bundle: {e}")))
}

/// Demo tenants and their isolation levels: one at each level.
pub const TENANTS: &[(&str, IsolationLevel)] = &[
    ("acme", IsolationLevel::Row),
    ("globex", IsolationLevel::Schema),
    ("initech", IsolationLevel::Database),
];

/// Demo users: (name, roles).
const USERS: &[(&str, &[&str])] = &[("alice", &["agent"]), ("bob", &["customer"])];

/// The demo password of a user in a tenant (local, loopback-only demo).
pub fn demo_password(tenant: &str, user: &str) -> String {
    format!("{user}-at-{tenant}")
}

/// Provisions the example app and its demo tenants, users and reference data through the
/// control plane (idempotently), and writes the app's boot credential to
/// `<data_dir>/boot/helpdesk` (0600) for running a worker by hand.
pub async fn provision(gateway: &mut Gateway, data_dir: &Path) -> crate::error::Result<()> {
    let manifest = AppManifest::from_yaml(MANIFEST, "examples/helpdesk/manifest.yaml")?;
    let control_plane = &mut gateway.platform;
    let realms = &gateway.realms;
    let boot = control_plane
        .create_app(&manifest, None)
        .await
        .context("provisioning the example app")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (name, level) in TENANTS {
        let tenant = TenantId::from_str(name)?;
        control_plane
            .declare_tenant(
                &manifest,
                &TenantSpec {
                    id: tenant.clone(),
                    namespace: (*name).to_owned(),
                    isolation: *level,
                    identity: IdentitySpec::Local {
                        realm: (*name).to_owned(),
                    },
                    network: NetworkSpec::default(),
                    residency: None,
                    dedicated_worker: true,
                    line: 0,
                },
            )
            .await?;
        realms
            .create_realm(&tenant, now)
            .await
            .map_err(|e| crate::error::Error::msg(format!("{e}")))?;
        for (user, roles) in USERS {
            match realms
                .create_user(&tenant, user, &demo_password(name, user), roles)
                .await
            {
                Ok(_) | Err(StoreError::UserExists(_)) => {}
                Err(e) => {
                    return Err(crate::error::Error::msg(format!(
                        "creating demo user {user}: {e}"
                    )));
                }
            }
        }
    }
    for (code, name) in [("DE", "Germany"), ("FR", "France"), ("US", "United States")] {
        let record = serde_json::json!({"code": code, "name": name});
        match control_plane
            .provisioner
            .insert_global(&manifest, "country", &record)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == bulkhead_model::ErrorCode::UniqueViolation => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The example's functions and front-end, unless that exact bundle is active already.
    let bundle = example_bundle()?;
    let active =
        bulkhead_control::platform::active_bundle(&control_plane.client, &manifest.app).await?;
    if active.map(|a| a.digest) != Some(bundle.digest()) {
        control_plane.deploy_bundle(&bundle, &manifest).await?;
    }

    crate::platform::write_private(
        &data_dir.join("boot").join(manifest.app.as_str()),
        boot.to_secret_string().expose(),
    )?;

    Ok(())
}

/// Logs how to log in to the demo tenants and call the example app.
pub fn print_help(base: &str) {
    let mut users = String::new();
    for (tenant, level) in TENANTS {
        users.push_str(&format!(
            "\n    tenant {tenant} ({}): alice / {} (agent), bob / {} (customer)",
            level.as_str(),
            demo_password(tenant, "alice"),
            demo_password(tenant, "bob"),
        ));
    }
    tracing::info!(
        "example app `helpdesk` is ready{users}\n  log in:\n    curl -s {base}/realms/acme/protocol/openid-connect/token -d grant_type=password -d client_id=helpdesk -d username=alice -d password={pw}\n  call it:\n    curl -s {base}/t/acme/api/ticket -H \"Authorization: Bearer $TOKEN\"\n  API document: {base}/t/acme/openapi.json\n  the example's own functions and front-end (a mini-app bundle):\n    curl -s {base}/t/acme/fn/dashboard -H \"Authorization: Bearer $TOKEN\"\n    open {base}/t/acme/app/ (also /t/globex/app/ and /t/initech/app/)",
        pw = demo_password("acme", "alice"),
    );
}

#[cfg(test)]
mod tests {
    /// The embedded bundle is exactly what `examples/helpdesk` holds, so `bulkhead up` serves
    /// what `bulkhead app deploy examples/helpdesk` would.
    #[test]
    fn the_embedded_example_bundle_is_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/helpdesk");
        let mut on_disk = Vec::new();
        for top in ["functions", "public"] {
            let mut stack = vec![dir.join(top)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        on_disk.push(p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned());
                    }
                }
            }
        }
        on_disk.push("manifest.yaml".into());
        on_disk.sort();
        let mut embedded: Vec<String> =
            super::BUNDLE.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (p, bytes) in super::BUNDLE {
            assert_eq!(std::fs::read(dir.join(p)).unwrap(), *bytes, "{p}");
        }
    }
}
