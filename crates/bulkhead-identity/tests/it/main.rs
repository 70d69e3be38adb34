#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Local realms against a real PostgreSQL (the platform database).

mod external;
mod realms;
