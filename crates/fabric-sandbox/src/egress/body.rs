//! Bodies that count the bytes passing through them into the attempt's meter and end in an
//! error past their bound, holding no more than one frame of the peer's or the guest's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::Error;

use super::{Call, Meter};

/// Which way the bytes go, for the meter and the error past the bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// The guest's request body, going out.
    Request,
    /// The peer's response body, coming in.
    Response,
}

/// `inner`, counted, and cut off with [`Error::HttpRequestBodySize`] or
/// [`Error::HttpResponseBodySize`] as soon as more than `max` bytes have passed.
pub(crate) struct Bounded<B> {
    inner: B,
    direction: Direction,
    passed: u64,
    max: u64,
    meter: Arc<Meter>,
    /// The request's entry in the attempt's log, when it keeps one.
    call: Option<Arc<Call>>,
    over: bool,
}

impl<B> Bounded<B> {
    pub fn new(
        inner: B,
        direction: Direction,
        max: u64,
        meter: Arc<Meter>,
        call: Option<Arc<Call>>,
    ) -> Self {
        Self {
            inner,
            direction,
            passed: 0,
            max,
            meter,
            call,
            over: false,
        }
    }

    fn too_big(&self) -> Error {
        match self.direction {
            Direction::Request => Error::HttpRequestBodySize(Some(self.max)),
            Direction::Response => Error::HttpResponseBodySize(Some(self.max)),
        }
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.over {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                if let (Direction::Response, Some(call)) = (self.direction, &self.call) {
                    call.body_ended();
                }
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            self.passed = self.passed.saturating_add(len);
            match self.direction {
                Direction::Request => self.meter.sent(len),
                Direction::Response => self.meter.received(len),
            }
            if let Some(call) = &self.call {
                match self.direction {
                    Direction::Request => call.sent(len),
                    Direction::Response => call.received(len),
                }
            }
            if self.passed > self.max {
                self.over = true;
                return Poll::Ready(Some(Err(self.too_big())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.over || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
