//! permessage-deflate (RFC 7692) for the client, as a byte stream under the WebSocket
//! library: [`DeflateStream`] wraps the TCP (or TLS) stream and reads the server's
//! handshake response to learn whether the extension was agreed. Then it rewrites, in both
//! directions, what the library above (which knows no extension) reads and writes: each
//! compressed message the server sends (RSV1 on its first frame, fragments joined) becomes
//! one plain frame, and each whole text or binary message the client writes, of
//! [`COMPRESS_MIN_BYTES`] or more, goes out compressed when that makes it smaller. Control
//! frames, fragmented messages and small messages pass as they are (RSV1 is per message).
//!
//! Inflating is bounded by the client's largest accepted message. The client's compressor
//! (level 1, made on the first message worth compressing) keeps its context between
//! messages unless the server asked for `client_no_context_takeover`, and honours the
//! `client_max_window_bits` the server chose (9 to 15; a server asking for 8 gets
//! uncompressed messages, which zlib cannot produce within an 8-bit window).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wshub_ws::{
    InflateError, OpCode, apply_mask, deflate_message, encode_header, frame_extent, inflate_message,
};

/// The extension offer sent in the handshake. `client_max_window_bits` tells the server it
/// may limit our window.
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Messages shorter than this are sent uncompressed: deflate's framing would eat the saving.
pub(crate) const COMPRESS_MIN_BYTES: usize = 128;
/// Rewritten bytes waiting for the stream beyond which a write waits for the stream.
const MAX_PENDING_OUT_BYTES: usize = 256 * 1024;

/// How much room each read from the stream makes in the buffer.
const READ_CHUNK_BYTES: usize = 8192;
/// The longest handshake response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Where the stream is.
#[derive(Debug)]
enum Phase {
    /// Reading the HTTP response head.
    Head,
    /// The extension was agreed: messages are inflated and compressed.
    Agreed,
    /// No extension (or no offer): bytes pass as they are.
    Plain,
}

/// A stream that inflates the server's compressed messages and compresses the client's
/// (see the module's docs).
#[derive(Debug)]
pub(crate) struct DeflateStream<S> {
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
    /// The client's own messages are compressed (agreed, with a window zlib can keep to).
    compress_sends: bool,
    /// The server said `client_no_context_takeover`: our compressor forgets each message.
    reset_each_send: bool,
    /// Our compressor's window: `client_max_window_bits`, 15 when the server set none.
    send_window_bits: u8,
    /// Made on the first message worth compressing.
    compressor: Option<Compress>,
    /// Bytes written by the library above that do not make a whole frame yet.
    written: BytesMut,
    /// Rewritten bytes waiting for the stream.
    out: BytesMut,
}

impl<S> DeflateStream<S> {
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
            compress_sends: false,
            reset_each_send: false,
            send_window_bits: 15,
            compressor: None,
            written: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    /// Whether the client's own messages go out compressed (known once the handshake is done).
    pub(crate) fn compresses_sends(&self) -> bool {
        self.compress_sends
    }

    /// Whether the server agreed to permessage-deflate (known once the handshake is done).
    pub(crate) fn is_inflating(&self) -> bool {
        matches!(self.phase, Phase::Agreed)
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
                    self.compress_sends = true;
                    for param in params.split(';').map(str::trim) {
                        let (name, value) = param.split_once('=').unwrap_or((param, ""));
                        let value = value.trim().trim_matches('"');
                        match name.trim().to_ascii_lowercase().as_str() {
                            "server_no_context_takeover" => self.reset_each_message = true,
                            "client_no_context_takeover" => self.reset_each_send = true,
                            "client_max_window_bits" => match value.parse::<u8>() {
                                Ok(bits @ 9..=15) => self.send_window_bits = bits,
                                // 8, or no value where the response needs one: send plain.
                                _ => self.compress_sends = false,
                            },
                            _ => {}
                        }
                    }
                    self.phase = Phase::Agreed;
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
            Phase::Agreed => self.process_frames(),
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
                        push_frame(&mut self.ready, data_opcode(opcode), &inflated);
                    } else {
                        self.assembly = Some((opcode, payload.to_vec()));
                    }
                }
                (Some((_, data)), 0x0) if !rsv1 => {
                    data.extend_from_slice(payload);
                    if fin && let Some((opcode, data)) = self.assembly.take() {
                        let inflated = self.inflate(&data)?;
                        push_frame(&mut self.ready, data_opcode(opcode), &inflated);
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
        let decompressor = self
            .decompressor
            .get_or_insert_with(|| Decompress::new(false));
        let out =
            inflate_message(decompressor, compressed, self.max_message_bytes).map_err(|error| {
                match error {
                    InflateError::TooLarge { .. } => {
                        invalid("inflated message over the client's limit")
                    }
                    InflateError::Invalid(_) => invalid(&error.to_string()),
                }
            })?;
        if self.reset_each_message {
            decompressor.reset(false);
        }
        Ok(out)
    }
}

impl<S> DeflateStream<S> {
    /// Moves the whole frames written so far to `out`, compressing the messages worth it.
    fn rewrite_written(&mut self) -> io::Result<()> {
        while let Some((header_len, payload_len)) = frame_extent(&self.written) {
            let total = header_len.saturating_add(payload_len);
            if self.written.len() < total {
                break;
            }
            let frame = self.written.split_to(total);
            let (b0, b1) = (frame[0], frame[1]);
            let (fin, rsv, opcode, masked) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0F, b1 & 0x80 != 0);
            // Only whole, unfragmented data messages: RSV1 would have to go on the first
            // fragment before the rest of the message is known. Small ones pass untouched,
            // without being copied or unmasked.
            if fin
                && rsv == 0
                && masked
                && matches!(opcode, 0x1 | 0x2)
                && payload_len >= COMPRESS_MIN_BYTES
            {
                let mask: [u8; 4] = frame[header_len - 4..header_len]
                    .try_into()
                    .map_err(|_| invalid("masking key"))?;
                let mut payload = frame[header_len..].to_vec();
                apply_mask(&mut payload, mask, 0);
                let mut compressed = self.compress(&payload)?;
                if compressed.len() < payload.len() {
                    apply_mask(&mut compressed, mask, 0);
                    push_header(
                        &mut self.out,
                        data_opcode(opcode),
                        true,
                        compressed.len(),
                        Some(mask),
                    );
                    self.out.extend_from_slice(&compressed);
                    continue;
                }
                // Did not shrink: sent as it is, so the compressor must forget it (the
                // server's window never sees these bytes).
                if let Some(compressor) = &mut self.compressor {
                    compressor.reset();
                }
            }
            self.out.extend_from_slice(&frame);
        }
        Ok(())
    }

    /// Compresses one message: raw DEFLATE ending in a sync flush, its 4-byte tail removed.
    fn compress(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let bits = self.send_window_bits;
        let compressor = self.compressor.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::fast(), false, bits)
        });
        let out = deflate_message(compressor, payload).map_err(|e| invalid(&e.to_string()))?;
        if self.reset_each_send {
            compressor.reset();
        }
        Ok(out)
    }
}

impl<S: AsyncWrite + Unpin> DeflateStream<S> {
    /// Writes `out` to the stream until it is empty or the stream would block.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Whether writes are rewritten (the extension agreed, our messages compressed).
    fn rewrites_writes(&self) -> bool {
        matches!(self.phase, Phase::Agreed) && self.compress_sends
    }

    /// Takes `bufs` whole into the rewriting buffers.
    fn poll_take_written(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.out.len() >= MAX_PENDING_OUT_BYTES {
            ready!(self.poll_write_out(cx))?;
        }
        let mut taken = 0;
        for buf in bufs {
            self.written.extend_from_slice(buf);
            taken += buf.len();
        }
        self.rewrite_written()?;
        // Start sending at once; what the stream cannot take now goes with the next write
        // or flush (the library above flushes after every message).
        if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
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

/// The opcode of a data frame's low bits: binary for 0x2, text otherwise (the callers
/// pass only 0x1 and 0x2).
fn data_opcode(bits: u8) -> OpCode {
    if bits == 0x2 {
        OpCode::Binary
    } else {
        OpCode::Text
    }
}

/// Appends a final, unmasked frame with `payload`.
fn push_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    push_header(out, opcode, false, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends the header of a final frame (RSV1 when `compressed`), with the masking key if
/// any.
fn push_header(
    out: &mut BytesMut,
    opcode: OpCode,
    compressed: bool,
    len: usize,
    mask: Option<[u8; 4]>,
) {
    let (header, header_len) = encode_header(opcode, compressed, len, mask);
    out.extend_from_slice(&header[..header_len]);
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("permessage-deflate: {reason}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateStream<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrites_writes() {
            return this.poll_take_written(cx, &[io::IoSlice::new(buf)]);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rewrites_writes() {
            return this.poll_take_written(cx, bufs);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, FlushCompress, FlushDecompress};
    use tokio::io::AsyncReadExt;

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";

    fn deflate(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        compressor
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("compress");
        assert!(out.ends_with(&wshub_ws::SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    async fn read_all(stream: DeflateStream<&[u8]>) -> Vec<u8> {
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

        let out = read_all(DeflateStream::new(&input[..], true, 1 << 20)).await;
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
        push_frame(&mut bytes, data_opcode(opcode), payload);
        out.extend_from_slice(&bytes);
    }

    #[tokio::test]
    async fn without_an_agreement_everything_passes() {
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        input.extend_from_slice(&[0xC1, 0x01, 0xff]);
        assert_eq!(
            read_all(DeflateStream::new(&input[..], true, 1024)).await,
            input
        );
        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0xC1, 0x01, 0xff]);
        // Not offered: an agreement the server made up is not honoured.
        assert_eq!(
            read_all(DeflateStream::new(&input[..], false, 1024)).await,
            input
        );
    }

    /// A masked client frame, as the library above writes it.
    fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        let opcode = OpCode::from_bits(opcode).expect("an opcode");
        push_header(&mut bytes, opcode, false, payload.len(), Some(mask));
        let mut payload = payload.to_vec();
        apply_mask(&mut payload, mask, 0);
        bytes.extend_from_slice(&payload);
        bytes.to_vec()
    }

    /// A stream past a handshake response with `extensions`, and the server's end.
    async fn agreed_stream(
        extensions: &str,
    ) -> (
        DeflateStream<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        use tokio::io::AsyncWriteExt;
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
        );
        far.write_all(head.as_bytes()).await.expect("write head");
        let mut stream = DeflateStream::new(near, true, 1 << 20);
        let mut seen = vec![0; head.len()];
        stream.read_exact(&mut seen).await.expect("read head");
        (stream, far)
    }

    /// The next `count` frames the server's end receives: (first byte, unmasked payload).
    async fn frames_at(far: &mut tokio::io::DuplexStream, count: usize) -> Vec<(u8, Vec<u8>)> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < count {
            if let Some((header_len, len)) = frame_extent(&buf)
                && buf.len() >= header_len + len
            {
                let frame = buf.split_to(header_len + len);
                let mask: [u8; 4] = frame[header_len - 4..header_len].try_into().unwrap();
                let mut payload = frame[header_len..].to_vec();
                apply_mask(&mut payload, mask, 0);
                frames.push((frame[0], payload));
                continue;
            }
            let read = far.read_buf(&mut buf).await.expect("read");
            assert!(read > 0, "stream ended after {} frames", frames.len());
        }
        frames
    }

    fn inflate_with(decompressor: &mut Decompress, compressed: &[u8]) -> Vec<u8> {
        let mut input = compressed.to_vec();
        input.extend_from_slice(&wshub_ws::SYNC_TAIL);
        let mut out = Vec::with_capacity(1 << 16);
        decompressor
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("inflates");
        out
    }

    #[tokio::test]
    async fn own_messages_go_out_compressed_when_worth_it() {
        use tokio::io::AsyncWriteExt;
        let big = b"wshub sends this sentence again and again. ".repeat(20);
        let mask = [0x11, 0x22, 0x33, 0x44];
        for (extensions, takeover) in [
            ("permessage-deflate; client_max_window_bits=10", true),
            ("permessage-deflate; client_no_context_takeover", false),
        ] {
            let (mut stream, mut far) = agreed_stream(extensions).await;
            assert!(stream.compresses_sends(), "{extensions}");
            // A message written in two pieces, a small one, a ping, the big one again.
            let first = masked_frame(0x1, &big, mask);
            let (a, b) = first.split_at(first.len() / 2);
            stream.write_all(a).await.unwrap();
            stream.write_all(b).await.unwrap();
            stream
                .write_all(&masked_frame(0x1, b"tiny", mask))
                .await
                .unwrap();
            stream
                .write_all(&masked_frame(0x9, b"", mask))
                .await
                .unwrap();
            stream
                .write_all(&masked_frame(0x2, &big, mask))
                .await
                .unwrap();
            stream.flush().await.unwrap();

            let frames = frames_at(&mut far, 4).await;
            let mut decompressor = Decompress::new(false);
            assert_eq!(frames[0].0, 0xC1, "text, FIN and RSV1");
            assert!(frames[0].1.len() < big.len() / 4);
            assert_eq!(inflate_with(&mut decompressor, &frames[0].1), big);
            assert_eq!(frames[1], (0x81, b"tiny".to_vec()), "small: as it was");
            assert_eq!(frames[2], (0x89, Vec::new()), "control frames pass");
            assert_eq!(frames[3].0, 0xC2, "binary, FIN and RSV1");
            if takeover {
                // The second copy refers back to the first.
                assert!(frames[3].1.len() < frames[0].1.len());
                assert_eq!(inflate_with(&mut decompressor, &frames[3].1), big);
            } else {
                assert_eq!(frames[3].1, frames[0].1, "no context: the same bytes again");
                assert_eq!(inflate_with(&mut Decompress::new(false), &frames[3].1), big);
            }
        }
    }

    #[tokio::test]
    async fn what_cannot_be_compressed_goes_out_as_it_is() {
        use tokio::io::AsyncWriteExt;
        let mask = [9, 8, 7, 6];
        let big = b"0123456789".repeat(30);
        // An 8-bit window: zlib cannot keep to it, so nothing is compressed.
        let (mut stream, mut far) =
            agreed_stream("permessage-deflate; client_max_window_bits=8").await;
        assert!(!stream.compresses_sends());
        assert!(stream.is_inflating());
        stream
            .write_all(&masked_frame(0x1, &big, mask))
            .await
            .unwrap();
        stream.flush().await.unwrap();
        assert_eq!(frames_at(&mut far, 1).await, [(0x81, big.clone())]);

        // Random bytes do not shrink: sent plain, and the compressor forgets them, so the
        // next compressed message inflates on its own.
        let (mut stream, mut far) = agreed_stream("permessage-deflate").await;
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..400)
            .map(|_| {
                // xorshift64: bytes with nothing for DEFLATE to find.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        stream
            .write_all(&masked_frame(0x2, &noise, mask))
            .await
            .unwrap();
        // A fragmented message passes as it is, fragments and all.
        let mut start = masked_frame(0x1, &big, mask);
        start[0] &= 0x7F;
        stream.write_all(&start).await.unwrap();
        stream
            .write_all(&masked_frame(0x0, &big, mask))
            .await
            .unwrap();
        // The noise twice shrinks (its second half refers to its first); had the compressor
        // kept the noise sent plain, it would refer back to bytes the server never inflated.
        let twice = [noise.clone(), noise.clone()].concat();
        stream
            .write_all(&masked_frame(0x2, &twice, mask))
            .await
            .unwrap();
        stream.flush().await.unwrap();
        let frames = frames_at(&mut far, 4).await;
        assert_eq!(frames[0], (0x82, noise));
        assert_eq!(frames[1], (0x01, big.clone()));
        assert_eq!(frames[2], (0x80, big.clone()));
        assert_eq!(frames[3].0, 0xC2);
        assert!(frames[3].1.len() < twice.len());
        assert_eq!(
            inflate_with(&mut Decompress::new(false), &frames[3].1),
            twice
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
        let mut stream = DeflateStream::new(&input[..], true, 64 * 1024);
        let mut out = Vec::new();
        let error = stream
            .read_to_end(&mut out)
            .await
            .expect_err("over the limit");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0xC1, 0x05, 0xff, 0xff, 0xff, 0xff, 0x12]);
        let mut stream = DeflateStream::new(&input[..], true, 64 * 1024);
        assert!(stream.read_to_end(&mut out).await.is_err());
    }
}
