//! GHASH (NIST SP 800-38D, section 6.4) in constant time, for AES-256-GCM
//! inside V8.
//!
//! wasm has no carry-less multiply. The `ghash` crate (through `polyval`'s
//! `soft32` backend on wasm32) multiplies with integer multiplications on
//! masked operands and runs at ~100-190 MB/s in V8. This module uses the
//! 4-bit table method instead, made constant time the way BoringSSL's
//! `gcm_ghash_ssse3` does: the tables are read with `i8x16.swizzle` (a
//! `pshufb` in V8 on x86), which looks up 16 secret nibbles at once inside a
//! register, never at a secret memory address. Nothing branches on, or
//! indexes memory with, H or the data. ~5-7× the crate in V8 (bench/RESULTS.md,
//! "Constant-time GHASH for V8"); the same integer-multiplication method
//! with Karatsuba and four blocks per reduction was no faster than the crate.
//!
//! ## The multiplication
//!
//! An element is 16 bytes in GCM's order: byte b holds the coefficients of
//! x^(8b) .. x^(8b+7), the most significant bit first. Its high nibble holds
//! x^(8b) .. x^(8b+3), its low nibble x^(8b+4) .. x^(8b+7), so
//!
//! ```text
//! X·H = Σ_b x^(8b) · (Th[hi_b] ⊕ Tl[lo_b])   with Th[n] = ñ·H, Tl[n] = ñ·x^4·H  (mod P)
//! ```
//!
//! where ñ is the nibble n read as a polynomial. Multiplying by x^8 moves
//! every byte one place up, so byte k of the term for byte b lands at byte
//! b + k of the 32-byte unreduced product. The tables are stored transposed:
//! row k is byte k of all 16 entries, one vector; one swizzle of row k by the
//! 16 high nibbles of X gives byte k of all 16 terms, in the lane of the byte
//! they came from (the low nibbles likewise with the other table). Summing
//! the 16 rows, each one lane further up (Horner: move the 32-byte sum up by
//! one lane, add the next row), gives the product; 32 swizzles per block.
//! The upper 16 bytes are folded back with x^128 = x^7 + x^2 + x + 1, itself
//! a small nibble table (see `reduce`).
//!
//! Four blocks share one sum and one reduction: (Y ⊕ X1)·H^4 ⊕ X2·H^3 ⊕
//! X3·H^2 ⊕ X4·H, with tables for the four powers of H (2 KiB). Two blocks
//! were slower in V8, eight no faster.
//!
//! V8 adds a saturating add to each swizzle (out-of-range indices must give
//! 0); a build with `+relaxed-simd` uses `i8x16.relaxed_swizzle` instead,
//! ~35 % faster in node with `--experimental-wasm-relaxed-simd`, only for a
//! V8 that has relaxed SIMD on.
//!
//! The algorithm is generic over the lane type, as in `chacha.rs`:
//! `SimdLanes` (wasm32 `v128`) is what the filter runs, [`PortableLanes`]
//! (plain arrays, its lookup a constant-time select over the 16 entries,
//! slow) runs the same code natively so it is tested there too; natively
//! AES-GCM keeps the RustCrypto crates (CLMUL). The output is byte-identical
//! to the `ghash` crate (differential tests below).

use core::marker::PhantomData;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// GHASH's block size.
const BLOCK_LEN: usize = 16;
/// Blocks sharing one reduction (and powers of H kept).
const GROUP_BLOCKS: usize = 4;
const GROUP_LEN: usize = GROUP_BLOCKS * BLOCK_LEN;

/// 16 byte lanes with the operations the table method needs.
pub trait Lanes: Copy {
    fn zero() -> Self;
    /// Lane i = byte i.
    fn load(bytes: &[u8; 16]) -> Self;
    fn store(self) -> [u8; 16];
    fn xor(self, o: Self) -> Self;
    /// The high and the low nibble of each byte, each as a value 0..16.
    fn nibbles(self) -> (Self, Self);
    /// Lane i of the result is lane `idx[i]` of `self` (every `idx[i]` < 16),
    /// in constant time whatever the indices.
    fn lookup(self, idx: Self) -> Self;
    /// Each lane one place up, lane 15 into lane 0.
    fn rotate_up(self) -> Self;
    /// `high` one lane up with lane 15 of `low` below it: the upper half of
    /// the 32 bytes `(low, high)` moved one lane up.
    fn carry_up(low: Self, high: Self) -> Self;
}

/// Plain `[u8; 16]` lanes: the reference implementation, used natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortableLanes([u8; 16]);

impl Lanes for PortableLanes {
    #[inline(always)]
    fn zero() -> Self {
        PortableLanes([0; 16])
    }
    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> Self {
        PortableLanes(*bytes)
    }
    #[inline(always)]
    fn store(self) -> [u8; 16] {
        self.0
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        let mut out = self.0;
        for (a, b) in out.iter_mut().zip(o.0) {
            *a ^= b;
        }
        PortableLanes(out)
    }
    #[inline(always)]
    fn nibbles(self) -> (Self, Self) {
        (PortableLanes(self.0.map(|b| b >> 4)), PortableLanes(self.0.map(|b| b & 0x0f)))
    }
    fn lookup(self, idx: Self) -> Self {
        // Reads all 16 entries for every lane and keeps the one whose index
        // matches through a mask: no memory access depends on `idx`.
        PortableLanes(idx.0.map(|i| {
            let mut out = 0u8;
            for (j, entry) in (0u8..).zip(self.0) {
                // (i ^ j) - 1 borrows into the high byte only when i == j.
                let [_, hit] = u16::from(i ^ j).wrapping_sub(1).to_le_bytes();
                out |= entry & hit;
            }
            out
        }))
    }
    #[inline(always)]
    fn rotate_up(self) -> Self {
        let mut out = self.0;
        out.rotate_right(1);
        PortableLanes(out)
    }
    #[inline(always)]
    fn carry_up(low: Self, high: Self) -> Self {
        let [.., top] = low.0;
        let mut out = [top; 16];
        for (o, b) in out.iter_mut().skip(1).zip(high.0) {
            *o = b;
        }
        PortableLanes(out)
    }
}

/// wasm simd128 lanes: what the filter runs in V8.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
pub struct SimdLanes(core::arch::wasm32::v128);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Lanes for SimdLanes {
    #[inline(always)]
    fn zero() -> Self {
        SimdLanes(core::arch::wasm32::u8x16_splat(0))
    }
    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> Self {
        // SAFETY: `bytes` is 16 valid bytes; the unaligned read needs no
        // alignment. wasm is little-endian: byte i lands in lane i.
        SimdLanes(unsafe { bytes.as_ptr().cast::<core::arch::wasm32::v128>().read_unaligned() })
    }
    #[inline(always)]
    fn store(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 valid, exclusively borrowed bytes; the
        // unaligned write needs no alignment.
        unsafe { out.as_mut_ptr().cast::<core::arch::wasm32::v128>().write_unaligned(self.0) };
        out
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        SimdLanes(core::arch::wasm32::v128_xor(self.0, o.0))
    }
    #[inline(always)]
    fn nibbles(self) -> (Self, Self) {
        use core::arch::wasm32::{u16x8_shr, u8x16_splat, v128_and};
        // A 16-bit shift (wasm's 8-bit shifts cost V8 several instructions):
        // the bits crossing from the upper byte are masked off.
        let low4 = u8x16_splat(0x0f);
        (SimdLanes(v128_and(u16x8_shr(self.0, 4), low4)), SimdLanes(v128_and(self.0, low4)))
    }
    #[inline(always)]
    fn lookup(self, idx: Self) -> Self {
        // V8 adds a saturating add before each `pshufb` so indices >= 16
        // give 0 as wasm requires; the relaxed swizzle (a build with
        // +relaxed-simd) skips it, and gives the same bytes for indices < 16.
        #[cfg(target_feature = "relaxed-simd")]
        return SimdLanes(core::arch::wasm32::i8x16_relaxed_swizzle(self.0, idx.0));
        #[cfg(not(target_feature = "relaxed-simd"))]
        return SimdLanes(core::arch::wasm32::i8x16_swizzle(self.0, idx.0));
    }
    // Both shuffles take 16 consecutive bytes of a concatenation, which V8
    // emits as one `palignr` (a shift with a zero vector was a constant
    // built in three instructions and a `pshufb`).
    #[inline(always)]
    fn rotate_up(self) -> Self {
        use core::arch::wasm32::i8x16_shuffle;
        SimdLanes(i8x16_shuffle::<15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30>(self.0, self.0))
    }
    #[inline(always)]
    fn carry_up(low: Self, high: Self) -> Self {
        use core::arch::wasm32::i8x16_shuffle;
        SimdLanes(i8x16_shuffle::<15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30>(low.0, high.0))
    }
}

/// The lanes the filter uses on this target.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type DefaultLanes = SimdLanes;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type DefaultLanes = PortableLanes;

/// The nibble tables of one element, transposed: `[k][0]` is row k of the
/// high-nibble table (lane n = byte k of ñ·e), `[k][1]` of the low-nibble
/// table (lane n = byte k of ñ·x^4·e).
type NibbleRows = [[[u8; 16]; 2]; 16];

/// x^128 mod P = x^7 + x^2 + x + 1, in GCM's order read big-endian.
const R: u128 = 0xe1 << 120;

/// Multiplication by x, on an element read big-endian (x^i is then bit
/// 127 - i): a right shift, x^128 folded back in under a mask.
const fn mul_x(v: u128) -> u128 {
    let carry = 0u128.wrapping_sub(v & 1);
    (v >> 1) ^ (carry & R)
}

/// Lane masks for building table rows: lane n of `NIBBLE_BIT_LANES[j]` is
/// 0xff when bit 3 - j of n is set, i.e. when the nibble n has x^j (x^(j+4)
/// for a low nibble). Lane n is byte n, little-endian.
#[allow(clippy::indexing_slicing)] // j < 4
const NIBBLE_BIT_LANES: [u128; 4] = {
    let mut masks = [0u128; 4];
    let mut j = 0;
    while j < 4 {
        let mut n = 0;
        while n < 16 {
            if (n >> (3 - j)) & 1 == 1 {
                masks[j] |= 0xff << (8 * n);
            }
            n += 1;
        }
        j += 1;
    }
    masks
};

/// The transposed nibble tables of `e` (an element read big-endian).
///
/// Row k lane n is byte k of a sum of e·x^j over the bits of n: each row is
/// built whole, byte k of each e·x^j copied into all 16 lanes (a
/// multiplication by 0x0101…) and kept in the lanes whose nibble has that
/// bit. Every index is a public loop counter; `e` only flows through shifts,
/// masks, XORs and multiplications by a constant. A `const fn` so that the
/// reduction's rows come from the same code at build time.
#[allow(clippy::indexing_slicing)] // indices are loop counters < 16
const fn nibble_rows(e: u128) -> NibbleRows {
    // e·x^j, j = 0..8, in GCM's byte order.
    let mut powers = [[0u8; 16]; 8];
    let mut acc = e;
    let mut j = 0;
    while j < 8 {
        powers[j] = acc.to_be_bytes();
        acc = mul_x(acc);
        j += 1;
    }
    let mut rows = [[[0u8; 16]; 2]; 16];
    let mut k = 0;
    while k < 16 {
        let mut half = 0;
        while half < 2 {
            let mut lanes = 0u128;
            let mut j = 0;
            while j < 4 {
                let splat = powers[4 * half + j][k] as u64 * 0x0101_0101_0101_0101;
                lanes ^= ((splat as u128) << 64 | splat as u128) & NIBBLE_BIT_LANES[j];
                j += 1;
            }
            rows[k][half] = lanes.to_le_bytes();
            half += 1;
        }
        k += 1;
    }
    rows
}

/// Rows 0 and 1 of the tables of x^128 mod P (its multiples by a nibble have
/// 15 bits at most: the other rows are zero).
const REDUCTION_ROWS: [[[u8; 16]; 2]; 2] = {
    let rows = nibble_rows(R);
    [rows[0], rows[1]]
};

/// `high`·(x^7 + x^2 + x + 1) as two bytes per lane: lane b of the first
/// vector is byte b of the result, lane b of the second goes to byte b + 1
/// (byte 16, past x^128, when b = 15).
#[inline(always)]
fn mul_by_r<L: Lanes>(high: L) -> (L, L) {
    let [[h0, l0], [h1, l1]] = REDUCTION_ROWS;
    let (hi, lo) = high.nibbles();
    let byte0 = L::load(&h0).lookup(hi).xor(L::load(&l0).lookup(lo));
    let byte1 = L::load(&h1).lookup(hi).xor(L::load(&l1).lookup(lo));
    (byte0, byte1)
}

/// Reduces the 32-byte sum `(low, high)` modulo P = x^128 + x^7 + x^2 + x +
/// 1: `high`·x^128 = `high`·(x^7 + x^2 + x + 1). Lane 15 of `high` is zero
/// (see `absorb`), so that product has at most 127 bits and one fold is
/// enough; for the same reason lane 15 of `byte1` is zero and rotating it
/// moves it up one lane.
#[inline(always)]
fn reduce<L: Lanes>(low: L, high: L) -> L {
    let (byte0, byte1) = mul_by_r(high);
    low.xor(byte0).xor(byte1.rotate_up())
}

/// GHASH (NIST SP 800-38D) keyed by H = E_K(0^128), GCM's byte/bit order,
/// over lanes `L`.
///
/// `new` builds 2 KiB of tables (H to H^4, ~4 µs in V8); to hash many
/// messages under one key, build once and `reset` between messages.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GHashLanes<L: Lanes> {
    /// `rows[k][p]`: row k of the nibble tables of H^(4-p), so a group of
    /// four blocks meets H^4, H^3, H^2, H in order and a shorter group of n
    /// blocks uses the last n.
    rows: [[[[u8; 16]; 2]; GROUP_BLOCKS]; 16],
    /// The running value Y, GCM's byte order.
    y: [u8; 16],
    #[zeroize(skip)]
    lanes: PhantomData<L>,
}

/// GHASH as the filter runs it on this target (simd128 lanes in wasm).
pub type GHash = GHashLanes<DefaultLanes>;

impl<L: Lanes> GHashLanes<L> {
    pub fn new(h: &[u8; 16]) -> Self {
        let mut g = GHashLanes { rows: [[[[0; 16]; 2]; GROUP_BLOCKS]; 16], y: [0; 16], lanes: PhantomData };
        // H^1 goes in the last slot; each next power is the previous one
        // times H through that slot (a one-block group).
        let mut power = *h;
        for slot in (0..GROUP_BLOCKS).rev() {
            g.set_power(slot, &power);
            if slot > 0 {
                power = g.absorb([L::load(&power)]).store();
            }
        }
        power.zeroize();
        g
    }

    fn set_power(&mut self, slot: usize, e: &[u8; 16]) {
        // Like the RustCrypto crates, this scrubs the copies it names; the
        // compiler's own temporaries are out of reach.
        let mut built = nibble_rows(u128::from_be_bytes(*e));
        for (row, built) in self.rows.iter_mut().zip(&built) {
            if let Some(r) = row.get_mut(slot) {
                *r = *built;
            }
        }
        built.zeroize();
    }

    /// Σ blocks[i]·H^(N-i), reduced: the caller has XORed Y into blocks[0].
    #[inline(always)]
    fn absorb<const N: usize>(&self, blocks: [L; N]) -> L {
        let nibbles = blocks.map(L::nibbles);
        // Horner over the rows on the 32-byte sum (low, high). The sum never
        // reaches lane 15 of `high` (16 bytes of table entries moved up 15
        // lanes at most end in lane 14). Moving `low` up one lane with zero
        // fill costs V8 four instructions; instead `mixed` = low ⊕ high is
        // rotated (one `palignr`): the byte rotated into lane 0 is low's
        // lane 15, which is also what `carry_up` moves into high's lane 0, so
        // `mixed` stays low ⊕ high.
        let (mut mixed, mut high) = (L::zero(), L::zero());
        for row in self.rows.iter().rev() {
            // The terms of one row are summed apart from the running sum so
            // that only one XOR per row waits on the previous row.
            let mut row_sum = L::zero();
            for ([h, l], (hi, lo)) in row.iter().skip(GROUP_BLOCKS - N).zip(nibbles) {
                row_sum = row_sum.xor(L::load(h).lookup(hi).xor(L::load(l).lookup(lo)));
            }
            high = L::carry_up(mixed, high);
            mixed = mixed.rotate_up().xor(row_sum);
        }
        reduce(mixed.xor(high), high)
    }

    /// Absorbs `data`, zero-padding a final partial block (GCM pads AAD and
    /// ciphertext separately).
    pub fn update_padded(&mut self, data: &[u8]) {
        let mut y = L::load(&self.y);
        let (groups, rest) = data.as_chunks::<GROUP_LEN>();
        for group in groups {
            let (blocks, _) = group.as_chunks::<BLOCK_LEN>();
            let mut lanes: [L; GROUP_BLOCKS] = core::array::from_fn(|i| blocks.get(i).map_or(L::zero(), L::load));
            if let Some(first) = lanes.first_mut() {
                *first = first.xor(y);
            }
            y = self.absorb(lanes);
        }
        let (blocks, partial) = rest.as_chunks::<BLOCK_LEN>();
        for block in blocks {
            y = self.absorb([y.xor(L::load(block))]);
        }
        if !partial.is_empty() {
            let mut last = [0u8; BLOCK_LEN];
            for (d, s) in last.iter_mut().zip(partial) {
                *d = *s;
            }
            y = self.absorb([y.xor(L::load(&last))]);
            last.zeroize();
        }
        self.y = y.store();
    }

    /// The GHASH value so far (the caller feeds the lengths block itself and
    /// XORs E_K(J0)).
    pub fn finalize(&self) -> [u8; 16] {
        self.y
    }

    /// Starts a new message under the same H (keeps the tables: cheaper
    /// than `new` or a clone, ~2 KiB to copy and zeroize).
    pub fn reset(&mut self) {
        self.y.zeroize();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn array<const N: usize>(s: &str) -> [u8; N] {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Runs `$test::<L>()` for every lane type this target has, so the wasm
    /// test run covers the simd128 lanes and the portable ones alike.
    macro_rules! for_each_lanes {
        ($test:ident) => {
            $test::<PortableLanes>();
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            $test::<SimdLanes>();
        };
    }

    /// The `ghash` crate's output for `pieces`, each absorbed with `update_padded`.
    fn crate_ghash(h: &[u8; 16], pieces: &[&[u8]]) -> [u8; 16] {
        use ::ghash::universal_hash::{KeyInit, UniversalHash};
        let mut g = ::ghash::GHash::new(h.into());
        for piece in pieces {
            g.update_padded(piece);
        }
        g.finalize().into()
    }

    fn ours<L: Lanes>(h: &[u8; 16], pieces: &[&[u8]]) -> [u8; 16] {
        let mut g = GHashLanes::<L>::new(h);
        for piece in pieces {
            g.update_padded(piece);
        }
        g.finalize()
    }

    /// RFC 8452 Appendix A: GHASH(H, X_1, X_2) (also the `ghash` crate's own test vector).
    fn rfc8452_appendix_a<L: Lanes>() {
        let h = array::<16>("25629347589242761d31f826ba4b757b");
        let x = [array::<16>("4f4f95668c83dfb6401762bb2d01a262"), array::<16>("d1a24ddd2721d006bbe45f20d3c9f362")];
        let expected = array::<16>("bd9b3997046731fb96251b91f9c99d7a");
        assert_eq!(ours::<L>(&h, &[&x.concat()]), expected);
        assert_eq!(ours::<L>(&h, &[&x[0], &x[1]]), expected);
    }

    #[test]
    fn ghash_rfc8452_appendix_a() {
        for_each_lanes!(rfc8452_appendix_a);
    }

    /// GCM spec (McGrew & Viega, "The Galois/Counter Mode of Operation",
    /// appendix B) test cases 2-4 with AES-128: the tag is GHASH(H, A, C, lengths)
    /// ⊕ E_K(J0), H = E_K(0^128). Checks the spec's tags against the `aes-gcm`
    /// crate too, so the expected values are not taken on trust.
    fn gcm_spec_cases<L: Lanes>() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        use aes_gcm::aes::cipher::BlockEncrypt;
        use aes_gcm::aes::Aes128;
        let cases: [(&str, &str, &str, &str, &str); 3] = [
            ("00000000000000000000000000000000", "000000000000000000000000", "", "00000000000000000000000000000000", "ab6e47d42cec13bdf53a67b21257bddf"),
            (
                "feffe9928665731c6d6a8f9467308308",
                "cafebabefacedbaddecaf888",
                "",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
                "4d5c2af327cd64a62cf35abd2ba6fab4",
            ),
            (
                "feffe9928665731c6d6a8f9467308308",
                "cafebabefacedbaddecaf888",
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
        ];
        for (key, iv, aad, plaintext, tag) in cases {
            let key = array::<16>(key);
            let iv = array::<12>(iv);
            let aad = hex::decode(aad).unwrap();
            let mut text = hex::decode(plaintext).unwrap();
            let tag = array::<16>(tag);
            let crate_tag = aes_gcm::Aes128Gcm::new(&key.into()).encrypt_in_place_detached(&iv.into(), &aad, &mut text).unwrap();
            assert_eq!(<[u8; 16]>::from(crate_tag), tag, "the spec's tag, from the aes-gcm crate");

            let aes = Aes128::new(&key.into());
            let mut h = [0u8; 16].into();
            aes.encrypt_block(&mut h);
            let mut ek_j0 = aes_gcm::aes::Block::clone_from_slice(&[iv.as_slice(), &[0, 0, 0, 1]].concat());
            aes.encrypt_block(&mut ek_j0);
            let lengths = (u128::from(aad.len() as u64 * 8) << 64 | u128::from(text.len() as u64 * 8)).to_be_bytes();
            let s = ours::<L>(&h.into(), &[&aad, &text, &lengths]);
            let ours: Vec<u8> = s.iter().zip(ek_j0).map(|(a, b)| a ^ b).collect();
            assert_eq!(ours, tag);
        }
    }

    #[test]
    fn gcm_spec_test_cases_2_to_4() {
        for_each_lanes!(gcm_spec_cases);
    }

    /// Lengths around the block (16) and group (64) sizes, absorbed in one
    /// call and byte by byte-ish pieces.
    fn edge_lengths<L: Lanes>() {
        let mut next = crate::cipher_tests::byte_stream();
        for len in [0, 1, 15, 16, 17, 31, 32, 47, 48, 63, 64, 65, 79, 80, 127, 128, 129, 1000, 4113] {
            let h: [u8; 16] = core::array::from_fn(|_| next());
            let data: Vec<u8> = (0..len).map(|_| next()).collect();
            assert_eq!(ours::<L>(&h, &[&data]), crate_ghash(&h, &[&data]), "len {len}");
            let pieces: Vec<&[u8]> = data.chunks(13).collect();
            assert_eq!(ours::<L>(&h, &pieces), crate_ghash(&h, &pieces), "len {len} in 13-byte pieces");
        }
        // H with the top bits set (every mul_x carries) and all ones.
        for h in [[0xff; 16], [0x01; 16], [0x80; 16]] {
            let data = [0xffu8; 200];
            assert_eq!(ours::<L>(&h, &[&data]), crate_ghash(&h, &[&data]));
        }
    }

    #[test]
    fn same_as_crate_at_edge_lengths() {
        for_each_lanes!(edge_lengths);
    }

    /// After `reset`, a keyed instance hashes the next message as a new one would.
    fn reset_starts_over<L: Lanes>() {
        let h = [0x5a; 16];
        let (first, second) = ([0x11u8; 100], [0x22u8; 37]);
        let mut g = GHashLanes::<L>::new(&h);
        g.update_padded(&first);
        assert_eq!(g.finalize(), crate_ghash(&h, &[&first]));
        g.reset();
        g.update_padded(&second);
        assert_eq!(g.finalize(), crate_ghash(&h, &[&second]));
    }

    #[test]
    fn reset_keeps_the_key_only() {
        for_each_lanes!(reset_starts_over);
    }

    /// `data` split at `cuts` (sorted, deduplicated, clamped to its length).
    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            pieces.push(&data[at..c]);
            at = c;
        }
        pieces
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random H and data of 0-2000 bytes split into random
        /// `update_padded` calls (empty pieces included): same value as the crate.
        #[test]
        fn same_as_crate_random(
            h in any::<[u8; 16]>(),
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let pieces = split(&data, &cuts);
            let expected = crate_ghash(&h, &pieces);
            prop_assert_eq!(ours::<PortableLanes>(&h, &pieces), expected);
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            prop_assert_eq!(ours::<SimdLanes>(&h, &pieces), expected);
        }

        /// The constant-time lookup is a plain table lookup; the lane moves
        /// do what they say.
        #[test]
        fn portable_lanes_primitives(table in any::<[u8; 16]>(), bytes in any::<[u8; 16]>(), high in any::<[u8; 16]>()) {
            let idx = bytes.map(|b| b & 0x0f);
            let looked_up = PortableLanes(table).lookup(PortableLanes(idx)).store();
            prop_assert_eq!(looked_up, idx.map(|i| table[usize::from(i)]));
            let (hi, lo) = PortableLanes(bytes).nibbles();
            prop_assert_eq!(hi.store().iter().zip(lo.store()).map(|(h, l)| h << 4 | l).collect::<Vec<_>>(), bytes.to_vec());
            let rotated = PortableLanes(bytes).rotate_up().store();
            prop_assert_eq!(rotated.to_vec(), [&bytes[15..], &bytes[..15]].concat());
            let carried = PortableLanes::carry_up(PortableLanes(bytes), PortableLanes(high)).store();
            prop_assert_eq!(carried.to_vec(), [&bytes[15..], &high[..15]].concat());
        }
    }

    /// In the wasm run: every lane operation of the simd128 lanes against
    /// the portable ones, on random inputs (indices < 16 as the tables use).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    mod simd_vs_portable {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn lanes_agree(a in any::<[u8; 16]>(), b in any::<[u8; 16]>()) {
                let (pa, pb, sa, sb) = (PortableLanes::load(&a), PortableLanes::load(&b), SimdLanes::load(&a), SimdLanes::load(&b));
                prop_assert_eq!(sa.store(), a);
                prop_assert_eq!(sa.xor(sb).store(), pa.xor(pb).store());
                let ((ph, pl), (sh, sl)) = (pa.nibbles(), sa.nibbles());
                prop_assert_eq!((sh.store(), sl.store()), (ph.store(), pl.store()));
                prop_assert_eq!(sb.lookup(sh).store(), pb.lookup(ph).store());
                prop_assert_eq!(sb.lookup(sl).store(), pb.lookup(pl).store());
                prop_assert_eq!(sa.rotate_up().store(), pa.rotate_up().store());
                prop_assert_eq!(SimdLanes::carry_up(sa, sb).store(), PortableLanes::carry_up(pa, pb).store());
            }
        }
    }
}
