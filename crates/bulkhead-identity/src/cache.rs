//! A bounded cache of verified access tokens, so a token is checked once per lifetime rather
//! than once per request. Keyed by a SHA-256 of tenant, audience and the whole token; a hit is
//! still refused once `exp` (plus the policy's leeway) has passed. Bounded: when full, it is
//! emptied (tokens live minutes; a cold cache only costs verifications).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::jwt::Verified;

/// Entries kept at most.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct VerifiedCache {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

fn key(tenant: &str, audience: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [tenant, audience, token] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl VerifiedCache {
    /// A previously verified token that has not expired at `now`.
    pub fn get(
        &self,
        tenant: &str,
        audience: &str,
        token: &str,
        now: u64,
        leeway: u64,
    ) -> Option<Verified> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key(tenant, audience, token))
            .filter(|v| now <= v.expires_at.saturating_add(leeway))
            .cloned()
    }

    pub fn put(&self, tenant: &str, audience: &str, token: &str, verified: &Verified) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key(tenant, audience, token), verified.clone());
        }
    }

    /// Forgets everything (after a key rotation or revocation).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: u64) -> Verified {
        Verified {
            subject: "alice".into(),
            expires_at: exp,
            claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn hits_respect_expiry_tenant_and_audience() {
        let c = VerifiedCache::default();
        c.put("acme", "app", "tok", &verified(100));
        assert!(c.get("acme", "app", "tok", 100, 0).is_some());
        assert!(c.get("acme", "app", "tok", 131, 30).is_none(), "expired");
        assert!(c.get("beta", "app", "tok", 50, 0).is_none(), "other tenant");
        assert!(
            c.get("acme", "other", "tok", 50, 0).is_none(),
            "other audience"
        );
        assert!(c.get("acme", "app", "tok2", 50, 0).is_none());
        c.clear();
        assert!(c.get("acme", "app", "tok", 50, 0).is_none());
    }
}
