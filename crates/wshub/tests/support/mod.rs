//! Shared setup for the integration tests: a real server on 127.0.0.1:0 and clients that
//! are not our code (tokio-tungstenite).
#![allow(dead_code, unreachable_pub)]

use std::{future::Future, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        Message as WsMessage,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use wshub::{Hub, Server};

pub mod raw;

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Serves `hub` at its configured path on a free loopback port.
pub async fn start_server(hub: Hub) -> Server {
    Server::start("127.0.0.1:0", hub).await.expect("bind")
}

pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// Connects a WebSocket client to the server's `/ws`.
pub async fn connect(addr: SocketAddr) -> Client {
    let (ws, _) = within("connect", connect_async(ws_url(addr)))
        .await
        .expect("handshake");
    ws
}

/// Connects with extra request headers; returns the HTTP error status on rejection.
pub async fn connect_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    match within("connect", connect_async(request)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected connect error: {other}"),
    }
}

/// Waits until `cond` holds, polling every few milliseconds, for at most [`STEP`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The next data message's text (skipping control frames); panics on close or error.
pub async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("next message", ws.next()).await {
            Some(Ok(WsMessage::Text(text))) => return text.to_string(),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code (skipping data messages).
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match within("close frame", ws.next()).await {
            Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before the close frame: {e}"),
            None => return None,
        }
    }
}

pub async fn send_text<S>(ws: &mut WebSocketStream<S>, text: impl Into<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("send", ws.send(WsMessage::text(text.into())))
        .await
        .expect("send");
}

pub async fn close(ws: &mut Client) {
    let _ = within(
        "close",
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })),
    )
    .await;
}

/// Stops a test server, giving idle clients half a second to answer the close handshake.
pub async fn stop(server: Server) {
    within("stop", server.stop(Duration::from_millis(500))).await;
}
