//! [`Payload`]: an application's `data`, kept as the exact JSON text it arrived as.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The `data` of a `publish`, `send` or `broadcast`: any JSON value, held as its raw text.
///
/// The server validates it once when the command arrives and then splices the text into
/// every frame it sends, never parsing or re-encoding it again. Deserializing checks that
/// it nests no deeper than [`Payload::MAX_DEPTH`] arrays and objects: `serde_json` itself
/// skips over raw values without a depth limit (and without recursion, so there is no
/// stack to overflow), but a peer that parses a frame into a tree, as `serde_json::Value`
/// with its default limit of 128 levels does, must be able to read every message it gets,
/// including one nested three levels deep in a `history` reply.
///
/// Two payloads are equal when their texts are byte-for-byte equal (`{"a":1}` and
/// `{ "a": 1 }` are different payloads).
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

/// Why a JSON text is not accepted as a [`Payload`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The arrays and objects nest deeper than [`Payload::MAX_DEPTH`].
    #[error("data nests more than {} arrays and objects", Payload::MAX_DEPTH)]
    TooDeep,
    /// The text is not JSON.
    #[error("data is not valid JSON")]
    NotJson,
}

impl Payload {
    /// The deepest nesting of arrays and objects accepted in `data`.
    pub const MAX_DEPTH: usize = 100;

    /// Accepts an already-validated raw value, checking its depth.
    pub fn from_raw(raw: Box<RawValue>) -> Result<Payload, PayloadError> {
        if depth_exceeds(raw.get(), Self::MAX_DEPTH) {
            return Err(PayloadError::TooDeep);
        }
        Ok(Payload(raw))
    }

    /// Validates a JSON text.
    pub fn from_json_text(text: &str) -> Result<Payload, PayloadError> {
        let raw = RawValue::from_string(text.to_owned()).map_err(|_| PayloadError::NotJson)?;
        Self::from_raw(raw)
    }

    /// Serializes `value` into a payload (for clients and backends building messages).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(value)?;
        Self::from_raw(raw).map_err(serde_json::Error::custom)
    }

    /// The raw JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload as a [`RawValue`], to embed in another serialized value.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Parses the payload into a typed value.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Takes the raw value out.
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }
}

/// Whether the arrays and objects of `json` (valid JSON) nest deeper than `max`.
///
/// One pass over the bytes: brackets count only outside strings, and a string ends at the
/// first `"` not escaped by a backslash.
fn depth_exceeds(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Payload {}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.get().hash(state);
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&self.0.get()).finish()
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Payload::from_raw(raw).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_limit() {
        assert!(Payload::from_json_text(&nested(100)).is_ok());
        assert_eq!(
            Payload::from_json_text(&nested(101)),
            Err(PayloadError::TooDeep)
        );
        let objects = format!("{}1{}", "{\"a\":".repeat(101), "}".repeat(101));
        assert_eq!(
            Payload::from_json_text(&objects),
            Err(PayloadError::TooDeep)
        );
        // Brackets inside strings do not count, escaped quotes do not end the string.
        let in_string = format!("[\"\\\"{}\"]", "[".repeat(500));
        assert!(Payload::from_json_text(&in_string).is_ok());
        assert!(Payload::from_json_text(&nested(100_000)).is_err());
    }

    #[test]
    fn keeps_the_exact_text() {
        let text = r#"{ "b" : 1.50, "a":[ true ,null] }"#;
        let payload = Payload::from_json_text(text).unwrap();
        assert_eq!(payload.get(), text);
        assert_eq!(payload.to_string(), text);
        #[derive(Serialize)]
        struct Wrap<'a> {
            data: &'a Payload,
        }
        assert_eq!(
            serde_json::to_string(&Wrap { data: &payload }).unwrap(),
            format!("{{\"data\":{text}}}")
        );
        let value: serde_json::Value = payload.parse().unwrap();
        assert_eq!(value["b"], 1.5);
        assert_eq!(Payload::from_json_text("nope"), Err(PayloadError::NotJson));
        assert_eq!(Payload::from_value(&[1, 2]).unwrap().get(), "[1,2]");
    }
}
