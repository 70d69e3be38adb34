#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The runtime's layers, driven through tower without a network; the REST tests run against a
//! real PostgreSQL with real realms.

mod context;
mod edge_input;
mod http;
mod logins;
mod resolve;
mod rest;
