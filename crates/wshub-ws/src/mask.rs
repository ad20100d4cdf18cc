//! Masking (RFC 6455 §5.3): the XOR of a payload with a 4-byte key, its own inverse.

/// Masks or unmasks `payload` in place with `mask`; `offset` is how many bytes of the same
/// payload were masked before, so that a payload can be handled piecewise as it arrives.
///
/// Eight bytes at a time: this runs over every byte a client sends.
#[inline]
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (chunks, rest) = payload.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    // Eight is a multiple of four, so the tail starts on the mask's first byte.
    for (byte, m) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect()
    }

    #[test]
    fn matches_the_definition_at_every_length() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|n| n as u8).collect();
            let mut masked = plain.clone();
            apply_mask(&mut masked, mask, 0);
            assert_eq!(masked, bytewise(&plain, mask), "{len}");
            apply_mask(&mut masked, mask, 0);
            assert_eq!(masked, plain, "its own inverse");
        }
    }

    #[test]
    fn unmasks_piecewise() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let plain: Vec<u8> = (0..100).collect();
        let mut masked = bytewise(&plain, mask);
        let (a, rest) = masked.split_at_mut(13);
        apply_mask(a, mask, 0);
        let (b, c) = rest.split_at_mut(30);
        apply_mask(b, mask, 13);
        apply_mask(c, mask, 43);
        assert_eq!(masked, plain);
    }
}
