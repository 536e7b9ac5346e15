//! Integrity values a client sends about its plaintext (Content-MD5, a hex
//! `x-amz-content-sha256`, `x-amz-checksum-*`). The backend only ever sees
//! ciphertext, so the filter checks them against the plaintext stream itself
//! and refuses the upload before its final chunk leaves on mismatch.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const CRC64NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

/// The flexible-checksum algorithms S3 accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] =
        [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256];

    /// The algorithm of a checksum header name (`x-amz-checksum-crc32`, ...).
    pub fn from_header(name: &str) -> Option<ChecksumAlgorithm> {
        ChecksumAlgorithm::ALL.into_iter().find(|a| a.header().eq_ignore_ascii_case(name.trim()))
    }

    /// The request/response header carrying this checksum.
    pub fn header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// Name as S3 spells it in error messages.
    pub fn display_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Crc32(crc32fast::Hasher),
    Crc32c(crc::Digest<'static, u32>),
    Crc64Nvme(crc::Digest<'static, u64>),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(h) => h.update(data),
            Hasher::Crc64Nvme(h) => h.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Crc32c(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Crc64Nvme(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }

    fn for_checksum(algorithm: ChecksumAlgorithm) -> Hasher {
        match algorithm {
            ChecksumAlgorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Hasher::Crc32c(CRC32C.digest()),
            ChecksumAlgorithm::Crc64Nvme => Hasher::Crc64Nvme(CRC64NVME.digest()),
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }
}

/// Which claim about the plaintext failed; the edge maps it to an S3 error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestClaim {
    ContentMd5,
    ContentSha256,
    Checksum(ChecksumAlgorithm),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestError {
    /// The header value is not a valid encoding of this digest.
    Malformed(DigestClaim),
    /// The plaintext does not match the value the client sent.
    Mismatch(DigestClaim),
}

/// Running digests of the plaintext with the values they must end at.
#[derive(Default)]
pub struct PlaintextDigests {
    claims: Vec<(DigestClaim, Hasher, Vec<u8>)>,
}

impl PlaintextDigests {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// `Content-MD5: <base64 of 16 bytes>`. Returns the decoded MD5.
    pub fn expect_content_md5(&mut self, value: &str) -> Result<[u8; 16], DigestError> {
        let claim = DigestClaim::ContentMd5;
        let bytes = STANDARD.decode(value.trim()).map_err(|_| DigestError::Malformed(claim))?;
        let md5: [u8; 16] = bytes.as_slice().try_into().map_err(|_| DigestError::Malformed(claim))?;
        self.claims.push((claim, Hasher::Md5(Md5::new()), bytes));
        Ok(md5)
    }

    /// `x-amz-content-sha256: <64 hex digits>` (the signed payload hash).
    pub fn expect_content_sha256(&mut self, hex_value: &str) -> Result<(), DigestError> {
        let claim = DigestClaim::ContentSha256;
        let mut bytes = vec![0u8; 32];
        hex::decode_to_slice(hex_value.trim(), &mut bytes).map_err(|_| DigestError::Malformed(claim))?;
        self.claims.push((claim, Hasher::Sha256(Sha256::new()), bytes));
        Ok(())
    }

    /// `x-amz-checksum-<algorithm>: <base64>`.
    pub fn expect_checksum(&mut self, algorithm: ChecksumAlgorithm, value: &str) -> Result<(), DigestError> {
        let claim = DigestClaim::Checksum(algorithm);
        let bytes = STANDARD.decode(value.trim()).map_err(|_| DigestError::Malformed(claim))?;
        if bytes.len() != algorithm.digest_len() {
            return Err(DigestError::Malformed(claim));
        }
        self.claims.push((claim, Hasher::for_checksum(algorithm), bytes));
        Ok(())
    }

    /// A checksum whose value comes later, in an aws-chunked trailer: the
    /// hashing starts now, `provide_checksum` gives the value at the end.
    pub fn expect_checksum_later(&mut self, algorithm: ChecksumAlgorithm) {
        self.claims.push((DigestClaim::Checksum(algorithm), Hasher::for_checksum(algorithm), Vec::new()));
    }

    /// The value of a checksum registered with `expect_checksum_later`.
    pub fn provide_checksum(&mut self, algorithm: ChecksumAlgorithm, value: &str) -> Result<(), DigestError> {
        let claim = DigestClaim::Checksum(algorithm);
        let bytes = STANDARD.decode(value.trim()).map_err(|_| DigestError::Malformed(claim))?;
        if bytes.len() != algorithm.digest_len() {
            return Err(DigestError::Malformed(claim));
        }
        match self.claims.iter_mut().find(|(c, _, expected)| *c == claim && expected.is_empty()) {
            Some((_, _, expected)) => {
                *expected = bytes;
                Ok(())
            }
            None => Err(DigestError::Malformed(claim)),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, hasher, _) in &mut self.claims {
            hasher.update(data);
        }
    }

    /// Checks every claim; the first mismatch is reported.
    pub fn verify(self) -> Result<(), DigestError> {
        for (claim, hasher, expected) in self.claims {
            if expected.is_empty() {
                // Announced (x-amz-trailer) but never given.
                return Err(DigestError::Malformed(claim));
            }
            let actual = hasher.finalize();
            if !bool::from(actual.ct_eq(&expected)) {
                return Err(DigestError::Mismatch(claim));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    // Checksums of "hello world" as S3 reports them (base64 of the big-endian digest).
    const HELLO: &[u8] = b"hello world";

    fn check(algorithm: ChecksumAlgorithm, b64: &str) {
        let mut d = PlaintextDigests::default();
        d.expect_checksum(algorithm, b64).unwrap();
        d.update(&HELLO[..4]);
        d.update(&HELLO[4..]);
        assert_eq!(d.verify(), Ok(()), "{algorithm:?}");
        let mut d = PlaintextDigests::default();
        d.expect_checksum(algorithm, b64).unwrap();
        d.update(b"hello worle");
        assert_eq!(d.verify(), Err(DigestError::Mismatch(DigestClaim::Checksum(algorithm))));
    }

    #[test]
    fn known_checksums_of_hello_world() {
        check(ChecksumAlgorithm::Crc32, "DUoRhQ==");
        check(ChecksumAlgorithm::Crc32c, "yZRlqg==");
        check(ChecksumAlgorithm::Crc64Nvme, "jSnVw/bqjr4=");
        check(ChecksumAlgorithm::Sha1, "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        check(ChecksumAlgorithm::Sha256, "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
    }

    #[test]
    fn content_md5_and_sha256() {
        let mut d = PlaintextDigests::default();
        assert_eq!(hex::encode(d.expect_content_md5("XrY7u+Ae7tCTyyK7j1rNww==").unwrap()), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        d.expect_content_sha256("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9").unwrap();
        d.update(HELLO);
        assert_eq!(d.verify(), Ok(()));
    }

    #[test]
    fn trailer_checksums_arrive_last() {
        let mut d = PlaintextDigests::default();
        d.expect_checksum_later(ChecksumAlgorithm::Crc32);
        d.update(HELLO);
        d.provide_checksum(ChecksumAlgorithm::Crc32, "DUoRhQ==").unwrap();
        assert_eq!(d.verify(), Ok(()));
        let mut d = PlaintextDigests::default();
        d.expect_checksum_later(ChecksumAlgorithm::Crc32);
        d.update(HELLO);
        assert!(d.verify().is_err(), "an announced trailer that never came");
        let mut d = PlaintextDigests::default();
        assert!(d.provide_checksum(ChecksumAlgorithm::Sha1, "Kq5sNclPz7QV2+lfQIuc6R7oRu0=").is_err(), "not announced");
    }

    #[test]
    fn malformed_values() {
        let mut d = PlaintextDigests::default();
        assert_eq!(d.expect_content_md5("not base64!"), Err(DigestError::Malformed(DigestClaim::ContentMd5)));
        assert_eq!(d.expect_content_md5("AAAA"), Err(DigestError::Malformed(DigestClaim::ContentMd5)));
        assert_eq!(d.expect_content_sha256("abc"), Err(DigestError::Malformed(DigestClaim::ContentSha256)));
        assert_eq!(
            d.expect_checksum(ChecksumAlgorithm::Crc32, "AAAAAAA="),
            Err(DigestError::Malformed(DigestClaim::Checksum(ChecksumAlgorithm::Crc32)))
        );
    }
}
