//! [`CommandId`]: the optional `id` a client puts on a command to match its reply.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Number;
use serde_json::value::RawValue;

/// The `id` of a command: a JSON number, or a string of at most
/// [`CommandId::MAX_STRING_BYTES`] bytes.
///
/// The server echoes it in the reply. Numbers are kept as [`serde_json::Number`], so an
/// integer id comes back as the same integer and a fractional one as the same value (`1e3`
/// comes back as `1000.0`).
///
/// Deserializing rejects anything else (`null`, booleans, objects, arrays, longer strings),
/// which [`crate::Command::decode`] answers with `bad_request` and `"id": null`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum CommandId {
    /// A numeric id.
    Number(Number),
    /// A string id of at most 64 bytes.
    String(String),
}

impl CommandId {
    /// The longest string id accepted, in bytes of UTF-8.
    pub const MAX_STRING_BYTES: usize = 64;

    /// A string id, or `None` when it is longer than [`CommandId::MAX_STRING_BYTES`].
    pub fn string(id: impl Into<String>) -> Option<CommandId> {
        let id = id.into();
        (id.len() <= Self::MAX_STRING_BYTES).then_some(CommandId::String(id))
    }

    /// Validates the raw JSON text of an `id` field.
    pub(crate) fn from_raw(raw: &RawValue) -> Option<CommandId> {
        serde_json::from_str(raw.get()).ok()
    }
}

impl From<u64> for CommandId {
    fn from(id: u64) -> Self {
        CommandId::Number(id.into())
    }
}

impl From<i64> for CommandId {
    fn from(id: i64) -> Self {
        CommandId::Number(id.into())
    }
}

impl From<u32> for CommandId {
    fn from(id: u32) -> Self {
        CommandId::Number(id.into())
    }
}

impl From<i32> for CommandId {
    fn from(id: i32) -> Self {
        CommandId::Number(id.into())
    }
}

/// Keeps the string as is; a string longer than 64 bytes is still sent, and a server
/// answers it with `bad_request`. Use [`CommandId::string`] to check the length.
impl From<String> for CommandId {
    fn from(id: String) -> Self {
        CommandId::String(id)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandId::Number(n) => fmt::Display::fmt(n, f),
            CommandId::String(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = CommandId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a number or a string of at most {} bytes",
            CommandId::MAX_STRING_BYTES
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<CommandId, E> {
        Ok(CommandId::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<CommandId, E> {
        Ok(CommandId::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<CommandId, E> {
        Number::from_f64(v)
            .map(CommandId::Number)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandId, E> {
        if v.len() <= CommandId::MAX_STRING_BYTES {
            Ok(CommandId::String(v.to_owned()))
        } else {
            Err(E::invalid_length(v.len(), &self))
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<CommandId, E> {
        if v.len() <= CommandId::MAX_STRING_BYTES {
            Ok(CommandId::String(v))
        } else {
            Err(E::invalid_length(v.len(), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Option<CommandId> {
        serde_json::from_str(json).ok()
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("7"), Some(CommandId::from(7u64)));
        assert_eq!(parse("-7"), Some(CommandId::from(-7i64)));
        assert_eq!(
            serde_json::to_string(&parse("1.5").unwrap()).unwrap(),
            "1.5"
        );
        assert_eq!(
            serde_json::to_string(&parse("1e3").unwrap()).unwrap(),
            "1000.0"
        );
        assert_eq!(
            serde_json::to_string(&parse("18446744073709551615").unwrap()).unwrap(),
            "18446744073709551615"
        );
    }

    /// Found by the `command_decode` and `server_frame_decode` fuzz targets: without
    /// serde_json's `float_roundtrip`, a long number was parsed to a neighbour of the nearest
    /// `f64`, so the id echoed in a reply differed from the one sent and a second decode of
    /// the echo gave yet another value.
    #[test]
    fn large_and_fractional_numbers_echo_exactly() {
        for json in [
            "18446740407674040737093709551616",
            "3.8800000000000005e78",
            "3.880000000000001e78",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "5e-324",
            "-0.0",
        ] {
            let id = parse(json).unwrap();
            let echoed = serde_json::to_string(&id).unwrap();
            assert_eq!(parse(&echoed), Some(id.clone()), "{json} -> {echoed}");
            let CommandId::Number(n) = &id else {
                panic!("{json} is a number")
            };
            assert_eq!(
                n.as_f64(),
                json.parse::<f64>().ok(),
                "{json} parsed inexactly"
            );
        }
        // Out of range for f64: no id (the command is answered with `"id": null`).
        assert_eq!(parse("1e400"), None);
    }

    #[test]
    fn strings_up_to_64_bytes() {
        let s64 = "x".repeat(64);
        let s65 = "x".repeat(65);
        assert_eq!(
            parse(&format!("\"{s64}\"")),
            Some(CommandId::String(s64.clone()))
        );
        assert_eq!(parse(&format!("\"{s65}\"")), None);
        // Bytes, not characters: 32 two-byte characters are 64 bytes, 33 are 66.
        assert!(parse(&format!("\"{}\"", "é".repeat(32))).is_some());
        assert!(parse(&format!("\"{}\"", "é".repeat(33))).is_none());
        // Escapes count after decoding: "\u0041" is one byte.
        assert!(parse(&format!("\"{}\"", "\\u0041".repeat(64))).is_some());
        assert_eq!(parse("\"\""), Some(CommandId::String(String::new())));
        assert_eq!(CommandId::string(s64.clone()), Some(CommandId::String(s64)));
        assert_eq!(CommandId::string(s65), None);
    }

    #[test]
    fn other_types_are_rejected() {
        for json in ["null", "true", "false", "{}", "[]", "[1]", "{\"a\":1}"] {
            assert_eq!(parse(json), None, "{json}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(CommandId::from(5u64).to_string(), "5");
        assert_eq!(CommandId::from("abc".to_owned()).to_string(), "abc");
    }
}
