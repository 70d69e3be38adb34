//! Local realms stored in the platform's own database (never an app's): users, signing keys
//! (private halves sealed under the platform master key) and refresh-token families.
//!
//! A realm costs a row and a key, not a process. Time is passed in (`now`, seconds since the
//! epoch) so tests control it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_model::TenantId;
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jwt::{self, Alg, Policy, Verified};
use crate::keys::{KeySet, RealmKey};
use crate::password;

/// Errors of the realm store. `Unauthorized` covers every credential problem alike (unknown
/// user, wrong password, bad or reused refresh token) so responses reveal nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unauthorized")]
    Unauthorized,
    /// Too many failed logins for the user or the address, or too many logins at once.
    #[error("too many login attempts; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("realm not found")]
    RealmNotFound,
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error(transparent)]
    Token(#[from] crate::Error),
    #[error("database: {0}")]
    Database(String),
}

type Result<T> = std::result::Result<T, StoreError>;

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Token lifetimes and the public base URL realms are served under.
#[derive(Debug, Clone)]
pub struct RealmSettings {
    /// e.g. `https://bulkhead.example` — the issuer of tenant T is `{base_url}/realms/T`.
    pub base_url: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub leeway_secs: u64,
    /// Login throttling and the bound on password hashing.
    pub logins: crate::throttle::LoginLimits,
}

impl Default for RealmSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            access_ttl_secs: 300,
            refresh_ttl_secs: 30 * 24 * 3600,
            leeway_secs: 30,
            logins: crate::throttle::LoginLimits::default(),
        }
    }
}

/// Tokens handed out by a login or refresh.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS bulkhead_identity;
CREATE TABLE IF NOT EXISTS bulkhead_identity.realm (
  tenant_id text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bulkhead_identity.realm_key (
  tenant_id text NOT NULL REFERENCES bulkhead_identity.realm ON DELETE CASCADE,
  kid text NOT NULL,
  sealed bytea NOT NULL,
  public_key bytea NOT NULL,
  created_at bigint NOT NULL,
  active boolean NOT NULL,
  verify_until bigint,
  PRIMARY KEY (tenant_id, kid)
);
CREATE TABLE IF NOT EXISTS bulkhead_identity.realm_user (
  tenant_id text NOT NULL REFERENCES bulkhead_identity.realm ON DELETE CASCADE,
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  username text NOT NULL,
  password_hash text NOT NULL,
  roles text[] NOT NULL DEFAULT '{}',
  disabled boolean NOT NULL DEFAULT false,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, username)
);
CREATE TABLE IF NOT EXISTS bulkhead_identity.refresh_token (
  token_hash bytea PRIMARY KEY,
  tenant_id text NOT NULL,
  family uuid NOT NULL,
  user_id uuid NOT NULL,
  audience text NOT NULL,
  expires_at bigint NOT NULL,
  used boolean NOT NULL DEFAULT false,
  revoked boolean NOT NULL DEFAULT false,
  FOREIGN KEY (tenant_id, user_id) REFERENCES bulkhead_identity.realm_user ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS refresh_token_family ON bulkhead_identity.refresh_token (tenant_id, family);
"#;

/// Local realms in the platform database.
#[derive(Clone)]
pub struct RealmStore {
    pool: Pool,
    master: [u8; 32],
    settings: RealmSettings,
    /// Verification keys per realm: (keys, fetched at). Refreshed after [`KEY_CACHE_SECS`], or
    /// on an unknown `kid` at most once per [`KEY_REFRESH_MIN_SECS`].
    cache: Arc<Mutex<HashMap<TenantId, (KeySet, u64)>>>,
    verified: Arc<crate::cache::VerifiedCache>,
    throttle: Arc<crate::throttle::Throttle>,
}

/// How long cached realm keys are used before they are read again.
pub const KEY_CACHE_SECS: u64 = 60;
/// Minimum interval between key reloads forced by unknown `kid`s.
pub const KEY_REFRESH_MIN_SECS: u64 = 5;

impl std::fmt::Debug for RealmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealmStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn context(tenant: &TenantId, kid: &str) -> String {
    format!("bulkhead-realm-key/{tenant}/{kid}")
}

impl RealmStore {
    /// `master` seals realm private keys; it comes from the platform's secret configuration
    /// and is never stored beside the data.
    pub fn new(pool: Pool, master: [u8; 32], settings: RealmSettings) -> Self {
        let throttle = Arc::new(crate::throttle::Throttle::new(settings.logins.clone()));
        Self {
            pool,
            master,
            settings,
            cache: Arc::new(Mutex::new(HashMap::new())),
            verified: Arc::new(crate::cache::VerifiedCache::default()),
            throttle,
        }
    }

    /// Creates the identity schema when missing.
    pub async fn migrate(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(db)?;
        client.batch_execute(SCHEMA).await.map_err(db)
    }

    pub fn issuer(&self, tenant: &TenantId) -> String {
        format!(
            "{}/realms/{tenant}",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    /// Removes the tenant's realm: its users (password hashes), signing keys and refresh
    /// tokens. A realm created again under the same id starts empty. Idempotent.
    pub async fn delete_realm(&self, tenant: &TenantId) -> Result<()> {
        // Keys and users go with the realm, refresh tokens with their users (ON DELETE CASCADE).
        let client = self.pool.get().await.map_err(db)?;
        client
            .execute(
                "DELETE FROM bulkhead_identity.realm WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await
            .map_err(db)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(tenant);
        }
        Ok(())
    }

    /// Creates the tenant's realm with a first signing key (idempotent).
    pub async fn create_realm(&self, tenant: &TenantId, now: u64) -> Result<()> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let inserted = tx
            .execute(
                "INSERT INTO bulkhead_identity.realm (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&tenant.as_str()],
            )
            .await
            .map_err(db)?;
        if inserted == 1 {
            Self::insert_key(&tx, &self.master, tenant, &RealmKey::generate(), now).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn insert_key(
        tx: &tokio_postgres::Transaction<'_>,
        master: &[u8; 32],
        tenant: &TenantId,
        key: &RealmKey,
        now: u64,
    ) -> Result<()> {
        let sealed = key.seal(master, &context(tenant, key.kid()))?;
        let public = match &key.public().key {
            crate::keys::KeyMaterial::Ed25519(k) => k.to_bytes().to_vec(),
            crate::keys::KeyMaterial::Rsa(_) => {
                return Err(StoreError::Database("unexpected key type".into()));
            }
        };
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO bulkhead_identity.realm_key (tenant_id, kid, sealed, public_key, created_at, active)
             VALUES ($1, $2, $3, $4, $5, true)",
            &[&tenant.as_str(), &key.kid(), &sealed, &public, &now],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Makes a new key the signing key. Previous keys keep verifying for `overlap_secs`, so
    /// tokens issued just before the rotation stay valid until they expire.
    pub async fn rotate_key(
        &self,
        tenant: &TenantId,
        now: u64,
        overlap_secs: u64,
    ) -> Result<String> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let until = i64::try_from(now.saturating_add(overlap_secs)).unwrap_or(i64::MAX);
        let n = tx
            .execute(
                "UPDATE bulkhead_identity.realm_key SET active = false, verify_until = $2
                 WHERE tenant_id = $1 AND active",
                &[&tenant.as_str(), &until],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            return Err(StoreError::RealmNotFound);
        }
        let key = RealmKey::generate();
        Self::insert_key(&tx, &self.master, tenant, &key, now).await?;
        tx.commit().await.map_err(db)?;
        self.verified.clear();
        Ok(key.kid().to_owned())
    }

    /// The keys that verify the realm's tokens now (the active one and overlapping old ones).
    pub async fn keyset(&self, tenant: &TenantId, now: u64) -> Result<KeySet> {
        let client = self.pool.get().await.map_err(db)?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT kid, public_key FROM bulkhead_identity.realm_key
                 WHERE tenant_id = $1 AND (active OR verify_until >= $2) ORDER BY created_at DESC",
                &[&tenant.as_str(), &now],
            )
            .await
            .map_err(db)?;
        if rows.is_empty() {
            return Err(StoreError::RealmNotFound);
        }
        let mut keys = Vec::new();
        for row in rows {
            let bytes: Vec<u8> = row.get(1);
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| StoreError::Database("stored public key has the wrong size".into()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(db)?;
            keys.push(crate::keys::PublicKey {
                kid: row.get(0),
                key: crate::keys::KeyMaterial::Ed25519(key),
            });
        }
        Ok(KeySet { keys })
    }

    async fn signing_key(&self, tenant: &TenantId) -> Result<RealmKey> {
        let client = self.pool.get().await.map_err(db)?;
        let row = client
            .query_opt(
                "SELECT kid, sealed FROM bulkhead_identity.realm_key WHERE tenant_id = $1 AND active
                 ORDER BY created_at DESC LIMIT 1",
                &[&tenant.as_str()],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::RealmNotFound)?;
        let kid: String = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        Ok(RealmKey::open(
            &sealed,
            &self.master,
            &context(tenant, &kid),
        )?)
    }

    /// `/realms/{tenant}/.well-known/openid-configuration`.
    pub fn discovery(&self, tenant: &TenantId) -> Value {
        let iss = self.issuer(tenant);
        json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
            "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
            "revocation_endpoint": format!("{iss}/protocol/openid-connect/revoke"),
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["password", "refresh_token"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
        })
    }

    pub async fn create_user(
        &self,
        tenant: &TenantId,
        username: &str,
        password_plain: &str,
        roles: &[&str],
    ) -> Result<String> {
        let hash = password::hash(password_plain)?;
        let client = self.pool.get().await.map_err(db)?;
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let row = client
            .query_one(
                "INSERT INTO bulkhead_identity.realm_user (tenant_id, username, password_hash, roles)
                 VALUES ($1, $2, $3, $4) RETURNING id::text",
                &[&tenant.as_str(), &username, &hash, &roles],
            )
            .await
            .map_err(|e| match e.code().map(|c| c.code()) {
                Some("23505") => StoreError::UserExists(username.to_owned()),
                Some("23503") => StoreError::RealmNotFound,
                _ => db(e),
            })?;
        Ok(row.get(0))
    }

    /// Password login in the tenant's realm from `source` (the client's address, when known).
    /// Unknown users cost as much as wrong passwords; failures are throttled per (realm, user)
    /// and per address, and hashing is bounded (see [`crate::throttle`]).
    pub async fn login(
        &self,
        tenant: &TenantId,
        username: &str,
        password_plain: &str,
        audience: &str,
        now: u64,
        source: Option<std::net::IpAddr>,
    ) -> Result<Tokens> {
        let attempt = crate::throttle::Attempt::new(tenant.as_str(), username, source);
        self.throttle
            .check(&attempt, now)
            .map_err(|retry_after| StoreError::Throttled { retry_after })?;
        let client = self.pool.get().await.map_err(db)?;
        let row = client
            .query_opt(
                "SELECT id::text, password_hash, roles FROM bulkhead_identity.realm_user
                 WHERE tenant_id = $1 AND username = $2 AND NOT disabled",
                &[&tenant.as_str(), &username],
            )
            .await
            .map_err(db)?;
        drop(client);
        let hash = row
            .as_ref()
            .map_or_else(|| password::dummy_hash().to_owned(), |r| r.get(1));
        let plain = password_plain.to_owned();
        let matches = self
            .throttle
            .hash(move || password::verify(&plain, &hash))
            .await
            .map_err(|retry_after| StoreError::Throttled { retry_after })?;
        let Some(row) = row.filter(|_| matches) else {
            self.throttle.failed(&attempt, now);
            return Err(StoreError::Unauthorized);
        };
        self.throttle.succeeded(&attempt);
        let user: String = row.get(0);
        let roles: Vec<String> = row.get(2);
        self.issue(tenant, &user, &roles, audience, None, now).await
    }

    async fn issue(
        &self,
        tenant: &TenantId,
        user: &str,
        roles: &[String],
        audience: &str,
        family: Option<String>,
        now: u64,
    ) -> Result<Tokens> {
        let key = self.signing_key(tenant).await?;
        let jti: [u8; 16] = rand::random();
        let exp = now + self.settings.access_ttl_secs;
        let access_token = jwt::sign(
            &key,
            "at+jwt",
            &json!({
                "iss": self.issuer(tenant), "sub": user, "aud": audience, "tenant": tenant.as_str(),
                "roles": roles, "iat": now, "nbf": now, "exp": exp, "jti": B64.encode(jti),
            }),
        );
        let refresh_bytes: [u8; 32] = rand::random();
        let refresh_token = B64.encode(refresh_bytes);
        let client = self.pool.get().await.map_err(db)?;
        let expires = i64::try_from(now + self.settings.refresh_ttl_secs).unwrap_or(i64::MAX);
        client
            .execute(
                "INSERT INTO bulkhead_identity.refresh_token
                   (token_hash, tenant_id, family, user_id, audience, expires_at)
                 VALUES ($1, $2, coalesce($3::text::uuid, gen_random_uuid()), $4::text::uuid, $5, $6)",
                &[&hash_token(&refresh_token), &tenant.as_str(), &family, &user, &audience, &expires],
            )
            .await
            .map_err(db)?;
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in: self.settings.access_ttl_secs,
        })
    }

    /// Trades a refresh token for new tokens; the old one is spent. Presenting a spent or
    /// revoked token revokes its whole family (a stolen token and its rightful holder both lose
    /// the session).
    pub async fn refresh(
        &self,
        tenant: &TenantId,
        refresh_token: &str,
        now: u64,
    ) -> Result<Tokens> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .query_opt(
                "SELECT family::text, user_id::text, audience, expires_at, used, revoked
                 FROM bulkhead_identity.refresh_token WHERE token_hash = $1 AND tenant_id = $2 FOR UPDATE",
                &[&hash_token(refresh_token), &tenant.as_str()],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::Unauthorized)?;
        let family: String = row.get(0);
        let (used, revoked): (bool, bool) = (row.get(4), row.get(5));
        if used || revoked {
            tx.execute(
                "UPDATE bulkhead_identity.refresh_token SET revoked = true WHERE tenant_id = $1 AND family = $2::text::uuid",
                &[&tenant.as_str(), &family],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Err(StoreError::Unauthorized);
        }
        let expires_at: i64 = row.get(3);
        if i64::try_from(now).unwrap_or(i64::MAX) > expires_at {
            return Err(StoreError::Unauthorized);
        }
        tx.execute(
            "UPDATE bulkhead_identity.refresh_token SET used = true WHERE token_hash = $1",
            &[&hash_token(refresh_token)],
        )
        .await
        .map_err(db)?;
        let user: String = row.get(1);
        let audience: String = row.get(2);
        let roles: Vec<String> = tx
            .query_opt(
                "SELECT roles FROM bulkhead_identity.realm_user WHERE tenant_id = $1 AND id = $2::text::uuid AND NOT disabled",
                &[&tenant.as_str(), &user],
            )
            .await
            .map_err(db)?
            .ok_or(StoreError::Unauthorized)?
            .get(0);
        tx.commit().await.map_err(db)?;
        self.issue(tenant, &user, &roles, &audience, Some(family), now)
            .await
    }

    /// Revokes the session (the refresh token's family). Unknown tokens are ignored.
    pub async fn logout(&self, tenant: &TenantId, refresh_token: &str) -> Result<()> {
        let client = self.pool.get().await.map_err(db)?;
        client
            .execute(
                "UPDATE bulkhead_identity.refresh_token SET revoked = true
                 WHERE tenant_id = $1 AND family = (SELECT family FROM bulkhead_identity.refresh_token
                                                    WHERE token_hash = $2 AND tenant_id = $1)",
                &[&tenant.as_str(), &hash_token(refresh_token)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// A short-lived access token signed by the realm's active key for a probe subject with
    /// no roles (`bulkhead verify` checks that no other tenant accepts it).
    pub async fn sign_probe(&self, tenant: &TenantId, audience: &str, now: u64) -> Result<String> {
        let key = self.signing_key(tenant).await?;
        let jti: [u8; 16] = rand::random();
        Ok(jwt::sign(
            &key,
            "at+jwt",
            &json!({
                "iss": self.issuer(tenant), "sub": "bulkhead-verify-probe", "aud": audience,
                "tenant": tenant.as_str(), "roles": [], "iat": now, "nbf": now, "exp": now + 60,
                "jti": B64.encode(jti),
            }),
        ))
    }

    /// Verifies an access token for `tenant` and `audience` with that realm's keys only.
    pub async fn verify(
        &self,
        tenant: &TenantId,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<Verified> {
        if let Some(v) = self.verified.get(
            tenant.as_str(),
            audience,
            token,
            now,
            self.settings.leeway_secs,
        ) {
            return Ok(v);
        }
        let issuer = self.issuer(tenant);
        let policy = Policy {
            algorithms: &[Alg::EdDSA],
            issuer: &issuer,
            audience,
            tenant: Some(tenant.as_str()),
            now,
            leeway: self.settings.leeway_secs,
        };
        let cached = self.cache.lock().ok().and_then(|c| c.get(tenant).cloned());
        let (keys, fetched) = match cached {
            Some((keys, at)) if now < at.saturating_add(KEY_CACHE_SECS) => (keys, at),
            _ => (self.reload_keys(tenant, now).await?, now),
        };
        let verified = match jwt::verify_access_token(token, &keys, &policy) {
            // A kid we have not seen may be a fresh rotation: reload, but not more often than
            // the rate limit allows (a flood of made-up kids costs one query per interval).
            Err(crate::Error::UnknownKey(_))
                if now >= fetched.saturating_add(KEY_REFRESH_MIN_SECS) =>
            {
                let keys = self.reload_keys(tenant, now).await?;
                jwt::verify_access_token(token, &keys, &policy)?
            }
            other => other?,
        };
        self.verified
            .put(tenant.as_str(), audience, token, &verified);
        Ok(verified)
    }

    async fn reload_keys(&self, tenant: &TenantId, now: u64) -> Result<KeySet> {
        let keys = self.keyset(tenant, now).await?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(tenant.clone(), (keys.clone(), now));
        }
        Ok(keys)
    }
}
