//! A terminal chat client: run it in two terminals against a running relay.
//!
//! ```sh
//! PRIVCOMM_DEV_MODE=1 PRIVCOMM_CODE_SENDER=stdout cargo run -p privcomm-server &
//! cargo run -p privcomm-examples --bin chat -- --data-dir /tmp/alice --phone +15550100001 --peer +15550100002
//! cargo run -p privcomm-examples --bin chat -- --data-dir /tmp/bob --phone +15550100002 --peer +15550100001
//! ```
//!
//! On first use it asks for the verification code texted to `--phone` (a development relay
//! with `PRIVCOMM_CODE_SENDER=stdout` prints it in its output instead), and for the PIN if
//! the number's account has a registration lock.
//! Type a line to send it; incoming messages and delivery receipts are printed as they come.
//! The data key's wrapping secret is kept in the OS keyring. `/quit` exits.

use std::path::PathBuf;
use std::sync::Arc;

use privcomm_core::{Client, ClientEvent, CoreError, KeyringSecretStore, MessageState};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

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
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if client.user_id().await?.is_none() {
        register(&client, &args.phone, &mut lines).await?;
    }
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

/// Asks the relay for a code, then the user for it (and for the PIN if the account is
/// locked), until the number is registered.
async fn register(
    client: &Client,
    phone: &str,
    lines: &mut Lines<BufReader<Stdin>>,
) -> anyhow::Result<()> {
    let valid_for = client.request_verification(phone).await?;
    println!(
        "* a code was texted to {phone} (valid {} minutes)",
        valid_for / 60
    );
    let mut pin: Option<String> = None;
    loop {
        let code = ask(lines, "code: ").await?;
        match client.register(phone, &code, pin.as_deref()).await {
            Ok(_) => return Ok(()),
            Err(CoreError::InvalidCode) => println!("* wrong code; try again"),
            Err(CoreError::CodeExpired) => {
                client.request_verification(phone).await?;
                println!("* that code expired; a new one was texted to {phone}");
            }
            Err(CoreError::RegistrationLocked { retry_after_secs }) => {
                println!(
                    "* this number has a registration lock (it lapses in {} days)",
                    retry_after_secs.div_ceil(86_400)
                );
                pin = Some(ask(lines, "PIN: ").await?);
                println!("* enter the code again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn ask(lines: &mut Lines<BufReader<Stdin>>, prompt: &str) -> anyhow::Result<String> {
    use std::io::Write;
    print!("{prompt}");
    std::io::stdout().flush()?;
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("input ended"))?;
    Ok(line.trim().to_owned())
}
