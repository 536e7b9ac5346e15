//! Poly1305 (RFC 8439 section 2.5) over whole 16-byte blocks, written so the
//! block step inlines into its loop, for ChaCha20-Poly1305 inside V8.
//!
//! Why not the `poly1305` crate: in the filter, LLVM compiles the crate's
//! per-block `proc_block` as a function of its own (it has several callers),
//! so every 16 bytes load the key and accumulator from memory, compute and
//! store them back. In V8 that made Poly1305 as slow as ChaCha20 itself
//! (bench/RESULTS.md). Here the accumulator stays in locals across a whole
//! buffer. The arithmetic is the classic 32-bit one (five 26-bit limbs,
//! 64-bit products), without branches or lookups on secret data.
//!
//! The AEAD only feeds zero-padded whole blocks (RFC 8439 section 2.8);
//! [`Poly1305::update_unpadded`] adds the MAC's own rule for a short final
//! block (a 0x01 byte after the message) so the RFC's MAC vectors can be
//! checked too.

use zeroize::{Zeroize, ZeroizeOnDrop};

const BLOCK: usize = 16;
const LIMB: u32 = 0x3ff_ffff;

fn le32(b: &[u8; BLOCK], at: usize) -> u32 {
    let bytes = [0, 1, 2, 3].map(|i| b.get(at + i).copied().unwrap_or(0));
    u32::from_le_bytes(bytes)
}

/// A Poly1305 computation under one one-time key. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Poly1305 {
    r: [u32; 5],
    /// 5 · r1..r4: the reduction folds 2^130 back as 5.
    s: [u32; 4],
    h: [u32; 5],
    pad: [u32; 4],
}

impl Poly1305 {
    /// `key` = r ‖ s, as RFC 8439 lays it out; r is clamped here.
    pub fn new(key: &[u8; 32]) -> Poly1305 {
        let (r, pad) = key.split_at(BLOCK);
        let r: [u8; BLOCK] = r.try_into().unwrap_or([0; BLOCK]);
        let pad: [u8; BLOCK] = pad.try_into().unwrap_or([0; BLOCK]);
        let r = [
            le32(&r, 0) & 0x3ff_ffff,
            (le32(&r, 3) >> 2) & 0x3ff_ff03,
            (le32(&r, 6) >> 4) & 0x3ff_c0ff,
            (le32(&r, 9) >> 6) & 0x3f0_3fff,
            (le32(&r, 12) >> 8) & 0x00f_ffff,
        ];
        let [_, r1, r2, r3, r4] = r;
        Poly1305 { r, s: [r1 * 5, r2 * 5, r3 * 5, r4 * 5], h: [0; 5], pad: [0, 4, 8, 12].map(|at| le32(&pad, at)) }
    }

    /// Absorbs `data`, zero-padded to a whole number of blocks (the AEAD's
    /// padding of AAD and ciphertext).
    pub fn update_padded(&mut self, data: &[u8]) {
        let (blocks, tail) = data.as_chunks::<BLOCK>();
        self.absorb(blocks, 1 << 24);
        if !tail.is_empty() {
            let mut last = [0u8; BLOCK];
            for (l, t) in last.iter_mut().zip(tail) {
                *l = *t;
            }
            self.absorb(&[last], 1 << 24);
        }
    }

    /// Absorbs a whole message the MAC's own way: a short final block gets a
    /// 0x01 byte after it instead of a 2^128 bit.
    pub fn update_unpadded(&mut self, data: &[u8]) {
        let (blocks, tail) = data.as_chunks::<BLOCK>();
        self.absorb(blocks, 1 << 24);
        if !tail.is_empty() {
            let mut last = [0u8; BLOCK];
            for (l, t) in last.iter_mut().zip(tail.iter().chain([&1u8])) {
                *l = *t;
            }
            self.absorb(&[last], 0);
        }
    }

    /// h = (h + block + 2^128·[full]) · r mod 2^130 - 5 for each block, with
    /// the accumulator in locals for the whole loop. `high` is the 2^128 bit
    /// as it sits in the top limb (1 << 24), or 0.
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // limbs are taken mod 2^26 or are below 2^32
    fn absorb(&mut self, blocks: &[[u8; BLOCK]], high: u32) {
        let [r0, r1, r2, r3, r4] = self.r.map(u64::from);
        let [s1, s2, s3, s4] = self.s.map(u64::from);
        let [mut h0, mut h1, mut h2, mut h3, mut h4] = self.h;
        for m in blocks {
            // The block as a 128-bit little-endian number, cut into 26-bit limbs.
            let (halves, _) = m.as_chunks::<8>();
            let [lo, hi] = [0, 1].map(|i| halves.get(i).map_or(0, |h| u64::from_le_bytes(*h)));
            let limb = |x: u64| (x as u32) & LIMB;
            h0 += limb(lo);
            h1 += limb(lo >> 26);
            h2 += limb((lo >> 52) | (hi << 12));
            h3 += limb(hi >> 14);
            h4 += limb(hi >> 40) | high;

            let [a0, a1, a2, a3, a4] = [h0, h1, h2, h3, h4].map(u64::from);
            let d0 = a0 * r0 + a1 * s4 + a2 * s3 + a3 * s2 + a4 * s1;
            let mut d1 = a0 * r1 + a1 * r0 + a2 * s4 + a3 * s3 + a4 * s2;
            let mut d2 = a0 * r2 + a1 * r1 + a2 * r0 + a3 * s4 + a4 * s3;
            let mut d3 = a0 * r3 + a1 * r2 + a2 * r1 + a3 * r0 + a4 * s4;
            let mut d4 = a0 * r4 + a1 * r3 + a2 * r2 + a3 * r1 + a4 * r0;

            // Partial carry: limbs back to ~26 bits (h stays below 2^131).
            d1 += d0 >> 26;
            d2 += d1 >> 26;
            d3 += d2 >> 26;
            d4 += d3 >> 26;
            // 2^130 ≡ 5: the carry out of the top limb comes back times 5.
            let t0 = (d0 & u64::from(LIMB)) + (d4 >> 26) * 5;
            let low = |d: u64| (d as u32) & LIMB;
            h0 = low(t0);
            h1 = low(d1) + (t0 >> 26) as u32;
            h2 = low(d2);
            h3 = low(d3);
            h4 = low(d4);
        }
        self.h = [h0, h1, h2, h3, h4];
    }

    /// The tag: h fully reduced mod 2^130 - 5, plus s, mod 2^128.
    #[allow(clippy::cast_possible_truncation)] // the sum is taken mod 2^32 on purpose
    pub fn finalize(mut self) -> [u8; 16] {
        let [mut h0, mut h1, mut h2, mut h3, mut h4] = self.h;
        h2 += h1 >> 26;
        h1 &= LIMB;
        h3 += h2 >> 26;
        h2 &= LIMB;
        h4 += h3 >> 26;
        h3 &= LIMB;
        h0 += (h4 >> 26) * 5;
        h4 &= LIMB;
        h1 += h0 >> 26;
        h0 &= LIMB;

        // g = h + 5 - 2^130; if that does not borrow, h ≥ p and g is h - p.
        let mut g0 = h0 + 5;
        let mut g1 = h1 + (g0 >> 26);
        g0 &= LIMB;
        let mut g2 = h2 + (g1 >> 26);
        g1 &= LIMB;
        let mut g3 = h3 + (g2 >> 26);
        g2 &= LIMB;
        let g4 = (h4 + (g3 >> 26)).wrapping_sub(1 << 26);
        g3 &= LIMB;
        // All ones when g did not borrow (take g), zero when it did (keep h).
        let take_g = (g4 >> 31).wrapping_sub(1);
        let pick = |g: u32, h: u32| (g & take_g) | (h & !take_g);
        let (h0, h1, h2, h3, h4) = (pick(g0, h0), pick(g1, h1), pick(g2, h2), pick(g3, h3), pick(g4, h4));

        // To four 32-bit words, then + s with carries, mod 2^128.
        let words = [h0 | (h1 << 26), (h1 >> 6) | (h2 << 20), (h2 >> 12) | (h3 << 14), (h3 >> 18) | (h4 << 8)];
        let mut tag = [0u8; 16];
        let mut carry = 0u64;
        for ((out, w), p) in tag.chunks_exact_mut(4).zip(words).zip(self.pad) {
            let sum = u64::from(w) + u64::from(p) + carry;
            out.copy_from_slice(&(sum as u32).to_le_bytes());
            carry = sum >> 32;
        }
        self.h.zeroize();
        tag
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use poly1305::universal_hash::{KeyInit, UniversalHash};
    use proptest::prelude::*;

    /// RFC 8439 section 2.5.2 (a 34-byte message: a short final block).
    #[test]
    fn rfc8439_2_5_2() {
        let key: [u8; 32] = hex::decode("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b").unwrap().try_into().unwrap();
        let mut mac = Poly1305::new(&key);
        mac.update_unpadded(b"Cryptographic Forum Research Group");
        assert_eq!(hex::encode(mac.finalize()), "a8061dc1305136c6c22b8baf0c0127a9");
    }

    /// Values of h near 2^130 - 5 exercise the final reduction: key with
    /// r = 1 (clamped) and s = 0, a message of all-ones blocks.
    #[test]
    fn final_reduction_edges_match_crate() {
        let mut key = [0u8; 32];
        key[0] = 1;
        for fill in [0x00, 0xff, 0xfe, 0xfb] {
            for blocks in [1, 2, 3, 7] {
                let msg = vec![fill; 16 * blocks];
                same_as_crate(&key, &msg);
            }
        }
    }

    fn same_as_crate(key: &[u8; 32], data: &[u8]) {
        let mut reference = poly1305::Poly1305::new(key.into());
        reference.update_padded(data);
        let mut mac = Poly1305::new(key);
        mac.update_padded(data);
        assert_eq!(mac.finalize(), <[u8; 16]>::from(reference.finalize()), "len {}", data.len());
        let reference = poly1305::Poly1305::new(key.into()).compute_unpadded(data);
        let mut mac = Poly1305::new(key);
        mac.update_unpadded(data);
        assert_eq!(mac.finalize(), <[u8; 16]>::from(reference), "unpadded, len {}", data.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against the `poly1305` crate, padded (the AEAD's way) and unpadded.
        #[test]
        fn same_as_poly1305_crate(key in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 0..600)) {
            same_as_crate(&key, &data);
        }

        /// Biased towards all-ones bytes, where carries run furthest.
        #[test]
        fn same_as_crate_on_saturated_input(key in any::<[u8; 32]>(), len in 0..200usize, holes in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut data = vec![0xff; len];
            for (i, h) in holes.iter().enumerate() {
                if let Some(b) = data.get_mut(i * 37 % len.max(1)) {
                    *b = *h;
                }
            }
            same_as_crate(&[0xff; 32], &data);
            same_as_crate(&key, &data);
        }
    }
}
