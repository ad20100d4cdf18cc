//! The only module that names the WebSocket protocol crate (tokio-websockets): frames in,
//! frames out, over either the raw TCP stream or hyper's upgraded connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_websockets::{Limits, WebSocketStream, proto::ProtocolError};

use crate::{CloseCode, Error, Message, MessageKind, close::truncate_reason};

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
            Ok(parts) => Io::Tcp(parts.read_buf, parts.io.into_inner()),
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
    /// A complete text or binary message (fragments already joined, UTF-8 checked).
    Message(Message),
    /// A ping; the transport has already queued the pong (RFC 6455 §5.5.2).
    Ping,
    /// A pong.
    Pong,
    /// A close frame with its code and reason; the transport queues the reply itself.
    Close(Option<(u16, String)>),
}

/// A server-side WebSocket connection.
#[derive(Debug)]
pub(crate) struct Transport {
    ws: WebSocketStream<Io>,
}

impl Transport {
    /// Speaks WebSocket (as the server) over an upgraded stream.
    pub(crate) fn server(io: Io, max_message_bytes: usize) -> Self {
        let ws = tokio_websockets::ServerBuilder::new()
            .limits(Limits::default().max_payload_len(Some(max_message_bytes)))
            .serve(io);
        Self { ws }
    }

    /// Polls for the next frame. After an error, keep polling: the transport flushes the
    /// close frame that answers it, then returns `None`.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming, Error>>> {
        let frame = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(convert_error(e)))),
            Some(Ok(frame)) => frame,
        };
        let incoming = if frame.is_text() {
            Incoming::Message(Message::from_validated(
                MessageKind::Text,
                Bytes::from(frame.into_payload()),
            ))
        } else if frame.is_binary() {
            Incoming::Message(Message::from_validated(
                MessageKind::Binary,
                Bytes::from(frame.into_payload()),
            ))
        } else if frame.is_ping() {
            Incoming::Ping
        } else if frame.is_pong() {
            Incoming::Pong
        } else {
            Incoming::Close(
                frame
                    .as_close()
                    .map(|(code, reason)| (u16::from(code), reason.to_owned())),
            )
        };
        Poll::Ready(Some(Ok(incoming)))
    }

    /// Queues a data message for the next flush. Never blocks and never copies the payload.
    pub(crate) fn queue(&mut self, message: Message) -> Result<(), Error> {
        let kind = message.kind();
        let payload = message.into_bytes();
        let frame = match kind {
            MessageKind::Text => tokio_websockets::Message::text(payload),
            MessageKind::Binary => tokio_websockets::Message::binary(payload),
        };
        Pin::new(&mut self.ws)
            .start_send(frame)
            .map_err(convert_error)
    }

    /// Queues a ping with an empty payload.
    pub(crate) fn queue_ping(&mut self) -> Result<(), Error> {
        Pin::new(&mut self.ws)
            .start_send(tokio_websockets::Message::ping(Bytes::new()))
            .map_err(convert_error)
    }

    /// Queues a close frame.
    pub(crate) fn queue_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        // CloseCode only holds codes valid on the wire, so the protocol crate accepts it.
        let code = tokio_websockets::CloseCode::try_from(code.as_u16())
            .map_err(|_| Error::Protocol(format!("close code {code} cannot be sent")))?;
        let frame = tokio_websockets::Message::close(Some(code), truncate_reason(reason));
        Pin::new(&mut self.ws)
            .start_send(frame)
            .map_err(convert_error)
    }

    /// Writes everything queued, with vectored writes.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(convert_error)
    }
}

fn convert_error(error: tokio_websockets::Error) -> Error {
    match error {
        tokio_websockets::Error::Io(e) => Error::Io(e),
        tokio_websockets::Error::AlreadyClosed => Error::ConnectionClosed,
        tokio_websockets::Error::PayloadTooLong { len, max_len } => {
            Error::MessageTooLarge { len, max: max_len }
        }
        tokio_websockets::Error::Protocol(ProtocolError::InvalidUtf8) => Error::InvalidUtf8,
        tokio_websockets::Error::Protocol(e) => Error::Protocol(e.to_string()),
        other => Error::Protocol(other.to_string()),
    }
}
