//! App bundles: immutable, content-addressed versions kept in the platform database, one of
//! them active per app. Activating a version writes its content into each serving vault
//! space (the app's and every dedicated tenant worker's) under its digest, then points the
//! workers' configuration at it; workers switch on their next reload without a restart.

use bulkhead_model::bundle::{Bundle, BundleRef};
use bulkhead_model::worker::{BundleHead, bundle_part_path, bundle_path};
use tokio_postgres::GenericClient;

use super::*;

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleVersion {
    pub version: i64,
    pub digest: String,
    pub files: i32,
    pub bytes: i32,
    pub actor: String,
    pub created_at: String,
    pub active: bool,
}

/// The active version of `app`, if any.
pub async fn active_bundle(
    client: &impl GenericClient,
    app: &bulkhead_model::AppId,
) -> Result<Option<BundleRef>> {
    let row = client
        .query_opt(
            "SELECT b.version, b.digest FROM bulkhead_control.bundle_active a \
             JOIN bulkhead_control.bundle b USING (app, version) WHERE a.app = $1",
            &[&app.as_str()],
        )
        .await
        .map_err(crate::db)?;
    Ok(row.map(|r| BundleRef {
        version: r.get(0),
        digest: r.get(1),
    }))
}

impl Platform {
    /// Stores `bundle` as a new version of its app (or finds the version with the same
    /// digest) and activates it. The caller has checked the bundle (`bulkhead_sandbox::check`);
    /// here the app must exist and the bundle's entities, flags and settings must be the ones
    /// the app runs (`bulkhead app migrate` changes those).
    pub async fn deploy_bundle(
        &mut self,
        bundle: &Bundle,
        manifest: &AppManifest,
    ) -> Result<BundleVersion> {
        let app = &manifest.app;
        let registered = registry::app_manifest(&self.client, app)
            .await?
            .ok_or_else(|| Error::NotFound(format!("app {app}")))?;
        let mut without = manifest.clone();
        without.functions = registered.functions.clone();
        if without != registered {
            return Err(Error::Conflict(format!(
                "the bundle's manifest declares other entities, flags or settings than app {app} runs; apply them with `bulkhead app migrate` first"
            )));
        }
        let digest = bundle.digest();
        let existing = self
            .client
            .query_opt(
                "SELECT version FROM bulkhead_control.bundle WHERE app = $1 AND digest = $2",
                &[&app.as_str(), &digest],
            )
            .await
            .map_err(crate::db)?;
        let version = match existing {
            Some(row) => row.get::<_, i64>(0),
            None => {
                let bytes: usize = bundle.files().values().map(Vec::len).sum();
                let row = self
                    .client
                    .query_one(
                        "INSERT INTO bulkhead_control.bundle (app, version, digest, content, files, bytes, actor) \
                         SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $4, $5, $6 \
                         FROM bulkhead_control.bundle WHERE app = $1 RETURNING version",
                        &[
                            &app.as_str(),
                            &digest,
                            &bundle.to_json(),
                            &(bundle.files().len() as i32),
                            &(bytes as i32),
                            &self.actor,
                        ],
                    )
                    .await
                    .map_err(crate::db)?;
                row.get(0)
            }
        };
        self.activate_bundle(app, version, "app.deploy").await
    }

    /// Makes version `to` of `app` the active one again.
    pub async fn rollback_bundle(
        &mut self,
        app: &bulkhead_model::AppId,
        to: i64,
    ) -> Result<BundleVersion> {
        self.activate_bundle(app, to, "app.rollback").await
    }

    /// Every stored version of `app`, newest first.
    pub async fn bundle_versions(&self, app: &bulkhead_model::AppId) -> Result<Vec<BundleVersion>> {
        let rows = self
            .client
            .query(
                "SELECT b.version, b.digest, b.files, b.bytes, b.actor, \
                 to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 a.version IS NOT NULL \
                 FROM bulkhead_control.bundle b \
                 LEFT JOIN bulkhead_control.bundle_active a USING (app, version) \
                 WHERE b.app = $1 ORDER BY b.version DESC",
                &[&app.as_str()],
            )
            .await
            .map_err(crate::db)?;
        Ok(rows
            .iter()
            .map(|r| BundleVersion {
                version: r.get(0),
                digest: r.get(1),
                files: r.get(2),
                bytes: r.get(3),
                actor: r.get(4),
                created_at: r.get(5),
                active: r.get(6),
            })
            .collect())
    }

    async fn activate_bundle(
        &mut self,
        app: &bulkhead_model::AppId,
        version: i64,
        action: &str,
    ) -> Result<BundleVersion> {
        let row = self
            .client
            .query_opt(
                "SELECT digest, content FROM bulkhead_control.bundle WHERE app = $1 AND version = $2",
                &[&app.as_str(), &version],
            )
            .await
            .map_err(crate::db)?
            .ok_or_else(|| Error::NotFound(format!("version {version} of app {app}")))?;
        let digest: String = row.get(0);
        let content: String = row.get(1);
        // Content first, then the pointer: a worker never reads a configuration naming a
        // bundle its space does not hold (dedicated tenant workers' spaces get their copy from
        // `place_dedicated`, through `copy_bundle`, before their configuration changes).
        self.put_bundle(app, &digest, &content).await?;
        self.client
            .execute(
                "INSERT INTO bulkhead_control.bundle_active (app, version) VALUES ($1, $2) \
                 ON CONFLICT (app) DO UPDATE SET version = EXCLUDED.version, activated_at = now()",
                &[&app.as_str(), &version],
            )
            .await
            .map_err(crate::db)?;
        self.sync_worker_config(app).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action,
                target: app.as_str(),
                detail: json!({ "version": version, "digest": digest }),
            },
        )
        .await?;
        self.bundle_versions(app)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::Internal("the activated version vanished".into()))
    }

    /// Writes a bundle's content into `space` under its digest: in pieces when it is larger
    /// than one vault entry may be (`BundleHead`), the pieces first and the head last.
    async fn put_bundle(
        &self,
        space: &bulkhead_model::AppId,
        digest: &str,
        content: &str,
    ) -> Result<()> {
        let (head, parts) = BundleHead::split(content);
        for (i, part) in parts.into_iter().enumerate() {
            self.vault
                .put(space, &bundle_part_path(digest, i), &VaultSecret::new(part))
                .await
                .map_err(vault)?;
        }
        self.vault
            .put(space, &bundle_path(digest), &VaultSecret::new(head))
            .await
            .map_err(vault)
    }

    /// Copies the active bundle's content into a tenant worker's space when its
    /// configuration names one the space does not hold yet.
    pub(super) async fn copy_bundle(
        &self,
        app: &bulkhead_model::AppId,
        space: &bulkhead_model::AppId,
        bundle: &BundleRef,
    ) -> Result<()> {
        let path = bundle_path(&bundle.digest);
        if self.vault.get(space, &path).await.is_ok() {
            return Ok(());
        }
        let head = self.vault.get(app, &path).await.map_err(vault)?;
        let parts = BundleHead::read(head.expose())
            .part_paths(&bundle.digest)
            .map_err(Error::Internal)?;
        for part_path in parts {
            let part = self.vault.get(app, &part_path).await.map_err(vault)?;
            self.vault
                .put(space, &part_path, &part)
                .await
                .map_err(vault)?;
        }
        self.vault.put(space, &path, &head).await.map_err(vault)
    }
}
