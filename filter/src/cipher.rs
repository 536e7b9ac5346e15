//! The two AEADs an object can be sealed with, behind one small enum.
//!
//! Every object records its suite (see FORMAT.md, "Envelope"), so reading never
//! depends on the gateway's current default.

use aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::Zeroizing;

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
/// types, which zeroize themselves on drop (`zeroize` feature of the crates).
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
        let key = aead::Key::<ChaCha20Poly1305>::from_slice(key.as_slice());
        match suite {
            Suite::ChaCha20Poly1305 => ChunkCipher::ChaCha(Box::new(ChaCha20Poly1305::new(key))),
            Suite::Aes256Gcm => ChunkCipher::Aes(Box::new(Aes256Gcm::new(key))),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = aead::Nonce::<ChaCha20Poly1305>::from_slice(nonce);
        let tag = match self {
            ChunkCipher::ChaCha(c) => c.encrypt_in_place_detached(nonce, aad, buf),
            ChunkCipher::Aes(c) => c.encrypt_in_place_detached(nonce, aad, buf),
        }
        .map_err(|_| AeadError)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_slice());
        Ok(out)
    }

    /// Decrypts `buf` in place if `tag` authenticates it; on error `buf` holds
    /// no plaintext (the AEAD implementations only decrypt after verifying).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        let nonce = aead::Nonce::<ChaCha20Poly1305>::from_slice(nonce);
        let tag = aead::Tag::<ChaCha20Poly1305>::from_slice(tag);
        match self {
            ChunkCipher::ChaCha(c) => c.decrypt_in_place_detached(nonce, aad, buf, tag),
            ChunkCipher::Aes(c) => c.decrypt_in_place_detached(nonce, aad, buf, tag),
        }
        .map_err(|_| AeadError)
    }
}

/// Fills `out` from the operating system's CSPRNG (WASI `random_get` in Envoy).
pub fn random_bytes(out: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::getrandom(out)
}
