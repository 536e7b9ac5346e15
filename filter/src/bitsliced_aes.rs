//! AES-256 encryption of eight blocks at once, bitsliced in 128-bit lanes,
//! for AES-256-GCM inside V8 (wasm has no AES instructions).
//!
//! The `aes` crate picks its 32-bit fixslice on wasm32 (two blocks per pass
//! in `u32` words): ~90 MB/s in V8, most of AES-256-GCM's time
//! (bench/RESULTS.md). Here eight blocks sit in eight 128-bit vectors
//! (after Käsper and Schwabe): vector `b` ("plane b") holds bit `b` of
//! every byte, its byte `4r + c` is the state byte in row `r`, column `c`
//! (row-major, where FIPS-197 lists a block column by column), and bit `k`
//! of that byte belongs to block `k`. So:
//!
//! - SubBytes is a Boolean circuit over the eight planes (Boyar and Peralta's
//!   113-gate circuit with its four NOTs folded into the round keys: they add
//!   the S-box constant 0x63 to every byte, which ShiftRows and MixColumns
//!   leave unchanged);
//! - ShiftRows is a byte shuffle, the same for every plane; MixColumns
//!   rotates rows, which row-major order makes 32-bit lane shuffles (one
//!   `pshufd` each, where a general byte shuffle costs V8 a `pshufb` and four
//!   instructions to build its mask: 358 → 311 instructions per round in
//!   node's V8); doubling in GF(2^8) only renames planes;
//! - nothing is ever looked up by a secret index: the code runs in constant
//!   time whatever the key and data, as the `aes` crate's does.
//!
//! Only encryption exists: GCM needs nothing else. The round code is generic
//! over [`Lanes`]: [`SimdLanes`] (wasm32 `v128`) is what the filter runs,
//! [`PortableLanes`] runs the same code natively so it is tested there too
//! (known answers from FIPS-197 and differential tests against the `aes`
//! crate, natively and compiled to wasm under node).

use zeroize::{Zeroize, ZeroizeOnDrop};

/// AES-256 rounds.
const ROUNDS: usize = 14;
/// Blocks per pass: one bit of each plane byte per block.
pub const BATCH_BLOCKS: usize = 8;
pub const BLOCK_LEN: usize = 16;
pub const BATCH_LEN: usize = BATCH_BLOCKS * BLOCK_LEN;

/// 128-bit lanes with the operations the bitsliced rounds need.
pub trait Lanes: Copy {
    fn load(bytes: &[u8; 16]) -> Self;
    fn splat(byte: u8) -> Self;
    fn xor(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    /// Shifts each 64-bit half right (`shr`) or left (`shl`) by `n` bits.
    fn shr64(self, n: u32) -> Self;
    fn shl64(self, n: u32) -> Self;
    /// Byte `4r + c` takes byte `4r + (c + r) mod 4`.
    fn shift_rows(self) -> Self;
    /// Byte `4r + c` takes byte `4((r + 1) mod 4) + c`.
    fn rotate_rows_1(self) -> Self;
    /// Byte `4r + c` takes byte `4((r + 2) mod 4) + c`.
    fn rotate_rows_2(self) -> Self;
    /// Byte `4r + c` takes byte `4c + r`: FIPS-197's column-major block
    /// order to row-major and back.
    fn transpose_bytes(self) -> Self;
    /// XORs the 16 bytes into `dst`.
    fn xor_into(self, dst: &mut [u8; 16]);
}

/// Plain byte arrays: the reference implementation, used natively.
#[derive(Clone, Copy)]
pub struct PortableLanes([u8; 16]);

impl PortableLanes {
    fn halves(self) -> [u64; 2] {
        let (pair, _) = self.0.as_chunks::<8>();
        let mut out = [0u64; 2];
        for (o, h) in out.iter_mut().zip(pair) {
            *o = u64::from_le_bytes(*h);
        }
        out
    }

    fn from_halves(h: [u64; 2]) -> Self {
        let mut out = [0u8; 16];
        for (o, b) in out.iter_mut().zip(h[0].to_le_bytes().into_iter().chain(h[1].to_le_bytes())) {
            *o = b;
        }
        PortableLanes(out)
    }

    fn permute(self, from: [usize; 16]) -> Self {
        PortableLanes(from.map(|i| self.0.get(i).copied().unwrap_or(0)))
    }
}

const SHIFT_ROWS: [usize; 16] = [0, 1, 2, 3, 5, 6, 7, 4, 10, 11, 8, 9, 15, 12, 13, 14];
const ROTATE_ROWS_1: [usize; 16] = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3];
const ROTATE_ROWS_2: [usize; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];
const TRANSPOSE_BYTES: [usize; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

impl Lanes for PortableLanes {
    fn load(bytes: &[u8; 16]) -> Self {
        PortableLanes(*bytes)
    }
    fn splat(byte: u8) -> Self {
        PortableLanes([byte; 16])
    }
    fn xor(self, o: Self) -> Self {
        let mut out = self.0;
        for (a, b) in out.iter_mut().zip(o.0) {
            *a ^= b;
        }
        PortableLanes(out)
    }
    fn and(self, o: Self) -> Self {
        let mut out = self.0;
        for (a, b) in out.iter_mut().zip(o.0) {
            *a &= b;
        }
        PortableLanes(out)
    }
    fn shr64(self, n: u32) -> Self {
        Self::from_halves(self.halves().map(|h| h >> n))
    }
    fn shl64(self, n: u32) -> Self {
        Self::from_halves(self.halves().map(|h| h << n))
    }
    fn shift_rows(self) -> Self {
        self.permute(SHIFT_ROWS)
    }
    fn rotate_rows_1(self) -> Self {
        self.permute(ROTATE_ROWS_1)
    }
    fn rotate_rows_2(self) -> Self {
        self.permute(ROTATE_ROWS_2)
    }
    fn transpose_bytes(self) -> Self {
        self.permute(TRANSPOSE_BYTES)
    }
    fn xor_into(self, dst: &mut [u8; 16]) {
        for (d, s) in dst.iter_mut().zip(self.0) {
            *d ^= s;
        }
    }
}

/// wasm simd128 lanes: what the filter runs in V8.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
pub struct SimdLanes(core::arch::wasm32::v128);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Lanes for SimdLanes {
    #[inline(always)]
    fn load(bytes: &[u8; 16]) -> Self {
        // SAFETY: 16 valid bytes; an unaligned read needs no alignment.
        SimdLanes(unsafe { bytes.as_ptr().cast::<core::arch::wasm32::v128>().read_unaligned() })
    }
    #[inline(always)]
    fn splat(byte: u8) -> Self {
        SimdLanes(core::arch::wasm32::u8x16_splat(byte))
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        SimdLanes(core::arch::wasm32::v128_xor(self.0, o.0))
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        SimdLanes(core::arch::wasm32::v128_and(self.0, o.0))
    }
    #[inline(always)]
    fn shr64(self, n: u32) -> Self {
        SimdLanes(core::arch::wasm32::u64x2_shr(self.0, n))
    }
    #[inline(always)]
    fn shl64(self, n: u32) -> Self {
        SimdLanes(core::arch::wasm32::u64x2_shl(self.0, n))
    }
    #[inline(always)]
    fn shift_rows(self) -> Self {
        use core::arch::wasm32::i8x16_shuffle;
        SimdLanes(i8x16_shuffle::<0, 1, 2, 3, 5, 6, 7, 4, 10, 11, 8, 9, 15, 12, 13, 14>(self.0, self.0))
    }
    #[inline(always)]
    fn rotate_rows_1(self) -> Self {
        use core::arch::wasm32::i32x4_shuffle;
        SimdLanes(i32x4_shuffle::<1, 2, 3, 0>(self.0, self.0))
    }
    #[inline(always)]
    fn rotate_rows_2(self) -> Self {
        use core::arch::wasm32::i32x4_shuffle;
        SimdLanes(i32x4_shuffle::<2, 3, 0, 1>(self.0, self.0))
    }
    #[inline(always)]
    fn transpose_bytes(self) -> Self {
        use core::arch::wasm32::i8x16_shuffle;
        SimdLanes(i8x16_shuffle::<0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15>(self.0, self.0))
    }
    #[inline(always)]
    fn xor_into(self, dst: &mut [u8; 16]) {
        use core::arch::wasm32::{v128, v128_xor};
        let ptr = dst.as_mut_ptr().cast::<v128>();
        // SAFETY: `dst` is 16 valid, exclusively borrowed bytes; the
        // unaligned read and write need no alignment.
        unsafe { ptr.write_unaligned(v128_xor(ptr.read_unaligned(), self.0)) }
    }
}

/// The lanes the filter uses on this target.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type DefaultLanes = SimdLanes;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type DefaultLanes = PortableLanes;

/// Swaps the bits of `b` at the positions in `mask` with the bits of `a`
/// `n` places higher.
#[inline(always)]
fn swap_move<L: Lanes>(a: &mut L, b: &mut L, mask: L, n: u32) {
    let t = a.shr64(n).xor(*b).and(mask);
    *b = b.xor(t);
    *a = a.xor(t.shl64(n));
}

/// Transposes, at every byte position, the 8 × 8 bit matrix formed by that
/// byte of the eight vectors: bit `b` of vector `k` becomes bit `k` of
/// vector `b`. Turns eight blocks into eight planes, and back (it is its own
/// inverse).
#[inline(always)]
fn transpose<L: Lanes>(v: &mut [L; 8]) {
    let [v0, v1, v2, v3, v4, v5, v6, v7] = v;
    let m = L::splat(0x55);
    swap_move(v0, v1, m, 1);
    swap_move(v2, v3, m, 1);
    swap_move(v4, v5, m, 1);
    swap_move(v6, v7, m, 1);
    let m = L::splat(0x33);
    swap_move(v0, v2, m, 2);
    swap_move(v1, v3, m, 2);
    swap_move(v4, v6, m, 2);
    swap_move(v5, v7, m, 2);
    let m = L::splat(0x0f);
    swap_move(v0, v4, m, 4);
    swap_move(v1, v5, m, 4);
    swap_move(v2, v6, m, 4);
    swap_move(v3, v7, m, 4);
}

/// SubBytes without its constant (folded into the round keys): Boyar and
/// Peralta's circuit ("A depth-16 circuit for the AES S-box", 2011; the
/// 113-gate version, XOR/AND only). `x0` is the most significant bit.
#[inline(always)]
fn sub_bytes_without_constant<L: Lanes>(q: &mut [L; 8]) {
    let [x7, x6, x5, x4, x3, x2, x1, x0] = *q;

    // Top linear transformation.
    let y14 = x3.xor(x5);
    let y13 = x0.xor(x6);
    let y9 = x0.xor(x3);
    let y8 = x0.xor(x5);
    let t0 = x1.xor(x2);
    let y1 = t0.xor(x7);
    let y4 = y1.xor(x3);
    let y12 = y13.xor(y14);
    let y2 = y1.xor(x0);
    let y5 = y1.xor(x6);
    let y3 = y5.xor(y8);
    let t1 = x4.xor(y12);
    let y15 = t1.xor(x5);
    let y20 = t1.xor(x1);
    let y6 = y15.xor(x7);
    let y10 = y15.xor(t0);
    let y11 = y20.xor(y9);
    let y7 = x7.xor(y11);
    let y17 = y10.xor(y11);
    let y19 = y10.xor(y8);
    let y16 = t0.xor(y11);
    let y21 = y13.xor(y16);
    let y18 = x0.xor(y16);

    // Non-linear middle: inversion in GF(2^4)^2.
    let t2 = y12.and(y15);
    let t3 = y3.and(y6);
    let t4 = t3.xor(t2);
    let t5 = y4.and(x7);
    let t6 = t5.xor(t2);
    let t7 = y13.and(y16);
    let t8 = y5.and(y1);
    let t9 = t8.xor(t7);
    let t10 = y2.and(y7);
    let t11 = t10.xor(t7);
    let t12 = y9.and(y11);
    let t13 = y14.and(y17);
    let t14 = t13.xor(t12);
    let t15 = y8.and(y10);
    let t16 = t15.xor(t12);
    let t17 = t4.xor(t14);
    let t18 = t6.xor(t16);
    let t19 = t9.xor(t14);
    let t20 = t11.xor(t16);
    let t21 = t17.xor(y20);
    let t22 = t18.xor(y19);
    let t23 = t19.xor(y21);
    let t24 = t20.xor(y18);

    let t25 = t21.xor(t22);
    let t26 = t21.and(t23);
    let t27 = t24.xor(t26);
    let t28 = t25.and(t27);
    let t29 = t28.xor(t22);
    let t30 = t23.xor(t24);
    let t31 = t22.xor(t26);
    let t32 = t31.and(t30);
    let t33 = t32.xor(t24);
    let t34 = t23.xor(t33);
    let t35 = t27.xor(t33);
    let t36 = t24.and(t35);
    let t37 = t36.xor(t34);
    let t38 = t27.xor(t36);
    let t39 = t29.and(t38);
    let t40 = t25.xor(t39);

    let t41 = t40.xor(t37);
    let t42 = t29.xor(t33);
    let t43 = t29.xor(t40);
    let t44 = t33.xor(t37);
    let t45 = t42.xor(t41);
    let z0 = t44.and(y15);
    let z1 = t37.and(y6);
    let z2 = t33.and(x7);
    let z3 = t43.and(y16);
    let z4 = t40.and(y1);
    let z5 = t29.and(y7);
    let z6 = t42.and(y11);
    let z7 = t45.and(y17);
    let z8 = t41.and(y10);
    let z9 = t44.and(y12);
    let z10 = t37.and(y3);
    let z11 = t33.and(y4);
    let z12 = t43.and(y13);
    let z13 = t40.and(y5);
    let z14 = t29.and(y2);
    let z15 = t42.and(y9);
    let z16 = t45.and(y14);
    let z17 = t41.and(y8);

    // Bottom linear transformation; s1, s2, s6 and s7 are the complements
    // of what is computed here (the 0x63).
    let t46 = z15.xor(z16);
    let t47 = z10.xor(z11);
    let t48 = z5.xor(z13);
    let t49 = z9.xor(z10);
    let t50 = z2.xor(z12);
    let t51 = z2.xor(z5);
    let t52 = z7.xor(z8);
    let t53 = z0.xor(z3);
    let t54 = z6.xor(z7);
    let t55 = z16.xor(z17);
    let t56 = z12.xor(t48);
    let t57 = t50.xor(t53);
    let t58 = z4.xor(t46);
    let t59 = z3.xor(t54);
    let t60 = t46.xor(t57);
    let t61 = z14.xor(t57);
    let t62 = t52.xor(t58);
    let t63 = t49.xor(t58);
    let t64 = z4.xor(t59);
    let t65 = t61.xor(t62);
    let t66 = z1.xor(t63);
    let s0 = t59.xor(t63);
    let s6 = t56.xor(t62);
    let s7 = t48.xor(t60);
    let t67 = t64.xor(t65);
    let s3 = t53.xor(t66);
    let s4 = t51.xor(t66);
    let s5 = t47.xor(t65);
    let s1 = t64.xor(s3);
    let s2 = t55.xor(t67);

    *q = [s7, s6, s5, s4, s3, s2, s1, s0];
}

#[inline(always)]
fn shift_rows<L: Lanes>(q: &mut [L; 8]) {
    for p in q.iter_mut() {
        *p = p.shift_rows();
    }
}

/// MixColumns: out_r = 2·(a_r + a_{r+1}) + a_{r+1} + (a_{r+2} + a_{r+3}),
/// where the last sum is the first one rotated by two rows.
#[inline(always)]
fn mix_columns<L: Lanes>(a: &mut [L; 8]) {
    // Indices are constants after unrolling; bounds checks fold away.
    #![allow(clippy::indexing_slicing)]
    let r1 = a.map(L::rotate_rows_1);
    let [t0, t1, t2, t3, t4, t5, t6, t7] = [0, 1, 2, 3, 4, 5, 6, 7].map(|b| a[b].xor(r1[b]));
    // Doubling t: plane b takes plane b - 1; plane 7 wraps into 0, 1, 3, 4
    // (x^8 = x^4 + x^3 + x + 1).
    let doubled = [t7, t0.xor(t7), t1, t2.xor(t7), t3.xor(t7), t4, t5, t6];
    let t = [t0, t1, t2, t3, t4, t5, t6, t7];
    for b in 0..8 {
        a[b] = doubled[b].xor(r1[b]).xor(t[b].rotate_rows_2());
    }
}

#[inline(always)]
fn add_round_key<L: Lanes>(q: &mut [L; 8], key: &[[u8; 16]; 8]) {
    for (p, k) in q.iter_mut().zip(key) {
        *p = p.xor(L::load(k));
    }
}

/// The 15 AES-256 round keys as planes (each key byte's bit `b` spread to a
/// whole byte of plane `b`: the same key for all eight blocks), with the
/// S-box constant added to rounds 1-14. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RoundKeys([[[u8; 16]; 8]; ROUNDS + 1]);

impl RoundKeys {
    pub fn new(key: &[u8; 32]) -> RoundKeys {
        let mut schedule = expand_key(key);
        let mut out = RoundKeys([[[0; 16]; 8]; ROUNDS + 1]);
        for (round, (planes, bytes)) in out.0.iter_mut().zip(schedule.iter()).enumerate() {
            let constant = if round == 0 { 0 } else { 0x63 };
            for (b, plane) in planes.iter_mut().enumerate() {
                for (p, from) in plane.iter_mut().zip(TRANSPOSE_BYTES) {
                    let k = bytes.get(from).copied().unwrap_or(0);
                    // 0x00 or 0xff, without a branch on the key bit.
                    *p = 0u8.wrapping_sub(((k ^ constant) >> b) & 1);
                }
            }
        }
        schedule.zeroize();
        out
    }
}

/// Encrypts eight blocks.
#[inline(always)]
pub fn encrypt_batch<L: Lanes>(keys: &RoundKeys, blocks: &[[u8; 16]; BATCH_BLOCKS]) -> [L; 8] {
    let mut q = blocks.each_ref().map(|b| L::load(b).transpose_bytes());
    transpose(&mut q);
    let [first, middle @ .., last] = &keys.0;
    add_round_key(&mut q, first);
    for key in middle {
        sub_bytes_without_constant(&mut q);
        shift_rows(&mut q);
        mix_columns(&mut q);
        add_round_key(&mut q, key);
    }
    sub_bytes_without_constant(&mut q);
    shift_rows(&mut q);
    add_round_key(&mut q, last);
    transpose(&mut q);
    q.map(L::transpose_bytes)
}

/// Encrypts one block (GCM's hash key and tests): a batch with seven unused
/// blocks.
pub fn encrypt_block<L: Lanes>(keys: &RoundKeys, block: &[u8; 16]) -> [u8; 16] {
    let mut blocks = [*block, [0; 16], [0; 16], [0; 16], [0; 16], [0; 16], [0; 16], [0; 16]];
    let [out, ..] = encrypt_batch::<L>(keys, &blocks);
    let mut bytes = [0u8; 16];
    out.xor_into(&mut bytes);
    blocks.zeroize();
    bytes
}

// --- The key schedule (FIPS-197 section 5.2), byte-wise and constant time.

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, without
/// branches or lookups on the operands.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0;
    for _ in 0..8 {
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// The AES S-box as arithmetic: inversion (x^254; 0 maps to 0), then the
/// affine map. Only the key schedule uses it (four bytes per word).
fn sbox(x: u8) -> u8 {
    let x2 = gf_mul(x, x);
    let x3 = gf_mul(x2, x);
    let x6 = gf_mul(x3, x3);
    let x12 = gf_mul(x6, x6);
    let x15 = gf_mul(x12, x3);
    let x30 = gf_mul(x15, x15);
    let x60 = gf_mul(x30, x30);
    let x120 = gf_mul(x60, x60);
    let x126 = gf_mul(x120, x6);
    let x252 = gf_mul(x126, x126);
    let inverse = gf_mul(x252, x2);
    inverse ^ inverse.rotate_left(1) ^ inverse.rotate_left(2) ^ inverse.rotate_left(3) ^ inverse.rotate_left(4) ^ 0x63
}

/// The 15 round keys of AES-256, as bytes.
fn expand_key(key: &[u8; 32]) -> [[u8; 16]; ROUNDS + 1] {
    // Every index is below 4 * (ROUNDS + 1) by the loop bounds.
    #![allow(clippy::indexing_slicing)]
    let mut words = [[0u8; 4]; 4 * (ROUNDS + 1)];
    let (key_words, _) = key.as_chunks::<4>();
    for (w, k) in words.iter_mut().zip(key_words) {
        *w = *k;
    }
    let mut rcon = 1u8;
    for i in 8..words.len() {
        let mut t = words[i - 1];
        if i % 8 == 0 {
            t = [sbox(t[1]) ^ rcon, sbox(t[2]), sbox(t[3]), sbox(t[0])];
            rcon = gf_mul(rcon, 2);
        } else if i % 8 == 4 {
            t = t.map(sbox);
        }
        let back = words[i - 8];
        words[i] = [0, 1, 2, 3].map(|j| back[j] ^ t[j]);
    }
    let mut out = [[0u8; 16]; ROUNDS + 1];
    for (round, rk) in out.iter_mut().enumerate() {
        for (j, byte) in rk.iter_mut().enumerate() {
            *byte = words[4 * round + j / 4][j % 4];
        }
    }
    words.zeroize();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use aes::cipher::{BlockEncrypt, KeyInit};
    use proptest::prelude::*;

    /// Runs `$test::<L>()` for every lane type this target has, so the wasm
    /// test run covers the simd128 lanes and the portable ones alike.
    macro_rules! for_each_lanes {
        ($test:ident) => {
            $test::<PortableLanes>();
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            $test::<SimdLanes>();
        };
    }

    #[test]
    fn arithmetic_sbox_known_values() {
        // FIPS-197 figure 7.
        for (x, s) in [(0x00, 0x63), (0x01, 0x7c), (0x53, 0xed), (0x10, 0xca), (0xc9, 0xdd), (0xff, 0x16)] {
            assert_eq!(sbox(x), s, "S({x:#04x})");
        }
    }

    /// The circuit against the arithmetic S-box, for all 256 bytes: two
    /// batches of 128 bytes, byte j of block k holding 16k + j (+ 128).
    fn circuit_is_the_sbox<L: Lanes>() {
        for offset in [0u8, 128] {
            let blocks: [[u8; 16]; 8] = core::array::from_fn(|k| core::array::from_fn(|j| offset + (16 * k + j) as u8));
            let mut q = blocks.each_ref().map(|b| L::load(b));
            transpose(&mut q);
            sub_bytes_without_constant(&mut q);
            for (b, p) in q.iter_mut().enumerate() {
                if (0x63 >> b) & 1 == 1 {
                    *p = p.xor(L::splat(0xff));
                }
            }
            transpose(&mut q);
            for (k, lanes) in q.iter().enumerate() {
                let mut out = [0u8; 16];
                lanes.xor_into(&mut out);
                for (j, byte) in out.iter().enumerate() {
                    assert_eq!(*byte, sbox(blocks[k][j]), "S({:#04x})", blocks[k][j]);
                }
            }
        }
    }

    #[test]
    fn circuit_is_the_sbox_for_every_byte() {
        for_each_lanes!(circuit_is_the_sbox);
    }

    /// FIPS-197 appendix C.3: AES-256, one block.
    fn fips197_c3<L: Lanes>() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let plaintext: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let out = encrypt_block::<L>(&RoundKeys::new(&key), &plaintext);
        assert_eq!(hex::encode(out), "8ea2b7ca516745bfeafc49904b496089");
    }

    #[test]
    fn aes256_fips197_c3() {
        for_each_lanes!(fips197_c3);
    }

    /// FIPS-197 appendix A.3: the expanded key of the AES-256 example.
    #[test]
    fn key_expansion_fips197_a3() {
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4").unwrap();
        let rk = expand_key(&key.try_into().unwrap());
        assert_eq!(hex::encode(rk[2]), "9ba354118e6925afa51a8b5f2067fcde");
        assert_eq!(hex::encode(rk[14]), "fe4890d1e6188d0b046df344706c631e");
    }

    fn same_as_crate<L: Lanes>(key: &[u8; 32], blocks: &[[u8; 16]; 8]) {
        let reference = aes::Aes256::new(key.into());
        let out = encrypt_batch::<L>(&RoundKeys::new(key), blocks);
        for (block, lanes) in blocks.iter().zip(out) {
            let mut expected = aes::Block::from(*block);
            reference.encrypt_block(&mut expected);
            let mut got = [0u8; 16];
            lanes.xor_into(&mut got);
            assert_eq!(got, <[u8; 16]>::from(expected));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Eight random blocks under a random key, against the `aes` crate.
        #[test]
        fn same_as_aes_crate(key in any::<[u8; 32]>(), blocks in any::<[[u8; 16]; 8]>()) {
            same_as_crate::<PortableLanes>(&key, &blocks);
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            same_as_crate::<SimdLanes>(&key, &blocks);
        }
    }
}
