//! `bulkhead audit list|verify`: read and check the hash-chained audit log.

use std::path::Path;

use bulkhead_control::audit;

use crate::app::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show the newest records.
    List {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Recompute every hash and link; exit 1 if any record was changed or removed. Prints the
    /// chain head, which you can keep elsewhere to detect removal of the newest records.
    Verify,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<bool> {
    let config = crate::app::config(config_path, &args.target)?;
    let json = args.target.json;
    crate::app::runtime()?.block_on(async {
        let client = bulkhead_server::platform::control_client(&config).await?;
        match args.command {
            Command::List { limit } => {
                let records = audit::list(&client, limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&records)?);
                } else {
                    println!(
                        "{:>6}  {:<27}  {:<12}  {:<22}  target",
                        "seq", "at", "actor", "action"
                    );
                    for r in &records {
                        println!(
                            "{:>6}  {:<27}  {:<12}  {:<22}  {}",
                            r.seq, r.at, r.actor, r.action, r.target
                        );
                    }
                }
                Ok(true)
            }
            Command::Verify => {
                let v = audit::verify(&client).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if v.ok() {
                    println!("audit log intact: {} records, head {}", v.records, v.head);
                } else {
                    println!(
                        "audit log BROKEN: {} problem(s) in {} records",
                        v.problems.len(),
                        v.records
                    );
                    for p in &v.problems {
                        println!("  record {}: {}", p.seq, p.problem);
                    }
                }
                Ok(v.ok())
            }
        }
    })
}
