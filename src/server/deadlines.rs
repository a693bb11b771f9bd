//! The deadlines and the memory bound of one client connection once it is accepted (and TLS is
//! done): the first bytes of a request must come within `header_timeout`, a connection with no
//! open request is closed after `idle_timeout`, a response must be handed to the connection
//! within `send_timeout`, and the response bytes one connection holds unsent stay under
//! `max_unsent`. [`Tracker`] only keeps the books and says what is due; `http::serve` acts on it
//! (GOAWAY, close). Nothing here parses a request or delays one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;

/// The largest piece of a response body handed to hyper at once. HTTP/2 asks for the next piece
/// only once the previous one found flow-control window, HTTP/1 once its write buffer has room,
/// so a response stays with us (and counted) until the client has nearly read it.
pub const CHUNK: usize = 16 << 10;

/// What the client's first bytes have chosen.
const UNDECIDED: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection was closed, as the metric's `reason` label says it.
pub const FIRST_BYTE_TIMEOUT: &str = "first_byte_timeout";
pub const IDLE_TIMEOUT: &str = "idle_timeout";
pub const SEND_TIMEOUT: &str = "send_timeout";
pub const UNSENT_LIMIT: &str = "unsent_limit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From the connection being ready (after TLS) to the protocol being chosen: the whole
    /// HTTP/2 preface, or the first byte of an HTTP/1 head (whose end hyper's header timeout
    /// bounds from there).
    pub first_byte: Duration,
    pub idle: Duration,
    pub send: Duration,
    pub max_unsent: u64,
}

impl Deadlines {
    pub fn from_limits(limits: &Limits) -> Deadlines {
        Deadlines {
            first_byte: limits.header_timeout,
            idle: limits.idle_timeout,
            send: limits.send_timeout,
            max_unsent: limits.max_unsent,
        }
    }
}

/// What is due on a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing; look again at this instant, or when [`Tracker::changed`] fires.
    Wait(Option<Instant>),
    /// Close politely (HTTP/2 GOAWAY, HTTP/1 close once idle): no request is open.
    Close(&'static str),
    /// Close now, dropping what is unsent: the client does not read its responses.
    Abort(&'static str),
}

/// The books of one connection.
pub struct Tracker {
    deadlines: Deadlines,
    protocol: AtomicU8,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Requests handed to the service whose response is not yet handed over.
    open: usize,
    had_request: bool,
    /// When `open` last became 0 (or the connection started).
    idle_since: Instant,
    /// Responses being sent, by a number that grows with time: the first is the oldest.
    sending: BTreeMap<u64, Instant>,
    next_id: u64,
    unsent: u64,
    over_limit: bool,
}

impl Tracker {
    pub fn new(deadlines: Deadlines) -> Arc<Tracker> {
        Arc::new(Tracker {
            deadlines,
            protocol: AtomicU8::new(UNDECIDED),
            state: Mutex::new(State {
                open: 0,
                had_request: false,
                idle_since: Instant::now(),
                sending: BTreeMap::new(),
                next_id: 0,
                unsent: 0,
                over_limit: false,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The books stay consistent between statements; a panic elsewhere cannot tear them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request reached the service; it is open until the returned guard is dropped.
    pub fn open_request(self: &Arc<Self>) -> Open {
        let mut state = self.lock();
        state.open += 1;
        state.had_request = true;
        Open {
            tracker: Arc::clone(self),
            sending: None,
        }
    }

    /// Resolves when the unsent-bytes limit was passed: the only change that cannot wait for the
    /// next look (see [`Tracker::check`]).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What is due at `now`. A `Wait` is never further ahead than the shortest of the deadlines:
    /// any deadline a request or a response starts later is at least that far from its start,
    /// so this next look always comes before it, and the request path never has to wake the
    /// connection (one wake-up per request cost about 2% of a request's instructions).
    pub fn check(&self, now: Instant) -> Verdict {
        match self.due(&self.lock(), now) {
            Verdict::Wait(due) => {
                let look = now + self.horizon();
                Verdict::Wait(Some(due.map_or(look, |due| due.min(look))))
            }
            verdict => verdict,
        }
    }

    fn horizon(&self) -> Duration {
        let d = &self.deadlines;
        d.first_byte.min(d.idle).min(d.send)
    }

    fn due(&self, state: &State, now: Instant) -> Verdict {
        if state.over_limit {
            return Verdict::Abort(UNSENT_LIMIT);
        }
        let mut due = None;
        if let Some((_, ready)) = state.sending.first_key_value() {
            let at = *ready + self.deadlines.send;
            if now >= at {
                return Verdict::Abort(SEND_TIMEOUT);
            }
            due = Some(at);
        }
        if state.open == 0 {
            let protocol = self.protocol.load(Ordering::Relaxed);
            let limit = if state.had_request || protocol == HTTP2 {
                Some((self.deadlines.idle, IDLE_TIMEOUT))
            } else if protocol == UNDECIDED {
                Some((self.deadlines.first_byte, FIRST_BYTE_TIMEOUT))
            } else {
                // An HTTP/1 head has begun: hyper's header timeout bounds it, and refuses it
                // with a logged 408.
                None
            };
            if let Some((limit, reason)) = limit {
                let at = state.idle_since + limit;
                if now >= at {
                    return Verdict::Close(reason);
                }
                due = Some(due.map_or(at, |d: Instant| d.min(at)));
            }
        }
        Verdict::Wait(due)
    }
}

/// One open request; its response, once ready, is counted as unsent until handed over.
pub struct Open {
    tracker: Arc<Tracker>,
    sending: Option<(u64, u64)>,
}

impl Open {
    /// The response of `bytes` is ready: it must be handed over within the send deadline.
    fn sending(&mut self, bytes: u64) {
        let tracker = &self.tracker;
        let mut state = tracker.lock();
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        state.sending.insert(id, now);
        state.unsent = state.unsent.saturating_add(bytes);
        // One response, whatever its size, may always be sent.
        let over = state.unsent > tracker.deadlines.max_unsent && state.sending.len() > 1;
        state.over_limit |= over;
        drop(state);
        self.sending = Some((id, bytes));
        if over {
            tracker.changed.notify_one();
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let tracker = &self.tracker;
        let mut state = tracker.lock();
        state.open = state.open.saturating_sub(1);
        if let Some((id, bytes)) = self.sending.take() {
            state.sending.remove(&id);
            state.unsent = state.unsent.saturating_sub(bytes);
        }
        if state.open == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// A response body handed to hyper in pieces of at most [`CHUNK`], counted as unsent until its
/// last piece is taken.
pub struct ResponseBody {
    data: Bytes,
    split: bool,
    open: Option<Open>,
}

impl ResponseBody {
    pub fn new(data: Bytes, mut open: Open) -> ResponseBody {
        open.sending(data.len() as u64);
        ResponseBody {
            data,
            split: false,
            open: Some(open),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            this.open = None;
            return Poll::Ready(None);
        }
        if this.data.len() > CHUNK {
            this.split = true;
            return Poll::Ready(Some(Ok(Frame::data(this.data.split_to(CHUNK)))));
        }
        let last = std::mem::take(&mut this.data);
        // A copy of the last piece of a split body, so the response's buffer is freed now and
        // not when the client gets round to reading this piece.
        let last = if this.split {
            Bytes::copy_from_slice(&last)
        } else {
            last
        };
        this.open = None;
        Poll::Ready(Some(Ok(Frame::data(last))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// The client connection as hyper sees it: notes which protocol the first bytes chose.
pub struct Watched<I> {
    io: I,
    /// Preface bytes matched so far; `None` once the protocol is known.
    matched: Option<usize>,
    tracker: Arc<Tracker>,
}

impl<I> Watched<I> {
    pub fn new(io: I, tracker: Arc<Tracker>) -> Watched<I> {
        Watched {
            io,
            matched: Some(0),
            tracker,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let Some(matched) = self.matched else {
            return;
        };
        let want = &H2_PREFACE[matched..];
        let n = bytes.len().min(want.len());
        let protocol = if bytes[..n] != want[..n] {
            HTTP1
        } else if matched + n == H2_PREFACE.len() {
            HTTP2
        } else {
            self.matched = Some(matched + n);
            return;
        };
        self.matched = None;
        self.tracker.protocol.store(protocol, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.matched.is_some() && buf.filled().len() > before {
            this.saw(&buf.filled()[before..]);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines {
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(30),
            max_unsent: 64 << 10,
        }
    }

    #[test]
    fn a_silent_connection_is_due_at_the_first_byte_deadline_and_an_idle_one_later() {
        let before = Instant::now();
        let tracker = Tracker::new(deadlines());
        let start = Instant::now();
        let Verdict::Wait(Some(due)) = tracker.check(start) else {
            panic!("a first-byte deadline");
        };
        assert!(due >= before + Duration::from_secs(10) && due <= start + Duration::from_secs(10));
        assert_eq!(
            tracker.check(start + Duration::from_secs(10)),
            Verdict::Close(FIRST_BYTE_TIMEOUT)
        );
        let open = tracker.open_request();
        assert_eq!(
            tracker.check(start + Duration::from_secs(100)),
            Verdict::Wait(Some(start + Duration::from_secs(110)))
        );
        drop(open);
        let idle_from = Instant::now();
        // The next look is no further than the shortest deadline (10 s here) ahead.
        let Verdict::Wait(Some(look)) = tracker.check(idle_from) else {
            panic!("a time to look again");
        };
        assert!(look <= idle_from + Duration::from_secs(10));
        let Verdict::Wait(Some(due)) = tracker.check(idle_from + Duration::from_secs(59)) else {
            panic!("still idle, not yet due");
        };
        assert!(
            due > idle_from + Duration::from_secs(59) && due <= idle_from + Duration::from_secs(60)
        );
        assert_eq!(
            tracker.check(idle_from + Duration::from_secs(61)),
            Verdict::Close(IDLE_TIMEOUT)
        );
    }

    #[test]
    fn an_unread_response_is_due_at_the_send_deadline_and_too_many_unsent_bytes_at_once() {
        let tracker = Tracker::new(deadlines());
        let mut body = ResponseBody::new(Bytes::from(vec![1u8; 40 << 10]), tracker.open_request());
        let start = Instant::now();
        let Verdict::Wait(Some(due)) = tracker.check(start) else {
            panic!("a send deadline");
        };
        assert!(due <= start + Duration::from_secs(30));
        assert_eq!(
            tracker.check(start + Duration::from_secs(30)),
            Verdict::Abort(SEND_TIMEOUT)
        );
        // Handed over in pieces; the last one releases the response.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            sizes.push(frame.into_data().map(|d| d.len()).unwrap_or(0));
        }
        assert_eq!(sizes, [CHUNK, CHUNK, (40 << 10) - 2 * CHUNK]);
        assert!(matches!(
            tracker.check(start + Duration::from_secs(30)),
            Verdict::Wait(Some(_))
        ));
        // One response over the limit is sent; a second one past it closes the connection.
        let _big = ResponseBody::new(Bytes::from(vec![1u8; 100 << 10]), tracker.open_request());
        assert!(matches!(tracker.check(start), Verdict::Wait(_)));
        let _small = ResponseBody::new(Bytes::from_static(b"ok"), tracker.open_request());
        assert_eq!(tracker.check(start), Verdict::Abort(UNSENT_LIMIT));
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http2_from_http1() {
        use tokio::io::AsyncReadExt;
        for (sent, protocol) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], HTTP2),
            (&b"PRI * HTTP/2.0"[..], UNDECIDED),
            (&b"POST / HTTP/1.1\r\n"[..], HTTP1),
            (&b"P"[..], UNDECIDED),
            (&b"G"[..], HTTP1),
        ] {
            let tracker = Tracker::new(deadlines());
            let mut io = Watched::new(sent, Arc::clone(&tracker));
            let mut buf = [0u8; 64];
            while io.read(&mut buf).await.unwrap_or(0) > 0 {}
            assert_eq!(
                tracker.protocol.load(Ordering::Relaxed),
                protocol,
                "{sent:?}"
            );
        }
    }
}
