//! permessage-deflate (RFC 7692): the configuration, the negotiation of an upgrade
//! request's offer, and the compression and decompression of whole messages.
//!
//! The server always answers with `server_no_context_takeover`, which RFC 7692 §7.1.1.1
//! allows whatever the client offered: each message it sends is compressed on its own.
//! That is what lets a broadcast be compressed once and the same bytes go to every
//! connection, and it means no connection holds a compressor: one per thread serves all.
//! What the client sends is inflated with a decompressor of that connection's own, made on
//! its first compressed message, unless `client_no_context_takeover` was agreed (then a
//! per-thread one serves, reset for each message).

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Decompress};
use wshub_ws::{InflateError, deflate_message, inflate_message};

use crate::Error;

/// permessage-deflate settings (RFC 7692). Off unless
/// [`HubConfig::compression`](crate::HubConfig::compression) holds one.
///
/// Compression trades CPU for bandwidth: JSON of a few hundred bytes and more usually
/// shrinks three to ten times. The server never keeps compression context between the
/// messages it sends (`server_no_context_takeover`), so broadcasts are compressed once for
/// every recipient and no connection holds a compressor. Each connection that sends
/// compressed messages with context takeover holds a decompressor of about 40 KiB (with
/// the default window; see BENCHMARKS.md); agree `client_no_context_takeover` to hold none.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// The DEFLATE level, 0 (store) to 9 (smallest). Default 1: fastest, and most of the
    /// gain for the short messages a hub carries.
    pub level: u32,
    /// Messages shorter than this go uncompressed (the RSV1 bit is per message). Default
    /// 128 bytes. A message whose compressed form is not smaller goes uncompressed too.
    pub min_message_bytes: usize,
    /// Ask clients to compress each message on its own, so that the server keeps no
    /// decompressor per connection (RFC 7692 §7.1.1.2). Default `false`: browsers compress
    /// with context takeover, which compresses better.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window a client may compress with, 9 to 15 (`client_max_window_bits`;
    /// only sent to clients that offer the parameter, as RFC 7692 §7.1.2.2 requires). A
    /// smaller window makes each connection's decompressor smaller. Default 15.
    pub client_max_window_bits: u8,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: 1,
            min_message_bytes: 128,
            client_no_context_takeover: false,
            client_max_window_bits: 15,
        }
    }
}

impl Compression {
    /// Sets [`level`](Self::level) (values over 9 count as 9).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`min_message_bytes`](Self::min_message_bytes).
    pub fn min_message_bytes(mut self, bytes: usize) -> Self {
        self.min_message_bytes = bytes;
        self
    }

    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover).
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits), kept within 9 to 15.
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(9, 15);
        self
    }
}

/// What one connection agreed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The window the server compresses with (9 to 15). An offer of 8 is served with 9:
    /// DEFLATE with a 512-byte window never refers back more than 250 bytes (zlib keeps
    /// `MIN_LOOKAHEAD` bytes of it free), so a 256-byte window inflates it.
    pub(crate) server_window_bits: u8,
    /// The window the client's messages are inflated with.
    pub(crate) client_window_bits: u8,
    /// Each client message is compressed on its own.
    pub(crate) client_no_context_takeover: bool,
}

/// Picks the first acceptable `permessage-deflate` offer among the request's
/// `Sec-WebSocket-Extensions` values and returns what was agreed and the response header's
/// value; `None` when there is no acceptable offer (the connection then runs uncompressed).
/// An offer with an unknown, repeated or malformed parameter is declined (RFC 7692 §7.1).
pub(crate) fn negotiate<'a>(
    config: &Compression,
    header_values: impl IntoIterator<Item = &'a str>,
) -> Option<(Agreed, String)> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| accept_offer(config, offer))
}

fn accept_offer(config: &Compression, offer: &str) -> Option<(Agreed, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits: Option<u8> = None;
    // Outer `Some`: the parameter was offered; inner: with a value.
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !server_no_context_takeover => {
                server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !client_no_context_takeover => {
                client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(value)) if server_max_window_bits.is_none() => {
                server_max_window_bits = Some(window_bits(value)?);
            }
            ("client_max_window_bits", value) if client_max_window_bits.is_none() => {
                let bits = match value {
                    Some(value) => Some(window_bits(value)?),
                    None => None,
                };
                client_max_window_bits = Some(bits);
            }
            _ => return None,
        }
    }

    let client_no_context_takeover =
        client_no_context_takeover || config.client_no_context_takeover;
    let mut response = String::from("permessage-deflate; server_no_context_takeover");
    if client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = server_max_window_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    // The client's window may be limited only if it offered the parameter; its value, if
    // any, is the most the client will use anyway.
    let mut client_window_bits = 15;
    if let Some(offered) = client_max_window_bits {
        let limit = config.client_max_window_bits.clamp(9, 15);
        let bits = offered.map_or(limit, |offered| offered.min(limit));
        if bits < 15 {
            response.push_str(&format!("; client_max_window_bits={bits}"));
            client_window_bits = bits.max(9);
        }
    }
    let agreed = Agreed {
        server_window_bits: server_max_window_bits.unwrap_or(15).max(9),
        client_window_bits,
        client_no_context_takeover,
    };
    Some((agreed, response))
}

/// `"10"` → `10`; a quoted string must be closed (RFC 7230 §3.2.6).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size parameter: 8 to 15, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// Compressors by (window bits, level): a compression keeps no context between
    /// messages, so one per thread serves every connection.
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    /// The decompressor for connections whose client agreed not to keep context.
    static SHARED_INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message on its own (no context from earlier messages) with a window of
/// `window_bits`; `None` when the result is not smaller than the message.
pub(crate) fn compress(payload: &[u8], window_bits: u8, level: u32) -> Option<Bytes> {
    let window_bits = window_bits.clamp(9, 15);
    let level = level.min(9);
    COMPRESSORS.with(|compressors| {
        let mut compressors = compressors.borrow_mut();
        let index = match compressors
            .iter()
            .position(|(bits, lvl, _)| *bits == window_bits && *lvl == level)
        {
            Some(index) => index,
            None => {
                let compressor = Compress::new_with_window_bits(
                    flate2::Compression::new(level),
                    false,
                    window_bits,
                );
                compressors.push((window_bits, level, compressor));
                compressors.len() - 1
            }
        };
        let compressor = &mut compressors[index].2;
        compressor.reset();
        let compressed = deflate_message(compressor, payload).ok()?;
        (compressed.len() < payload.len()).then(|| Bytes::from(compressed))
    })
}

/// One connection's receiving side: inflates the compressed messages its client sends.
#[derive(Debug)]
pub(crate) struct Inflater {
    agreed: Agreed,
    /// The connection's own decompressor when the client keeps context; made on the
    /// first compressed message.
    own: Option<Box<Decompress>>,
}

impl Inflater {
    pub(crate) fn new(agreed: Agreed) -> Self {
        Self { agreed, own: None }
    }

    /// What the connection agreed to.
    pub(crate) fn agreed(&self) -> Agreed {
        self.agreed
    }

    /// Inflates one whole compressed message; more than `max_bytes` of output fails with
    /// [`Error::MessageTooLarge`], however small the input (no decompression bombs).
    pub(crate) fn inflate(
        &mut self,
        compressed: &[u8],
        max_bytes: usize,
    ) -> Result<Vec<u8>, Error> {
        if self.agreed.client_no_context_takeover {
            SHARED_INFLATER.with(|shared| {
                let mut shared = shared.borrow_mut();
                let decompressor =
                    shared.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
                decompressor.reset(false);
                inflate_all(decompressor, compressed, max_bytes)
            })
        } else {
            let bits = self.agreed.client_window_bits;
            let decompressor = self
                .own
                .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, bits)));
            let result = inflate_all(decompressor, compressed, max_bytes);
            if result.is_err() {
                // The connection fails anyway; its context is of no further use.
                self.own = None;
            }
            result
        }
    }
}

/// Inflates one message with the bound of `max_bytes` ([`inflate_message`]), in the
/// library's errors.
fn inflate_all(
    decompressor: &mut Decompress,
    compressed: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, Error> {
    inflate_message(decompressor, compressed, max_bytes).map_err(|error| match error {
        InflateError::TooLarge { len, max } => Error::MessageTooLarge { len, max },
        InflateError::Invalid(_) => Error::InvalidCompressedData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(offer: &str) -> Option<(Agreed, String)> {
        negotiate(&Compression::default(), [offer])
    }

    #[test]
    fn plain_offer_gets_server_no_context_takeover() {
        let (agreed, response) = offer("permessage-deflate").expect("accepted");
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert_eq!(agreed.server_window_bits, 15);
        assert_eq!(agreed.client_window_bits, 15);
        assert!(!agreed.client_no_context_takeover);
    }

    #[test]
    fn browser_offer_is_accepted_with_the_configured_client_window() {
        let config = Compression::default().client_max_window_bits(10);
        let (agreed, response) =
            negotiate(&config, ["permessage-deflate; client_max_window_bits"]).expect("accepted");
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        );
        assert_eq!(agreed.client_window_bits, 10);
        // A default config does not limit the client.
        let (_, response) = offer("permessage-deflate; client_max_window_bits").expect("accepted");
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
    }

    #[test]
    fn parameters_are_echoed_or_honoured() {
        let (agreed, response) =
            offer("permessage-deflate; client_no_context_takeover; server_max_window_bits=\"8\"")
                .expect("accepted");
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8"
        );
        assert_eq!(agreed.server_window_bits, 9);
        assert!(agreed.client_no_context_takeover);
        let forced = Compression::default().client_no_context_takeover(true);
        let (agreed, _) = negotiate(&forced, ["permessage-deflate"]).expect("accepted");
        assert!(agreed.client_no_context_takeover);
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let (agreed, _) = negotiate(
            &Compression::default(),
            ["permessage-deflate; foo, permessage-deflate; server_max_window_bits=12"],
        )
        .expect("second offer taken");
        assert_eq!(agreed.server_window_bits, 12);
    }

    #[test]
    fn compressed_messages_round_trip_with_and_without_context() {
        let text = "{\"room\":\"chat\",\"data\":\"hello hello hello hello hello\"}".repeat(20);
        for bits in [9, 12, 15] {
            let compressed = compress(text.as_bytes(), bits, 1).expect("smaller");
            assert!(compressed.len() < text.len() / 5, "{}", compressed.len());
            assert!(!compressed.ends_with(&wshub_ws::SYNC_TAIL));
            for no_context in [false, true] {
                let mut inflater = Inflater::new(Agreed {
                    server_window_bits: 15,
                    client_window_bits: 15,
                    client_no_context_takeover: no_context,
                });
                for _ in 0..3 {
                    let out = inflater.inflate(&compressed, 1 << 20).expect("inflates");
                    assert_eq!(out, text.as_bytes());
                }
            }
        }
        assert_eq!(compress(b"abc", 15, 1), None, "not smaller: sent as it is");
    }

    #[test]
    fn context_takeover_messages_refer_to_earlier_ones() {
        // A compressor that keeps context (as a browser's does): the second message is
        // mostly a back-reference into the first.
        let mut compressor = Compress::new_with_window_bits(flate2::Compression::new(6), false, 15);
        let message = "a fairly long message that repeats itself across messages".repeat(4);
        let first = deflate_message(&mut compressor, message.as_bytes()).expect("compresses");
        let second = deflate_message(&mut compressor, message.as_bytes()).expect("compresses");
        assert!(second.len() < first.len() / 2);
        let mut inflater = Inflater::new(Agreed {
            server_window_bits: 15,
            client_window_bits: 15,
            client_no_context_takeover: false,
        });
        assert_eq!(
            inflater.inflate(&first, 1 << 20).expect("first"),
            message.as_bytes()
        );
        assert_eq!(
            inflater.inflate(&second, 1 << 20).expect("second"),
            message.as_bytes()
        );
    }

    #[test]
    fn inflating_is_bounded_and_rejects_garbage() {
        let zeros = vec![0_u8; 1 << 20];
        let bomb = compress(&zeros, 15, 9).expect("compresses");
        assert!(bomb.len() < 2048);
        let mut inflater = Inflater::new(Agreed {
            server_window_bits: 15,
            client_window_bits: 15,
            client_no_context_takeover: false,
        });
        assert!(matches!(
            inflater.inflate(&bomb, 64 * 1024),
            Err(Error::MessageTooLarge { max: 65536, .. })
        ));
        let mut inflater = Inflater::new(inflater.agreed());
        assert!(matches!(
            inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0x12], 1024),
            Err(Error::InvalidCompressedData)
        ));
    }
}
