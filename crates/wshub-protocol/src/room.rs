//! [`RoomName`]: a validated room name.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A room name: 1 to [`RoomName::MAX_BYTES`] bytes of UTF-8 with no whitespace, no
/// control character and no invisible formatting character, where "whitespace" and
/// "control" are Unicode's as Rust's [`char::is_whitespace`] and [`char::is_control`]
/// define them (so U+0085 and U+2028 are refused), and the invisible ones are the
/// zero-width characters and the bidirectional marks, embeddings, overrides and isolates
/// (see `is_invisible`): with them two names that look the same would be two rooms, and a
/// name could display reversed in a log or a page. The name must also be in Unicode
/// Normalization Form C (NFC, what keyboards and browsers produce): `é` as one code point,
/// not `e` and a combining accent, so that one name has one spelling and one room.
///
/// Cloning is cheap (a reference count), because a room name is stored in many maps.
/// Deserializing validates, so request bodies with a `RoomName` field reject bad names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a valid [`RoomName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomNameError {
    /// The name is the empty string.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than 128 bytes.
    #[error("room name is {len_bytes} bytes long; the limit is 128")]
    TooLong {
        /// The name's length in bytes.
        len_bytes: usize,
    },
    /// The name contains a whitespace, control or invisible formatting character.
    #[error("room name contains the whitespace, control or invisible character {ch:?}")]
    ForbiddenChar {
        /// The first offending character.
        ch: char,
    },
    /// The name is not in Unicode Normalization Form C.
    #[error("room name is not in Unicode Normalization Form C (NFC)")]
    NotNfc,
}

/// Whether `c` is a zero-width character or a bidirectional formatting character, which
/// room names refuse: U+200B to U+200F (zero-width space, non-joiner, joiner, and the
/// left-to-right and right-to-left marks), U+202A to U+202E (embeddings and overrides),
/// U+2060 to U+2064 (word joiner and invisible operators), U+2066 to U+2069 (isolates),
/// U+061C (Arabic letter mark), U+180E (Mongolian vowel separator) and U+FEFF (zero-width
/// no-break space).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{FEFF}'
    )
}

impl RoomName {
    /// The longest room name accepted, in bytes of UTF-8.
    pub const MAX_BYTES: usize = 128;

    /// Validates `name`.
    pub fn parse(name: &str) -> Result<RoomName, RoomNameError> {
        Self::validate(name)?;
        Ok(RoomName(Arc::from(name)))
    }

    /// Checks `name` without allocating.
    pub fn validate(name: &str) -> Result<(), RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > Self::MAX_BYTES {
            return Err(RoomNameError::TooLong {
                len_bytes: name.len(),
            });
        }
        if let Some(ch) = name
            .chars()
            .find(|&c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(RoomNameError::ForbiddenChar { ch });
        }
        // ASCII is always NFC: only other names pay for the check.
        if !name.is_ascii() && !unicode_normalization::is_nfc(name) {
            return Err(RoomNameError::NotNfc);
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for RoomName {
    type Error = RoomNameError;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        RoomName::parse(name)
    }
}

impl TryFrom<String> for RoomName {
    type Error = RoomNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        RoomName::validate(&name)?;
        Ok(RoomName(Arc::from(name)))
    }
}

impl FromStr for RoomName {
    type Err = RoomNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        RoomName::parse(name)
    }
}

impl AsRef<str> for RoomName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        RoomName::try_from(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(RoomName::parse(""), Err(RoomNameError::Empty));
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse(&"a".repeat(128)).is_ok());
        assert_eq!(
            RoomName::parse(&"a".repeat(129)),
            Err(RoomNameError::TooLong { len_bytes: 129 })
        );
        // Bytes, not characters: 64 two-byte characters fit, 65 do not.
        assert!(RoomName::parse(&"é".repeat(64)).is_ok());
        assert!(RoomName::parse(&"é".repeat(65)).is_err());
    }

    #[test]
    fn whitespace_and_control_characters() {
        for bad in [
            "a b",
            "a\tb",
            "a\nb",
            "a\rb",
            "\u{0085}",
            "a\u{00A0}b",
            "a\u{2028}",
            "\u{3000}",
            "a\u{0000}",
            "a\u{007F}",
            "\u{009F}",
            " lead",
            "trail ",
        ] {
            assert!(
                matches!(
                    RoomName::parse(bad),
                    Err(RoomNameError::ForbiddenChar { .. })
                ),
                "{bad:?}"
            );
        }
        // One spelling per name: NFC, not decomposed.
        assert!(RoomName::parse("caf\u{E9}").is_ok());
        assert_eq!(RoomName::parse("cafe\u{301}"), Err(RoomNameError::NotNfc));
        // Invisible formatting characters: zero-width and bidirectional ones.
        for bad in [
            "a\u{200B}b",
            "a\u{200D}b",
            "admin\u{202E}nimda",
            "\u{2066}x\u{2069}",
            "\u{FEFF}lobby",
            "a\u{200F}",
        ] {
            assert!(
                matches!(
                    RoomName::parse(bad),
                    Err(RoomNameError::ForbiddenChar { .. })
                ),
                "{bad:?}"
            );
        }
        for good in ["chat:lobby", "user/42", "日本語", "emoji🎉", "a-b_c.d*"] {
            assert!(RoomName::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn serde() {
        let room: RoomName = serde_json::from_str("\"chat\"").unwrap();
        assert_eq!(room.as_str(), "chat");
        assert_eq!(serde_json::to_string(&room).unwrap(), "\"chat\"");
        assert!(serde_json::from_str::<RoomName>("\"a b\"").is_err());
        assert!(serde_json::from_str::<RoomName>("\"a\\u0020b\"").is_err());
        assert!(serde_json::from_str::<RoomName>("\"\"").is_err());
        assert!(serde_json::from_str::<RoomName>("5").is_err());
        assert_eq!(format!("{room:?}"), "\"chat\"");
        assert_eq!(room.to_string(), "chat");
        let room2: RoomName = "chat".parse().unwrap();
        assert_eq!(room, room2);
        assert_eq!(RoomName::try_from("x".to_owned()).unwrap().as_str(), "x");
    }
}
