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
pub(crate) use crate::resolve::cookie;
use crate::resolve::{ResolvedTenant, Source};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: Vec<String>,
}

impl Principal {
    /// A caller without credentials: nothing but the `anonymous` role.
    pub fn is_anonymous(&self) -> bool {
        self.roles
            .iter()
            .all(|r| r == bulkhead_model::ANONYMOUS_ROLE)
    }
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

/// The principal of a verified token; a rejection is logged (at debug) and yields `None`.
fn principal<E: std::fmt::Display>(
    tenant: &TenantId,
    verified: Result<bulkhead_identity::jwt::Verified, E>,
    roles_claim: &str,
) -> Option<Principal> {
    match verified {
        Ok(v) => Some(Principal {
            roles: v.strings(roles_claim),
            subject: v.subject,
        }),
        Err(e) => {
            tracing::debug!(%tenant, error = %e, "token rejected");
            None
        }
    }
}

/// Local realms in the platform database, for one app (the audience).
#[derive(Debug, Clone)]
pub struct LocalRealms {
    pub store: bulkhead_identity::store::RealmStore,
    pub audience: String,
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
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
            principal(
                tenant,
                self.store
                    .verify(tenant, token, &self.audience, now())
                    .await,
                "roles",
            )
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
            principal(
                tenant,
                self.external.verify(tenant, token, now()).await,
                &realm.roles_claim,
            )
        })
    }
}

/// Verification in an app worker, which holds no platform credential: every tenant's realm is
/// reached like an external provider, through its published JWKS (local realms publish theirs
/// at `/realms/{tenant}/protocol/openid-connect/certs`).
#[derive(Debug, Clone)]
pub struct PublishedRealms(pub bulkhead_identity::external::ExternalRealms);

impl Authenticator for PublishedRealms {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>> {
        Box::pin(async move {
            let realm = self.0.realm(tenant)?;
            principal(
                tenant,
                self.0.verify(tenant, token, now()).await,
                &realm.roles_claim,
            )
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
    /// Only the claim looked at: the others are skipped, not built (this runs per request).
    #[derive(serde::Deserialize)]
    struct Claims {
        tenant: Option<serde_json::Value>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    match claims.tenant? {
        serde_json::Value::String(t) => Some(t),
        _ => None,
    }
}

/// Authenticates a request for the resolved tenant. When a selector the client chose
/// (header, cookie, path) names a tenant other than the token's, the answer is 403; a token
/// presented at another tenant's host is simply not valid there (401).
pub async fn authenticate(
    auth: &dyn Authenticator,
    resolved: &ResolvedTenant,
    headers: &HeaderMap,
    write: bool,
) -> Result<Principal, ApiError> {
    let tenant = &resolved.tenant;
    let token = match bearer(headers) {
        Some(t) => t.to_owned(),
        None => session_token(headers, write)?,
    };
    let by_selector = matches!(resolved.via, Source::Header | Source::Cookie | Source::Path);
    if by_selector
        && let Some(claimed) = claimed_tenant(&token)
        && claimed != tenant.as_str()
    {
        return Err(ApiError::new(
            ErrorCode::TenantMismatch,
            "the token belongs to another tenant",
        ));
    }
    auth.authenticate(tenant, &token)
        .await
        .ok_or_else(ApiError::unauthorized)
}

/// Cookie names of browser sessions (host-only cookies: scoped to the tenant's host).
pub const SESSION_COOKIE: &str = "bulkhead_session";
pub const CSRF_COOKIE: &str = "bulkhead_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a browser session: derived from its access token, so it is bound to the
/// session and changes whenever the session's token does (login, refresh). One-way: the page
/// may read it, and it tells nothing about the HttpOnly session token.
pub fn csrf_token(session_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"bulkhead-csrf-v1\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access token of a browser session. Cookie-authenticated writes must send the session's
/// CSRF token ([`csrf_token`], also in the `bulkhead_csrf` cookie for the page to read) in the
/// `X-CSRF-Token` header: another site can make the browser send the cookies but cannot read
/// them to set the header, and a pair of its own making does not match the victim's session.
fn session_token(headers: &HeaderMap, write: bool) -> Result<String, ApiError> {
    let token = cookie(headers, SESSION_COOKIE).ok_or_else(ApiError::unauthorized)?;
    if write {
        let expected = csrf_token(&token);
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let ok = sent.is_some_and(|s| {
            expected.len() == s.len()
                && expected
                    .bytes()
                    .zip(s.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "cookie-authenticated writes need the session's X-CSRF-Token header",
            ));
        }
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimed_tenant_is_the_payloads_tenant_string_or_nothing() {
        let token = |payload: &str| format!("e30.{}.sig", B64.encode(payload));
        let claimed = |payload: &str| claimed_tenant(&token(payload));
        assert_eq!(
            claimed(r#"{"sub":"a","tenant":"acme","roles":["x"],"n":{"tenant":"b"}}"#).as_deref(),
            Some("acme")
        );
        assert_eq!(claimed(r#"{"sub":"a"}"#), None);
        assert_eq!(claimed(r#"{"tenant":7}"#), None);
        assert_eq!(claimed(r#"{"tenant":null}"#), None);
        assert_eq!(claimed("not json"), None);
        assert_eq!(claimed_tenant("no-dots"), None);
        assert_eq!(claimed_tenant("a.%%%.c"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_csrf_pair_not_derived_from_the_session_is_refused() {
        let session = "victims.session.token";
        let forged = "ab".repeat(32);
        let jar = format!("{SESSION_COOKIE}={session}; {CSRF_COOKIE}={forged}");
        let h = headers(&[("cookie", &jar), (CSRF_HEADER, &forged)]);
        assert!(
            session_token(&h, true).is_err(),
            "a matching pair of the attacker's own"
        );
        let good = csrf_token(session);
        let h = headers(&[("cookie", &jar), (CSRF_HEADER, &good)]);
        assert_eq!(session_token(&h, true).unwrap(), session);
        assert_ne!(csrf_token("another.session"), good, "bound to the session");
        let h = headers(&[("cookie", &jar)]);
        assert!(session_token(&h, false).is_ok(), "reads need no CSRF token");
        assert!(session_token(&h, true).is_err());
    }
}
