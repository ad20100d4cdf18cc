//! Follows a room from the command line, printing each message, reconnecting as needed.
//!
//! ```text
//! cargo run -p wshub-client --example follow -- ws://127.0.0.1:8080/ws ROOM [TOKEN]
//! ```
//!
//! Each message is printed as `offset<TAB>from<TAB>data`; reconnects and recovery reports
//! go to stderr. Ctrl-C closes the connection cleanly.

use std::process::ExitCode;
use std::time::Duration;

use wshub_client::{SubscriptionEvent, WshubClient, WshubEvent};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(room)) = (args.next(), args.next()) else {
        eprintln!("usage: follow WS_URL ROOM [TOKEN]");
        return ExitCode::from(2);
    };
    let token = args.next();
    match follow(url, room, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("follow: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn follow(
    url: String,
    room: String,
    token: Option<String>,
) -> Result<(), wshub_client::Error> {
    let (client, mut events) = WshubClient::builder(url)
        .connection(|connection| match token {
            Some(token) => connection.header("Authorization", format!("Bearer {token}")),
            None => connection,
        })
        .build()?;
    // Connection news on stderr, from its own task.
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                WshubEvent::Connected(welcome) => eprintln!("connected as {}", welcome.client),
                WshubEvent::Disconnected { error: Some(error) } => {
                    eprintln!("disconnected: {error}")
                }
                WshubEvent::Reconnecting { attempt, delay } => {
                    eprintln!("reconnecting (attempt {attempt}) in {delay:.1?}")
                }
                WshubEvent::GaveUp { attempts } => eprintln!("gave up after {attempts} attempts"),
                WshubEvent::Error(error) => eprintln!("error: {error}"),
                _ => {}
            }
        }
    });
    // Waits for the first connection (retrying meanwhile) as long as it takes.
    let mut subscription = loop {
        match client.subscribe(&room).await {
            Ok(subscription) => break subscription,
            Err(error) if error.is_timeout() => continue,
            Err(error) => return Err(error),
        }
    };
    eprintln!("following {room}");
    loop {
        tokio::select! {
            event = subscription.recv() => match event {
                Some(SubscriptionEvent::Message(message)) => println!(
                    "{}\t{}\t{}",
                    message.offset,
                    message.from.as_deref().unwrap_or("-"),
                    message.data
                ),
                Some(SubscriptionEvent::Join(p)) => eprintln!("{} joined", p.client),
                Some(SubscriptionEvent::Leave(p)) => eprintln!("{} left", p.client),
                Some(SubscriptionEvent::Recovered { since, .. }) => {
                    eprintln!("back, nothing missed since offset {}", since.offset)
                }
                Some(SubscriptionEvent::RecoveryFailed { since, epoch, lost, .. }) => {
                    eprintln!(
                        "back, but messages after offset {} were lost (history is now epoch {epoch})",
                        since.offset
                    );
                    for range in lost {
                        match range.to {
                            Some(to) => eprintln!("  lost {}: {} to {to}", range.epoch, range.from),
                            None => eprintln!("  lost {}: {} onwards", range.epoch, range.from),
                        }
                    }
                }
                Some(SubscriptionEvent::Failed(error)) => return Err(error),
                Some(_) => {}
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tokio::time::timeout(Duration::from_secs(2), client.close())
        .await
        .ok();
    Ok(())
}
