//! `bulkhead worker --app X`: parses the arguments and runs [`bulkhead_worker::launch`]. The
//! worker itself lives in `bulkhead-worker`, which cannot reach the control plane.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bulkhead_egress::EgressSettings;
use bulkhead_model::AppId;
use bulkhead_model::worker::env;
use bulkhead_search::SearchConfig;
use bulkhead_worker::WorkerSettings;
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app this worker serves.
    #[arg(long)]
    app: String,
    /// Serve only this tenant of the app: a `database` tenant's own worker, booted into the
    /// tenant's vault space (`<app>--<tenant>`), holding only its database credential.
    #[arg(long)]
    tenant: Option<String>,
    /// The embedded vault directory (the app's secrets, sealed under its own key).
    #[arg(long, default_value = ".bulkhead/vault")]
    vault_dir: PathBuf,
    /// The OpenBao / Vault server, for a boot credential of the form approle:<role>:<secret>.
    #[arg(long, env = env::VAULT_ADDR)]
    vault_addr: Option<String>,
    /// The OpenBao KV v2 mount holding the apps' secrets.
    #[arg(long, env = env::VAULT_MOUNT, default_value = "secret")]
    vault_mount: String,
    /// The OpenBao namespace of the apps' secrets, if any.
    #[arg(long, env = env::VAULT_NAMESPACE)]
    vault_namespace: Option<String>,
    /// The CA certificates (PEM text) the OpenBao server's certificate must lead to; the
    /// system's roots are not trusted then.
    #[arg(long, env = env::VAULT_CA_PEM, hide_env_values = true)]
    vault_ca_pem: Option<String>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// How many times to try the vault before giving up (with exponential backoff).
    #[arg(long, default_value_t = 6)]
    vault_attempts: u32,
    /// How often to re-read the configuration (tenants created, suspended, deleted).
    #[arg(long, default_value_t = 2000)]
    reload_ms: u64,
    /// Search settings as JSON (the `[search]` section of bulkhead.toml); defaults otherwise.
    #[arg(long, value_parser = parse_search_config)]
    search_config: Option<SearchConfig>,
    /// Egress settings as JSON (the `[egress]` section of bulkhead.toml); defaults otherwise.
    #[arg(long, value_parser = parse_egress_config)]
    egress_config: Option<EgressSettings>,
}

fn parse_egress_config(raw: &str) -> Result<EgressSettings, String> {
    serde_json::from_str(raw).map_err(|e| format!("--egress-config: {e}"))
}

fn parse_search_config(raw: &str) -> Result<SearchConfig, String> {
    serde_json::from_str(raw).map_err(|e| format!("--search-config: {e}"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The worker logs as the server does (`[log] format`, handed over by the supervisor).
    let format = match std::env::var(env::LOG_FORMAT).as_deref() {
        Ok("json") => bulkhead_server::config::LogFormat::Json,
        _ => bulkhead_server::config::LogFormat::Text,
    };
    bulkhead_server::config::init_logging(&bulkhead_server::config::LogConfig {
        format,
        ..Default::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let boot = bulkhead_worker::boot::credential_from_env()?;
    bulkhead_worker::boot::exit_with_parent();
    let settings = WorkerSettings {
        app: AppId::parse(&args.app)?,
        tenant: args
            .tenant
            .as_deref()
            .map(bulkhead_model::TenantId::parse)
            .transpose()?,
        boot,
        vault_dir: args.vault_dir,
        vault_addr: args.vault_addr,
        vault_ca_pem: args.vault_ca_pem,
        vault_location: bulkhead_worker::VaultLocation {
            mount: args.vault_mount,
            namespace: args.vault_namespace,
        },
        vault_attempts: args.vault_attempts,
        reload: Duration::from_millis(args.reload_ms),
        search: args.search_config.unwrap_or_default(),
        egress: args.egress_config.unwrap_or_default(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let report = std::env::var_os(env::READY_STDOUT).is_some();
    bulkhead_worker::launch(settings, listener, |ready| {
        // The supervisor reads this line from the stdout pipe: the contract, not a log line.
        if report {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(ready.line().as_bytes());
            let _ = out.flush();
        }
    })
    .await?;
    Ok(())
}
