//! PutObject: what the request headers become, and the body transform.
//! Pure: the glue reads headers, applies the plan and feeds body pieces.

use crate::cipher::{Suite, KEY_LEN};
use crate::config::{Settings, WriteSpec};
use crate::aws_chunked::{trailer_names, ChunkSignatures, ChunkedError, Decoder, Variant};
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

/// Where an upload's plaintext goes.
enum Output {
    Sealed(SegmentSealer),
    /// A bucket that stays plaintext: passed on, counted against its length,
    /// but for the last byte seen, held until the digests are checked (then
    /// a refused upload never reaches the backend whole).
    Plain { remaining: u64, held: Option<u8> },
}

/// One PutObject in progress.
pub struct Upload {
    output: Output,
    digests: PlaintextDigests,
    /// Checksum headers the client sent, echoed on the response as S3 does.
    pub echo_checksums: Vec<(String, String)>,
    /// aws-chunked framing being taken off, and a reused buffer for its output.
    chunked: Option<Decoder>,
    decoded: Vec<u8>,
    /// The plaintext length the upload announced.
    length: u64,
}

/// What can go wrong while the body streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadError {
    Stream(StreamError),
    Digest(DigestError),
    Chunked(ChunkedError),
}

impl Upload {
    /// Nothing goes upstream: an empty object or part (FORMAT.md: an empty
    /// segment has no chunk), whatever framing its request body carries.
    pub fn stores_nothing(&self) -> bool {
        self.length == 0
    }

    /// Takes a body piece (aws-chunked framing included, if any) and
    /// returns the plaintext bytes it carried.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<u64, UploadError> {
        let plain = match self.chunked.as_mut() {
            Some(decoder) => {
                self.decoded.clear();
                decoder.push(data, &mut self.decoded).map_err(UploadError::Chunked)?;
                self.decoded.as_slice()
            }
            None => data,
        };
        self.digests.update(plain);
        match &mut self.output {
            Output::Sealed(sealer) => sealer.push(plain, out).map_err(UploadError::Stream)?,
            Output::Plain { remaining, held } => {
                *remaining = remaining.checked_sub(plain.len() as u64).ok_or(UploadError::Stream(StreamError::LengthMismatch))?;
                if let Some((last, rest)) = plain.split_last() {
                    out.extend(held.replace(*last));
                    out.extend_from_slice(rest);
                }
            }
        }
        Ok(plain.len() as u64)
    }

    /// End of body: checks the framing and its trailers, verifies the
    /// client's digests, then seals the final chunk. On error nothing more
    /// may go upstream: the backend never sees a complete body, so it stores
    /// nothing. Returns the trailer checksums (echoed on the response).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Vec<(String, String)>, UploadError> {
        let mut trailer_checksums = Vec::new();
        if let Some(decoder) = self.chunked.as_mut() {
            for (name, value) in decoder.finish().map_err(UploadError::Chunked)? {
                if let Some(algorithm) = ChecksumAlgorithm::from_header(&name) {
                    self.digests.provide_checksum(algorithm, &value).map_err(UploadError::Digest)?;
                    trailer_checksums.push((name, value));
                }
            }
        }
        self.digests.verify().map_err(UploadError::Digest)?;
        match self.output {
            Output::Sealed(sealer) => sealer.finish(out).map_err(UploadError::Stream)?,
            Output::Plain { remaining: 0, held } => out.extend(held),
            Output::Plain { .. } => return Err(UploadError::Stream(StreamError::LengthMismatch)),
        }
        Ok(trailer_checksums)
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
        UploadError::Stream(StreamError::LengthMismatch) | UploadError::Chunked(ChunkedError::LengthMismatch) => {
            S3Error::new(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
        }
        UploadError::Chunked(ChunkedError::ChunkSignature | ChunkedError::TrailerSignature) => {
            S3Error::new(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
        }
        UploadError::Chunked(ChunkedError::MissingTrailer(name)) => S3Error::new(400, "InvalidRequest", format!("The trailer {name} announced in x-amz-trailer was not sent.")),
        UploadError::Chunked(e) => S3Error::new(400, "InvalidRequest", format!("The aws-chunked request body is malformed: {e}.")),
        UploadError::Stream(e) => S3Error::new(500, "InternalError", format!("encryption failed: {e}")),
    }
}

pub fn envelope_error(e: EnvelopeError) -> S3Error {
    S3Error::new(500, "InternalError", format!("cannot create the object key: {e:?}"))
}

/// What a single-request upload body must match, from its headers.
pub struct BodyClaims {
    length: u64,
    digests: PlaintextDigests,
    plaintext_md5: Option<[u8; 16]>,
    echo_checksums: Vec<(String, String)>,
    /// aws-chunked framing to take off the body.
    chunked: Option<Decoder>,
    /// Header edits the body encoding needs (Content-Encoding without aws-chunked).
    encoding_edits: HeaderEdits,
}

fn is_aws_chunked(headers: &Headers) -> bool {
    let encoding = header(headers, "content-encoding").unwrap_or_default();
    encoding.split(',').any(|e| e.trim().eq_ignore_ascii_case("aws-chunked")) || header(headers, "x-amz-content-sha256").unwrap_or_default().starts_with("STREAMING-")
}

fn length_header(headers: &Headers, name: &str) -> Result<Option<u64>, S3Error> {
    header(headers, name).map(|v| v.trim().parse::<u64>().map_err(|_| S3Error::new(400, "InvalidArgument", format!("{name} is not a number.")))).transpose()
}

fn body_claims(headers: &Headers, max_len: u64, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<BodyClaims, S3Error> {
    let content_sha = header(headers, "x-amz-content-sha256").unwrap_or_default();
    let mut digests = PlaintextDigests::default();
    let mut encoding_edits = HeaderEdits::default();
    let (length, chunked) = if is_aws_chunked(headers) {
        let variant = Variant::from_content_sha256(content_sha)
            .ok_or_else(|| S3Error::new(501, "NotImplemented", format!("x-amz-content-sha256 {content_sha:?} is not supported by the encryption gateway (SigV4a streaming is not).")))?;
        let length = length_header(headers, "x-amz-decoded-content-length")?
            .ok_or_else(|| S3Error::new(411, "MissingContentLength", "You must provide the x-amz-decoded-content-length header with an aws-chunked body."))?;
        let trailers = trailer_names(header(headers, "x-amz-trailer").unwrap_or_default());
        for name in &trailers {
            let algorithm = ChecksumAlgorithm::from_header(name).ok_or_else(|| S3Error::new(400, "InvalidRequest", format!("Unsupported trailer {name:?}.")))?;
            digests.expect_checksum_later(algorithm);
        }
        // Keep any other content coding the client declared (e.g. gzip).
        let rest: Vec<&str> = header(headers, "content-encoding").unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked")).collect();
        if rest.is_empty() {
            encoding_edits.remove.push("content-encoding".into());
        } else {
            encoding_edits.set.push(("content-encoding".into(), rest.join(",")));
        }
        let signatures = if variant.is_signed() { chunk_signatures } else { None };
        (length, Some(Decoder::new(variant, length, trailers, signatures)))
    } else {
        let length = length_header(headers, "content-length")?.ok_or_else(|| S3Error::new(411, "MissingContentLength", "You must provide the Content-Length HTTP header."))?;
        if !content_sha.is_empty() && content_sha != "UNSIGNED-PAYLOAD" {
            digests.expect_content_sha256(content_sha).map_err(digest_error)?;
        }
        (length, None)
    };
    if length > max_len {
        return Err(S3Error::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."));
    }
    let mut plaintext_md5 = None;
    if let Some(md5) = header(headers, "content-md5") {
        plaintext_md5 = Some(digests.expect_content_md5(md5).map_err(digest_error)?);
    }
    let mut echo_checksums = Vec::new();
    for algorithm in ChecksumAlgorithm::ALL {
        if let Some(value) = header(headers, algorithm.header()) {
            digests.expect_checksum(algorithm, value).map_err(digest_error)?;
            echo_checksums.push((algorithm.header().to_string(), value.trim().to_string()));
        }
    }
    Ok(BodyClaims { length, digests, plaintext_md5, echo_checksums, chunked, encoding_edits })
}

impl BodyClaims {
    /// The plaintext length the upload announced.
    pub fn length(&self) -> u64 {
        self.length
    }
}

/// Header edits and the upload state for one segment (FORMAT.md, "Chunks").
pub fn segment(claims: BodyClaims, dek: &[u8; KEY_LEN], suite: Suite, chunk_size: u32, part: u32) -> Result<(HeaderEdits, Upload), S3Error> {
    let ciphertext_len = sizes::ciphertext_len(claims.length, chunk_size).ok_or_else(|| S3Error::new(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."))?;
    let sealer = SegmentSealer::new(dek, suite, part, chunk_size as usize, claims.length).map_err(|e| S3Error::new(500, "InternalError", format!("encryption unavailable: {e}")))?;
    let mut edits = claims.encoding_edits;
    edits.remove.extend(plaintext_integrity_headers());
    edits.remove.push("transfer-encoding".into());
    edits.set.push(("content-length".into(), ciphertext_len.to_string()));
    Ok((edits, Upload { output: Output::Sealed(sealer), digests: claims.digests, echo_checksums: claims.echo_checksums, chunked: claims.chunked, decoded: Vec::new(), length: claims.length }))
}

/// Plans a PutObject or UploadPart into a bucket that stays plaintext
/// (`"encrypt": false`): the body is not encrypted, but its aws-chunked
/// framing still comes off and the client's digests are still checked here,
/// as for encrypted uploads, since the backend request is re-signed
/// without them.
pub fn plan_plaintext(headers: &Headers, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<(HeaderEdits, Upload), S3Error> {
    let claims = body_claims(headers, MAX_PUT_SIZE, chunk_signatures)?;
    let mut edits = claims.encoding_edits;
    edits.remove.extend(plaintext_integrity_headers());
    edits.remove.push("transfer-encoding".into());
    edits.set.push(("content-length".into(), claims.length.to_string()));
    let output = Output::Plain { remaining: claims.length, held: None };
    Ok((edits, Upload { output, digests: claims.digests, echo_checksums: claims.echo_checksums, chunked: claims.chunked, decoded: Vec::new(), length: claims.length }))
}

/// Request headers not passed on when the filter sends a held empty upload
/// to the backend itself (`empty_upload_request`): the client's signature,
/// date and session token (the backend cluster signs afresh), hop-by-hop and
/// proxy fields, and what the addressing decides.
const NOT_RESENT: [&str; 19] = [
    ":authority", ":path", ":scheme", "host", "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "content-length", "connection", "keep-alive",
    "proxy-connection", "transfer-encoding", "te", "upgrade", "expect", "x-forwarded-for", "x-forwarded-proto", "x-request-id",
];

/// The request the filter sends to the backend for an empty upload it held
/// (glue.rs, `EmptyUpload`): `headers` as the filter prepared them for the
/// backend (`:path` in path style), addressed as the backend wants, with an
/// empty body. `trailer_checksums` (checked meanwhile) join the checksum
/// record of an encrypted object, which a header alone could not carry.
pub fn empty_upload_request(backend: &crate::copy::Backend, headers: &Headers, trailer_checksums: &[(String, String)]) -> Vec<(String, String)> {
    let path = header(headers, ":path").unwrap_or("/");
    let (authority, path) = if backend.virtual_hosted {
        let after = path.strip_prefix('/').unwrap_or(path);
        let (bucket, rest) = after.split_at(after.find(['/', '?']).unwrap_or(after.len()));
        (format!("{bucket}.{}", backend.authority), format!("/{}", rest.strip_prefix('/').unwrap_or(rest)))
    } else {
        (backend.authority.clone(), path.to_owned())
    };
    let mut request: Vec<(String, String)> = vec![(":method".into(), header(headers, ":method").unwrap_or("PUT").to_owned()), (":path".into(), path), (":authority".into(), authority)];
    request.extend(
        headers
            .iter()
            .filter(|(name, _)| {
                let name = name.to_ascii_lowercase();
                name != ":method" && !NOT_RESENT.contains(&name.as_str()) && !name.starts_with("x-envoy-")
            })
            .cloned(),
    );
    request.push(("content-length".into(), "0".into()));
    request.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
    let recorded: Vec<String> = trailer_checksums.iter().map(|(name, value)| format!("{}={value}", name.trim_start_matches("x-amz-checksum-"))).collect();
    if header(headers, METADATA_HEADER).is_some() && !recorded.is_empty() {
        match request.iter_mut().find(|(name, _)| name.eq_ignore_ascii_case(CHECKSUM_HEADER)) {
            Some((_, value)) => {
                value.push(';');
                value.push_str(&recorded.join(";"));
            }
            None => request.push((CHECKSUM_HEADER.into(), recorded.join(";"))),
        }
    }
    request
}

/// Plans a PutObject from its request headers: a new data key, its envelope,
/// and the sealing state.
/// `write`: the bucket's key and cipher (`Settings::bucket_write`).
pub fn plan(headers: &Headers, settings: &Settings, write: &WriteSpec, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<(HeaderEdits, Upload, Envelope), S3Error> {
    let claims = put_claims(headers, chunk_signatures)?;
    let (envelope, dek) = settings.keyring.new_object_under(&write.key_id, write.suite, write.chunk_size, Some(claims.length)).map_err(envelope_error)?;
    plan_with_key(claims, envelope, &dek)
}

/// What a PutObject's body must match: checked before any key is made.
pub fn put_claims(headers: &Headers, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<BodyClaims, S3Error> {
    body_claims(headers, MAX_PUT_SIZE, chunk_signatures)
}

/// Plans a PutObject once its data key and envelope (with the wrapped key)
/// are made: by the keyring, or by the KMS in strict mode.
pub fn plan_with_key(claims: BodyClaims, mut envelope: Envelope, dek: &[u8; KEY_LEN]) -> Result<(HeaderEdits, Upload, Envelope), S3Error> {
    envelope.plaintext_md5 = claims.plaintext_md5;
    let (suite, chunk_size) = (envelope.suite, envelope.chunk_size);
    let checksums: Vec<String> = claims
        .echo_checksums
        .iter()
        .map(|(header, value)| format!("{}={value}", header.trim_start_matches("x-amz-checksum-")))
        .collect();
    let (mut edits, upload) = segment(claims, dek, suite, chunk_size, 0)?;
    edits.set.push((METADATA_HEADER.into(), envelope.encode()));
    if checksums.is_empty() {
        edits.remove.push(CHECKSUM_HEADER.into());
    } else {
        edits.set.push((CHECKSUM_HEADER.into(), checksums.join(";")));
    }
    Ok((edits, upload, envelope))
}

/// Plans an UploadPart of an upload started through the gateway.
pub fn plan_part(headers: &Headers, settings: &Settings, upload: &ClientUploadId, part: u32, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<(HeaderEdits, Upload), S3Error> {
    let claims = part_claims(headers, part, chunk_signatures)?;
    let dek = upload.open(&settings.keyring).map_err(|e| match e {
        EnvelopeError::UnknownKeyId(id) => S3Error::new(403, "AccessDenied", format!("The upload was started under key id {id:?}, which this gateway is not configured with.")),
        _ => S3Error::new(404, "NoSuchUpload", "The specified upload does not exist: its id does not match the key the gateway gave it."),
    })?;
    segment(claims, &dek, upload.suite, upload.chunk_size, part)
}

/// What an UploadPart's body must match: checked before the key is fetched.
pub fn part_claims(headers: &Headers, part: u32, chunk_signatures: Option<Box<dyn ChunkSignatures>>) -> Result<BodyClaims, S3Error> {
    if !(1..=MAX_PART_NUMBER).contains(&part) {
        return Err(S3Error::new(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive."));
    }
    body_claims(headers, MAX_PUT_SIZE, chunk_signatures)
}



#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn md5_b64(data: &[u8]) -> String {
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
    }

    type Trailers = Vec<(String, String)>;

    /// Feeds `body` in pieces of `piece` bytes; returns what went upstream and the end's result.
    fn run(mut upload: Upload, body: &[u8], piece: usize) -> (Vec<u8>, Result<Trailers, UploadError>) {
        let mut out = Vec::new();
        for chunk in body.chunks(piece) {
            if let Err(e) = upload.push(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        let end = upload.finish(&mut out);
        (out, end)
    }

    #[test]
    fn plaintext_uploads_pass_the_body_and_check_its_digest() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let md5 = md5_b64(&body);
        let length = body.len().to_string();
        let (edits, upload) = plan_plaintext(&headers(&[("content-length", &length), ("content-md5", &md5)]), None).unwrap();
        assert!(edits.set.contains(&("content-length".into(), length.clone())));
        assert!(edits.remove.contains(&"content-md5".into()), "checked here, not by the backend");
        for piece in [1, 7, 65_536, body.len()] {
            let (_, upload) = plan_plaintext(&headers(&[("content-length", &length), ("content-md5", &md5)]), None).unwrap();
            let (out, end) = run(upload, &body, piece);
            assert!(end.is_ok());
            assert_eq!(out, body, "piece size {piece}");
        }
        drop(upload);
    }

    #[test]
    fn a_refused_plaintext_upload_never_reaches_the_backend_whole() {
        let body = vec![7u8; 10_000];
        let wrong = md5_b64(b"something else");
        let (_, upload) = plan_plaintext(&headers(&[("content-length", "10000"), ("content-md5", &wrong)]), None).unwrap();
        let (out, end) = run(upload, &body, 4096);
        assert!(matches!(end, Err(UploadError::Digest(DigestError::Mismatch(DigestClaim::ContentMd5)))));
        assert!(out.len() < body.len(), "the last byte is held until the digest is checked");
        // A body longer than its Content-Length is refused too.
        let (_, upload) = plan_plaintext(&headers(&[("content-length", "10")]), None).unwrap();
        assert!(matches!(run(upload, &body, 4096).1, Err(UploadError::Stream(StreamError::LengthMismatch))));
        let (_, upload) = plan_plaintext(&headers(&[("content-length", "10001")]), None).unwrap();
        assert!(matches!(run(upload, &body, 4096).1, Err(UploadError::Stream(StreamError::LengthMismatch))));
    }

    #[test]
    fn a_held_empty_upload_is_resent_as_the_backend_wants_it() {
        let prepared = headers(&[
            (":method", "PUT"),
            (":path", "/bkt/dir/a%20b?x-id=PutObject"),
            (":authority", "gateway.local:8080"),
            (":scheme", "https"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=client/..."),
            ("x-amz-date", "20261129T000000Z"),
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("content-length", "1"),
            ("content-type", "text/plain"),
            ("x-amz-meta-colour", "blue"),
            ("if-none-match", "*"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-expected-rq-timeout-ms", "5"),
            (METADATA_HEADER, "v=1;..."),
        ]);
        let trailer = [("x-amz-checksum-crc32".to_string(), "AAAAAA==".to_string())];
        let path_style = crate::copy::Backend { cluster: "s3_backend".into(), authority: "s3.local:9000".into(), virtual_hosted: false };
        let request = empty_upload_request(&path_style, &prepared, &trailer);
        let get = |name: &str| header(&request, name).map(str::to_owned);
        assert_eq!(get(":path").as_deref(), Some("/bkt/dir/a%20b?x-id=PutObject"));
        assert_eq!(get(":authority").as_deref(), Some("s3.local:9000"));
        assert_eq!(get("content-length").as_deref(), Some("0"), "not the placeholder length");
        assert_eq!(get("x-amz-content-sha256").as_deref(), Some("UNSIGNED-PAYLOAD"));
        for gone in ["authorization", "x-amz-date", ":scheme", "x-forwarded-proto", "x-envoy-expected-rq-timeout-ms"] {
            assert_eq!(get(gone), None, "{gone}");
        }
        for kept in ["content-type", "x-amz-meta-colour", "if-none-match", METADATA_HEADER] {
            assert!(get(kept).is_some(), "{kept}");
        }
        assert_eq!(get(CHECKSUM_HEADER).as_deref(), Some("crc32=AAAAAA=="), "the trailer joins the checksum record");
        assert_eq!(request.iter().filter(|(k, _)| k == "content-length").count(), 1);

        let virtual_hosted = crate::copy::Backend { virtual_hosted: true, ..path_style };
        let request = empty_upload_request(&virtual_hosted, &prepared, &[]);
        assert_eq!(header(&request, ":authority"), Some("bkt.s3.local:9000"));
        assert_eq!(header(&request, ":path"), Some("/dir/a%20b?x-id=PutObject"));
        assert_eq!(header(&request, CHECKSUM_HEADER), None);
    }

    #[test]
    fn plaintext_uploads_take_the_aws_chunked_framing_off() {
        let framed = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (edits, upload) = plan_plaintext(
            &headers(&[("content-encoding", "aws-chunked"), ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"), ("x-amz-decoded-content-length", "11"), ("content-length", &framed.len().to_string())]),
            None,
        )
        .unwrap();
        assert!(edits.set.contains(&("content-length".into(), "11".into())));
        assert!(edits.remove.contains(&"content-encoding".into()));
        let (out, end) = run(upload, framed, 3);
        assert!(end.is_ok());
        assert_eq!(out, b"hello world");
    }
}
