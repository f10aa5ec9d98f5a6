//! A terminal chat client: run it in two terminals against a running relay.
//!
//! ```sh
//! cargo run -p privcomm-server &
//! cargo run -p privcomm-examples --bin chat -- --data-dir /tmp/alice --phone +15550100001 --peer +15550100002
//! cargo run -p privcomm-examples --bin chat -- --data-dir /tmp/bob --phone +15550100002 --peer +15550100001
//! ```
//!
//! Type a line to send it; incoming messages and delivery receipts are printed as they come.
//! The data key's wrapping secret is kept in the OS keyring. `/quit` exits.

use std::path::PathBuf;
use std::sync::Arc;

use privcomm_core::{Client, ClientEvent, KeyringSecretStore, MessageState};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    server: String,
    data_dir: PathBuf,
    phone: String,
    peer: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut server = "http://127.0.0.1:8000".to_owned();
    let (mut data_dir, mut phone, mut peer) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--server" => server = value()?,
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--phone" => phone = Some(value()?),
            "--peer" => peer = Some(value()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let usage = "usage: chat --data-dir DIR --phone +NUMBER --peer +NUMBER [--server URL]";
    Ok(Args {
        server,
        data_dir: data_dir.ok_or_else(|| anyhow::anyhow!(usage))?,
        phone: phone.ok_or_else(|| anyhow::anyhow!(usage))?,
        peer: peer.ok_or_else(|| anyhow::anyhow!(usage))?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Linux keyrings belong to a thread's credentials and are inherited at thread creation,
    // so the session keyring is joined before the runtime starts its threads.
    privcomm_core::secret_store::join_session_keyring()?;
    tokio::runtime::Runtime::new()?.block_on(chat(args))
}

async fn chat(args: Args) -> anyhow::Result<()> {
    let secrets = Arc::new(KeyringSecretStore::new("privcomm-chat"));
    let client = Client::open(args.data_dir, &args.server, secrets).await?;
    client.register(&args.phone).await?;
    let mut events = client.events();
    client.connect().await?;
    let peer = loop {
        match client.resolve_peer(&args.peer).await {
            Ok(peer) => break peer,
            Err(e) => {
                println!("* waiting for {} to register ({e})", args.peer);
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
        }
    };
    println!(
        "* connected; chatting with {}. Type and press enter; /quit to leave.",
        args.peer
    );
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                ClientEvent::MessageReceived(m) => println!("<< {}", m.body),
                ClientEvent::MessageStateChanged {
                    state: MessageState::Delivered,
                    ..
                } => println!("   ✓ delivered"),
                ClientEvent::ConnectionStateChanged(state) => println!("* {state:?}"),
                ClientEvent::IdentityChanged { .. } => {
                    println!("* the peer's safety number changed")
                }
                _ => {}
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if !line.is_empty() {
            client.send_text(peer, line).await?;
        }
    }
    client.close().await;
    printer.abort();
    Ok(())
}
