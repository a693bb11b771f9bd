//! The hand-written exchange (`http1`) against hyper's own client (`hyper::client::conn::http1`)
//! over the same upstream byte streams: the fuzz seeds in `fuzz/corpus/upstream_response` and
//! a table of framings. Where both answer, status, headers and body must be the same; where
//! ours refuses and hyper answers, the case must be one of the deliberate refusals listed
//! (ambiguous framing is refused, never guessed at: RFC 9112 section 6.3 allows either).

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::http1::{Connection, RequestHead};

const MAX: usize = 1 << 20;

/// An upstream on one end of an in-memory pipe: reads the request head, then sends `answer`
/// in pieces of `piece` bytes and closes.
fn upstream(answer: Vec<u8>, piece: usize) -> DuplexStream {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        for piece in answer.chunks(piece.max(1)) {
            if server.write_all(piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        let _ = server.shutdown().await;
        // Keep the pipe open for reading until the client is done with it.
        let _ = server.read(&mut buf).await;
    });
    client
}

async fn ours(answer: &[u8], piece: usize, method: &Method) -> Option<Response<Bytes>> {
    let mut connection = Connection::new(Box::new(upstream(answer.to_vec(), piece)));
    let head = RequestHead::new(method, "/", 0).finish(method, 0);
    connection
        .exchange(head, &[], method, MAX)
        .await
        .ok()
        .map(|a| a.response)
}

async fn hypers(answer: &[u8], piece: usize, method: &Method) -> Option<Response<Bytes>> {
    let io = TokioIo::new(upstream(answer.to_vec(), piece));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "upstream")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Response::from_parts(parts, body))
}

/// Compares the two on one byte stream; `refused_by_us` marks a deliberate difference.
/// Returns whether both answered.
async fn compare(
    name: &str,
    answer: &[u8],
    piece: usize,
    method: Method,
    refused_by_us: bool,
) -> bool {
    let (a, b) = (
        ours(answer, piece, &method).await,
        hypers(answer, piece, &method).await,
    );
    match (a, b) {
        (Some(a), Some(b)) => {
            assert!(!refused_by_us, "{name}: expected our refusal, got {a:?}");
            assert_eq!(a.status(), b.status(), "{name}: status");
            // Not the version: ours leaves every answer HTTP/1.1, because the gateway re-frames
            // it for its own client (hyper's server writes the status line from it).
            assert_eq!(a.headers(), b.headers(), "{name}: headers");
            assert_eq!(a.body(), b.body(), "{name}: body");
            true
        }
        (None, None) => false,
        (None, Some(b)) => {
            assert!(refused_by_us, "{name}: hyper answered {b:?}, we refused");
            false
        }
        (Some(a), None) => panic!("{name}: we answered {a:?}, hyper refused"),
    }
}

#[tokio::test]
async fn the_fuzz_seeds_read_the_same_as_with_hypers_client() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/upstream_response");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let [piece, choice, answer @ ..] = &data[..] else {
            continue;
        };
        let method = if choice & 1 == 1 {
            Method::HEAD
        } else {
            Method::POST
        };
        for piece in [usize::from(*piece), 1, 7, answer.len()] {
            let name = path.display().to_string();
            assert!(
                compare(&name, answer, piece, method.clone(), false).await,
                "{name}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 4, "the seeds are there: {seen}");
}

#[tokio::test]
async fn framings_read_the_same_as_with_hypers_client() {
    let same: &[(&str, &[u8], Method)] = &[
        ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello", Method::POST),
        ("empty length", b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", Method::POST),
        ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", Method::POST),
        ("chunked upper hex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", Method::POST),
        ("until close", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", Method::POST),
        ("http/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Method::POST),
        ("204 declares a length", b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", Method::POST),
        ("304", b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", Method::POST),
        ("head", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", Method::HEAD),
        ("100 then 200", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", Method::POST),
        ("103 then 200", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::POST),
        ("500", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", Method::POST),
        ("obs-text value", b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n", Method::POST),
        ("short body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", Method::POST),
        ("cut chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", Method::POST),
        ("not http", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", Method::POST),
        ("nothing", b"", Method::POST),
        ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", Method::POST),
    ];
    // The last five are broken answers: both refuse them.
    for (i, (name, answer, method)) in same.iter().enumerate() {
        let answers = i < same.len() - 5;
        for piece in [1, 3, answer.len()] {
            let both = compare(name, answer, piece, method.clone(), false).await;
            assert_eq!(both, answers, "{name}: answered");
        }
    }
    // Ambiguous framing that hyper's client resolves one way and we refuse (a response a
    // smuggling upstream might send; the access log says malformed_response).
    let refused: &[(&str, &[u8])] = &[(
        "length and chunked",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )];
    for (name, answer) in refused {
        assert!(!compare(name, answer, answer.len(), Method::POST, true).await);
    }
}
