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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// The connection broke or closed before the whole response was read.
    Broken,
    /// The response is not HTTP/1.1 as an upstream may send it.
    Malformed,
    /// The response body is larger than the upstream's `max_response`.
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

    /// Writes `request` (a head from [`encode_head`] followed by the body) and reads the
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
        self.buf.clear();
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
            self.io.write_all(&head).await?;
            for frame in body {
                self.io.write_all(frame).await?;
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

/// The request line and headers, as HTTP/1.1 sends them, with the body's `Content-Length`
/// (any `Content-Length` in `headers` is left out; `Transfer-Encoding` must not be there).
/// `target` must be a valid origin-form target. Room is left for a small body behind it.
pub fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body_length: u64,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512 + COALESCE.min(body_length as usize));
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // As hyper does: a length for any body, and for an empty one where a body is expected.
    if body_length > 0 || [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body_length).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
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
    let keep_alive = http11 && !has_token(&headers, header::CONNECTION, "close");
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
        // The codings in order, over all the lines; only the last one decides.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').map(str::trim).find(|c| !c.is_empty()));
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
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

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}
