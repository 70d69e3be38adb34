//! The mini-app sandbox: an app's own JavaScript (`functions/` of its bundle) run in embedded
//! QuickJS (`rquickjs`) inside the app's worker.
//!
//! - [`Engine`]: a pool of interpreter threads, each owning one QuickJS runtime. Every
//!   invocation gets a fresh context (nothing a request leaves in globals or on prototypes is
//!   seen by the next, of the same tenant or another) and limits on memory, time, stack,
//!   promises, host calls and output; a limit ends the invocation with its own code and the
//!   runtime is discarded, so the next invocation starts from a clean heap.
//! - No ambient I/O: the context has the language's built-ins only (no `std`/`os` modules, no
//!   `performance` clock; `Date` is the one clock), and `import` reaches only `"bulkhead"` and
//!   the bundle's own modules ([`loader`]).
//! - The `bulkhead` module (`prelude.js`) is built per invocation around one native function
//!   that calls the invocation's [`Host`]; the host is bound to the tenant and caller the
//!   runtime resolved, and no parameter anywhere names a tenant.
//! - [`check`]: a bundle's modules compiled and linked without running them — syntax errors
//!   with `file:line:col`, imports outside the bundle, routes naming missing exports — all at
//!   once.
//!
//! The worker's OS compartment stays the second wall: an engine bug that escapes QuickJS
//! lands in a process that holds only this app's (or this tenant's) credentials.

pub mod check;
mod engine;
mod loader;
mod meter;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bulkhead_model::ErrorCode;
use bulkhead_model::bundle::Bundle;
use bulkhead_model::manifest::{FunctionLimits, FunctionRef};
use serde_json::Value;

pub use engine::{Engine, EngineStats, fresh_context_cost};

/// One call from app code into the platform, served by the worker for the invocation's
/// tenant and caller.
pub trait Host: Send + 'static {
    /// `op` is one of `db.query`, `db.get`, `db.insert`, `db.update`, `db.delete`,
    /// `db.count`, `storage.get|set|delete|list`, `files.list|get|put|delete`, `http.fetch`, `search.query`, `flags.get`, `config.get`, `log`; `args` its
    /// JSON arguments. Work must end by `deadline` (the invocation's time limit).
    fn call(&mut self, op: &str, args: Value, deadline: Instant) -> Result<Value, HostError>;
}

/// A refusal from the host, thrown into JavaScript as a `BulkheadError` with `code`,
/// `message` and `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl HostError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }
}

/// The caller as app code sees it (`user.id`, `user.roles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Caller {
    pub id: Option<String>,
    pub roles: Vec<String>,
}

/// One invocation: which export to call, with what request, for whom.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub function: FunctionRef,
    /// `{method, path, params, query, headers, body}` as the function receives it.
    pub request: Value,
    pub caller: Caller,
}

/// What a function answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// Why an invocation ended without an answer. `stack` is the JavaScript stack: in the
/// error's text (so the one error log line has it), never in a client's body (5xx bodies are
/// opaque, limits' messages name only the limit).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}{}", .stack.as_ref().map(|s| format!(": {s:?}")).unwrap_or_default())]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub stack: Option<String>,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            stack: None,
        }
    }

    /// Whether a limit ended the invocation (its runtime is then discarded).
    pub fn is_limit(&self) -> bool {
        self.code.is_limit()
    }
}

impl bulkhead_model::Coded for Failure {
    fn code(&self) -> ErrorCode {
        self.code
    }
    fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// A bundle's code ready to run: its modules by bundle path and the app's limits. Immutable:
/// a new deploy is a new `Program`, and an invocation keeps the one it started with.
#[derive(Debug)]
pub struct Program {
    digest: String,
    modules: HashMap<String, Arc<str>>,
    limits: FunctionLimits,
}

impl Program {
    pub fn new(bundle: &Bundle, limits: FunctionLimits) -> Self {
        Self {
            digest: bundle.digest(),
            modules: bundle
                .modules()
                .map(|(p, s)| (p.to_owned(), Arc::from(s)))
                .collect(),
            limits,
        }
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn limits(&self) -> &FunctionLimits {
        &self.limits
    }

    pub(crate) fn module(&self, path: &str) -> Option<Arc<str>> {
        self.modules.get(path).cloned()
    }
}
