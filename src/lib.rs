//! hookgate: an inbound webhook gateway. TLS in, routes from `gateway.yaml`, verified payloads
//! forwarded byte for byte to internal backends, every request logged and counted.
//!
//! The crate is a library with a thin binary (`main.rs`) so tests drive it directly. The
//! binary's own parts (the command line, `hookgate demo`'s certificate and echo backend in
//! `demo.rs`) are not in the library. The request path reads top to bottom in
//! [`pipeline::handle`].
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod files;
pub mod ip_feeds;
pub mod ipset;
pub mod observe;
pub mod pipeline;
pub mod runtime;
pub mod server;
pub mod state;
pub mod upstream;
pub mod verify;
