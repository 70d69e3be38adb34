//! A shared bearer token guarding an endpoint (the admin API, `/metrics`). Only its SHA-256
//! digest is kept, and a presented token is compared digest to digest, so the comparison's
//! timing says nothing about the token, its length included.

use axum::http::HeaderMap;
use bulkhead_runtime::error::ApiError;
use sha2::{Digest, Sha256};

pub(crate) struct BearerToken([u8; 32]);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<digest>)")
    }
}

impl BearerToken {
    /// `token` (trimmed) for `what` (named in the error), at least 32 characters.
    pub(crate) fn new(token: &str, what: &str) -> crate::error::Result<Self> {
        let token = token.trim();
        crate::error::ensure!(token.len() >= 32, "{what} must be at least 32 characters");
        Ok(Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// `Ok` when `headers` carry the token as `Authorization: Bearer …`, else 401.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        if digest
            .iter()
            .zip(self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
        {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_passes() {
        let token = "t0ken-0123456789abcdef0123456789abcdef";
        let bearer = BearerToken::new(token, "the test token").unwrap();
        let mut h = HeaderMap::new();
        assert!(bearer.check(&h).is_err());
        for (value, ok) in [
            (format!("Bearer {token}"), true),
            (format!("Bearer {token}x"), false),
            (format!("Bearer {}", &token[1..]), false),
            (format!("Basic {token}"), false),
        ] {
            h.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer.check(&h).is_ok(), ok, "{value}");
        }
        assert!(BearerToken::new("short", "the test token").is_err());
    }
}
