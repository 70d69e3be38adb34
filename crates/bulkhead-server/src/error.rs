//! The server's errors: what stopped it from starting or serving, with the cause chain kept
//! (`context` says what the server was doing, the source what failed). None of these reach a
//! client: HTTP errors are the runtime's `ApiError`.

/// Why the server (or one of its administrative steps) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key or file.
    #[error("{0}")]
    Config(String),
    /// What the server was doing when `source` failed.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure with no cause of its own.
    #[error("{0}")]
    Message(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Error::Message(message.into())
    }
}

macro_rules! from_source {
    ($($t:ty => $what:literal),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(source: $t) -> Self {
                Error::Context { context: $what.into(), source: Box::new(source) }
            }
        })*
    };
}

from_source! {
    std::io::Error => "I/O failed",
    serde_json::Error => "JSON",
    bulkhead_control::Error => "the control plane failed",
    bulkhead_pg::Error => "the data layer failed",
    bulkhead_vault::Error => "the vault failed",
    bulkhead_files::Error => "file storage failed",
    bulkhead_model::IdError => "invalid id",
    bulkhead_model::ManifestError => "invalid manifest",
    tokio_postgres::Error => "the platform database failed",
    reqwest::Error => "HTTP failed",
    bulkhead_pgcluster::Error => "the embedded cluster failed",
    tokio::task::JoinError => "a background task failed",
    std::net::AddrParseError => "invalid address",
    std::time::SystemTimeError => "the system clock is before 1970",
    deadpool_postgres::PoolError => "no platform database connection",
}

/// `.context(…)` / `.with_context(…)` on results and options: what the server was doing.
pub(crate) trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.into(),
            source: Box::new(e),
        })
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context().into(),
            source: Box::new(e),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Message(context.into()))
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Message(context().into()))
    }
}

/// Returns `Err(Error::Message(…))` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::error::Error::msg(format!($($arg)+)));
        }
    };
}
pub(crate) use ensure;
