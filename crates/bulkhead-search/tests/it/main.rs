#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Per-tenant search against a real PostgreSQL, as the app's real roles.

mod follow;
mod isolation;
mod support;
