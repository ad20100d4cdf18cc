//! A chat hub as a user would write it from axum's `examples/chat`: every text message from
//! any client goes to every connected client through one `tokio::sync::broadcast` channel of
//! `String`s (cloned once per receiver). Unlike that example, a receiver that lags keeps going
//! (its skipped messages are lost) instead of disconnecting.
//!
//! Usage: `axum-broadcast 127.0.0.1:8080` serves `ws://127.0.0.1:8080/ws`.

use axum::{
    Router,
    extract::{
        State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::IntoResponse,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    // Capacity: messages a slow receiver may fall behind before it starts losing them.
    let (tx, _rx) = broadcast::channel::<String>(1024);
    let app = Router::new().route("/ws", get(upgrade)).with_state(tx);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("axum-broadcast listening on ws://{addr}/ws");
    axum::serve(listener, app).await.expect("serve");
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(tx): State<broadcast::Sender<String>>,
) -> impl IntoResponse {
    ws.on_upgrade(move |socket| connection(socket, tx))
}

async fn connection(socket: WebSocket, tx: broadcast::Sender<String>) {
    let (mut sender, mut receiver) = socket.split();
    let mut rx = tx.subscribe();

    let mut send_task = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    if sender.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(message)) = receiver.next().await {
            if let Message::Text(text) = message {
                let _ = tx.send(text.to_string());
            }
        }
    });

    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}
