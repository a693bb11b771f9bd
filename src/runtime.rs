//! The runtime: a validated [`Config`] compiled for serving (route table, upstream clients). One
//! `Arc<Runtime>` snapshot serves a request from start to end; a reload builds a new one and
//! swaps it in whole. Building may fail; it never touches a socket the gateway listens on.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::config::{Config, PathPattern};
use crate::pipeline::forward::{Upstream, UpstreamBuildError};

pub struct Runtime {
    pub routes: Vec<Route>,
}

pub struct Route {
    pub name: Arc<str>,
    pub path: PathPattern,
    pub methods: Vec<Method>,
    pub upstream: Arc<Upstream>,
    pub upstream_path: Option<String>,
    pub max_body: u64,
    pub body_timeout: Duration,
}

impl Runtime {
    pub fn build(config: &Config) -> Result<Runtime, UpstreamBuildError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.as_str().into(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                upstream: Arc::clone(&upstreams[r.upstream]),
                upstream_path: r.upstream_path.clone(),
                max_body: r.max_body,
                body_timeout: r.body_timeout,
            })
            .collect();
        Ok(Runtime { routes })
    }
}
