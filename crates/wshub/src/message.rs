//! The unit of data exchanged with a peer: a text or binary WebSocket message.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

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
/// A message is one pointer to a shared, reference-counted body: cloning it, or
/// broadcasting it to any number of connections, copies nothing, and each connection's send
/// queue holds eight bytes per waiting message.
///
/// A message also remembers when it was made, so that the hub can measure how long it
/// waited before it was written ([`Stats::write_latency`](crate::Stats::write_latency)).
#[derive(Clone, Debug)]
pub struct Message {
    inner: Arc<Body>,
}

#[derive(Debug)]
struct Body {
    kind: MessageKind,
    payload: Bytes,
    created: Instant,
    /// The payload compressed on its own with a 15-bit window (permessage-deflate), made
    /// by the first connection that sends it compressed and shared with the others; `None`
    /// inside when compressing did not make it smaller.
    deflated: OnceLock<Option<Bytes>>,
}

/// Messages are equal when their kind and payload are.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Message {}

impl Message {
    /// A text message. Takes ownership of the string without copying it.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(MessageKind::Text, Bytes::from(text.into()))
    }

    /// A text message from a static string, without allocating.
    pub fn text_static(text: &'static str) -> Self {
        Self::new(MessageKind::Text, Bytes::from_static(text.as_bytes()))
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
        Ok(Self::new(MessageKind::Text, payload))
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self::new(MessageKind::Binary, bytes.into())
    }

    /// A text message holding `value` serialized as JSON.
    ///
    /// # Errors
    /// [`Error::Json`] when `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let encoded = serde_json::to_vec(value).map_err(Error::Json)?;
        Ok(Self::new(MessageKind::Text, Bytes::from(encoded)))
    }

    fn new(kind: MessageKind, payload: Bytes) -> Self {
        Self {
            inner: Arc::new(Body {
                kind,
                payload,
                created: Instant::now(),
                deflated: OnceLock::new(),
            }),
        }
    }

    /// Builds a message from parts the transport has already validated.
    pub(crate) fn from_validated(kind: MessageKind, payload: Bytes) -> Self {
        Self::new(kind, payload)
    }

    /// The payload compressed on its own with a 15-bit window at `level`
    /// (permessage-deflate): computed by the first caller, shared by every other;
    /// `None` when compressing does not make it smaller.
    pub(crate) fn deflated(&self, level: u32) -> Option<&Bytes> {
        self.inner
            .deflated
            .get_or_init(|| crate::deflate::compress(&self.inner.payload, 15, level))
            .as_ref()
    }

    /// When the message was made.
    pub fn created(&self) -> Instant {
        self.inner.created
    }

    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        self.inner.kind
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.inner.kind == MessageKind::Text
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        self.inner.kind == MessageKind::Binary
    }

    /// The text of a text message; `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self.inner.kind {
            MessageKind::Text => std::str::from_utf8(&self.inner.payload).ok(),
            MessageKind::Binary => None,
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.payload
    }

    /// The payload, without copying.
    pub fn into_bytes(self) -> Bytes {
        match Arc::try_unwrap(self.inner) {
            Ok(body) => body.payload,
            Err(shared) => shared.payload.clone(),
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.inner.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.payload.is_empty()
    }

    /// Deserializes the payload as JSON.
    ///
    /// # Errors
    /// [`Error::Json`] when the payload is not JSON of type `T`.
    pub fn parse_json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_slice(&self.inner.payload).map_err(Error::Json)
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
