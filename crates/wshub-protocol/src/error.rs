//! The protocol's error vocabulary: [`ErrorCode`] and [`ProtocolError`].
//!
//! An error frame never closes a connection (docs/PROTOCOL.md, "Errors"); the close codes are in
//! [`crate::close`].

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::encode;
use crate::id::CommandId;

/// The `code` of an `error` frame, and the `error` of an HTTP error body.
///
/// Serialized as the snake_case strings of docs/PROTOCOL.md (`"bad_request"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or wrong-typed field, or a bad room name.
    BadRequest,
    /// The command's `type` is a string this server does not know.
    UnknownType,
    /// A token is required and missing, malformed, badly signed or expired.
    Unauthorized,
    /// The token does not permit this room or action.
    Forbidden,
    /// No such connection (for `send` and `/api/send`, `/api/disconnect`).
    NotFound,
    /// The connection sends commands faster than its rate limit allows.
    RateLimited,
    /// A limit was reached: too many rooms for one connection, or too many connections.
    LimitExceeded,
    /// A bug on the server's side, or a failure no other code describes.
    Internal,
    /// A service the server needs is out of reach for now (a cluster's backplane: Redis or
    /// NATS): try again later, with backoff. A `subscribe` or `history` that gets it did
    /// nothing; a `publish`, `send` or `broadcast` may or may not have taken effect.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order docs/PROTOCOL.md lists them.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears on the wire, e.g. `"bad_request"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status that goes with this code in the HTTP API and in rejections before
    /// the WebSocket upgrade.
    ///
    /// `bad_request` and `unknown_type` → 400, `unauthorized` → 401, `forbidden` → 403,
    /// `not_found` → 404, `rate_limited` → 429, `limit_exceeded` → 503 (the connection
    /// limit, sent with `Retry-After`), `internal` → 500, `unavailable` → 503. The one exception docs/PROTOCOL.md
    /// names, 426 for an unsupported `Sec-WebSocket-Version`, is the caller's to send.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnknownType => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::RateLimited => 429,
            ErrorCode::LimitExceeded => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command that could not be accepted, with everything needed to answer it.
///
/// It carries the command's `id` when the command had a valid one, so that the error frame
/// can be matched to its request (docs/PROTOCOL.md: a command with an `id` gets exactly one
/// reply). [`ProtocolError::to_frame`] encodes the `error` frame.
///
/// Its `Display` text is for logs and for the frame's `message`; it is not an API: match on
/// [`ProtocolError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    id: Option<CommandId>,
    code: ErrorCode,
    message: Cow<'static, str>,
}

impl ProtocolError {
    /// An error with the given code and human-readable message, for the command `id`.
    pub fn new(
        id: Option<CommandId>,
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProtocolError {
            id,
            code,
            message: message.into(),
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(id: Option<CommandId>, message: impl Into<Cow<'static, str>>) -> Self {
        ProtocolError::new(id, ErrorCode::BadRequest, message)
    }

    /// The id of the command this error answers, `None` when it had none (or an invalid one).
    pub fn id(&self) -> Option<&CommandId> {
        self.id.as_ref()
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Encodes the `error` frame: `{"type":"error","id":...,"code":"...","message":"..."}`.
    pub fn to_frame(&self) -> Bytes {
        encode::error(self.id.as_ref(), self.code, &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert_eq!(code.to_string(), code.as_str());
        }
        assert!(serde_json::from_str::<ErrorCode>("\"BadRequest\"").is_err());
    }

    #[test]
    fn http_statuses() {
        assert_eq!(ErrorCode::BadRequest.http_status(), 400);
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::Forbidden.http_status(), 403);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::LimitExceeded.http_status(), 503);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
    }

    #[test]
    fn error_frame_carries_id() {
        let err = ProtocolError::new(Some(CommandId::from(3)), ErrorCode::Forbidden, "no");
        assert_eq!(
            &err.to_frame()[..],
            br#"{"type":"error","id":3,"code":"forbidden","message":"no"}"#
        );
        let err = ProtocolError::bad_request(None, "not JSON");
        assert_eq!(
            &err.to_frame()[..],
            br#"{"type":"error","id":null,"code":"bad_request","message":"not JSON"}"#
        );
        assert_eq!(err.to_string(), "bad_request: not JSON");
    }
}
