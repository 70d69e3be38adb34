//! `served`: the REST API as deployed — the `bulkhead` server process (gateway) forwarding to
//! the app's own worker process — against a hand-written axum + tokio-postgres handler over
//! the same table, and the same API at the worker's own port (what the gateway's hop costs).
//!
//! The benchmark starts `bulkhead up --database-url …` (the example app `helpdesk`, tenant
//! `acme` at row level) on a private cluster, learns its address from the readiness line on
//! stdout, creates `--rows` tickets through the API as `alice`, and then measures
//! `GET /t/acme/api/ticket/{id}` and the list of 20 through the server, and the same reads by
//! the baseline: `WHERE tenant_id = $1` with a cached prepared statement on the app database's
//! `ticket` table, serialising the same fields. One keep-alive HTTP client drives both,
//! rotating rounds. The last line of output is one JSON object; `"ratio"` is the worst
//! scenario's server req/s ÷ baseline req/s, `"hop"` the worst server req/s ÷ worker req/s.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Map, Value, json};
use tokio_postgres::NoTls;

use crate::Samples;
use crate::rest::Scenario;

#[derive(Debug, clap::Args)]
pub(crate) struct ServedArgs {
    /// Admin (superuser) URL of a PostgreSQL server for `bulkhead up` to use; default: a
    /// private ephemeral cluster in a temporary directory, removed afterwards.
    #[arg(long)]
    admin_url: Option<String>,
    /// The `bulkhead` binary; default: the one beside this program (same build profile).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Seconds per measured round and side.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measured rounds per scenario (sides alternate each round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tickets created in the tenant before measuring.
    #[arg(long, default_value_t = 500)]
    rows: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
}

const TENANT: &str = "acme";

/// The ticket's fields as the API writes them (sorted keys, as its records are).
const GET: &str = "SELECT id::text, created_at, updated_at, body, customer::text, due::text, \
     internal_note, prio, reporter, status, title FROM public.ticket \
     WHERE tenant_id = $1 AND id = $2::text::uuid";
const LIST: &str = "SELECT id::text, created_at, updated_at, body, customer::text, due::text, \
     internal_note, prio, reporter, status, title FROM public.ticket \
     WHERE tenant_id = $1 ORDER BY ticket.created_at, ticket.id LIMIT 20";

/// `bulkhead up` as a child process, stopped with SIGINT (so it stops its workers and
/// leaves the database as it found it) when dropped.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &std::path::Path, admin_url: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(bin)
            .args(["up", "--listen", "127.0.0.1:0", "--database-url", admin_url])
            .current_dir(dir.path())
            .env("BULKHEAD_READY_STDOUT", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        // The address arrives as the readiness line, never from a log.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(ready) = bulkhead_model::worker::Ready::parse(&line) {
                    let _ = tx.send(ready.listening);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(addr) => Ok(Self {
                child,
                addr,
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("`bulkhead up` did not report its address within 180 s")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listening address of the app's own worker (`bulkhead worker --app helpdesk`, no
/// `--tenant`), a child of the server process, from the kernel's socket tables
/// (`bulkhead_verify::sockets`), not from a log line.
fn worker_addr(server: u32) -> anyhow::Result<std::net::SocketAddr> {
    use bulkhead_verify::sockets::{children, sockets_of};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let app_worker = children(server).into_iter().find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w == [b"--app".as_slice(), b"helpdesk".as_slice()])
                && !args.contains(&b"--tenant".as_slice())
        });
        if let Some(socket) = app_worker
            .into_iter()
            .flat_map(sockets_of)
            .find(|s| s.listening)
        {
            return Ok(socket.local);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no listening worker of the server within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn record(row: &tokio_postgres::Row) -> Value {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        use tokio_postgres::types::Type;
        let ty = column.type_();
        let value = if *ty == Type::TIMESTAMPTZ {
            row.get::<_, Option<std::time::SystemTime>>(i)
                .map(|t| Value::String(bulkhead_pg::sql::rfc3339(t)))
        } else if *ty == Type::INT4 {
            row.get::<_, Option<i32>>(i).map(Value::from)
        } else {
            row.get::<_, Option<String>>(i).map(Value::String)
        };
        out.insert(column.name().to_owned(), value.unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// A token for `alice` at acme's realm, once the server answers.
async fn login(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let form =
        format!("grant_type=password&client_id=helpdesk&username=alice&password=alice-at-{TENANT}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = client
            .post(format!(
                "{base}/realms/{TENANT}/protocol/openid-connect/token"
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await;
        if let Ok(resp) = answer
            && resp.status().is_success()
        {
            let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
            return body["access_token"]
                .as_str()
                .map(str::to_owned)
                .context("token response without access_token");
        }
        anyhow::ensure!(Instant::now() < deadline, "no login within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `n` tickets through the API (waiting for the worker first); their ids.
async fn tickets(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{api}/ticket?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not answer in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let resp = client
            .post(format!("{api}/ticket"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(
                json!({"title": format!("ticket {i}"), "body": "printer on fire", "prio": i % 5})
                    .to_string(),
            )
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "creating a ticket: {}",
            resp.status()
        );
        let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
        ids.push(
            body["id"]
                .as_str()
                .context("created ticket without id")?
                .to_owned(),
        );
    }
    Ok(ids)
}

struct Side {
    base: String,
    token: Option<String>,
}

async fn measure(
    client: &reqwest::Client,
    side: &Arc<Side>,
    ids: &Arc<Vec<String>>,
    scenario: Scenario,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let (client, side, ids) = (client.clone(), side.clone(), ids.clone());
    crate::drive(concurrency, duration, move |worker, i| {
        let url = scenario.url(&side.base, &ids, worker, i);
        let mut req = client.get(&url).header("x-tenant", TENANT);
        if let Some(token) = &side.token {
            req = req.bearer_auth(token);
        }
        crate::rest::fetch(url, req)
    })
    .await
}

pub(crate) async fn run(args: ServedArgs) -> anyhow::Result<()> {
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("bulkhead"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it (`cargo build --release --bin bulkhead`) or pass --bin",
        bin.display()
    );
    let (admin_url, _cluster) = crate::database(args.admin_url.as_deref())?;
    let server = Server::start(&bin, &admin_url)?;
    let base = format!("http://{}", server.addr);
    let api = format!("{base}/t/{TENANT}/api");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .context("http client")?;
    let token = login(&client, &base).await?;
    let ids = Arc::new(tickets(&client, &api, &token, args.rows.max(1)).await?);

    // The baseline reads the app database's shared table (as the superuser: it is the
    // hand-written reference, not an isolation test).
    let mut app_db: tokio_postgres::Config = admin_url.parse()?;
    app_db.dbname(bulkhead_model::names::app_database(
        &bulkhead_model::AppId::parse("helpdesk")?,
    ));
    let pool = Pool::builder(Manager::from_config(
        app_db,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    ))
    .max_size(16)
    .build()?;
    let base_app = crate::rest::Baseline {
        pool,
        get: GET,
        list: LIST,
        record,
    }
    .router();
    let base_addr = crate::rest::serve(base_app).await?;
    let served = Arc::new(Side {
        base: api,
        token: Some(token),
    });
    let baseline = Arc::new(Side {
        base: format!("http://{base_addr}"),
        token: None,
    });

    // The same API at the app worker's own port: what the gateway's hop costs.
    let worker = Arc::new(Side {
        base: format!("http://{}/t/{TENANT}/api", worker_addr(server.child.id())?),
        token: served.token.clone(),
    });

    let duration = Duration::from_secs_f64(args.seconds);
    let mut report = crate::Report::default();
    let mut worst_hop: Option<f64> = None;
    for &concurrency in &args.concurrency {
        for scenario in [Scenario::GetById, Scenario::List20] {
            let sides = [&served, &worker, &baseline];
            let mut samples =
                crate::side_by_side(sides.len(), args.rounds, duration, |side, duration| {
                    measure(&client, sides[side], &ids, scenario, concurrency, duration)
                })
                .await?;
            let (base, mut direct, through) =
                (samples.remove(2), samples.remove(1), samples.remove(0));
            // Served through the gateway ÷ at the worker itself.
            let hop = through.ops_per_sec() / direct.ops_per_sec().max(1e-9);
            worst_hop = Some(worst_hop.map_or(hop, |w| w.min(hop)));
            let mut extra = serde_json::Map::new();
            extra.insert("worker".into(), direct.summary());
            extra.insert("hop".into(), json!(crate::round3(hop)));
            report.add(scenario.name(), concurrency, "served", through, base, extra);
        }
    }
    drop(server);
    println!(
        "{}",
        json!({
            "benchmark": "served",
            "tenant": TENANT,
            "rows": args.rows,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "ratio": report.ratio(),
            "hop": worst_hop.map(crate::round3),
            "scenarios": report.scenarios,
        })
    );
    Ok(())
}
