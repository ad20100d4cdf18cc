//! [`ConnectionId`], the name of one WebSocket connection across a cluster: the `wshub`
//! library mints it, the backplane routes `send` and `disconnect` by it, and the protocol
//! carries its text form (`client` in `welcome` and presence, `to` of `send`, `from`).

use std::{fmt, str::FromStr};

use serde::Serialize;

/// A connection id, unique across every hub (and every node of a cluster) and never reused.
///
/// The `wshub` library's hub makes them: it pairs a random 48-bit prefix drawn once per
/// hub (which a cluster routes by) with the hub's counter passed through a keyed
/// permutation, and reads as `<12 hex digits>-<up to 16 hex digits>`, e.g. `3fa2c91b0e7d-9c1f04a7d2e35b60`: unique
/// like the counter, but one id says nothing about the others, so live ids cannot be
/// enumerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    node: u64,
    seq: u64,
}

impl ConnectionId {
    /// The id made of a hub's prefix `node` and a per-hub `seq`; what its text form
    /// parses back to. Only the hub that owns the prefix should mint new ones.
    pub const fn new(node: u64, seq: u64) -> Self {
        Self { node, seq }
    }

    /// The random prefix shared by every connection of one hub.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The per-hub part: the hub's counter, permuted.
    pub fn sequence(&self) -> u64 {
        self.seq
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}-{:x}", self.node, self.seq)
    }
}

/// The error of parsing a [`ConnectionId`] from text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a connection id")]
pub struct InvalidConnectionId;

impl FromStr for ConnectionId {
    type Err = InvalidConnectionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, seq) = s.split_once('-').ok_or(InvalidConnectionId)?;
        if node.len() != 12 || seq.is_empty() || seq.len() > 16 {
            return Err(InvalidConnectionId);
        }
        let node = u64::from_str_radix(node, 16).map_err(|_| InvalidConnectionId)?;
        let seq = u64::from_str_radix(seq, 16).map_err(|_| InvalidConnectionId)?;
        Ok(Self { node, seq })
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = ConnectionId::new(0x3fa2_c91b_0e7d, 42);
        assert_eq!(id.to_string(), "3fa2c91b0e7d-2a");
        assert_eq!("3fa2c91b0e7d-2a".parse::<ConnectionId>(), Ok(id));
        for bad in [
            "",
            "-",
            "3fa2c91b0e7d",
            "3fa2c91b0e7d-",
            "xyz-1",
            "3fa2c91b0e7d-zz",
        ] {
            assert!(bad.parse::<ConnectionId>().is_err(), "{bad}");
        }
    }
}
