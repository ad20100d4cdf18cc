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
use wshub_ws::OpCode;

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
    let mut opcode = OpCode::Text;
    loop {
        while let Some((fin, op, payload, used)) = parse_frame(&buf)? {
            match op {
                OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                    if op != OpCode::Continuation {
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
                OpCode::Close => return Ok(()),
                OpCode::Ping | OpCode::Pong => {}
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
type Frame = (bool, OpCode, Vec<u8>, usize);

fn parse_frame(buf: &[u8]) -> std::io::Result<Option<Frame>> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidData);
    // RSV1 allowed: the floor passes payloads on without looking at them.
    let Some(header) = wshub_ws::parse_client_header(buf, true).map_err(invalid)? else {
        return Ok(None);
    };
    if header.payload_len > MAX_MESSAGE {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let end = header.header_len + header.payload_len;
    if buf.len() < end {
        return Ok(None);
    }
    let mut payload = buf[header.header_len..end].to_vec();
    wshub_ws::apply_mask(&mut payload, header.mask, 0);
    Ok(Some((header.fin, header.opcode, payload, end)))
}

/// Encodes the message once and writes it to every client with one non-blocking `write`;
/// a client that cannot take the whole frame at once is dropped.
fn broadcast(opcode: OpCode, payload: &[u8], clients: &Clients) {
    let (header, header_len) = wshub_ws::encode_header(opcode, false, payload.len(), None);
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    clients
        .borrow_mut()
        .retain(|_, writer| matches!(writer.try_write(&frame), Ok(n) if n == frame.len()));
}
