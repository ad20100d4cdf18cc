//! The unit of data exchanged with a peer: a text or binary WebSocket message.

use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::Error;

/// Whether a message is text (valid UTF-8) or binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A text message; its payload is valid UTF-8.
    Text,
    /// A binary message.
    Binary,
}

/// A WebSocket data message, text or binary.
///
/// The payload is reference-counted [`Bytes`]: cloning a message, or broadcasting it to any
/// number of connections, shares one buffer and copies nothing.
///
/// A message also remembers when it was made, so that the hub can measure how long it
/// waited before it was written ([`Stats::write_latency`](crate::Stats::write_latency)).
#[derive(Clone, Debug)]
pub struct Message {
    kind: MessageKind,
    payload: Bytes,
    created: Instant,
    /// The payload compressed on its own with a 15-bit window (permessage-deflate), made
    /// once by a broadcast for every recipient that negotiated compression; empty when
    /// compressing did not make it smaller.
    deflated: Option<Bytes>,
}

/// Messages are equal when their kind and payload are.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.payload == other.payload
    }
}

impl Eq for Message {}

impl Message {
    /// A text message. Takes ownership of the string without copying it.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: MessageKind::Text,
            payload: Bytes::from(text.into()),
            created: Instant::now(),
            deflated: None,
        }
    }

    /// A text message from a static string, without allocating.
    pub fn text_static(text: &'static str) -> Self {
        Self {
            kind: MessageKind::Text,
            payload: Bytes::from_static(text.as_bytes()),
            created: Instant::now(),
            deflated: None,
        }
    }

    /// A text message from bytes that must be valid UTF-8.
    ///
    /// # Errors
    /// [`Error::InvalidUtf8`] when they are not.
    pub fn text_from_bytes(bytes: impl Into<Bytes>) -> Result<Self, Error> {
        let payload = bytes.into();
        if std::str::from_utf8(&payload).is_err() {
            return Err(Error::InvalidUtf8);
        }
        Ok(Self {
            kind: MessageKind::Text,
            payload,
            created: Instant::now(),
            deflated: None,
        })
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: MessageKind::Binary,
            payload: bytes.into(),
            created: Instant::now(),
            deflated: None,
        }
    }

    /// A text message holding `value` serialized as JSON.
    ///
    /// # Errors
    /// [`Error::Json`] when `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let encoded = serde_json::to_vec(value).map_err(Error::Json)?;
        Ok(Self {
            kind: MessageKind::Text,
            payload: Bytes::from(encoded),
            created: Instant::now(),
            deflated: None,
        })
    }

    /// Builds a message from parts the transport has already validated.
    pub(crate) fn from_validated(kind: MessageKind, payload: Bytes) -> Self {
        Self {
            kind,
            payload,
            created: Instant::now(),
            deflated: None,
        }
    }

    /// The payload compressed with a 15-bit window and no context, if a broadcast made it.
    pub(crate) fn deflated(&self) -> Option<&Bytes> {
        self.deflated.as_ref()
    }

    /// Attaches the compressed payload that [`deflated`](Self::deflated) returns.
    pub(crate) fn set_deflated(&mut self, deflated: Bytes) {
        self.deflated = Some(deflated);
    }

    /// When the message was made.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        self.kind == MessageKind::Binary
    }

    /// The text of a text message; `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(&self.payload).ok(),
            MessageKind::Binary => None,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.payload
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Deserializes the payload as JSON.
    ///
    /// # Errors
    /// [`Error::Json`] when the payload is not JSON of type `T`.
    pub fn parse_json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload).map_err(Error::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let msg = Message::json(&serde_json::json!({"a": 1})).expect("serializes");
        assert!(msg.is_text());
        assert_eq!(msg.as_text(), Some(r#"{"a":1}"#));
        let back: serde_json::Value = msg.parse_json().expect("parses");
        assert_eq!(back["a"], 1);
    }

    #[test]
    fn text_from_bytes_checks_utf8() {
        assert!(Message::text_from_bytes(&b"ok"[..]).is_ok());
        assert!(matches!(
            Message::text_from_bytes(vec![0xff, 0xfe]),
            Err(Error::InvalidUtf8)
        ));
        assert_eq!(Message::binary(vec![1, 2]).as_text(), None);
    }
}
