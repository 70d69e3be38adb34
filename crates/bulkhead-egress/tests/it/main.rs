#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The SSRF catalogue against real sockets: a DNS stub and HTTP servers on 127.0.0.1.

mod proxy;
mod ssrf;
mod stub;
