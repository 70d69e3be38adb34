//! The binary's one `Config`: defaults → `bulkhead.toml` → `BULKHEAD_*` env → flags.
//!
//! Every field is documented here and in `bulkhead.example.toml`. Secrets live in [`Secret`]
//! (redacted in `Debug`) and can come from a file via the matching `*_file` setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Top-level keys that environment variables may set; other `BULKHEAD_*` variables (such as
/// `BULKHEAD_PG_BIN` or `BULKHEAD_CONFIG`) belong to other parts and are not config keys.
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "database_url_file",
    "data_dir",
    "log",
    "vault",
    "files",
    "serve",
    "search",
    "egress",
    "deployment",
    "compartments",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on. Default `127.0.0.1:8080`; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL of an existing PostgreSQL server for the platform database. When unset, `bulkhead up`
    /// runs a private cluster under `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    /// A file whose contents are `database_url` (for secrets mounted as files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_file: Option<PathBuf>,
    /// Directory for local state: the embedded PostgreSQL cluster (`up`), and by default the
    /// embedded vault, the master key, local files and search index copies.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Where app secrets live.
    #[serde(default)]
    pub vault: VaultConfig,
    /// Where app files live.
    #[serde(default)]
    pub files: FilesConfig,
    /// `bulkhead serve`: routing and worker supervision.
    #[serde(default)]
    pub serve: ServeConfig,
    /// Search: each worker keeps its own copy of every tenant's index under `dir`, followed
    /// from the tenant's outbox.
    #[serde(default)]
    pub search: bulkhead_search::SearchConfig,
    /// Outbound HTTP of app code: limits, resolver, each app's own allow-list (tenants' lists
    /// are in tenants.yaml). Deny by default.
    #[serde(default)]
    pub egress: bulkhead_egress::EgressSettings,
    /// The deployment profile: where this installation runs and what it promises.
    #[serde(default)]
    pub deployment: DeploymentProfile,
    /// Each worker's OS compartment: its own user, no capabilities, a Landlock ruleset and a
    /// seccomp filter.
    #[serde(default)]
    pub compartments: CompartmentsConfig,
}

/// `[compartments]`: the walls around each worker process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompartmentsConfig {
    /// `auto` (default): every wall the host offers, and a warning naming each one it does not
    /// (start-up log, `/readyz`, `bulkhead verify`); `required`: refuse to start without all of
    /// them; `off`: workers run as the server's user, unconfined (development only).
    #[serde(default)]
    pub mode: CompartmentMode,
    /// Lowest uid a worker runs as when the server runs as root (gid = uid). Default 61000.
    #[serde(default = "default_uid_min")]
    pub uid_min: u32,
    /// Highest uid a worker runs as. Default 61999. Keep the range free of other users.
    #[serde(default = "default_uid_max")]
    pub uid_max: u32,
}

impl Default for CompartmentsConfig {
    fn default() -> Self {
        Self {
            mode: CompartmentMode::default(),
            uid_min: default_uid_min(),
            uid_max: default_uid_max(),
        }
    }
}

fn default_uid_min() -> u32 {
    61000
}

fn default_uid_max() -> u32 {
    61999
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompartmentMode {
    #[default]
    Auto,
    Required,
    Off,
}

/// The deployment profile. Bulkhead makes no outbound connection of its own in any mode: no
/// telemetry, no update checks, nothing fetched that is not configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeploymentProfile {
    /// `on-premise` (default: the operator's own machines) or `private-cloud` (the operator's
    /// own cloud account).
    #[serde(default)]
    pub mode: DeploymentMode,
    /// Data residency label (e.g. `eu-central`), stored with every tenant that declares none
    /// of its own and shown by `bulkhead tenant show|list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_residency: Option<String>,
    /// Who runs the control plane: only `self-managed` (inside the operator's boundary).
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// App code's outbound traffic: only `deny-by-default` (allow-lists per tenant and app).
    #[serde(default)]
    pub egress: EgressPosture,
}

impl DeploymentProfile {
    /// A tenant's own residency label, else the deployment's.
    pub fn residency_or_default(&self, own: Option<String>) -> Option<String> {
        own.or_else(|| self.data_residency.clone())
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentMode {
    #[default]
    OnPremise,
    PrivateCloud,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPlane {
    #[default]
    SelfManaged,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EgressPosture {
    #[default]
    DenyByDefault,
}

/// Where app secrets live, and the platform master key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `embedded` (default): sealed files under `dir`, each app's under its own key.
    /// `openbao`: an OpenBao or HashiCorp Vault server (KV v2 + AppRole, one policy per app).
    #[serde(default)]
    pub backend: VaultBackend,
    /// Embedded vault directory. Default `<data_dir>/vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The platform master key (32 bytes): wraps embedded app keys and realm signing keys.
    /// Default `<data_dir>/master.key`; in production keep it off the data disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// OpenBao address, e.g. `https://bao.internal:8200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A file holding the platform's OpenBao token (allowed to manage policies, AppRoles and
    /// the apps' KV paths). Never handed to a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// OpenBao: the KV v2 mount holding the apps' secrets. Default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// OpenBao: the namespace the mount, policies and AppRoles are in (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// OpenBao over HTTPS with a private CA: a PEM file of the CA certificates the server's
    /// certificate must lead to (the system's roots are then not trusted). Handed to the
    /// workers as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VaultBackend {
    #[default]
    Embedded,
    Openbao,
}

impl Config {
    /// Where this server's workers keep their search index copies: `[search] dir`, or
    /// `<data_dir>/search` when it is left at its default.
    pub fn search_dir(&self) -> PathBuf {
        if self.search.dir == bulkhead_search::SearchConfig::default().dir {
            self.data_dir.join("search")
        } else {
            self.search.dir.clone()
        }
    }
}

impl VaultConfig {
    /// Where the apps' secrets are on OpenBao.
    pub fn location(&self) -> bulkhead_vault::openbao::Location {
        bulkhead_vault::openbao::Location {
            mount: self.mount.clone().unwrap_or_else(|| "secret".into()),
            namespace: self.namespace.clone(),
        }
    }
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("vault"))
    }

    /// The contents of `ca_file`, when set.
    pub fn ca_pem(&self) -> crate::error::Result<Option<String>> {
        self.ca_file
            .as_deref()
            .map(|f| {
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading vault.ca_file {}", f.display()))
            })
            .transpose()
    }

    pub fn master_key_file(&self, data_dir: &Path) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("master.key"))
    }
}

/// Where each app's bucket lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// `local` (default): one directory per app under `root`, mode 0700. `garage`: one bucket
    /// and one key per app on a Garage cluster, the key allowed on its own bucket only.
    #[serde(default)]
    pub backend: FilesBackend,
    /// Local backend root. Default `<data_dir>/files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Garage: the S3 endpoint apps use, e.g. `http://127.0.0.1:3900`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Garage: its `s3_region`. Default `garage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Garage: the admin API, e.g. `http://127.0.0.1:3903`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Garage: a file holding the admin API token (stays with the platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilesBackend {
    #[default]
    Local,
    Garage,
}

/// `bulkhead serve`: how requests reach apps and how workers are watched.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The URL clients use to reach this server; local realms' issuers live under it.
    /// Default `http://<listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Apps to run (default: every registered app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    /// Host names routed to an app, e.g. `{ "helpdesk.example.com" = "helpdesk" }`. Every app
    /// is also reachable under `/apps/<app>/`, and when only one app runs it gets every request.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, String>,
    /// Hosts that tenant resolution accepts, as in `up` (default `127.0.0.1`, `localhost`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Base domains whose subdomains name tenants (`acme.example.com`).
    #[serde(default)]
    pub base_domains: Vec<String>,
    /// Seconds between worker health checks. Default 5.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// Consecutive failed health checks before a worker is restarted. Default 3.
    #[serde(default = "default_health_failures")]
    pub health_failures: u32,
    /// A file holding the admin API's bearer token (at least 32 characters). Unset: no admin
    /// API (`/admin/v1/…`: tenant flags, settings, search rebuilds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Run each app's worker in its own network namespace whose only link leads to the egress
    /// proxy and relays to its PostgreSQL and vault (Linux, root). Also `serve --isolate-network`.
    #[serde(default)]
    pub isolate_network: bool,
    /// Seconds between runs of the verify canary (`bulkhead verify` inside `serve`, results on
    /// `/metrics`, new failures in the audit log). 0: off. Default 300.
    #[serde(default = "default_canary_interval")]
    pub canary_interval_secs: u64,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first); needs
    /// `tls_key_file`. Both files are read again on SIGHUP (a failed read keeps the old pair).
    /// Unset: plain HTTP, for running behind a reverse proxy that terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Reverse proxies in front of this server (addresses or networks, e.g. `["10.0.0.0/8"]`):
    /// from them, `X-Forwarded-For` names the client's address (login throttling) and
    /// `X-Forwarded-Host` its host (tenant resolution). From any other peer those headers are
    /// ignored. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// A file holding a token (at least 32 characters) that `/metrics` then requires as
    /// `Authorization: Bearer <token>`; unset, `/metrics` answers anyone who reaches the
    /// listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
}

fn default_canary_interval() -> u64 {
    300
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            apps: None,
            hosts: Default::default(),
            domains: Vec::new(),
            base_domains: Vec::new(),
            health_interval_secs: default_health_interval(),
            health_failures: default_health_failures(),
            admin_token_file: None,
            isolate_network: false,
            canary_interval_secs: default_canary_interval(),
            tls_cert_file: None,
            tls_key_file: None,
            trusted_proxies: Vec::new(),
            metrics_token_file: None,
        }
    }
}

fn default_health_interval() -> u64 {
    5
}

fn default_health_failures() -> u32 {
    3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors. Default `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `bulkhead=debug,info`. `RUST_LOG` wins when set.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: default_log_filter(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".bulkhead")
}

fn default_log_filter() -> String {
    "info".to_owned()
}

pub use bulkhead_model::Secret;

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the layers. A missing `path` is fine unless it was named explicitly.
    pub fn load(path: &Path, overrides: Overrides) -> crate::error::Result<Self> {
        let env = Env::prefixed("BULKHEAD_").split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            ENV_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        });
        let mut config: Self = Figment::new()
            .merge(Toml::file(path))
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .with_context(|| format!("invalid configuration (file {})", path.display()))?;
        if let Some(file) = config.database_url_file.take() {
            if config.database_url.is_some() {
                return Err(crate::error::Error::msg(
                    "invalid configuration: set database_url or database_url_file, not both",
                ));
            }
            let url = std::fs::read_to_string(&file)
                .with_context(|| format!("reading database_url_file {}", file.display()))?;
            config.database_url = Some(Secret::new(url.trim().to_owned()));
        }
        Ok(config)
    }
}

/// Starts `tracing` output on stderr in the configured format.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.filter.as_str()));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml` with `env` set, inside a figment jail (its own directory and environment).
    #[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type
    fn load(toml: &str, env: &[(&str, &str)], overrides: Overrides) -> Result<Config, String> {
        let mut out = Err(String::new());
        figment::Jail::expect_with(|jail| {
            jail.create_file("bulkhead.toml", toml)?;
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = Config::load(Path::new("bulkhead.toml"), overrides)
                .map_err(|e| bulkhead_model::error_chain(&e));
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = load("", &[], Overrides::default()).unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.data_dir, PathBuf::from(".bulkhead"));
        assert!(config.database_url.is_none());
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn file_then_env_then_flags_override_defaults() {
        let toml = "listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/bulkhead\"\n[log]\nformat = \"json\"\n";
        let config = load(toml, &[], Overrides::default()).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.log.format, LogFormat::Json);

        let env = [
            ("BULKHEAD_LISTEN", "127.0.0.1:9001"),
            ("BULKHEAD_LOG__FILTER", "debug"),
        ];
        let config = load(toml, &env, Overrides::default()).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.log.filter, "debug");

        let flags = Overrides {
            listen: Some("127.0.0.1:9002".parse().unwrap()),
            ..Overrides::default()
        };
        let config = load(toml, &env, flags).unwrap();
        assert_eq!(config.listen.port(), 9002);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/bulkhead"));
    }

    #[test]
    fn other_bulkhead_variables_are_not_config_keys() {
        let env = [
            ("BULKHEAD_PG_BIN", "/opt/pg/bin"),
            ("BULKHEAD_CONFIG", "x.toml"),
        ];
        assert!(load("", &env, Overrides::default()).is_ok());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let err = load("lisen = \"127.0.0.1:1\"\n", &[], Overrides::default()).unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn the_example_configuration_loads() {
        let example = include_str!("../../../bulkhead.example.toml");
        let config = load(example, &[], Overrides::default()).unwrap();
        assert_eq!(config.vault.backend, VaultBackend::Embedded);
        assert_eq!(config.files.backend, FilesBackend::Local);
        assert_eq!(config.serve.health_failures, 3);
        assert_eq!(config.deployment.mode, DeploymentMode::OnPremise);
        assert_eq!(config.egress.max_redirects, 5);
    }

    #[test]
    fn the_deployment_profile_accepts_only_what_it_can_keep() {
        let toml = "[deployment]\nmode = \"private-cloud\"\ndata_residency = \"eu-central\"\n";
        let config = load(toml, &[], Overrides::default()).unwrap();
        assert_eq!(config.deployment.mode, DeploymentMode::PrivateCloud);
        assert_eq!(
            config.deployment.data_residency.as_deref(),
            Some("eu-central")
        );
        for bad in [
            "[deployment]\ncontrol_plane = \"vendor-managed\"\n",
            "[deployment]\negress = \"allow-by-default\"\n",
            "[deployment]\nmode = \"saas\"\n",
        ] {
            let err = load(bad, &[], Overrides::default()).unwrap_err();
            assert!(err.contains("deployment"), "{bad}: {err}");
        }
        let env = [("BULKHEAD_EGRESS__MAX_REDIRECTS", "0")];
        assert_eq!(
            load("", &env, Overrides::default())
                .unwrap()
                .egress
                .max_redirects,
            0
        );
    }

    #[test]
    fn vault_and_serve_sections_load_with_env_overrides() {
        let toml = "[vault]\nbackend = \"openbao\"\naddress = \"http://127.0.0.1:8200\"\n[serve.hosts]\n\"helpdesk.example.com\" = \"helpdesk\"\n";
        let env = [("BULKHEAD_SERVE__HEALTH_FAILURES", "7")];
        let config = load(toml, &env, Overrides::default()).unwrap();
        assert_eq!(config.vault.backend, VaultBackend::Openbao);
        assert_eq!(config.serve.hosts["helpdesk.example.com"], "helpdesk");
        assert_eq!(config.serve.health_failures, 7);
        assert_eq!(config.serve.health_interval_secs, 5);
        let err = load("[vault]\nbackend = \"s3\"\n", &[], Overrides::default()).unwrap_err();
        assert!(err.contains("backend"), "{err}");
    }

    #[test]
    fn the_database_url_is_redacted_in_debug() {
        let flags = Overrides {
            database_url: Some(Secret::new("postgres://u:hunter2@h/db")),
            ..Overrides::default()
        };
        let config = load("", &[], flags).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn database_url_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "postgres://u:p@h/db\n").unwrap();
        let env = [("BULKHEAD_DATABASE_URL_FILE", secret.to_str().unwrap())];
        let config = load("", &env, Overrides::default()).unwrap();
        assert_eq!(config.database_url.unwrap().expose(), "postgres://u:p@h/db");
    }
}
