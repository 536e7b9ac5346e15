//! The two AEADs an object can be sealed with, behind one small enum.
//!
//! Every object records its suite (see FORMAT.md, "Envelope"), so reading never
//! depends on the gateway's current default.

#[cfg(not(target_arch = "wasm32"))]
use aead::{
    consts::{U12, U16},
    AeadInPlace, KeyInit,
};
use zeroize::Zeroizing;

/// ChaCha20-Poly1305 as the filter runs it. In wasm, `chacha.rs` (simd128,
/// four blocks at once: the `chacha20` crate has no wasm SIMD backend);
/// natively the RustCrypto crate, which has AVX2. Both produce the same bytes
/// (chacha.rs tests this, natively and compiled to wasm under node).
#[cfg(target_arch = "wasm32")]
type ChaCha20Poly1305 = crate::chacha::ChaCha20Poly1305;
#[cfg(not(target_arch = "wasm32"))]
type ChaCha20Poly1305 = chacha20poly1305::ChaCha20Poly1305;

/// AES-256-GCM as the filter runs it. In wasm, `gcm.rs` (AES bitsliced in
/// simd128, eight blocks at once: the `aes` crate's 32-bit fixslice ran at
/// ~90 MB/s in V8); natively the RustCrypto crate, which has AES-NI and
/// PCLMULQDQ. Both produce the same bytes (gcm.rs tests this, natively and
/// compiled to wasm under node).
#[cfg(target_arch = "wasm32")]
type Aes256Gcm = crate::gcm::Aes256Gcm;
#[cfg(not(target_arch = "wasm32"))]
type Aes256Gcm = aes_gcm::Aes256Gcm;

/// AEAD tag length for both suites.
pub const TAG_LEN: usize = 16;
/// AEAD nonce length for both suites.
pub const NONCE_LEN: usize = 12;
/// Key length for both suites.
pub const KEY_LEN: usize = 32;

/// Which AEAD seals an object's chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    ChaCha20Poly1305,
    Aes256Gcm,
}

impl Suite {
    /// The name used in the envelope and in the plugin configuration.
    pub fn name(self) -> &'static str {
        match self {
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
            Suite::Aes256Gcm => "aes-256-gcm",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        match name {
            "chacha20-poly1305" => Some(Suite::ChaCha20Poly1305),
            "aes-256-gcm" => Some(Suite::Aes256Gcm),
            _ => None,
        }
    }

    /// One-byte id mixed into key derivation and key wrapping, so a suite
    /// recorded in the envelope cannot be swapped for another.
    pub fn id(self) -> u8 {
        match self {
            Suite::ChaCha20Poly1305 => 1,
            Suite::Aes256Gcm => 2,
        }
    }
}

/// A keyed AEAD of either suite. The key schedule lives inside the RustCrypto
/// types, `chacha::ChaCha20Poly1305` and `gcm::Aes256Gcm`, which zeroize
/// themselves on drop.
pub enum ChunkCipher {
    ChaCha(Box<ChaCha20Poly1305>),
    Aes(Box<Aes256Gcm>),
}

/// The AEAD refused: wrong key, modified bytes, or a tag that does not match.
/// Opaque on purpose: callers must not learn which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

impl ChunkCipher {
    pub fn new(suite: Suite, key: &Zeroizing<[u8; KEY_LEN]>) -> ChunkCipher {
        match suite {
            #[cfg(target_arch = "wasm32")]
            Suite::ChaCha20Poly1305 => ChunkCipher::ChaCha(Box::new(ChaCha20Poly1305::new(key))),
            #[cfg(not(target_arch = "wasm32"))]
            Suite::ChaCha20Poly1305 => ChunkCipher::ChaCha(Box::new(ChaCha20Poly1305::new(key.as_ref().into()))),
            #[cfg(target_arch = "wasm32")]
            Suite::Aes256Gcm => ChunkCipher::Aes(Box::new(Aes256Gcm::new(key))),
            #[cfg(not(target_arch = "wasm32"))]
            Suite::Aes256Gcm => ChunkCipher::Aes(Box::new(Aes256Gcm::new(key.as_ref().into()))),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        match self {
            #[cfg(target_arch = "wasm32")]
            ChunkCipher::ChaCha(c) => c.seal(nonce, aad, buf),
            #[cfg(not(target_arch = "wasm32"))]
            ChunkCipher::ChaCha(c) => seal_rustcrypto(c.as_ref(), nonce, aad, buf),
            #[cfg(target_arch = "wasm32")]
            ChunkCipher::Aes(c) => c.seal(nonce, aad, buf),
            #[cfg(not(target_arch = "wasm32"))]
            ChunkCipher::Aes(c) => seal_rustcrypto(c.as_ref(), nonce, aad, buf),
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it; on error `buf` holds
    /// no plaintext (the AEAD implementations only decrypt after verifying).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        match self {
            #[cfg(target_arch = "wasm32")]
            ChunkCipher::ChaCha(c) => c.open(nonce, aad, buf, tag),
            #[cfg(not(target_arch = "wasm32"))]
            ChunkCipher::ChaCha(c) => open_rustcrypto(c.as_ref(), nonce, aad, buf, tag),
            #[cfg(target_arch = "wasm32")]
            ChunkCipher::Aes(c) => c.open(nonce, aad, buf, tag),
            #[cfg(not(target_arch = "wasm32"))]
            ChunkCipher::Aes(c) => open_rustcrypto(c.as_ref(), nonce, aad, buf, tag),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn seal_rustcrypto<A>(c: &A, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError>
where
    A: AeadInPlace<NonceSize = U12, TagSize = U16>,
{
    let tag = c.encrypt_in_place_detached(nonce.into(), aad, buf).map_err(|_| AeadError)?;
    Ok(tag.into())
}

#[cfg(not(target_arch = "wasm32"))]
fn open_rustcrypto<A>(c: &A, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError>
where
    A: AeadInPlace<NonceSize = U12, TagSize = U16>,
{
    c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()).map_err(|_| AeadError)
}

/// Fills `out` from the operating system's CSPRNG (WASI `random_get` in Envoy).
pub fn random_bytes(out: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::getrandom(out)
}
