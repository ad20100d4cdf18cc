//! [`Error`]: everything that can fail in this crate, as one enum a caller can match.
//!
//! Errors are `Clone` (sources are shared behind an `Arc`) because one failure is reported
//! to several places: the event callbacks, the event stream, and the calls it fails.
//! `Display` texts are for people and logs; match on the variants.

use std::sync::Arc;
use std::time::Duration;

use wshub_protocol::{CommandId, ErrorCode, RoomName, RoomNameError};

/// A shared, type-erased error source.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a `ws://` or `wss://` URL the client can connect to.
    #[error("invalid WebSocket URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An extra header has an invalid name or value, or is one the handshake sets itself.
    #[error("invalid handshake header {name:?}")]
    InvalidHeader {
        /// The header's name as given.
        name: String,
    },
    /// Opening the connection failed (DNS, TCP, TLS or the HTTP upgrade).
    #[error("connecting failed: {0}")]
    Connect(#[source] Source),
    /// Opening the connection took longer than the configured connect timeout.
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The connection failed while open (I/O error or WebSocket protocol violation).
    #[error("connection failed: {0}")]
    Transport(#[source] Source),
    /// The server closed the connection.
    #[error("closed by the server with code {code}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Closed {
        /// The close code (1005 when the close frame had none).
        code: u16,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// The connection ended without a close frame.
    #[error("the connection ended without a close frame")]
    ConnectionLost,
    /// The heartbeat saw no pong and no other traffic in time: the peer is taken for dead.
    #[error("no pong or other traffic within {0:?} of a ping")]
    HeartbeatTimeout(Duration),
    /// Every allowed reconnect attempt failed.
    #[error("gave up after {attempts} reconnect attempts")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
    },
    /// There is no open connection to send on.
    #[error("not connected")]
    NotConnected,
    /// The connection's outgoing queue is full (the server reads too slowly).
    #[error("the outgoing queue is full ({capacity} messages)")]
    SendQueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The client was closed (`close` or `disconnect`, or every handle dropped).
    #[error("the client is closed")]
    ClientClosed,
    /// A value could not be serialized to JSON.
    #[error("JSON encoding failed: {0}")]
    Json(#[source] Source),
    /// A frame from the server is not valid for the protocol.
    #[error("invalid frame from the server: {0}")]
    InvalidFrame(String),
    /// A room name is not valid.
    #[error(transparent)]
    InvalidRoom(#[from] RoomNameError),
    /// The server answered a command with an `error` frame.
    #[error("the server refused {command}: {code}: {message}")]
    Server {
        /// The command type that failed (`publish`, `subscribe`, ...).
        command: &'static str,
        /// The protocol's error code.
        code: ErrorCode,
        /// The server's explanation; not an API.
        message: String,
    },
    /// No reply arrived in time.
    #[error("no reply to {command} within {timeout:?}")]
    Timeout {
        /// The command type that timed out.
        command: &'static str,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The connection dropped before the reply arrived; the command may or may not have
    /// been executed.
    #[error("the connection dropped before the reply to {command} (id {id})")]
    Disconnected {
        /// The command type.
        command: &'static str,
        /// The command's id.
        id: CommandId,
    },
    /// The queue of publishes made while disconnected is full.
    #[error("the offline publish queue is full ({capacity} messages)")]
    OfflineQueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The client already has a subscription to this room.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(RoomName),
    /// The reply did not have the fields its command promises.
    #[error("unexpected reply to {command}")]
    UnexpectedReply {
        /// The command type.
        command: &'static str,
    },
}

impl Error {
    /// The protocol error code, when the server refused a command.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a reply timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    pub(crate) fn json(err: serde_json::Error) -> Error {
        Error::Json(Arc::new(err))
    }
}
