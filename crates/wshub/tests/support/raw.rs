//! A WebSocket client by hand, for what no client library will send: raw frames with any
//! header bits, handshakes with any extension offer.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::within;

/// A plain upgrade request for `/ws`.
pub const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Opens a WebSocket by hand (raw bytes from here on).
pub async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    raw_websocket_with(addr, UPGRADE).await.0
}

/// Opens a WebSocket by hand with this upgrade request; returns the stream and the
/// response head.
pub async fn raw_websocket_with(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    within("upgrade", stream.write_all(request))
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "response head too long");
        within("101", stream.read_exact(&mut byte))
            .await
            .expect("read");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    (stream, String::from_utf8(head).expect("ASCII head"))
}

/// A client frame: the given first byte (FIN, RSV and opcode), masked payload.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Reads one server frame (never masked): its first byte and its payload.
pub async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0_u8; 2];
    within("frame head", stream.read_exact(&mut head))
        .await
        .expect("frame head");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0_u8; 2];
            within("len", stream.read_exact(&mut b)).await.expect("len");
            usize::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0_u8; 8];
            within("len", stream.read_exact(&mut b)).await.expect("len");
            usize::try_from(u64::from_be_bytes(b)).expect("len")
        }
        n => usize::from(n),
    };
    let mut payload = vec![0_u8; len];
    within("payload", stream.read_exact(&mut payload))
        .await
        .expect("payload");
    (head[0], payload)
}

/// Reads frames until the server's close frame and returns its code.
pub async fn read_close_code(stream: &mut TcpStream) -> u16 {
    for _ in 0..1000 {
        let (first, payload) = read_frame(stream).await;
        if first & 0x0F == 0x8 {
            assert!(payload.len() >= 2, "close without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
    panic!("no close frame within 1000 frames");
}
