//! PutObject: what the request headers become, and the body transform.
//! Pure: the glue reads headers, applies the plan and feeds body pieces.

use crate::cipher::{Suite, KEY_LEN};
use crate::config::Settings;
use crate::upload_id::ClientUploadId;
use crate::digest::{ChecksumAlgorithm, DigestClaim, DigestError, PlaintextDigests};
use crate::envelope::{Envelope, EnvelopeError, CHECKSUM_HEADER, METADATA_HEADER};
use crate::s3::S3Error;
use crate::sizes;
use crate::stream::{SegmentSealer, StreamError};

/// S3's limit for a single PutObject or UploadPart.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PART_NUMBER: u32 = 10_000;

pub type Headers = [(String, String)];

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Header edits to apply before the request goes upstream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Integrity headers that describe the plaintext and must not reach a
/// backend that would check them against the ciphertext.
pub fn plaintext_integrity_headers() -> Vec<String> {
    let mut names: Vec<String> = ["content-md5", "x-amz-content-sha256", "x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-trailer", "x-amz-decoded-content-length"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(ChecksumAlgorithm::ALL.iter().map(|a| a.header().to_string()));
    names
}

/// One PutObject in progress.
pub struct Upload {
    sealer: SegmentSealer,
    digests: PlaintextDigests,
    /// Checksum headers the client sent, echoed on the response as S3 does.
    pub echo_checksums: Vec<(String, String)>,
}

/// What can go wrong while the body streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadError {
    Stream(StreamError),
    Digest(DigestError),
}

impl Upload {
    /// Takes a plaintext piece; appends the ciphertext ready to go upstream.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), UploadError> {
        self.digests.update(data);
        self.sealer.push(data, out).map_err(UploadError::Stream)
    }

    /// End of body: verifies the client's digests, then seals the final chunk.
    /// On error nothing more may go upstream: the backend never sees a
    /// complete body, so it stores nothing.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), UploadError> {
        self.digests.verify().map_err(UploadError::Digest)?;
        self.sealer.finish(out).map_err(UploadError::Stream)
    }
}

pub fn digest_error(e: DigestError) -> S3Error {
    match e {
        DigestError::Malformed(DigestClaim::ContentMd5) => S3Error::new(400, "InvalidDigest", "The Content-MD5 you specified was invalid."),
        DigestError::Malformed(DigestClaim::ContentSha256) => S3Error::new(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a SHA-256 hex digest."),
        DigestError::Malformed(DigestClaim::Checksum(a)) => S3Error::new(400, "InvalidRequest", format!("Value for {} header is invalid.", a.header())),
        DigestError::Mismatch(DigestClaim::ContentMd5) => S3Error::new(400, "BadDigest", "The Content-MD5 you specified did not match what we received."),
        DigestError::Mismatch(DigestClaim::ContentSha256) => {
            S3Error::new(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
        }
        DigestError::Mismatch(DigestClaim::Checksum(a)) => S3Error::new(400, "BadDigest", format!("The {} you specified did not match the calculated checksum.", a.display_name())),
    }
}

pub fn upload_error(e: UploadError) -> S3Error {
    match e {
        UploadError::Digest(d) => digest_error(d),
        UploadError::Stream(StreamError::LengthMismatch) => S3Error::new(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header."),
        UploadError::Stream(e) => S3Error::new(500, "InternalError", format!("encryption failed: {e}")),
    }
}

pub fn envelope_error(e: EnvelopeError) -> S3Error {
    S3Error::new(500, "InternalError", format!("cannot create the object key: {e:?}"))
}

/// What a single-request upload body must match, from its headers.
struct BodyClaims {
    length: u64,
    digests: PlaintextDigests,
    plaintext_md5: Option<[u8; 16]>,
    echo_checksums: Vec<(String, String)>,
}

fn body_claims(headers: &Headers, max_len: u64) -> Result<BodyClaims, S3Error> {
    let encoding = header(headers, "content-encoding").unwrap_or_default();
    let content_sha = header(headers, "x-amz-content-sha256").unwrap_or_default();
    if encoding.split(',').any(|e| e.trim().eq_ignore_ascii_case("aws-chunked")) || content_sha.starts_with("STREAMING-") {
        return Err(S3Error::new(501, "NotImplemented", "aws-chunked request bodies are not supported by this gateway yet; disable request checksums in the client (e.g. AWS_REQUEST_CHECKSUM_CALCULATION=when_required)."));
    }
    let length = match header(headers, "content-length") {
        Some(v) => v.trim().parse::<u64>().map_err(|_| S3Error::new(400, "InvalidArgument", "Content-Length is not a number."))?,
        None => return Err(S3Error::new(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")),
    };
    if length > max_len {
        return Err(S3Error::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."));
    }
    let mut digests = PlaintextDigests::default();
    let mut plaintext_md5 = None;
    if let Some(md5) = header(headers, "content-md5") {
        plaintext_md5 = Some(digests.expect_content_md5(md5).map_err(digest_error)?);
    }
    if !content_sha.is_empty() && content_sha != "UNSIGNED-PAYLOAD" {
        digests.expect_content_sha256(content_sha).map_err(digest_error)?;
    }
    let mut echo_checksums = Vec::new();
    for algorithm in ChecksumAlgorithm::ALL {
        if let Some(value) = header(headers, algorithm.header()) {
            digests.expect_checksum(algorithm, value).map_err(digest_error)?;
            echo_checksums.push((algorithm.header().to_string(), value.trim().to_string()));
        }
    }
    Ok(BodyClaims { length, digests, plaintext_md5, echo_checksums })
}

/// Header edits and the upload state for one segment (FORMAT.md, "Chunks").
fn segment(claims: BodyClaims, dek: &[u8; KEY_LEN], suite: Suite, chunk_size: u32, part: u32) -> Result<(HeaderEdits, Upload), S3Error> {
    let ciphertext_len = sizes::ciphertext_len(claims.length, chunk_size).ok_or_else(|| S3Error::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."))?;
    let sealer = SegmentSealer::new(dek, suite, part, chunk_size as usize, claims.length).map_err(|e| S3Error::new(500, "InternalError", format!("encryption unavailable: {e}")))?;
    let mut edits = HeaderEdits { remove: plaintext_integrity_headers(), set: Vec::new() };
    edits.remove.push("transfer-encoding".into());
    edits.set.push(("content-length".into(), ciphertext_len.to_string()));
    Ok((edits, Upload { sealer, digests: claims.digests, echo_checksums: claims.echo_checksums }))
}

/// Plans a PutObject from its request headers: a new data key, its envelope,
/// and the sealing state.
pub fn plan(headers: &Headers, settings: &Settings) -> Result<(HeaderEdits, Upload, Envelope), S3Error> {
    let claims = body_claims(headers, MAX_PUT_SIZE)?;
    let (mut envelope, dek) = settings.keyring.new_object(settings.suite, settings.chunk_size, Some(claims.length)).map_err(envelope_error)?;
    envelope.plaintext_md5 = claims.plaintext_md5;
    let checksums: Vec<String> = claims
        .echo_checksums
        .iter()
        .map(|(header, value)| format!("{}={value}", header.trim_start_matches("x-amz-checksum-")))
        .collect();
    let (mut edits, upload) = segment(claims, &dek, settings.suite, settings.chunk_size, 0)?;
    edits.set.push((METADATA_HEADER.into(), envelope.encode()));
    if checksums.is_empty() {
        edits.remove.push(CHECKSUM_HEADER.into());
    } else {
        edits.set.push((CHECKSUM_HEADER.into(), checksums.join(";")));
    }
    Ok((edits, upload, envelope))
}

/// Plans an UploadPart of an upload started through the gateway.
pub fn plan_part(headers: &Headers, settings: &Settings, upload: &ClientUploadId, part: u32) -> Result<(HeaderEdits, Upload), S3Error> {
    if !(1..=MAX_PART_NUMBER).contains(&part) {
        return Err(S3Error::new(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive."));
    }
    let claims = body_claims(headers, MAX_PUT_SIZE)?;
    let dek = upload.open(&settings.keyring).map_err(|e| match e {
        EnvelopeError::UnknownKeyId(id) => S3Error::new(403, "AccessDenied", format!("The upload was started under key id {id:?}, which this gateway is not configured with.")),
        _ => S3Error::new(404, "NoSuchUpload", "The specified upload does not exist: its id does not match the key the gateway gave it."),
    })?;
    segment(claims, &dek, upload.suite, upload.chunk_size, part)
}

/// Whether a request without Content-Length streams a body (HTTP/1.1 chunked).
pub fn is_unsized_stream(headers: &Headers) -> bool {
    header(headers, "content-length").is_none() && header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}
