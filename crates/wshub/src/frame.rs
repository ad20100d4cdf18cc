//! What the server checks of a frame's payload beyond the header, as pure functions over
//! bytes: UTF-8 validated as it arrives, and a close frame's payload. Headers and masking
//! are `wshub_ws`'s (shared with the client); no I/O here, `transport` drives both.

use crate::{CloseCode, Error};

/// Validates a text message's UTF-8 as its bytes arrive, so that an invalid sequence fails
/// the connection at once rather than when the message completes (RFC 6455 §8.1, and what
/// the Autobahn suite calls failing fast).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Validator {
    /// The start of a character split across chunks.
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Validator {
    /// Checks the next bytes; `last` when nothing of the message follows.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], last: bool) -> Result<(), Error> {
        if self.carry_len > 0 {
            let width = utf8_width(self.carry[0]).ok_or(Error::InvalidUtf8)?;
            let take = (width - self.carry_len).min(bytes.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
            self.carry_len += take;
            bytes = &bytes[take..];
            if self.carry_len < width {
                // Still incomplete; but even a prefix must be a valid one.
                return match std::str::from_utf8(&self.carry[..self.carry_len]) {
                    Err(e) if e.error_len().is_none() && !last => Ok(()),
                    _ => Err(Error::InvalidUtf8),
                };
            }
            std::str::from_utf8(&self.carry[..width]).map_err(|_| Error::InvalidUtf8)?;
            self.carry_len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() && !last => {
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len();
                Ok(())
            }
            Err(_) => Err(Error::InvalidUtf8),
        }
    }
}

/// The length of the UTF-8 sequence a leading byte starts.
fn utf8_width(lead: u8) -> Option<usize> {
    match lead {
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

/// Checks a received close frame's payload (§5.5.1, §7.4): empty, or a code that may be
/// sent followed by a UTF-8 reason. Returns the code and reason.
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::is_sendable(code) {
                return Err(protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

fn protocol(what: &str) -> Error {
    Error::Protocol(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_checked_across_chunks_and_fails_fast() {
        let text = "héllo wörld €𝄞".as_bytes();
        for split in 0..text.len() {
            let mut v = Utf8Validator::default();
            v.feed(&text[..split], false).expect("prefix");
            v.feed(&text[split..], true).expect("rest");
        }
        // An invalid byte fails at once, before the message ends.
        let mut v = Utf8Validator::default();
        assert!(v.feed(&[b'a', 0xFF], false).is_err());
        // A sequence that cannot be completed validly fails as soon as that is known.
        let mut v = Utf8Validator::default();
        v.feed(&[0xF4], false).expect("could be valid");
        assert!(
            v.feed(&[0x90], false).is_err(),
            "U+110000 and above are invalid"
        );
        // An incomplete sequence at the end is invalid.
        let mut v = Utf8Validator::default();
        v.feed(&[0xE2, 0x82], false).expect("prefix");
        assert!(v.feed(&[], true).is_err());
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]).expect("ok"), None);
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']).expect("ok"),
            Some((1000, "ok".to_owned()))
        );
        for bad in [
            &[0x03][..],
            &[0x03, 0xEC],
            &[0x03, 0xED],
            &[0, 0],
            &[0x13, 0x88],
        ] {
            assert!(parse_close(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_close(&[0x03, 0xE8, 0xFF]),
            Err(Error::InvalidUtf8)
        ));
    }
}
