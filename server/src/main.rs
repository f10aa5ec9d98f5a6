//! `privcomm-server`: runs the relay until SIGTERM or Ctrl-C.

use clap::Parser;
use privcomm_server::{logging, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A `.env` in the working directory is a convenience for local runs; real environment
    // variables win over it. Only that one file: `dotenvy::dotenv()` would also take one
    // from any parent directory, whoever wrote it.
    let dotenv = dotenvy::from_path(".env");
    let config = Config::parse();
    logging::init(&config.log);
    if let Err(e) = dotenv {
        if !e.not_found() {
            tracing::warn!(error = %e, "ignoring unreadable .env file");
        }
    }
    privcomm_server::app::run_until_signal(config).await
}
