//! The `stdout` code sender, for development only (`PRIVCOMM_DEV_MODE=1`): prints each code
//! as one JSON line on standard output, beside the logs, for the developer to type in.

use std::io::Write;

use async_trait::async_trait;

use super::{CodeMessage, CodeSendError, CodeSender};

/// Prints codes instead of sending them. Whoever reads the relay's output can register any
/// number: never in production (the relay refuses it without dev mode).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutSender;

#[async_trait]
impl CodeSender for StdoutSender {
    async fn send(&self, message: &CodeMessage) -> Result<(), CodeSendError> {
        let line = serde_json::json!({
            "level": "DEV",
            "fields": {
                "message": "verification code (PRIVCOMM_DEV_MODE; never in production)",
                "number": message.number.as_str(),
                "code": message.code.as_str(),
            }
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }
}
