//! Request and response bodies of the HTTP API for backends (docs/PROTOCOL.md, "HTTP API for
//! backends"), plus the error body every rejection uses.
//!
//! Requests that carry `data` keep it raw ([`Payload`]); room names are validated while
//! deserializing, so a body with a bad room name fails to parse (answer `bad_request`).
//! The history answer is best encoded with [`crate::encode::history_response`], which
//! splices stored frames; [`HistoryResponse`] is its owned form for clients and tests.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::frame::{MessageFrame, PresenceClient};
use crate::payload::Payload;
use crate::room::RoomName;
use crate::stream::{Epoch, Offset, StreamPosition};

/// `{"error":"<code>","message":"..."}`: the body of every HTTP error answer, and of the
/// rejections before a WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorCode,
    /// A human-readable explanation; not an API.
    pub message: String,
}

impl ErrorBody {
    /// A body with the given code and message.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
        }
    }
}

/// `POST /api/publish` body: `{"room":...,"data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The room to publish to.
    pub room: RoomName,
    /// The message, any JSON value.
    pub data: Payload,
}

/// `POST /api/publish` answer: `{"room":...,"offset":...,"epoch":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    /// The room published to.
    pub room: RoomName,
    /// The new message's offset.
    pub offset: Offset,
    /// The room's epoch.
    pub epoch: Epoch,
}

/// `POST /api/broadcast` body: `{"data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastRequest {
    /// The message, any JSON value.
    pub data: Payload,
}

/// `POST /api/send` body: `{"to":...,"data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The recipient's connection id.
    pub to: String,
    /// The message, any JSON value.
    pub data: Payload,
}

/// `POST /api/disconnect` body: `{"client":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectRequest {
    /// The connection to close (with 1000, `disconnected by server`).
    pub client: String,
}

/// `POST /api/drain` answer (202): `{"draining":true,"window_ms":...}`, the same while a
/// drain is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainResponse {
    /// Always true: the node is draining.
    pub draining: bool,
    /// The drain window (`--drain-window`) in milliseconds: every connection is closed with
    /// 1012 within it.
    pub window_ms: u64,
}

/// `{}`: the answer of `/api/broadcast`, `/api/send` and `/api/disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EmptyResponse {}

/// `GET /api/rooms` answer: `{"rooms":[{"room":...,"clients":<count>}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsResponse {
    /// Every room with at least one subscriber.
    pub rooms: Vec<RoomSummary>,
}

/// One entry of [`RoomsResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room's name.
    pub room: RoomName,
    /// How many connections are subscribed.
    pub clients: usize,
}

/// `GET /api/rooms/{room}/presence` answer: `{"room":...,"clients":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceResponse {
    /// The room.
    pub room: RoomName,
    /// Its connections.
    pub clients: Vec<PresenceClient>,
}

/// The query string of `GET /api/rooms/{room}/history?since_offset=&epoch=&limit=`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryParams {
    /// Read the messages after this offset (oldest first); absent: the newest messages.
    #[serde(default)]
    pub since_offset: Option<u64>,
    /// The epoch `since_offset` belongs to.
    #[serde(default)]
    pub epoch: Option<String>,
    /// How many messages at most; defaults to, and is capped by, the history size.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl HistoryParams {
    /// The position to read after, when `since_offset` is given.
    ///
    /// Without `epoch`, the offset is taken to belong to `current_epoch` (a backend that
    /// does not track epochs pages by offset alone); with a different epoch, the caller
    /// answers from the start of the retained history with `recovered: false`, as for the
    /// WebSocket `history` command.
    pub fn since(&self, current_epoch: &Epoch) -> Option<StreamPosition> {
        let offset = Offset(self.since_offset?);
        let epoch = match &self.epoch {
            Some(epoch) => Epoch::from(epoch.as_str()),
            None => current_epoch.clone(),
        };
        Some(StreamPosition::new(epoch, offset))
    }
}

/// `GET /api/rooms/{room}/history` answer: `{"room":...,"epoch":...,"messages":[...]}`,
/// with `recovered` when the request had `since_offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The room.
    pub room: RoomName,
    /// The room's epoch.
    pub epoch: Epoch,
    /// Whether the history reached back to `since_offset` in the same epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// True when the messages were cut to keep the answer within the server's byte limit:
    /// ask again with `since_offset` the last one's offset for the next page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// The `message` frames, oldest first.
    pub messages: Vec<MessageFrame>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let publish: PublishRequest =
            serde_json::from_str(r#"{"room":"r","data":{"a":[1, 2]}}"#).unwrap();
        assert_eq!(publish.room.as_str(), "r");
        assert_eq!(publish.data.get(), r#"{"a":[1, 2]}"#);
        assert!(serde_json::from_str::<PublishRequest>(r#"{"room":"a b","data":1}"#).is_err());
        assert!(serde_json::from_str::<PublishRequest>(r#"{"room":"r"}"#).is_err());
        let deep = format!(
            r#"{{"room":"r","data":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(serde_json::from_str::<PublishRequest>(&deep).is_err());

        let send: SendRequest = serde_json::from_str(r#"{"to":"c","data":null}"#).unwrap();
        assert_eq!((send.to.as_str(), send.data.get()), ("c", "null"));
        let b: BroadcastRequest = serde_json::from_str(r#"{"data":"x"}"#).unwrap();
        assert_eq!(b.data.get(), "\"x\"");
        let d: DisconnectRequest = serde_json::from_str(r#"{"client":"c"}"#).unwrap();
        assert_eq!(d.client, "c");
    }

    #[test]
    fn responses() {
        let publish = PublishResponse {
            room: RoomName::parse("r").unwrap(),
            offset: Offset(3),
            epoch: "e".into(),
        };
        assert_eq!(
            serde_json::to_string(&publish).unwrap(),
            r#"{"room":"r","offset":3,"epoch":"e"}"#
        );
        assert_eq!(serde_json::to_string(&EmptyResponse {}).unwrap(), "{}");
        let rooms = RoomsResponse {
            rooms: vec![RoomSummary {
                room: RoomName::parse("r").unwrap(),
                clients: 2,
            }],
        };
        assert_eq!(
            serde_json::to_string(&rooms).unwrap(),
            r#"{"rooms":[{"room":"r","clients":2}]}"#
        );
        let presence = PresenceResponse {
            room: RoomName::parse("r").unwrap(),
            clients: vec![PresenceClient {
                client: "c".into(),
                user: None,
            }],
        };
        assert_eq!(
            serde_json::to_string(&presence).unwrap(),
            r#"{"room":"r","clients":[{"client":"c","user":null}]}"#
        );
        let error = ErrorBody::new(ErrorCode::Unauthorized, "missing token");
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":"unauthorized","message":"missing token"}"#
        );
    }

    #[test]
    fn history_params() {
        let current = Epoch::from("now");
        let params = HistoryParams::default();
        assert_eq!(params.since(&current), None);
        let params = HistoryParams {
            since_offset: Some(4),
            ..HistoryParams::default()
        };
        assert_eq!(
            params.since(&current),
            Some(StreamPosition::new("now".into(), Offset(4)))
        );
        let params = HistoryParams {
            since_offset: Some(4),
            epoch: Some("old".into()),
            limit: Some(2),
        };
        assert_eq!(
            params.since(&current),
            Some(StreamPosition::new("old".into(), Offset(4)))
        );
    }
}
