//! The crate's error type, and the one place that maps errors to close codes.

use std::io;

use crate::{CloseCode, ConnectionId};

/// Everything that can go wrong in the hub or on one connection.
///
/// Match on the variants; the `Display` text is meant for people and may change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection is closed or closing; nothing more can be sent on it.
    #[error("connection closed")]
    ConnectionClosed,
    /// No connection with this id is registered on the hub.
    #[error("no connection with id {0}")]
    NotFound(ConnectionId),
    /// The connection's send queue was full and its overflow policy closes it (code 1013).
    #[error("send queue full: the peer does not read fast enough")]
    SendQueueFull,
    /// The peer sent a message larger than the limit (code 1009).
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    MessageTooLarge {
        /// The size the peer announced or reached.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A text message was not valid UTF-8 (code 1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A compressed message (permessage-deflate) did not inflate (code 1007).
    #[error("invalid compressed data in a message")]
    InvalidCompressedData,
    /// The peer broke the WebSocket protocol (code 1002).
    #[error("WebSocket protocol violation: {0}")]
    Protocol(String),
    /// The peer kept sending faster than
    /// [`HubConfig::rate_limit`](crate::HubConfig::rate_limit) allows (code 1008).
    #[error("rate limit exceeded for too long")]
    RateLimited,
    /// The peer did not answer a ping within the pong wait.
    #[error("no pong within the pong wait")]
    PongTimeout,
    /// A write to the peer stalled for longer than the write wait.
    #[error("write stalled past the write wait")]
    WriteTimeout,
    /// The user already has the most connections
    /// [`HubConfig::max_connections_per_user`](crate::HubConfig::max_connections_per_user)
    /// allows.
    #[error("user {user:?} already has {max} connections, the most allowed")]
    UserConnectionLimit {
        /// The user id.
        user: String,
        /// The configured maximum.
        max: usize,
    },
    /// The hub is shutting down and accepts no new work.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// Serializing or parsing JSON failed.
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// TLS could not be set up (unreadable or mismatched certificate and key).
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener of the stand-alone [`Server`](crate::Server) could not accept a
    /// connection (see [`HubBuilder::on_server_error`](crate::HubBuilder::on_server_error)).
    #[error("accept failed: {0}")]
    Accept(#[source] io::Error),
    /// A client's TLS handshake with the stand-alone [`Server`](crate::Server) failed or
    /// timed out (see [`HubBuilder::on_server_error`](crate::HubBuilder::on_server_error)).
    #[error("TLS handshake with {peer} failed: {reason}")]
    TlsHandshake {
        /// The client's address.
        peer: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An I/O error on the socket or listener.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The close code this error ends a connection with, if it ends one with a close frame.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::MessageTooLarge { .. } => Some(CloseCode::MESSAGE_TOO_BIG),
            Error::InvalidUtf8 | Error::InvalidCompressedData => Some(CloseCode::INVALID_PAYLOAD),
            Error::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
            Error::RateLimited => Some(CloseCode::POLICY_VIOLATION),
            Error::SendQueueFull => Some(CloseCode::TRY_AGAIN_LATER),
            _ => None,
        }
    }
}

impl From<wshub_ws::FrameError> for Error {
    fn from(error: wshub_ws::FrameError) -> Self {
        Error::Protocol(error.0.to_owned())
    }
}
