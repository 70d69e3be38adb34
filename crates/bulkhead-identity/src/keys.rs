//! Signing keys of a realm (Ed25519), public keys to verify with (Ed25519 or RSA), JWK/JWKS,
//! and encryption of private keys at rest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey};
use rsa::BigUint;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A realm's Ed25519 signing key with its `kid` (the RFC 7638 thumbprint of the public key).
#[derive(Clone)]
pub struct RealmKey {
    kid: String,
    signing: SigningKey,
}

impl std::fmt::Debug for RealmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealmKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RealmKey {
    /// A new random key.
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let kid = thumbprint(&signing.verifying_key().to_bytes());
        Self { kid, signing }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: KeyMaterial::Ed25519(self.signing.verifying_key()),
        }
    }

    /// Encrypts the private key for storage under `master` (32 bytes). `context` (realm and
    /// kid) is authenticated, so a stored key cannot be moved to another realm or kid.
    pub fn seal(&self, master: &[u8; 32], context: &str) -> Result<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new(master.into());
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ct = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: self.signing.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Crypto("sealing a key failed".into()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend(ct);
        Ok(out)
    }

    /// Decrypts a key sealed by [`RealmKey::seal`] with the same master key and context.
    pub fn open(sealed: &[u8], master: &[u8; 32], context: &str) -> Result<Self> {
        if sealed.len() < 24 + 16 {
            return Err(Error::Crypto("sealed key too short".into()));
        }
        let (nonce, ct) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new(master.into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Crypto("a sealed key did not open (wrong master key or context)".into())
            })?;
        let seed: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::Crypto("sealed key has the wrong length".into()))?;
        Ok(Self::from_seed(seed))
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key.
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(public)
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMaterial {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A public key with its `kid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub key: KeyMaterial,
}

impl PublicKey {
    /// The key as a JWK.
    pub fn to_jwk(&self) -> Value {
        match &self.key {
            KeyMaterial::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": self.kid, "x": B64.encode(k.to_bytes()),
            }),
            KeyMaterial::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": B64.encode(k.n().to_bytes_be()), "e": B64.encode(k.e().to_bytes_be()),
                })
            }
        }
    }
}

/// The keys a token may be verified with: one realm's, never a token's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// `{"keys": [...]}`.
    pub fn to_jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(PublicKey::to_jwk).collect::<Vec<_>>() })
    }

    /// Reads a JWKS document. Keys that are not signature keys of a supported type (RSA,
    /// Ed25519), or that lack a `kid`, are skipped; malformed supported keys are errors.
    pub fn from_jwks(doc: &Value) -> Result<Self> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Jwks("no \"keys\" array".into()))?;
        let mut out = Vec::new();
        for k in keys {
            let Some(kid) = k.get("kid").and_then(Value::as_str) else {
                continue;
            };
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let field = |name: &str| -> Result<Vec<u8>> {
                let s = k
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Jwks(format!("key {kid}: missing {name}")))?;
                B64.decode(s)
                    .map_err(|_| Error::Jwks(format!("key {kid}: {name} is not base64url")))
            };
            match (
                k.get("kty").and_then(Value::as_str),
                k.get("crv").and_then(Value::as_str),
            ) {
                (Some("RSA"), _) => {
                    let n = BigUint::from_bytes_be(&field("n")?);
                    let e = BigUint::from_bytes_be(&field("e")?);
                    let key = rsa::RsaPublicKey::new(n, e)
                        .map_err(|e| Error::Jwks(format!("key {kid}: {e}")))?;
                    out.push(PublicKey {
                        kid: kid.to_owned(),
                        key: KeyMaterial::Rsa(key),
                    });
                }
                (Some("OKP"), Some("Ed25519")) => {
                    let x: [u8; 32] = field("x")?
                        .try_into()
                        .map_err(|_| Error::Jwks(format!("key {kid}: x must be 32 bytes")))?;
                    let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|e| Error::Jwks(format!("key {kid}: {e}")))?;
                    out.push(PublicKey {
                        kid: kid.to_owned(),
                        key: KeyMaterial::Ed25519(key),
                    });
                }
                _ => {}
            }
        }
        Ok(Self { keys: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_seal_and_open_only_with_the_same_master_and_context() {
        let key = RealmKey::generate();
        let master: [u8; 32] = rand::random();
        let sealed = key.seal(&master, "realm-a/kid").unwrap();
        assert!(
            !sealed.windows(32).any(|w| w == key.signing.as_bytes()),
            "no plaintext"
        );
        let back = RealmKey::open(&sealed, &master, "realm-a/kid").unwrap();
        assert_eq!(back.kid(), key.kid());
        assert!(RealmKey::open(&sealed, &master, "realm-b/kid").is_err());
        let other: [u8; 32] = rand::random();
        assert!(RealmKey::open(&sealed, &other, "realm-a/kid").is_err());
    }

    #[test]
    fn jwks_round_trips_and_kids_are_thumbprints() {
        let a = RealmKey::generate();
        let b = RealmKey::generate();
        assert_ne!(a.kid(), b.kid());
        let set = KeySet {
            keys: vec![a.public(), b.public()],
        };
        let back = KeySet::from_jwks(&set.to_jwks()).unwrap();
        assert_eq!(back, set);
    }
}
