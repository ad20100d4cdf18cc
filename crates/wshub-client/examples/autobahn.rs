//! Drives the Autobahn TestSuite's fuzzing server (`wstest -m fuzzingserver`) with this
//! crate's client: asks for the number of cases, runs each one echoing every message back as
//! it came (text or binary), then asks the server to write its reports.
//!
//! ```text
//! cargo run --release -p wshub-client --example autobahn -- ws://127.0.0.1:9001 [AGENT]
//! ```
//!
//! `scripts/autobahn-client.sh` starts the fuzzing server and runs this.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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
    // Echo from the message callback, which runs on the connection's task before it reads
    // the next frame: the echo is queued before a frame that fails the connection is seen,
    // as the suite's "fail fast" cases (3.2, 4.1.3, 5.15, …) require.
    // (Held in a slot emptied at the end: the client must not keep itself alive.)
    let echoer: Arc<Mutex<Option<Client>>> = Arc::new(Mutex::new(None));
    let on_message = {
        let echoer = Arc::clone(&echoer);
        move |message: &Message| {
            if echo && let Some(client) = echoer.lock().unwrap().as_ref() {
                // A case may end while its echoes are queued; that is the case's business,
                // not an error of the run.
                let _ = client.send(message.clone());
            }
        }
    };
    let (client, mut events) = Client::builder(url)
        .on_message(on_message)
        .reconnect(false)
        .heartbeat(None)
        // Group 9 sends messages of up to 16 MiB, and many of them back to back.
        .max_message_bytes(64 * 1024 * 1024)
        .send_queue_capacity(1 << 20)
        .build()?;
    *echoer.lock().unwrap() = Some(client.clone());
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
    echoer.lock().unwrap().take();
    client.close().await;
    Ok(first_text)
}
