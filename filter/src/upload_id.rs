//! Stateless multipart uploads: the client-facing upload id carries the
//! upload's data key, wrapped under a KEK and bound to the backend's upload id
//! (FORMAT.md, "Multipart uploads").
//!
//! ```text
//! client upload id = "s3c1" || base64url(token) || "." || backend upload id
//! token = suite id (1) || log2(C) (1) || len(key id) (1) || key id || wrapped DEK (72)
//! wrapped DEK = XChaCha20-Poly1305 under the KEK, AAD =
//!     "s3crypt v1 upload" || 0x00 || suite id || C (u32) || len(key id) || key id || backend upload id
//! ```
//!
//! Every UploadPart names its upload id, so any gateway replica can encrypt
//! any part with nothing but its KEKs: no shared store, no companion object.
//! A token moved onto another upload id does not unwrap.

use crate::cipher::{Suite, KEY_LEN};
use crate::envelope::{random_nonce, valid_chunk_size, valid_key_id, EnvelopeError, Kek, Keyring, WRAPPED_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

const PREFIX: &str = "s3c1";
const AAD_LABEL: &[u8] = b"s3crypt v1 upload\0";

/// An upload id as the client sees it, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUploadId {
    pub backend_id: String,
    pub suite: Suite,
    pub chunk_size: u32,
    pub key_id: String,
    wrapped_dek: [u8; WRAPPED_LEN],
}

fn aad(suite: Suite, chunk_size: u32, key_id: &str, backend_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 6 + key_id.len() + backend_id.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.push(suite.id());
    aad.extend_from_slice(&chunk_size.to_be_bytes());
    aad.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(backend_id.as_bytes());
    aad
}

/// The id to hand the client for a new upload with data key `dek`.
pub fn seal(kek: &Kek, dek: &[u8; KEY_LEN], suite: Suite, chunk_size: u32, backend_id: &str) -> Result<String, EnvelopeError> {
    let wrapped = kek.wrap_raw(dek, &aad(suite, chunk_size, &kek.id, backend_id), random_nonce()?)?;
    let mut token = Vec::with_capacity(3 + kek.id.len() + WRAPPED_LEN);
    token.push(suite.id());
    // valid_chunk_size: a power of two, so its log2 fits a byte.
    token.push(u8::try_from(chunk_size.trailing_zeros()).unwrap_or(0));
    token.push(u8::try_from(kek.id.len()).unwrap_or(u8::MAX));
    token.extend_from_slice(kek.id.as_bytes());
    token.extend_from_slice(&wrapped);
    Ok(format!("{PREFIX}{}.{backend_id}", URL_SAFE_NO_PAD.encode(token)))
}

/// Splits a client upload id; `None` if it was not made by `seal` (an upload
/// started without the gateway).
pub fn parse(client_id: &str) -> Option<ClientUploadId> {
    let rest = client_id.strip_prefix(PREFIX)?;
    let (token, backend_id) = rest.split_once('.')?;
    if backend_id.is_empty() {
        return None;
    }
    let token = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (&[suite_id, log2, kid_len], rest) = token.split_first_chunk::<3>()?;
    let suite = [Suite::ChaCha20Poly1305, Suite::Aes256Gcm].into_iter().find(|s| s.id() == suite_id)?;
    let chunk_size = 1u32.checked_shl(u32::from(log2))?;
    let (kid, wrapped) = rest.split_at_checked(usize::from(kid_len))?;
    let key_id = std::str::from_utf8(kid).ok()?;
    let wrapped_dek: [u8; WRAPPED_LEN] = wrapped.try_into().ok()?;
    if !valid_chunk_size(chunk_size) || !valid_key_id(key_id) {
        return None;
    }
    Some(ClientUploadId { backend_id: backend_id.to_owned(), suite, chunk_size, key_id: key_id.to_owned(), wrapped_dek })
}

impl ClientUploadId {
    /// The upload's data key, if this gateway holds the KEK and the token
    /// belongs to this backend upload id.
    pub fn open(&self, keyring: &Keyring) -> Result<Zeroizing<[u8; KEY_LEN]>, EnvelopeError> {
        keyring.key(&self.key_id)?.unwrap_raw(&self.wrapped_dek, &aad(self.suite, self.chunk_size, &self.key_id, &self.backend_id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(vec![Kek::new("main".into(), Zeroizing::new([9; 32]))], "main").unwrap()
    }

    #[test]
    fn round_trip() {
        let ring = ring();
        let id = seal(ring.active().unwrap(), &[5; 32], Suite::Aes256Gcm, 65_536, "abc.DEF-_123").unwrap();
        let parsed = parse(&id).unwrap();
        assert_eq!(parsed.backend_id, "abc.DEF-_123");
        assert_eq!(parsed.suite, Suite::Aes256Gcm);
        assert_eq!(parsed.chunk_size, 65_536);
        assert_eq!(*parsed.open(&ring).unwrap(), [5; 32]);
        // Only URL- and XML-safe characters are added.
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    }

    #[test]
    fn token_moved_to_another_upload_does_not_open() {
        let ring = ring();
        let id = seal(ring.active().unwrap(), &[5; 32], Suite::ChaCha20Poly1305, 65_536, "upload-1").unwrap();
        let moved = id.replace("upload-1", "upload-2");
        assert!(matches!(parse(&moved).unwrap().open(&ring), Err(EnvelopeError::UnwrapFailed(_))));
    }

    #[test]
    fn foreign_ids_are_not_ours() {
        for id in ["", "2~abc", "s3c1", "s3c1.", "s3c1AAAA.x", "VXBsb2FkIElE.abc"] {
            assert_eq!(parse(id), None, "{id}");
        }
    }
}
