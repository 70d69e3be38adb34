#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The runtime's layers, driven through tower without a network.

mod resolve;
