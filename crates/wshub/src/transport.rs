//! One server-side WebSocket connection over its byte stream (RFC 6455): reads frames and
//! assembles messages, answers pings and closes, and writes queued frames with vectored
//! writes. The framing rules themselves are in `frame`.
//!
//! Written for many mostly idle connections: the read buffer is allocated only while bytes
//! are being read and released as soon as every complete frame in it has been taken, so an
//! idle connection holds no buffer at all; outgoing messages are written straight from
//! their shared payloads, each behind a header of a few bytes.
//!
//! With permessage-deflate (RFC 7692) a compressed message arrives with RSV1 on its first
//! frame; its fragments are joined, then inflated and (for text) validated as a whole.
//! Outgoing messages are compressed when queued, unless a broadcast already did it once for
//! every recipient (`deflate`).

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use wshub_ws::{Header, MAX_HEADER_LEN, OpCode};

use crate::{
    CloseCode, Compression, Error, Message, MessageKind,
    close::truncate_reason,
    deflate::{self, Agreed, Inflater},
    frame::{self, Utf8Validator},
};

/// The smallest read buffer allocated when bytes arrive.
const READ_CHUNK_BYTES: usize = 4096;
/// The most frames gathered into one vectored write (two slices each).
const FRAMES_PER_WRITE: usize = 32;
/// Frames with payloads up to this size are copied into one buffer per write.
const COALESCE_PAYLOAD_BYTES: usize = 2048;
/// About how many bytes one coalesced write carries.
const COALESCE_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    /// The buffer small frames are copied into for one write; one per worker thread.
    static COALESCE_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(COALESCE_BUFFER_BYTES + 16 * 1024));
}

/// The byte stream under a WebSocket connection.
///
/// After the HTTP upgrade we take the `TcpStream` back out of hyper when we can, which
/// saves hyper's boxed wrapper and a layer of indirection on every read and write. Bytes
/// hyper had already read past the handshake (a client may send its first frames right
/// behind the request) are kept and read first. Other servers' streams stay in hyper's
/// [`Upgraded`].
#[derive(Debug)]
pub(crate) enum Io {
    /// The accepted TCP stream itself, after any bytes hyper read ahead.
    Tcp(Bytes, TcpStream),
    /// Hyper's upgraded connection.
    Upgraded(TokioIo<Upgraded>),
}

impl Io {
    /// Unwraps hyper's upgraded connection down to the TCP stream.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> Self {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // An empty `read_buf` still shares hyper's whole read buffer (8 KiB or more,
                // its pages touched by the request headers); let it go.
                let read_ahead = if parts.read_buf.is_empty() {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(&parts.read_buf)
                };
                Io::Tcp(read_ahead, parts.io.into_inner())
            }
            Err(upgraded) => Io::Upgraded(TokioIo::new(upgraded)),
        }
    }

    /// The TCP stream, when we hold it directly.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Io::Tcp(_, stream) => Some(stream),
            Io::Upgraded(_) => None,
        }
    }
}

impl Io {
    fn poll_write_vectored_pinned(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write_vectored(cx, bufs)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(read_ahead, s) => {
                if read_ahead.is_empty() {
                    return Pin::new(s).poll_read(cx, buf);
                }
                let n = read_ahead.len().min(buf.remaining());
                buf.put_slice(&read_ahead.split_to(n));
                Poll::Ready(Ok(()))
            }
            Io::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(_, s) => Pin::new(s).poll_write(cx, buf),
            Io::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(_, s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Upgraded(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(_, s) => s.is_write_vectored(),
            Io::Upgraded(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(_, s) => Pin::new(s).poll_flush(cx),
            Io::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(_, s) => Pin::new(s).poll_shutdown(cx),
            Io::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One frame received from the peer.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A complete text or binary message (fragments joined, UTF-8 checked).
    Message(Message),
    /// A ping; the pong is already queued (RFC 6455 §5.5.2).
    Ping,
    /// A pong.
    Pong,
    /// A close frame with its code and reason; the reply is already queued.
    Close(Option<(u16, String)>),
}

/// A frame waiting to be written.
#[derive(Debug)]
enum Outgoing {
    Message(Message),
    /// A data message's payload compressed (sent with RSV1).
    Deflated(OpCode, Bytes),
    Control(OpCode, Bytes),
}

impl Outgoing {
    /// The opcode, whether the payload is compressed, and the payload.
    fn parts(&self) -> (OpCode, bool, &[u8]) {
        match self {
            Outgoing::Message(m) => (opcode_of(m.kind()), false, m.as_bytes()),
            Outgoing::Deflated(opcode, payload) => (*opcode, true, payload),
            Outgoing::Control(opcode, payload) => (*opcode, false, payload),
        }
    }

    fn header(&self) -> ([u8; MAX_HEADER_LEN], usize) {
        let (opcode, compressed, payload) = self.parts();
        wshub_ws::encode_header(opcode, compressed, payload.len(), None)
    }
}

fn opcode_of(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}

/// permessage-deflate on one connection.
#[derive(Debug)]
struct Deflate {
    inflater: Inflater,
    level: u32,
    min_message_bytes: usize,
}

/// A message being assembled from fragments.
#[derive(Debug)]
struct Assembly {
    kind: MessageKind,
    /// The message is compressed (RSV1 on its first frame).
    compressed: bool,
    data: BytesMut,
}

/// A server-side WebSocket connection. `S` is its byte stream; parsing and queuing need
/// none, so the fuzz targets run them with `()`.
#[derive(Debug)]
pub(crate) struct Transport<S = Io> {
    io: S,
    max_message_bytes: usize,
    /// Received bytes not yet taken; no allocation while the connection is idle.
    read_buf: BytesMut,
    /// The header of the frame whose payload is arriving, and how much of that payload is
    /// already unmasked (and, for text, validated) at the start of `read_buf`.
    current: Option<(Header, usize)>,
    assembly: Option<Assembly>,
    utf8: Utf8Validator,
    out: VecDeque<Outgoing>,
    /// Bytes of the front frame (header included) already written.
    out_written: usize,
    close_sent: bool,
    /// The peer's close arrived, or a protocol error was answered: only flushing is left.
    finishing: bool,
    /// Set when permessage-deflate was negotiated; boxed, so it costs others one pointer.
    deflate: Option<Box<Deflate>>,
}

impl<S> Transport<S> {
    /// Speaks WebSocket (as the server) over an upgraded stream.
    pub(crate) fn server(io: S, max_message_bytes: usize) -> Self {
        Self {
            io,
            max_message_bytes,
            read_buf: BytesMut::new(),
            current: None,
            assembly: None,
            utf8: Utf8Validator::default(),
            out: VecDeque::new(),
            out_written: 0,
            close_sent: false,
            finishing: false,
            deflate: None,
        }
    }

    /// Turns permessage-deflate on, as negotiated in the handshake.
    pub(crate) fn with_deflate(mut self, agreed: Agreed, config: &Compression) -> Self {
        self.deflate = Some(Box::new(Deflate {
            inflater: Inflater::new(agreed),
            level: config.level,
            min_message_bytes: config.min_message_bytes,
        }));
        self
    }
}

impl Transport {
    /// Polls for the next frame. After an error, or after the peer's close, keep polling:
    /// the transport flushes the close frame that answers it, then returns `None`.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming, Error>>> {
        if self.finishing {
            return match ready!(self.poll_flush(cx)) {
                Ok(()) | Err(_) => Poll::Ready(None),
            };
        }
        loop {
            match self.next_frame() {
                Ok(Some(Incoming::Ping)) => {
                    // Answer at once while the socket takes it: pongs then collapse into
                    // the latest only when the peer does not read (see `take_frame`).
                    let _ = self.poll_flush(cx);
                    return Poll::Ready(Some(Ok(Incoming::Ping)));
                }
                Ok(Some(incoming)) => return Poll::Ready(Some(Ok(incoming))),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(self.fail(error)))),
            }
            // Opportunistically push out what is queued (pongs) while waiting for input.
            if !self.out.is_empty() {
                let _ = self.poll_flush(cx);
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.read_buf = BytesMut::new();
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(Error::Io(error)))),
            }
        }
    }

    /// Reads what the socket has into the read buffer, allocating it only now.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let wanted = match &self.current {
            Some((header, _)) => header.payload_len.saturating_sub(self.read_buf.len()),
            None => 0,
        };
        let reserve = |buf: &mut BytesMut| {
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(wanted.clamp(READ_CHUNK_BYTES, 64 * 1024));
            }
        };
        match &mut self.io {
            Io::Tcp(read_ahead, stream) => {
                if !read_ahead.is_empty() {
                    let n = read_ahead.len();
                    self.read_buf.extend_from_slice(read_ahead);
                    *read_ahead = Bytes::new();
                    return Poll::Ready(Ok(n));
                }
                loop {
                    // Wait for readiness first, so an idle connection holds no buffer.
                    ready!(stream.poll_read_ready(cx))?;
                    reserve(&mut self.read_buf);
                    match stream.try_read_buf(&mut self.read_buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if self.read_buf.is_empty() {
                                self.read_buf = BytesMut::new();
                            }
                        }
                        result => return Poll::Ready(result),
                    }
                }
            }
            Io::Upgraded(stream) => {
                // No readiness to wait on here (TLS, or another server's stream): read
                // into the stack and copy what came, so an idle connection still holds no
                // buffer. The copy is small beside decryption.
                let mut chunk = [0_u8; READ_CHUNK_BYTES];
                let mut buf = ReadBuf::new(&mut chunk);
                ready!(Pin::new(stream).poll_read(cx, &mut buf))?;
                let filled = buf.filled();
                reserve(&mut self.read_buf);
                self.read_buf.extend_from_slice(filled);
                Poll::Ready(Ok(filled.len()))
            }
        }
    }
}

/// Parsing, assembly and queuing: no I/O here.
impl<S> Transport<S> {
    /// Takes `bytes` as if read from the socket, then returns the next frame as
    /// [`poll_next`](Transport::poll_next) would, without I/O (for `crate::fuzzing`).
    pub(crate) fn receive(&mut self, bytes: &[u8]) -> Result<Option<Incoming>, Error> {
        if self.finishing {
            return Ok(None);
        }
        self.read_buf.extend_from_slice(bytes);
        self.next_frame().map_err(|error| self.fail(error))
    }

    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    /// Takes the next complete frame out of the read buffer, handling control frames and
    /// assembling fragments; `Ok(None)` when more bytes are needed.
    fn next_frame(&mut self) -> Result<Option<Incoming>, Error> {
        loop {
            let (header, processed) = match self.current {
                Some(current) => current,
                None => {
                    let Some(header) =
                        wshub_ws::parse_client_header(&self.read_buf, self.deflate.is_some())?
                    else {
                        self.release_read_buf();
                        return Ok(None);
                    };
                    self.check_sequence(&header)?;
                    self.read_buf.advance(header.header_len);
                    (header, 0)
                }
            };
            let continued = self
                .assembly
                .as_ref()
                .filter(|_| header.opcode == OpCode::Continuation);
            let is_text = header.opcode == OpCode::Text
                || continued.is_some_and(|a| a.kind == MessageKind::Text);
            // A compressed message is validated once inflated.
            let compressed = header.rsv1 || continued.is_some_and(|a| a.compressed);
            let available = self.read_buf.len().min(header.payload_len);
            // An empty frame is checked too: an empty final fragment still ends the
            // message, and with it any UTF-8 sequence the fragment before left open.
            if available > processed || header.payload_len == 0 {
                let fresh = &mut self.read_buf[processed..available];
                wshub_ws::apply_mask(fresh, header.mask, processed);
                if is_text && !compressed {
                    let last = header.fin && available == header.payload_len;
                    self.utf8.feed(fresh, last)?;
                }
            }
            if available < header.payload_len {
                self.current = Some((header, available));
                return Ok(None);
            }
            self.current = None;
            let payload = self.read_buf.split_to(header.payload_len);
            self.release_read_buf();
            if let Some(incoming) = self.take_frame(header, payload, is_text, compressed)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Checks that a frame may come now, before its payload is read.
    fn check_sequence(&self, header: &Header) -> Result<(), Error> {
        let assembled = self.assembly.as_ref().map_or(0, |a| a.data.len());
        match header.opcode {
            OpCode::Continuation if self.assembly.is_none() => Err(Error::Protocol(
                "continuation frame without a message to continue".into(),
            )),
            OpCode::Text | OpCode::Binary if self.assembly.is_some() => Err(Error::Protocol(
                "new message before the previous one was finished".into(),
            )),
            opcode if !opcode.is_control() => {
                let len = assembled.saturating_add(header.payload_len);
                if len > self.max_message_bytes {
                    Err(Error::MessageTooLarge {
                        len,
                        max: self.max_message_bytes,
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn take_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
        is_text: bool,
        compressed: bool,
    ) -> Result<Option<Incoming>, Error> {
        let kind = if is_text {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if header.fin {
                    self.utf8 = Utf8Validator::default();
                    let payload = self.finish_message(kind, compressed, payload)?;
                    return Ok(Some(Incoming::Message(Message::from_validated(
                        kind, payload,
                    ))));
                }
                self.assembly = Some(Assembly {
                    kind,
                    compressed,
                    data: payload,
                });
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(assembly) = self.assembly.as_mut() else {
                    return Err(Error::Protocol("continuation without a message".into()));
                };
                assembly.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let Some(assembly) = self.assembly.take() else {
                    return Ok(None);
                };
                self.utf8 = Utf8Validator::default();
                let payload =
                    self.finish_message(assembly.kind, assembly.compressed, assembly.data)?;
                Ok(Some(Incoming::Message(Message::from_validated(
                    assembly.kind,
                    payload,
                ))))
            }
            OpCode::Ping => {
                if !self.close_sent {
                    // At most one pong waits: a newer ping replaces the answer to an older
                    // one not yet sent (RFC 6455 §5.5.3), so a ping flood from a peer that
                    // does not read cannot grow the write queue.
                    let pong = Outgoing::Control(OpCode::Pong, payload.freeze());
                    // The front frame may be partly written already; it stays as it is.
                    let started = usize::from(self.out_written > 0);
                    match self
                        .out
                        .iter_mut()
                        .skip(started)
                        .find(|f| matches!(f, Outgoing::Control(OpCode::Pong, _)))
                    {
                        Some(waiting) => *waiting = pong,
                        None => self.out.push_back(pong),
                    }
                }
                Ok(Some(Incoming::Ping))
            }
            OpCode::Pong => Ok(Some(Incoming::Pong)),
            OpCode::Close => {
                let close = frame::parse_close(&payload)?;
                if !self.close_sent {
                    // Echo the code (RFC 6455 §5.5.1); an empty close gets an empty one.
                    let echo = match &close {
                        Some((code, _)) => Bytes::copy_from_slice(&code.to_be_bytes()),
                        None => Bytes::new(),
                    };
                    self.out.push_back(Outgoing::Control(OpCode::Close, echo));
                    self.close_sent = true;
                }
                self.finishing = true;
                self.read_buf = BytesMut::new();
                Ok(Some(Incoming::Close(close)))
            }
        }
    }

    /// A complete message's payload: inflated (and for text, validated) when compressed.
    fn finish_message(
        &mut self,
        kind: MessageKind,
        compressed: bool,
        payload: BytesMut,
    ) -> Result<Bytes, Error> {
        if !compressed {
            return Ok(payload.freeze());
        }
        let Some(deflate) = self.deflate.as_mut() else {
            return Err(Error::Protocol(
                "compressed message without permessage-deflate".into(),
            ));
        };
        let inflated = deflate.inflater.inflate(&payload, self.max_message_bytes)?;
        if kind == MessageKind::Text && std::str::from_utf8(&inflated).is_err() {
            return Err(Error::InvalidUtf8);
        }
        Ok(Bytes::from(inflated))
    }

    /// Answers a protocol violation with the matching close frame and stops reading.
    fn fail(&mut self, error: Error) -> Error {
        if !self.close_sent
            && let Some(code) = error.close_code()
        {
            let reason = error.to_string();
            self.push_close(code, &reason);
        }
        self.finishing = true;
        self.read_buf = BytesMut::new();
        self.assembly = None;
        self.current = None;
        error
    }

    fn push_close(&mut self, code: CloseCode, reason: &str) {
        let reason = truncate_reason(reason);
        let mut payload = BytesMut::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.as_u16().to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        self.out
            .push_back(Outgoing::Control(OpCode::Close, payload.freeze()));
        self.close_sent = true;
    }

    /// Makes room for `additional` frames in the write queue in one allocation.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// Queues a data message for the next flush. Never blocks and never copies the payload.
    pub(crate) fn queue(&mut self, message: Message) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::ConnectionClosed);
        }
        let frame = match &self.deflate {
            Some(deflate) if message.len() >= deflate.min_message_bytes => {
                let window = deflate.inflater.agreed().server_window_bits;
                let compressed = if window == 15 {
                    message.deflated(deflate.level).cloned()
                } else {
                    deflate::compress(message.as_bytes(), window, deflate.level)
                };
                match compressed {
                    Some(payload) => Outgoing::Deflated(opcode_of(message.kind()), payload),
                    None => Outgoing::Message(message),
                }
            }
            _ => Outgoing::Message(message),
        };
        self.out.push_back(frame);
        Ok(())
    }

    /// Queues a ping with an empty payload.
    pub(crate) fn queue_ping(&mut self) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::ConnectionClosed);
        }
        self.out
            .push_back(Outgoing::Control(OpCode::Ping, Bytes::new()));
        Ok(())
    }

    /// Queues a close frame; the reason is cut to what a close frame can carry.
    pub(crate) fn queue_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::ConnectionClosed);
        }
        self.push_close(code, reason);
        Ok(())
    }
}

impl Transport {
    /// Writes everything queued: runs of small frames copied into one contiguous buffer
    /// (a per-thread scratch buffer, so no connection keeps one), larger frames with
    /// vectored writes straight from their shared payloads.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.out.is_empty() {
            if let Some(result) = self.poll_write_coalesced(cx) {
                let written = match ready!(result) {
                    Ok(0) => return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into()))),
                    Ok(n) => n,
                    Err(e) => return Poll::Ready(Err(Error::Io(e))),
                };
                self.advance_out(written);
                continue;
            }
            let mut headers = [([0_u8; MAX_HEADER_LEN], 0_usize); FRAMES_PER_WRITE];
            for (slot, frame) in headers.iter_mut().zip(&self.out) {
                *slot = frame.header();
            }
            let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 2];
            let mut count = 0;
            let mut skip = self.out_written;
            for ((header, header_len), frame) in headers.iter().zip(&self.out) {
                let (_, _, payload) = frame.parts();
                for part in [&header[..*header_len], payload] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    slices[count] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    count += 1;
                }
            }
            let written = match ready!(self.io.poll_write_vectored_pinned(cx, &slices[..count])) {
                Ok(0) => return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            };
            self.advance_out(written);
        }
        if self.out.capacity() > 0 {
            // Everything is written: give the queue's memory back while idle.
            self.out = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the run of small frames at the front of the queue as one contiguous buffer,
    /// or returns `None` when the front frame is large and vectored I/O suits it better.
    /// The kernel handles one buffer of many small frames much faster than as many I/O
    /// vectors, and even a lone small frame costs less as one `send` than as a `writev`
    /// of its header and payload.
    fn poll_write_coalesced(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        let small = |frame: &Outgoing| frame.parts().2.len() <= COALESCE_PAYLOAD_BYTES;
        if !self.out.front().is_some_and(small) {
            return None;
        }
        COALESCE_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let mut skip = self.out_written;
            for frame in self.out.iter().take_while(|f| small(f)) {
                let (_, _, payload) = frame.parts();
                let (header, header_len) = frame.header();
                for part in [&header[..header_len], payload] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    buffer.extend_from_slice(&part[skip..]);
                    skip = 0;
                }
                if buffer.len() >= COALESCE_BUFFER_BYTES {
                    break;
                }
            }
            Some(Pin::new(&mut self.io).poll_write(cx, &buffer))
        })
    }

    /// Drops the frames a write completed and remembers how far into the next it got.
    fn advance_out(&mut self, written: usize) {
        let mut left = self.out_written + written;
        while let Some(front) = self.out.front() {
            let len = front.header().1 + front.parts().2.len();
            if left < len {
                break;
            }
            left -= len;
            self.out.pop_front();
        }
        self.out_written = left;
    }
}
