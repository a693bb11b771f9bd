//! Stage 6: reads the request body into memory, exactly as sent, under a size cap and a time
//! limit. It never looks inside the body and never copies it: the body stays as the frames
//! hyper read, which the verifier hashes one by one and the upstream gets as they are.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::reject::Reject;

/// A whole request body as hyper's frames, in order; also the body of the upstream request.
#[derive(Debug, Default)]
pub struct Frames {
    frames: Vec<Bytes>,
    /// The bytes in all frames.
    len: u64,
}

impl Frames {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[Bytes] {
        &self.frames
    }
}

/// The most of a body read and dropped before a refusal is answered ([`discard`]).
pub const DISCARD_MAX: u64 = 64 * 1024;
/// The longest [`discard`] waits for that body.
pub const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Whether the client waits for `100 Continue` before it sends the body.
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and drops a body a refusal will not use, as nginx does before it answers early: some
/// clients (Debian 12's curl over HTTP/2) treat the reset that otherwise ends a stream whose
/// body is still coming as an error and never show the status. Bounded: at most
/// [`DISCARD_MAX`] bytes within [`DISCARD_TIME`]; nothing for a declared larger body, nor for a
/// client waiting for `100 Continue` (it has sent nothing, and reading would invite the body).
pub async fn discard(body: Incoming, headers: &HeaderMap) {
    use hyper::body::Body as _;
    if body.is_end_stream() || expects_continue(headers) {
        return;
    }
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DISCARD_MAX) {
        return;
    }
    let drain = async {
        let mut body = body;
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DISCARD_MAX {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Reads the whole body. A `Content-Length` over the cap is refused before a byte is read.
pub async fn read(
    body: Incoming,
    headers: &HeaderMap,
    max: u64,
    timeout: Duration,
) -> Result<Frames, Reject> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(Reject::BodyTooLarge);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collect = async {
        let mut body = Limited::new(body, limit);
        let mut frames = Frames::default();
        while let Some(frame) = body.frame().await {
            // Trailers carry nothing the gateway forwards; data frames are kept as they are.
            if let Ok(data) = frame?.into_data() {
                if !data.is_empty() {
                    frames.len += data.len() as u64;
                    frames.frames.push(data);
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(frames)
    };
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(Reject::BodyTimeout),
        Ok(Ok(frames)) => Ok(frames),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Reject::BodyTooLarge),
        Ok(Err(e)) if is_malformed(e.as_ref()) => Err(Reject::BadRequest { reason: "body" }),
        Ok(Err(_)) => Err(Reject::ClientAbort),
    }
}

/// A broken chunked encoding (hyper reports it as an `InvalidInput`/`InvalidData` I/O error in
/// the body) is the client's fault; anything else while reading is the client going away.
fn is_malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        source = e.source();
    }
    false
}
