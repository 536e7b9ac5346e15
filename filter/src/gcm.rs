//! AES-256-GCM (NIST SP 800-38D, 96-bit nonces) for the filter inside V8:
//! the bitsliced AES of `bitsliced_aes.rs` in counter mode, eight blocks per
//! pass, and the swizzle-table GHASH of `ghash.rs`.
//!
//! Byte-identical to the `aes-gcm` crate, which natively keeps running (it
//! has AES-NI and PCLMULQDQ): J0 = nonce ‖ 1 masks the tag, data blocks count
//! from 2 (32-bit big-endian counter in the last four bytes), GHASH covers
//! the AAD and the ciphertext, each zero-padded to 16 bytes, then both lengths
//! in bits as big-endian u64. Opening checks the tag in constant time before
//! decrypting anything.

use crate::bitsliced_aes::{encrypt_batch, encrypt_block, Lanes, RoundKeys, BATCH_LEN, BLOCK_LEN};
use crate::cipher::{AeadError, KEY_LEN, NONCE_LEN, TAG_LEN};
use core::marker::PhantomData;
use crate::ghash::GHash;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// GCM's limit: 2^32 - 2 blocks of data (the counter must not wrap into J0).
const MAX_BLOCKS: u64 = (1 << 32) - 2;

/// AES-256-GCM over lanes `L`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Aes256GcmLanes<L: Lanes> {
    round_keys: RoundKeys,
    /// GHASH keyed with H = AES_K(0^128), its tables built once per key;
    /// each message hashes with a copy.
    ghash: GHash,
    #[zeroize(skip)]
    lanes: PhantomData<L>,
}

/// The AEAD the filter uses on this target (simd128 lanes in wasm).
pub type Aes256Gcm = Aes256GcmLanes<crate::bitsliced_aes::DefaultLanes>;

/// Counter block `counter` for this nonce.
#[inline(always)]
fn counter_block(nonce: &[u8; NONCE_LEN], counter: u32) -> [u8; 16] {
    let mut block = [0u8; 16];
    let (head, tail) = block.split_at_mut(NONCE_LEN);
    head.copy_from_slice(nonce);
    tail.copy_from_slice(&counter.to_be_bytes());
    block
}

/// XORs into `batch` the keystream of blocks `counter..counter + 8` (one
/// bitsliced pass, `BATCH_BLOCKS`).
#[inline(always)]
fn xor_batch<L: Lanes>(keys: &RoundKeys, nonce: &[u8; NONCE_LEN], counter: u32, batch: &mut [u8; BATCH_LEN]) {
    let blocks = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| counter_block(nonce, counter.wrapping_add(i)));
    let stream = encrypt_batch::<L>(keys, &blocks);
    let (out, _) = batch.as_chunks_mut::<BLOCK_LEN>();
    for (block, lanes) in out.iter_mut().zip(stream) {
        lanes.xor_into(block);
    }
}

/// XORs the counter-mode keystream starting at block `counter` into `buf`.
fn apply_keystream<L: Lanes>(keys: &RoundKeys, nonce: &[u8; NONCE_LEN], mut counter: u32, buf: &mut [u8]) {
    let (batches, tail) = buf.as_chunks_mut::<BATCH_LEN>();
    for batch in batches {
        xor_batch::<L>(keys, nonce, counter, batch);
        counter = counter.wrapping_add(8);
    }
    if !tail.is_empty() {
        let mut stream = Zeroizing::new([0u8; BATCH_LEN]);
        xor_batch::<L>(keys, nonce, counter, &mut stream);
        for (b, s) in tail.iter_mut().zip(stream.iter()) {
            *b ^= s;
        }
    }
}

impl<L: Lanes> Aes256GcmLanes<L> {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let round_keys = RoundKeys::new(key);
        let hash_key = Zeroizing::new(encrypt_block::<L>(&round_keys, &[0; 16]));
        Aes256GcmLanes { round_keys, ghash: GHash::new(&hash_key), lanes: PhantomData }
    }

    /// The tag over `aad` and `ciphertext`.
    fn tag(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
        let mut ghash = self.ghash.clone();
        ghash.update_padded(aad);
        ghash.update_padded(ciphertext);
        let bits = |len: usize| (len as u64).wrapping_mul(8);
        let lengths = (u128::from(bits(aad.len())) << 64) | u128::from(bits(ciphertext.len()));
        ghash.update_padded(&lengths.to_be_bytes());
        let mut tag: [u8; TAG_LEN] = ghash.finalize();
        let mask = Zeroizing::new(encrypt_block::<L>(&self.round_keys, &counter_block(nonce, 1)));
        for (t, m) in tag.iter_mut().zip(mask.iter()) {
            *t ^= m;
        }
        tag
    }

    fn check_len(len: usize) -> Result<(), AeadError> {
        if len as u64 > MAX_BLOCKS * BLOCK_LEN as u64 {
            return Err(AeadError);
        }
        Ok(())
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        Self::check_len(buf.len())?;
        apply_keystream::<L>(&self.round_keys, nonce, 2, buf);
        Ok(self.tag(nonce, aad, buf))
    }

    /// Decrypts `buf` in place if `tag` authenticates it (constant-time
    /// comparison); on error `buf` is left as it was, still ciphertext.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        Self::check_len(buf.len())?;
        let expected = self.tag(nonce, aad, buf);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(AeadError);
        }
        apply_keystream::<L>(&self.round_keys, nonce, 2, buf);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::bitsliced_aes::PortableLanes;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    use crate::bitsliced_aes::SimdLanes;
    use crate::cipher_tests::{aead_proptests, for_edge_cases, same_as_reference, InPlaceAead};
    use aead::KeyInit;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    macro_rules! for_each_lanes {
        ($test:ident) => {
            $test::<PortableLanes>();
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            $test::<SimdLanes>();
        };
    }

    /// McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)",
    /// test cases 13-16 (AES-256, 96-bit IV): sealed, opened, and refused
    /// after a flipped bit with the buffer left as ciphertext.
    fn gcm_spec_cases<L: Lanes>() {
        let k = "feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308";
        let iv = "cafebabefacedbaddecaf888";
        let p = "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72 1c3c0c95956809532fcf0e2449a6b525
                 b16aedf5aa0de657ba637b39";
        let cases = [
            ("00".repeat(32), "00".repeat(12), String::new(), String::new(), String::new(), "530f8afbc74536b9a963b4f1c4cb738b"),
            ("00".repeat(32), "00".repeat(12), "00".repeat(16), String::new(), "cea7403d4d606b6e074ec5d3baf39d18".to_string(), "d0d1c8a799996bf0265b98b5d48ab919"),
            (
                k.to_string(),
                iv.to_string(),
                format!("{p}1aafd255"),
                String::new(),
                "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa 8cb08e48590dbb3da7b08b1056828838
                 c5f61e6393ba7a0abcc9f662898015ad"
                    .to_string(),
                "b094dac5d93471bdec1a502270e3cc6c",
            ),
            (
                k.to_string(),
                iv.to_string(),
                p.to_string(),
                "feedfacedeadbeeffeedfacedeadbeefabaddad2".to_string(),
                "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa 8cb08e48590dbb3da7b08b1056828838
                 c5f61e6393ba7a0abcc9f662"
                    .to_string(),
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (key, nonce, plaintext, aad, ciphertext, tag) in cases {
            let aead = Aes256GcmLanes::<L>::new(&unhex(&key).try_into().unwrap());
            let nonce: [u8; 12] = unhex(&nonce).try_into().unwrap();
            let (plaintext, aad, ciphertext) = (unhex(&plaintext), unhex(&aad), unhex(&ciphertext));
            let mut buf = plaintext.clone();
            let sealed_tag = aead.seal(&nonce, &aad, &mut buf).unwrap();
            assert_eq!(hex::encode(&buf), hex::encode(&ciphertext));
            assert_eq!(hex::encode(sealed_tag), tag);
            assert_eq!(aead.open(&nonce, &aad, &mut buf, &sealed_tag), Ok(()));
            assert_eq!(buf, plaintext);
            let mut bad_tag = sealed_tag;
            bad_tag[0] ^= 0x80;
            let mut buf = ciphertext.clone();
            assert_eq!(aead.open(&nonce, &aad, &mut buf, &bad_tag), Err(AeadError));
            assert_eq!(buf, ciphertext, "refused ciphertext must stay ciphertext");
        }
    }

    #[test]
    fn gcm_spec_test_cases_13_to_16() {
        for_each_lanes!(gcm_spec_cases);
    }

    impl<L: Lanes> InPlaceAead for Aes256GcmLanes<L> {
        fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
            Aes256GcmLanes::seal(self, nonce, aad, buf)
        }
        fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
            Aes256GcmLanes::open(self, nonce, aad, buf, tag)
        }
    }

    /// Against the `aes-gcm` crate.
    fn same_as_crate<L: Lanes>(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) {
        let reference = aes_gcm::Aes256Gcm::new(key.into());
        same_as_reference(&reference, &Aes256GcmLanes::<L>::new(key), nonce, aad, plaintext);
    }

    /// Lengths around the block (16), GHASH group (64) and AES batch (128)
    /// boundaries. (Tests run unoptimised, where the portable lanes are slow:
    /// the lengths stay small; nothing in the code depends on larger ones.)
    const EDGE_LENGTHS: [usize; 16] = [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4113];

    fn edge_lengths<L: Lanes>() {
        for_edge_cases(&EDGE_LENGTHS, same_as_crate::<L>);
    }

    #[test]
    fn same_as_crate_at_edge_lengths() {
        for_each_lanes!(edge_lengths);
    }

    fn length() -> impl Strategy<Value = usize> {
        prop_oneof![proptest::sample::select(EDGE_LENGTHS.to_vec()), 0..2048usize, 2048..20_000usize]
    }

    aead_proptests!(cases: 48, length: length(), same: same_as_crate, new: Aes256Gcm::new);
}
