//! Size formulas of format v1 (FORMAT.md, "Sizes").
//!
//! Envoy fixes headers before the body is seen and listings carry only sizes,
//! so both directions are pure functions:
//!
//! ```text
//! chunks(P)         = ceil(P / C)            (an empty object has no chunk)
//! ciphertext_len(P) = P + 40 * chunks(P)
//! ```
//!
//! A multipart object whose parts (all but the last) are whole multiples of
//! `C` has exactly the length of a single-part object of the same plaintext.

use crate::stream::CHUNK_OVERHEAD;

const OVERHEAD: u64 = CHUNK_OVERHEAD as u64;

/// Number of chunks a segment of `plaintext_len` bytes is sealed into.
pub fn chunk_count(plaintext_len: u64, chunk_size: u32) -> u64 {
    plaintext_len.div_ceil(u64::from(chunk_size))
}

/// Ciphertext length of a segment; `None` if it would overflow u64.
pub fn ciphertext_len(plaintext_len: u64, chunk_size: u32) -> Option<u64> {
    chunk_count(plaintext_len, chunk_size).checked_mul(OVERHEAD)?.checked_add(plaintext_len)
}

/// Plaintext length of a ciphertext of `ciphertext_len` bytes, or `None` if no
/// plaintext encrypts to exactly that length.
pub fn plaintext_len(ciphertext_len: u64, chunk_size: u32) -> Option<u64> {
    let sealed_chunk = u64::from(chunk_size) + OVERHEAD;
    let chunks = ciphertext_len.div_ceil(sealed_chunk);
    let plain = ciphertext_len.checked_sub(chunks.checked_mul(OVERHEAD)?)?;
    (self::ciphertext_len(plain, chunk_size) == Some(ciphertext_len)).then_some(plain)
}

/// Ciphertext offset of chunk number `n` in a regular layout (every chunk
/// before it full).
pub fn chunk_offset(n: u64, chunk_size: u32) -> Option<u64> {
    n.checked_mul(u64::from(chunk_size) + OVERHEAD)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const C: u32 = 65_536;

    #[test]
    fn known_lengths() {
        assert_eq!(ciphertext_len(0, C), Some(0));
        assert_eq!(ciphertext_len(1, C), Some(41));
        assert_eq!(ciphertext_len(65_535, C), Some(65_575));
        assert_eq!(ciphertext_len(65_536, C), Some(65_576));
        assert_eq!(ciphertext_len(65_537, C), Some(65_617));
    }

    #[test]
    fn inverse_of_every_small_length() {
        for c in [16_384u32, 65_536] {
            for p in 0..(3 * u64::from(c) + 5) {
                let t = ciphertext_len(p, c).unwrap();
                assert_eq!(plaintext_len(t, c), Some(p), "p={p} c={c}");
            }
        }
    }

    #[test]
    fn impossible_lengths_have_no_plaintext() {
        assert_eq!(plaintext_len(0, C), Some(0));
        for t in 1..41 {
            assert_eq!(plaintext_len(t, C), None);
        }
        // Between one full chunk (65_576) and a two-chunk object (>= 65_617).
        for t in 65_577..65_617 {
            assert_eq!(plaintext_len(t, C), None, "t={t}");
        }
    }

    #[test]
    fn large_lengths() {
        let p = 5u64 << 40; // 5 TiB, S3's object limit
        let t = ciphertext_len(p, C).unwrap();
        assert_eq!(plaintext_len(t, C), Some(p));
        assert_eq!(ciphertext_len(u64::MAX - 10, C), None);
    }
}
