//! Checks shared by the filter's wasm ciphers (`chacha.rs`, `gcm.rs`,
//! `ghash.rs`): the AEADs are compared with their RustCrypto counterparts at
//! the same edge lengths and random inputs, and tampered with the same way.
//! Test builds only.

use crate::cipher::{AeadError, NONCE_LEN, TAG_LEN};
use aead::consts::{U12, U16};
use aead::AeadInPlace;
use proptest::prelude::*;

/// The in-place interface both wasm AEADs have.
pub trait InPlaceAead {
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError>;
    fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError>;
}

/// Seals with `reference` and with `aead`, compares ciphertext and tag, then
/// opens with `aead`.
pub fn same_as_reference<R, A>(reference: &R, aead: &A, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8])
where
    R: AeadInPlace<NonceSize = U12, TagSize = U16>,
    A: InPlaceAead,
{
    let mut expected = plaintext.to_vec();
    let expected_tag: [u8; 16] = reference.encrypt_in_place_detached(nonce.into(), aad, &mut expected).map(Into::into).unwrap_or_default();
    let mut buf = plaintext.to_vec();
    let tag = aead.seal(nonce, aad, &mut buf);
    assert!(buf == expected, "ciphertext differs, len {}", plaintext.len());
    assert_eq!(tag, Ok(expected_tag), "tag differs, len {}", plaintext.len());
    assert_eq!(aead.open(nonce, aad, &mut buf, &expected_tag), Ok(()));
    assert!(buf == plaintext, "round trip differs, len {}", plaintext.len());
}

/// A fixed stream of test bytes (xorshift64), the same on every run.
pub fn byte_stream() -> impl FnMut() -> u8 {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.to_le_bytes()[0]
    }
}

/// Calls `check(key, nonce, aad, plaintext)` for each of `lengths` with AAD of
/// 0, 1, 16, 17 and 44 bytes, all bytes from [`byte_stream`].
pub fn for_edge_cases(lengths: &[usize], mut check: impl FnMut(&[u8; 32], &[u8; 12], &[u8], &[u8])) {
    let mut next = byte_stream();
    for &len in lengths {
        for aad_len in [0, 1, 16, 17, 44] {
            let key: [u8; 32] = core::array::from_fn(|_| next());
            let nonce: [u8; 12] = core::array::from_fn(|_| next());
            let aad: Vec<u8> = (0..aad_len).map(|_| next()).collect();
            let plaintext: Vec<u8> = (0..len).map(|_| next()).collect();
            check(&key, &nonce, &aad, &plaintext);
        }
    }
}

/// A plaintext of `len` bytes that is not all one value.
pub fn plaintext(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|i| i.to_le_bytes()[0].wrapping_mul(31) ^ fill).collect()
}

/// Flipping bit `bit` of ciphertext byte `at`, or of the tag, is refused and
/// leaves the buffer as it was (no plaintext released).
pub fn tampering_is_refused<A: InPlaceAead>(aead: &A, aad: &[u8], len: usize, at: usize, bit: u32) -> Result<(), TestCaseError> {
    let nonce = [9; 12];
    let mut sealed: Vec<u8> = (0..len).map(|i| i.to_le_bytes()[0]).collect();
    let tag = aead.seal(&nonce, aad, &mut sealed).map_err(|_| TestCaseError::fail("seal failed"))?;
    let mut bad = sealed.clone();
    if let Some(b) = bad.get_mut(at) {
        *b ^= 1 << bit;
    }
    let tampered = bad.clone();
    prop_assert_eq!(aead.open(&nonce, aad, &mut bad, &tag), Err(AeadError));
    prop_assert!(bad == tampered);
    let mut bad_tag = tag;
    if let Some(b) = bad_tag.get_mut(at % TAG_LEN) {
        *b ^= 1 << bit;
    }
    let mut buf = sealed.clone();
    prop_assert_eq!(aead.open(&nonce, aad, &mut buf, &bad_tag), Err(AeadError));
    prop_assert!(buf == sealed);
    Ok(())
}

/// The random-input tests of a wasm AEAD, against its reference:
/// `same_as_crate_random` (`$same::<PortableLanes>` and, in wasm,
/// `$same::<SimdLanes>`, for keys, nonces, AAD and lengths from `$length`)
/// and `tampering_is_refused` (on the AEAD `$new(&key)` builds).
macro_rules! aead_proptests {
    (cases: $cases:expr, length: $length:expr, same: $same:ident, new: $new:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases($cases))]

            #[test]
            fn same_as_crate_random(
                key in any::<[u8; 32]>(),
                nonce in any::<[u8; 12]>(),
                aad in proptest::collection::vec(any::<u8>(), 0..80),
                len in $length,
                fill in any::<u8>(),
            ) {
                let plaintext = $crate::cipher_tests::plaintext(len, fill);
                $same::<PortableLanes>(&key, &nonce, &aad, &plaintext);
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                $same::<SimdLanes>(&key, &nonce, &aad, &plaintext);
            }

            /// Any change to ciphertext or tag is refused, and the buffer
            /// still holds the ciphertext.
            #[test]
            fn tampering_is_refused(
                key in any::<[u8; 32]>(),
                aad in proptest::collection::vec(any::<u8>(), 0..40),
                len in 1..600usize,
                flip_at in any::<proptest::sample::Index>(),
                bit in 0..8u32,
            ) {
                $crate::cipher_tests::tampering_is_refused(&$new(&key), &aad, len, flip_at.index(len), bit)?;
            }
        }
    };
}
pub(crate) use aead_proptests;
