//! A bundle checked before it is stored: every module compiled (syntax errors with
//! `file:line:col`), the module graph linked without running any of it (imports outside
//! `"bulkhead"` and the bundle), and each route's export looked up — every problem at once.
//!
//! Nothing of the app's code runs here: linking is made to fail on purpose at the very end
//! (the root imports a name no module has, `__bulkhead_never`), and the ECMAScript module
//! semantics evaluate nothing of a graph whose linking failed.

use std::cell::RefCell;
use std::rc::Rc;

use bulkhead_model::AppManifest;
use bulkhead_model::bundle::{Bundle, MANIFEST};
use bulkhead_model::yaml::{self, Node};
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Context, Ctx, Error, Exception, Module, Runtime};

use crate::Program;
use crate::loader::{BULKHEAD, BULKHEAD_EXPORTS, resolve_name};

/// The module every refused import resolves to while checking.
const STOP: &str = "bulkhead:stop";
const NEVER: &str = "__bulkhead_never";

/// One problem of a bundle, at `file:line:col` (line and column 1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Checks the manifest and the modules of `bundle`; the manifest when there is nothing to
/// say, else every problem in file and position order.
pub fn check(bundle: &Bundle) -> Result<AppManifest, Vec<Problem>> {
    let mut problems = Vec::new();
    let manifest = match AppManifest::from_yaml(bundle.manifest_source(), MANIFEST) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.extend(e.problems.into_iter().map(|p| Problem {
                file: MANIFEST.into(),
                line: p.pos.line as u32,
                col: p.pos.col as u32,
                message: if p.path.is_empty() {
                    p.message
                } else {
                    format!("{}: {}", p.path, p.message)
                },
            }));
            None
        }
    };
    for (path, bytes) in bundle.files() {
        if path.starts_with("functions/") && std::str::from_utf8(bytes).is_err() {
            problems.push(Problem {
                file: path.clone(),
                line: 0,
                col: 0,
                message: "not UTF-8 text".into(),
            });
        }
    }
    match modules(bundle, manifest.as_ref()) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(Problem {
            file: String::new(),
            line: 0,
            col: 0,
            message: format!("the checker failed: {e}"),
        }),
    }
    problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    problems.dedup();
    match manifest {
        Some(m) if problems.is_empty() => Ok(m),
        _ => Err(problems),
    }
}

type Refused = Rc<RefCell<Vec<(String, String)>>>;

struct CheckResolver {
    program: Rc<Program>,
    refused: Refused,
}

impl Resolver for CheckResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if name == STOP {
            return Ok(STOP.into());
        }
        Ok(resolve_name(&self.program, base, name).unwrap_or_else(|| {
            self.refused
                .borrow_mut()
                .push((base.to_owned(), name.to_owned()));
            STOP.into()
        }))
    }
}

struct CheckLoader {
    program: Rc<Program>,
}

impl Loader for CheckLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        if name == STOP {
            return Module::declare(ctx.clone(), STOP, "export {};");
        }
        if name == BULKHEAD {
            let stand_in: String = BULKHEAD_EXPORTS
                .iter()
                .map(|n| format!("export const {n} = null;\n"))
                .chain(std::iter::once("export default null;\n".to_owned()))
                .collect();
            return Module::declare(ctx.clone(), BULKHEAD, stand_in);
        }
        match self.program.module(name) {
            // A module that does not compile was reported already; it links as empty.
            Some(src) => Module::declare(ctx.clone(), name, src.as_bytes())
                .or_else(|_| Module::declare(ctx.clone(), name, "export {};")),
            None => Err(Error::new_loading_message(name, "not in the bundle")),
        }
    }
}

fn modules(bundle: &Bundle, manifest: Option<&AppManifest>) -> Result<Vec<Problem>, Error> {
    let program = Rc::new(Program::new(bundle, Default::default()));
    let mut problems = Vec::new();
    let refused: Refused = Rc::default();
    let runtime = Runtime::new()?;
    runtime.set_memory_limit(256 * 1024 * 1024);
    runtime.set_loader(
        CheckResolver {
            program: program.clone(),
            refused: refused.clone(),
        },
        CheckLoader {
            program: program.clone(),
        },
    );
    let sources: Vec<(&str, &str)> = bundle.modules().collect();
    // Each module on its own: syntax errors with their place.
    let mut compiled = Vec::new();
    {
        let context = Context::full(&runtime)?;
        context.with(|ctx| {
            for (path, src) in &sources {
                match Module::declare(ctx.clone(), *path, *src) {
                    Ok(_) => compiled.push(*path),
                    Err(e) => problems.push(syntax_problem(&ctx, path, e)),
                }
            }
        });
    }
    // The graph: imports outside the bundle (each recorded by the resolver).
    let root: String = compiled
        .iter()
        .map(|p| format!("import {:?};\n", p))
        .chain(std::iter::once(format!(
            "import {{ {NEVER} }} from {STOP:?};\n"
        )))
        .collect();
    link(&runtime, "bulkhead:check", &root, &mut problems)?;
    for (base, name) in refused.borrow().iter() {
        let (line, col) = position_of(&sources, base, name);
        problems.push(Problem {
            file: base.clone(),
            line,
            col,
            message: format!(
                "import {name:?}: only \"bulkhead\" and the bundle's own modules (./… inside functions/) can be imported"
            ),
        });
    }
    // Each route's export.
    if let Some(m) = manifest {
        let positions = route_positions(bundle.manifest_source());
        for (i, route) in m.functions.routes.iter().enumerate() {
            let (line, col) = positions.get(i).copied().unwrap_or((0, 0));
            let path = route.function.module_path();
            let here = |message: String| Problem {
                file: MANIFEST.into(),
                line,
                col,
                message: format!("functions.routes[{i}].function: {message}"),
            };
            if program.module(&path).is_none() {
                problems.push(here(format!("{path} is not in the bundle")));
                continue;
            }
            if !compiled.contains(&path.as_str()) {
                continue;
            }
            let export = &route.function.export;
            let root = format!(
                "import {{ {export} }} from {path:?};\nimport {{ {NEVER} }} from {STOP:?};\n"
            );
            let mut found = Vec::new();
            link(&runtime, &format!("bulkhead:route{i}"), &root, &mut found)?;
            if !found.is_empty() {
                problems.push(here(format!("{path} does not export {export:?}")));
            }
        }
    }
    Ok(problems)
}

/// Links `root` in a fresh context and records any failure other than the planned one.
fn link(
    runtime: &Runtime,
    name: &str,
    root: &str,
    problems: &mut Vec<Problem>,
) -> Result<(), Error> {
    let context = Context::full(runtime)?;
    context.with(|ctx| {
        let declared = match Module::declare(ctx.clone(), name, root) {
            Ok(d) => d,
            Err(_) => return,
        };
        if let Err(e) = declared.eval() {
            let message = exception_message(&ctx, e);
            if !message.contains(NEVER) && !message.contains(STOP) {
                problems.push(Problem {
                    file: String::new(),
                    line: 0,
                    col: 0,
                    message,
                });
            }
        }
    });
    Ok(())
}

fn exception_message(ctx: &Ctx<'_>, e: Error) -> String {
    match e {
        Error::Exception => {
            let v = ctx.catch();
            match v
                .as_object()
                .and_then(|o| Exception::from_object(o.clone()))
            {
                Some(ex) => ex.message().unwrap_or_default(),
                None => format!("{v:?}"),
            }
        }
        other => other.to_string(),
    }
}

/// A syntax error with the place QuickJS gives in the exception's stack (`at file:line:col`),
/// the only place it reports one.
fn syntax_problem(ctx: &Ctx<'_>, path: &str, e: Error) -> Problem {
    let (message, stack) = match e {
        Error::Exception => {
            let v = ctx.catch();
            match v
                .as_object()
                .and_then(|o| Exception::from_object(o.clone()))
            {
                Some(ex) => (ex.message().unwrap_or_default(), ex.stack()),
                None => (format!("{v:?}"), None),
            }
        }
        other => (other.to_string(), None),
    };
    let (line, col) = stack
        .as_deref()
        .and_then(|s| place_in_stack(s, path))
        .unwrap_or((0, 0));
    Problem {
        file: path.to_owned(),
        line,
        col,
        message: format!("syntax error: {message}"),
    }
}

fn place_in_stack(stack: &str, path: &str) -> Option<(u32, u32)> {
    let at = stack.find(&format!("{path}:"))? + path.len() + 1;
    let mut nums = stack[at..]
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse::<u32>().ok());
    let line = nums.next()??;
    let col = nums.next().flatten().unwrap_or(0);
    Some((line, col))
}

/// Where `name` is written in `base`'s source (the first quoted occurrence).
fn position_of(sources: &[(&str, &str)], base: &str, name: &str) -> (u32, u32) {
    let Some((_, src)) = sources.iter().find(|(p, _)| *p == base) else {
        return (0, 0);
    };
    for quoted in [
        format!("\"{name}\""),
        format!("'{name}'"),
        format!("`{name}`"),
    ] {
        if let Some(off) = src.find(&quoted) {
            let before = &src[..off];
            let line = before.matches('\n').count() as u32 + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
            return (line, col);
        }
    }
    (0, 0)
}

/// The position of each `functions.routes[i].function` in the manifest's text.
fn route_positions(text: &str) -> Vec<(u32, u32)> {
    let Ok(root) = yaml::parse(text) else {
        return Vec::new();
    };
    let entry = |node: &Node, key: &str| -> Option<Node> {
        match node {
            Node::Map { entries, .. } => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, _, n)| n.clone()),
            _ => None,
        }
    };
    let Some(Node::Seq { items, .. }) = entry(&root, "functions").and_then(|f| entry(&f, "routes"))
    else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let pos = entry(item, "function").map_or(item.pos(), |n| n.pos());
            (pos.line as u32, pos.col as u32)
        })
        .collect()
}
