//! Per-tenant identity realms: the crypto and token rules, local realms in the platform
//! database (`store`), and external OpenID providers reached over HTTP (`external`). No HTTP
//! server side: the endpoints are `bulkhead-runtime`'s `realms`.
//!
//! - [`password`]: argon2id hashing (OWASP parameters).
//! - [`keys`]: a realm's Ed25519 signing keys (`kid` = RFC 7638 thumbprint), public keys from
//!   JWKS (Ed25519, RSA), private keys sealed at rest with XChaCha20-Poly1305.
//! - [`jwt`]: signing and strict verification of access tokens against one realm's key set,
//!   a fixed algorithm allow-list and issuer/audience/tenant/time checks.
//!
//! - [`external`]: tenants whose users live in their own OpenID provider (keys from the
//!   configured JWKS URL only, cached, reloaded on unknown `kid` with a rate limit).
//! - [`store`]: local realms in the platform database: users, keys, refresh-token families.
//! - [`throttle`]: failed logins per user and per address, and a bound on password hashing.
//!
//! This crate must not depend on axum, must not fetch keys from anywhere a token names, and
//! never logs secrets.

pub mod cache;
pub mod external;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod store;
pub mod throttle;

/// Identity errors. Every token problem is an [`Error::InvalidToken`] or
/// [`Error::UnknownKey`] (the caller may refresh keys on the latter); both mean 401.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("no key with kid {0:?} in the realm")]
    UnknownKey(String),
    #[error("bad JWKS: {0}")]
    Jwks(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
