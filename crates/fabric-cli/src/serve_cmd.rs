//! `fabric serve`: resolves the configuration and runs the server until it has drained.

use std::process::ExitCode;

use fabric_server::{ServeError, ServerConfig};

use crate::EXIT_USAGE;
use crate::args::ServeArgs;

pub fn main(args: ServeArgs) -> ExitCode {
    let mut config = match ServerConfig::resolve(args.options.into()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    config.otel = match otel_from_env() {
        Ok(otel) => otel,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fabric")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fabric_server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ ServeError::Interrupted) => {
            eprintln!("{err}");
            // Whatever still runs (a compilation, a store call) is abandoned, not awaited.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The trace export the standard `OTEL_*` environment variables ask for (`None`: tracing
/// off); a bad value is a usage error naming its variable.
pub(crate) fn otel_from_env() -> Result<Option<fabric_server::OtelConfig>, ExitCode> {
    fabric_server::OtelConfig::from_env(|var| std::env::var(var).ok()).map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(EXIT_USAGE)
    })
}
