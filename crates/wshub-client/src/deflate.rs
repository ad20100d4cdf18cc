//! permessage-deflate (RFC 7692) for the client, as a byte stream under the WebSocket
//! library: [`Inflating`] wraps the TCP (or TLS) stream, reads the server's handshake
//! response to learn whether the extension was agreed, then rewrites each compressed message
//! the server sends (RSV1 on its first frame, fragments joined) into one plain frame, so the
//! library above, which knows no extension, sees only what it understands. Everything else
//! passes through untouched, and so does everything written.
//!
//! The client offers the extension but sends its own messages uncompressed, which RFC 7692
//! allows (RSV1 is per message): what a hub's clients receive (broadcasts) is where the bytes
//! are. Inflating is bounded by the client's largest accepted message.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The extension offer sent in the handshake. `client_max_window_bits` tells the server it
/// may limit our window (we never compress, so any limit suits us).
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The bytes a sync flush ends with, removed by the sender, put back before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// How much room each read from the stream makes in the buffer.
const READ_CHUNK_BYTES: usize = 8192;
/// The longest handshake response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Where the stream is.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP response head.
    Head,
    /// The extension was agreed: compressed messages are inflated.
    Inflating,
    /// No extension (or no offer): bytes pass as they are.
    Plain,
}

/// A stream that inflates the server's compressed messages (see the module's docs).
#[derive(Debug)]
pub(crate) struct Inflating<S> {
    inner: S,
    offered: bool,
    phase: Phase,
    /// Bytes read from `inner`, not yet looked at.
    raw: BytesMut,
    /// Bytes ready for the reader above.
    ready: BytesMut,
    /// A fragmented compressed message being joined: its opcode and compressed bytes.
    assembly: Option<(u8, Vec<u8>)>,
    /// Made on the first compressed message.
    decompressor: Option<Decompress>,
    /// The server said `server_no_context_takeover`: reset after every message.
    reset_each_message: bool,
    max_message_bytes: usize,
}

impl<S> Inflating<S> {
    /// Wraps `inner`; `offered` says whether the handshake request carries [`OFFER`].
    pub(crate) fn new(inner: S, offered: bool, max_message_bytes: usize) -> Self {
        Self {
            inner,
            offered,
            phase: Phase::Head,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            assembly: None,
            decompressor: None,
            reset_each_message: false,
            max_message_bytes,
        }
    }

    /// Whether the server agreed to permessage-deflate (known once the handshake is done).
    pub(crate) fn is_inflating(&self) -> bool {
        matches!(self.phase, Phase::Inflating)
    }

    /// Moves what can be moved from `raw` to `ready`; `Ok(false)` when more input is needed.
    fn process(&mut self) -> io::Result<bool> {
        match self.phase {
            Phase::Head => {
                let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if self.raw.len() > MAX_HEAD_BYTES {
                        return Err(invalid("handshake response head too long"));
                    }
                    return Ok(false);
                };
                let head = self.raw.split_to(end + 4);
                let agreed = self.offered.then(|| agreed_extension(&head)).flatten();
                if let Some(params) = agreed {
                    self.reset_each_message = params
                        .split(';')
                        .any(|p| p.trim().eq_ignore_ascii_case("server_no_context_takeover"));
                    self.phase = Phase::Inflating;
                } else {
                    self.phase = Phase::Plain;
                }
                self.ready.extend_from_slice(&head);
                Ok(true)
            }
            Phase::Plain => {
                if self.raw.is_empty() {
                    return Ok(false);
                }
                // What came with the handshake's last read: handed on without a copy.
                self.ready.unsplit(self.raw.split());
                Ok(true)
            }
            Phase::Inflating => self.process_frames(),
        }
    }

    /// Takes whole frames out of `raw`: compressed messages are joined and inflated, the rest
    /// passes as it is.
    fn process_frames(&mut self) -> io::Result<bool> {
        let mut progress = false;
        while let Some((header_len, payload_len)) = frame_extent(&self.raw) {
            let joined = self.assembly.as_ref().map_or(0, |(_, data)| data.len());
            if joined.saturating_add(payload_len) > self.max_message_bytes {
                return Err(invalid("message over the client's limit"));
            }
            if self.raw.len() < header_len + payload_len {
                break;
            }
            let frame = self.raw.split_to(header_len + payload_len);
            progress = true;
            let (b0, b1) = (frame[0], frame[1]);
            let (fin, rsv1, opcode, masked) =
                (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0F, b1 & 0x80 != 0);
            let payload = &frame[header_len..];
            match (&mut self.assembly, opcode) {
                (None, 0x1 | 0x2) if rsv1 && !masked => {
                    if fin {
                        let inflated = self.inflate(payload)?;
                        push_frame(&mut self.ready, opcode, &inflated);
                    } else {
                        self.assembly = Some((opcode, payload.to_vec()));
                    }
                }
                (Some((_, data)), 0x0) if !rsv1 => {
                    data.extend_from_slice(payload);
                    if fin && let Some((opcode, data)) = self.assembly.take() {
                        let inflated = self.inflate(&data)?;
                        push_frame(&mut self.ready, opcode, &inflated);
                    }
                }
                (Some(_), opcode) if opcode & 0x8 == 0 => {
                    return Err(invalid("frame out of sequence in a compressed message"));
                }
                // Control frames, uncompressed messages, and anything the library above
                // must judge itself.
                _ => self.ready.extend_from_slice(&frame),
            }
        }
        Ok(progress)
    }

    /// Inflates one whole message, bounded by the largest accepted message.
    fn inflate(&mut self, compressed: &[u8]) -> io::Result<Vec<u8>> {
        let max = self.max_message_bytes;
        let decompressor = self
            .decompressor
            .get_or_insert_with(|| Decompress::new(false));
        let mut out = Vec::with_capacity(
            compressed
                .len()
                .saturating_mul(4)
                .clamp(64, max.saturating_add(1)),
        );
        let mut ended = false;
        for part in [compressed, &SYNC_TAIL[..]] {
            let start = decompressor.total_in();
            loop {
                let consumed =
                    usize::try_from(decompressor.total_in() - start).unwrap_or(usize::MAX);
                if out.len() == out.capacity() {
                    out.reserve_exact(
                        out.len()
                            .clamp(1024, max.saturating_add(1).saturating_sub(out.len()).max(1)),
                    );
                }
                let before = (decompressor.total_in(), out.len());
                let status = decompressor
                    .decompress_vec(
                        &part[consumed.min(part.len())..],
                        &mut out,
                        FlushDecompress::Sync,
                    )
                    .map_err(|e| invalid(&format!("compressed message does not inflate: {e}")))?;
                if out.len() > max {
                    return Err(invalid("inflated message over the client's limit"));
                }
                if status == Status::StreamEnd {
                    ended = true;
                    break;
                }
                let consumed =
                    usize::try_from(decompressor.total_in() - start).unwrap_or(usize::MAX);
                if consumed >= part.len() && out.len() < out.capacity() {
                    break;
                }
                if (decompressor.total_in(), out.len()) == before && out.len() < out.capacity() {
                    return Err(invalid("compressed message does not inflate"));
                }
            }
            if ended {
                break;
            }
        }
        if ended || self.reset_each_message {
            decompressor.reset(false);
        }
        Ok(out)
    }
}

/// The parameters of `permessage-deflate` in a response head's `Sec-WebSocket-Extensions`.
fn agreed_extension(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
            return None;
        }
        let value = value.trim();
        let (first, params) = value.split_once(';').unwrap_or((value, ""));
        first
            .trim()
            .eq_ignore_ascii_case("permessage-deflate")
            .then(|| params.to_owned())
    })
}

/// The header length and payload length of the frame at the start of `buf`, when its
/// header is complete.
fn frame_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let b1 = *buf.get(1)?;
    let mask_len = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (len, len_bytes) = match b1 & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            2,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (
                usize::try_from(u64::from_be_bytes(bytes)).unwrap_or(usize::MAX),
                8,
            )
        }
        n => (usize::from(n), 0),
    };
    Some((2 + len_bytes + mask_len, len))
}

/// Appends a final, unmasked frame with `payload`.
fn push_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= usize::from(u16::MAX) => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("permessage-deflate: {reason}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.process()? {
                continue;
            }
            if matches!(this.phase, Phase::Plain) {
                // Nothing to rewrite: straight from the stream into the reader's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.raw.reserve(READ_CHUNK_BYTES);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw
            ))?;
            if read == 0 {
                // End of stream: hand over what is left for the library to judge.
                let rest = this.raw.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready.extend_from_slice(&rest);
                continue;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, FlushCompress};
    use tokio::io::AsyncReadExt;

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";

    fn deflate(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        compressor
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("compress");
        assert!(out.ends_with(&SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    async fn read_all(stream: Inflating<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stream = stream;
        stream.read_to_end(&mut out).await.expect("reads");
        out
    }

    #[tokio::test]
    async fn compressed_messages_become_plain_frames_and_the_rest_passes() {
        let text = b"hello hello hello hello hello hello hello".repeat(10);
        let mut compressor = Compress::new(flate2::Compression::default(), false);
        let compressed = deflate(&mut compressor, &text);
        let mut input = HEAD.to_vec();
        // One whole compressed message, a ping, then the same in three fragments.
        input.extend_from_slice(&[0xC1, compressed.len() as u8]);
        input.extend_from_slice(&compressed);
        input.extend_from_slice(&[0x89, 0x00]);
        let mut compressor = Compress::new(flate2::Compression::default(), false);
        let compressed = deflate(&mut compressor, &text);
        let (a, b) = compressed.split_at(5);
        input.extend_from_slice(&[0x41, a.len() as u8]);
        input.extend_from_slice(a);
        input.extend_from_slice(&[0x8A, 0x00]); // a pong between fragments
        input.extend_from_slice(&[0x80, b.len() as u8]);
        input.extend_from_slice(b);
        input.extend_from_slice(&[0x81, 0x02, b'o', b'k']);

        let out = read_all(Inflating::new(&input[..], true, 1 << 20)).await;
        let mut expected = HEAD.to_vec();
        push_frame_vec(&mut expected, 0x1, &text);
        expected.extend_from_slice(&[0x89, 0x00]);
        expected.extend_from_slice(&[0x8A, 0x00]);
        push_frame_vec(&mut expected, 0x1, &text);
        expected.extend_from_slice(&[0x81, 0x02, b'o', b'k']);
        assert_eq!(out, expected);
    }

    fn push_frame_vec(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let mut bytes = BytesMut::new();
        push_frame(&mut bytes, opcode, payload);
        out.extend_from_slice(&bytes);
    }

    #[tokio::test]
    async fn without_an_agreement_everything_passes() {
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        input.extend_from_slice(&[0xC1, 0x01, 0xff]);
        assert_eq!(
            read_all(Inflating::new(&input[..], true, 1024)).await,
            input
        );
        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0xC1, 0x01, 0xff]);
        // Not offered: an agreement the server made up is not honoured.
        assert_eq!(
            read_all(Inflating::new(&input[..], false, 1024)).await,
            input
        );
    }

    #[tokio::test]
    async fn bombs_and_garbage_are_errors() {
        let mut compressor = Compress::new(flate2::Compression::best(), false);
        let bomb = deflate(&mut compressor, &vec![0_u8; 1 << 20]);
        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0xC2, 126]);
        input.extend_from_slice(&(bomb.len() as u16).to_be_bytes());
        input.extend_from_slice(&bomb);
        let mut stream = Inflating::new(&input[..], true, 64 * 1024);
        let mut out = Vec::new();
        let error = stream
            .read_to_end(&mut out)
            .await
            .expect_err("over the limit");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0xC1, 0x05, 0xff, 0xff, 0xff, 0xff, 0x12]);
        let mut stream = Inflating::new(&input[..], true, 64 * 1024);
        assert!(stream.read_to_end(&mut out).await.is_err());
    }
}
