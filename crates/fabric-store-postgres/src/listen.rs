//! The wake-up listener: one dedicated connection that `LISTEN`s on the ready channel and
//! bumps the store's ready signal for every notification about its schema, reconnecting
//! (with backoff) whenever the connection is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_store::StoreError;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::{READY_CHANNEL, bump};
use crate::error::classify;

/// How often an idle listener checks that its connection still answers.
const PING_EVERY: Duration = Duration::from_secs(15);
/// The first pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Starts the listener. Resolves once the first `LISTEN` is in place (so every
/// notification committed afterwards reaches this store), or with the error that kept it
/// from connecting. The task runs until aborted.
pub(crate) async fn start(
    config: Config,
    tls: MakeRustlsConnect,
    schema: String,
    ready: Arc<watch::Sender<u64>>,
    timeout: Duration,
) -> Result<JoinHandle<()>, StoreError> {
    let (first_tx, first_rx) = oneshot::channel();
    let handle = tokio::spawn(run(config, tls, schema, ready, timeout, first_tx));
    let first = tokio::time::timeout(timeout + Duration::from_secs(1), first_rx).await;
    match first {
        Ok(Ok(Ok(()))) => Ok(handle),
        Ok(Ok(Err(e))) => {
            handle.abort();
            Err(e)
        }
        Ok(Err(_)) | Err(_) => {
            handle.abort();
            Err(StoreError::unavailable(
                "start listening for ready work",
                "the listener did not report in time",
            ))
        }
    }
}

async fn run(
    config: Config,
    tls: MakeRustlsConnect,
    schema: String,
    ready: Arc<watch::Sender<u64>>,
    timeout: Duration,
    first: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut first = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let result = listen_once(&config, &tls, &schema, &ready, timeout, &mut first).await;
        if let Some(first) = first.take() {
            // The first connection never got to LISTEN: connect reports why.
            let error = match result {
                Err(e) => classify("listen for ready work", e),
                Ok(()) => StoreError::unavailable(
                    "listen for ready work",
                    "the connection closed before LISTEN",
                ),
            };
            let _ = first.send(Err(error));
            return;
        }
        match result {
            Err(e) => {
                tracing::warn!(error = %e, schema, "ready listener lost its connection; reconnecting")
            }
            Ok(()) => tracing::warn!(schema, "ready listener connection ended; reconnecting"),
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, report, forward notifications until the
/// connection fails or stops answering pings.
async fn listen_once(
    config: &Config,
    tls: &MakeRustlsConnect,
    schema: &str,
    ready: &watch::Sender<u64>,
    timeout: Duration,
    first: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let driver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.payload() == schema {
                        bump(ready);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    let listen = async {
        client
            .batch_execute(&format!("LISTEN {READY_CHANNEL}"))
            .await?;
        match first.take() {
            Some(first) => {
                let _ = first.send(Ok(()));
            }
            // Work made ready while nobody listened would otherwise wait for a poll.
            None => bump(ready),
        }
        loop {
            tokio::time::sleep(PING_EVERY).await;
            match tokio::time::timeout(timeout, client.simple_query("")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()), // no answer: drop the connection and reconnect
            }
        }
    };
    tokio::select! {
        result = driver => result,
        result = listen => result,
    }
}
