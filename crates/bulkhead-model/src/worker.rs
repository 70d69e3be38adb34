//! The worker contract: what the platform hands an app's worker process and where the worker
//! finds it — the configuration kept in the app's own vault space, the vault paths of the
//! app's secrets, the environment variables the supervisor sets, and the readiness line the
//! worker writes. Defined once here; the control plane writes it, the supervisor and the
//! worker read it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::options::TenantOptions;
use crate::tenants::{IdentitySpec, NetworkSpec};
use crate::{AppManifest, IsolationLevel, TenantId};

/// Vault path of the worker's configuration ([`WorkerConfig`] as JSON).
pub const WORKER_CONFIG: &str = "worker/config";
/// Vault path of the app's runtime database password.
pub const RUNTIME_PASSWORD: &str = "db/runtime-password";
/// Vault path of the app's cross-tenant role password.
pub const CROSS_TENANT_PASSWORD: &str = "db/cross-tenant-password";
/// Vault path of the app's S3 bucket and key (JSON of `bulkhead_files::S3Bucket`).
pub const FILES_S3: &str = "files/s3";
/// Vault path of the key that signs the app's file download links (64 hex characters).
pub const FILES_SIGNING_KEY: &str = "files/signing-key";

/// Vault path of an app bundle's content ([`crate::bundle::Bundle::to_json`]), by digest: a
/// new version is written beside the old one, so a worker switching over never reads half.
pub fn bundle_path(digest: &str) -> String {
    format!("bundle/{}", digest.trim_start_matches("sha256:"))
}

/// Largest piece of a bundle's content kept in one vault entry. OpenBao's raft storage
/// refuses entries over 1 MiB by default (`max_entry_size`), and a value is stored
/// JSON-escaped inside the KV engine's own envelope; half of the bound leaves that room.
pub const BUNDLE_PART_BYTES: usize = 512 * 1024;

/// Most pieces a bundle is cut into: its largest content (`bundle::MAX_BYTES`, base64 in JSON)
/// over [`BUNDLE_PART_BYTES`], with room to spare. A head naming more is refused as corrupt.
pub const MAX_BUNDLE_PARTS: usize = 32;

/// Vault path of piece `index` of a bundle whose content does not fit one entry.
pub fn bundle_part_path(digest: &str, index: usize) -> String {
    format!("{}/part/{index}", bundle_path(digest))
}

/// What [`bundle_path`] holds: the content itself when it fits one entry, or the number of
/// pieces ([`bundle_part_path`]) it was cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleHead {
    Whole,
    Parts(usize),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartsHead {
    bundle_parts: usize,
}

impl BundleHead {
    /// The head and the pieces for `content`; pieces are written first, the head last, so a
    /// worker that finds the head finds every piece.
    pub fn split(content: &str) -> (String, Vec<String>) {
        if content.len() <= BUNDLE_PART_BYTES {
            return (content.to_owned(), Vec::new());
        }
        let mut parts = Vec::new();
        let mut rest = content;
        while !rest.is_empty() {
            let mut end = rest.len().min(BUNDLE_PART_BYTES);
            // Cut between characters (a bundle's JSON is ASCII but for its file names).
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            parts.push(piece.to_owned());
            rest = tail;
        }
        let head = serde_json::to_string(&PartsHead {
            bundle_parts: parts.len(),
        })
        .unwrap_or_default();
        (head, parts)
    }

    /// Reads what [`bundle_path`] held (a whole bundle is its own head).
    pub fn read(raw: &str) -> Self {
        match serde_json::from_str::<PartsHead>(raw) {
            Ok(h) => Self::Parts(h.bundle_parts),
            Err(_) => Self::Whole,
        }
    }

    /// The vault paths of the pieces this head names, in order; none for a whole bundle. A
    /// head naming more than [`MAX_BUNDLE_PARTS`] is refused as corrupt.
    pub fn part_paths(self, digest: &str) -> Result<Vec<String>, String> {
        match self {
            Self::Whole => Ok(Vec::new()),
            Self::Parts(n) if n <= MAX_BUNDLE_PARTS => {
                Ok((0..n).map(|i| bundle_part_path(digest, i)).collect())
            }
            Self::Parts(n) => Err(format!(
                "bundle {digest}: {n} pieces, at most {MAX_BUNDLE_PARTS}"
            )),
        }
    }
}

/// Vault path of a `database`-level tenant's login password.
pub fn tenant_password_path(tenant: &TenantId) -> String {
    format!("db/tenant/{tenant}")
}

/// Vault path of a tenant's secret setting.
pub fn setting_secret_path(tenant: &TenantId, name: &str) -> String {
    format!("settings/{tenant}/{name}")
}

/// Environment variables a supervisor sets for a worker (nothing else of its own reaches it).
pub mod env {
    /// `1`: the boot credential is the first line of stdin.
    pub const BOOT_CREDENTIAL_STDIN: &str = "BULKHEAD_BOOT_CREDENTIAL_STDIN";
    /// The boot credential itself (systemd `LoadCredential` setups use the file form).
    pub const BOOT_CREDENTIAL: &str = "BULKHEAD_BOOT_CREDENTIAL";
    /// A file holding the boot credential.
    pub const BOOT_CREDENTIAL_FILE: &str = "BULKHEAD_BOOT_CREDENTIAL_FILE";
    /// `1`: exit when stdin closes (the supervisor went away).
    pub const EXIT_WITH_PARENT: &str = "BULKHEAD_EXIT_WITH_PARENT";
    /// `1`: write the [`super::Ready`] line on stdout once listening.
    pub const READY_STDOUT: &str = "BULKHEAD_READY_STDOUT";
    /// The OpenBao / Vault server.
    pub const VAULT_ADDR: &str = "BULKHEAD_VAULT_ADDR";
    /// The OpenBao KV v2 mount holding the apps' secrets (default `secret`).
    pub const VAULT_MOUNT: &str = "BULKHEAD_VAULT_MOUNT";
    /// The OpenBao namespace, when the apps' secrets live in one.
    pub const VAULT_NAMESPACE: &str = "BULKHEAD_VAULT_NAMESPACE";
    /// The CA certificates (PEM text, not a path: a worker's compartment cannot read the
    /// platform's files) that the OpenBao server's certificate must lead to.
    pub const VAULT_CA_PEM: &str = "BULKHEAD_VAULT_CA_PEM";
    /// In a network namespace: the relay host for the database, vault and S3.
    pub const UPSTREAM_HOST: &str = "BULKHEAD_UPSTREAM_HOST";
    /// The gateway's egress CONNECT proxy and this app's token for it.
    pub const EGRESS_PROXY: &str = "BULKHEAD_EGRESS_PROXY";
    pub const EGRESS_PROXY_TOKEN: &str = "BULKHEAD_EGRESS_PROXY_TOKEN";
    /// `1`: app code's requests also go through the proxy (no direct route out).
    pub const EGRESS_VIA_PROXY: &str = "BULKHEAD_EGRESS_VIA_PROXY";
    /// `text` or `json`: the worker logs as the server does.
    pub const LOG_FORMAT: &str = "BULKHEAD_LOG__FORMAT";
}

/// The line a worker writes on stdout once it listens: its address, as JSON. The supervisor
/// reads it from the pipe; nothing is learned from a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub listening: SocketAddr,
    /// The accessor of the worker's vault session (OpenBao token), so the supervisor can
    /// revoke it when this worker is replaced. Not a secret: it cannot read anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_session: Option<String>,
}

impl Ready {
    /// The line to write, newline included.
    pub fn line(&self) -> String {
        format!(
            "{}\n",
            serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
        )
    }

    /// Reads a readiness line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// What a worker needs to serve its app, kept in the app's own vault space: no platform
/// credential, no other app's anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub db_host: String,
    pub db_port: u16,
    /// TLS to the cluster as the platform has it (`sslmode`, root certificates; never the
    /// platform's client key).
    #[serde(default)]
    pub db_tls: crate::pgtls::PgTls,
    /// The platform URL's other hosts, tried in order after `db_host` (failover).
    #[serde(default)]
    pub db_more_hosts: Vec<(String, u16)>,
    /// `target_session_attrs=read-write`: only a server that accepts writes will do.
    #[serde(default)]
    pub db_read_write: bool,
    pub database: String,
    pub runtime_role: String,
    pub manifest: AppManifest,
    /// Where tenants' local realms publish their keys (`{base}/realms/{tenant}/…`).
    pub realm_base_url: String,
    /// The app's tenants as the registry has them; workers reload this while they run.
    pub tenants: Vec<WorkerTenant>,
    /// Hosts the worker accepts (as the gateway does), so it resolves tenants the same way.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Base domains whose subdomains are tenants.
    #[serde(default)]
    pub base_domains: Vec<String>,
    /// The local files root (`<root>/<app>/`) when the app has no S3 bucket in its vault space.
    #[serde(default)]
    pub files_root: Option<std::path::PathBuf>,
    /// The active bundle (the app's functions and front-end), when one is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<crate::bundle::BundleRef>,
}

/// One tenant as its app's workers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerTenant {
    pub id: TenantId,
    pub level: IsolationLevel,
    /// A suspended tenant resolves like an unknown one.
    #[serde(default)]
    pub suspended: bool,
    /// Where the tenant's users sign in: its local realm or its own OpenID provider.
    pub identity: IdentitySpec,
    /// Flag overrides and non-secret setting overrides.
    #[serde(default)]
    pub options: TenantOptions,
    /// Names of secret settings the tenant has set (values in the app's vault space).
    #[serde(default)]
    pub secret_settings: Vec<String>,
    /// Where the tenant's app code may connect (tenants.yaml `network:`); deny by default.
    #[serde(default)]
    pub network: NetworkSpec,
    /// When the tenant was created (microseconds since 1970): a tenant deleted and created
    /// again under the same id is another incarnation, and nothing of the old one is kept —
    /// pools, passwords, index copies, its own worker.
    #[serde(default)]
    pub incarnation: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_line_round_trips_and_log_lines_are_not_it() {
        let r = Ready {
            listening: "127.0.0.1:4321".parse().unwrap(),
            vault_session: None,
        };
        assert_eq!(Ready::parse(&r.line()), Some(r.clone()));
        let with = Ready {
            vault_session: Some("accessor-1".into()),
            ..r
        };
        assert_eq!(Ready::parse(&with.line()), Some(with));
        assert_eq!(
            Ready::parse("INFO worker listening on http://127.0.0.1:1"),
            None
        );
    }

    #[test]
    fn a_large_bundle_is_cut_into_pieces_that_each_fit_an_entry() {
        let bundle = crate::bundle::Bundle::new(
            [
                ("manifest.yaml".to_owned(), b"app: big\n".to_vec()),
                ("public/big.bin".to_owned(), vec![7u8; 3 * 1024 * 1024]),
            ]
            .into(),
        )
        .unwrap();
        let content = bundle.to_json();
        let (head, parts) = BundleHead::split(&content);
        assert!(parts.len() > 1 && parts.len() <= MAX_BUNDLE_PARTS);
        assert!(parts.iter().all(|p| p.len() <= BUNDLE_PART_BYTES));
        assert_eq!(BundleHead::read(&head), BundleHead::Parts(parts.len()));
        assert_eq!(
            BundleHead::read(&head).part_paths("sha256:ab").unwrap(),
            (0..parts.len())
                .map(|i| format!("bundle/ab/part/{i}"))
                .collect::<Vec<_>>()
        );
        assert!(
            BundleHead::Parts(MAX_BUNDLE_PARTS + 1)
                .part_paths("ab")
                .is_err()
        );
        let joined = parts.concat();
        assert_eq!(
            crate::bundle::Bundle::from_json(&joined).unwrap().digest(),
            bundle.digest()
        );
        // A small one stays whole, and reads back as itself.
        let (head, parts) = BundleHead::split("{\"files\":{}}");
        assert!(parts.is_empty());
        assert_eq!(BundleHead::read(&head), BundleHead::Whole);
        assert_eq!(BundleHead::Whole.part_paths("ab"), Ok(Vec::new()));
    }

    proptest::proptest! {
        #[test]
        fn cutting_any_text_keeps_it_whole(s in "\\PC{0,64}", repeat in 1usize..40_000) {
            let content = s.repeat(repeat);
            let (head, parts) = BundleHead::split(&content);
            proptest::prop_assert!(parts.iter().all(|p| p.len() <= BUNDLE_PART_BYTES));
            match BundleHead::read(&head) {
                BundleHead::Parts(n) => {
                    proptest::prop_assert_eq!(n, parts.len());
                    proptest::prop_assert_eq!(parts.concat(), content);
                }
                BundleHead::Whole => {
                    proptest::prop_assert!(parts.is_empty());
                    proptest::prop_assert_eq!(head, content);
                }
            }
        }
    }
}
