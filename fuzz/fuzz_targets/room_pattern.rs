//! Room names and the room pattern matcher of token claims. The input is
//! `pattern \n name`; the matcher must agree with a plain dynamic-programming reference and
//! stay within its O(pattern × name) bound; room validation must agree with its own rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unicode_normalization::UnicodeNormalization;
use wshub_protocol::{RoomName, pattern_matches};

/// The invisible formatting characters a room name may not hold (SECURITY.md's list):
/// zero-width and bidirectional controls.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0x061C | 0x180E | 0xFEFF
    )
}

/// `*` matches any run of bytes, everything else itself: the textbook table.
fn reference(pattern: &[u8], name: &[u8]) -> bool {
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        if p == b'*' {
            let mut any = false;
            for j in 0..=name.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=name.len() {
                next[j] = row[j - 1] && name[j - 1] == p;
            }
        }
        row = next;
    }
    row[name.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, name) = text.split_once('\n').unwrap_or((text, ""));
    if pattern.len() <= 512 && name.len() <= 512 {
        assert_eq!(
            pattern_matches(pattern, name),
            reference(pattern.as_bytes(), name.as_bytes()),
            "{pattern:?} vs {name:?}"
        );
    } else {
        let _ = pattern_matches(pattern, name);
    }
    for candidate in [pattern, name, text] {
        let valid = !candidate.is_empty()
            && candidate.len() <= RoomName::MAX_BYTES
            && !candidate
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
            // One spelling per name: Normalization Form C, composed the long way round.
            && candidate.nfc().eq(candidate.chars());
        assert_eq!(RoomName::validate(candidate).is_ok(), valid, "{candidate:?}");
        if let Ok(room) = RoomName::parse(candidate) {
            assert_eq!(room.as_str(), candidate);
            let json = serde_json::to_string(&room).expect("a room name serializes");
            assert_eq!(serde_json::from_str::<RoomName>(&json).ok(), Some(room));
        }
    }
});
