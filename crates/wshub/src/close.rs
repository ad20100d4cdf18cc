//! Close codes (RFC 6455 §7.4) and the record of why a connection ended.
//!
//! [`CloseCode`] is defined once, in `wshub-protocol`, and re-exported here: the codes the
//! library sends are the ones the protocol documents and clients act on.

pub use wshub_protocol::CloseCode;

use crate::Error;

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
    fn reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("bye"), "bye");
    }
}
