//! The integration tests: one test binary with one module per subject, so `tests/common` (the
//! harness) and the test dependencies are compiled and linked once instead of once per file.
//! Every module speaks to a real gateway over sockets; they all run in this one process, side
//! by side (`cargo test --test it delivery::` runs one module). A test that measures the
//! process itself (its open descriptors) measures a gateway started as its own process.

mod common;

mod acme;
mod cli;
mod conformance;
mod connections;
mod delivery;
mod exposition;
mod fd_leaks;
mod forwarding;
mod hostile;
mod operator_kit;
mod pipeline_in_memory;
mod policy;
mod presets;
mod redis;
mod refusals;
mod reload;
mod routing;
mod secrets;
mod signatures;
mod tls_posture;
mod tls_sni;
mod upstream_errors;
