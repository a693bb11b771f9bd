//! `floor LISTEN UPSTREAM [spawn]`: a plain-HTTP reverse proxy built from the same pieces as
//! hookgate (hyper-util auto server, hyper-util legacy pooled client, whole bodies in memory),
//! and nothing else. With `spawn`, each request runs in its own task, as hookgate's do.
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn proxy(req: Request<Incoming>, client: HttpClient, upstream: String) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Response::builder().status(400).body(Full::default()).unwrap(),
    };
    let uri: Uri = format!("http://{upstream}{}", parts.uri.path()).parse().unwrap();
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    headers.remove(http::header::CONNECTION);
    *out.headers_mut() = headers;
    match client.request(out).await {
        Ok(resp) => {
            let (head, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(head, Full::new(body))
        }
        Err(_) => Response::builder().status(502).body(Full::default()).unwrap(),
    }
}

fn new_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(256)
        .build(http)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args[1].parse().expect("LISTEN");
    let upstream = args[2].clone();
    let mode = args.get(3).cloned().unwrap_or_default();
    let spawn = mode == "spawn";
    let listener = std::net::TcpListener::bind(listen).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    if mode == "percore" || mode == "percore-conn" {
        let conn = mode == "percore-conn";
        // One single-threaded runtime per core, each with its own client pool, all accepting
        // on the same socket: no task ever crosses threads.
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let listener = listener.try_clone().expect("clone");
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    if conn {
                        rt.block_on(serve_conn(listener, upstream));
                    } else {
                        rt.block_on(serve(listener, new_client(), upstream, false));
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(serve(listener, new_client(), upstream, spawn));
}

async fn serve(listener: std::net::TcpListener, client: HttpClient, upstream: String, spawn: bool) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register");
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        let _ = socket.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move {
                    let resp = if spawn {
                        tokio::spawn(proxy(req, client, upstream)).await.unwrap()
                    } else {
                        proxy(req, client, upstream).await
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

/// `percore-conn`: hyper's low-level client connections with a plain per-thread pool instead of
/// hyper-util's pooled client.
type Pool = std::sync::Arc<std::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>>;

async fn serve_conn(listener: std::net::TcpListener, upstream: String) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register");
    let pool: Pool = Default::default();
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        let _ = socket.set_nodelay(true);
        let pool = pool.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (pool, upstream) = (pool.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(proxy_conn(req, pool, upstream).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

async fn proxy_conn(req: Request<Incoming>, pool: Pool, upstream: String) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Response::builder().status(400).body(Full::default()).unwrap();
    };
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = parts.uri.path().parse().unwrap();
    let mut headers = parts.headers;
    headers.remove(http::header::CONNECTION);
    headers.insert(http::header::HOST, upstream.parse().unwrap());
    *out.headers_mut() = headers;
    let idle = { pool.lock().unwrap().pop() };
    let mut sender = match idle {
        Some(s) if !s.is_closed() => s,
        _ => {
            let stream = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(async move { let _ = conn.await; });
            sender
        }
    };
    let resp = match sender.send_request(out).await {
        Ok(resp) => resp,
        Err(_) => return Response::builder().status(502).body(Full::default()).unwrap(),
    };
    let (head, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    pool.lock().unwrap().push(sender);
    Response::from_parts(head, Full::new(body))
}
