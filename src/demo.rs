//! Try-it-out helpers for a fresh machine: a self-signed development certificate and a tiny echo
//! backend. Neither is part of the request path; `hookgate run` never uses them, and they are
//! part of the binary (`main.rs` declares this module), not of the library.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Writes a self-signed certificate for `localhost`, `127.0.0.1` and `::1` and its key, unless
/// both files exist already. Returns whether it wrote them. The key file is created 0600.
pub fn ensure_dev_certificate(cert: &Path, key: &Path) -> Result<bool, String> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(cert, certified.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(key, certified.signing_key.serialize_pem().as_bytes())?;
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A backend for trying routes: answers 200 with a JSON summary of what arrived (method, path,
/// the headers the gateway added, body length) so a curl through the gateway shows the whole trip.
pub async fn run_echo(bind: SocketAddr) -> std::io::Result<()> {
    let socket = TcpListener::bind(bind).await?;
    hookgate::observe::event(
        "info",
        "echo backend listening",
        serde_json::json!({"addr": socket.local_addr()?.to_string()}),
    );
    loop {
        let (stream, _) = socket.accept().await?;
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, 16 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let summary = serde_json::json!({
        "echo": "hookgate demo backend",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "x_forwarded_for": header("x-forwarded-for"),
        "x_forwarded_proto": header("x-forwarded-proto"),
        "x_request_id": header("x-request-id"),
        "x_hookgate_route": header("x-hookgate-route"),
        "x_hookgate_verified": header("x-hookgate-verified"),
        "body_bytes": body.as_ref().map(|b| b.len()).ok(),
        "body": body.as_ref().ok().and_then(|b| std::str::from_utf8(b).ok()),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{summary}\n"))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
