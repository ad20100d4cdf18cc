//! `hub-floor`: the least work a WebSocket hub can do per delivery through the kernel's TCP
//! stack, to measure what no user-space design can go below on this machine.
//!
//! Every text message from any client goes to every connected client, as in the peers of
//! `benches/peers`, but the broadcast is one loop, on the task that read the message, of one
//! non-blocking `write` of the same pre-encoded frame per client: no queue, no task woken per
//! client, no copy, one thread. It is not a server anyone should run: a client whose socket
//! buffer is full is disconnected on the spot (nothing is queued), control frames are ignored
//! but close, and nothing is validated beyond what framing needs. `wshub-bench` reports any
//! such disconnection as lost messages, so a run that loses nothing is a fair floor.
//!
//! Usage: `hub-floor 127.0.0.1:8080` serves `ws://127.0.0.1:8080/ws` (any path).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// The write halves of every open connection, by connection number.
type Clients = Rc<RefCell<HashMap<u64, OwnedWriteHalf>>>;

/// The GUID of RFC 6455 section 1.3, appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Messages bigger than this close the connection.
const MAX_MESSAGE: usize = 1 << 20;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("hub-floor listening on ws://{addr}/ws");
        let clients: Clients = Rc::default();
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            next_id += 1;
            tokio::task::spawn_local(connection(next_id, stream, clients.clone()));
        }
    })
}

/// Serves one connection: handshake, then read frames until close or error.
async fn connection(id: u64, mut stream: TcpStream, clients: Clients) {
    let _ = stream.set_nodelay(true);
    let Ok(leftover) = handshake(&mut stream).await else {
        return;
    };
    let (mut reader, writer) = stream.into_split();
    clients.borrow_mut().insert(id, writer);
    let _ = read_frames(&mut reader, leftover, &clients).await;
    clients.borrow_mut().remove(&id);
}

/// Reads the HTTP upgrade request and answers 101; returns bytes read past the request.
async fn handshake(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 16 * 1024 || stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let key = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim().to_owned())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(buf.split_off(end))
}

/// Reads masked client frames; a complete text or binary message is broadcast, a close
/// frame (or end of stream) ends the connection.
async fn read_frames(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    clients: &Clients,
) -> std::io::Result<()> {
    let mut message = Vec::new();
    let mut opcode = 0u8;
    loop {
        while let Some((fin, op, payload, used)) = parse_frame(&buf)? {
            match op {
                0x0..=0x2 => {
                    if op != 0 {
                        opcode = op;
                    }
                    message.extend_from_slice(&payload);
                    if message.len() > MAX_MESSAGE {
                        return Err(std::io::ErrorKind::InvalidData.into());
                    }
                    if fin {
                        broadcast(opcode, &message, clients);
                        message.clear();
                    }
                }
                0x8 => return Ok(()),
                _ => {}
            }
            buf.drain(..used);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// One frame from the front of `buf`, unmasked: (fin, opcode, payload, bytes used), or
/// `None` when more bytes are needed.
type Frame = (bool, u8, Vec<u8>, usize);

fn parse_frame(buf: &[u8]) -> std::io::Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(bytes)).unwrap_or(usize::MAX),
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_MESSAGE || !masked {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ mask[i % 4])
        .collect();
    Ok(Some((fin, opcode, payload, at + len)))
}

/// Encodes the message once and writes it to every client with one non-blocking `write`;
/// a client that cannot take the whole frame at once is dropped.
fn broadcast(opcode: u8, payload: &[u8], clients: &Clients) {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    clients
        .borrow_mut()
        .retain(|_, writer| matches!(writer.try_write(&frame), Ok(n) if n == frame.len()));
}
