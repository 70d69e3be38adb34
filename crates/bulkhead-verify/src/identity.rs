//! Identity checks: unique realm keys, probe tokens of one realm refused by every other, and
//! forged tokens (`alg: none`, HS256 with a public key) refused everywhere.

use base64::Engine;
use bulkhead_model::{AppManifest, TenantId};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Deployment;
use crate::data::TenantInfo;
use crate::report::Checks;
use crate::{Error, Result};

pub(crate) async fn identity_checks(
    checks: &mut Checks,
    d: &Deployment,
    apps: &[(AppManifest, Vec<TenantInfo>)],
) -> Result<()> {
    let pool = bulkhead_control::platform_pool(d.platform_db.clone()).map_err(Error::Realms)?;
    let store = bulkhead_identity::store::RealmStore::new(pool, d.master_key, Default::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Local realms: tenants whose identity is `local` in any app (a realm per tenant id).
    let mut local: Vec<TenantId> = Vec::new();
    for (_, tenants) in apps {
        for t in tenants {
            if matches!(
                t.record.identity,
                bulkhead_model::tenants::IdentitySpec::Local { .. }
            ) && !local.contains(&t.id)
            {
                local.push(t.id.clone());
            }
        }
    }
    let mut keys: Vec<(TenantId, String, Vec<u8>)> = Vec::new();
    for t in &local {
        if let Ok(set) = store.keyset(t, now).await {
            for k in set.keys {
                if let bulkhead_identity::keys::KeyMaterial::Ed25519(v) = &k.key {
                    keys.push((t.clone(), k.kid.clone(), v.to_bytes().to_vec()));
                }
            }
        }
    }
    let mut shared = Vec::new();
    for (i, (t, kid, bytes)) in keys.iter().enumerate() {
        for (u, kid2, bytes2) in &keys[i + 1..] {
            if t != u && (bytes == bytes2 || kid == kid2) {
                shared.push(format!("{t} and {u} share key {kid}"));
            }
        }
    }
    checks.add(
        "identity.keys_unique",
        "platform",
        shared.is_empty(),
        if shared.is_empty() {
            format!(
                "{} realm keys across {} local realms, none shared",
                keys.len(),
                local.len()
            )
        } else {
            shared.join("; ")
        },
    );
    let audience = "bulkhead-verify";
    for t in &local {
        let scope = t.to_string();
        let token = match store.sign_probe(t, audience, now).await {
            Ok(tok) => tok,
            Err(e) => {
                checks.add(
                    "identity.cross_tenant_token",
                    &scope,
                    false,
                    format!("cannot sign a probe: {e}"),
                );
                continue;
            }
        };
        let own = store.verify(t, &token, audience, now).await.is_ok();
        let mut accepted = Vec::new();
        for other in local.iter().filter(|o| *o != t) {
            if store.verify(other, &token, audience, now).await.is_ok() {
                accepted.push(other.to_string());
            }
        }
        checks.add(
            "identity.cross_tenant_token",
            &scope,
            own && accepted.is_empty(),
            if !own {
                "the realm rejects its own probe token (cannot conclude)".to_owned()
            } else if accepted.is_empty() {
                format!(
                    "a probe token of {t} is rejected by the {} other realms",
                    local.len() - 1
                )
            } else {
                format!("accepted by: {}", accepted.join(", "))
            },
        );
        // Forgeries: `alg: none` and HS256 keyed with the realm's public key.
        let mut parts = token.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
            continue;
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut head: Value = serde_json::from_slice(&b64.decode(header)?)?;
        head["alg"] = json!("none");
        let none = format!("{}.{payload}.", b64.encode(head.to_string()));
        head["alg"] = json!("HS256");
        let hs_input = format!("{}.{payload}", b64.encode(head.to_string()));
        let public = keys
            .iter()
            .find(|(u, _, _)| u == t)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_default();
        let mac = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(&public)
                .map_err(|e| Error::Realms(e.to_string()))?;
            m.update(hs_input.as_bytes());
            m.finalize().into_bytes()
        };
        let hs = format!("{hs_input}.{}", b64.encode(mac));
        let none_ok = store.verify(t, &none, audience, now).await.is_ok();
        let hs_ok = store.verify(t, &hs, audience, now).await.is_ok();
        checks.add(
            "identity.algorithms",
            &scope,
            !none_ok && !hs_ok,
            format!(
                "alg none accepted: {none_ok}; HS256 keyed with the public key accepted: {hs_ok}"
            ),
        );
    }
    Ok(())
}
