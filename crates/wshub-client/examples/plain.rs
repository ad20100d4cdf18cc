//! A plain WebSocket client for any server (a hub built with the `wshub` library, or any
//! other): sends each argument and then each line of stdin as a text message, prints every
//! message that comes back, and reconnects a second after every drop.
//!
//! ```text
//! cargo run -p wshub-client --example plain -- ws://127.0.0.1:8080/ws hello '{"type":"ping"}'
//! ```
//!
//! Text messages are printed as they are, binary ones as `<N bytes>`; connection news goes
//! to stderr. Messages typed while disconnected wait (up to the send queue's capacity)
//! and go out after reconnecting. Ctrl-C closes the connection cleanly.

use std::{process::ExitCode, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};
use wshub_client::{Client, Event, Message};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: plain WS_URL [MESSAGE...]");
        return ExitCode::from(2);
    };
    let (client, mut events) = match Client::builder(url)
        .reconnect_every(Duration::from_secs(1))
        .build()
    {
        Ok(built) => built,
        Err(error) => {
            eprintln!("plain: {error}");
            return ExitCode::FAILURE;
        }
    };
    client.connect();

    // The arguments go out once the first connection is open.
    let first: Vec<String> = args.collect();
    let mut first = Some(first);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Connected) => {
                    eprintln!("connected");
                    for text in first.take().unwrap_or_default() {
                        if let Err(error) = client.send_text(text) {
                            eprintln!("not sent: {error}");
                        }
                    }
                }
                Some(Event::Message(Message::Text(text))) => println!("{text}"),
                Some(Event::Message(Message::Binary(bytes))) => println!("<{} bytes>", bytes.len()),
                Some(Event::Disconnected { error }) => eprintln!("disconnected: {error:?}"),
                Some(Event::Reconnecting { attempt, delay }) => {
                    eprintln!("reconnecting (attempt {attempt}) in {delay:?}");
                }
                Some(Event::Error(error)) => eprintln!("error: {error}"),
                Some(_) => {}
                None => break,
            },
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if let Err(error) = client.send_text(line) {
                        eprintln!("not sent: {error}");
                    }
                }
                // End of input: keep printing what arrives until Ctrl-C.
                Ok(None) | Err(_) => stdin_open = false,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
    ExitCode::SUCCESS
}
