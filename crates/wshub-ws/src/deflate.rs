//! permessage-deflate's per-message work (RFC 7692 §7.2): compress a message ending in a
//! sync flush and drop the flush's 4-byte tail; put the tail back and inflate a message,
//! never producing more than a given number of bytes, however small the input (no
//! decompression bombs). The negotiation, and which (de)compressor keeps which context,
//! are each endpoint's own.

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

/// The bytes a sync flush ends with, removed from each compressed message by its sender and
/// put back by its receiver before inflating it (RFC 7692 §7.2.1, §7.2.2).
pub const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A message could not be compressed.
#[derive(Debug, thiserror::Error)]
pub enum DeflateError {
    /// The compressor failed.
    #[error("compressing a message: {0}")]
    Compress(#[from] flate2::CompressError),
    /// The output did not end with a sync flush, so it cannot be sent as RFC 7692 says.
    #[error("compressed message does not end with a sync flush")]
    NoSyncFlush,
}

/// A compressed message could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the limit; `len` is how far inflating got (just over it).
    #[error("inflated message over the limit of {max} bytes")]
    TooLarge {
        /// The bytes inflated when the limit was passed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// It is not valid DEFLATE data (or refers back beyond the window).
    #[error("compressed message does not inflate{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Invalid(Option<flate2::DecompressError>),
}

/// Compresses one message with `compressor` and a sync flush, and drops the flush's tail
/// (RFC 7692 §7.2.1). The compressor keeps its context (the earlier messages) unless the
/// caller resets it; a raw DEFLATE compressor (no zlib header) is what the extension uses.
pub fn deflate_message(compressor: &mut Compress, payload: &[u8]) -> Result<Vec<u8>, DeflateError> {
    let start = compressor.total_in();
    let consumed = |compressor: &Compress| {
        usize::try_from(compressor.total_in() - start).unwrap_or(usize::MAX)
    };
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let rest = &payload[consumed(compressor).min(payload.len())..];
        compressor.compress_vec(rest, &mut out, FlushCompress::Sync)?;
        // A sync flush is complete once all input is in and it returns with room to spare.
        if consumed(compressor) >= payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&SYNC_TAIL) {
        return Err(DeflateError::NoSyncFlush);
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    Ok(out)
}

/// Inflates one whole compressed message followed by the sync flush's tail (RFC 7692
/// §7.2.2) with `decompressor`; more than `max_bytes` of output fails with
/// [`InflateError::TooLarge`]. The output buffer grows in steps and never holds more than
/// one byte past the limit.
///
/// A message may end the DEFLATE stream with a final block (RFC 7692 §7.2.3.4 does not
/// forbid it): then nothing after it belongs to this context and the decompressor is reset
/// for the next message. Otherwise it keeps its context (for context takeover) unless the
/// caller resets it.
pub fn inflate_message(
    decompressor: &mut Decompress,
    compressed: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, InflateError> {
    let limit = max_bytes.saturating_add(1);
    // Not `clamp(64, limit)`: that panics for a limit under 63 bytes.
    let mut out: Vec<u8> =
        Vec::with_capacity(compressed.len().saturating_mul(3).max(64).min(limit));
    for part in [compressed, &SYNC_TAIL[..]] {
        let start = decompressor.total_in();
        loop {
            if out.len() == out.capacity() {
                // Double, by at least 1 KiB, but never past one byte over the limit:
                // enough to notice it.
                let room = out.len().max(1024).min(limit - out.len().min(max_bytes));
                out.reserve_exact(room.max(1));
            }
            let before = (decompressor.total_in(), out.len());
            let consumed = usize::try_from(decompressor.total_in() - start).unwrap_or(usize::MAX);
            let status = decompressor
                .decompress_vec(
                    &part[consumed.min(part.len())..],
                    &mut out,
                    FlushDecompress::Sync,
                )
                .map_err(|e| InflateError::Invalid(Some(e)))?;
            if out.len() > max_bytes {
                return Err(InflateError::TooLarge {
                    len: out.len(),
                    max: max_bytes,
                });
            }
            if status == Status::StreamEnd {
                decompressor.reset(false);
                return Ok(out);
            }
            let consumed = usize::try_from(decompressor.total_in() - start).unwrap_or(usize::MAX);
            if consumed >= part.len() && out.len() < out.capacity() {
                break;
            }
            if (decompressor.total_in(), out.len()) == before && out.len() < out.capacity() {
                // No progress with input and room left: the data is broken.
                return Err(InflateError::Invalid(None));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressor() -> Compress {
        Compress::new_with_window_bits(flate2::Compression::new(6), false, 15)
    }

    fn decompressor() -> Decompress {
        Decompress::new_with_window_bits(false, 15)
    }

    #[test]
    fn messages_round_trip_with_context() {
        let message = "a fairly long message that repeats itself across messages".repeat(4);
        let mut compressor = compressor();
        let first = deflate_message(&mut compressor, message.as_bytes()).expect("compresses");
        let second = deflate_message(&mut compressor, message.as_bytes()).expect("compresses");
        assert!(!first.ends_with(&SYNC_TAIL));
        assert!(second.len() < first.len() / 2, "refers back to the first");
        let mut decompressor = decompressor();
        for compressed in [&first, &second] {
            let out = inflate_message(&mut decompressor, compressed, 1 << 20).expect("inflates");
            assert_eq!(out, message.as_bytes());
        }
    }

    #[test]
    fn a_message_of_exactly_the_limit_passes_and_one_more_byte_fails() {
        let message = b"0123456789abcdef".repeat(200);
        let compressed = deflate_message(&mut compressor(), &message).expect("compresses");
        let out = inflate_message(&mut decompressor(), &compressed, message.len()).expect("fits");
        assert_eq!(out, message);
        assert!(matches!(
            inflate_message(&mut decompressor(), &compressed, message.len() - 1),
            Err(InflateError::TooLarge { len, max }) if len == message.len() && max == message.len() - 1
        ));
    }

    /// The two copies this loop replaces each panicked for some limits, through
    /// `Ord::clamp` with a minimum over its maximum: the Rust client's grew its buffer
    /// with `len.clamp(1024, limit - len)`, which panics once fewer than 1024 bytes are
    /// left below the limit (a server's message inflating to just over the client's
    /// limit panicked instead of failing), and the library's sized its first buffer with
    /// `clamp(64, limit)`, which panics for a limit under 63 bytes. Every limit must give
    /// a clean error (or the message).
    #[test]
    fn no_limit_panics_near_the_end_of_the_buffer() {
        let message = b"hello hello hello hello ".repeat(400);
        let compressed = deflate_message(&mut compressor(), &message).expect("compresses");
        for max in (0..64).chain((64..message.len() + 2048).step_by(97)) {
            match inflate_message(&mut decompressor(), &compressed, max) {
                Ok(out) => assert_eq!(out, message, "{max}"),
                Err(InflateError::TooLarge { len, .. }) => {
                    assert!(max < message.len() && len == max + 1, "{max}: {len}");
                }
                Err(e) => panic!("{max}: {e}"),
            }
        }
    }

    #[test]
    fn bombs_are_bounded_and_garbage_rejected() {
        let zeros = vec![0_u8; 1 << 20];
        let mut best = Compress::new_with_window_bits(flate2::Compression::new(9), false, 15);
        let bomb = deflate_message(&mut best, &zeros).expect("compresses");
        assert!(bomb.len() < 2048);
        assert!(matches!(
            inflate_message(&mut decompressor(), &bomb, 64 * 1024),
            Err(InflateError::TooLarge { max: 65536, .. })
        ));
        assert!(matches!(
            inflate_message(&mut decompressor(), &[0xff, 0xff, 0xff, 0xff, 0x12], 1024),
            Err(InflateError::Invalid(_))
        ));
    }

    #[test]
    fn a_final_block_ends_the_context() {
        // A sender that finishes its stream per message (BFINAL set) rather than flushing.
        let message = b"finished stream finished stream".repeat(8);
        let mut compressor = compressor();
        let mut compressed = Vec::with_capacity(1024);
        compressor
            .compress_vec(&message, &mut compressed, FlushCompress::Finish)
            .expect("compresses");
        let mut decompressor = decompressor();
        for _ in 0..2 {
            let out = inflate_message(&mut decompressor, &compressed, 1 << 20).expect("inflates");
            assert_eq!(out, message);
        }
    }
}
