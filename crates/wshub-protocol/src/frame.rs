//! Server → client frames as owned types, for clients that decode them and for tests.
//!
//! Servers encode with the functions of [`crate::encode`], which produce the same bytes as
//! serializing these types, without building them first.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};

use crate::encode::{
    DeliveryOut, ErrorOut, MessageOut, OkOut, PongOut, PresenceEventOut, UnrecoverableOut,
    WelcomeOut,
};
use crate::error::{ErrorCode, ProtocolError};
use crate::id::CommandId;
use crate::payload::Payload;
use crate::room::RoomName;
use crate::stream::{Epoch, LostRange, Offset, StreamPosition};

/// Any frame a server sends, tagged on `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// `welcome`, the first frame of a connection.
    Welcome(WelcomeFrame),
    /// `message`, a publication to a subscribed room.
    Message(MessageFrame),
    /// `direct`, a `send` to this connection.
    Direct(DirectFrame),
    /// `broadcast`, a message to every connection.
    Broadcast(BroadcastFrame),
    /// `join`: another connection joined a room this one is in.
    Join(PresenceEvent),
    /// `leave`: another connection left a room this one is in.
    Leave(PresenceEvent),
    /// `ok`, the success reply to a command with an id.
    Ok(OkFrame),
    /// `pong`, the reply to `ping`.
    Pong(PongFrame),
    /// `error`, the reply to a failed command.
    Error(ErrorFrame),
    /// `unrecoverable` (a wshub extension, docs/PROTOCOL.md): publications of a
    /// subscribed room were lost (a cluster's backplane lost them); delivery continues
    /// after the given position.
    Unrecoverable(UnrecoverableFrame),
}

/// `{"type":"unrecoverable","room":...,"epoch":...,"offset":...,"recovered":false,"lost":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnrecoverableFrame {
    /// The room whose publications were lost.
    pub room: RoomName,
    /// The room's epoch from now on.
    pub epoch: Epoch,
    /// Delivery continues with the publications after this offset.
    pub offset: Offset,
    /// The offsets that were lost, oldest first (empty from a server that does not say).
    #[serde(default)]
    pub lost: Vec<LostRange>,
}

impl UnrecoverableFrame {
    /// The position delivery continues after.
    pub fn position(&self) -> StreamPosition {
        StreamPosition::new(self.epoch.clone(), self.offset)
    }
}

/// `{"type":"welcome","client":...,"user":...,"ping_interval_ms":...,"version":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WelcomeFrame {
    /// This connection's id, unique across a cluster and never reused.
    pub client: String,
    /// The token's `sub`, `None` for an anonymous connection.
    pub user: Option<String>,
    /// How often the server pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// The protocol version, [`crate::PROTOCOL_VERSION`].
    pub version: u32,
}

/// `{"type":"message","room":...,"data":...,"from":...,"offset":...,"epoch":...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageFrame {
    /// The room it was published to.
    pub room: RoomName,
    /// The published data, as raw JSON.
    pub data: Payload,
    /// The publisher's connection id, `None` when published through the HTTP API.
    pub from: Option<String>,
    /// The message's offset in its room.
    pub offset: Offset,
    /// The epoch of the room's history the offset belongs to.
    pub epoch: Epoch,
}

impl MessageFrame {
    /// Where this message sits in its room, to resume from with `since`.
    pub fn position(&self) -> StreamPosition {
        StreamPosition::new(self.epoch.clone(), self.offset)
    }
}

/// `{"type":"direct","from":...,"data":...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DirectFrame {
    /// The sender's connection id, `None` when sent through the HTTP API.
    pub from: Option<String>,
    /// The data, as raw JSON.
    pub data: Payload,
}

/// `{"type":"broadcast","from":...,"data":...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BroadcastFrame {
    /// The sender's connection id, `None` when broadcast through the HTTP API.
    pub from: Option<String>,
    /// The data, as raw JSON.
    pub data: Payload,
}

/// The body of a `join` or `leave` frame: `{"room":...,"client":...,"user":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PresenceEvent {
    /// The room joined or left.
    pub room: RoomName,
    /// The other connection's id.
    pub client: String,
    /// The other connection's user, `None` when anonymous.
    pub user: Option<String>,
}

/// One entry of a presence list: `{"client":...,"user":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceClient {
    /// The connection id.
    pub client: String,
    /// The connection's user (its token's `sub`), `None` when anonymous. Serialized as
    /// `null`, never omitted.
    pub user: Option<String>,
}

/// `{"type":"ok","id":...}` with the optional fields some commands add.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OkFrame {
    /// The id of the command this answers.
    pub id: CommandId,
    /// The room (subscribe, unsubscribe, publish, presence, history).
    #[serde(default)]
    pub room: Option<RoomName>,
    /// The room's epoch (subscribe, history).
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// The room's latest offset (subscribe) or the new message's offset (publish).
    #[serde(default)]
    pub offset: Option<Offset>,
    /// Whether every missed message was replayed (subscribe and history with `since`).
    #[serde(default)]
    pub recovered: Option<bool>,
    /// With `recovered: false` on a subscribe: the offsets after its `since` that are
    /// neither replayed nor coming, oldest first (empty when the server cannot say).
    #[serde(default)]
    pub lost: Vec<LostRange>,
    /// True when a history reply was cut to keep within the server's byte limit: a
    /// `since` the last message's offset reads on.
    #[serde(default)]
    pub more: bool,
    /// The connections in the room (presence).
    #[serde(default)]
    pub clients: Option<Vec<PresenceClient>>,
    /// The messages (history).
    #[serde(default)]
    pub messages: Option<Vec<MessageFrame>>,
}

/// `{"type":"pong","id":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PongFrame {
    /// The id of the ping, `None` when it had none.
    #[serde(default)]
    pub id: Option<CommandId>,
}

/// `{"type":"error","id":...,"code":...,"message":...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorFrame {
    /// The id of the failed command, `None` when it had no valid id.
    #[serde(default)]
    pub id: Option<CommandId>,
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable explanation; not an API.
    pub message: String,
}

#[derive(Deserialize)]
struct TypeTag<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
}

impl ServerFrame {
    /// Decodes one text frame from a server.
    ///
    /// A frame whose `type` this crate does not know is an `unknown_type` error, so a client
    /// can skip frames a newer server added; anything else malformed is `bad_request`.
    pub fn decode(text: &str) -> Result<ServerFrame, ProtocolError> {
        let bad = |err: serde_json::Error| ProtocolError::bad_request(None, err.to_string());
        let tag: TypeTag<'_> = serde_json::from_str(text).map_err(bad)?;
        let frame = match &*tag.ty {
            "welcome" => ServerFrame::Welcome(serde_json::from_str(text).map_err(bad)?),
            "message" => ServerFrame::Message(serde_json::from_str(text).map_err(bad)?),
            "direct" => ServerFrame::Direct(serde_json::from_str(text).map_err(bad)?),
            "broadcast" => ServerFrame::Broadcast(serde_json::from_str(text).map_err(bad)?),
            "join" => ServerFrame::Join(serde_json::from_str(text).map_err(bad)?),
            "leave" => ServerFrame::Leave(serde_json::from_str(text).map_err(bad)?),
            "ok" => ServerFrame::Ok(serde_json::from_str(text).map_err(bad)?),
            "pong" => ServerFrame::Pong(serde_json::from_str(text).map_err(bad)?),
            "error" => ServerFrame::Error(serde_json::from_str(text).map_err(bad)?),
            "unrecoverable" => ServerFrame::Unrecoverable(serde_json::from_str(text).map_err(bad)?),
            other => {
                return Err(ProtocolError::new(
                    None,
                    ErrorCode::UnknownType,
                    format!("unknown frame type {other:?}"),
                ));
            }
        };
        Ok(frame)
    }

    /// Decodes a binary-safe buffer holding one text frame.
    pub fn decode_bytes(bytes: &[u8]) -> Result<ServerFrame, ProtocolError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ProtocolError::bad_request(None, "frame is not UTF-8"))?;
        Self::decode(text)
    }

    /// The id of the command this frame answers (ok, pong, error), if any.
    pub fn reply_id(&self) -> Option<&CommandId> {
        match self {
            ServerFrame::Ok(ok) => Some(&ok.id),
            ServerFrame::Pong(pong) => pong.id.as_ref(),
            ServerFrame::Error(error) => error.id.as_ref(),
            _ => None,
        }
    }

    /// Encodes the frame as a server sends it.
    pub fn to_json(&self) -> String {
        // Serializing cannot fail: see `encode`.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Encodes the frame into `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl Serialize for ServerFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerFrame::Welcome(f) => f.serialize(s),
            ServerFrame::Message(f) => f.serialize(s),
            ServerFrame::Direct(f) => DeliveryOut {
                ty: "direct",
                from: f.from.as_deref(),
                data: f.data.as_raw(),
            }
            .serialize(s),
            ServerFrame::Broadcast(f) => DeliveryOut {
                ty: "broadcast",
                from: f.from.as_deref(),
                data: f.data.as_raw(),
            }
            .serialize(s),
            ServerFrame::Join(f) => f.serialize_as("join", s),
            ServerFrame::Leave(f) => f.serialize_as("leave", s),
            ServerFrame::Ok(f) => f.serialize(s),
            ServerFrame::Pong(f) => PongOut {
                ty: "pong",
                id: f.id.as_ref(),
            }
            .serialize(s),
            ServerFrame::Error(f) => ErrorOut {
                ty: "error",
                id: f.id.as_ref(),
                code: f.code,
                message: &f.message,
            }
            .serialize(s),
            ServerFrame::Unrecoverable(f) => UnrecoverableOut {
                ty: "unrecoverable",
                room: &f.room,
                epoch: &f.epoch,
                offset: f.offset,
                recovered: false,
                lost: &f.lost,
            }
            .serialize(s),
        }
    }
}

/// Serializes with `"type":"welcome"`.
impl Serialize for WelcomeFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WelcomeOut {
            ty: "welcome",
            client: &self.client,
            user: self.user.as_deref(),
            ping_interval_ms: self.ping_interval_ms,
            version: self.version,
        }
        .serialize(s)
    }
}

/// Serializes with `"type":"message"`, also inside an `ok` frame's `messages`.
impl Serialize for MessageFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MessageOut {
            ty: "message",
            room: &self.room,
            data: self.data.as_raw(),
            from: self.from.as_deref(),
            offset: self.offset,
            epoch: &self.epoch,
        }
        .serialize(s)
    }
}

impl PresenceEvent {
    fn serialize_as<S: Serializer>(&self, ty: &'static str, s: S) -> Result<S::Ok, S::Error> {
        PresenceEventOut {
            ty,
            room: &self.room,
            client: &self.client,
            user: self.user.as_deref(),
        }
        .serialize(s)
    }
}

/// Serializes with `"type":"ok"`, omitting absent optional fields.
impl Serialize for OkFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        OkOut {
            room: self.room.as_ref(),
            epoch: self.epoch.as_ref(),
            offset: self.offset,
            recovered: self.recovered,
            lost: &self.lost,
            more: self.more,
            clients: self.clients.as_deref(),
            messages: self.messages.as_deref(),
            ..OkOut::new(&self.id)
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_frame_type() {
        let frames = [
            r#"{"type":"welcome","client":"c","user":null,"ping_interval_ms":1,"version":1}"#,
            r#"{"type":"message","room":"r","data":[1],"from":null,"offset":1,"epoch":"e"}"#,
            r#"{"type":"direct","from":"c","data":{}}"#,
            r#"{"type":"broadcast","from":null,"data":0}"#,
            r#"{"type":"join","room":"r","client":"c","user":"u"}"#,
            r#"{"type":"leave","room":"r","client":"c","user":null}"#,
            r#"{"type":"ok","id":1}"#,
            r#"{"type":"pong","id":"p"}"#,
            r#"{"type":"error","id":null,"code":"internal","message":"m"}"#,
        ];
        for text in frames {
            let frame = ServerFrame::decode(text).unwrap();
            assert_eq!(frame.to_json(), text);
            assert_eq!(&frame.to_bytes()[..], text.as_bytes());
            assert_eq!(ServerFrame::decode_bytes(text.as_bytes()).unwrap(), frame);
        }
    }

    #[test]
    fn ok_with_history_messages() {
        let text = r#"{"type":"ok","id":1,"room":"r","epoch":"e","recovered":true,"messages":[{"type":"message","room":"r","data":"x","from":"c","offset":2,"epoch":"e"}]}"#;
        let ServerFrame::Ok(ok) = ServerFrame::decode(text).unwrap() else {
            panic!()
        };
        let messages = ok.messages.as_deref().unwrap();
        assert_eq!(messages[0].data.get(), "\"x\"");
        assert_eq!(
            messages[0].position(),
            StreamPosition::new("e".into(), Offset(2))
        );
        assert_eq!(ServerFrame::Ok(ok).to_json(), text);
    }

    #[test]
    fn reply_ids() {
        let ok = ServerFrame::decode(r#"{"type":"ok","id":1}"#).unwrap();
        assert_eq!(ok.reply_id(), Some(&CommandId::from(1u64)));
        let msg = ServerFrame::decode(r#"{"type":"direct","from":null,"data":1}"#).unwrap();
        assert_eq!(msg.reply_id(), None);
    }

    #[test]
    fn unknown_and_malformed_frames() {
        let err = ServerFrame::decode(r#"{"type":"new_thing","x":1}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownType);
        for text in ["", "[]", r#"{"type":"message"}"#, r#"{"x":1}"#] {
            let err = ServerFrame::decode(text).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadRequest, "{text}");
        }
        assert!(ServerFrame::decode_bytes(&[0xff]).is_err());
    }
}

#[cfg(test)]
mod unrecoverable_tests {
    use super::*;

    #[test]
    fn unrecoverable_round_trips() {
        let room = RoomName::parse("chat").expect("room");
        let position = StreamPosition::new(Epoch::from("e2"), Offset(41));
        let bytes = crate::encode::unrecoverable(&room, &position, &[]);
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(
            text,
            r#"{"type":"unrecoverable","room":"chat","epoch":"e2","offset":41,"recovered":false}"#
        );
        let ServerFrame::Unrecoverable(frame) = ServerFrame::decode(text).expect("decodes") else {
            panic!("not unrecoverable");
        };
        assert_eq!(frame.position(), position);
        assert!(frame.lost.is_empty());
        assert_eq!(ServerFrame::Unrecoverable(frame).to_json(), text);
    }

    #[test]
    fn lost_ranges_round_trip() {
        let room = RoomName::parse("chat").expect("room");
        let position = StreamPosition::new(Epoch::from("e2"), Offset(41));
        let lost = LostRange::between(
            &StreamPosition::new(Epoch::from("e1"), Offset(9)),
            &position,
            None,
        );
        let bytes = crate::encode::unrecoverable(&room, &position, &lost);
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert_eq!(
            text,
            r#"{"type":"unrecoverable","room":"chat","epoch":"e2","offset":41,"recovered":false,"lost":[{"epoch":"e1","from":10},{"epoch":"e2","from":1,"to":41}]}"#
        );
        let ServerFrame::Unrecoverable(frame) = ServerFrame::decode(text).expect("decodes") else {
            panic!("not unrecoverable");
        };
        assert_eq!(frame.lost, lost);
        assert_eq!(ServerFrame::Unrecoverable(frame).to_json(), text);

        let ok = r#"{"type":"ok","id":1,"room":"chat","epoch":"e","offset":12,"recovered":false,"lost":[{"epoch":"e","from":3,"to":7}]}"#;
        let ServerFrame::Ok(frame) = ServerFrame::decode(ok).expect("decodes") else {
            panic!("not ok");
        };
        assert_eq!(frame.lost.len(), 1);
        assert_eq!(ServerFrame::Ok(frame).to_json(), ok);
    }
}
