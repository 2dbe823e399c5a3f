//! `channels-server`: serves the gateway (clients at `/ws`, the console page
//! at `/`), the publish API, health and metrics over the channel layer the
//! flags (or `--config FILE`) choose.
//! `--help` lists every flag.

use std::process::ExitCode;

use channels_server::{App, Args, ServerError, Settings, shutdown};
use clap::Parser;

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match args.load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("channels-server: {error}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return match settings.check() {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("channels-server: {error}");
                ExitCode::from(2)
            }
        };
    }
    // Outside the runtime: the OTLP exporter (feature `otel`) flushes with
    // blocking I/O when this guard drops at the end of `main`.
    let _telemetry = settings.init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("channels-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(&settings));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "channels-server failed");
            eprintln!("channels-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: &Settings) -> Result<(), ServerError> {
    if let Some(file) = &settings.config_file {
        tracing::info!(file = %file.display(), "configuration loaded");
    }
    let layer = settings.build_layer().await?;
    let listener = settings.listen()?;
    let mut app = App::new(layer, settings.server.clone());
    if let Some(store) = settings.build_presence()? {
        app = app.presence_store(store);
    }
    app.gateway()?.serve(listener, shutdown::signal()).await
}
