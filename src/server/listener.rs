//! Accepts connections on one listener: enforces the connection cap, runs the TLS handshake under
//! a deadline, and hands the stream to `http::serve`. It never reads a request itself.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::observe::event;
use crate::observe::metrics::ListenerLabels;
use crate::pipeline::{ConnInfo, Shared};

/// One bound listener, ready to accept.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    /// Swapped on reload, so new connections get a new certificate without a restart.
    pub tls: Option<Arc<ArcSwap<ServerConfig>>>,
    pub limits: Limits,
    /// One permit per open connection. Acquiring all of them means every connection is closed,
    /// which is how a drain knows it is done.
    pub slots: Arc<Semaphore>,
}

pub async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
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
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let tls = listener.tls.as_ref().map(|t| t.load_full());
        let name = Arc::clone(&listener.name);
        let limits = listener.limits.clone();
        let shutdown = shutdown.clone();
        let labels = labels.clone();
        tokio::spawn(async move {
            let open = shared
                .metrics
                .open_connections
                .get_or_create(&labels)
                .clone();
            open.inc();
            serve_connection(
                stream, peer, tls, name, &limits, &builder, &shared, shutdown,
            )
            .await;
            open.dec();
            drop(slot);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    listener: Arc<str>,
    limits: &Limits,
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    shared: &Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        let conn = Arc::new(ConnInfo {
            listener,
            peer,
            tls_version: None,
        });
        super::http::serve(
            builder,
            stream,
            conn,
            Arc::clone(shared),
            shutdown,
            limits.drain_timeout,
        )
        .await;
        return;
    };
    let handshake = tokio::time::timeout(
        limits.handshake_timeout,
        TlsAcceptor::from(tls).accept(stream),
    )
    .await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) | Err(_) => {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ListenerLabels {
                    listener: listener.to_string(),
                })
                .inc();
            return;
        }
    };
    let tls_version = super::tls::version_name(stream.get_ref().1.protocol_version());
    let conn = Arc::new(ConnInfo {
        listener,
        peer,
        tls_version,
    });
    super::http::serve(
        builder,
        stream,
        conn,
        Arc::clone(shared),
        shutdown,
        limits.drain_timeout,
    )
    .await;
}
