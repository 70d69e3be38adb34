//! How long an empty invocation takes on the engine alone (no HTTP, no database): prints
//! one JSON line with p50/p99 in microseconds. `cargo run --release -p bulkhead-sandbox
//! --example empty`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bulkhead_model::bundle::Bundle;
use bulkhead_model::manifest::{FunctionLimits, FunctionRef};
use bulkhead_sandbox::{Caller, Engine, Host, HostError, Invocation, Program};

struct NoHost;

impl Host for NoHost {
    fn call(
        &mut self,
        op: &str,
        _args: serde_json::Value,
        _deadline: Instant,
    ) -> Result<serde_json::Value, HostError> {
        Err(HostError::new(
            bulkhead_model::ErrorCode::BadRequest,
            format!("unexpected {op}"),
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut files = BTreeMap::new();
    files.insert("manifest.yaml".to_owned(), b"app: bench\n".to_vec());
    files.insert(
        "functions/bench.js".to_owned(),
        b"import { db } from \"bulkhead\";\nexport function empty() { return null; }\n".to_vec(),
    );
    let program = Arc::new(Program::new(
        &Bundle::new(files)?,
        FunctionLimits::default(),
    ));
    let engine = Engine::new(1)?;
    let function = FunctionRef::parse("bench.empty")?;
    let mut lat = Vec::new();
    for _ in 0..3000 {
        let t0 = Instant::now();
        runtime.block_on(engine.invoke(
            program.clone(),
            Invocation {
                function: function.clone(),
                request: serde_json::json!({"method": "GET", "path": "/empty", "params": {}, "query": {}, "body": null}),
                caller: Caller::default(),
            },
            Box::new(NoHost),
        ))?;
        lat.push(t0.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    println!(
        "{}",
        serde_json::json!({"p50_us": lat[lat.len() / 2], "p99_us": lat[lat.len() * 99 / 100]})
    );
    Ok(())
}
