//! The deployed bundle of a worker ([`Deployments`]): the program its functions run and the
//! files its front-end serves, swapped whole when a new version is activated. A request takes
//! the current deployment once, at its start, so it finishes on the version it started with.

use std::sync::{Arc, RwLock};

use bulkhead_model::bundle::Bundle;
use bulkhead_model::manifest::Functions;
use bulkhead_sandbox::{Engine, Program};

/// One activated bundle version.
#[derive(Debug)]
pub struct Deployed {
    pub version: i64,
    pub bundle: Bundle,
    pub functions: Functions,
    pub program: Arc<Program>,
}

impl Deployed {
    pub fn new(version: i64, bundle: Bundle, functions: Functions) -> Self {
        let program = Arc::new(Program::new(&bundle, functions.limits));
        Self {
            version,
            bundle,
            functions,
            program,
        }
    }
}

/// The interpreter pool and the current deployment of an app's worker.
#[derive(Debug)]
pub struct Deployments {
    engine: Engine,
    current: RwLock<Option<Arc<Deployed>>>,
}

impl Deployments {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            current: RwLock::new(None),
        }
    }

    /// Activates `deployed` for requests that start from now on.
    pub fn activate(&self, deployed: Deployed) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(Arc::new(deployed));
        }
    }

    /// No bundle: functions and the front-end answer 404.
    pub fn clear(&self) {
        if let Ok(mut slot) = self.current.write() {
            *slot = None;
        }
    }

    pub fn current(&self) -> Option<Arc<Deployed>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
