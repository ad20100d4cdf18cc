//! The WebSocket close codes the protocol uses (RFC 6455 §7.4.1), defined once so that the
//! transport, metrics and clients agree on them.

use std::fmt;

/// A WebSocket close code.
///
/// The constants are the codes docs/PROTOCOL.md assigns; any other `u16` can be wrapped with
/// [`CloseCode::from`] (a peer may send one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure, e.g. the client is done or `/api/disconnect` was called (the
    /// latter with reason `disconnected by server`). Do not reconnect automatically.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down; reconnect, preferably to another node.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1003: a binary frame arrived on the JSON endpoint. A client bug: do not retry as is.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: a text frame was not valid UTF-8. A client bug: do not retry as is.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation: the token expired, or persistent rate-limit abuse. Get a new
    /// token or slow down before reconnecting.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was larger than the server's limit. Do not resend it.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an internal error; reconnect with backoff.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the connection was too slow to keep up (its send queue overflowed); reconnect
    /// later, with backoff.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a client should reconnect automatically (with backoff) after this code.
    ///
    /// True for 1001, 1011, 1013 and any code not assigned above except 1000; false for
    /// 1000 and for closes caused by the client's own input (1003, 1007, 1009). For 1008
    /// it is true: a client with a fresh token or a slower pace is welcome back.
    pub const fn should_reconnect(self) -> bool {
        !matches!(self.0, 1000 | 1003 | 1007 | 1009)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

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
            (CloseCode::UNSUPPORTED_DATA, 1003),
            (CloseCode::INVALID_PAYLOAD, 1007),
            (CloseCode::POLICY_VIOLATION, 1008),
            (CloseCode::MESSAGE_TOO_BIG, 1009),
            (CloseCode::INTERNAL_ERROR, 1011),
            (CloseCode::TRY_AGAIN_LATER, 1013),
        ];
        for (code, value) in codes {
            assert_eq!(code.as_u16(), value);
            assert_eq!(u16::from(code), value);
            assert_eq!(CloseCode::from(value), code);
        }
        assert!(!CloseCode::NORMAL.should_reconnect());
        assert!(CloseCode::GOING_AWAY.should_reconnect());
        assert!(!CloseCode::MESSAGE_TOO_BIG.should_reconnect());
        assert!(CloseCode::TRY_AGAIN_LATER.should_reconnect());
    }
}
