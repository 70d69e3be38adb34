//! The report: findings with evidence, its summary, and its Ed25519 signature (the key derived
//! from the master key, so an auditor can check a report against the installation's public key).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One check on one app or tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: String,
    /// `app`, `app/tenant` or `platform`.
    pub scope: String,
    pub status: Status,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub alg: String,
    /// Hex of the Ed25519 public key.
    pub public_key: String,
    /// Base64 of the signature over the report without this field (canonical JSON).
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub generated_at: u64,
    pub deployment: Value,
    pub findings: Vec<Finding>,
    pub summary: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

pub const FORMAT: &str = "bulkhead-verify/1";

pub(crate) struct Checks {
    pub(crate) findings: Vec<Finding>,
}

impl Checks {
    pub(crate) fn add(
        &mut self,
        check: &str,
        scope: impl Into<String>,
        ok: bool,
        evidence: impl Into<String>,
    ) {
        self.findings.push(Finding {
            check: check.to_owned(),
            scope: scope.into(),
            status: if ok { Status::Pass } else { Status::Fail },
            evidence: evidence.into(),
        });
    }

    pub(crate) fn skip(&mut self, check: &str, scope: impl Into<String>, why: impl Into<String>) {
        self.findings.push(Finding {
            check: check.to_owned(),
            scope: scope.into(),
            status: Status::Skip,
            evidence: why.into(),
        });
    }
}

/// The platform's verification key: Ed25519 from a hash of the master key (domain-separated).
fn signing_key(master: &[u8; 32]) -> ed25519_dalek::SigningKey {
    let mut h = Sha256::new();
    h.update(b"bulkhead verify report signing key v1");
    h.update(master);
    ed25519_dalek::SigningKey::from_bytes(&h.finalize().into())
}

/// The platform's verification public key (hex), what auditors check reports against.
pub fn public_key(master: &[u8; 32]) -> String {
    hex(signing_key(master).verifying_key().as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a signature covers: the report without its signature, as compact JSON.
fn signed_bytes(report: &Report) -> Result<Vec<u8>> {
    let mut unsigned = report.clone();
    unsigned.signature = None;
    Ok(serde_json::to_vec(&unsigned)?)
}

/// Signs `report` with the platform's verification key.
pub fn sign(report: &mut Report, master: &[u8; 32]) -> Result<()> {
    use ed25519_dalek::Signer;
    let key = signing_key(master);
    let sig = key.sign(&signed_bytes(report)?);
    report.signature = Some(Signature {
        alg: "Ed25519".into(),
        public_key: hex(key.verifying_key().as_bytes()),
        value: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    });
    Ok(())
}

/// Whether `report` carries a valid signature by `public_key` (hex).
pub fn check_signature(report: &Report, public_key: &str) -> Result<bool> {
    use ed25519_dalek::Verifier;
    let Some(sig) = &report.signature else {
        return Err(Error::Report("the report is not signed".into()));
    };
    if !sig.public_key.eq_ignore_ascii_case(public_key) {
        return Ok(false);
    }
    let key_bytes: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(public_key.get(i * 2..i * 2 + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::Report("the public key is 64 hex characters".into()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)?;
    let raw = base64::engine::general_purpose::STANDARD.decode(&sig.value)?;
    let signature = ed25519_dalek::Signature::from_slice(&raw)?;
    Ok(key.verify(&signed_bytes(report)?, &signature).is_ok())
}
