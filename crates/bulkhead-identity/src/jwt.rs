//! Strict JWT (compact JWS) signing and verification.
//!
//! Verification trusts nothing in the token to choose how it is verified: the algorithm must
//! be in the caller's fixed allow-list (exact, case-sensitive — so `none`, `None`, `HS256`
//! never pass), the key is looked up by `kid` in the resolved realm's [`KeySet`] only, and its
//! type must match the algorithm. Headers that point elsewhere for keys (`jku`, `x5u`, `jwk`,
//! `x5c`) or demand extensions (`crit`) are refused. Claims are strictly typed: `exp`, `nbf`
//! and `iat` must be JSON integers; issuer, audience and (where configured) tenant must match;
//! access tokens must say `typ: at+jwt`, so ID tokens are not accepted as access tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value, json};

use crate::keys::{KeyMaterial, KeySet, RealmKey};
use crate::{Error, Result};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest clock skew a policy may allow.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// Signature algorithms Bulkhead can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    EdDSA,
    RS256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub algorithms: &'a [Alg],
    pub issuer: &'a str,
    pub audience: &'a str,
    /// When set, the `tenant` claim must equal it.
    pub tenant: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: u64,
    /// Allowed clock skew (capped at [`MAX_LEEWAY_SECS`]).
    pub leeway: u64,
}

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub subject: String,
    pub expires_at: u64,
    pub claims: Map<String, Value>,
}

impl Verified {
    /// String list claim (such as `roles`); absent or malformed gives an empty list.
    pub fn strings(&self, claim: &str) -> Vec<String> {
        match self.claims.get(claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

fn reject(reason: impl Into<String>) -> Error {
    Error::InvalidToken(reason.into())
}

fn kid_ok(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !kid.contains("..")
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>> {
    let bytes = B64
        .decode(part)
        .map_err(|_| reject(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(reject(format!("{what} is not a JSON object"))),
    }
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| reject(format!("{name} must be an integer"))),
    }
}

/// Verifies an access token against `keys` (the resolved realm's) and `policy`.
pub fn verify_access_token(token: &str, keys: &KeySet, policy: &Policy<'_>) -> Result<Verified> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(reject("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject("not a compact JWS"));
    };
    let header = decode_json(h, "header")?;
    for forbidden in ["jku", "x5u", "jwk", "x5c", "crit"] {
        if header.contains_key(forbidden) {
            return Err(reject(format!("header {forbidden} is not accepted")));
        }
    }
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| reject("no alg"))?;
    let alg = policy
        .algorithms
        .iter()
        .copied()
        .find(|a| a.name() == alg_name)
        .ok_or_else(|| reject(format!("algorithm {alg_name:?} is not allowed")))?;
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(reject("not an access token (typ must be at+jwt)"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| reject("no kid"))?;
    if !kid_ok(kid) {
        return Err(reject("malformed kid"));
    }
    let key = keys
        .find(kid)
        .ok_or_else(|| Error::UnknownKey(kid.to_owned()))?;
    let signature = B64
        .decode(s)
        .map_err(|_| reject("signature is not base64url"))?;
    let signed = &token[..h.len() + 1 + p.len()];
    match (alg, &key.key) {
        (Alg::EdDSA, KeyMaterial::Ed25519(k)) => {
            let sig = ed25519_dalek::Signature::from_slice(&signature)
                .map_err(|_| reject("bad signature"))?;
            k.verify_strict(signed.as_bytes(), &sig)
                .map_err(|_| reject("bad signature"))?;
        }
        (Alg::RS256, KeyMaterial::Rsa(k)) => {
            use rsa::signature::Verifier;
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
            let sig = rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                .map_err(|_| reject("bad signature"))?;
            vk.verify(signed.as_bytes(), &sig)
                .map_err(|_| reject("bad signature"))?;
        }
        _ => return Err(reject("key type does not match the algorithm")),
    }

    let claims = decode_json(p, "payload")?;
    let leeway = policy.leeway.min(MAX_LEEWAY_SECS);
    let exp = int_claim(&claims, "exp")?.ok_or_else(|| reject("no exp"))?;
    if policy.now > exp.saturating_add(leeway) {
        return Err(reject("expired"));
    }
    if let Some(nbf) = int_claim(&claims, "nbf")?
        && policy.now.saturating_add(leeway) < nbf
    {
        return Err(reject("not yet valid"));
    }
    int_claim(&claims, "iat")?;
    if claims.get("iss").and_then(Value::as_str) != Some(policy.issuer) {
        return Err(reject("wrong issuer"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == policy.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(policy.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(reject("wrong audience"));
    }
    if let Some(tenant) = policy.tenant
        && claims.get("tenant").and_then(Value::as_str) != Some(tenant)
    {
        return Err(reject("wrong tenant"));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| reject("no sub"))?
        .to_owned();
    Ok(Verified {
        subject,
        expires_at: exp,
        claims,
    })
}

/// Signs `claims` with a realm key as a token of type `typ` (`at+jwt` for access tokens,
/// `JWT` for ID tokens).
pub fn sign(key: &RealmKey, typ: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": typ, "kid": key.kid()});
    let h = B64.encode(header.to_string());
    let p = B64.encode(claims.to_string());
    let signing_input = format!("{h}.{p}");
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_428_000;

    fn realm() -> (RealmKey, KeySet) {
        let key = RealmKey::generate();
        let set = KeySet {
            keys: vec![key.public()],
        };
        (key, set)
    }

    fn claims() -> Value {
        json!({
            "iss": "https://acme.example/realms/acme", "aud": "helpdesk", "sub": "alice",
            "tenant": "acme", "exp": NOW + 300, "iat": NOW, "nbf": NOW, "roles": ["agent"],
        })
    }

    fn policy() -> Policy<'static> {
        Policy {
            algorithms: &[Alg::EdDSA],
            issuer: "https://acme.example/realms/acme",
            audience: "helpdesk",
            tenant: Some("acme"),
            now: NOW,
            leeway: 30,
        }
    }

    fn forge(header: Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string()),
            B64.encode(sig)
        )
    }

    #[test]
    fn a_good_token_verifies_with_its_claims() {
        let (key, set) = realm();
        let token = sign(&key, "at+jwt", &claims());
        let v = verify_access_token(&token, &set, &policy()).unwrap();
        assert_eq!(v.subject, "alice");
        assert_eq!(v.strings("roles"), ["agent"]);
    }

    #[test]
    fn a_token_from_another_realm_is_rejected() {
        let (key, _) = realm();
        let (_, other_set) = realm();
        let token = sign(&key, "at+jwt", &claims());
        assert!(matches!(
            verify_access_token(&token, &other_set, &policy()),
            Err(Error::UnknownKey(_))
        ));
    }

    #[test]
    fn another_realms_issuer_signed_with_this_key_is_rejected() {
        let (key, set) = realm();
        let mut c = claims();
        c["iss"] = json!("https://beta.example/realms/beta");
        let token = sign(&key, "at+jwt", &c);
        assert!(verify_access_token(&token, &set, &policy()).is_err());
    }

    #[test]
    fn wrong_audience_tenant_expiry_and_types_are_rejected() {
        let (key, set) = realm();
        let cases: Vec<(&str, Value)> = vec![
            ("aud", json!("other-app")),
            ("tenant", json!("beta")),
            ("exp", json!(NOW - 31)),
            ("exp", json!((NOW + 300).to_string())),
            ("nbf", json!(NOW + 31)),
            ("iat", json!("yesterday")),
            ("sub", json!("")),
        ];
        for (claim, value) in cases {
            let mut c = claims();
            c[claim] = value.clone();
            let token = sign(&key, "at+jwt", &c);
            assert!(
                verify_access_token(&token, &set, &policy()).is_err(),
                "{claim} = {value}"
            );
        }
        // Within the leeway is fine.
        let mut c = claims();
        c["exp"] = json!(NOW - 29);
        assert!(verify_access_token(&sign(&key, "at+jwt", &c), &set, &policy()).is_ok());
    }

    #[test]
    fn an_id_token_is_not_an_access_token() {
        let (key, set) = realm();
        for typ in ["JWT", "", "id+jwt"] {
            let token = sign(&key, typ, &claims());
            assert!(
                verify_access_token(&token, &set, &policy()).is_err(),
                "{typ}"
            );
        }
    }

    #[test]
    fn alg_none_in_any_casing_and_hs256_are_rejected() {
        let (key, set) = realm();
        for alg in [
            "none", "None", "NONE", "nOnE", "HS256", "eddsa", "RS256", "",
        ] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": key.kid()});
            for sig in [&b""[..], &[0u8; 64][..]] {
                let token = forge(header.clone(), &claims(), sig);
                assert!(
                    verify_access_token(&token, &set, &policy()).is_err(),
                    "{alg}"
                );
            }
        }
        // HS256 with the public key as the HMAC secret: the classic confusion attack.
        let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid()});
        let token = forge(header, &claims(), &[1u8; 32]);
        assert!(verify_access_token(&token, &set, &policy()).is_err());
    }

    /// A correctly signed token with an arbitrary header: only header checks can refuse it.
    fn signed_with_header(key: &RealmKey, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    #[test]
    fn key_pointing_headers_and_strange_kids_are_rejected() {
        let (key, set) = realm();
        let base = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid()});
        // Control: the same construction without the extra header verifies.
        assert!(
            verify_access_token(&signed_with_header(&key, &base, &claims()), &set, &policy())
                .is_ok()
        );
        for extra in ["jku", "x5u", "jwk", "x5c", "crit"] {
            let mut header = base.clone();
            header[extra] = json!("https://attacker.example/keys");
            let token = signed_with_header(&key, &header, &claims());
            let err = verify_access_token(&token, &set, &policy()).unwrap_err();
            assert!(err.to_string().contains(extra), "{extra}: {err}");
        }
        // Strange kids are refused as malformed, before any key lookup.
        for kid in [
            "../../etc/passwd",
            "a' OR '1'='1",
            "a/b",
            "",
            &"k".repeat(200),
        ] {
            let mut header = base.clone();
            header["kid"] = json!(kid);
            let token = signed_with_header(&key, &header, &claims());
            let err = verify_access_token(&token, &set, &policy()).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidToken(m) if m.contains("kid")),
                "{kid}: {err:?}"
            );
        }
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let (key, set) = realm();
        let token = sign(&key, "at+jwt", &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        let forged = B64.encode(c.to_string());
        parts[1] = &forged;
        assert!(verify_access_token(&parts.join("."), &set, &policy()).is_err());
        assert!(verify_access_token("a.b", &set, &policy()).is_err());
        assert!(verify_access_token("a.b.c.d", &set, &policy()).is_err());
        assert!(verify_access_token(&"a".repeat(9000), &set, &policy()).is_err());
    }

    /// An RS256 token signed by `openssl dgst -sha256 -sign` with a throw-away 2048-bit key;
    /// only its public half is here.
    const RSA_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6InJzYS0xIn0.eyJpc3MiOiJodHRwczovL2FjbWUuZXhhbXBsZS9yZWFsbXMvYWNtZSIsImF1ZCI6ImhlbHBkZXNrIiwic3ViIjoiYWxpY2UiLCJ0ZW5hbnQiOiJhY21lIiwiZXhwIjoxNzk1NDI4MzAwLCJpYXQiOjE3OTU0MjgwMDAsIm5iZiI6MTc5NTQyODAwMCwicm9sZXMiOlsiYWdlbnQiXX0.hzG_HZ-0iM4EnpaGPUqgAM3Q2sh7VEqTbGJk-S20WrhM23B9QRZbE9-sRKbK7WMezBe8uVeePYnkl356-QbF6n8YZRL2458G2RpAJuZrYOF0vLD3iUtL1WzUVwOtcUStpeQDZS7oKi5hzDUigbbaKyxZpsUOpf7bjqHzNNNChG0tL3OEkfKA1xulTO1UepA1lqJUm9sFlRnzrGOemzcTPEmQXElDiEEuJv88Pf3DAIHjc-XfAQwJOuMjEiE7KDQT_1SOrbosVU-YsxE-KuRF6EEhiafahus3ilYKQEU9pHbKUhi0fnNexHWhsxGF1DTxeY-FSqFX1yayXscvc-Gs4w";
    const RSA_N: &str = "2mW5qnK7hroqrohZvym2Mak68hqzdDA8_DxO_aWh3vn-xJauo52LSL2Tfftz8xdPnjfagwlN2Vx8WcxRfl-RaGUotDkC87c-Imjtam0KHynGTAxPf4k7uxAp5fUCnNTxcnXvQ5FvB32okJXlXs5FxpDEvukBg1NZyCs6tcbT22Uq2zCywdWvc0jdMTqsnpH3RNZKmhoad8PQaynHKx2R4gkwhFHD3UoIgXHTJrkEKENKnM3zPGkDYUCDkORYir7UoAU4fAjpR2JUlL1nL3Fm4d3pO3v8JTBea1IpYZcpOMJrwomHJnPtSxe6ehn2Kdzi4nnEnvXScEDe0gDfLkGl-w";

    fn rsa_set() -> KeySet {
        KeySet::from_jwks(&json!({"keys": [{"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": RSA_N, "e": "AQAB"}]}))
            .unwrap()
    }

    #[test]
    fn rs256_verifies_only_when_allowed_and_with_an_rsa_key() {
        let rs = Policy {
            algorithms: &[Alg::RS256],
            ..policy()
        };
        let v = verify_access_token(RSA_TOKEN, &rsa_set(), &rs).unwrap();
        assert_eq!(v.subject, "alice");
        // Not in the allow-list of a local realm.
        assert!(verify_access_token(RSA_TOKEN, &rsa_set(), &policy()).is_err());
        // An Ed25519 key under the same kid does not verify an RS256 token.
        let (key, _) = realm();
        let mut ed = key.public();
        ed.kid = "rsa-1".into();
        let wrong = KeySet { keys: vec![ed] };
        assert!(verify_access_token(RSA_TOKEN, &wrong, &rs).is_err());
        // A second RSA key with the same kid (another provider) does not verify it either.
        let mut other = rsa_set();
        if let KeyMaterial::Rsa(k) = &other.keys[0].key {
            use rsa::traits::PublicKeyParts;
            let n = k.n() + rsa::BigUint::from(2u8);
            other.keys[0].key = KeyMaterial::Rsa(rsa::RsaPublicKey::new(n, k.e().clone()).unwrap());
        }
        assert!(verify_access_token(RSA_TOKEN, &other, &rs).is_err());
    }
}
