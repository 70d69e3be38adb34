//! Binding requests to principals. A token is verified only by the resolved tenant's realm
//! (its keys, issuer and this app as audience); a token that names another tenant is 403
//! before any verification, everything else that fails is 401.

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_model::{ErrorCode, TenantId};

use crate::error::ApiError;
use crate::resolve::{ResolvedTenant, Source};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<String>,
}

/// Verifies bearer tokens for a tenant. Implemented for local realms by [`LocalRealms`];
/// external OpenID providers implement it the same way.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>>;
}

/// Local realms in the platform database, for one app (the audience).
#[derive(Debug, Clone)]
pub struct LocalRealms {
    pub store: bulkhead_identity::store::RealmStore,
    pub audience: String,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator for LocalRealms {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>> {
        Box::pin(async move {
            match self
                .store
                .verify(tenant, token, &self.audience, now())
                .await
            {
                Ok(v) => Some(Principal {
                    roles: v.strings("roles"),
                    subject: v.subject,
                }),
                Err(e) => {
                    tracing::debug!(%tenant, error = %e, "token rejected");
                    None
                }
            }
        })
    }
}

/// Tenants whose users live in their own OpenID provider, in front of the local realms of
/// every other tenant. The realm is chosen by the resolved tenant, never by the token.
#[derive(Debug, Clone)]
pub struct TenantRealms {
    pub local: LocalRealms,
    pub external: bulkhead_identity::external::ExternalRealms,
}

impl Authenticator for TenantRealms {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>> {
        Box::pin(async move {
            let Some(realm) = self.external.realm(tenant) else {
                return self.local.authenticate(tenant, token).await;
            };
            match self.external.verify(tenant, token, now()).await {
                Ok(v) => Some(Principal {
                    roles: v.strings(&realm.roles_claim),
                    subject: v.subject,
                }),
                Err(e) => {
                    tracing::debug!(%tenant, error = %e, "external token rejected");
                    None
                }
            }
        })
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `tenant` claim of a token, read without verification. Used only to answer 403 rather
/// than 401 when a token plainly belongs to another tenant; it never grants anything.
pub fn claimed_tenant(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("tenant")?.as_str().map(str::to_owned)
}

/// Authenticates a request for the resolved tenant. When a selector the client chose
/// (header, cookie, path) names a tenant other than the token's, the answer is 403; a token
/// presented at another tenant's host is simply not valid there (401).
pub async fn authenticate(
    auth: &dyn Authenticator,
    resolved: &ResolvedTenant,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let tenant = &resolved.tenant;
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let by_selector = matches!(resolved.via, Source::Header | Source::Cookie | Source::Path);
    if by_selector
        && let Some(claimed) = claimed_tenant(token)
        && claimed != tenant.as_str()
    {
        return Err(ApiError::new(
            ErrorCode::TenantMismatch,
            "the token belongs to another tenant",
        ));
    }
    auth.authenticate(tenant, token)
        .await
        .ok_or_else(ApiError::unauthorized)
}
