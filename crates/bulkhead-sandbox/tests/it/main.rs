#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The sandbox engine and checker on their own.

mod engine;
