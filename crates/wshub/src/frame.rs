//! RFC 6455 framing for the server side, as pure functions over bytes: parse a client
//! frame header, unmask a payload, encode a server frame header, validate UTF-8 as it
//! arrives, and check a close frame's payload. No I/O here; `transport` drives it.

use crate::{CloseCode, Error};

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub(crate) fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The header of a frame from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1: with permessage-deflate, the message this frame starts is compressed.
    pub(crate) rsv1: bool,
    pub(crate) opcode: OpCode,
    pub(crate) mask: [u8; 4],
    pub(crate) payload_len: usize,
    /// Bytes the header itself took.
    pub(crate) header_len: usize,
}

/// Parses a client frame header from the start of `buf`; `Ok(None)` when more bytes are
/// needed. Enforces what can be checked from the header alone: no reserved bits but RSV1
/// when `deflate` (permessage-deflate was negotiated; RFC 7692 §6) and then only on the
/// first frame of a data message, a known opcode, control frames final and at most 125
/// bytes, minimal length encoding, and the mask every client frame must carry (§5.1).
pub(crate) fn parse_header(buf: &[u8], deflate: bool) -> Result<Option<Header>, Error> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let reserved = if deflate { 0x30 } else { 0x70 };
    if b0 & reserved != 0 {
        return Err(protocol("reserved bits set without a negotiated extension"));
    }
    let rsv1 = b0 & 0x40 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or_else(|| protocol("unknown opcode"))?;
    if rsv1 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(protocol("RSV1 set on a control or continuation frame"));
    }
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(protocol("fragmented control frame"));
    }
    if b1 & 0x80 == 0 {
        return Err(protocol("unmasked frame from a client"));
    }
    let (payload_len, len_bytes) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
            if len < 126 {
                return Err(protocol("payload length not minimally encoded"));
            }
            (len, 2)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0_u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(protocol("payload length with the high bit set"));
            }
            if len <= u64::from(u16::MAX) {
                return Err(protocol("payload length not minimally encoded"));
            }
            (usize::try_from(len).unwrap_or(usize::MAX), 8)
        }
        len => (usize::from(len), 0),
    };
    if opcode.is_control() && payload_len > 125 {
        return Err(protocol("control frame longer than 125 bytes"));
    }
    let header_len = 2 + len_bytes + 4;
    let Some(mask) = buf.get(2 + len_bytes..header_len) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        payload_len,
        header_len,
    }))
}

/// Unmasks `payload` in place; `offset` is how many bytes of the same payload were
/// unmasked before (so a payload can be unmasked piecewise as it arrives).
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (chunks, rest) = payload.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    // Eight is a multiple of four, so the tail starts on the mask's first byte.
    for (byte, m) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Encodes an unmasked, final server frame header for a payload of `len` bytes, with RSV1
/// when the payload is `compressed` (permessage-deflate); returns the buffer and how many
/// of its bytes are the header.
pub(crate) fn encode_header(opcode: OpCode, compressed: bool, len: usize) -> ([u8; 10], usize) {
    let mut header = [0_u8; 10];
    header[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode as u8;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

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

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        frame
    }

    #[test]
    fn parses_headers_of_every_length_class() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; len];
            let frame = masked(0x2, true, &payload, [1, 2, 3, 4]);
            let header = parse_header(&frame, false)
                .expect("valid")
                .expect("complete");
            assert_eq!(header.payload_len, len);
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(header.header_len + len, frame.len());
            let mut body = frame[header.header_len..].to_vec();
            unmask(&mut body, header.mask, 0);
            assert_eq!(body, payload);
            // Every prefix of the header asks for more bytes.
            for cut in 0..header.header_len {
                assert_eq!(parse_header(&frame[..cut], false).expect("valid"), None);
            }
        }
    }

    #[test]
    fn rejects_what_the_rfc_forbids() {
        let ok = masked(0x1, true, b"hi", [0; 4]);
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        let mut opcode = ok.clone();
        opcode[0] = 0x83;
        let fragmented_ping = masked(0x9, false, b"", [0; 4]);
        let long_ping = masked(0x9, true, &[0; 126], [0; 4]);
        let mut non_minimal = vec![0x82, 0x80 | 126, 0, 5];
        non_minimal.extend_from_slice(&[0; 4]);
        for bad in [
            rsv,
            unmasked,
            opcode,
            fragmented_ping,
            long_ping,
            non_minimal,
        ] {
            assert!(
                matches!(parse_header(&bad, false), Err(Error::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rsv1_only_with_deflate_and_only_on_a_message_start() {
        let mut compressed = masked(0x1, true, b"hi", [0; 4]);
        compressed[0] |= 0x40;
        assert!(matches!(
            parse_header(&compressed, false),
            Err(Error::Protocol(_))
        ));
        let header = parse_header(&compressed, true)
            .expect("valid")
            .expect("complete");
        assert!(header.rsv1);
        for opcode in [0x0, 0x8, 0x9, 0xA] {
            let mut bad = masked(opcode, true, b"", [0; 4]);
            bad[0] |= 0x40;
            assert!(
                matches!(parse_header(&bad, true), Err(Error::Protocol(_))),
                "{opcode}"
            );
        }
        for rsv in [0x20, 0x10] {
            let mut bad = masked(0x1, true, b"hi", [0; 4]);
            bad[0] |= rsv;
            assert!(
                matches!(parse_header(&bad, true), Err(Error::Protocol(_))),
                "{rsv:x}"
            );
        }
    }

    #[test]
    fn unmasks_piecewise() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let plain: Vec<u8> = (0..100).collect();
        let mut masked: Vec<u8> = plain
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let (a, rest) = masked.split_at_mut(13);
        unmask(a, mask, 0);
        let (b, c) = rest.split_at_mut(30);
        unmask(b, mask, 13);
        unmask(c, mask, 43);
        assert_eq!(masked, plain);
    }

    #[test]
    fn headers_encode_minimally() {
        assert_eq!(encode_header(OpCode::Text, false, 5).1, 2);
        assert_eq!(encode_header(OpCode::Text, false, 126).1, 4);
        assert_eq!(encode_header(OpCode::Binary, false, 70_000).1, 10);
        let (h, n) = encode_header(OpCode::Close, false, 2);
        assert_eq!(&h[..n], &[0x88, 2]);
        let (h, n) = encode_header(OpCode::Text, true, 3);
        assert_eq!(&h[..n], &[0xC1, 3]);
    }

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
