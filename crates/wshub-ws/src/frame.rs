//! RFC 6455 frame headers (§5.2): parsing a client frame's header with the checks a server
//! owes it, finding where any frame ends, and encoding the header of a final frame.

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: a continuation frame of a fragmented message.
    Continuation = 0x0,
    /// 0x1: a text frame.
    Text = 0x1,
    /// 0x2: a binary frame.
    Binary = 0x2,
    /// 0x8: a close frame.
    Close = 0x8,
    /// 0x9: a ping.
    Ping = 0x9,
    /// 0xA: a pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of the low four bits of a frame's first byte; `None` for a reserved one.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control frame's opcode (close, ping, pong).
    #[inline]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A frame that breaks RFC 6455 (or RFC 7692), found from its header alone. The text says
/// what was wrong; an endpoint answers with close code 1002.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub &'static str);

/// The header of a frame from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the message this frame starts is compressed.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key.
    pub mask: [u8; 4],
    /// The payload's length.
    pub payload_len: usize,
    /// Bytes the header itself took.
    pub header_len: usize,
}

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The payload length field of the header at the start of `buf` (the 7-bit value, or the
/// 16- or 64-bit one it points to) and how many bytes beyond the first two it took; `None`
/// when `buf` ends first.
fn length_field(buf: &[u8]) -> Option<(u64, usize)> {
    match *buf.get(1)? & 0x7F {
        126 => {
            let bytes = buf.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2))
        }
        127 => {
            let mut be = [0_u8; 8];
            be.copy_from_slice(buf.get(2..10)?);
            Some((u64::from_be_bytes(be), 8))
        }
        len => Some((u64::from(len), 0)),
    }
}

/// Parses a client frame header from the start of `buf`; `Ok(None)` when more bytes are
/// needed. Enforces what can be checked from the header alone: no reserved bits but RSV1
/// when `deflate` (permessage-deflate was negotiated; RFC 7692 §6) and then only on the
/// first frame of a data message, a known opcode, control frames final and at most 125
/// bytes, minimal length encoding, and the mask every client frame must carry (§5.1).
pub fn parse_client_header(buf: &[u8], deflate: bool) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let reserved = if deflate { 0x30 } else { 0x70 };
    if b0 & reserved != 0 {
        return Err(FrameError(
            "reserved bits set without a negotiated extension",
        ));
    }
    let rsv1 = b0 & 0x40 != 0;
    let opcode = OpCode::from_bits(b0).ok_or(FrameError("unknown opcode"))?;
    if rsv1 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(FrameError("RSV1 set on a control or continuation frame"));
    }
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError("fragmented control frame"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError("unmasked frame from a client"));
    }
    let Some((len, len_bytes)) = length_field(buf) else {
        return Ok(None);
    };
    match len_bytes {
        2 if len < 126 => return Err(FrameError("payload length not minimally encoded")),
        8 if len >> 63 != 0 => return Err(FrameError("payload length with the high bit set")),
        8 if len <= u64::from(u16::MAX) => {
            return Err(FrameError("payload length not minimally encoded"));
        }
        _ => {}
    }
    let payload_len = usize::try_from(len).unwrap_or(usize::MAX);
    if opcode.is_control() && payload_len > 125 {
        return Err(FrameError("control frame longer than 125 bytes"));
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

/// The header length and payload length of the frame at the start of `buf`, masked or
/// not, once its header is complete; `None` before. Checks nothing else: for code that
/// passes frames on to an endpoint that judges them.
pub fn frame_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let masked = *buf.get(1)? & 0x80 != 0;
    let (len, len_bytes) = length_field(buf)?;
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    Some((header_len, usize::try_from(len).unwrap_or(usize::MAX)))
}

/// Encodes the header of a final frame with a payload of `len` bytes, with RSV1 when the
/// payload is `compressed` (permessage-deflate) and the masking key if any (a client's
/// frames carry one, a server's none); returns the buffer and how many of its bytes are
/// the header. Minimal length encoding (§5.2).
///
/// On the path of every frame a server fans out: no allocation, nothing but the header's
/// bytes.
#[inline]
pub fn encode_header(
    opcode: OpCode,
    compressed: bool,
    len: usize,
    mask: Option<[u8; 4]>,
) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut header = [0_u8; MAX_HEADER_LEN];
    header[0] = 0x80 | if compressed { 0x40 } else { 0 } | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let end = if len < 126 {
        header[1] = mask_bit | len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = mask_bit | 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = mask_bit | 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    match mask {
        Some(mask) => {
            header[end..end + 4].copy_from_slice(&mask);
            (header, end + 4)
        }
        None => (header, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply_mask;

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
            let header = parse_client_header(&frame, false)
                .expect("valid")
                .expect("complete");
            assert_eq!(header.payload_len, len);
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(header.header_len + len, frame.len());
            assert_eq!(frame_extent(&frame), Some((header.header_len, len)));
            let mut body = frame[header.header_len..].to_vec();
            apply_mask(&mut body, header.mask, 0);
            assert_eq!(body, payload);
            // Every prefix of the header asks for more bytes.
            for cut in 0..header.header_len {
                assert_eq!(
                    parse_client_header(&frame[..cut], false).expect("valid"),
                    None
                );
            }
            for cut in 0..header.header_len - 4 {
                assert_eq!(frame_extent(&frame[..cut]), None);
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
        let mut non_minimal_64 = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF];
        non_minimal_64.extend_from_slice(&[0; 4]);
        let mut high_bit = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        high_bit.extend_from_slice(&[0; 4]);
        for bad in [
            rsv,
            unmasked,
            opcode,
            fragmented_ping,
            long_ping,
            non_minimal,
            non_minimal_64,
            high_bit,
        ] {
            assert!(parse_client_header(&bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rsv1_only_with_deflate_and_only_on_a_message_start() {
        let mut compressed = masked(0x1, true, b"hi", [0; 4]);
        compressed[0] |= 0x40;
        assert!(parse_client_header(&compressed, false).is_err());
        let header = parse_client_header(&compressed, true)
            .expect("valid")
            .expect("complete");
        assert!(header.rsv1);
        for opcode in [0x0, 0x8, 0x9, 0xA] {
            let mut bad = masked(opcode, true, b"", [0; 4]);
            bad[0] |= 0x40;
            assert!(parse_client_header(&bad, true).is_err(), "{opcode}");
        }
        for rsv in [0x20, 0x10] {
            let mut bad = masked(0x1, true, b"hi", [0; 4]);
            bad[0] |= rsv;
            assert!(parse_client_header(&bad, true).is_err(), "{rsv:x}");
        }
    }

    #[test]
    fn headers_encode_minimally() {
        assert_eq!(encode_header(OpCode::Text, false, 5, None).1, 2);
        assert_eq!(encode_header(OpCode::Text, false, 126, None).1, 4);
        assert_eq!(encode_header(OpCode::Binary, false, 70_000, None).1, 10);
        let (h, n) = encode_header(OpCode::Close, false, 2, None);
        assert_eq!(&h[..n], &[0x88, 2]);
        let (h, n) = encode_header(OpCode::Text, true, 3, None);
        assert_eq!(&h[..n], &[0xC1, 3]);
    }

    #[test]
    fn masked_headers_parse_back() {
        let mask = [9, 8, 7, 6];
        for len in [0, 125, 126, 65_535, 65_536] {
            let (h, n) = encode_header(OpCode::Binary, true, len, Some(mask));
            let header = parse_client_header(&h[..n], true)
                .expect("valid")
                .expect("complete");
            assert_eq!(
                (header.fin, header.rsv1, header.opcode),
                (true, true, OpCode::Binary)
            );
            assert_eq!(
                (header.mask, header.payload_len, header.header_len),
                (mask, len, n)
            );
            assert_eq!(frame_extent(&h[..n]), Some((n, len)));
        }
        let (h, n) = encode_header(OpCode::Text, false, 300, None);
        assert_eq!(frame_extent(&h[..n]), Some((4, 300)), "unmasked");
    }
}
