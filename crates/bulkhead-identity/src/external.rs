//! External realms: a tenant whose users live in its own OpenID provider.
//!
//! The provider's keys are fetched from the JWKS URL configured for the tenant, or found by
//! OpenID discovery under the configured issuer (whose document must name that same issuer) —
//! never from a URL or key inside a token — with no redirects, a timeout and a size limit;
//! they are cached
//! and reloaded when a token names an unknown `kid`, at most once per
//! [`JWKS_REFRESH_MIN_SECS`]. Tokens must be RS256 or EdDSA access tokens (`typ: at+jwt`) for
//! the configured issuer and audience.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_model::TenantId;
use tokio::sync::Mutex;

use crate::jwt::{self, Alg, Policy, Verified};
use crate::keys::KeySet;
use crate::{Error, Result};

/// Cached keys are used this long before a reload.
pub const JWKS_CACHE_SECS: u64 = 300;
/// Minimum interval between reloads forced by unknown `kid`s.
pub const JWKS_REFRESH_MIN_SECS: u64 = 10;
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One tenant's external provider.
#[derive(Debug, Clone)]
pub struct ExternalRealm {
    pub issuer: String,
    /// Where the keys are fetched from, as configured by the operator; `None`: the `jwks_uri`
    /// of the issuer's `/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    pub audience: String,
    /// The claim that carries roles (e.g. `roles`, `groups`).
    pub roles_claim: String,
    pub algorithms: Vec<Alg>,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    keys: KeySet,
    fetched_at: u64,
}

/// Verifies tokens of external realms, per tenant.
#[derive(Debug, Clone)]
pub struct ExternalRealms {
    realms: Arc<HashMap<TenantId, ExternalRealm>>,
    cache: Arc<Mutex<HashMap<TenantId, Cached>>>,
    verified: Arc<crate::cache::VerifiedCache>,
    http: reqwest::Client,
}

impl ExternalRealms {
    pub fn new(realms: HashMap<TenantId, ExternalRealm>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Jwks(format!("http client: {e}")))?;
        Ok(Self {
            realms: Arc::new(realms),
            cache: Arc::new(Mutex::new(HashMap::new())),
            verified: Arc::new(crate::cache::VerifiedCache::default()),
            http,
        })
    }

    pub fn realm(&self, tenant: &TenantId) -> Option<&ExternalRealm> {
        self.realms.get(tenant)
    }

    /// GETs a JSON document with no redirects, a timeout and a size limit.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::Jwks(format!("fetching {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(Error::Jwks(format!(
                "fetching {url}: HTTP {}",
                resp.status()
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(Error::Jwks(format!("{url}: document too large")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Jwks(format!("reading {url}: {e}")))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(Error::Jwks(format!("{url}: document too large")));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Jwks(format!("{url} is not JSON: {e}")))
    }

    /// The realm's JWKS URL: configured, or discovered under its issuer.
    async fn jwks_url(&self, realm: &ExternalRealm) -> Result<String> {
        if let Some(url) = &realm.jwks_url {
            return Ok(url.clone());
        }
        let issuer = realm.issuer.trim_end_matches('/');
        let doc = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        // A discovery document for another issuer must not choose this realm's keys.
        if doc["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer) {
            return Err(Error::Jwks(format!(
                "the discovery document of {issuer} names issuer {}",
                doc["issuer"]
            )));
        }
        doc["jwks_uri"].as_str().map(str::to_owned).ok_or_else(|| {
            Error::Jwks(format!(
                "the discovery document of {issuer} has no jwks_uri"
            ))
        })
    }

    async fn fetch(&self, realm: &ExternalRealm) -> Result<KeySet> {
        let url = self.jwks_url(realm).await?;
        KeySet::from_jwks(&self.get_json(&url).await?)
    }

    async fn keys(
        &self,
        tenant: &TenantId,
        realm: &ExternalRealm,
        now: u64,
        force: bool,
    ) -> Result<Cached> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(tenant) {
            let fresh = now < c.fetched_at.saturating_add(JWKS_CACHE_SECS);
            let may_refresh = now >= c.fetched_at.saturating_add(JWKS_REFRESH_MIN_SECS);
            if (fresh && !force) || (force && !may_refresh) {
                return Ok(c.clone());
            }
        }
        let keys = self.fetch(realm).await?;
        let c = Cached {
            keys,
            fetched_at: now,
        };
        cache.insert(tenant.clone(), c.clone());
        Ok(c)
    }

    /// Verifies an access token of `tenant`'s provider.
    pub async fn verify(&self, tenant: &TenantId, token: &str, now: u64) -> Result<Verified> {
        let realm = self
            .realms
            .get(tenant)
            .ok_or_else(|| Error::InvalidToken("tenant has no external realm".into()))?;
        let policy = Policy {
            algorithms: &realm.algorithms,
            issuer: &realm.issuer,
            audience: &realm.audience,
            tenant: None,
            now,
            leeway: realm.leeway_secs,
        };
        if let Some(v) = self.verified.get(
            tenant.as_str(),
            &realm.audience,
            token,
            now,
            realm.leeway_secs,
        ) {
            return Ok(v);
        }
        let cached = self.keys(tenant, realm, now, false).await?;
        let verified = match jwt::verify_access_token(token, &cached.keys, &policy) {
            Err(Error::UnknownKey(_)) => {
                let reloaded = self.keys(tenant, realm, now, true).await?;
                jwt::verify_access_token(token, &reloaded.keys, &policy)?
            }
            other => other?,
        };
        self.verified
            .put(tenant.as_str(), &realm.audience, token, &verified);
        Ok(verified)
    }
}
