//! Fuzzes the upstream response reader (`hookgate::upstream::http1`): one exchange on a
//! connection whose upstream answers with the input, handed over in pieces of a size the first
//! byte picks (so heads, chunk-size lines and bodies arrive split at every place). The second
//! byte picks the request method (HEAD or POST) and the response cap.
//!
//! Checked beyond "never panics" (and never pending: the stream is always ready): an answer is
//! never informational, its body is within the cap, and a `Content-Length` it declares is its
//! body's length exactly.
#![no_main]

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use hookgate::upstream::http1::{Connection, RequestHead};
use http::Method;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An upstream that takes any request and answers with `answer`, `piece` bytes per read.
struct Scripted {
    answer: Vec<u8>,
    at: usize,
    piece: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = (self.at + self.piece).min(self.answer.len());
        let n = (end - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.answer[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let [piece, choice, answer @ ..] = data else {
        return;
    };
    let method = if choice & 1 == 1 { Method::HEAD } else { Method::POST };
    let max_response = [0, 1, 16, 1024, 1 << 20][usize::from(choice >> 1) % 5];
    let upstream = Scripted {
        answer: answer.to_vec(),
        at: 0,
        piece: usize::from(*piece).max(1),
    };
    let mut connection = Connection::new(Box::new(upstream));
    let head = RequestHead::new(&method, "/", 0).finish(&method, 0);
    let result = {
        let mut exchange = pin!(connection.exchange(head, &[], &method, max_response));
        let mut cx = Context::from_waker(Waker::noop());
        match exchange.as_mut().poll(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("pending on a stream that is always ready"),
        }
    };
    let Ok(answer) = result else {
        return;
    };
    let status = answer.response.status();
    assert!(!status.is_informational(), "answered with {status}");
    assert!(answer.response.body().len() <= max_response);
    let declared = answer
        .response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let bodiless = method == Method::HEAD || status == 204 || status == 304;
    let chunked = answer.response.headers().contains_key(http::header::TRANSFER_ENCODING);
    if let (Some(length), false, false) = (declared, bodiless, chunked) {
        assert_eq!(answer.response.body().len(), length, "body and Content-Length differ");
    }
});
