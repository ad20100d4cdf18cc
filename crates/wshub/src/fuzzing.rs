//! Entry points for the fuzz targets in `fuzz/`: untrusted bytes through the real RFC 6455
//! parser and message assembly of the server's transport, with no socket.
//!
//! Not part of the API (hidden from the docs; it may change with any release). Each
//! function checks the invariants the rest of the library relies on and panics when one
//! breaks, so that a fuzzer reports it; well-formed or not, no input may panic otherwise.

use crate::{
    CloseCode, Compression, MessageKind,
    deflate::{self, Agreed},
    frame::{self, Utf8Validator},
    transport::{Incoming, Transport},
};

/// The message size limit the targets run with: small, so that inputs reach it.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// What the transport made of one input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// Complete text and binary messages.
    pub messages: usize,
    /// Pings (each answered with a queued pong).
    pub pings: usize,
    /// Pongs.
    pub pongs: usize,
    /// The peer's close frame, with its code when it had one.
    pub close: Option<Option<u16>>,
    /// The close code a protocol violation was answered with (1002, 1007 or 1009).
    pub failed_with: Option<u16>,
}

/// Feeds the bytes a client sent to a server-side transport and takes out every frame.
///
/// The input's first byte chooses how the rest is cut into reads (every read its own
/// `receive` call, as if the socket delivered it so): the bytes are cut into pieces of
/// `1 + input[0] % 64` bytes, or all at once when `input[0]` is 0, so the fuzzer explores
/// frames split at every point. With bit 7 of `input[0]` set, permessage-deflate is on
/// (compressed messages are inflated), and with bit 6 as well, without client context
/// takeover.
///
/// # Panics
/// When an invariant breaks: a message over [`MAX_MESSAGE_BYTES`], a text message that is
/// not UTF-8, an error without a close code, or frames taken after a failure or a close.
pub fn client_bytes(input: &[u8]) -> Outcome {
    let Some((&cut, bytes)) = input.split_first() else {
        return Outcome::default();
    };
    let piece = if cut == 0 {
        bytes.len().max(1)
    } else {
        1 + usize::from(cut % 64)
    };
    let mut transport = Transport::server((), MAX_MESSAGE_BYTES);
    if cut & 0x80 != 0 {
        let agreed = Agreed {
            server_window_bits: 15,
            client_window_bits: 15,
            client_no_context_takeover: cut & 0x40 != 0,
        };
        transport = transport.with_deflate(agreed, &Compression::default());
    }
    let mut outcome = Outcome::default();
    for chunk in bytes.chunks(piece) {
        let mut fresh = chunk;
        // A read can complete any number of frames; take them all before the next read.
        loop {
            let result = transport.receive(fresh);
            fresh = &[];
            let ended = outcome.close.is_some() || outcome.failed_with.is_some();
            match result {
                Ok(None) => break,
                Ok(Some(incoming)) => {
                    assert!(!ended, "a frame after the end: {incoming:?}");
                    match incoming {
                        Incoming::Message(message) => {
                            assert!(message.len() <= MAX_MESSAGE_BYTES, "over the limit");
                            if message.kind() == MessageKind::Text {
                                assert!(message.as_text().is_some(), "text that is not UTF-8");
                            }
                            outcome.messages += 1;
                        }
                        Incoming::Ping => outcome.pings += 1,
                        Incoming::Pong => outcome.pongs += 1,
                        Incoming::Close(close) => {
                            outcome.close = Some(close.map(|(code, _)| code));
                        }
                    }
                }
                Err(error) => {
                    assert!(!ended, "an error after the end: {error}");
                    let code = error.close_code().map(CloseCode::as_u16);
                    assert!(
                        matches!(code, Some(1002 | 1007 | 1009)),
                        "{error} closes with {code:?}"
                    );
                    outcome.failed_with = code;
                    break;
                }
            }
        }
    }
    outcome
}

/// Checks the incremental UTF-8 validator against the standard library: fed `input`
/// (after its first byte) in pieces of `1 + input[0] % 16` bytes, it must fail exactly
/// when the whole is not UTF-8, and never before the invalid bytes have arrived.
///
/// # Panics
/// When the validator and `std::str::from_utf8` disagree.
pub fn utf8_pieces(input: &[u8]) -> Option<bool> {
    let (&cut, bytes) = input.split_first()?;
    let piece = 1 + usize::from(cut % 16);
    let whole_valid = std::str::from_utf8(bytes).is_ok();
    let mut validator = Utf8Validator::default();
    let mut fed = 0_usize;
    let mut verdict = true;
    let pieces = bytes.chunks(piece).count();
    for (i, chunk) in bytes.chunks(piece).enumerate() {
        fed += chunk.len();
        let last = i + 1 == pieces;
        if validator.feed(chunk, last).is_err() {
            // Failing early is only right when what arrived so far can never be completed
            // into valid UTF-8.
            let prefix = &bytes[..fed];
            let completable = match std::str::from_utf8(prefix) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none() && !last,
            };
            assert!(!completable, "failed on a valid prefix of {} bytes", fed);
            verdict = false;
            break;
        }
    }
    if bytes.is_empty() {
        verdict = validator.feed(&[], true).is_ok();
    }
    assert_eq!(verdict, whole_valid, "validator and std disagree");
    Some(verdict)
}

/// Negotiates permessage-deflate for a `Sec-WebSocket-Extensions` offer (the input as
/// text); returns the response's value when an offer was accepted.
///
/// # Panics
/// When an accepted offer gives a response without `server_no_context_takeover`, or
/// windows out of range.
pub fn extension_offer(input: &[u8]) -> Option<String> {
    let offer = std::str::from_utf8(input).ok()?;
    let config = Compression::default().client_max_window_bits(10);
    let (agreed, response) = deflate::negotiate(&config, [offer])?;
    assert!(response.starts_with("permessage-deflate; server_no_context_takeover"));
    assert!((9..=15).contains(&agreed.server_window_bits));
    assert!((9..=15).contains(&agreed.client_window_bits));
    Some(response)
}

/// Parses a close frame's payload; an accepted one has a code that may be sent and a
/// reason that is exactly the UTF-8 after it.
///
/// # Panics
/// When an accepted payload breaks that.
pub fn close_payload(payload: &[u8]) -> Option<u16> {
    let (code, reason) = frame::parse_close(payload).ok()??;
    assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
    assert_eq!(Some(reason.as_bytes()), payload.get(2..));
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = vec![first, 0x80 | payload.len() as u8, 1, 2, 3, 4];
        frame.extend(
            payload
                .iter()
                .zip([1_u8, 2, 3, 4].iter().cycle())
                .map(|(b, m)| b ^ m),
        );
        frame
    }

    #[test]
    fn frames_split_anywhere_give_the_same_outcome() {
        let mut stream = masked(0x81, "héllo".as_bytes());
        stream.extend(masked(0x89, b"ping"));
        stream.extend(masked(0x02, b"bin"));
        stream.extend(masked(0x80, b"!"));
        stream.extend(masked(0x88, &[0x03, 0xE8]));
        for cut in 0..=u8::MAX {
            let mut input = vec![cut];
            input.extend_from_slice(&stream);
            let outcome = client_bytes(&input);
            assert_eq!(outcome.messages, 2, "cut {cut}");
            assert_eq!(outcome.pings, 1);
            assert_eq!(outcome.close, Some(Some(1000)));
            assert_eq!(outcome.failed_with, None);
        }
    }

    #[test]
    fn violations_get_their_close_codes() {
        let reserved = masked(0xC1, b"x");
        assert_eq!(
            client_bytes(&[[0].as_slice(), &reserved].concat()).failed_with,
            Some(1002)
        );
        let bad_text = [masked(0x01, &[b'a', 0xC3]), masked(0x80, &[0x28])].concat();
        assert_eq!(
            client_bytes(&[[3].as_slice(), &bad_text].concat()).failed_with,
            Some(1007)
        );
        let mut too_big = vec![0, 0x82, 0x80 | 127];
        too_big.extend_from_slice(&(1_u64 << 40).to_be_bytes());
        too_big.extend_from_slice(&[0; 4]);
        assert_eq!(client_bytes(&too_big).failed_with, Some(1009));
    }

    #[test]
    fn utf8_pieces_agree_with_std() {
        for text in [&b"plain"[..], "€𝄞é".as_bytes(), &[0xE2, 0x82], &[0xFF], &[]] {
            for cut in 0..16 {
                let input = [&[cut][..], text].concat();
                assert_eq!(utf8_pieces(&input), Some(std::str::from_utf8(text).is_ok()));
            }
        }
    }

    #[test]
    fn compressed_messages_are_inflated_with_deflate_on() {
        let compressed = deflate::compress(&b"hello ".repeat(40), 15, 1).expect("smaller");
        let frame = masked(0xC1, &compressed);
        let on = client_bytes(&[[0x80].as_slice(), &frame].concat());
        assert_eq!((on.messages, on.failed_with), (1, None));
        let off = client_bytes(&[[0x00].as_slice(), &frame].concat());
        assert_eq!((off.messages, off.failed_with), (0, Some(1002)));
        let garbage = client_bytes(&[[0xC0].as_slice(), &masked(0xC1, &[0xff; 9])].concat());
        assert_eq!(garbage.failed_with, Some(1007));
        assert!(extension_offer(b"permessage-deflate; client_max_window_bits").is_some());
        assert_eq!(extension_offer(b"permessage-deflate; x"), None);
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(close_payload(&[0x03, 0xE8, b'o', b'k']), Some(1000));
        assert_eq!(close_payload(&[0x03, 0xED]), None);
    }

    /// Found by the `websocket_frames` fuzz target: a text message whose last fragment is
    /// empty is never checked for a UTF-8 sequence left incomplete by the fragment before,
    /// so "a\xE2\x82" reaches the handler as a text message instead of closing with 1007.
    #[test]
    fn an_empty_final_fragment_still_ends_the_utf8_check() {
        let input = [
            &[0][..],
            &masked(0x01, &[b'a', 0xE2, 0x82]),
            &masked(0x80, b""),
        ]
        .concat();
        let outcome = client_bytes(&input);
        assert_eq!((outcome.messages, outcome.failed_with), (0, Some(1007)));
    }
}
