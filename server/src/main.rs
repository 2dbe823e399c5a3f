//! `channels-server`: serves the chat demo, the publish API, health and
//! metrics over the channel layer the flags choose. `--help` lists every flag.

use std::process::ExitCode;

use channels_server::{Args, ServerError, shutdown};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    args.init_logging();
    match serve(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "channels-server failed");
            eprintln!("channels-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> Result<(), ServerError> {
    let layer = args.build_layer().await?;
    let listener = args.listen()?;
    channels_server::run(listener, layer, args.server_config(), shutdown::signal()).await
}
