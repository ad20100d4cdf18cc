//! The only module that names the WebSocket protocol crate (`tokio-websockets`): opening a
//! connection, and converting frames to and from this crate's [`Message`].
//!
//! Keeping it here means another WebSocket implementation replaces one file (with
//! `deflate`, which it wraps around the stream for permessage-deflate).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Uri};
use tokio::net::TcpStream;
use tokio_websockets::{
    ClientBuilder, CloseCode, Connector, Limits, MaybeTlsStream, WebSocketStream,
};

use crate::{deflate::DeflateStream, error::Error};

/// A message of the application, sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    fn into_ws(self) -> tokio_websockets::Message {
        match self {
            Message::Text(text) => tokio_websockets::Message::text(text),
            Message::Binary(bytes) => tokio_websockets::Message::binary(bytes),
        }
    }
}

/// What a connection's reader sees.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An application message.
    Message(Message),
    /// A ping or pong (the library answers pings itself): proof the peer is alive.
    Control,
    /// The peer's close frame.
    Close { code: u16, reason: String },
}

/// Where to connect: the parsed URL and the extra handshake headers.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_message_bytes: usize,
    /// The TLS configuration for `wss://`; without it, the Mozilla roots (webpki-roots).
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Offer permessage-deflate.
    compression: bool,
}

impl Target {
    /// Validates the URL and headers once, so that reconnecting never fails on them.
    pub(crate) fn new(
        url: &str,
        headers: &[(String, String)],
        max_message_bytes: usize,
        tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
        compression: bool,
    ) -> Result<Target, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URI"))?;
        match uri.scheme_str() {
            Some("ws" | "wss") => {}
            _ => return Err(invalid("the scheme must be ws or wss")),
        }
        if uri.host().is_none() {
            return Err(invalid("no host"));
        }
        let mut parsed = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let bad = || Error::InvalidHeader { name: name.clone() };
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            if tokio_websockets::client::DISALLOWED_HEADERS.contains(&header_name)
                || (compression && header_name == http::header::SEC_WEBSOCKET_EXTENSIONS)
            {
                return Err(bad());
            }
            let header_value = HeaderValue::from_str(value).map_err(|_| bad())?;
            parsed.push((header_name, header_value));
        }
        Ok(Target {
            uri,
            headers: parsed,
            max_message_bytes,
            tls,
            compression,
        })
    }

    /// Opens a connection (TCP, TLS for `wss://`, HTTP upgrade) within `timeout`.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Socket, Error> {
        match tokio::time::timeout(timeout, self.open_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(Error::ConnectTimeout(timeout)),
        }
    }

    async fn open_unbounded(&self) -> Result<Socket, Error> {
        let failed = |err: tokio_websockets::Error| Error::Connect(Arc::new(err));
        let mut builder = ClientBuilder::from_uri(self.uri.clone())
            .limits(Limits::default().max_payload_len(Some(self.max_message_bytes)));
        for (name, value) in &self.headers {
            builder = builder
                .add_header(name.clone(), value.clone())
                .map_err(failed)?;
        }
        if self.compression {
            builder = builder
                .add_header(
                    http::header::SEC_WEBSOCKET_EXTENSIONS,
                    HeaderValue::from_static(crate::deflate::OFFER),
                )
                .map_err(failed)?;
        }
        // As tokio-websockets' own `connect`, with the stream wrapped for permessage-deflate
        // before the handshake (the wrapper reads the response to learn what was agreed).
        let host = self
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = self.uri.scheme_str() == Some("wss");
        let port = self.uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| Error::Connect(Arc::new(err)))?;
        let _ = tcp.set_nodelay(true);
        let stream = if tls {
            let connector = match &self.tls {
                Some(config) => {
                    Connector::Rustls(tokio_rustls::TlsConnector::from(Arc::clone(config)))
                }
                None => Connector::new().map_err(failed)?,
            };
            connector.wrap(host, tcp).await.map_err(failed)?
        } else {
            Connector::Plain.wrap(host, tcp).await.map_err(failed)?
        };
        let stream = DeflateStream::new(stream, self.compression, self.max_message_bytes);
        let (ws, _response) = builder.connect_on(stream).await.map_err(failed)?;
        tracing::debug!(
            compressed = ws.get_ref().is_inflating(),
            compresses_sends = ws.get_ref().compresses_sends(),
            "connected to {}",
            self.uri
        );
        Ok(Socket { ws })
    }
}

/// One open WebSocket connection.
#[derive(Debug)]
pub(crate) struct Socket {
    ws: WebSocketStream<DeflateStream<MaybeTlsStream<TcpStream>>>,
}

impl Socket {
    /// The next frame; `None` when the connection ended. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Result<Incoming, Error>> {
        let message = match self.ws.next().await? {
            Ok(message) => message,
            Err(err) => return Some(Err(Error::Transport(Arc::new(err)))),
        };
        Some(Ok(if let Some((code, reason)) = message.as_close() {
            Incoming::Close {
                code: u16::from(code),
                reason: reason.to_owned(),
            }
        } else if message.is_ping() || message.is_pong() {
            Incoming::Control
        } else if message.is_text() {
            let bytes = Bytes::from(message.into_payload());
            // The library validated the UTF-8 already; a failure here cannot happen, but
            // is a protocol error rather than a panic if it does.
            match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Incoming::Message(Message::Text(text)),
                Err(_) => {
                    return Some(Err(Error::InvalidFrame("text frame is not UTF-8".into())));
                }
            }
        } else {
            Incoming::Message(Message::Binary(Bytes::from(message.into_payload())))
        }))
    }

    /// Sends one message and flushes it.
    pub(crate) async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.ws
            .send(message.into_ws())
            .await
            .map_err(|err| Error::Transport(Arc::new(err)))
    }

    /// Sends a WebSocket ping.
    pub(crate) async fn ping(&mut self) -> Result<(), Error> {
        self.ws
            .send(tokio_websockets::Message::ping(Bytes::from_static(
                b"wshub",
            )))
            .await
            .map_err(|err| Error::Transport(Arc::new(err)))
    }

    /// Closes with 1000 and waits (at most `timeout`) for the peer's close frame, so the
    /// close handshake completes (RFC 6455 §7.1.2). When the peer closed first, this sends
    /// the reply the library queued and waits for the server to end the TCP connection, as
    /// a client should (§7.1.1).
    pub(crate) async fn close(mut self, timeout: Duration) {
        let handshake = async {
            // Refused when the peer's close came first: its reply is queued already.
            let _ = self
                .ws
                .send(tokio_websockets::Message::close(
                    Some(CloseCode::NORMAL_CLOSURE),
                    "",
                ))
                .await;
            // Reading on flushes what is queued and ends when the close handshake does.
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(timeout, handshake).await;
    }
}
