//! WebSocket close codes (RFC 6455 §7.4.1), defined once: the library's transport sends
//! them, the server chooses them, metrics count them and clients decide by them whether to
//! reconnect.

use std::fmt;

/// A WebSocket close status code that may appear in a close frame (RFC 6455 §7.4.1).
///
/// Only such codes can be built: 1000–1003, 1007–1014, and the registered and private
/// ranges 3000–4999 ([`CloseCode::new`]). Codes an endpoint must never send (1005, 1006,
/// 1015) and reserved ones are not close codes of a frame; a client that saw the
/// connection drop has no `CloseCode`. The constants are the codes RFC 6455 defines and
/// the ones docs/PROTOCOL.md assigns a meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure: the purpose of the connection has been fulfilled, e.g. the
    /// client is done or `/api/disconnect` was called (the latter with reason
    /// `disconnected by server`). Do not reconnect automatically.
    pub const NORMAL: Self = Self(1000);
    /// 1001: going away: the server is shutting down; reconnect, preferably to another
    /// node.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket protocol (an unmasked frame, a bad opcode, a
    /// fragmented control frame, ...).
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the peer sent a kind of data this endpoint does not accept, e.g. a binary
    /// frame on the JSON endpoint. A client bug: do not retry as is.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a text message was not valid UTF-8 (or compressed data did not inflate). A
    /// client bug: do not retry as is.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated: the token expired, or persistent rate-limit abuse. Get
    /// a new token or slow down before reconnecting.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was larger than the configured limit. Do not resend it.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: (sent by a client) the server did not agree to an extension the client
    /// requires.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition (an internal error); reconnect with
    /// backoff.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: service restart: the node is draining (it is being restarted or taken out of
    /// service) and closes its connections one by one, each at its own random moment
    /// within the drain window. Reconnect promptly, after a small random delay (not as a
    /// failure: no backoff), and resume from your positions; the load balancer sends you
    /// to another node.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later: the connection was too slow to keep up (its send queue
    /// overflowed); reconnect later, with backoff.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Returns the code if it may be sent in a close frame, `None` otherwise.
    pub const fn new(code: u16) -> Option<Self> {
        if Self::is_sendable(code) {
            Some(Self(code))
        } else {
            None
        }
    }

    /// Whether `code` may be sent in a close frame (RFC 6455 §7.4): 1000–1003, 1007–1014
    /// and 3000–4999. A close frame received with any other code is a protocol error.
    pub const fn is_sendable(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The numeric value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a client should reconnect automatically (with backoff) after this code.
    ///
    /// False for 1000 and for closes caused by the client's own input (1003, 1007, 1009);
    /// true for every other code, 1001, 1011, 1012 and 1013 among them. For 1008 it is true: a
    /// client with a fresh token or a slower pace is welcome back. (1002 is true as well,
    /// although docs/PROTOCOL.md calls it a client bug not to retry.)
    pub const fn should_reconnect(self) -> bool {
        !matches!(self.0, 1000 | 1003 | 1007 | 1009)
    }
}

impl TryFrom<u16> for CloseCode {
    type Error = InvalidCloseCode;

    /// The code if it may be sent in a close frame ([`CloseCode::new`]).
    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code).ok_or(InvalidCloseCode(code))
    }
}

/// The error of [`CloseCode::try_from`]: a code that may not appear in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a close code that may be sent in a close frame")]
pub struct InvalidCloseCode(pub u16);

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let codes = [
            (CloseCode::NORMAL, 1000),
            (CloseCode::GOING_AWAY, 1001),
            (CloseCode::PROTOCOL_ERROR, 1002),
            (CloseCode::UNSUPPORTED_DATA, 1003),
            (CloseCode::INVALID_PAYLOAD, 1007),
            (CloseCode::POLICY_VIOLATION, 1008),
            (CloseCode::MESSAGE_TOO_BIG, 1009),
            (CloseCode::MANDATORY_EXTENSION, 1010),
            (CloseCode::INTERNAL_ERROR, 1011),
            (CloseCode::SERVICE_RESTART, 1012),
            (CloseCode::TRY_AGAIN_LATER, 1013),
        ];
        for (code, value) in codes {
            assert_eq!(code.as_u16(), value);
            assert_eq!(u16::from(code), value);
            assert_eq!(CloseCode::new(value), Some(code));
            assert_eq!(CloseCode::try_from(value), Ok(code));
        }
        assert!(!CloseCode::NORMAL.should_reconnect());
        assert!(CloseCode::GOING_AWAY.should_reconnect());
        assert!(!CloseCode::MESSAGE_TOO_BIG.should_reconnect());
        assert!(CloseCode::TRY_AGAIN_LATER.should_reconnect());
        assert!(CloseCode::SERVICE_RESTART.should_reconnect());
    }

    #[test]
    fn only_sendable_codes_are_built() {
        assert_eq!(CloseCode::new(4999).map(u16::from), Some(4999));
        assert_eq!(CloseCode::new(3000).map(u16::from), Some(3000));
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(CloseCode::new(bad), None, "{bad}");
            assert_eq!(CloseCode::try_from(bad), Err(InvalidCloseCode(bad)));
        }
    }
}
