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
//!
//! Strict KMS mode carries the data key's KMS `CiphertextBlob` instead, with
//! a tag that binds it to the backend's upload id:
//!
//! ```text
//! client upload id = "s3k1" || base64url(token) || "." || backend upload id
//! token = suite id (1) || log2(C) (1) || tag (16) || CiphertextBlob
//! tag = HMAC-SHA256(DEK, "s3crypt v1 kms upload" || 0x00 || suite id || C (u32) || backend upload id)[..16]
//! ```

use crate::cipher::{Suite, KEY_LEN};
use crate::envelope::{random_nonce, valid_chunk_size, valid_key_id, EnvelopeError, Kek, Keyring, WRAPPED_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

const PREFIX: &str = "s3c1";
const KMS_PREFIX: &str = "s3k1";
const AAD_LABEL: &[u8] = b"s3crypt v1 upload\0";
const KMS_TAG_LABEL: &[u8] = b"s3crypt v1 kms upload\0";
const KMS_TAG_LEN: usize = 16;

/// How the upload's data key travels in its id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum UploadKey {
    Kek { key_id: String, wrapped: [u8; WRAPPED_LEN] },
    Kms { tag: [u8; KMS_TAG_LEN], blob: Vec<u8> },
}

/// An upload id as the client sees it, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUploadId {
    pub backend_id: String,
    pub suite: Suite,
    pub chunk_size: u32,
    key: UploadKey,
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

fn kms_tag(dek: &[u8; KEY_LEN], suite: Suite, chunk_size: u32, backend_id: &str) -> [u8; KMS_TAG_LEN] {
    use hmac::Mac;
    let mut tag = [0u8; KMS_TAG_LEN];
    // HMAC takes keys of any length: this cannot fail.
    if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(dek) {
        mac.update(KMS_TAG_LABEL);
        mac.update(&[suite.id()]);
        mac.update(&chunk_size.to_be_bytes());
        mac.update(backend_id.as_bytes());
        let full = mac.finalize().into_bytes();
        tag.copy_from_slice(full.get(..KMS_TAG_LEN).unwrap_or(&[0u8; KMS_TAG_LEN]));
    }
    tag
}

/// The id to hand the client for a new strict-KMS upload: the data key's
/// `CiphertextBlob`, tagged with the data key for this backend upload id.
pub fn seal_kms(dek: &[u8; KEY_LEN], blob: &[u8], suite: Suite, chunk_size: u32, backend_id: &str) -> String {
    let mut token = Vec::with_capacity(2 + KMS_TAG_LEN + blob.len());
    token.push(suite.id());
    token.push(u8::try_from(chunk_size.trailing_zeros()).unwrap_or(0));
    token.extend_from_slice(&kms_tag(dek, suite, chunk_size, backend_id));
    token.extend_from_slice(blob);
    format!("{KMS_PREFIX}{}.{backend_id}", URL_SAFE_NO_PAD.encode(token))
}

/// Splits a client upload id; `None` if it was not made by `seal` or
/// `seal_kms` (an upload started without the gateway).
pub fn parse(client_id: &str) -> Option<ClientUploadId> {
    let (kms, rest) = match client_id.strip_prefix(PREFIX) {
        Some(rest) => (false, rest),
        None => (true, client_id.strip_prefix(KMS_PREFIX)?),
    };
    let (token, backend_id) = rest.split_once('.')?;
    if backend_id.is_empty() {
        return None;
    }
    let token = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (&[suite_id, log2], rest) = token.split_first_chunk::<2>()?;
    let suite = [Suite::ChaCha20Poly1305, Suite::Aes256Gcm].into_iter().find(|s| s.id() == suite_id)?;
    let chunk_size = 1u32.checked_shl(u32::from(log2))?;
    if !valid_chunk_size(chunk_size) {
        return None;
    }
    let key = if kms {
        let (tag, blob) = rest.split_first_chunk::<KMS_TAG_LEN>()?;
        if blob.is_empty() || blob.len() > crate::kms::MAX_BLOB_LEN {
            return None;
        }
        UploadKey::Kms { tag: *tag, blob: blob.to_vec() }
    } else {
        let (&[kid_len], rest) = rest.split_first_chunk::<1>()?;
        let (kid, wrapped) = rest.split_at_checked(usize::from(kid_len))?;
        let key_id = std::str::from_utf8(kid).ok()?;
        if !valid_key_id(key_id) {
            return None;
        }
        UploadKey::Kek { key_id: key_id.to_owned(), wrapped: wrapped.try_into().ok()? }
    };
    Some(ClientUploadId { backend_id: backend_id.to_owned(), suite, chunk_size, key })
}

impl ClientUploadId {
    /// The upload's data key, if this gateway holds the KEK and the token
    /// belongs to this backend upload id. A strict-KMS upload's key comes
    /// from the KMS (`kms_blob`, then `check_kms_dek`).
    pub fn open(&self, keyring: &Keyring) -> Result<Zeroizing<[u8; KEY_LEN]>, EnvelopeError> {
        match &self.key {
            UploadKey::Kek { key_id, wrapped } => keyring.key(key_id)?.unwrap_raw(wrapped, &aad(self.suite, self.chunk_size, key_id, &self.backend_id)),
            UploadKey::Kms { .. } => Err(EnvelopeError::KmsWrapped),
        }
    }

    /// The id of the KEK that wrapped the data key (`None`: strict KMS).
    pub fn key_id(&self) -> Option<&str> {
        match &self.key {
            UploadKey::Kek { key_id, .. } => Some(key_id),
            UploadKey::Kms { .. } => None,
        }
    }

    /// The data key's `CiphertextBlob` of a strict-KMS upload.
    pub fn kms_blob(&self) -> Option<&[u8]> {
        match &self.key {
            UploadKey::Kms { blob, .. } => Some(blob),
            UploadKey::Kek { .. } => None,
        }
    }

    /// Whether the KMS's data key is the one this upload id was made with
    /// for this backend upload id (a token moved onto another upload fails).
    pub fn check_kms_dek(&self, dek: &[u8; KEY_LEN]) -> Result<(), EnvelopeError> {
        use subtle::ConstantTimeEq;
        match &self.key {
            UploadKey::Kms { tag, .. } if bool::from(kms_tag(dek, self.suite, self.chunk_size, &self.backend_id).ct_eq(tag)) => Ok(()),
            _ => Err(EnvelopeError::UnwrapFailed("kms".into())),
        }
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
    fn kms_upload_ids_carry_the_blob_and_bind_the_backend_id() {
        let id = seal_kms(&[5; 32], &[9, 8, 7], Suite::ChaCha20Poly1305, 65_536, "upload-1");
        assert!(id.starts_with("s3k1"));
        let parsed = parse(&id).unwrap();
        assert_eq!((parsed.backend_id.as_str(), parsed.chunk_size, parsed.kms_blob()), ("upload-1", 65_536, Some(&[9u8, 8, 7][..])));
        assert!(parsed.check_kms_dek(&[5; 32]).is_ok());
        assert!(parsed.check_kms_dek(&[6; 32]).is_err());
        assert_eq!(parsed.open(&ring()), Err(EnvelopeError::KmsWrapped));
        let moved = parse(&id.replace("upload-1", "upload-2")).unwrap();
        assert!(moved.check_kms_dek(&[5; 32]).is_err());
        // A KEK upload id is no KMS one.
        let kek_id = parse(&seal(ring().active().unwrap(), &[5; 32], Suite::ChaCha20Poly1305, 65_536, "u").unwrap()).unwrap();
        assert_eq!(kek_id.kms_blob(), None);
        assert!(kek_id.check_kms_dek(&[5; 32]).is_err());
    }

    #[test]
    fn kms_upload_id_made_from_format_md_alone() {
        // Made by filter/fuzz/make_corpus.py (Python, from FORMAT.md): DEK d0 x 32, backend id "a.b.c".
        let parsed = parse("s3k1ARCqU3ekf_chNiL1fjGK45x9c3RhbmQtaW4gZm9yIGEgS01TIENpcGhlcnRleHRCbG9i.a.b.c").unwrap();
        assert_eq!((parsed.backend_id.as_str(), parsed.suite, parsed.chunk_size), ("a.b.c", Suite::ChaCha20Poly1305, 65_536));
        assert_eq!(parsed.kms_blob(), Some(&b"stand-in for a KMS CiphertextBlob"[..]));
        assert!(parsed.check_kms_dek(&[0xd0; 32]).is_ok());
    }

    #[test]
    fn foreign_ids_are_not_ours() {
        for id in ["", "2~abc", "s3c1", "s3c1.", "s3c1AAAA.x", "VXBsb2FkIElE.abc", "s3k1", "s3k1AQ4.x", "s3k1AQ4AAAAAAAAAAAAAAAAAAAAA.x"] {
            assert_eq!(parse(id), None, "{id}");
        }
    }
}
