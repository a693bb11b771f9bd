//! Stage 6: reads the request body into memory, exactly as sent, under a size cap and a time
//! limit. It never looks inside the body and never copies it: the body stays as the frames
//! hyper read, which the verifier hashes one by one and the upstream gets as they are.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

use super::reject::{self, Reject};

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
pub async fn discard<B>(body: B, headers: &HeaderMap)
where
    B: Body<Data = Bytes> + Unpin,
{
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
pub async fn read<B>(
    body: B,
    headers: &HeaderMap,
    max: u64,
    timeout: Duration,
) -> Result<Frames, Reject>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
        Ok(Err(e)) => Err(reject::body_error(e.as_ref())),
    }
}
