//! The protocol actor: one thread owns the `SignalEngine` (libsignal's stores are `?Send`);
//! everything else talks to it through a cheap, `Send + Sync` `ProtocolHandle`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::engine::SignalEngine;
use crate::error::{CoreError, CoreResult};
use crate::secret_store::SecretStore;

type Job = Box<dyn FnOnce(&mut SignalEngine) + Send>;

enum Command {
    Run(Job),
    Stop(oneshot::Sender<()>),
}

/// A handle to the protocol actor. Clones share the one actor.
#[derive(Clone)]
pub struct ProtocolHandle {
    commands: mpsc::Sender<Command>,
    secrets: Arc<dyn SecretStore>,
}

impl ProtocolHandle {
    /// Opens the store at `path` on a new actor thread. Fails as `SignalEngine::open` does.
    pub fn spawn(path: PathBuf, secrets: Arc<dyn SecretStore>) -> CoreResult<Self> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (opened_tx, opened_rx) = mpsc::channel::<CoreResult<()>>();
        let thread_secrets = secrets.clone();
        std::thread::Builder::new()
            .name("privcomm-protocol".into())
            .spawn(move || {
                let engine = match SignalEngine::open(&path, thread_secrets.as_ref()) {
                    Ok(engine) => {
                        let _ = opened_tx.send(Ok(()));
                        engine
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                drop(thread_secrets);
                run(engine, inbox);
            })
            .map_err(|e| CoreError::Protocol(format!("cannot start the protocol thread: {e}")))?;
        opened_rx.recv().map_err(|_| CoreError::Closed)??;
        Ok(Self { commands, secrets })
    }

    /// Runs `job` on the actor thread and returns its result.
    pub async fn call<R, F>(&self, job: F) -> CoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SignalEngine) -> CoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |engine| {
            let _ = reply.send(job(engine));
        });
        self.commands
            .send(Command::Run(job))
            .map_err(|_| CoreError::Closed)?;
        answer.await.map_err(|_| CoreError::Closed)?
    }

    /// Re-encrypts the store under a fresh data key.
    pub async fn rotate_data_key(&self) -> CoreResult<()> {
        let secrets = self.secrets.clone();
        self.call(move |engine| engine.rotate_data_key(secrets.as_ref()))
            .await
    }

    /// Stops the actor after the jobs already queued and closes the database. Other handles
    /// get `Closed` afterwards.
    pub async fn close(&self) -> CoreResult<()> {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_err() {
            return Ok(());
        }
        let _ = closed.await;
        Ok(())
    }
}

fn run(mut engine: SignalEngine, inbox: mpsc::Receiver<Command>) {
    while let Ok(command) = inbox.recv() {
        match command {
            Command::Run(job) => {
                // A panicking job must not take every later caller down with it.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut engine)));
                if outcome.is_err() {
                    tracing::error!("a protocol job panicked; its caller gets `Closed`");
                }
            }
            Command::Stop(done) => {
                // Close SQLite before telling the closer, so the file can be reopened at once.
                drop(engine);
                let _ = done.send(());
                return;
            }
        }
    }
}
