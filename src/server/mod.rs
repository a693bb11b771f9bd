//! Starts and stops the gateway: binds every listener and the admin endpoint, runs their accept
//! loops, applies reloads and drains on shutdown. The request path itself lives in `pipeline`.

pub mod acme;
pub mod config_watch;
pub mod deadlines;
pub mod http;
pub mod listener;
pub mod proxy_protocol;
pub mod tls;
pub mod workers;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, ListenerConfig};
use crate::observe::access_log::AccessLog;
use crate::observe::event;
use crate::observe::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::Shared;
use workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {name}: TLS setup failed: {source}")]
    Tls { name: String, source: rustls::Error },
    #[error("listener {name}: ACME setup failed: {why}")]
    Acme { name: String, why: String },
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamBuildError),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    #[error(transparent)]
    Spool(#[from] crate::delivery::OpenError),
    #[error("spool: {0}")]
    SpoolStart(#[from] crate::delivery::spool::SpoolError),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// Counts one request in [`Shared::in_flight`](crate::state::Shared::in_flight) for as long as it lives, panics included.
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    pub fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running gateway.
pub struct Gateway {
    listeners: Vec<Running>,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Arc<Workers>,
    log_writer: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    drain_timeout: Duration,
}

struct Running {
    config: ListenerConfig,
    addr: SocketAddr,
    tls: Option<Arc<ArcSwap<ServerConfig>>>,
    /// The listener's ACME certificates, kept across reloads.
    acme: Option<Arc<acme::AcmeSlot>>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Binds everything the config names and starts serving. Fails before serving anything if
    /// any part cannot start.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let metrics = Metrics::new();
        let (access_log, log_writer) = AccessLog::start(&config.access_log)
            .await
            .map_err(StartError::AccessLog)?;
        // Before the runtime: each worker gets its own Redis connection.
        let workers = start_workers(config.limits.worker_threads, &access_log)
            .map_err(StartError::Workers)?;
        let runtime = Runtime::build(&config, None, &metrics, workers.handles())?;
        metrics.config_loaded_at_start();
        let delivery = crate::delivery::Delivery::open(&config.delivery, &metrics)?;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            access_log,
            replay: Arc::new(crate::cluster::replay::SharedReplayStore::new(
                crate::pipeline::replay::MemoryReplayStore::new(
                    crate::pipeline::replay::DEFAULT_MAX_ENTRIES,
                ),
            )),
            draining: Default::default(),
            in_flight: Default::default(),
            delivery,
            acme_http01: acme::uses_http01(&config).then(Default::default),
        });
        if let Some(delivery) = &shared.delivery {
            delivery.use_workers(Arc::clone(&workers));
            delivery.start(&shared)?;
        }
        shared.replay.use_redis(shared.runtime.load().redis.clone());
        let (shutdown, _) = watch::channel(false);

        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = TcpListener::bind(l.bind)
                .await
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            let acme = match l.tls.as_ref().and_then(|t| t.acme.as_ref()) {
                None => None,
                Some(acme) => Some(Arc::new(acme::AcmeSlot::new(acme).map_err(|why| {
                    StartError::Acme {
                        name: l.name.clone(),
                        why,
                    }
                })?)),
            };
            let tls = match &l.tls {
                None => None,
                Some(config) => {
                    let tls =
                        tls::build(config, acme.clone()).map_err(|source| StartError::Tls {
                            name: l.name.clone(),
                            source,
                        })?;
                    shared
                        .metrics
                        .set_cert_expiries(&l.name, &tls::expiries(config));
                    Some(Arc::new(ArcSwap::new(tls)))
                }
            };
            bound.push((l.clone(), socket, tls, acme));
        }
        let admin_socket = match config.admin {
            None => None,
            Some(addr) => {
                let bind_error = |source| StartError::Bind {
                    name: "admin".into(),
                    addr,
                    source,
                };
                let socket = TcpListener::bind(addr).await.map_err(bind_error)?;
                Some((socket.local_addr().map_err(bind_error)?, socket))
            }
        };

        let mut listeners = Vec::new();
        for (listener_config, socket, tls, acme) in bound {
            let addr = socket.local_addr().map_err(|source| StartError::Bind {
                name: listener_config.name.clone(),
                addr: listener_config.bind,
                source,
            })?;
            let slots = Arc::new(Semaphore::new(config.limits.max_connections));
            let task = tokio::spawn(listener::accept_loop(
                listener::Listener {
                    name: listener_config.name.as_str().into(),
                    socket,
                    tls: tls.clone(),
                    proxy_protocol: listener_config.proxy_protocol,
                    limits: config.limits.clone(),
                    slots: Arc::clone(&slots),
                },
                Arc::clone(&shared),
                Arc::clone(&workers),
                shutdown.subscribe(),
            ));
            event(
                "info",
                "listening",
                serde_json::json!({
                    "listener": listener_config.name, "addr": addr.to_string(), "tls": tls.is_some(),
                }),
            );
            if let (Some(slot), Some(acme_config)) = (
                &acme,
                listener_config.tls.as_ref().and_then(|t| t.acme.as_ref()),
            ) {
                // Orders in the background: the listener serves its other certificates, or a
                // placeholder, until the first one is issued.
                tokio::spawn(acme::run(
                    listener_config.name.clone(),
                    acme_config.clone(),
                    Arc::clone(slot),
                    Arc::clone(&shared),
                    shutdown.subscribe(),
                ));
            }
            listeners.push(Running {
                config: listener_config,
                addr,
                tls,
                acme,
                slots,
                max_connections: config.limits.max_connections,
                task,
            });
        }
        let admin = match admin_socket {
            None => None,
            Some((addr, socket)) => {
                event(
                    "info",
                    "listening",
                    serde_json::json!({"listener": "admin", "addr": addr.to_string(), "tls": false}),
                );
                Some((
                    addr,
                    tokio::spawn(crate::admin::serve(socket, Arc::clone(&shared))),
                ))
            }
        };
        let housekeeping = tokio::spawn(crate::admin::housekeeping(Arc::clone(&shared)));
        Ok(Gateway {
            listeners,
            admin,
            shared,
            shutdown,
            workers,
            log_writer,
            housekeeping,
            drain_timeout: config.limits.drain_timeout,
        })
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.config.name == listener)
            .map(|l| l.addr)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Applies a new config: routes, upstreams and certificates change at once for new requests;
    /// requests already running finish on the snapshot they started with. Listener addresses and
    /// limits need a restart, and the log says so.
    /// Returns the files the new config names, for the watcher.
    pub fn reload(&self, path: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
        let result = crate::config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|config| self.try_reload(&config).map(|()| config.files));
        let metrics = &self.shared.metrics;
        match &result {
            Ok(_) => {
                metrics.count_config_reload(true);
                event(
                    "info",
                    "config reloaded",
                    serde_json::json!({"file": path.display().to_string()}),
                );
            }
            Err(why) => {
                metrics.count_config_reload(false);
                event(
                    "error",
                    "config reload failed; keeping the running config",
                    serde_json::json!({"error": why}),
                );
            }
        }
        result
    }

    fn try_reload(&self, config: &Config) -> Result<(), String> {
        let previous = self.shared.runtime.load_full();
        let runtime = Runtime::build(
            config,
            Some(&previous),
            &self.shared.metrics,
            self.workers.handles(),
        )
        .map_err(|e| e.to_string())?;
        let mut certificates = Vec::new();
        for running in &self.listeners {
            let new = config
                .listeners
                .iter()
                .find(|l| l.name == running.config.name);
            match (new, &running.tls) {
                (Some(new), Some(slot)) if new.bind == running.config.bind => match &new.tls {
                    Some(tls_config) => {
                        let old_acme = running.config.tls.as_ref().and_then(|t| t.acme.as_ref());
                        if tls_config.acme.as_ref() != old_acme {
                            event(
                                "warn",
                                "acme changes need a restart",
                                serde_json::json!({"listener": new.name}),
                            );
                        }
                        certificates.push((
                            slot,
                            tls::build(tls_config, running.acme.clone())
                                .map_err(|e| e.to_string())?,
                            (&new.name, tls_config),
                        ))
                    }
                    None => {
                        return Err(format!(
                            "listener {}: switching TLS off needs a restart",
                            new.name
                        ))
                    }
                },
                (Some(new), None) if new.bind == running.config.bind && new.tls.is_none() => {}
                _ => event(
                    "warn",
                    "listener changes need a restart",
                    serde_json::json!({"listener": running.config.name}),
                ),
            }
        }
        for (slot, tls, (listener, tls_config)) in certificates {
            slot.store(tls);
            self.shared
                .metrics
                .set_cert_expiries(listener, &tls::expiries(tls_config));
        }
        let removed: Vec<Arc<str>> = previous
            .routes
            .iter()
            .filter(|old| !runtime.routes.iter().any(|new| new.name == old.name))
            .map(|old| Arc::clone(&old.name))
            .collect();
        self.shared.replay.use_redis(runtime.redis.clone());
        self.shared.runtime.store(Arc::new(runtime));
        if let Some(delivery) = &self.shared.delivery {
            delivery.reconfigure(&config.delivery);
        }
        let removed: Vec<&str> = removed.iter().map(|name| &**name).collect();
        self.shared.metrics.forget_routes(&removed);
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the drain timeout, flushes the
    /// access log.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.drain_timeout + Duration::from_secs(1);
        for running in &self.listeners {
            let permits = u32::try_from(running.max_connections).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout_at(deadline, running.slots.acquire_many(permits)).await;
            running.task.abort();
        }
        // A request whose client has gone still runs to its end (forwarded and logged); the
        // workers stop only once none is left, or at the deadline.
        while self.shared.in_flight.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Delivery attempts under way get what is left of the drain to record their result.
        if let Some(delivery) = &self.shared.delivery {
            delivery.stop(deadline).await;
        }
        self.housekeeping.abort();
        let _ = self.housekeeping.await;
        if let Some((_, task)) = self.admin {
            task.abort();
            let _ = task.await;
        }
        drop(self.shared);
        // The workers flush their access-log batches as they exit.
        self.workers.stop(Duration::from_secs(5)).await;
        if tokio::time::timeout(Duration::from_secs(5), self.log_writer)
            .await
            .is_err()
        {
            event(
                "warn",
                "access log not fully flushed at exit",
                serde_json::json!({}),
            );
        }
        event("info", "stopped", serde_json::json!({}));
    }
}

/// The worker threads, each batching its access-log lines and handing them over every
/// [`FLUSH_EVERY`](crate::observe::access_log::FLUSH_EVERY) and when it exits.
fn start_workers(count: usize, access_log: &AccessLog) -> std::io::Result<Arc<Workers>> {
    let on_exit = {
        let access_log = access_log.clone();
        Arc::new(move || access_log.flush())
    };
    let workers = Workers::start(count, Arc::new(AccessLog::batch_on_this_thread), on_exit)?;
    workers.spawn_on_each(|| {
        let access_log = access_log.clone();
        async move {
            let mut tick = tokio::time::interval(crate::observe::access_log::FLUSH_EVERY);
            loop {
                tick.tick().await;
                access_log.flush();
            }
        }
    });
    Ok(Arc::new(workers))
}

/// Resolves once shutdown has begun.
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
