#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The data layer against a real PostgreSQL, as the real roles.

mod attacks;
mod catalog;
mod leak;
mod migrations;
mod permissions;
mod pgtap;
mod scoping;
mod storage;
mod support;
mod tls;
mod values;
