//! Close codes (RFC 6455 §7.4) and the record of why a connection ended.

use std::fmt;

use crate::Error;

/// A WebSocket close status code (RFC 6455 §7.4.1).
///
/// Only codes that may appear in a close frame on the wire can be built: 1000–1003,
/// 1007–1014, and the registered and private ranges 3000–4999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going away (shutting down); clients should reconnect elsewhere.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the peer sent a kind of data this endpoint does not accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated (an expired token, sustained abuse).
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was larger than the configured limit.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1013: try again later; used when a connection's send queue overflowed.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Returns the code if it may be sent in a close frame, `None` otherwise.
    pub const fn new(code: u16) -> Option<Self> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Some(Self(code)),
            _ => None,
        }
    }

    /// The numeric value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// Why a connection ended; handed to the disconnect callback.
#[derive(Debug)]
pub struct Disconnect {
    /// The close code sent or received, if the connection ended with a close frame.
    pub code: Option<CloseCode>,
    /// The close reason sent or received (empty when there was none).
    pub reason: String,
    /// The error that ended the connection, if it did not end cleanly.
    pub error: Option<Error>,
    /// Whether the server (rather than the peer) started the close.
    pub initiated_by_server: bool,
}

/// Truncates a close reason to the 123 bytes a close frame can carry (RFC 6455 §5.5),
/// on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sendable_codes_are_built() {
        assert_eq!(CloseCode::new(1000), Some(CloseCode::NORMAL));
        assert_eq!(CloseCode::new(1013), Some(CloseCode::TRY_AGAIN_LATER));
        assert_eq!(CloseCode::new(4999).map(u16::from), Some(4999));
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(CloseCode::new(bad), None, "{bad}");
        }
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("bye"), "bye");
    }
}
