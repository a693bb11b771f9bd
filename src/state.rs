//! What the server hands the pipeline: the state every request shares and the facts of the
//! connection a request came in on. The server builds both (`server::Gateway::start`, the accept
//! loops); the pipeline, the admin endpoint and durable delivery read them. A module of its own
//! so that the pipeline does not define the server's plumbing and the server need not reach
//! into the pipeline for it: config -> runtime -> (state) -> pipeline -> server.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{AnswerSeries, Metrics};
use crate::pipeline::acme_challenge::Http01Tokens;
use crate::pipeline::replay::ReplayStore;
use crate::runtime::Runtime;

/// What every request shares: the current runtime snapshot and the observers.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// Delivered event ids; outlives reloads.
    pub replay: Arc<dyn ReplayStore>,
    /// Set when shutdown begins: `/readyz` turns 503 so balancers stop sending.
    pub draining: std::sync::atomic::AtomicBool,
    /// Requests between [`handle`](crate::pipeline::handle)'s start and its end, whether or not their client is still
    /// there: shutdown waits for them (within the drain timeout) before it stops the workers.
    /// Counted by the server ([`crate::server::InFlight`]).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Durable delivery (issue 16), when the config has a `spool:`.
    pub delivery: Option<Arc<crate::delivery::Delivery>>,
    /// Open ACME HTTP-01 challenges, when an `acme:` block uses `challenge: http-01`.
    pub acme_http01: Option<Http01Tokens>,
}

/// Facts about the connection a request came in on.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    pub tls_version: Option<&'static str>,
    /// Requests that reached [`handle`](crate::pipeline::handle) on this connection.
    pub requests: std::sync::atomic::AtomicU64,
    /// The metric series of the first answer on this connection (see [`AnswerSeries`]).
    pub answers: std::sync::OnceLock<AnswerSeries>,
}
