//! A room's place in its history: [`Offset`], [`Epoch`] and [`StreamPosition`].
//!
//! Every room numbers its messages 1, 2, 3, ... with no gaps ([`Offset`]) and names the
//! history those numbers belong to ([`Epoch`]). When a room's history is lost (it expired,
//! or a node restarted), numbering starts again under a new epoch, so a client asking to
//! resume from "offset 7 of epoch X" can tell a clean recovery from a history that was
//! replaced under its feet.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The position of a message in its room: 1 for the first, +1 for each next one.
///
/// Offset 0 means "before the first message": it is the latest offset of a room nothing has
/// been published to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset before any message.
    pub const ZERO: Offset = Offset(0);

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next offset, or `None` on overflow (after 2⁶⁴−1 messages).
    pub const fn checked_next(self) -> Option<Offset> {
        match self.0.checked_add(1) {
            Some(next) => Some(Offset(next)),
            None => None,
        }
    }
}

impl From<u64> for Offset {
    fn from(offset: u64) -> Self {
        Offset(offset)
    }
}

impl From<Offset> for u64 {
    fn from(offset: Offset) -> Self {
        offset.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The name of one continuous history of a room; it changes whenever that history is lost.
///
/// An opaque string: servers choose it (randomly), clients only store it and send it back.
/// Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps a string chosen by a server, or received from a client.
    pub fn new(epoch: impl Into<Arc<str>>) -> Epoch {
        Epoch(epoch.into())
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Epoch {
    fn from(epoch: &str) -> Self {
        Epoch(Arc::from(epoch))
    }
}

impl From<String> for Epoch {
    fn from(epoch: String) -> Self {
        Epoch(Arc::from(epoch))
    }
}

impl AsRef<str> for Epoch {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Epoch::from)
    }
}

/// A point in a room's history: `{"epoch": "...", "offset": n}`, as sent in a `since`.
///
/// For a client it means "I have seen every message of this epoch up to this offset".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The history the offset belongs to.
    pub epoch: Epoch,
    /// The last offset seen (0 for none).
    pub offset: Offset,
}

impl StreamPosition {
    /// A position from its parts.
    pub fn new(epoch: Epoch, offset: Offset) -> StreamPosition {
        StreamPosition { epoch, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(Offset::ZERO.checked_next(), Some(Offset(1)));
        assert_eq!(Offset(u64::MAX).checked_next(), None);
        assert_eq!(serde_json::to_string(&Offset(5)).unwrap(), "5");
        assert_eq!(serde_json::from_str::<Offset>("5").unwrap(), Offset(5));
        assert!(serde_json::from_str::<Offset>("-1").is_err());
        assert!(serde_json::from_str::<Offset>("1.5").is_err());
    }

    #[test]
    fn positions() {
        let pos: StreamPosition = serde_json::from_str(r#"{"epoch":"ab","offset":3}"#).unwrap();
        assert_eq!(pos, StreamPosition::new("ab".into(), Offset(3)));
        assert_eq!(
            serde_json::to_string(&pos).unwrap(),
            r#"{"epoch":"ab","offset":3}"#
        );
        assert!(serde_json::from_str::<StreamPosition>(r#"{"epoch":1,"offset":3}"#).is_err());
        assert!(serde_json::from_str::<StreamPosition>(r#"{"epoch":"a"}"#).is_err());
    }
}
