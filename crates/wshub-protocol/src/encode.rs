//! The server's encoders: one function per frame, each writing compact JSON straight into
//! a buffer and returning it as [`Bytes`].
//!
//! A frame for many recipients is encoded once and the `Bytes` cloned by handle. `data` is
//! spliced in as the raw text the publisher sent. The `history` reply splices the stored,
//! already-encoded `message` frames, so replaying history never re-encodes a message.
//!
//! Field order is fixed (`type` first, then the fields in the order docs/PROTOCOL.md lists
//! them), which makes frames byte-for-byte predictable in tests.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::PROTOCOL_VERSION;
use crate::error::ErrorCode;
use crate::frame::{MessageFrame, PresenceClient};
use crate::id::CommandId;
use crate::room::RoomName;
use crate::stream::{Epoch, LostRange, Offset, StreamPosition};

/// What [`to_bytes`] returns if serialization ever failed; it cannot for the types of this
/// module (strings, numbers, and raw JSON already validated), but the encoders must not
/// panic on a path fed by network input.
const INTERNAL_ERROR_FRAME: &[u8] =
    br#"{"type":"error","id":null,"code":"internal","message":"encoding failed"}"#;

/// Serializes `value` into a buffer of at least `capacity` bytes.
fn to_bytes<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => Bytes::from(buf),
        Err(_) => Bytes::from_static(INTERNAL_ERROR_FRAME),
    }
}

/// Room for the fixed parts of a frame, added to the variable parts' lengths.
const FRAME_OVERHEAD_BYTES: usize = 96;

#[derive(Serialize)]
pub(crate) struct WelcomeOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) client: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) ping_interval_ms: u64,
    pub(crate) version: u32,
}

#[derive(Serialize)]
pub(crate) struct MessageOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) room: &'a RoomName,
    pub(crate) data: &'a RawValue,
    pub(crate) from: Option<&'a str>,
    pub(crate) offset: Offset,
    pub(crate) epoch: &'a Epoch,
}

/// `direct` and `broadcast` frames.
#[derive(Serialize)]
pub(crate) struct DeliveryOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) from: Option<&'a str>,
    pub(crate) data: &'a RawValue,
}

/// `join` and `leave` frames.
#[derive(Serialize)]
pub(crate) struct PresenceEventOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) room: &'a RoomName,
    pub(crate) client: &'a str,
    pub(crate) user: Option<&'a str>,
}

/// `unrecoverable` frames.
#[derive(Serialize)]
pub(crate) struct UnrecoverableOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) room: &'a RoomName,
    pub(crate) epoch: &'a Epoch,
    pub(crate) offset: Offset,
    pub(crate) recovered: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) lost: &'a [LostRange],
}

/// `ok` frames, with the optional fields each command adds.
#[derive(Serialize)]
pub(crate) struct OkOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) id: &'a CommandId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) room: Option<&'a RoomName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<&'a Epoch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<Offset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recovered: Option<bool>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) lost: &'a [LostRange],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) clients: Option<&'a [PresenceClient]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) messages: Option<&'a [MessageFrame]>,
}

impl<'a> OkOut<'a> {
    pub(crate) fn new(id: &'a CommandId) -> Self {
        OkOut {
            ty: "ok",
            id,
            room: None,
            epoch: None,
            offset: None,
            recovered: None,
            lost: &[],
            more: false,
            clients: None,
            messages: None,
        }
    }
}

/// `pong` frames.
#[derive(Serialize)]
pub(crate) struct PongOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) id: Option<&'a CommandId>,
}

/// `error` frames.
#[derive(Serialize)]
pub(crate) struct ErrorOut<'a> {
    #[serde(rename = "type")]
    pub(crate) ty: &'static str,
    pub(crate) id: Option<&'a CommandId>,
    pub(crate) code: ErrorCode,
    pub(crate) message: &'a str,
}

/// The head of a history answer whose `messages` are spliced in afterwards.
#[derive(Serialize)]
struct HistoryHeadOut<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a CommandId>,
    room: &'a RoomName,
    epoch: &'a Epoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    /// Present (true) when the messages were cut to keep the reply within its byte limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
}

/// `{"type":"welcome","client":...,"user":...,"ping_interval_ms":...,"version":1}`, the
/// first frame of every connection. `user` is the token's `sub` (null when anonymous).
pub fn welcome(client: &str, user: Option<&str>, ping_interval: Duration) -> Bytes {
    let ping_interval_ms = u64::try_from(ping_interval.as_millis()).unwrap_or(u64::MAX);
    let frame = WelcomeOut {
        ty: "welcome",
        client,
        user,
        ping_interval_ms,
        version: PROTOCOL_VERSION,
    };
    to_bytes(
        &frame,
        FRAME_OVERHEAD_BYTES + client.len() + user.map_or(0, str::len),
    )
}

/// `{"type":"message","room":...,"data":...,"from":...,"offset":...,"epoch":...}`, a
/// publication to a room. `from` is the publisher's connection id, or `None` for the HTTP
/// API. This is also the form history stores and replays.
pub fn message(
    room: &RoomName,
    data: &RawValue,
    from: Option<&str>,
    position: &StreamPosition,
) -> Bytes {
    let frame = MessageOut {
        ty: "message",
        room,
        data,
        from,
        offset: position.offset,
        epoch: &position.epoch,
    };
    let capacity = FRAME_OVERHEAD_BYTES
        + room.as_str().len()
        + data.get().len()
        + from.map_or(0, str::len)
        + position.epoch.as_str().len();
    to_bytes(&frame, capacity)
}

/// `{"type":"direct","from":...,"data":...}`, the frame a `send` delivers.
pub fn direct(from: Option<&str>, data: &RawValue) -> Bytes {
    delivery("direct", from, data)
}

/// `{"type":"broadcast","from":...,"data":...}`, the frame a `broadcast` delivers.
pub fn broadcast(from: Option<&str>, data: &RawValue) -> Bytes {
    delivery("broadcast", from, data)
}

fn delivery(ty: &'static str, from: Option<&str>, data: &RawValue) -> Bytes {
    let capacity = FRAME_OVERHEAD_BYTES + data.get().len() + from.map_or(0, str::len);
    to_bytes(&DeliveryOut { ty, from, data }, capacity)
}

/// `{"type":"join","room":...,"client":...,"user":...}`: another connection joined `room`.
pub fn join(room: &RoomName, client: &str, user: Option<&str>) -> Bytes {
    presence_event("join", room, client, user)
}

/// `{"type":"leave","room":...,"client":...,"user":...}`: another connection left `room`
/// (or disconnected).
pub fn leave(room: &RoomName, client: &str, user: Option<&str>) -> Bytes {
    presence_event("leave", room, client, user)
}

fn presence_event(ty: &'static str, room: &RoomName, client: &str, user: Option<&str>) -> Bytes {
    let frame = PresenceEventOut {
        ty,
        room,
        client,
        user,
    };
    to_bytes(
        &frame,
        FRAME_OVERHEAD_BYTES + room.as_str().len() + client.len(),
    )
}

/// `{"type":"unrecoverable","room":...,"epoch":...,"offset":...,"recovered":false,"lost":[...]}`
/// (a wshub extension): publications of `room` were lost, the offsets `lost` lists (the
/// field is left out when empty); delivery continues after `position`.
pub fn unrecoverable(room: &RoomName, position: &StreamPosition, lost: &[LostRange]) -> Bytes {
    let frame = UnrecoverableOut {
        ty: "unrecoverable",
        room,
        epoch: &position.epoch,
        offset: position.offset,
        recovered: false,
        lost,
    };
    let capacity = FRAME_OVERHEAD_BYTES
        + room.as_str().len()
        + lost
            .iter()
            .map(|range| 64 + range.epoch.as_str().len())
            .sum::<usize>();
    to_bytes(&frame, capacity)
}

/// `{"type":"ok","id":...}`, the reply to `send` and `broadcast`.
pub fn ok(id: &CommandId) -> Bytes {
    to_bytes(&OkOut::new(id), FRAME_OVERHEAD_BYTES)
}

/// `{"type":"ok","id":...,"room":...}`, the reply to `unsubscribe`.
pub fn ok_room(id: &CommandId, room: &RoomName) -> Bytes {
    let frame = OkOut {
        room: Some(room),
        ..OkOut::new(id)
    };
    to_bytes(&frame, FRAME_OVERHEAD_BYTES + room.as_str().len())
}

/// `{"type":"ok","id":...,"room":...,"epoch":...,"offset":...,"recovered":...,"lost":[...]}`,
/// the reply to `subscribe`. `position` is the room's latest; `recovered` is `Some` exactly
/// when the subscribe had a `since`; `lost` (left out when empty) lists the offsets after
/// `since` that are neither replayed nor coming ([`LostRange::between`]).
pub fn ok_subscribe(
    id: &CommandId,
    room: &RoomName,
    position: &StreamPosition,
    recovered: Option<bool>,
    lost: &[LostRange],
) -> Bytes {
    let frame = OkOut {
        room: Some(room),
        epoch: Some(&position.epoch),
        offset: Some(position.offset),
        recovered,
        lost,
        ..OkOut::new(id)
    };
    let capacity = FRAME_OVERHEAD_BYTES
        + room.as_str().len()
        + position.epoch.as_str().len()
        + lost
            .iter()
            .map(|range| 64 + range.epoch.as_str().len())
            .sum::<usize>();
    to_bytes(&frame, capacity)
}

/// `{"type":"ok","id":...,"room":...,"offset":...}`, the reply to `publish`.
pub fn ok_publish(id: &CommandId, room: &RoomName, offset: Offset) -> Bytes {
    let frame = OkOut {
        room: Some(room),
        offset: Some(offset),
        ..OkOut::new(id)
    };
    to_bytes(&frame, FRAME_OVERHEAD_BYTES + room.as_str().len())
}

/// `{"type":"ok","id":...,"room":...,"clients":[{"client":...,"user":...},...]}`, the reply
/// to `presence`.
pub fn ok_presence(id: &CommandId, room: &RoomName, clients: &[PresenceClient]) -> Bytes {
    let frame = OkOut {
        room: Some(room),
        clients: Some(clients),
        ..OkOut::new(id)
    };
    to_bytes(&frame, FRAME_OVERHEAD_BYTES + 48 * clients.len())
}

/// `{"type":"ok","id":...,"room":...,"epoch":...,"recovered":...,"messages":[...]}`, the
/// reply to `history`. `messages` are `message` frames as [`message`] encoded them (as
/// history stores them) and are spliced in as they are. `recovered` is `Some` exactly when
/// the query had a `since` (false when its epoch was not the room's). `more` adds
/// `"more":true`: the messages were cut to keep the reply within the server's byte limit,
/// and a `since` the last one's offset reads on.
pub fn ok_history(
    id: &CommandId,
    room: &RoomName,
    epoch: &Epoch,
    recovered: Option<bool>,
    messages: &[Bytes],
    more: bool,
) -> Bytes {
    let head = HistoryHeadOut {
        ty: Some("ok"),
        id: Some(id),
        room,
        epoch,
        recovered,
        more,
    };
    with_messages(&head, messages)
}

/// The HTTP API's answer to `GET /api/rooms/{room}/history`:
/// `{"room":...,"epoch":...,"recovered":...,"messages":[...]}`, with `messages` spliced in as
/// for [`ok_history`]. `recovered` is `Some` exactly when the request had `since_offset`;
/// `more` as for [`ok_history`].
pub fn history_response(
    room: &RoomName,
    epoch: &Epoch,
    recovered: Option<bool>,
    messages: &[Bytes],
    more: bool,
) -> Bytes {
    let head = HistoryHeadOut {
        ty: None,
        id: None,
        room,
        epoch,
        recovered,
        more,
    };
    with_messages(&head, messages)
}

/// Serializes `head` (an object), then appends `"messages":[...]` with the raw frames.
fn with_messages(head: &HistoryHeadOut<'_>, messages: &[Bytes]) -> Bytes {
    let messages_len: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut buf = Vec::with_capacity(FRAME_OVERHEAD_BYTES + messages_len);
    if serde_json::to_writer(&mut buf, head).is_err() || buf.pop() != Some(b'}') {
        return Bytes::from_static(INTERNAL_ERROR_FRAME);
    }
    buf.extend_from_slice(b",\"messages\":[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(message);
    }
    buf.extend_from_slice(b"]}");
    Bytes::from(buf)
}

/// `{"type":"pong","id":...}`, the reply to `ping` (`"id": null` when the ping had none).
pub fn pong(id: Option<&CommandId>) -> Bytes {
    to_bytes(&PongOut { ty: "pong", id }, FRAME_OVERHEAD_BYTES)
}

/// `{"type":"error","id":...,"code":...,"message":...}` (`"id": null` when the command had
/// no valid id).
pub fn error(id: Option<&CommandId>, code: ErrorCode, message: &str) -> Bytes {
    let frame = ErrorOut {
        ty: "error",
        id,
        code,
        message,
    };
    to_bytes(&frame, FRAME_OVERHEAD_BYTES + message.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ServerFrame;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn pos(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition::new(epoch.into(), Offset(offset))
    }

    /// Asserts the exact bytes, and that the frame decodes and re-encodes to them.
    fn check(frame: Bytes, expected: &str) {
        assert_eq!(std::str::from_utf8(&frame).unwrap(), expected);
        let decoded = ServerFrame::decode(expected).unwrap();
        assert_eq!(decoded.to_json(), expected);
    }

    #[test]
    fn welcome_frame() {
        check(
            welcome("c1", Some("alice"), Duration::from_secs(25)),
            r#"{"type":"welcome","client":"c1","user":"alice","ping_interval_ms":25000,"version":1}"#,
        );
        check(
            welcome("c1", None, Duration::from_millis(1500)),
            r#"{"type":"welcome","client":"c1","user":null,"ping_interval_ms":1500,"version":1}"#,
        );
    }

    #[test]
    fn message_frame() {
        check(
            message(&room("r"), &raw(r#"{"a": 1}"#), Some("c1"), &pos("e", 3)),
            r#"{"type":"message","room":"r","data":{"a": 1},"from":"c1","offset":3,"epoch":"e"}"#,
        );
        check(
            message(&room("r"), &raw("null"), None, &pos("e", 1)),
            r#"{"type":"message","room":"r","data":null,"from":null,"offset":1,"epoch":"e"}"#,
        );
    }

    #[test]
    fn strings_are_escaped() {
        check(
            message(&room("r\"\\é"), &raw("1"), Some("c\n"), &pos("e\u{1}", 1)),
            r#"{"type":"message","room":"r\"\\é","data":1,"from":"c\n","offset":1,"epoch":"e\u0001"}"#,
        );
    }

    #[test]
    fn direct_and_broadcast_frames() {
        check(
            direct(Some("c1"), &raw("[1,2]")),
            r#"{"type":"direct","from":"c1","data":[1,2]}"#,
        );
        check(
            direct(None, &raw("\"x\"")),
            r#"{"type":"direct","from":null,"data":"x"}"#,
        );
        check(
            broadcast(None, &raw("true")),
            r#"{"type":"broadcast","from":null,"data":true}"#,
        );
        check(
            broadcast(Some("c2"), &raw("{}")),
            r#"{"type":"broadcast","from":"c2","data":{}}"#,
        );
    }

    #[test]
    fn join_and_leave_frames() {
        check(
            join(&room("r"), "c1", Some("u")),
            r#"{"type":"join","room":"r","client":"c1","user":"u"}"#,
        );
        check(
            leave(&room("r"), "c1", None),
            r#"{"type":"leave","room":"r","client":"c1","user":null}"#,
        );
    }

    #[test]
    fn ok_frames() {
        let id = CommandId::from(1u64);
        check(ok(&id), r#"{"type":"ok","id":1}"#);
        check(
            ok(&CommandId::from("a".to_owned())),
            r#"{"type":"ok","id":"a"}"#,
        );
        check(
            ok_room(&id, &room("r")),
            r#"{"type":"ok","id":1,"room":"r"}"#,
        );
        check(
            ok_subscribe(&id, &room("r"), &pos("e", 5), None, &[]),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","offset":5}"#,
        );
        check(
            ok_subscribe(&id, &room("r"), &pos("e", 5), Some(true), &[]),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","offset":5,"recovered":true}"#,
        );
        check(
            ok_subscribe(&id, &room("r"), &pos("e", 0), Some(false), &[]),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","offset":0,"recovered":false}"#,
        );
        let lost = [LostRange {
            epoch: "e".into(),
            from: Offset(3),
            to: Some(Offset(7)),
        }];
        check(
            ok_subscribe(&id, &room("r"), &pos("e", 12), Some(false), &lost),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","offset":12,"recovered":false,"lost":[{"epoch":"e","from":3,"to":7}]}"#,
        );
        check(
            ok_publish(&id, &room("r"), Offset(9)),
            r#"{"type":"ok","id":1,"room":"r","offset":9}"#,
        );
        let clients = [
            PresenceClient {
                client: "c1".into(),
                user: Some("u".into()),
            },
            PresenceClient {
                client: "c2".into(),
                user: None,
            },
        ];
        check(
            ok_presence(&id, &room("r"), &clients),
            r#"{"type":"ok","id":1,"room":"r","clients":[{"client":"c1","user":"u"},{"client":"c2","user":null}]}"#,
        );
        check(
            ok_presence(&id, &room("r"), &[]),
            r#"{"type":"ok","id":1,"room":"r","clients":[]}"#,
        );
    }

    #[test]
    fn history_frames_splice_stored_messages() {
        let id = CommandId::from(1u64);
        let stored = [
            message(&room("r"), &raw("1"), None, &pos("e", 1)),
            message(&room("r"), &raw("2"), Some("c"), &pos("e", 2)),
        ];
        check(
            ok_history(&id, &room("r"), &"e".into(), None, &stored, false),
            concat!(
                r#"{"type":"ok","id":1,"room":"r","epoch":"e","messages":["#,
                r#"{"type":"message","room":"r","data":1,"from":null,"offset":1,"epoch":"e"},"#,
                r#"{"type":"message","room":"r","data":2,"from":"c","offset":2,"epoch":"e"}]}"#
            ),
        );
        check(
            ok_history(&id, &room("r"), &"e".into(), Some(false), &[], false),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","recovered":false,"messages":[]}"#,
        );
        check(
            ok_history(&id, &room("r"), &"e".into(), Some(true), &[], true),
            r#"{"type":"ok","id":1,"room":"r","epoch":"e","recovered":true,"more":true,"messages":[]}"#,
        );
        let body = history_response(&room("r"), &"e".into(), None, &stored[..1], false);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"room":"r","epoch":"e","messages":[{"type":"message","room":"r","data":1,"from":null,"offset":1,"epoch":"e"}]}"#
        );
        let parsed: crate::http::HistoryResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.messages.len(), 1);
    }

    #[test]
    fn pong_and_error_frames() {
        check(
            pong(Some(&CommandId::from(4u64))),
            r#"{"type":"pong","id":4}"#,
        );
        check(pong(None), r#"{"type":"pong","id":null}"#);
        check(
            error(None, ErrorCode::BadRequest, "not JSON"),
            r#"{"type":"error","id":null,"code":"bad_request","message":"not JSON"}"#,
        );
        for code in ErrorCode::ALL {
            let frame = error(Some(&CommandId::from(1u64)), code, "m");
            let expected = format!(
                r#"{{"type":"error","id":1,"code":"{}","message":"m"}}"#,
                code.as_str()
            );
            check(frame, &expected);
        }
    }
}
