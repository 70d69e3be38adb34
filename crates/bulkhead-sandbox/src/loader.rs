//! What `import` may reach: `"bulkhead"` (the module of this invocation's host objects) and
//! the bundle's own modules by relative or bundle path. Anything else — `fs`, `std`, a URL,
//! `../` out of `functions/` — is refused at resolution, statically or in `import()`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Error, Module, Result};

use crate::Program;

/// The specifier of the platform's module.
pub(crate) const BULKHEAD: &str = "bulkhead";

/// The names `bulkhead` exports (the checker's stand-in declares the same); each is the
/// prelude's `api` object's property of that name.
pub(crate) const BULKHEAD_EXPORTS: &[&str] = &[
    "db", "storage", "files", "http", "search", "flags", "config", "log", "user", "respond",
];

/// The global through which the engine hands the prelude's objects to the `bulkhead` module.
pub(crate) const API_GLOBAL: &str = "__bulkhead_api";

/// The `bulkhead` module: the objects the prelude built for this invocation, picked up from
/// [`API_GLOBAL`], which is deleted as soon as it is read (and by the engine after the import).
pub(crate) fn bulkhead_source() -> String {
    let mut src =
        format!("const api = globalThis.{API_GLOBAL};\ndelete globalThis.{API_GLOBAL};\n");
    for name in BULKHEAD_EXPORTS {
        src.push_str(&format!("export const {name} = api.{name};\n"));
    }
    src.push_str("export default api;\n");
    src
}

/// `name` imported from `base`, as a bundle path; `None` when it is not allowed.
pub(crate) fn resolve_name(program: &Program, base: &str, name: &str) -> Option<String> {
    if name == BULKHEAD {
        return Some(BULKHEAD.to_owned());
    }
    let joined = if name.starts_with("./") || name.starts_with("../") {
        let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{name}")
    } else {
        name.to_owned()
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    let path = parts.join("/");
    (path.starts_with("functions/") && program.module(&path).is_some()).then_some(path)
}

/// The program of the invocation running on this runtime.
pub(crate) type Slot = Rc<RefCell<Option<Arc<Program>>>>;

/// Compiled modules of one interpreter, by program digest and path: a module is parsed once
/// per interpreter and loaded from its bytecode afterwards (parsing is most of an
/// invocation's cost). `pinned` holds every buffer the current invocation loaded from, until
/// its context is gone, because QuickJS reads loaded bytecode in place.
#[derive(Default)]
pub(crate) struct Compiled {
    modules: HashMap<(String, String), Arc<[u8]>>,
    pub(crate) pinned: Vec<Arc<[u8]>>,
}

/// Most compiled modules one interpreter keeps (a deploy switch brings a second version's).
const MAX_COMPILED: usize = 512;

impl Compiled {
    /// Between invocations only: forgets everything when the cache is full.
    pub(crate) fn trim(&mut self) {
        self.pinned.clear();
        if self.modules.len() > MAX_COMPILED {
            self.modules.clear();
        }
    }
}

pub(crate) type Cache = Rc<RefCell<Compiled>>;

/// Options for bytecode that stays inside this process: without the source text (only a
/// function's `toString` reads it, and reading it back cost 5% of an empty invocation); the
/// debug information that gives stacks their `file:line:col` stays.
fn write_options() -> rquickjs::WriteOptions {
    rquickjs::WriteOptions {
        strip_source: true,
        ..Default::default()
    }
}

/// Loads a module from bytecode this interpreter wrote.
#[allow(unsafe_code)]
pub(crate) fn load_compiled<'js>(
    ctx: &Ctx<'js>,
    bytes: &Arc<[u8]>,
) -> Result<Module<'js, Declared>> {
    // SAFETY: `bytes` was produced by `Module::write` of this same QuickJS build in this
    // process (never read from outside), and the buffer outlives the context that loads it:
    // the caller pins it in `Compiled::pinned` until the invocation's context is dropped.
    unsafe { Module::load(ctx.clone(), bytes) }
}

/// Declares `name` from `source`, or from its cached bytecode, caching and pinning it.
pub(crate) fn declare_cached<'js>(
    ctx: &Ctx<'js>,
    cache: &Cache,
    key: (String, String),
    name: &str,
    source: &[u8],
) -> Result<Module<'js, Declared>> {
    let cached = cache.borrow().modules.get(&key).cloned();
    if let Some(bytes) = cached {
        let module = load_compiled(ctx, &bytes)?;
        cache.borrow_mut().pinned.push(bytes);
        return Ok(module);
    }
    let module = Module::declare(ctx.clone(), name, source)?;
    if let Ok(bytes) = module.write(write_options()) {
        cache.borrow_mut().modules.insert(key, Arc::from(bytes));
    }
    Ok(module)
}

pub(crate) struct BundleResolver(pub(crate) Slot);

impl Resolver for BundleResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<String> {
        let program = self.0.borrow().clone();
        program
            .and_then(|p| resolve_name(&p, base, name))
            .ok_or_else(|| {
                Error::new_resolving_message(
                    base,
                    name,
                    "only \"bulkhead\" and the bundle's own modules can be imported",
                )
            })
    }
}

pub(crate) struct BundleLoader(pub(crate) Slot, pub(crate) Cache);

impl Loader for BundleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        if name == BULKHEAD {
            let key = (String::new(), BULKHEAD.to_owned());
            return declare_cached(ctx, &self.1, key, BULKHEAD, bulkhead_source().as_bytes());
        }
        let program = self.0.borrow().clone();
        let Some(program) = program else {
            return Err(Error::new_loading_message(name, "no program"));
        };
        match program.module(name) {
            Some(src) => {
                let key = (program.digest().to_owned(), name.to_owned());
                declare_cached(ctx, &self.1, key, name, src.as_bytes())
            }
            None => Err(Error::new_loading_message(name, "not in the bundle")),
        }
    }
}
