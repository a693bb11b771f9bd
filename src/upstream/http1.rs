//! One HTTP/1.1 exchange with an upstream, written and read inside the request's own task: the
//! request goes out in as few writes as possible, the response is read whole (it is bounded by
//! the upstream's `max_response`), and the connection is ready for the next request.
//!
//! hyper's client runs every connection as a task of its own and hands each request, response
//! and body chunk between that task and the request's over channels; for a small webhook the
//! hand-over cost more CPU than the exchange (bench/README). What stays hyper's is the parsing:
//! heads and chunk sizes are read with `httparse`, hyper's own parser.
//!
//! Responses are framed as RFC 9112 section 6.3 says: no body after HEAD or for 1xx, 204 and
//! 304; else `Transfer-Encoding` ending in chunked; else `Content-Length`; else until the upstream
//! closes. A response with both `Transfer-Encoding` and `Content-Length`, a length that is not
//! one number, or a `101` nobody asked for is refused as malformed, never guessed at.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The most a response head (and, separately, its trailers) may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most header lines a response head may have: hyper's client default.
const MAX_HEADERS: usize = 100;
/// A chunk-size line longer than this (extensions included) is not a real upstream's.
const MAX_CHUNK_LINE: usize = 4096;
/// What each read asks for at least.
const READ_SIZE: usize = 16 * 1024;
/// Bodies up to this size are copied behind the head and go out in one write.
const COALESCE: usize = 16 * 1024;

/// A byte stream to an upstream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The connection broke or closed before the whole response was read.
    #[error("the connection broke or closed before the whole response was read")]
    Broken,
    /// The response is not HTTP/1.1 as an upstream may send it.
    #[error("the response is not valid HTTP/1.1")]
    Malformed,
    /// The response body is larger than the upstream's `max_response`.
    #[error("the response body is larger than max_response")]
    TooLarge,
}

/// A response read to its end, and whether its connection can carry another request.
pub struct Answer {
    pub response: Response<Bytes>,
    pub reusable: bool,
}

/// One open connection to an upstream.
pub struct Connection {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed; empty between exchanges.
    buf: BytesMut,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Connection {
    pub fn new(io: Box<dyn Io>) -> Connection {
        Connection {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection is still open: the upstream has neither closed it nor sent
    /// anything unasked. One look at what the connection already knows, without waiting.
    pub fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        // TLS records that carry no data (session tickets) are consumed and leave it pending.
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Writes the request (a head from [`RequestHead`], then the body) and reads the
    /// response. Nothing is retried: once a byte is written, the upstream may have acted on it.
    pub async fn exchange(
        &mut self,
        head: Vec<u8>,
        body: &[Bytes],
        method: &Method,
        max_response: usize,
    ) -> Result<Answer, ExchangeError> {
        self.write_request(head, body)
            .await
            .map_err(|_| ExchangeError::Broken)?;
        // Only a connection with nothing left over is reused (see `reusable` below).
        debug_assert!(self.buf.is_empty());
        let (mut response, framing, keep_alive) = loop {
            let (response, framing, keep_alive) = self.read_head(method).await?;
            // Interim answers (100 Continue, 103 Early Hints) precede the real one.
            if !response.status().is_informational() {
                break (response, framing, keep_alive);
            }
        };
        let body = match framing {
            Framing::Empty => Bytes::new(),
            Framing::Length(length) => self.read_length(length, max_response).await?,
            Framing::Chunked => self.read_chunked(max_response).await?,
            Framing::UntilClose => self.read_until_close(max_response).await?,
        };
        *response.body_mut() = body;
        // Anything after the response was not asked for: the connection is out of step.
        let reusable = keep_alive && framing != Framing::UntilClose && self.buf.is_empty();
        Ok(Answer { response, reusable })
    }

    async fn write_request(&mut self, mut head: Vec<u8>, body: &[Bytes]) -> std::io::Result<()> {
        let length: usize = body.iter().map(Bytes::len).sum();
        if length <= COALESCE {
            head.reserve(length);
            for frame in body {
                head.extend_from_slice(frame);
            }
            self.io.write_all(&head).await?;
        } else {
            // A large body is many frames: handed to the kernel together, as far as it takes
            // them, not one write each.
            let mut slices: Vec<IoSlice<'_>> = std::iter::once(&head[..])
                .chain(body.iter().map(|frame| &frame[..]))
                .map(IoSlice::new)
                .collect();
            let mut pending = &mut slices[..];
            while !pending.is_empty() {
                let written = self.io.write_vectored(pending).await?;
                if written == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut pending, written);
            }
        }
        self.io.flush().await
    }

    /// Reads more into the buffer; an upstream that closes or fails mid-response broke it.
    async fn read_more(&mut self) -> Result<(), ExchangeError> {
        self.buf.reserve(READ_SIZE);
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ExchangeError::Broken),
            Ok(_) => Ok(()),
        }
    }

    async fn read_head(
        &mut self,
        method: &Method,
    ) -> Result<(Response<Bytes>, Framing, bool), ExchangeError> {
        loop {
            if !self.buf.is_empty() {
                if let Some(parsed) = parse_head(&mut self.buf, method)? {
                    return Ok(parsed);
                }
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Malformed);
            }
            self.read_more().await?;
        }
    }

    async fn read_length(
        &mut self,
        length: u64,
        max_response: usize,
    ) -> Result<Bytes, ExchangeError> {
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= max_response)
            .ok_or(ExchangeError::TooLarge)?;
        if self.buf.len() < length {
            self.buf.reserve(length - self.buf.len());
        }
        while self.buf.len() < length {
            self.read_more().await?;
        }
        Ok(self.buf.split_to(length).freeze())
    }

    async fn read_chunked(&mut self, max_response: usize) -> Result<Bytes, ExchangeError> {
        let mut body = BytesMut::new();
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        self.buf.advance(line);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        self.read_more().await?
                    }
                    _ => return Err(ExchangeError::Malformed),
                }
            };
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|&size| size <= max_response - body.len())
                .ok_or(ExchangeError::TooLarge)?;
            while self.buf.len() < size + 2 {
                self.read_more().await?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ExchangeError::Malformed);
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
        // Trailer lines, then the empty line that ends the message. Trailers are not passed
        // on: the response goes out with a length, and nothing here depends on them.
        let mut trailers = 0;
        loop {
            match self.buf.windows(2).position(|pair| pair == b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(body.freeze());
                }
                Some(line) => {
                    trailers += line + 2;
                    self.buf.advance(line + 2);
                }
                None => self.read_more().await?,
            }
            if trailers + self.buf.len() > MAX_HEAD {
                return Err(ExchangeError::Malformed);
            }
        }
    }

    async fn read_until_close(&mut self, max_response: usize) -> Result<Bytes, ExchangeError> {
        loop {
            if self.buf.len() > max_response {
                return Err(ExchangeError::TooLarge);
            }
            self.buf.reserve(READ_SIZE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(self.buf.split().freeze()),
                Ok(_) => {}
                Err(_) => return Err(ExchangeError::Broken),
            }
        }
    }
}

/// A request head being written as HTTP/1.1 sends it, straight from typed names and values
/// (so nothing in it can break the framing), with room behind it for a small body.
pub struct RequestHead(Vec<u8>);

impl RequestHead {
    /// Starts with the request line; `target` must pass [`is_origin_form`].
    pub fn new(method: &Method, target: &str, body_length: u64) -> RequestHead {
        let small_body = usize::try_from(body_length).map_or(0, |length| length.min(COALESCE));
        let mut head = Vec::with_capacity(1024 + small_body);
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHead(head)
    }

    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.header_with(name, |out| out.extend_from_slice(value.as_bytes()));
    }

    /// A header whose value `write` appends; it must append only visible ASCII and spaces.
    pub fn header_with(&mut self, name: &HeaderName, write: impl FnOnce(&mut Vec<u8>)) {
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        write(&mut self.0);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Ends the head with the body's `Content-Length`: as hyper does, for any body, and for an
    /// empty one where a body is expected.
    pub fn finish(mut self, method: &Method, body_length: u64) -> Vec<u8> {
        if body_length > 0 || [Method::POST, Method::PUT, Method::PATCH].contains(method) {
            let mut digits = itoa::Buffer::new();
            let length = digits.format(body_length);
            self.header_with(&header::CONTENT_LENGTH, |out| {
                out.extend_from_slice(length.as_bytes())
            });
        }
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// Whether `target` can stand in a request line: visible ASCII, starting with `/`.
pub fn is_origin_form(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a complete head off the front of `buf`, or returns `None` if it is not all there yet.
/// Header values stay in the buffer they were read into: the head is split off and shared.
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<(Response<Bytes>, Framing, bool)>, ExchangeError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Malformed),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ExchangeError::Malformed)?;
    let http11 = parsed.version == Some(1);
    // Where each name and value sits in the head, so they can be sliced out of it once split.
    let start = buf.as_ptr() as usize;
    let spans: Vec<(HeaderName, usize, usize)> = parsed
        .headers
        .iter()
        .map(|h| {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ExchangeError::Malformed)?;
            let offset = h.value.as_ptr() as usize - start;
            Ok((name, offset, offset + h.value.len()))
        })
        .collect::<Result<_, _>>()?;
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, from, to) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(from..to))
            .map_err(|_| ExchangeError::Malformed)?;
        headers.append(name, value);
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ExchangeError::Malformed);
    }
    let framing = framing(status, method, &headers)?;
    let keep_alive = http11
        && !list_elements(&headers, header::CONNECTION).any(|o| o.eq_ignore_ascii_case("close"));
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some((response, framing, keep_alive)))
}

fn framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Framing, ExchangeError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(ExchangeError::Malformed);
        }
        // Only the last coding decides.
        return Ok(
            match list_elements(headers, header::TRANSFER_ENCODING).next_back() {
                Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked,
                _ => Framing::UntilClose,
            },
        );
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // `Content-Length: 5, 5` is one length said twice; `5, 6` is no length at all.
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed =
                (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                    .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                    .ok_or(ExchangeError::Malformed)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(ExchangeError::Malformed);
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(length) => Framing::Length(length),
        None => Framing::UntilClose,
    })
}

/// The elements of a comma-separated list header (`Connection`, `Transfer-Encoding`), over all
/// its lines, in order, trimmed; empty elements are skipped, as RFC 9110 section 5.6.1 says.
pub fn list_elements(
    headers: &HeaderMap,
    name: HeaderName,
) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const MAX: usize = 1024;

    /// A real upstream socket that reads one request, answers with `pieces` (each written on
    /// its own, a moment apart, so the reader sees partial heads and bodies), then closes if
    /// `close`. Returns the connection to it and what the upstream received.
    async fn upstream(
        pieces: Vec<&'static [u8]>,
        close: bool,
    ) -> (Connection, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            // Requests in these tests end with an empty body or "hello".
            while !(received.ends_with(b"\r\n\r\n") || received.ends_with(b"hello")) {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed early");
                received.extend_from_slice(&buf[..n]);
            }
            for piece in pieces {
                socket.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if !close {
                // Stay open until the client is done with the test.
                let _ = socket.read(&mut buf).await;
            }
            received
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        (Connection::new(Box::new(tcp)), peer)
    }

    async fn exchange(
        pieces: Vec<&'static [u8]>,
        close: bool,
        method: Method,
    ) -> (Result<Answer, ExchangeError>, Connection) {
        let (mut connection, _peer) = upstream(pieces, close).await;
        let head = RequestHead::new(&method, "/", 0).finish(&method, 0);
        let answer = connection.exchange(head, &[], &method, MAX).await;
        (answer, connection)
    }

    async fn body_of(pieces: Vec<&'static [u8]>, close: bool) -> (Bytes, bool) {
        let (answer, _) = exchange(pieces, close, Method::POST).await;
        let answer = answer.expect("a response");
        (answer.response.into_body(), answer.reusable)
    }

    async fn error_of(pieces: Vec<&'static [u8]>, close: bool) -> ExchangeError {
        match exchange(pieces, close, Method::POST).await.0 {
            Ok(answer) => panic!("expected an error, got {}", answer.response.status()),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn writes_the_head_with_the_body_length_and_the_body_behind_it() {
        let (mut connection, peer) =
            upstream(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false).await;
        let mut head = RequestHead::new(&Method::POST, "/hooks/x?y=1", 5);
        head.header(&header::HOST, &HeaderValue::from_static("backend:8080"));
        let x_a = HeaderName::from_static("x-a");
        head.header(&x_a, &HeaderValue::from_static("1"));
        head.header_with(&x_a, |out| out.extend_from_slice(b"2"));
        let head = head.finish(&Method::POST, 5);
        let body = [Bytes::from_static(b"hel"), Bytes::from_static(b"lo")];
        let answer = connection
            .exchange(head, &body, &Method::POST, MAX)
            .await
            .unwrap();
        assert_eq!(answer.response.status(), 204);
        drop(connection);
        let received = String::from_utf8(peer.await.unwrap()).unwrap();
        assert_eq!(
            received,
            "POST /hooks/x?y=1 HTTP/1.1\r\nhost: backend:8080\r\nx-a: 1\r\nx-a: 2\r\n\
             content-length: 5\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn a_large_body_in_many_frames_arrives_whole_and_in_order() {
        let (mut connection, peer) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
        let mut frames: Vec<Bytes> = (0..200u8)
            .map(|i| Bytes::from(vec![i; 1000 + usize::from(i)]))
            .collect();
        frames.push(Bytes::from_static(b"hello"));
        let length: usize = frames.iter().map(Bytes::len).sum();
        let head = RequestHead::new(&Method::POST, "/", length as u64);
        let head = head.finish(&Method::POST, length as u64);
        let head_length = head.len();
        let answer = connection.exchange(head, &frames, &Method::POST, MAX);
        assert_eq!(answer.await.unwrap().response.status(), 200);
        drop(connection);
        let received = peer.await.unwrap();
        assert_eq!(received[head_length..], frames.concat()[..]);
    }

    #[test]
    fn a_bodiless_get_has_no_length_and_an_empty_post_has_zero() {
        let get = RequestHead::new(&Method::GET, "/", 0).finish(&Method::GET, 0);
        assert_eq!(get, b"GET / HTTP/1.1\r\n\r\n");
        let post = RequestHead::new(&Method::POST, "/", 0).finish(&Method::POST, 0);
        assert_eq!(post, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn only_visible_ascii_after_a_slash_is_a_target() {
        assert!(is_origin_form("/hooks/x?a=%20b"));
        assert!(!is_origin_form("hooks"));
        assert!(!is_origin_form("/a b"));
        assert!(!is_origin_form("/a\r\nx: y"));
        assert!(!is_origin_form("/é"));
    }

    #[tokio::test]
    async fn reads_a_length_delimited_body_split_across_reads_and_keeps_the_connection() {
        let (answer, mut connection) = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 11\r\nX-B: v\r\n\r\nhello",
                b" world",
            ],
            false,
            Method::POST,
        )
        .await;
        let answer = answer.unwrap();
        assert_eq!(answer.response.headers()["x-b"], "v");
        assert_eq!(answer.response.body().as_ref(), b"hello world");
        assert!(answer.reusable);
        assert!(connection.is_open(), "the upstream keeps it open");
    }

    #[tokio::test]
    async fn decodes_chunks_with_extensions_and_trailers_across_reads() {
        let (body, reusable) = body_of(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        assert_eq!(body.as_ref(), b"hello world");
        assert!(reusable);
    }

    #[tokio::test]
    async fn reads_until_close_without_a_length_and_does_not_reuse() {
        let (body, reusable) = body_of(vec![b"HTTP/1.1 200 OK\r\n\r\nto the", b" end"], true).await;
        assert_eq!(body.as_ref(), b"to the end");
        assert!(!reusable);
    }

    #[tokio::test]
    async fn skips_interim_responses() {
        let (answer, _) = exchange(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
            Method::POST,
        )
        .await;
        let answer = answer.unwrap();
        assert_eq!(answer.response.status(), 201);
        assert_eq!(answer.response.body().as_ref(), b"ok");
    }

    #[tokio::test]
    async fn no_body_after_head_or_for_204_and_304_whatever_the_length_says() {
        let (answer, _) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"],
            false,
            Method::HEAD,
        )
        .await;
        let answer = answer.unwrap();
        assert!(answer.response.body().is_empty() && answer.reusable);
        let (body, reusable) = body_of(
            vec![b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"],
            false,
        )
        .await;
        assert!(body.is_empty() && reusable);
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_reused_and_neither_is_a_connection_out_of_step() {
        let (_, reusable) = body_of(
            vec![b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx"],
            false,
        )
        .await;
        assert!(!reusable);
        let (_, reusable) = body_of(
            vec![b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"],
            false,
        )
        .await;
        assert!(!reusable);
        let (body, reusable) = body_of(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n"],
            false,
        )
        .await;
        assert_eq!(body.as_ref(), b"x");
        assert!(!reusable, "bytes after the response");
        let (body, reusable) = body_of(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx"],
            false,
        )
        .await;
        assert!(body.as_ref() == b"x" && reusable, "one length said twice");
    }

    #[tokio::test]
    async fn ambiguous_or_broken_framing_is_malformed() {
        let cases: [&'static [u8]; 8] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                error_of(vec![case], false).await,
                ExchangeError::Malformed,
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_malformed_at_the_limit() {
        static LONG: [u8; MAX_HEAD + 10] = [b'a'; MAX_HEAD + 10];
        let e = error_of(vec![b"HTTP/1.1 200 OK\r\nX-Long: ", &LONG], false).await;
        assert_eq!(e, ExchangeError::Malformed);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large_however_they_are_framed() {
        static BIG: [u8; MAX + 1] = [b'z'; MAX + 1];
        let declared = error_of(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n"],
            false,
        );
        assert_eq!(declared.await, ExchangeError::TooLarge);
        let chunked = error_of(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3ff\r\n",
                &BIG[..1023],
                b"\r\n2\r\nzz\r\n",
            ],
            false,
        );
        assert_eq!(chunked.await, ExchangeError::TooLarge);
        let until_close = error_of(vec![b"HTTP/1.1 200 OK\r\n\r\n", &BIG], true);
        assert_eq!(until_close.await, ExchangeError::TooLarge);
        let (body, _) = body_of(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n",
                &BIG[..MAX],
            ],
            false,
        )
        .await;
        assert_eq!(body.len(), MAX, "exactly the limit passes");
    }

    #[tokio::test]
    async fn an_upstream_that_closes_early_broke_the_exchange() {
        assert_eq!(error_of(vec![], true).await, ExchangeError::Broken);
        let cut_head = error_of(vec![b"HTTP/1.1 200 OK\r\nContent-"], true);
        assert_eq!(cut_head.await, ExchangeError::Broken);
        let cut_body = error_of(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"],
            true,
        );
        assert_eq!(cut_body.await, ExchangeError::Broken);
        let cut_chunks = error_of(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
            true,
        );
        assert_eq!(cut_chunks.await, ExchangeError::Broken);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_open() {
        let (answer, mut connection) = exchange(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            true,
            Method::POST,
        )
        .await;
        assert!(
            answer.unwrap().reusable,
            "the response itself allowed reuse"
        );
        // The upstream's FIN arrives a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while connection.is_open() {
            assert!(std::time::Instant::now() < deadline, "close not noticed");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
