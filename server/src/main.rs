//! `privcomm-server`: runs the relay until SIGTERM or Ctrl-C.

use std::sync::Arc;

use clap::Parser;
use privcomm_server::{logging, Config, RelayServer, SystemClock};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A `.env` in the working directory is a convenience for local runs; real environment
    // variables win over it.
    let dotenv = dotenvy::dotenv();
    let config = Config::parse();
    logging::init(&config.log);
    if let Err(e) = dotenv {
        if !e.not_found() {
            tracing::warn!(error = %e, "ignoring unreadable .env file");
        }
    }
    let mut server = match RelayServer::start(config, Arc::new(SystemClock)).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "relay failed to start");
            return Err(e);
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            server.shutdown().await?;
        }
        result = server.wait() => result?,
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
