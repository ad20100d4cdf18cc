//! Client → server commands ([`Command`]) and their decoding ([`Command::decode`]).
//!
//! Decoding applies every rule of docs/PROTOCOL.md, in this order:
//!
//! 1. The frame must be JSON (else `bad_request`) holding an object (else `bad_request`).
//! 2. An `id`, when present, must be a number or a string of at most 64 bytes; otherwise
//!    the answer is `bad_request` with `"id": null`, whatever else is wrong.
//! 3. `type` must be present and a string (`bad_request`) naming a known command
//!    (`unknown_type`).
//! 4. The command's fields must be present and of the right type (`bad_request`); room
//!    names are validated as [`RoomName`]s and `data` as a [`Payload`].
//!
//! Every error from step 3 on carries the command's `id`. So does an error of step 1 that
//! comes after a valid `id` in the text (say, a `data` too deeply nested, or garbage after
//! it): the decoder records the `id` as soon as it reads it. Optional fields (`id`,
//! `since`, `limit`) given as `null` count as absent; unknown fields are ignored, so the
//! protocol can grow optional fields; a field given twice is a `bad_request`.
//!
//! Decoding never recurses into `data` (it is kept as raw text, see [`Payload`]), so no
//! input can overflow the stack; everything else is parsed with `serde_json`'s default
//! recursion limit of 128.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorCode, ProtocolError};
use crate::id::CommandId;
use crate::payload::Payload;
use crate::room::RoomName;
use crate::stream::StreamPosition;

/// A command from a client, tagged on `type`.
///
/// Serializing gives the wire form (what a Rust client sends); decoding goes through
/// [`Command::decode`], which enforces the protocol's validation rules and error codes
/// (`serde`'s derived internally-tagged decoding could do neither, and cannot keep raw
/// `data`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// `subscribe`: join a room, optionally recovering missed messages first.
    Subscribe(Subscribe),
    /// `unsubscribe`: leave a room.
    Unsubscribe(Unsubscribe),
    /// `publish`: deliver `data` to every subscriber of a room.
    Publish(Publish),
    /// `send`: deliver `data` to one connection.
    Send(SendTo),
    /// `broadcast`: deliver `data` to every connection.
    Broadcast(Broadcast),
    /// `presence`: list the connections in a room.
    Presence(PresenceQuery),
    /// `history`: read a room's retained messages.
    History(HistoryQuery),
    /// `ping`: answered by `pong`.
    Ping(Ping),
}

/// `{"type":"subscribe","room":...,"since":{"epoch":...,"offset":...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscribe {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The room to join.
    pub room: RoomName,
    /// The last position the client has seen; with it, missed messages are replayed first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
}

/// `{"type":"unsubscribe","room":...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unsubscribe {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The room to leave.
    pub room: RoomName,
}

/// `{"type":"publish","room":...,"data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publish {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The room to publish to.
    pub room: RoomName,
    /// The message, any JSON value.
    pub data: Payload,
}

/// `{"type":"send","to":...,"data":...}` (named `SendTo` so as not to shadow
/// [`std::marker::Send`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendTo {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The connection id of the recipient.
    pub to: String,
    /// The message, any JSON value.
    pub data: Payload,
}

/// `{"type":"broadcast","data":...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broadcast {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The message, any JSON value.
    pub data: Payload,
}

/// `{"type":"presence","room":...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceQuery {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The room whose connections to list.
    pub room: RoomName,
}

/// `{"type":"history","room":...,"since":...,"limit":...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryQuery {
    /// The command id, echoed in the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
    /// The room whose history to read.
    pub room: RoomName,
    /// With it, the oldest `limit` messages after this position; without, the newest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// How many messages at most; the server defaults it to, and caps it by, its history
    /// size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `{"type":"ping"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ping {
    /// The command id, echoed in the `pong`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CommandId>,
}

impl Command {
    /// Decodes one text frame, applying every validation rule of docs/PROTOCOL.md (see the
    /// [module docs](self) for the order). The error carries the command's `id` whenever
    /// it was valid and read, and encodes to the `error` frame with
    /// [`ProtocolError::to_frame`].
    pub fn decode(text: &str) -> Result<Command, ProtocolError> {
        let early_id = Cell::new(None);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let envelope = EnvelopeSeed {
            early_id: &early_id,
        }
        .deserialize(&mut deserializer)
        .and_then(|envelope| deserializer.end().map(|()| envelope));
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(err) => {
                let id = early_id.get().and_then(CommandId::from_raw);
                let message = if err.is_data() {
                    format!("a command must be a JSON object: {err}")
                } else {
                    format!("not valid JSON: {err}")
                };
                return Err(ProtocolError::bad_request(id, message));
            }
        };
        envelope.into_command()
    }

    /// The command's id, if it has one.
    pub fn id(&self) -> Option<&CommandId> {
        match self {
            Command::Subscribe(c) => c.id.as_ref(),
            Command::Unsubscribe(c) => c.id.as_ref(),
            Command::Publish(c) => c.id.as_ref(),
            Command::Send(c) => c.id.as_ref(),
            Command::Broadcast(c) => c.id.as_ref(),
            Command::Presence(c) => c.id.as_ref(),
            Command::History(c) => c.id.as_ref(),
            Command::Ping(c) => c.id.as_ref(),
        }
    }

    /// The command's `type` as it appears on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::Subscribe(_) => "subscribe",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Publish(_) => "publish",
            Command::Send(_) => "send",
            Command::Broadcast(_) => "broadcast",
            Command::Presence(_) => "presence",
            Command::History(_) => "history",
            Command::Ping(_) => "ping",
        }
    }

    /// Encodes the command as a client sends it.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every field is a string, a number, a
        // struct of those, or raw JSON that was valid when it was built.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FromStr for Command {
    type Err = ProtocolError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Command::decode(text)
    }
}

/// The top-level fields of a command, each as the raw text of its value.
#[derive(Default)]
struct Envelope<'a> {
    ty: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    room: Option<&'a RawValue>,
    since: Option<&'a RawValue>,
    limit: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    to: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Type,
    Id,
    Room,
    Since,
    Limit,
    Data,
    To,
    #[serde(other)]
    Other,
}

impl Field {
    fn name(&self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::Id => "id",
            Field::Room => "room",
            Field::Since => "since",
            Field::Limit => "limit",
            Field::Data => "data",
            Field::To => "to",
            Field::Other => "other",
        }
    }
}

/// Deserializes an [`Envelope`], recording the raw `id` in `early_id` as soon as it is
/// read so that a later syntax error can still be answered with the id.
struct EnvelopeSeed<'s, 'a> {
    early_id: &'s Cell<Option<&'a RawValue>>,
}

impl<'de, 's> DeserializeSeed<'de> for EnvelopeSeed<'s, 'de> {
    type Value = Envelope<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for EnvelopeSeed<'s, 'de> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(field) = map.next_key::<Field>()? {
            let slot = match field {
                Field::Type => &mut envelope.ty,
                Field::Id => &mut envelope.id,
                Field::Room => &mut envelope.room,
                Field::Since => &mut envelope.since,
                Field::Limit => &mut envelope.limit,
                Field::Data => &mut envelope.data,
                Field::To => &mut envelope.to,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::duplicate_field(field.name()));
            }
            let value = map.next_value::<&'de RawValue>()?;
            if let Field::Id = field {
                self.early_id.set(Some(value));
            }
            *slot = Some(value);
        }
        Ok(envelope)
    }
}

/// Treats JSON `null` like an absent field.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|raw| raw.get() != "null")
}

impl Envelope<'_> {
    fn into_command(self) -> Result<Command, ProtocolError> {
        let id = match self.id {
            None => None,
            Some(raw) => match CommandId::from_raw(raw) {
                Some(id) => Some(id),
                None => {
                    return Err(ProtocolError::bad_request(
                        None,
                        "field `id` must be a number or a string of at most 64 bytes",
                    ));
                }
            },
        };
        let fields = Fields {
            envelope: &self,
            id,
        };
        let Some(ty) = self.ty else {
            return Err(fields.error("missing field `type`"));
        };
        let Ok(ty) = serde_json::from_str::<std::borrow::Cow<'_, str>>(ty.get()) else {
            return Err(fields.error("field `type` must be a string"));
        };
        let command = match &*ty {
            "subscribe" => Command::Subscribe(Subscribe {
                room: fields.room()?,
                since: fields.since()?,
                id: fields.id,
            }),
            "unsubscribe" => Command::Unsubscribe(Unsubscribe {
                room: fields.room()?,
                id: fields.id,
            }),
            "publish" => Command::Publish(Publish {
                room: fields.room()?,
                data: fields.data()?,
                id: fields.id,
            }),
            "send" => Command::Send(SendTo {
                to: fields.to()?,
                data: fields.data()?,
                id: fields.id,
            }),
            "broadcast" => Command::Broadcast(Broadcast {
                data: fields.data()?,
                id: fields.id,
            }),
            "presence" => Command::Presence(PresenceQuery {
                room: fields.room()?,
                id: fields.id,
            }),
            "history" => Command::History(HistoryQuery {
                room: fields.room()?,
                since: fields.since()?,
                limit: fields.limit()?,
                id: fields.id,
            }),
            "ping" => Command::Ping(Ping { id: fields.id }),
            _ => {
                let message = format!("unknown command type {:?}", truncate(&ty, 64));
                return Err(ProtocolError::new(
                    fields.id,
                    ErrorCode::UnknownType,
                    message,
                ));
            }
        };
        Ok(command)
    }
}

/// The fields of one envelope, checked one by one against the command's needs.
struct Fields<'e, 'a> {
    envelope: &'e Envelope<'a>,
    id: Option<CommandId>,
}

impl Fields<'_, '_> {
    fn error(&self, message: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
        ProtocolError::bad_request(self.id.clone(), message)
    }

    fn room(&self) -> Result<RoomName, ProtocolError> {
        let raw = self
            .envelope
            .room
            .ok_or_else(|| self.error("missing field `room`"))?;
        let name = serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
            .map_err(|_| self.error("field `room` must be a string"))?;
        RoomName::parse(&name).map_err(|err| self.error(format!("bad room name: {err}")))
    }

    fn since(&self) -> Result<Option<StreamPosition>, ProtocolError> {
        let Some(raw) = present(self.envelope.since) else {
            return Ok(None);
        };
        serde_json::from_str(raw.get()).map(Some).map_err(|_| {
            self.error(
                "field `since` must be an object with a string `epoch` and a non-negative \
                 integer `offset`",
            )
        })
    }

    fn limit(&self) -> Result<Option<usize>, ProtocolError> {
        let Some(raw) = present(self.envelope.limit) else {
            return Ok(None);
        };
        serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| self.error("field `limit` must be a non-negative integer"))
    }

    fn data(&self) -> Result<Payload, ProtocolError> {
        let raw = self
            .envelope
            .data
            .ok_or_else(|| self.error("missing field `data`"))?;
        Payload::from_raw(raw.to_owned()).map_err(|err| self.error(err.to_string()))
    }

    fn to(&self) -> Result<String, ProtocolError> {
        let raw = self
            .envelope
            .to
            .ok_or_else(|| self.error("missing field `to`"))?;
        serde_json::from_str(raw.get()).map_err(|_| self.error("field `to` must be a string"))
    }
}

/// At most `max_bytes` of `s`, cut on a character boundary, so error messages stay short.
fn truncate(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Command {
        Command::decode(text).unwrap_or_else(|err| panic!("{}: {err}", truncate(text, 200)))
    }

    fn fails(text: &str) -> ProtocolError {
        match Command::decode(text) {
            Ok(command) => panic!("{} decoded as {command:?}", truncate(text, 200)),
            Err(err) => err,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn num(id: u64) -> Option<CommandId> {
        Some(CommandId::from(id))
    }

    #[test]
    fn subscribe() {
        assert_eq!(
            decode(r#"{"type":"subscribe","room":"a"}"#),
            Command::Subscribe(Subscribe {
                id: None,
                room: room("a"),
                since: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"subscribe","id":1,"room":"a","since":{"epoch":"e","offset":4}}"#),
            Command::Subscribe(Subscribe {
                id: num(1),
                room: room("a"),
                since: Some(StreamPosition::new("e".into(), 4.into()))
            })
        );
        assert_eq!(
            decode(r#"{"type":"subscribe","room":"a","since":null}"#),
            Command::Subscribe(Subscribe {
                id: None,
                room: room("a"),
                since: None
            })
        );
    }

    #[test]
    fn unsubscribe_presence_ping() {
        assert_eq!(
            decode(r#"{"type":"unsubscribe","id":"x","room":"a"}"#),
            Command::Unsubscribe(Unsubscribe {
                id: Some(CommandId::from("x".to_owned())),
                room: room("a")
            })
        );
        assert_eq!(
            decode(r#"{"type":"presence","room":"a"}"#),
            Command::Presence(PresenceQuery {
                id: None,
                room: room("a")
            })
        );
        assert_eq!(
            decode(r#"{"type":"ping","id":9}"#),
            Command::Ping(Ping { id: num(9) })
        );
        assert_eq!(
            decode(r#"{"type":"ping"}"#),
            Command::Ping(Ping { id: None })
        );
    }

    #[test]
    fn publish_keeps_raw_data() {
        let Command::Publish(publish) =
            decode(r#"{"type":"publish","room":"a","data":{"x": [1, 2.50]},"id":2}"#)
        else {
            panic!()
        };
        assert_eq!(publish.id, num(2));
        assert_eq!(publish.room, room("a"));
        assert_eq!(publish.data.get(), r#"{"x": [1, 2.50]}"#);

        // `null` is a JSON value like any other.
        let Command::Publish(publish) = decode(r#"{"type":"publish","room":"a","data":null}"#)
        else {
            panic!()
        };
        assert_eq!(publish.data.get(), "null");
    }

    #[test]
    fn send_and_broadcast() {
        let Command::Send(send) = decode(r#"{"type":"send","to":"c1","data":"hi"}"#) else {
            panic!()
        };
        assert_eq!(send.to, "c1");
        assert_eq!(send.data.get(), "\"hi\"");
        let Command::Broadcast(b) = decode(r#"{"type":"broadcast","data":[1],"id":1}"#) else {
            panic!()
        };
        assert_eq!(b.data.get(), "[1]");
        assert_eq!(b.id, num(1));
    }

    #[test]
    fn history() {
        assert_eq!(
            decode(r#"{"type":"history","room":"a"}"#),
            Command::History(HistoryQuery {
                id: None,
                room: room("a"),
                since: None,
                limit: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"history","room":"a","since":{"epoch":"e","offset":0},"limit":10}"#),
            Command::History(HistoryQuery {
                id: None,
                room: room("a"),
                since: Some(StreamPosition::new("e".into(), 0.into())),
                limit: Some(10)
            })
        );
        assert_eq!(
            decode(r#"{"type":"history","room":"a","limit":null}"#),
            Command::History(HistoryQuery {
                id: None,
                room: room("a"),
                since: None,
                limit: None
            })
        );
    }

    #[test]
    fn not_json_or_not_an_object() {
        for text in [
            "",
            "nope",
            "{",
            "{\"type\":\"ping\"",
            "{\"type\":\"ping\"}x",
            "\u{feff}{}",
        ] {
            let err = fails(text);
            assert_eq!(err.code(), ErrorCode::BadRequest, "{text:?}");
            assert_eq!(err.id(), None);
        }
        for text in [
            "[]",
            "1",
            "\"ping\"",
            "null",
            "true",
            "[{\"type\":\"ping\"}]",
        ] {
            let err = fails(text);
            assert_eq!(err.code(), ErrorCode::BadRequest, "{text:?}");
            assert_eq!(err.id(), None);
        }
    }

    #[test]
    fn type_rules() {
        let err = fails(r#"{"id":1}"#);
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(1).as_ref())
        );
        let err = fails(r#"{"id":1,"type":5}"#);
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(1).as_ref())
        );
        let err = fails(r#"{"id":1,"type":null}"#);
        assert_eq!(err.code(), ErrorCode::BadRequest);
        let err = fails(r#"{"id":1,"type":"dance"}"#);
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::UnknownType, num(1).as_ref())
        );
        let err = fails(r#"{"type":"Subscribe","room":"a"}"#);
        assert_eq!((err.code(), err.id()), (ErrorCode::UnknownType, None));
        // An escaped type name is still the same string.
        assert!(matches!(
            decode(r#"{"type":"p\u0069ng"}"#),
            Command::Ping(_)
        ));
    }

    #[test]
    fn id_edge_cases() {
        let s64 = "i".repeat(64);
        let Command::Ping(ping) = decode(&format!(r#"{{"type":"ping","id":"{s64}"}}"#)) else {
            panic!()
        };
        assert_eq!(ping.id, Some(CommandId::String(s64)));

        let s65 = "i".repeat(65);
        let err = fails(&format!(r#"{{"type":"ping","id":"{s65}"}}"#));
        assert_eq!((err.code(), err.id()), (ErrorCode::BadRequest, None));

        let Command::Ping(ping) = decode(r#"{"type":"ping","id":1.5}"#) else {
            panic!()
        };
        assert_eq!(
            serde_json::to_string(&ping.id).unwrap(),
            "1.5",
            "float ids are numbers"
        );
        let Command::Ping(ping) = decode(r#"{"type":"ping","id":-3}"#) else {
            panic!()
        };
        assert_eq!(ping.id, Some(CommandId::from(-3i64)));

        for bad in ["null", "true", "{}", "[1]", "{\"a\":1}"] {
            let err = fails(&format!(r#"{{"type":"ping","id":{bad}}}"#));
            assert_eq!(
                (err.code(), err.id()),
                (ErrorCode::BadRequest, None),
                "{bad}"
            );
        }
        // An invalid id wins over every other problem, even an unknown type.
        let err = fails(r#"{"type":"dance","id":true}"#);
        assert_eq!((err.code(), err.id()), (ErrorCode::BadRequest, None));
        // The id comes back as the client wrote it, for the error frame too.
        let err = fails(r#"{"type":"dance","id":"req-1"}"#);
        assert_eq!(
            &err.to_frame()[..],
            br#"{"type":"error","id":"req-1","code":"unknown_type","message":"unknown command type \"dance\""}"#
        );
    }

    #[test]
    fn field_errors_carry_the_id() {
        let cases = [
            r#"{"type":"subscribe","id":7}"#,
            r#"{"type":"subscribe","id":7,"room":5}"#,
            r#"{"type":"subscribe","id":7,"room":""}"#,
            r#"{"type":"subscribe","id":7,"room":"a b"}"#,
            r#"{"type":"subscribe","id":7,"room":"a","since":5}"#,
            r#"{"type":"subscribe","id":7,"room":"a","since":{"epoch":"e"}}"#,
            r#"{"type":"subscribe","id":7,"room":"a","since":{"epoch":1,"offset":1}}"#,
            r#"{"type":"subscribe","id":7,"room":"a","since":{"epoch":"e","offset":-1}}"#,
            r#"{"type":"unsubscribe","id":7}"#,
            r#"{"type":"publish","id":7,"room":"a"}"#,
            r#"{"type":"publish","id":7,"data":1}"#,
            r#"{"type":"send","id":7,"data":1}"#,
            r#"{"type":"send","id":7,"to":1,"data":1}"#,
            r#"{"type":"send","id":7,"to":"c"}"#,
            r#"{"type":"broadcast","id":7}"#,
            r#"{"type":"presence","id":7}"#,
            r#"{"type":"history","id":7}"#,
            r#"{"type":"history","id":7,"room":"a","limit":-1}"#,
            r#"{"type":"history","id":7,"room":"a","limit":"5"}"#,
            r#"{"type":"history","id":7,"room":"a","limit":1.5}"#,
            r#"{"type":"ping","id":7,"type":"ping"}"#,
            // Syntax errors after a valid id still carry it.
            r#"{"id":7,"type":"ping",}"#,
            r#"{"id":7,"type":"ping"} trailing"#,
        ];
        for text in cases {
            let err = fails(text);
            assert_eq!(err.code(), ErrorCode::BadRequest, "{text}");
            assert_eq!(err.id(), num(7).as_ref(), "{text}");
        }
        let room129 = "r".repeat(129);
        let err = fails(&format!(
            r#"{{"type":"subscribe","id":7,"room":"{room129}"}}"#
        ));
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(7).as_ref())
        );
        let room128 = "r".repeat(128);
        assert!(Command::decode(&format!(r#"{{"type":"subscribe","room":"{room128}"}}"#)).is_ok());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(matches!(
            decode(r#"{"type":"ping","extra":{"deep":[1,2,{"x":null}]}}"#),
            Command::Ping(_)
        ));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = fails(&format!(
            r#"{{"type":"publish","id":7,"room":"a","data":{deep}}}"#
        ));
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(7).as_ref())
        );

        // Unterminated, in data and in an ignored field.
        let open = "[".repeat(100_000);
        let err = fails(&format!(
            r#"{{"id":7,"type":"publish","room":"a","data":{open}"#
        ));
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(7).as_ref())
        );
        // Unknown fields are skipped without recursion, however deep.
        assert!(matches!(
            decode(&format!(r#"{{"type":"ping","x":{deep}}}"#)),
            Command::Ping(_)
        ));
        assert!(Command::decode(&format!(r#"{{"type":"ping","x":{open}"#)).is_err());

        // In a field that is parsed into a tree, serde_json's recursion limit answers.
        let err = fails(&format!(
            r#"{{"type":"subscribe","id":7,"room":"a","since":{deep}}}"#
        ));
        assert_eq!(
            (err.code(), err.id()),
            (ErrorCode::BadRequest, num(7).as_ref())
        );
        let err = fails(&format!(r#"{{"type":"ping","id":{deep}}}"#));
        assert_eq!((err.code(), err.id()), (ErrorCode::BadRequest, None));
        // And as the whole frame.
        assert_eq!(fails(&deep).code(), ErrorCode::BadRequest);
        let objects = "{\"a\":".repeat(100_000);
        assert_eq!(fails(&objects).code(), ErrorCode::BadRequest);
    }

    #[test]
    fn serialized_commands_decode_to_themselves() {
        let commands = [
            r#"{"type":"subscribe","id":1,"room":"a","since":{"epoch":"e","offset":3}}"#,
            r#"{"type":"unsubscribe","room":"a"}"#,
            r#"{"type":"publish","id":"p","room":"a","data":{"k":[1,2]}}"#,
            r#"{"type":"send","to":"c","data":null}"#,
            r#"{"type":"broadcast","data":true}"#,
            r#"{"type":"presence","room":"a"}"#,
            r#"{"type":"history","room":"a","since":{"epoch":"e","offset":0},"limit":5}"#,
            r#"{"type":"ping","id":2}"#,
        ];
        for text in commands {
            let command = decode(text);
            assert_eq!(command.to_json(), text);
            assert_eq!(decode(&command.to_json()), command);
            assert_eq!(text.parse::<Command>().unwrap(), command);
            assert!(text.contains(command.type_name()));
        }
        assert_eq!(decode(commands[0]).id(), num(1).as_ref());
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 64), "abc");
        assert_eq!(truncate("ééé", 3), "é");
        let err = fails(&format!(r#"{{"type":"{}"}}"#, "é".repeat(100)));
        assert_eq!(err.code(), ErrorCode::UnknownType);
        assert!(err.message().len() < 100);
    }
}
