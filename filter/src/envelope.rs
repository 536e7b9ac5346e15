//! The per-object envelope: which suite and chunk size sealed the object, which
//! key-encryption key (KEK) wrapped its data key (DEK), and the wrapped DEK.
//! It travels as one user-metadata header, so it survives server-side copies
//! and can be replaced without rewriting the body (KEK rotation).
//!
//! ```text
//! x-amz-meta-s3crypt: v=1;s=<suite>;c=<chunk size>;k=<key id>[;n=<plaintext length>];w=<base64url(wrapped DEK)>[;e=<hex md5>]
//! wrapped DEK = nonce (24) || XChaCha20-Poly1305(KEK, nonce, DEK, AAD) (32 + 16)
//! AAD = "s3crypt v1 dek" || 0x00 || suite id || chunk size (u32 BE)
//!       || has length (u8: 0 or 1) || plaintext length (u64 BE, 0 if absent)
//!       || len(key id) (u8) || key id
//! ```
//!
//! `n` is known for single-request uploads (PutObject) and binds the object's
//! length to its key: a stored object cut anywhere, even to zero bytes, no
//! longer matches its envelope.
//!
//! ```text
//! ```

use crate::cipher::{random_bytes, Suite, KEY_LEN};
use aead::{AeadInPlace, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::XChaCha20Poly1305;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The user-metadata header carrying the envelope.
pub const METADATA_HEADER: &str = "x-amz-meta-s3crypt";
/// Plaintext checksums the client sent as headers at upload (verified by the
/// gateway), as `crc32=<base64>;sha256=<base64>`: returned on full GETs with
/// `x-amz-checksum-mode: ENABLED`. Not part of the envelope, not authenticated:
/// altering it can only make a client's own check fail.
pub const CHECKSUM_HEADER: &str = "x-amz-meta-s3crypt-checksum";
pub const FORMAT_VERSION: &str = "1";
pub const WRAP_NONCE_LEN: usize = 24;
pub const WRAPPED_LEN: usize = WRAP_NONCE_LEN + KEY_LEN + 16;
const WRAP_AAD_LABEL: &[u8] = b"s3crypt v1 dek\0";
pub const MAX_KEY_ID_LEN: usize = 64;
pub const MIN_CHUNK_SIZE: u32 = 16 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;

/// Why an envelope could not be used. Names match FORMAT.md, "Errors".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The metadata value is not a well-formed v1 envelope.
    Malformed,
    /// The envelope names a format version this gateway does not know.
    UnsupportedVersion,
    /// No configured KEK has the envelope's key id.
    UnknownKeyId(String),
    /// The KEK with that id does not unwrap the DEK: wrong key, or the
    /// envelope was altered.
    UnwrapFailed(String),
    /// The operating system's random generator failed.
    RandomUnavailable,
    /// The data key is wrapped by the KMS (`kms=`): only the KMS unwraps it.
    KmsWrapped,
}

/// Key ids are short printable tokens that fit in HTTP headers and logs.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Chunk sizes are powers of two so that every common part size (5, 8, 15,
/// 16 MiB, ...) is a whole number of chunks.
pub fn valid_chunk_size(size: u32) -> bool {
    size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size)
}

/// How an object's data key is stored in its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WrappedDek {
    /// `w=`: wrapped under a configured KEK (XChaCha20-Poly1305, 72 bytes).
    Kek([u8; WRAPPED_LEN]),
    /// `kms=`: a KMS `CiphertextBlob` made by `GenerateDataKey` (strict mode),
    /// bound by its encryption context to the bucket, key and envelope.
    Kms(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub suite: Suite,
    pub chunk_size: u32,
    pub key_id: String,
    /// Plaintext length, when known at upload time (authenticated).
    pub plaintext_len: Option<u64>,
    pub wrapped_dek: WrappedDek,
    /// MD5 of the plaintext, when the client sent Content-MD5 (for the ETag).
    pub plaintext_md5: Option<[u8; 16]>,
}

impl Envelope {
    /// The fields before the wrapped key: `v=1;s=..;c=..;k=..[;n=..]`. For a
    /// KMS-wrapped key this is the `s3crypt` entry of its encryption context.
    pub fn prefix(&self) -> String {
        let mut out = format!("v={};s={};c={};k={}", FORMAT_VERSION, self.suite.name(), self.chunk_size, self.key_id);
        if let Some(n) = self.plaintext_len {
            out.push_str(&format!(";n={n}"));
        }
        out
    }

    pub fn encode(&self) -> String {
        let mut out = self.prefix();
        match &self.wrapped_dek {
            WrappedDek::Kek(wrapped) => {
                out.push_str(";w=");
                out.push_str(&URL_SAFE_NO_PAD.encode(wrapped));
            }
            WrappedDek::Kms(blob) => {
                out.push_str(";kms=");
                out.push_str(&URL_SAFE_NO_PAD.encode(blob));
            }
        }
        if let Some(md5) = self.plaintext_md5 {
            out.push_str(";e=");
            out.push_str(&hex::encode(md5));
        }
        out
    }

    /// Strict parse: fields in order, nothing unknown, every value canonical.
    pub fn parse(value: &str) -> Result<Envelope, EnvelopeError> {
        let mut fields = value.trim().split(';').peekable();
        let mut field = |name: &str| take_field(&mut fields, name);
        if field("v").ok_or(EnvelopeError::Malformed)? != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion);
        }
        let suite = Suite::from_name(field("s").ok_or(EnvelopeError::Malformed)?).ok_or(EnvelopeError::Malformed)?;
        let chunk_size = canonical_number(field("c").ok_or(EnvelopeError::Malformed)?)?;
        let chunk_size = u32::try_from(chunk_size).map_err(|_| EnvelopeError::Malformed)?;
        if !valid_chunk_size(chunk_size) {
            return Err(EnvelopeError::Malformed);
        }
        let key_id = field("k").ok_or(EnvelopeError::Malformed)?;
        if !valid_key_id(key_id) {
            return Err(EnvelopeError::Malformed);
        }
        let plaintext_len = field("n").map(canonical_number).transpose()?;
        let wrapped_dek = match field("w") {
            Some(w) => {
                let wrapped = URL_SAFE_NO_PAD.decode(w).map_err(|_| EnvelopeError::Malformed)?;
                WrappedDek::Kek(wrapped.try_into().map_err(|_| EnvelopeError::Malformed)?)
            }
            None => {
                let blob = URL_SAFE_NO_PAD.decode(field("kms").ok_or(EnvelopeError::Malformed)?).map_err(|_| EnvelopeError::Malformed)?;
                if blob.is_empty() || blob.len() > crate::kms::MAX_BLOB_LEN {
                    return Err(EnvelopeError::Malformed);
                }
                WrappedDek::Kms(blob)
            }
        };
        let plaintext_md5 = match field("e") {
            None => None,
            Some(hex_md5) => {
                let mut md5 = [0u8; 16];
                hex::decode_to_slice(hex_md5, &mut md5).map_err(|_| EnvelopeError::Malformed)?;
                Some(md5)
            }
        };
        if fields.next().is_some() {
            return Err(EnvelopeError::Malformed);
        }
        Ok(Envelope { suite, chunk_size, key_id: key_id.to_owned(), plaintext_len, wrapped_dek, plaintext_md5 })
    }

    /// The wrap AAD of this envelope (everything but the wrapped key and the ETag).
    fn wrap_aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(WRAP_AAD_LABEL.len() + 15 + self.key_id.len());
        aad.extend_from_slice(WRAP_AAD_LABEL);
        aad.push(self.suite.id());
        aad.extend_from_slice(&self.chunk_size.to_be_bytes());
        aad.push(u8::from(self.plaintext_len.is_some()));
        aad.extend_from_slice(&self.plaintext_len.unwrap_or(0).to_be_bytes());
        // valid_key_id bounds the length to 64, so it fits a byte.
        aad.push(u8::try_from(self.key_id.len()).unwrap_or(u8::MAX));
        aad.extend_from_slice(self.key_id.as_bytes());
        aad
    }
}

/// Takes the next `name=value` field if it has that name.
fn take_field<'a>(fields: &mut std::iter::Peekable<std::str::Split<'a, char>>, name: &str) -> Option<&'a str> {
    let value = fields.peek().and_then(|f| f.strip_prefix(name)).and_then(|v| v.strip_prefix('='))?;
    fields.next();
    Some(value)
}

/// A decimal number without sign, leading zeros or other decoration.
fn canonical_number(text: &str) -> Result<u64, EnvelopeError> {
    let n: u64 = text.parse().map_err(|_| EnvelopeError::Malformed)?;
    if n.to_string() == text {
        Ok(n)
    } else {
        Err(EnvelopeError::Malformed)
    }
}

/// One key-encryption key with its id.
pub struct Kek {
    pub id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl Kek {
    pub fn new(id: String, key: Zeroizing<[u8; KEY_LEN]>) -> Kek {
        Kek { id, key }
    }

    /// Wraps `dek` under this KEK, bound to `aad`: nonce (24) || ciphertext || tag.
    pub fn wrap_raw(&self, dek: &[u8; KEY_LEN], aad: &[u8], nonce: [u8; WRAP_NONCE_LEN]) -> Result<[u8; WRAPPED_LEN], EnvelopeError> {
        let cipher = XChaCha20Poly1305::new(aead::Key::<XChaCha20Poly1305>::from_slice(self.key.as_slice()));
        let mut out = [0u8; WRAPPED_LEN];
        let (n, rest) = out.split_at_mut(WRAP_NONCE_LEN);
        n.copy_from_slice(&nonce);
        let (body, tag) = rest.split_at_mut(KEY_LEN);
        body.copy_from_slice(dek);
        let t = cipher
            .encrypt_in_place_detached(aead::generic_array::GenericArray::from_slice(&nonce), aad, body)
            .map_err(|_| EnvelopeError::UnwrapFailed(self.id.clone()))?;
        tag.copy_from_slice(t.as_slice());
        Ok(out)
    }

    /// Unwraps what `wrap_raw` made with the same `aad`.
    pub fn unwrap_raw(&self, wrapped: &[u8; WRAPPED_LEN], aad: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, EnvelopeError> {
        let cipher = XChaCha20Poly1305::new(aead::Key::<XChaCha20Poly1305>::from_slice(self.key.as_slice()));
        let (nonce, rest) = wrapped.split_at(WRAP_NONCE_LEN);
        let (body, tag) = rest.split_at(KEY_LEN);
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        dek.copy_from_slice(body);
        cipher
            .decrypt_in_place_detached(aead::generic_array::GenericArray::from_slice(nonce), aad, dek.as_mut_slice(), aead::generic_array::GenericArray::from_slice(tag))
            .map_err(|_| EnvelopeError::UnwrapFailed(self.id.clone()))?;
        Ok(dek)
    }

    /// Wraps `dek` into `envelope` (whose other fields must be final) with a
    /// given nonce; `wrap` picks a random one.
    pub fn wrap_with_nonce(&self, dek: &[u8; KEY_LEN], envelope: &mut Envelope, nonce: [u8; WRAP_NONCE_LEN]) -> Result<(), EnvelopeError> {
        envelope.key_id.clone_from(&self.id);
        envelope.wrapped_dek = WrappedDek::Kek(self.wrap_raw(dek, &envelope.wrap_aad(), nonce)?);
        Ok(())
    }

    pub fn wrap(&self, dek: &[u8; KEY_LEN], envelope: &mut Envelope) -> Result<(), EnvelopeError> {
        self.wrap_with_nonce(dek, envelope, random_nonce()?)
    }

    pub fn unwrap_dek(&self, envelope: &Envelope) -> Result<Zeroizing<[u8; KEY_LEN]>, EnvelopeError> {
        match &envelope.wrapped_dek {
            WrappedDek::Kek(wrapped) => self.unwrap_raw(wrapped, &envelope.wrap_aad()),
            WrappedDek::Kms(_) => Err(EnvelopeError::KmsWrapped),
        }
    }
}

pub fn random_nonce() -> Result<[u8; WRAP_NONCE_LEN], EnvelopeError> {
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    random_bytes(&mut nonce).map_err(|_| EnvelopeError::RandomUnavailable)?;
    Ok(nonce)
}

/// All configured KEKs: one active for writing, all usable for reading.
pub struct Keyring {
    keys: Vec<Kek>,
    active: usize,
}

impl Keyring {
    /// No KEK at all (strict KMS mode without keys for older objects).
    pub fn empty() -> Keyring {
        Keyring { keys: Vec::new(), active: 0 }
    }

    /// `active` must name one of `keys` (config validation guarantees it).
    pub fn new(keys: Vec<Kek>, active: &str) -> Option<Keyring> {
        let active = keys.iter().position(|k| k.id == active)?;
        Some(Keyring { keys, active })
    }

    pub fn active_id(&self) -> &str {
        self.keys.get(self.active).map(|k| k.id.as_str()).unwrap_or_default()
    }

    /// A fresh random DEK and the envelope that carries it wrapped under the
    /// active KEK.
    pub fn new_object(&self, suite: Suite, chunk_size: u32, plaintext_len: Option<u64>) -> Result<(Envelope, Zeroizing<[u8; KEY_LEN]>), EnvelopeError> {
        self.new_object_under(self.active_id(), suite, chunk_size, plaintext_len)
    }

    /// As `new_object`, under the KEK `key_id` (a bucket's own write key).
    pub fn new_object_under(&self, key_id: &str, suite: Suite, chunk_size: u32, plaintext_len: Option<u64>) -> Result<(Envelope, Zeroizing<[u8; KEY_LEN]>), EnvelopeError> {
        let kek = self.key(key_id)?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(dek.as_mut_slice()).map_err(|_| EnvelopeError::RandomUnavailable)?;
        let mut envelope = Envelope { suite, chunk_size, key_id: kek.id.clone(), plaintext_len, wrapped_dek: WrappedDek::Kek([0; WRAPPED_LEN]), plaintext_md5: None };
        kek.wrap(&dek, &mut envelope)?;
        Ok((envelope, dek))
    }

    /// The same envelope with its DEK re-wrapped under the active KEK (key
    /// rotation without touching the object's body).
    pub fn rewrap(&self, envelope: &Envelope) -> Result<Envelope, EnvelopeError> {
        self.rewrap_under(self.active_id(), envelope)
    }

    /// As `rewrap`, under the KEK `key_id`.
    pub fn rewrap_under(&self, key_id: &str, envelope: &Envelope) -> Result<Envelope, EnvelopeError> {
        let dek = self.open(envelope)?;
        let mut rewrapped = envelope.clone();
        self.key(key_id)?.wrap(&dek, &mut rewrapped)?;
        Ok(rewrapped)
    }

    /// Unwraps an object's DEK with the KEK its envelope names.
    pub fn open(&self, envelope: &Envelope) -> Result<Zeroizing<[u8; KEY_LEN]>, EnvelopeError> {
        if matches!(envelope.wrapped_dek, WrappedDek::Kms(_)) {
            return Err(EnvelopeError::KmsWrapped);
        }
        self.key(&envelope.key_id)?.unwrap_dek(envelope)
    }

    /// The KEK with this id.
    pub fn key(&self, id: &str) -> Result<&Kek, EnvelopeError> {
        self.keys.iter().find(|k| bool::from(k.id.as_bytes().ct_eq(id.as_bytes()))).ok_or_else(|| EnvelopeError::UnknownKeyId(id.to_owned()))
    }

    /// The KEK that wraps new data keys.
    pub fn active(&self) -> Result<&Kek, EnvelopeError> {
        self.keys.get(self.active).ok_or(EnvelopeError::UnknownKeyId(String::new()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(vec![Kek::new("main".into(), Zeroizing::new([1; 32])), Kek::new("old".into(), Zeroizing::new([2; 32]))], "main").unwrap()
    }

    #[test]
    fn new_object_round_trips_through_metadata() {
        let ring = ring();
        let (env, dek) = ring.new_object(Suite::Aes256Gcm, 65_536, Some(5)).unwrap();
        let parsed = Envelope::parse(&env.encode()).unwrap();
        assert_eq!(parsed, env);
        assert_eq!(*ring.open(&parsed).unwrap(), *dek);
    }

    #[test]
    fn altered_suite_or_chunk_size_fails_unwrap() {
        let ring = ring();
        let (env, _) = ring.new_object(Suite::ChaCha20Poly1305, 65_536, Some(7)).unwrap();
        let mut other = env.clone();
        other.suite = Suite::Aes256Gcm;
        assert!(matches!(ring.open(&other), Err(EnvelopeError::UnwrapFailed(_))));
        let mut other = env.clone();
        other.chunk_size = 32_768;
        assert!(matches!(ring.open(&other), Err(EnvelopeError::UnwrapFailed(_))));
        for len in [None, Some(6), Some(0)] {
            let mut other = env.clone();
            other.plaintext_len = len;
            assert!(matches!(ring.open(&other), Err(EnvelopeError::UnwrapFailed(_))), "{len:?}");
        }
    }

    #[test]
    fn rewrap_moves_an_object_to_the_active_key() {
        let old = Keyring::new(vec![Kek::new("old".into(), Zeroizing::new([2; 32]))], "old").unwrap();
        let (env, dek) = old.new_object(Suite::ChaCha20Poly1305, 65_536, Some(9)).unwrap();
        let both = Keyring::new(vec![Kek::new("new".into(), Zeroizing::new([3; 32])), Kek::new("old".into(), Zeroizing::new([2; 32]))], "new").unwrap();
        let moved = both.rewrap(&env).unwrap();
        assert_eq!(moved.key_id, "new");
        assert_eq!((moved.suite, moved.chunk_size, moved.plaintext_len), (env.suite, env.chunk_size, env.plaintext_len));
        let only_new = Keyring::new(vec![Kek::new("new".into(), Zeroizing::new([3; 32]))], "new").unwrap();
        assert_eq!(*only_new.open(&moved).unwrap(), *dek);
    }

    #[test]
    fn unknown_and_wrong_keys() {
        let ring = ring();
        let (mut env, _) = ring.new_object(Suite::ChaCha20Poly1305, 65_536, Some(7)).unwrap();
        env.key_id = "nope".into();
        assert_eq!(ring.open(&env), Err(EnvelopeError::UnknownKeyId("nope".into())));
        env.key_id = "old".into();
        assert!(matches!(ring.open(&env), Err(EnvelopeError::UnwrapFailed(_))));
    }

    #[test]
    fn kms_envelopes_round_trip_and_never_open_with_a_kek() {
        let env = Envelope {
            suite: Suite::ChaCha20Poly1305,
            chunk_size: 65_536,
            key_id: "kms".into(),
            plaintext_len: Some(5),
            wrapped_dek: WrappedDek::Kms(vec![1, 2, 3, 250]),
            plaintext_md5: None,
        };
        assert_eq!(env.encode(), "v=1;s=chacha20-poly1305;c=65536;k=kms;n=5;kms=AQID-g");
        assert_eq!(env.prefix(), "v=1;s=chacha20-poly1305;c=65536;k=kms;n=5");
        assert_eq!(Envelope::parse(&env.encode()).unwrap(), env);
        let ring = Keyring::new(vec![Kek::new("kms".into(), Zeroizing::new([1; 32]))], "kms").unwrap();
        assert_eq!(ring.open(&env), Err(EnvelopeError::KmsWrapped));
        for bad in ["v=1;s=chacha20-poly1305;c=65536;k=kms;kms=", "v=1;s=chacha20-poly1305;c=65536;k=kms;kms=AQID;w=AQID", "v=1;s=chacha20-poly1305;c=65536;k=kms;w=AQID"] {
            assert_eq!(Envelope::parse(bad), Err(EnvelopeError::Malformed), "{bad}");
        }
        let long = format!("v=1;s=chacha20-poly1305;c=65536;k=kms;kms={}", URL_SAFE_NO_PAD.encode([7u8; 1025]));
        assert_eq!(Envelope::parse(&long), Err(EnvelopeError::Malformed));
    }

    #[test]
    fn parse_is_strict() {
        let ring = ring();
        let (env, _) = ring.new_object(Suite::ChaCha20Poly1305, 65_536, Some(7)).unwrap();
        let good = env.encode();
        assert!(Envelope::parse(&good).is_ok());
        assert_eq!(Envelope::parse(&good.replace("v=1", "v=2")), Err(EnvelopeError::UnsupportedVersion));
        for bad in [
            good.replace("c=65536", "c=65537"),
            good.replace("c=65536", "c=065536"),
            good.replace("n=7", "n=07"),
            good.replace("n=7", "n=-7"),
            good.replace("s=chacha20-poly1305", "s=rot13"),
            good.replace(";k=main", ";k=ma in"),
            format!("{good};x=1"),
            good[..good.len() - 2].to_string(),
            String::new(),
        ] {
            assert_eq!(Envelope::parse(&bad), Err(EnvelopeError::Malformed), "{bad}");
        }
    }
}
