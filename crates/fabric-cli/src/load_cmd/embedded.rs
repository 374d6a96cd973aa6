//! The server `fabric load --embedded` starts in its own process and stops after the run.

use std::path::PathBuf;

use fabric_server::{Server, ServerConfig, StoreUrl};
use tokio::sync::oneshot;

use super::Failure;
use crate::args::ServeFlags;

/// A server started in this process, stopped when the run is over.
pub(super) struct Embedded {
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), fabric_server::ServeError>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Embedded {
    /// Starts a server on `options`, listening on 127.0.0.1:0 and keeping its data in a
    /// fresh temporary directory unless they say otherwise. Returns it, its URL and its
    /// SQLite database.
    pub(super) async fn start(
        mut options: ServeFlags,
    ) -> Result<(Self, String, Option<PathBuf>), Failure> {
        let data_dir = match options.data_dir {
            Some(_) => None,
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fabric-load-")
                    .tempdir()
                    .map_err(|e| {
                        Failure::Run(anyhow::anyhow!(
                            "cannot create a temporary data directory: {e}"
                        ))
                    })?;
                options.data_dir = Some(dir.path().to_owned());
                Some(dir)
            }
        };
        options
            .listen
            .get_or_insert_with(|| "127.0.0.1:0".parse().expect("a valid address"));
        let config = ServerConfig::resolve(options.into()).map_err(|e| Failure::Usage(e.into()))?;
        let db = match &config.store {
            StoreUrl::Sqlite(path) => Some(path.clone()),
            StoreUrl::Postgres { .. } => None,
        };
        let server = Server::start(config)
            .await
            .map_err(|e| Failure::Run(anyhow::anyhow!("cannot start the embedded server: {e}")))?;
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let embedded = Self {
            stop,
            serving,
            _data_dir: data_dir,
        };
        Ok((embedded, url, db))
    }

    pub(super) async fn stop(self) -> Result<(), Failure> {
        let _ = self.stop.send(());
        match self.serving.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Run(anyhow::anyhow!(
                "the embedded server failed: {e}"
            ))),
            Err(e) => Err(Failure::Run(anyhow::anyhow!(
                "the embedded server panicked: {e}"
            ))),
        }
    }
}
