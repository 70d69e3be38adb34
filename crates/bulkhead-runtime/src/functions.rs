//! An app's own functions and front-end, per tenant:
//!
//! | method | path | does |
//! |---|---|---|
//! | any | `/fn/{route}` | calls the function the manifest's `functions.routes` maps to |
//! | GET | `/app/{file}` | serves `public/{file}` of the active bundle (`/app/` → `index.html`) |
//!
//! A function runs in the worker's sandbox ([`bulkhead_sandbox::Engine`]) with a host bound
//! to the resolved tenant and the verified caller ([`AppHost`]); nothing the function passes
//! names a tenant, and every data call goes through the same `TenantDb` and permissions as
//! the REST API.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_model::ErrorCode;
use bulkhead_pg::Filter;
use bulkhead_pg::plane::KvScope;
use bulkhead_sandbox::{Caller, Host, HostError, Invocation};
use serde_json::{Value, json};

use crate::api::Api;
use crate::context::AppContext;
use crate::error::ApiError;
use crate::extract::query_pairs;
use crate::resolve::ResolvedTenant;

/// Headers a function may set on its response; anything else (cookies, CSP, CORS) is the
/// platform's to decide.
const ANSWER_HEADERS: &[&str] = &["content-language", "cache-control", "etag", "location"];

/// The Content-Security-Policy of every front-end file: its own origin only, no inline
/// scripts, no framing.
pub const APP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// `/fn/{*route}`: finds the route, authenticates and authorises the caller, and runs the
/// function on the deployment current when the request arrived.
pub(crate) async fn invoke(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    method: Method,
    Path(route_path): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such function route");
    let deployments = api.deployments().ok_or_else(not_found)?;
    let deployed = deployments.current().ok_or_else(not_found)?;
    let path = format!("/{}", route_path.trim_start_matches('/'));
    let (route, params) = deployed
        .functions
        .route(method.as_str(), &path)
        .ok_or_else(not_found)?;
    let (mut ctx, principal) = api.context(&resolved, &headers, !method.is_safe()).await?;
    if principal.is_anonymous() && !route.anonymous {
        return Err(ApiError::unauthorized());
    }
    if !principal.is_anonymous()
        && !route.roles.is_empty()
        && !route.roles.iter().any(|r| principal.roles.contains(r))
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "your roles may not call this function",
        ));
    }
    let query: serde_json::Map<String, Value> = query_pairs(raw.as_deref())?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let body = request_body(&headers, &body)?;
    bulkhead_model::manifest::check_body(&route.body, &body)?;
    if let Some(role) = &route.run_as {
        // The route's service role: the data calls use its permissions, for the same tenant,
        // user and request.
        ctx = api.run_as(&ctx, role)?;
    }
    let request = json!({
        "method": method.as_str(),
        "path": path,
        "params": params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<serde_json::Map<_, _>>(),
        "query": query,
        "headers": {
            "content-type": header_text(&headers, header::CONTENT_TYPE),
            "accept": header_text(&headers, header::ACCEPT),
            "accept-language": header_text(&headers, header::ACCEPT_LANGUAGE),
        },
        "body": body,
    });
    let caller = Caller {
        id: (!principal.subject.is_empty()).then(|| principal.subject.clone()),
        roles: principal.roles.clone(),
    };
    let request_id = crate::request_id::current();
    let host = AppHost {
        calls: Arc::new(Calls {
            ctx: AppContext::new(ctx, principal, api.clone()),
            request_id: request_id.clone(),
        }),
        handle: tokio::runtime::Handle::current(),
        txs: Default::default(),
        next_tx: 0,
    };
    let function = route.function.clone();
    let answer = deployments
        .engine()
        .invoke(
            deployed.program.clone(),
            Invocation {
                function: function.clone(),
                request,
                caller,
            },
            Box::new(host),
        )
        .await;
    answer.map(respond).map_err(|mut f| {
        // Said once, by the one error mapping (logged with the request's span): which
        // function and version, and for a throw its JavaScript stack.
        f.message = format!(
            "{} (function {}, bundle version {})",
            f.message,
            function.name(),
            deployed.version
        );
        f.into()
    })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Value {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// The body as the function sees it: parsed JSON for a JSON request, text otherwise, `null`
/// when empty.
fn request_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if crate::extract::is_json_request(headers) {
        return crate::extract::json_body(headers, body);
    }
    match std::str::from_utf8(body) {
        Ok(s) => Ok(Value::String(s.to_owned())),
        Err(_) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "function bodies are JSON or UTF-8 text",
        )),
    }
}

fn respond(a: bulkhead_sandbox::Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let mut resp = if matches!(status.as_u16(), 204 | 304) {
        status.into_response()
    } else {
        (status, axum::Json(a.body)).into_response()
    };
    for (k, v) in a.headers {
        let lower = k.to_ascii_lowercase();
        if !ANSWER_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(lower), HeaderValue::try_from(v)) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// `/app` → `app/` (relative, so it works under `/t/{tenant}` and on tenant hosts alike, and
/// the front-end's relative links resolve inside it).
pub(crate) async fn app_root() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("app/"))],
    )
        .into_response()
}

/// `/app/` and `/app/{*file}`: the active bundle's `public/` files, with a strict CSP,
/// `nosniff` and an ETag from the bundle's digest.
pub(crate) async fn static_file(
    State(api): State<Arc<Api>>,
    path: Option<Path<String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such file");
    let deployed = api
        .deployments()
        .and_then(|d| d.current())
        .ok_or_else(not_found)?;
    let rel = path.map(|Path(p)| p).unwrap_or_default();
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_owned()
    };
    let file = format!("public/{rel}");
    // Bundle paths were checked when the bundle was built; a request path is only looked up.
    if bulkhead_model::bundle::check_path(&file).is_err() {
        return Err(not_found());
    }
    let bytes = deployed.bundle.get(&file).ok_or_else(not_found)?;
    let digest = deployed.program.digest();
    let etag = format!(
        "\"{}\"",
        digest
            .trim_start_matches("sha256:")
            .get(..32)
            .unwrap_or("0")
    );
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = mime_guess::from_path(&rel).first_or_octet_stream();
        let mut r = bytes.to_vec().into_response();
        if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(APP_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Ok(resp)
}

/// The platform side of one invocation: the request's tenant-bound context. Called on the
/// interpreter's thread; each call runs as a task on the worker's runtime (next to the
/// database connections it talks to, so a call's statements do not each wake the interpreter
/// thread) and the interpreter waits for its answer until the invocation's deadline.
struct AppHost {
    calls: Arc<Calls>,
    handle: tokio::runtime::Handle,
    /// Open transactions by number (`db.transaction`).
    txs: std::collections::HashMap<u64, tokio::sync::mpsc::UnboundedSender<TxCommand>>,
    next_tx: u64,
}

fn host_error(e: bulkhead_pg::Error) -> HostError {
    api_host_error(e.into())
}

fn api_host_error(a: ApiError) -> HostError {
    HostError {
        code: a.code,
        message: a.message,
        field: a.field,
    }
}

fn text_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, HostError> {
    args[key].as_str().ok_or_else(|| {
        let mut e = HostError::new(ErrorCode::BadRequest, format!("{key} must be a string"));
        e.field = Some(key.to_owned());
        e
    })
}

/// `where` conditions: `{field: value}` (equality) or `{field: {gt: 1, in: [..]}}`, with
/// the REST API's operators ([`Filter::with_operator`]).
fn filters(list: &Value) -> Result<Vec<Filter>, HostError> {
    let bad = |m: String| HostError::new(ErrorCode::BadQuery, m);
    let mut out = Vec::new();
    for cond in list.as_array().into_iter().flatten() {
        let Some(map) = cond.as_object() else {
            return Err(bad("where() takes an object of field conditions".into()));
        };
        for (field, v) in map {
            match v.as_object() {
                Some(ops) => {
                    for (op, arg) in ops {
                        out.push(Filter::with_operator(field, op, arg.clone()).map_err(bad)?);
                    }
                }
                None => out.push(Filter::Eq(field.clone(), v.clone())),
            }
        }
    }
    Ok(out)
}

/// The data operations of the `db` object, on `TenantDb` or on an open `Tx` (the same
/// method names and arguments; a macro because one borrows shared and the other unique).
macro_rules! data_op {
    ($target:expr, $op:expr, $args:expr) => {{
        let args: &Value = $args;
        match $op {
            "db.get" => $target
                .get(text_arg(args, "entity")?, text_arg(args, "id")?)
                .await
                .map_err(host_error),
            "db.insert" => $target
                .insert(text_arg(args, "entity")?, &args["record"])
                .await
                .map_err(host_error),
            "db.update" => $target
                .update(
                    text_arg(args, "entity")?,
                    text_arg(args, "id")?,
                    &args["patch"],
                )
                .await
                .map_err(host_error),
            "db.delete" => $target
                .delete(text_arg(args, "entity")?, text_arg(args, "id")?)
                .await
                .map(|()| json!({"deleted": true}))
                .map_err(host_error),
            "db.count" => {
                let mut q = $target.query(text_arg(args, "entity")?);
                for f in filters(&args["where"])? {
                    q = q.filter(f);
                }
                q.count().await.map(Value::from).map_err(host_error)
            }
            "db.query" => {
                let mut q = $target.query(text_arg(args, "entity")?);
                for f in filters(&args["where"])? {
                    q = q.filter(f);
                }
                if let Some(order) = args["order"].as_str() {
                    let (field, direction) = bulkhead_pg::sql::order(order);
                    q = q.order_by(field, direction);
                }
                if !args["limit"].is_null() {
                    let n = args["limit"].as_i64().ok_or_else(|| {
                        HostError::new(ErrorCode::BadQuery, "limit takes a whole number")
                    })?;
                    q = q.limit(n);
                }
                if let Some(after) = args["after"].as_str() {
                    q = q.after(after);
                }
                let page = q.fetch().await.map_err(host_error)?;
                Ok(json!({"records": page.records, "next_cursor": page.next_cursor}))
            }
            other => Err(HostError::new(
                ErrorCode::BadRequest,
                format!("unknown platform call {other:?}"),
            )),
        }
    }};
}

/// Most transactions one invocation may hold open at once.
const MAX_OPEN_TRANSACTIONS: usize = 4;

/// What an invocation asks of its open transaction.
enum TxCommand {
    Op(
        String,
        Value,
        tokio::sync::oneshot::Sender<Result<Value, HostError>>,
    ),
    End(bool, tokio::sync::oneshot::Sender<Result<Value, HostError>>),
}

async fn tx_op(tx: &mut bulkhead_pg::Tx<'_>, op: &str, args: &Value) -> Result<Value, HostError> {
    data_op!(tx, op, args)
}

impl AppHost {
    /// `db.transaction`: a task that owns the transaction (and the context it borrows) and
    /// runs the invocation's statements on it in order. An invocation that ends without
    /// committing drops the task's channel: the transaction is dropped and its connection
    /// closed, so nothing is written.
    async fn begin(&mut self) -> Result<Value, HostError> {
        if self.txs.len() >= MAX_OPEN_TRANSACTIONS {
            return Err(HostError::new(
                ErrorCode::Conflict,
                format!("at most {MAX_OPEN_TRANSACTIONS} open transactions per invocation"),
            ));
        }
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel::<TxCommand>();
        let (ready, opened) = tokio::sync::oneshot::channel();
        let ctx = self.calls.ctx.clone();
        tokio::spawn(async move {
            let db = ctx.db();
            let mut tx = match db.begin().await {
                Ok(tx) => {
                    let _ = ready.send(Ok(()));
                    tx
                }
                Err(e) => {
                    let _ = ready.send(Err(host_error(e)));
                    return;
                }
            };
            while let Some(command) = inbox.recv().await {
                match command {
                    TxCommand::Op(op, args, reply) => {
                        let _ = reply.send(tx_op(&mut tx, &op, &args).await);
                    }
                    TxCommand::End(commit, reply) => {
                        let r = if commit {
                            tx.commit().await
                        } else {
                            tx.rollback().await
                        };
                        let _ = reply.send(r.map(|()| Value::Null).map_err(host_error));
                        return;
                    }
                }
            }
        });
        opened
            .await
            .map_err(|_| HostError::new(ErrorCode::Internal, "the transaction task ended"))??;
        self.next_tx += 1;
        self.txs.insert(self.next_tx, commands);
        Ok(json!(self.next_tx))
    }

    async fn in_tx(
        &mut self,
        id: u64,
        command: impl FnOnce(tokio::sync::oneshot::Sender<Result<Value, HostError>>) -> TxCommand,
        ends: bool,
    ) -> Result<Value, HostError> {
        let closed = || HostError::new(ErrorCode::BadRequest, "the transaction has ended");
        let sender = if ends {
            self.txs.remove(&id)
        } else {
            self.txs.get(&id).cloned()
        }
        .ok_or_else(closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        sender.send(command(reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// `db.begin` and the calls on an open transaction: sent to the transaction's task.
    async fn transactional(&mut self, op: &str, args: Value) -> Result<Value, HostError> {
        let Some(id) = args["tx"].as_u64() else {
            return self.begin().await;
        };
        match op {
            "db.commit" => self.in_tx(id, |r| TxCommand::End(true, r), true).await,
            "db.rollback" => self.in_tx(id, |r| TxCommand::End(false, r), true).await,
            _ if op.starts_with("db.") => {
                let op = op.to_owned();
                self.in_tx(id, move |r| TxCommand::Op(op, args, r), false)
                    .await
            }
            _ => Err(HostError::new(ErrorCode::BadRequest, "not a data call")),
        }
    }
}

/// The calls that need no state of the invocation beyond its context: run as tasks.
struct Calls {
    ctx: AppContext,
    request_id: Option<String>,
}

impl Calls {
    async fn dispatch(&self, op: &str, args: Value) -> Result<Value, HostError> {
        if op == "db.cross_tenant" {
            let mut read = self
                .ctx
                .cross_tenant(text_arg(&args, "entity")?, text_arg(&args, "reason")?)
                .map_err(host_error)?;
            for f in filters(&args["where"])? {
                read = read.filter(f);
            }
            if !args["limit"].is_null() {
                let n = args["limit"].as_i64().ok_or_else(|| {
                    HostError::new(ErrorCode::BadQuery, "limit takes a whole number")
                })?;
                read = read.limit(n);
            }
            return read.fetch().await.map(Value::Array).map_err(host_error);
        }
        if op.starts_with("db.") {
            let db = self.ctx.db();
            return data_op!(db, op, &args);
        }
        let kv = |args: &Value| match args["scope"].as_str() {
            Some("user") => self.ctx.kv(KvScope::User),
            _ => self.ctx.kv(KvScope::Tenant),
        };
        match op {
            "storage.get" => kv(&args)
                .get(text_arg(&args, "key")?)
                .await
                .map(|v| v.unwrap_or(Value::Null))
                .map_err(host_error),
            "storage.set" => {
                if args["value"].is_null() {
                    return Err(HostError::new(
                        ErrorCode::MissingField,
                        "storage.set takes a value (use storage.delete to remove one)",
                    ));
                }
                kv(&args)
                    .set(text_arg(&args, "key")?, &args["value"])
                    .await
                    .map(|()| Value::Null)
                    .map_err(host_error)
            }
            "storage.delete" => kv(&args)
                .delete(text_arg(&args, "key")?)
                .await
                .map(Value::Bool)
                .map_err(host_error),
            "storage.list" => kv(&args)
                .list(text_arg(&args, "prefix")?)
                .await
                .map(|entries| {
                    Value::Array(
                        entries
                            .into_iter()
                            .map(|(key, value)| json!({"key": key, "value": value}))
                            .collect(),
                    )
                })
                .map_err(host_error),
            "http.fetch" => self.fetch(&args).await,
            "files.list" => self
                .ctx
                .files()
                .list()
                .await
                .map(|keys| json!(keys))
                .map_err(api_host_error),
            "files.get" => {
                let bytes = self
                    .ctx
                    .files()
                    .get(text_arg(&args, "key")?)
                    .await
                    .map_err(api_host_error)?;
                String::from_utf8(bytes.to_vec())
                    .map(Value::String)
                    .map_err(|_| {
                        HostError::new(
                            ErrorCode::UnsupportedMediaType,
                            "files.get reads text files (UTF-8) only",
                        )
                    })
            }
            "files.put" => self
                .ctx
                .files()
                .put(
                    text_arg(&args, "key")?,
                    bytes::Bytes::from(text_arg(&args, "text")?.to_owned()),
                )
                .await
                .map(|()| Value::Null)
                .map_err(api_host_error),
            "files.delete" => self
                .ctx
                .files()
                .delete(text_arg(&args, "key")?)
                .await
                .map(|()| Value::Null)
                .map_err(api_host_error),
            "search.query" => {
                let req = bulkhead_search::SearchRequest {
                    q: args["q"].as_str().unwrap_or_default().to_owned(),
                    entity: args["entity"].as_str().map(str::to_owned),
                    limit: args["limit"].as_u64().map(|n| n as usize),
                    cursor: args["cursor"].as_str().map(str::to_owned),
                };
                match self.ctx.search(&req).await {
                    None => Err(HostError::new(
                        ErrorCode::NotFound,
                        "this app has no searchable fields",
                    )),
                    Some(Ok(page)) => serde_json::to_value(page)
                        .map_err(|e| HostError::new(ErrorCode::Internal, e.to_string())),
                    Some(Err(e)) => Err(api_host_error(e.into())),
                }
            }
            "flags.get" => Ok(self
                .ctx
                .flags()
                .evaluate(text_arg(&args, "name")?)
                .map_or(Value::Null, |e| e.value)),
            "config.get" => Ok(self
                .ctx
                .config()
                .get(text_arg(&args, "name")?)
                .unwrap_or(Value::Null)),
            "log" => {
                let message: String = args["message"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(4096)
                    .collect();
                let app = self.ctx.manifest_app();
                let tenant = self.ctx.tenant().to_string();
                let request_id = self.request_id.as_deref().unwrap_or("-");
                match args["level"].as_str() {
                    Some("error") => tracing::error!(app, tenant, request_id, "{message}"),
                    Some("warn") => tracing::warn!(app, tenant, request_id, "{message}"),
                    _ => tracing::info!(app, tenant, request_id, "{message}"),
                }
                Ok(Value::Null)
            }
            other => Err(HostError::new(
                ErrorCode::BadRequest,
                format!("unknown platform call {other:?}"),
            )),
        }
    }
}

impl Calls {
    /// `http.fetch`: through the egress client with this tenant's allow-list (deny by
    /// default); the body as text.
    async fn fetch(&self, args: &Value) -> Result<Value, HostError> {
        let method = Method::from_bytes(text_arg(args, "method")?.to_ascii_uppercase().as_bytes())
            .map_err(|_| HostError::new(ErrorCode::BadRequest, "unknown HTTP method"))?;
        let mut headers = Vec::new();
        for (k, v) in args["headers"].as_object().into_iter().flatten() {
            if let Some(v) = v.as_str() {
                headers.push((k.clone(), v.to_owned()));
            }
        }
        let request = bulkhead_egress::Request {
            method,
            url: text_arg(args, "url")?.to_owned(),
            headers,
            body: args["body"]
                .as_str()
                .map(|b| bytes::Bytes::from(b.to_owned())),
        };
        let response = self
            .ctx
            .http()
            .send(request)
            .await
            .map_err(|e| api_host_error(e.into()))?;
        Ok(json!({
            "status": response.status.as_u16(),
            "url": response.url,
            "headers": response
                .headers
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<serde_json::Map<_, _>>(),
            "body": String::from_utf8_lossy(&response.body),
        }))
    }
}

impl Host for AppHost {
    fn call(&mut self, op: &str, args: Value, deadline: Instant) -> Result<Value, HostError> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let out_of_time = || {
            HostError::new(
                ErrorCode::LimitTime,
                "the function ran out of time waiting for the platform",
            )
        };
        let handle = self.handle.clone();
        if op == "db.begin" || args["tx"].is_u64() {
            return handle.block_on(async {
                tokio::time::timeout_at(deadline, self.transactional(op, args))
                    .await
                    .unwrap_or_else(|_| Err(out_of_time()))
            });
        }
        let calls = self.calls.clone();
        let op = op.to_owned();
        let task = handle.spawn(async move {
            tokio::time::timeout_at(deadline, calls.dispatch(&op, args)).await
        });
        match handle.block_on(task) {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(out_of_time()),
            Err(e) => Err(HostError::new(
                ErrorCode::Internal,
                format!("the platform call failed: {e}"),
            )),
        }
    }
}
