//! History replies cut to size: a `history` reply (protocol or HTTP API) and a recovery
//! replay carry at most so many bytes of messages. The history itself (offsets, epochs,
//! bounds by count, age and bytes) lives in [`wshub_backplane::history`].

use bytes::Bytes;

/// The most bytes of messages one `history` reply (protocol or HTTP API) carries; a longer
/// history is paged: the reply says `"more": true` and a `since` the last message's offset
/// reads on. A quarter of the default send queue bound (4 MiB), so that a client asking
/// for history and not reading cannot make the server hold more than that queue.
pub const MAX_HISTORY_REPLY_BYTES: usize = 1024 * 1024;

/// Cuts `messages` (oldest first) to at most `max_bytes`, always keeping at least one, and
/// says whether it cut any. `keep_newest` drops from the front (a read of the latest
/// messages, or a replay whose oldest part is given up); otherwise from the back (a page
/// read forward from a `since`).
pub fn cut_to_bytes(messages: &mut Vec<Bytes>, max_bytes: usize, keep_newest: bool) -> bool {
    let mut total = 0_usize;
    let fits = |message: &Bytes, total: &mut usize| {
        *total = total.saturating_add(message.len());
        *total <= max_bytes
    };
    let kept = if keep_newest {
        messages
            .iter()
            .rev()
            .take_while(|m| fits(m, &mut total))
            .count()
    } else {
        messages.iter().take_while(|m| fits(m, &mut total)).count()
    }
    .max(1)
    .min(messages.len());
    let cut = kept < messages.len();
    if keep_newest {
        messages.drain(..messages.len() - kept);
    } else {
        messages.truncate(kept);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(sizes: &[usize]) -> Vec<Bytes> {
        sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect()
    }

    #[test]
    fn pages_are_cut_by_bytes_from_the_right_end() {
        let mut forward = frames(&[4, 3, 2, 1]);
        assert!(cut_to_bytes(&mut forward, 7, false));
        assert_eq!(forward, frames(&[4, 3]));
        let mut newest = frames(&[4, 3, 2, 1]);
        assert!(cut_to_bytes(&mut newest, 6, true));
        assert_eq!(newest, frames(&[3, 2, 1]));
        let mut whole = frames(&[1, 2]);
        assert!(!cut_to_bytes(&mut whole, 3, false));
        // One message larger than the limit still goes, alone.
        let mut big = frames(&[10, 1]);
        assert!(cut_to_bytes(&mut big, 5, false));
        assert_eq!(big, frames(&[10]));
        let mut empty = Vec::new();
        assert!(!cut_to_bytes(&mut empty, 5, true));
    }
}
