#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Drives the real `bulkhead` binary.

mod browser;
mod cli;
mod functions;
mod hostile;
mod in_process;
mod init;
mod layout;
mod metrics;
mod packaging;
mod proxy;
mod serve;
mod support;
mod tls;
mod up;
mod verify;
