#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Vault isolation on both backends.

mod embedded;
mod openbao;
