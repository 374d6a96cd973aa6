//! Capped in-memory stdout and stderr: keep up to a cap, discard the rest, remember that
//! something was discarded. Writes never fail, so ordinary programs finish normally.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much the guest may write in one call before it asks again.
const WRITE_PERMIT: usize = 1 << 20;

#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    truncated: bool,
}

/// One guest output stream, shared between the WASI context and the runner.
#[derive(Debug, Clone)]
pub(crate) struct CappedOutput {
    cap: usize,
    captured: Arc<Mutex<Captured>>,
}

impl CappedOutput {
    pub fn new(cap: u64) -> Self {
        Self {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            captured: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().expect("output lock poisoned");
        let room = self.cap.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.truncated |= kept < bytes.len();
    }

    /// What was kept, and whether anything was discarded.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut captured = self.captured.lock().expect("output lock poisoned");
        (std::mem::take(&mut captured.kept), captured.truncated)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_flags_the_rest() {
        let mut out = CappedOutput::new(5);
        out.write(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(out.take(), (b"abc".to_vec(), false));
        let out = CappedOutput::new(5);
        let mut writer = out.clone();
        writer.write(Bytes::from_static(b"abcdefgh")).unwrap();
        writer.write(Bytes::from_static(b"ij")).unwrap();
        assert_eq!(out.take(), (b"abcde".to_vec(), true));
    }
}
