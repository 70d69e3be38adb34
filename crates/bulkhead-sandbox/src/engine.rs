//! The interpreter pool: threads that each own one QuickJS runtime, a fresh context per
//! invocation, the limits, and the loop that drives a function's promises to an answer.
//!
//! Host calls block the interpreter thread (the host waits on the worker's async runtime with
//! the invocation's deadline), so JavaScript sees `await db.get(…)` while the engine needs no
//! async bridge; concurrency is the pool's size.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bulkhead_model::ErrorCode;
use rquickjs::context::intrinsic;
use rquickjs::promise::{PromiseHookType, PromiseState};
use rquickjs::{Context, Ctx, Exception, Function, Module, Object, Promise, Runtime, Value};
use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::loader::{API_GLOBAL, BundleLoader, BundleResolver, Cache, Slot, declare_cached};
use crate::meter::{Meter, Metered};
use crate::{Answer, Failure, Host, HostError, Invocation, Program};

/// The prelude that builds the `bulkhead` objects (see `prelude.js`), as a module whose
/// default export is the factory (compiled once per interpreter, then loaded as bytecode).
const PRELUDE: &str = concat!("export default ", include_str!("prelude.js"), ";\n");
/// Its module name; the resolver admits no such import from app code.
const PRELUDE_NAME: &str = "bulkhead:prelude";

/// The built-ins of a context: the language, `Date` as the one clock, no `performance`, no
/// `std`/`os` modules (rquickjs has none unless asked). No `WeakRef`/`FinalizationRegistry`
/// either: a finalizer is scheduled by the collector, which runs after an invocation has
/// ended, so its callback would run in a later invocation's time (nothing lives past one
/// request that a weak reference could serve).
type Intrinsics = (
    (
        intrinsic::Date,
        intrinsic::Eval,
        intrinsic::RegExpCompiler,
        intrinsic::RegExp,
    ),
    (
        intrinsic::Json,
        intrinsic::Proxy,
        intrinsic::MapSet,
        intrinsic::TypedArrays,
    ),
    intrinsic::Promise,
);

/// What the pool has done, for tests (and `/metrics` later).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Runtimes thrown away after a limit (or an engine error) ended an invocation.
    pub runtimes_discarded: AtomicU64,
}

/// Invocations that may wait for an interpreter, per interpreter thread; beyond that the pool
/// answers `unavailable` (503 with `Retry-After`) instead of queueing without bound.
const QUEUE_PER_THREAD: usize = 32;

struct Job {
    program: Arc<Program>,
    invocation: Invocation,
    host: Box<dyn Host>,
    reply: oneshot::Sender<Result<Answer, Failure>>,
}

/// The pool of interpreter threads of one worker.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::SyncSender<Job>,
    stats: Arc<EngineStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts `threads` interpreter threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads.max(1) * QUEUE_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(EngineStats::default());
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("bulkhead-js-{i}"))
                // QuickJS's own stack limit sits well inside this.
                .stack_size(16 * 1024 * 1024)
                .spawn(move || serve(&rx, &stats))?;
        }
        Ok(Self { jobs: tx, stats })
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Runs one invocation of `program` with `host` and waits for its answer.
    pub async fn invoke(
        &self,
        program: Arc<Program>,
        invocation: Invocation,
        host: Box<dyn Host>,
    ) -> Result<Answer, Failure> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                program,
                invocation,
                host,
                reply,
            })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => {
                    Failure::new(ErrorCode::Unavailable, "every interpreter is busy")
                }
                mpsc::TrySendError::Disconnected(_) => {
                    Failure::new(ErrorCode::Internal, "the interpreter pool has stopped")
                }
            })?;
        answer
            .await
            .unwrap_or_else(|_| Err(Failure::new(ErrorCode::Internal, "the interpreter stopped")))
    }
}

/// What a fresh context alone costs, per context: created with the invocations' built-ins,
/// dropped and collected on a runtime of its own, `iterations` times in a row. The floor
/// under every invocation (the benchmark reports it next to the whole invocation).
pub fn fresh_context_cost(iterations: u32) -> Result<Duration, Failure> {
    let engine_error =
        |e: rquickjs::Error| Failure::new(ErrorCode::Internal, format!("QuickJS: {e}"));
    let runtime = Runtime::new().map_err(engine_error)?;
    let start = Instant::now();
    for _ in 0..iterations.max(1) {
        drop(Context::custom::<Intrinsics>(&runtime).map_err(engine_error)?);
        runtime.run_gc();
    }
    Ok(start.elapsed() / iterations.max(1))
}

/// What the interrupt handler and the promise hook watch, shared with the runtime's
/// callbacks (which must be `Send`).
#[derive(Default)]
struct Watch {
    /// Nanoseconds after `epoch` when the invocation must end.
    deadline: AtomicU64,
    promises: AtomicU32,
    promise_limit: AtomicU32,
    timed_out: AtomicBool,
    too_many_promises: AtomicBool,
}

/// One interpreter thread's runtime. `runtime` is the first field so it is dropped first,
/// before the bytecode buffers its contexts may have read in place.
struct Interpreter {
    runtime: Runtime,
    slot: Slot,
    cache: Cache,
    watch: Arc<Watch>,
    /// The runtime's allocator's account: its memory limit and whether it refused.
    meter: Arc<Meter>,
    epoch: Instant,
}

impl Interpreter {
    fn new() -> Result<Self, Failure> {
        let meter = Meter::new();
        let runtime = Runtime::new_with_alloc(Metered::new(meter.clone()))
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("QuickJS runtime: {e}")))?;
        let slot: Slot = Rc::new(RefCell::new(None));
        let cache: Cache = Rc::default();
        runtime.set_loader(
            BundleResolver(slot.clone()),
            BundleLoader(slot.clone(), cache.clone()),
        );
        let watch = Arc::new(Watch::default());
        let epoch = Instant::now();
        let w = watch.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let now = epoch.elapsed().as_nanos() as u64;
            if now > w.deadline.load(Ordering::Relaxed) {
                w.timed_out.store(true, Ordering::Relaxed);
                return true;
            }
            w.too_many_promises.load(Ordering::Relaxed)
        })));
        let w = watch.clone();
        runtime.set_promise_hook(Some(Box::new(move |_ctx, kind, _, _| {
            if kind == PromiseHookType::Init {
                let n = w.promises.fetch_add(1, Ordering::Relaxed) + 1;
                if n > w.promise_limit.load(Ordering::Relaxed) {
                    w.too_many_promises.store(true, Ordering::Relaxed);
                }
            }
        })));
        Ok(Self {
            runtime,
            slot,
            cache,
            watch,
            meter,
            epoch,
        })
    }

    /// Resets the watch: a deadline `time` from now, at most `promises` promises.
    fn arm_limits(&self, time: Duration, promises: u32) -> Instant {
        let deadline = Instant::now() + time;
        self.watch.deadline.store(
            (self.epoch.elapsed() + time).as_nanos() as u64,
            Ordering::Relaxed,
        );
        self.watch.promises.store(0, Ordering::Relaxed);
        self.watch.promise_limit.store(promises, Ordering::Relaxed);
        self.watch.timed_out.store(false, Ordering::Relaxed);
        self.watch.too_many_promises.store(false, Ordering::Relaxed);
        deadline
    }

    fn arm(&self, program: &Program) -> Instant {
        let limits = program.limits();
        let deadline = self.arm_limits(
            Duration::from_millis(u64::from(limits.time_ms)),
            limits.promises,
        );
        self.meter.arm(limits.memory_mb as usize * 1024 * 1024);
        self.runtime
            .set_max_stack_size(limits.stack_kb as usize * 1024);
        deadline
    }
}

fn serve(jobs: &Mutex<mpsc::Receiver<Job>>, stats: &EngineStats) {
    let mut interpreter: Option<Interpreter> = None;
    // A fresh context made while the thread was idle, with the prelude loaded and nothing
    // else: no code of any invocation has run in it.
    let mut spare: Option<Context> = None;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if interpreter.is_none() {
            match Interpreter::new() {
                Ok(i) => interpreter = Some(i),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            }
        }
        let Some(interp) = interpreter.as_ref() else {
            continue;
        };
        let context = match spare.take() {
            Some(c) => Ok(c),
            None => prepare(interp),
        };
        let (result, drained) = match context {
            Ok(c) => invoke(interp, c, job.program, job.invocation, job.host),
            Err(e) => (Err(e), true),
        };
        // A limit (or an engine failure) may leave the heap in any state: start over.
        let discard = !drained
            || match &result {
                Err(f) => f.is_limit() || f.code == ErrorCode::Internal,
                Ok(_) => false,
            };
        // Answer first; clean up and prepare the next context after.
        let _ = job.reply.send(result);
        if discard {
            interpreter = None;
            stats.runtimes_discarded.fetch_add(1, Ordering::Relaxed);
        } else if let Some(i) = &interpreter {
            i.runtime.run_gc();
            spare = prepare(i).ok();
        }
    }
}

/// The global a prepared context keeps the prelude's factory in, until the invocation takes
/// it (before any app code runs).
const FACTORY: &str = "__bulkhead_factory";

/// A fresh context with the prelude loaded and its factory on [`FACTORY`].
fn prepare(interp: &Interpreter) -> Result<Context, Failure> {
    // Only the platform's prelude runs here; the invocation arms its own limits.
    interp.arm_limits(Duration::from_secs(10), u32::MAX);
    interp.meter.arm(usize::MAX);
    let context = Context::custom::<Intrinsics>(&interp.runtime)
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("QuickJS context: {e}")))?;
    context.with(|ctx| -> Result<(), Failure> {
        let fail = |e: rquickjs::Error| classify(&ctx, interp, e);
        let prelude = declare_cached(
            &ctx,
            &interp.cache,
            (String::new(), PRELUDE_NAME.to_owned()),
            PRELUDE_NAME,
            PRELUDE.as_bytes(),
        )
        .map_err(fail)?;
        let (prelude, evaluated) = prelude.eval().map_err(fail)?;
        settle::<Value>(&ctx, interp, &evaluated)?;
        let factory: Function = prelude.get("default").map_err(fail)?;
        ctx.globals().set(FACTORY, factory).map_err(fail)
    })?;
    Ok(context)
}

/// Runs one invocation in `context` (which is dropped after). The flag is `false` when the
/// work the invocation left queued could not be run out within its limits: the runtime must
/// then be discarded, whatever the answer.
fn invoke(
    interp: &Interpreter,
    context: Context,
    program: Arc<Program>,
    invocation: Invocation,
    host: Box<dyn Host>,
) -> (Result<Answer, Failure>, bool) {
    let deadline = interp.arm(&program);
    *interp.slot.borrow_mut() = Some(program.clone());
    let host = Rc::new(RefCell::new(HostSlot {
        host: Some(host),
        calls: 0,
    }));
    let (result, drained) = context.with(|ctx| {
        let answer = call_function(&ctx, interp, &program, &invocation, &host, deadline);
        // The invocation has its outcome: its host goes now (with whatever it holds, an open
        // transaction included), and no later call reaches the platform.
        host.borrow_mut().host = None;
        (answer, drain(&ctx, interp))
    });
    *interp.slot.borrow_mut() = None;
    drop(context);
    // The context is gone: the bytecode it read in place may be released.
    interp.cache.borrow_mut().trim();
    (result, drained)
}

/// The invocation's host until it answers, and how many calls it made.
struct HostSlot {
    host: Option<Box<dyn Host>>,
    calls: u32,
}

/// Runs out the jobs an invocation left queued (promise reactions it did not await before
/// answering), within its own limits and with the platform closed to it: the job queue
/// belongs to the runtime, so anything left there would otherwise run during the next
/// context's preparation (outside any invocation's limits) or in the next invocation's time,
/// still holding this one's host. `false` when a limit ended the draining.
fn drain(ctx: &Ctx<'_>, interp: &Interpreter) -> bool {
    loop {
        if limit_failure(interp).is_some() {
            return false;
        }
        if !ctx.execute_pending_job() {
            return limit_failure(interp).is_none();
        }
    }
}

/// The invocation proper: the `bulkhead` module built around the host, the function's
/// module imported, its export called and its promise settled into an answer.
fn call_function<'js>(
    ctx: &Ctx<'js>,
    interp: &Interpreter,
    program: &Program,
    invocation: &Invocation,
    host: &Rc<RefCell<HostSlot>>,
    deadline: Instant,
) -> Result<Answer, Failure> {
    let limits = *program.limits();
    let fail = |e: rquickjs::Error| classify(ctx, interp, e);
    let slot = host.clone();
    let host_fn = Function::new(ctx.clone(), move |op: String, args: String| -> String {
        let mut slot = slot.borrow_mut();
        slot.calls = slot.calls.saturating_add(1);
        let calls = slot.calls;
        let out = match slot.host.as_mut() {
            None => Err(HostError::new(
                ErrorCode::FunctionFailed,
                "the invocation has answered; the platform takes no more calls from it",
            )),
            Some(_) if calls > limits.host_calls => Err(HostError::new(
                ErrorCode::LimitHostCalls,
                format!("more than {} calls into the platform", limits.host_calls),
            )),
            Some(host) => {
                let args = serde_json::from_str(&args).unwrap_or(Json::Null);
                host.call(&op, args, deadline)
            }
        };
        encode_host_result(out)
    })
    .map_err(fail)?;
    let globals = ctx.globals();
    let factory: Function = globals.get(FACTORY).map_err(fail)?;
    globals.remove(FACTORY).map_err(fail)?;
    let caller = serde_json::to_string(&invocation.caller).unwrap_or_else(|_| "{}".into());
    let built: Object = factory.call((host_fn, caller)).map_err(fail)?;
    let api: Value = built.get("api").map_err(fail)?;
    let run: Function = built.get("run").map_err(fail)?;
    globals.set(API_GLOBAL, api).map_err(fail)?;
    let path = invocation.function.module_path();
    if program.module(&path).is_none() {
        return Err(Failure::new(
            ErrorCode::FunctionNotFound,
            format!("the bundle has no {path}"),
        ));
    }
    let imported = Module::import(ctx, path.as_str()).map_err(fail)?;
    let namespace: Object = settle(ctx, interp, &imported)?;
    // The module read it if it imported `bulkhead`; no later code may find it.
    let _ = globals.remove(API_GLOBAL);
    let export: Value = namespace
        .get(invocation.function.export.as_str())
        .map_err(fail)?;
    let request = serde_json::to_string(&invocation.request).unwrap_or_else(|_| "{}".into());
    let answered: Promise = run.call((export, request)).map_err(fail)?;
    let text: rquickjs::String = settle(ctx, interp, &answered)?;
    let text = text.to_string().map_err(fail)?;
    if text.len() > limits.output_kb as usize * 1024 {
        return Err(Failure::new(
            ErrorCode::LimitOutput,
            format!("the response is larger than {} KiB", limits.output_kb),
        ));
    }
    decode_answer(&text, invocation)
}

/// Drives the job queue until `promise` settles, within the invocation's limits.
fn settle<'js, T: rquickjs::FromJs<'js>>(
    ctx: &Ctx<'js>,
    interp: &Interpreter,
    promise: &Promise<'js>,
) -> Result<T, Failure> {
    loop {
        match promise.state() {
            PromiseState::Pending => {
                if let Some(limit) = limit_failure(interp) {
                    return Err(limit);
                }
                if !ctx.execute_pending_job() {
                    // Nothing left to run and still pending: a promise nobody will settle.
                    return Err(Failure::new(
                        ErrorCode::FunctionFailed,
                        "the function's promise never settled",
                    ));
                }
            }
            _ => {
                return match promise.result::<T>() {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(e)) => Err(classify(ctx, interp, e)),
                    None => Err(Failure::new(ErrorCode::Internal, "promise state changed")),
                };
            }
        }
    }
}

/// A limit the watch saw, if any.
fn limit_failure(interp: &Interpreter) -> Option<Failure> {
    if interp.meter.refused() {
        return Some(Failure::new(
            ErrorCode::LimitMemory,
            "the function ran out of memory",
        ));
    }
    if interp.watch.too_many_promises.load(Ordering::Relaxed) {
        return Some(Failure::new(
            ErrorCode::LimitPromises,
            "the function created too many promises",
        ));
    }
    if interp.watch.timed_out.load(Ordering::Relaxed) {
        return Some(Failure::new(
            ErrorCode::LimitTime,
            "the function ran out of time",
        ));
    }
    None
}

/// Turns what QuickJS reported into a failure: a limit the watch saw, out of memory, stack
/// overflow, or the app's own exception (with its stack for the log).
fn classify(ctx: &Ctx<'_>, interp: &Interpreter, e: rquickjs::Error) -> Failure {
    let caught = match e {
        rquickjs::Error::Exception => Some(ctx.catch()),
        _ => None,
    };
    if let Some(f) = limit_failure(interp) {
        return f;
    }
    let Some(value) = caught else {
        return match e {
            rquickjs::Error::Allocation => {
                Failure::new(ErrorCode::LimitMemory, "the function ran out of memory")
            }
            rquickjs::Error::Resolving { .. } | rquickjs::Error::Loading { .. } => Failure {
                code: ErrorCode::FunctionFailed,
                message: "import refused".into(),
                field: None,
                stack: Some(e.to_string()),
            },
            other => Failure::new(ErrorCode::Internal, format!("QuickJS: {other}")),
        };
    };
    let (message, stack) = match value
        .as_object()
        .and_then(|o| Exception::from_object(o.clone()))
    {
        Some(ex) => (ex.message().unwrap_or_default(), ex.stack()),
        None => (
            value
                .as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("a thrown {}", value.type_name())),
            None,
        ),
    };
    let lower = message.to_ascii_lowercase();
    // A string past QuickJS's length bound (2^30 characters) is a memory bound too.
    if lower.contains("out of memory")
        || lower.contains("string too long")
        || lower.contains("invalid string length")
    {
        return Failure::new(ErrorCode::LimitMemory, "the function ran out of memory");
    }
    if lower.contains("stack overflow") || lower.contains("maximum call stack") {
        return Failure::new(
            ErrorCode::LimitStack,
            "the function recursed deeper than its stack limit",
        );
    }
    if lower.contains("interrupted") {
        return Failure::new(ErrorCode::LimitTime, "the function ran out of time");
    }
    Failure {
        code: ErrorCode::FunctionFailed,
        message: "the function threw".into(),
        field: None,
        stack: Some(match stack {
            Some(s) if !s.is_empty() => format!("{message}\n{s}"),
            _ => message,
        }),
    }
}

fn encode_host_result(out: Result<Json, HostError>) -> String {
    let v = match out {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({
            "error": { "code": e.code.as_str(), "message": e.message, "field": e.field }
        }),
    };
    serde_json::to_string(&v).unwrap_or_else(|_| "{\"ok\":null}".into())
}

/// The prelude's answer: `{status, headers, body}`, `{error}` for a platform error the
/// function let through, or `{missing}` when the export is not a function.
fn decode_answer(text: &str, invocation: &Invocation) -> Result<Answer, Failure> {
    let v: Json = serde_json::from_str(text)
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("answer: {e}")))?;
    if v.get("missing").is_some() {
        return Err(Failure::new(
            ErrorCode::FunctionNotFound,
            format!(
                "{} does not export a function {:?}",
                invocation.function.module_path(),
                invocation.function.export
            ),
        ));
    }
    if let Some(err) = v.get("error") {
        let code = err["code"]
            .as_str()
            .and_then(ErrorCode::from_name)
            .unwrap_or(ErrorCode::Internal);
        return Err(Failure {
            code,
            message: err["message"].as_str().unwrap_or_default().to_owned(),
            field: err["field"].as_str().map(str::to_owned),
            stack: None,
        });
    }
    let status = v["status"]
        .as_u64()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::FunctionFailed,
                "respond() takes a status from 200 to 599",
            )
        })? as u16;
    let mut headers = Vec::new();
    if let Some(map) = v["headers"].as_object() {
        for (k, val) in map {
            if let Some(s) = val.as_str() {
                headers.push((k.clone(), s.to_owned()));
            }
        }
    }
    Ok(Answer {
        status,
        headers,
        body: v.get("body").cloned().unwrap_or(Json::Null),
    })
}
