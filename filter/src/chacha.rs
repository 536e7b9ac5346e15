//! ChaCha20-Poly1305 (RFC 8439) whose ChaCha20 computes four blocks at once,
//! for the filter inside V8.
//!
//! The `chacha20` crate has SSE2/AVX2/NEON backends but none for wasm
//! simd128, so in the filter it ran its scalar code: ~63 % of the codec's
//! time in V8 (bench/RESULTS.md). Here the 16 state words of four consecutive
//! blocks sit in 32-bit × 4 lanes (lane i = block i), so each round step is
//! one SIMD instruction for four blocks. The round code is generic over the
//! lane type: [`SimdLanes`] (wasm32 `v128`) is what the filter runs,
//! [`PortableLanes`] (plain arrays) runs the same code natively so the
//! algorithm is tested there too. Natively the filter keeps the RustCrypto
//! AEAD (which has AVX2), see `cipher.rs`.
//!
//! The output is byte-identical to the `chacha20poly1305` crate (the stored
//! format depends on it): the Poly1305 key is block 0 of the keystream, data
//! blocks count from 1, and the MAC covers AAD and ciphertext, each padded to
//! 16 bytes, then both lengths as little-endian u64, with `poly1305_mac.rs`
//! (the `poly1305` crate's per-block function did not inline in the filter
//! and cost as much as ChaCha20; a two-block simd128 Poly1305 was no faster
//! in V8: bench/RESULTS.md). Opening verifies the tag in constant time
//! (`subtle`) before decrypting anything, as the crate does.

use crate::cipher::{AeadError, KEY_LEN, NONCE_LEN, TAG_LEN};
use core::marker::PhantomData;
use crate::poly1305_mac::Poly1305;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// "expand 32-byte k", the ChaCha constant words.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
const BLOCK_LEN: usize = 64;
/// Four blocks: what one pass of the round code produces.
const GROUP_LEN: usize = 4 * BLOCK_LEN;
/// The 32-bit block counter starts at 1 for data, so a message may have at
/// most 2^32 - 1 blocks (the limit the `chacha20poly1305` crate enforces).
const MAX_BLOCKS: u64 = u32::MAX as u64;

/// Four u32 lanes with the operations a ChaCha20 round needs.
pub trait Lanes: Copy {
    fn splat(x: u32) -> Self;
    fn from_words(w: [u32; 4]) -> Self;
    fn add(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn rotl16(self) -> Self;
    fn rotl12(self) -> Self;
    fn rotl8(self) -> Self;
    fn rotl7(self) -> Self;
    /// 4×4 transpose: lane j of input i becomes lane i of output j, turning
    /// "word w of blocks 0..3" into "words w..w+3 of block j".
    fn transpose(x: [Self; 4]) -> [Self; 4];
    /// XORs the four words, little-endian, into `dst`.
    fn xor_into(self, dst: &mut [u8; 16]);
}

/// Plain `[u32; 4]` lanes: the reference implementation, used natively.
#[derive(Clone, Copy)]
pub struct PortableLanes([u32; 4]);

impl PortableLanes {
    #[inline(always)]
    fn map2(self, o: Self, f: impl Fn(u32, u32) -> u32) -> Self {
        let [a0, a1, a2, a3] = self.0;
        let [b0, b1, b2, b3] = o.0;
        PortableLanes([f(a0, b0), f(a1, b1), f(a2, b2), f(a3, b3)])
    }

    #[inline(always)]
    fn rotl(self, n: u32) -> Self {
        PortableLanes(self.0.map(|x| x.rotate_left(n)))
    }
}

impl Lanes for PortableLanes {
    #[inline(always)]
    fn splat(x: u32) -> Self {
        PortableLanes([x; 4])
    }
    #[inline(always)]
    fn from_words(w: [u32; 4]) -> Self {
        PortableLanes(w)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.map2(o, u32::wrapping_add)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self.map2(o, |a, b| a ^ b)
    }
    #[inline(always)]
    fn rotl16(self) -> Self {
        self.rotl(16)
    }
    #[inline(always)]
    fn rotl12(self) -> Self {
        self.rotl(12)
    }
    #[inline(always)]
    fn rotl8(self) -> Self {
        self.rotl(8)
    }
    #[inline(always)]
    fn rotl7(self) -> Self {
        self.rotl(7)
    }
    #[inline(always)]
    fn transpose(x: [Self; 4]) -> [Self; 4] {
        let [a, b, c, d] = x.map(|l| l.0);
        [0, 1, 2, 3].map(|j| match j {
            0 => PortableLanes([a[0], b[0], c[0], d[0]]),
            1 => PortableLanes([a[1], b[1], c[1], d[1]]),
            2 => PortableLanes([a[2], b[2], c[2], d[2]]),
            _ => PortableLanes([a[3], b[3], c[3], d[3]]),
        })
    }
    #[inline(always)]
    fn xor_into(self, dst: &mut [u8; 16]) {
        for (out, word) in dst.chunks_exact_mut(4).zip(self.0) {
            for (o, k) in out.iter_mut().zip(word.to_le_bytes()) {
                *o ^= k;
            }
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
    fn splat(x: u32) -> Self {
        SimdLanes(core::arch::wasm32::u32x4_splat(x))
    }
    #[inline(always)]
    fn from_words(w: [u32; 4]) -> Self {
        SimdLanes(core::arch::wasm32::u32x4(w[0], w[1], w[2], w[3]))
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        SimdLanes(core::arch::wasm32::u32x4_add(self.0, o.0))
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        SimdLanes(core::arch::wasm32::v128_xor(self.0, o.0))
    }
    // Rotation by 16 is a 16-bit lane swap (pshuflw + pshufhw in V8 on x86).
    #[inline(always)]
    fn rotl16(self) -> Self {
        use core::arch::wasm32::i8x16_shuffle;
        SimdLanes(i8x16_shuffle::<2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13>(self.0, self.0))
    }
    #[inline(always)]
    fn rotl12(self) -> Self {
        use core::arch::wasm32::{u32x4_shl, u32x4_shr, v128_or};
        SimdLanes(v128_or(u32x4_shl(self.0, 12), u32x4_shr(self.0, 20)))
    }
    // A byte shuffle would do, but V8 rebuilds a `pshufb` mask from two
    // 64-bit constants at every use (five instructions); shifts take three.
    #[inline(always)]
    fn rotl8(self) -> Self {
        use core::arch::wasm32::{u32x4_shl, u32x4_shr, v128_or};
        SimdLanes(v128_or(u32x4_shl(self.0, 8), u32x4_shr(self.0, 24)))
    }
    #[inline(always)]
    fn rotl7(self) -> Self {
        use core::arch::wasm32::{u32x4_shl, u32x4_shr, v128_or};
        SimdLanes(v128_or(u32x4_shl(self.0, 7), u32x4_shr(self.0, 25)))
    }
    #[inline(always)]
    fn transpose(x: [Self; 4]) -> [Self; 4] {
        use core::arch::wasm32::{i32x4_shuffle, i64x2_shuffle};
        let [a, b, c, d] = x.map(|l| l.0);
        let ab_lo = i32x4_shuffle::<0, 4, 1, 5>(a, b); // a0 b0 a1 b1
        let ab_hi = i32x4_shuffle::<2, 6, 3, 7>(a, b); // a2 b2 a3 b3
        let cd_lo = i32x4_shuffle::<0, 4, 1, 5>(c, d);
        let cd_hi = i32x4_shuffle::<2, 6, 3, 7>(c, d);
        [
            SimdLanes(i64x2_shuffle::<0, 2>(ab_lo, cd_lo)),
            SimdLanes(i64x2_shuffle::<1, 3>(ab_lo, cd_lo)),
            SimdLanes(i64x2_shuffle::<0, 2>(ab_hi, cd_hi)),
            SimdLanes(i64x2_shuffle::<1, 3>(ab_hi, cd_hi)),
        ]
    }
    #[inline(always)]
    fn xor_into(self, dst: &mut [u8; 16]) {
        use core::arch::wasm32::{v128, v128_xor};
        let ptr = dst.as_mut_ptr().cast::<v128>();
        // SAFETY: `dst` is 16 valid, exclusively borrowed bytes; the
        // unaligned read and write need no alignment. wasm is little-endian,
        // so lane i lands in bytes 4i..4i+4 as ChaCha20 serializes words.
        unsafe { ptr.write_unaligned(v128_xor(ptr.read_unaligned(), self.0)) }
    }
}

/// The lanes the filter uses on this target.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type DefaultLanes = SimdLanes;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type DefaultLanes = PortableLanes;

#[inline(always)]
fn quarter_round<L: Lanes>(x: &mut [L; 16], a: usize, b: usize, c: usize, d: usize) {
    // Indices are constants after inlining; bounds checks fold away.
    #![allow(clippy::indexing_slicing)]
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor(x[a]).rotl16();
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor(x[c]).rotl12();
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor(x[a]).rotl8();
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor(x[c]).rotl7();
}

/// Key and nonce as ChaCha20 state words; zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct KeyWords {
    key: [u32; 8],
    nonce: [u32; 3],
}

/// The initial state of blocks `counter..counter + 4`, lane i = block i.
#[inline(always)]
fn initial_state<L: Lanes>(k: &KeyWords, counter: u32) -> [L; 16] {
    let [c0, c1, c2, c3] = SIGMA.map(L::splat);
    let [k0, k1, k2, k3, k4, k5, k6, k7] = k.key.map(L::splat);
    let [n0, n1, n2] = k.nonce.map(L::splat);
    // Blocks past 2^32 - 1 only appear in the unused tail of the last group
    // (lengths are checked against MAX_BLOCKS), so wrapping is harmless.
    let counters = L::from_words([0, 1, 2, 3].map(|i| counter.wrapping_add(i)));
    [c0, c1, c2, c3, k0, k1, k2, k3, k4, k5, k6, k7, counters, n0, n1, n2]
}

/// XORs into `group` the keystream of blocks `counter..counter + 4`.
#[inline(always)]
fn xor_group<L: Lanes>(k: &KeyWords, counter: u32, group: &mut [u8; GROUP_LEN]) {
    let mut x = initial_state::<L>(k, counter);
    for _ in 0..10 {
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
    }
    // The initial state is rebuilt rather than kept: 16 more live vectors
    // than the CPU has registers would spill inside the rounds.
    for (w, i) in x.iter_mut().zip(initial_state::<L>(k, counter)) {
        *w = w.add(i);
    }
    // Transposing four words of the four blocks gives, in each lane, 16
    // consecutive keystream bytes of one block.
    let [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15] = x;
    let quads = [[x0, x1, x2, x3], [x4, x5, x6, x7], [x8, x9, x10, x11], [x12, x13, x14, x15]].map(L::transpose);
    let (blocks, _) = group.as_chunks_mut::<BLOCK_LEN>();
    for (quad, by_block) in quads.into_iter().enumerate() {
        for (block, lanes) in blocks.iter_mut().zip(by_block) {
            let (pieces, _) = block.as_chunks_mut::<16>();
            if let Some(piece) = pieces.get_mut(quad) {
                lanes.xor_into(piece);
            }
        }
    }
}

/// XORs the ChaCha20 keystream starting at block `counter` into `buf`.
fn apply_keystream<L: Lanes>(k: &KeyWords, mut counter: u32, buf: &mut [u8]) {
    let (groups, tail) = buf.as_chunks_mut::<GROUP_LEN>();
    for group in groups {
        xor_group::<L>(k, counter, group);
        counter = counter.wrapping_add(4);
    }
    if !tail.is_empty() {
        let mut stream = Zeroizing::new([0u8; GROUP_LEN]);
        xor_group::<L>(k, counter, &mut stream);
        for (b, s) in tail.iter_mut().zip(stream.iter()) {
            *b ^= s;
        }
    }
}

fn le_words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    let (words, _) = bytes.as_chunks::<4>();
    for (w, b) in out.iter_mut().zip(words) {
        *w = u32::from_le_bytes(*b);
    }
    out
}

/// ChaCha20-Poly1305 over lanes `L`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChaCha20Poly1305Lanes<L: Lanes> {
    key: [u32; 8],
    #[zeroize(skip)]
    lanes: PhantomData<L>,
}

/// The AEAD the filter uses on this target (simd128 lanes in wasm).
pub type ChaCha20Poly1305 = ChaCha20Poly1305Lanes<DefaultLanes>;

impl<L: Lanes> ChaCha20Poly1305Lanes<L> {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        ChaCha20Poly1305Lanes { key: le_words(key), lanes: PhantomData }
    }

    /// The keystream for this nonce and the message's Poly1305 state (keyed
    /// with block 0), with `aad` already absorbed.
    fn start(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], len: usize) -> Result<(KeyWords, Poly1305), AeadError> {
        if len as u64 / BLOCK_LEN as u64 >= MAX_BLOCKS {
            return Err(AeadError);
        }
        let k = KeyWords { key: self.key, nonce: le_words(nonce) };
        let mut block0 = Zeroizing::new([0u8; GROUP_LEN]);
        xor_group::<L>(&k, 0, &mut block0);
        let (mac_key, _) = block0.as_chunks::<32>();
        let mac_key = mac_key.first().ok_or(AeadError)?;
        let mut mac = Poly1305::new(mac_key);
        mac.update_padded(aad);
        Ok((k, mac))
    }

    fn finish_mac(mut mac: Poly1305, aad: &[u8], ciphertext: &[u8]) -> Poly1305 {
        mac.update_padded(ciphertext);
        // Both lengths as little-endian u64, AAD first: one u128, little-endian.
        let lengths = (u128::from(ciphertext.len() as u64) << 64) | u128::from(aad.len() as u64);
        mac.update_padded(&lengths.to_le_bytes());
        mac
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let (k, mac) = self.start(nonce, aad, buf.len())?;
        apply_keystream::<L>(&k, 1, buf);
        Ok(Self::finish_mac(mac, aad, buf).finalize())
    }

    /// Decrypts `buf` in place if `tag` authenticates it (constant-time
    /// comparison); on error `buf` is left as it was, still ciphertext.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        let (k, mac) = self.start(nonce, aad, buf.len())?;
        let expected = Self::finish_mac(mac, aad, buf).finalize();
        if !bool::from(expected.ct_eq(tag)) {
            return Err(AeadError);
        }
        apply_keystream::<L>(&k, 1, buf);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::cipher_tests::{aead_proptests, for_edge_cases, same_as_reference, InPlaceAead};
    use aead::KeyInit;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    fn array<const N: usize>(s: &str) -> [u8; N] {
        unhex(s).try_into().unwrap()
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

    /// RFC 8439 section 2.4.2: ChaCha20 encryption, counter 1.
    fn rfc8439_2_4_2<L: Lanes>() {
        let k = KeyWords {
            key: le_words(&array::<32>("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")),
            nonce: le_words(&array::<12>("000000000000004a00000000")),
        };
        let mut buf = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        apply_keystream::<L>(&k, 1, &mut buf);
        let expected = unhex(
            "6e2e359a2568f98041ba0728dd0d6981 e97e7aec1d4360c20a27afccfd9fae0b f91b65c5524733ab8f593dabcd62b357
             1639d624e65152ab8f530c359f0861d8 07ca0dbf500d6a6156a38e088a22b65e 52bc514d16ccf806818ce91ab7793736
             5af90bbf74a35be6b40b8eedf2785e42 874d",
        );
        assert_eq!(hex::encode(&buf), hex::encode(expected));
    }

    #[test]
    fn chacha20_rfc8439_2_4_2() {
        for_each_lanes!(rfc8439_2_4_2);
    }

    /// RFC 8439 section 2.8.2: the AEAD, sealed and opened; a flipped bit in
    /// the ciphertext, the AAD or the tag is refused and leaves the buffer as
    /// it was (no plaintext released).
    fn rfc8439_2_8_2<L: Lanes>() {
        let key = array::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let nonce = array::<12>("070000004041424344454647");
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ciphertext = unhex(
            "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6 3dbea45e8ca9671282fafb69da92728b
             1a71de0a9e060b2905d6a5b67ecd3b36 92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b 6116",
        );
        let tag = array::<16>("1ae10b594f09e26a7e902ecbd0600691");
        let aead = ChaCha20Poly1305Lanes::<L>::new(&key);

        let mut buf = plaintext.to_vec();
        assert_eq!(aead.seal(&nonce, &aad, &mut buf), Ok(tag));
        assert_eq!(buf, ciphertext);
        assert_eq!(aead.open(&nonce, &aad, &mut buf, &tag), Ok(()));
        assert_eq!(buf, plaintext);

        let mut bad = ciphertext.clone();
        bad[100] ^= 0x01;
        assert_eq!(aead.open(&nonce, &aad, &mut bad, &tag), Err(AeadError));
        assert_eq!(bad[..100], ciphertext[..100], "refused ciphertext must stay ciphertext");
        let mut buf = ciphertext.clone();
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 0x80;
        assert_eq!(aead.open(&nonce, &bad_aad, &mut buf, &tag), Err(AeadError));
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x01;
        assert_eq!(aead.open(&nonce, &aad, &mut buf, &bad_tag), Err(AeadError));
        assert_eq!(buf, ciphertext);
    }

    #[test]
    fn aead_rfc8439_2_8_2() {
        for_each_lanes!(rfc8439_2_8_2);
    }

    impl<L: Lanes> InPlaceAead for ChaCha20Poly1305Lanes<L> {
        fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
            ChaCha20Poly1305Lanes::seal(self, nonce, aad, buf)
        }
        fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
            ChaCha20Poly1305Lanes::open(self, nonce, aad, buf, tag)
        }
    }

    /// Against the `chacha20poly1305` crate.
    fn same_as_crate<L: Lanes>(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) {
        let reference = chacha20poly1305::ChaCha20Poly1305::new(key.into());
        same_as_reference(&reference, &ChaCha20Poly1305Lanes::<L>::new(key), nonce, aad, plaintext);
    }

    /// Lengths around the block (64) and four-block group (256) boundaries.
    const EDGE_LENGTHS: [usize; 14] = [0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 511, 1000, 65536];

    fn edge_lengths<L: Lanes>() {
        for_edge_cases(&EDGE_LENGTHS, same_as_crate::<L>);
    }

    #[test]
    fn same_as_crate_at_edge_lengths() {
        for_each_lanes!(edge_lengths);
    }

    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![proptest::sample::select(EDGE_LENGTHS.to_vec()), 0..2048usize, 2048..70_000usize]
    }

    aead_proptests!(cases: 64, length: length(), same: same_as_crate, new: ChaCha20Poly1305::new);
}
