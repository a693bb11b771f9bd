//! Accepts connections on one listener: enforces the connection cap, runs the TLS handshake under
//! a deadline, and hands the stream to `http::serve`. It never reads a request itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::proxy_protocol;
use super::workers::Workers;

use crate::config::Limits;
use crate::observe::event;
use crate::observe::metrics::ListenerLabels;
use crate::pipeline::client_ip::normalize;
use crate::state::{ConnInfo, Shared};

/// One bound listener, ready to accept.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    /// Swapped on reload, so new connections get a new certificate without a restart.
    pub tls: Option<Arc<ArcSwap<ServerConfig>>>,
    pub proxy_protocol: bool,
    pub limits: Limits,
    /// One permit per open connection. Acquiring all of them means every connection is closed,
    /// which is how a drain knows it is done.
    pub slots: Arc<Semaphore>,
}

/// Accepts connections and hands each to a worker thread, where it stays until it closes.
pub async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(super::http::builder(&listener.limits));
    let labels = ListenerLabels {
        listener: listener.name.to_string(),
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            _ = crate::server::stopping(&mut shutdown) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors or similar: say so, back off, keep serving the rest.
                event(
                    "error",
                    "accept failed",
                    serde_json::json!({"listener": &*listener.name, "error": e.to_string()}),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&listener.slots).try_acquire_owned() else {
            shared
                .metrics
                .connections_refused
                .get_or_create(&labels)
                .inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Out of this runtime's reactor, into the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(_) => continue,
        };
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let setup = Setup {
            name: Arc::clone(&listener.name),
            tls: listener.tls.as_ref().map(|t| t.load_full()),
            proxy_protocol: listener.proxy_protocol,
            limits: listener.limits.clone(),
        };
        let shutdown = shutdown.clone();
        let labels = labels.clone();
        workers.spawn(async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            let open = shared
                .metrics
                .open_connections
                .get_or_create(&labels)
                .clone();
            open.inc();
            serve_connection(stream, peer, setup, &builder, &shared, shutdown).await;
            open.dec();
            drop(slot);
        });
    }
}

/// How long a PROXY protocol header may take: a load balancer sends it at once.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection needs to know about its listener.
struct Setup {
    name: Arc<str>,
    tls: Option<Arc<ServerConfig>>,
    proxy_protocol: bool,
    limits: Limits,
}

async fn serve_connection(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    setup: Setup,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let drain = setup.limits.drain_timeout;
    let deadlines = super::deadlines::Deadlines::from_limits(&setup.limits);
    if setup.proxy_protocol {
        // Only a trusted proxy may say where a connection came from.
        if !shared
            .runtime
            .load()
            .client_ip
            .trusted_proxies
            .contains(peer.ip())
        {
            event(
                "warn",
                "PROXY protocol connection from an untrusted peer closed",
                serde_json::json!({
                    "listener": &*setup.name, "peer_ip": normalize(peer.ip()).to_string(),
                }),
            );
            return;
        }
        match proxy_protocol::read_header_with_timeout(&mut stream, PROXY_HEADER_TIMEOUT).await {
            Ok(header) => peer = header.client_addr(peer),
            Err(e) => {
                event(
                    "warn",
                    "bad PROXY protocol header; connection closed",
                    serde_json::json!({
                        "listener": &*setup.name, "peer_ip": normalize(peer.ip()).to_string(), "error": e.to_string(),
                    }),
                );
                return;
            }
        }
    }
    let Some(tls) = setup.tls else {
        let conn = Arc::new(ConnInfo {
            listener: setup.name,
            peer,
            tls_version: None,
            requests: Default::default(),
            answers: Default::default(),
        });
        super::http::serve(
            builder,
            stream,
            conn,
            Arc::clone(shared),
            shutdown,
            drain,
            deadlines,
        )
        .await;
        return;
    };
    // Fallible, and polled by reference: a failed or timed-out handshake gives the socket back,
    // so the failure is counted before the peer sees the close.
    let mut accept = TlsAcceptor::from(tls).accept(stream).into_fallible();
    let handshake = tokio::time::timeout(setup.limits.handshake_timeout, &mut accept).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        failed => {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ListenerLabels {
                    listener: setup.name.to_string(),
                })
                .inc();
            drop(failed);
            drop(accept);
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(super::tls::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the handshake was the whole answer (RFC 8737 section 3).
        return;
    }
    let tls_version = super::tls::version_name(stream.get_ref().1.protocol_version());
    let conn = Arc::new(ConnInfo {
        listener: setup.name,
        peer,
        tls_version,
        requests: Default::default(),
        answers: Default::default(),
    });
    super::http::serve(
        builder,
        stream,
        conn,
        Arc::clone(shared),
        shutdown,
        drain,
        deadlines,
    )
    .await;
}
