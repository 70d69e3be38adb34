#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The control plane against a real PostgreSQL.

mod apply;
mod audit;
mod platform;
mod schema;
