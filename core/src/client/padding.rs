//! Padding of envelopes before encryption, so that the relay, which sees every ciphertext's
//! length, learns little from it.
//!
//! The padded length is the Padmé length (Nikitin et al., "Reducing Metadata Leakage from
//! Encrypted Files and Communication with PURBs", 2019) of the envelope plus its end marker,
//! and at least `MIN_PADDED_BYTES`: every text up to about 170 bytes, every receipt of a few
//! ids and every short call signal has the same size; above that, a length reveals at most
//! O(log log n) bits and costs at most 12 % more bytes. The format is Signal's: the envelope,
//! one `0x80` byte, then zeros.

use zeroize::Zeroizing;

use crate::error::{CoreError, CoreResult};

/// Smallest padded envelope, in bytes: a text of up to about 170 bytes, a receipt of up to
/// four ids and a call hang-up all fit and look alike.
pub const MIN_PADDED_BYTES: usize = 256;

/// The byte that ends the envelope inside its padding.
const END_MARKER: u8 = 0x80;

/// The Padmé length for `len` bytes (at least `MIN_PADDED_BYTES`).
pub fn padded_len(len: usize) -> usize {
    if len <= MIN_PADDED_BYTES {
        return MIN_PADDED_BYTES;
    }
    // E = floor(log2 len), S = floor(log2 E) + 1; the low E - S bits are rounded up.
    let e = usize::BITS - 1 - len.leading_zeros();
    let s = u32::BITS - e.leading_zeros();
    let low_bits = e.saturating_sub(s);
    let mask = (1usize << low_bits) - 1;
    // `len` is at most a payload's size, far from overflowing.
    (len.saturating_add(mask)) & !mask
}

/// `envelope` with its end marker and zeros up to the padded length.
pub fn pad(envelope: &[u8]) -> Zeroizing<Vec<u8>> {
    let total = padded_len(envelope.len().saturating_add(1));
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.extend_from_slice(envelope);
    out.push(END_MARKER);
    out.resize(total, 0);
    out
}

/// The envelope inside `padded`, checking the padding: the marker after the last non-zero
/// byte, and a total length that `pad` produces.
pub fn unpad(padded: &[u8]) -> CoreResult<&[u8]> {
    let bad = |why: &str| CoreError::InvalidMessage(format!("bad padding: {why}"));
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or_else(|| bad("no end marker"))?;
    if padded[end] != END_MARKER {
        return Err(bad("no end marker"));
    }
    if padded.len() != padded_len(end + 1) {
        return Err(bad("unexpected length"));
    }
    Ok(&padded[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_envelopes_share_one_size() {
        for len in [0, 1, 100, 255] {
            assert_eq!(pad(&vec![b'x'; len]).len(), MIN_PADDED_BYTES, "{len}");
        }
        assert!(pad(&[b'x'; 256]).len() > MIN_PADDED_BYTES);
    }

    #[test]
    fn padme_overhead_is_bounded_and_lengths_grow() {
        let mut last = 0;
        for len in 1..70_000 {
            let padded = padded_len(len);
            assert!(padded >= len && padded >= last, "{len}");
            if len > MIN_PADDED_BYTES {
                // Padmé's bound: at most 1/ (2 * log2 len) extra, under 12 %.
                assert!((padded - len) * 100 <= len * 12, "{len} -> {padded}");
            }
            last = padded;
        }
    }

    #[test]
    fn round_trip_and_rejects_bad_padding() {
        for len in [0, 1, 200, 255, 256, 1000, 40_000] {
            let envelope: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let padded = pad(&envelope);
            assert_eq!(unpad(&padded).unwrap(), &envelope[..]);
        }
        // Envelopes may end in zeros: the marker, not the zeros, ends them.
        let padded = pad(b"ab\0\0");
        assert_eq!(unpad(&padded).unwrap(), b"ab\0\0");
        assert!(unpad(b"").is_err());
        assert!(unpad(&[0; 256]).is_err());
        let mut no_marker = pad(b"abc").to_vec();
        no_marker[3] = 0x7f;
        assert!(unpad(&no_marker).is_err());
        let mut short = pad(b"abc").to_vec();
        short.pop();
        assert!(unpad(&short).is_err());
        let mut long = pad(b"abc").to_vec();
        long.push(0);
        assert!(unpad(&long).is_err());
    }
}
