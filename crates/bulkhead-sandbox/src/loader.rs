//! What `import` may reach: `"bulkhead"` (the module of this invocation's host objects) and
//! the bundle's own modules by relative or bundle path. Anything else — `fs`, `std`, a URL,
//! `../` out of `functions/` — is refused at resolution, statically or in `import()`.

use std::cell::RefCell;
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

/// The `bulkhead` module: the objects the prelude built for this invocation, picked up from
/// a global that is deleted as soon as it is read (and by the engine after the import).
pub(crate) fn bulkhead_source() -> String {
    let mut src =
        String::from("const api = globalThis.__bulkhead_api;\ndelete globalThis.__bulkhead_api;\n");
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

pub(crate) struct BundleLoader(pub(crate) Slot);

impl Loader for BundleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> Result<Module<'js, Declared>> {
        if name == BULKHEAD {
            return Module::declare(ctx.clone(), BULKHEAD, bulkhead_source());
        }
        let source = self.0.borrow().as_ref().and_then(|p| p.module(name));
        match source {
            Some(src) => Module::declare(ctx.clone(), name, src.as_bytes()),
            None => Err(Error::new_loading_message(name, "not in the bundle")),
        }
    }
}
