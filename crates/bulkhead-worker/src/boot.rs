//! What a worker reads before it serves: its boot credential (stdin, environment or a file),
//! and its secrets and configuration from the app's own vault space, with retries while the
//! vault comes up.

use std::path::PathBuf;
use std::time::Duration;

use bulkhead_files::AppBucket;
use bulkhead_model::AppId;
use bulkhead_model::worker::{FILES_S3, FILES_SIGNING_KEY, WORKER_CONFIG, WorkerConfig, env};
use bulkhead_runtime::files::{DEFAULT_MAX_BYTES, FilesApi};
use bulkhead_vault::{BootCredential, Secret, VaultReader};

use crate::{Error, Result};

/// The boot credential: the first line of stdin when `BULKHEAD_BOOT_CREDENTIAL_STDIN=1` (how
/// a supervisor hands it over), else `BULKHEAD_BOOT_CREDENTIAL`, else the file named by
/// `BULKHEAD_BOOT_CREDENTIAL_FILE`.
pub fn credential_from_env() -> Result<BootCredential> {
    let boot = |m: String| Error::Boot(m);
    let raw = if std::env::var_os(env::BOOT_CREDENTIAL_STDIN).is_some() {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
            .map_err(|e| boot(format!("reading the boot credential from stdin: {e}")))?;
        line
    } else {
        match std::env::var(env::BOOT_CREDENTIAL) {
            Ok(v) => v,
            Err(_) => {
                let file = std::env::var_os(env::BOOT_CREDENTIAL_FILE).ok_or_else(|| {
                    boot(format!(
                        "set {} or {} to the app's boot credential",
                        env::BOOT_CREDENTIAL,
                        env::BOOT_CREDENTIAL_FILE
                    ))
                })?;
                std::fs::read_to_string(&file)
                    .map_err(|e| boot(format!("reading {}: {e}", PathBuf::from(&file).display())))?
            }
        }
    };
    BootCredential::parse(&raw).map_err(|e| boot(e.to_string()))
}

/// With `BULKHEAD_EXIT_WITH_PARENT`, exits the process when stdin closes: the supervisor holds
/// the other end, so however it ends, the worker does not linger.
pub fn exit_with_parent() {
    if std::env::var_os(env::EXIT_WITH_PARENT).is_some() {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
}

/// Reads `name` from the vault, retrying with exponential backoff while it is unreachable. A
/// refused credential fails at once: waiting will not make it better.
pub async fn read_with_retry(
    reader: &dyn VaultReader,
    name: &str,
    attempts: u32,
) -> Result<Secret> {
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        match reader.get(name).await {
            Ok(secret) => return Ok(secret),
            Err(e @ (bulkhead_vault::Error::Denied | bulkhead_vault::Error::BadCredential(_))) => {
                return Err(Error::Vault(format!(
                    "the vault refused this worker's boot credential for {name}: {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "vault not readable yet; retrying");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    Err(Error::Vault(format!(
        "the vault stayed unreadable after {attempts} attempts: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The worker's configuration from the app's vault space.
pub async fn load_config(reader: &dyn VaultReader, attempts: u32) -> Result<WorkerConfig> {
    let raw = read_with_retry(reader, WORKER_CONFIG, attempts).await?;
    parse_config(raw.expose())
}

pub(crate) fn parse_config(raw: &str) -> Result<WorkerConfig> {
    serde_json::from_str(raw)
        .map_err(|e| Error::Config(format!("the worker configuration in the vault: {e}")))
}

/// The app's files: its S3 bucket when its vault space holds one, else its local directory;
/// download links signed with the app's key. `None` when neither is configured.
pub async fn files(
    reader: &dyn VaultReader,
    config: &WorkerConfig,
    app: &AppId,
    attempts: u32,
) -> Result<Option<FilesApi>> {
    let bucket = match reader.get(FILES_S3).await {
        Ok(raw) => {
            let bad = |e: String| Error::Config(format!("the app's bucket in the vault: {e}"));
            let mut s3: bulkhead_files::S3Bucket =
                serde_json::from_str(raw.expose()).map_err(|e| bad(e.to_string()))?;
            // In a network namespace the object store is reached through the relay on its link.
            if let Ok(host) = std::env::var(env::UPSTREAM_HOST) {
                let mut url = reqwest::Url::parse(&s3.endpoint).map_err(|e| bad(e.to_string()))?;
                url.set_host(Some(&host)).map_err(|e| bad(e.to_string()))?;
                s3.endpoint = url.as_str().trim_end_matches('/').to_owned();
            }
            Some(AppBucket::s3(app, &s3)?)
        }
        Err(bulkhead_vault::Error::NotFound(_)) => match &config.files_root {
            Some(root) => Some(AppBucket::local(root, app)?),
            None => None,
        },
        Err(e) => {
            return Err(Error::Vault(format!(
                "reading the app's bucket from the vault: {e}"
            )));
        }
    };
    let Some(bucket) = bucket else {
        return Ok(None);
    };
    let key = read_with_retry(reader, FILES_SIGNING_KEY, attempts).await?;
    let key = bulkhead_vault::decode_key(key.expose())
        .map_err(|e| Error::Config(format!("the app's file signing key: {e}")))?;
    Ok(Some(FilesApi::new(bucket, key, DEFAULT_MAX_BYTES)))
}
