//! Drives the Autobahn TestSuite's fuzzing server (`wstest -m fuzzingserver`) with this
//! crate's client: asks for the number of cases, runs each one echoing every message back as
//! it came (text or binary), then asks the server to write its reports.
//!
//! ```text
//! cargo run --release -p wshub-client --example autobahn -- ws://127.0.0.1:9001 [AGENT]
//! ```
//!
//! `scripts/autobahn-client.sh` starts the fuzzing server and runs this.

use std::time::Duration;

use wshub_client::{Client, Event, Message};

/// The longest one case may take; the suite's own limits are far shorter.
const CASE_LIMIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let agent = args.next().unwrap_or_else(|| "wshub-client".to_owned());

    let count: u32 = session(&format!("{base}/getCaseCount"), false)
        .await?
        .ok_or("the fuzzing server sent no case count")?
        .trim()
        .parse()?;
    println!("autobahn-client: {count} cases");
    for case in 1..=count {
        session(&format!("{base}/runCase?case={case}&agent={agent}"), true).await?;
    }
    session(&format!("{base}/updateReports?agent={agent}"), false).await?;
    println!("autobahn-client: done");
    Ok(())
}

/// One connection, until the server ends it: echoes every message when `echo`, and returns
/// the first text message.
async fn session(url: &str, echo: bool) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let (client, mut events) = Client::builder(url)
        .reconnect(false)
        .heartbeat(None)
        // Group 9 sends messages of up to 16 MiB, and many of them back to back.
        .max_message_bytes(64 * 1024 * 1024)
        .send_queue_capacity(1 << 20)
        .build()?;
    client.connect();
    let mut first_text = None;
    let ended = tokio::time::timeout(CASE_LIMIT, async {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(message) => {
                    if first_text.is_none()
                        && let Message::Text(text) = &message
                    {
                        first_text = Some(text.clone());
                    }
                    if echo {
                        // A case may end while its echoes are queued; that is the case's
                        // business, not an error of the run.
                        let _ = client.send(message);
                    }
                }
                Event::Disconnected { .. } | Event::GaveUp { .. } => break,
                Event::Error(_) if !client.is_connected() => break,
                _ => {}
            }
        }
    })
    .await;
    if ended.is_err() {
        eprintln!("autobahn-client: {url} did not end within {CASE_LIMIT:?}");
    }
    client.close().await;
    Ok(first_text)
}
