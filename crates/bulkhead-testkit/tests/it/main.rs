#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The harness is real: PostgreSQL enforces passwords and CONNECT, and the cluster disappears
//! with the test process however it ends.

mod cleanup;
mod realness;
