//! GetObject / HeadObject: the upstream Range, the response headers the
//! client sees and the body transform. Pure: the glue applies the plan.

use crate::config::{Settings, UnencryptedObjects};
use crate::digest::ChecksumAlgorithm;
use crate::envelope::{Envelope, EnvelopeError, METADATA_HEADER};
use crate::put::{header, HeaderEdits, Headers};
use crate::range::{self, ByteRange};
use crate::s3::S3Error;
use crate::sizes;
use crate::stream::{ChunkOpener, ReadWindow, CHUNK_OVERHEAD};
use sha2::{Digest, Sha256};

/// What the request asked for, kept for the response callbacks (request
/// headers cannot be read there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub range: Option<ByteRange>,
    /// Chunk size the upstream Range was aligned to.
    pub aligned_to: u32,
    pub is_head: bool,
}

/// Rewrites a plaintext Range into whole ciphertext chunks.
pub fn plan_request(headers: &Headers, settings: &Settings, is_head: bool) -> (HeaderEdits, ReadRequest) {
    let range = header(headers, "range").and_then(range::parse);
    let mut edits = HeaderEdits::default();
    match range.and_then(|r| range::upstream_header(r, settings.chunk_size)) {
        Some(upstream) => edits.set.push(("range".into(), upstream)),
        // A Range S3 would ignore: ignore it too, never forward it as is.
        None => edits.remove.push("range".into()),
    }
    // Conditional reads on the ETag the client saw cannot be checked by the
    // backend, which knows only the ciphertext ETag (a later issue maps them).
    (edits, ReadRequest { range, aligned_to: settings.chunk_size, is_head })
}

/// The body transform for a response.
pub enum BodyPlan {
    /// Forward the body untouched.
    Unchanged,
    /// Forward only `[skip, skip + len)` of an unencrypted object's body.
    Slice { skip: u64, len: u64, seen: u64 },
    /// Drop `skip` bytes (a partial leading chunk), then decrypt and release
    /// only authenticated plaintext.
    Decrypt { skip: u64, opener: Box<ChunkOpener> },
}

pub struct ResponsePlan {
    pub status: Option<u32>,
    pub edits: HeaderEdits,
    pub body: BodyPlan,
}

/// An ETag for the client: the plaintext MD5 when the uploader sent one,
/// otherwise a stable value derived from the stored ETag, with a `-1` suffix
/// so tools that compare ETags with MD5s know it is not one.
pub fn client_etag(envelope: &Envelope, backend_etag: Option<&str>) -> Option<String> {
    if let Some(md5) = envelope.plaintext_md5 {
        return Some(format!("\"{}\"", hex::encode(md5)));
    }
    backend_etag.map(opaque_etag)
}

/// The ETag shown for a stored ETag: multipart ETags (`"...-N"`) are no MD5
/// of anything the client has and pass as they are; a single-part ETag (the
/// ciphertext's MD5) becomes a stable opaque value ending in `-1`.
pub fn opaque_etag(backend: &str) -> String {
    let bare = backend.trim().trim_matches('"');
    if bare.contains('-') {
        return backend.trim().to_owned();
    }
    let digest = Sha256::new_with_prefix(b"s3crypt etag\0").chain_update(bare.as_bytes()).finalize();
    format!("\"{}-1\"", hex::encode(digest.get(..16).unwrap_or_default()))
}

/// Headers of the stored (ciphertext) object that must not reach the client.
fn ciphertext_headers() -> Vec<String> {
    let mut names: Vec<String> = vec![METADATA_HEADER.into(), "content-md5".into(), "x-amz-checksum-type".into()];
    names.extend(ChecksumAlgorithm::ALL.iter().map(|a| a.header().to_string()));
    names
}

fn status_of(headers: &Headers) -> u32 {
    header(headers, ":status").and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Key problems answer 403 AccessDenied, as S3 does for a GET with the wrong
/// SSE-C key; a damaged object answers 500 InternalError. Both name the cause.
pub fn envelope_read_error(e: EnvelopeError) -> S3Error {
    match e {
        EnvelopeError::UnknownKeyId(id) => S3Error::new(403, "AccessDenied", format!("The object was encrypted under key id {id:?}, which this gateway is not configured with.")),
        EnvelopeError::UnwrapFailed(id) => S3Error::new(
            403,
            "AccessDenied",
            format!("The gateway's key {id:?} does not decrypt this object: the key differs from the one that wrote it, or the object's encryption metadata was altered."),
        ),
        EnvelopeError::UnsupportedVersion => S3Error::new(500, "InternalError", "The object was written in a newer format version than this gateway reads."),
        EnvelopeError::Malformed | EnvelopeError::RandomUnavailable => corrupt("its encryption metadata is malformed"),
    }
}

fn corrupt(what: &str) -> S3Error {
    S3Error::new(500, "InternalError", format!("The stored object failed the gateway's integrity check: {what}."))
}

/// Plans the response to a GET/HEAD of an object from its response headers.
pub fn plan_response(headers: &Headers, request: &ReadRequest, settings: &Settings) -> Result<ResponsePlan, S3Error> {
    let status = status_of(headers);
    let envelope_value = header(headers, METADATA_HEADER);
    let mut edits = HeaderEdits::default();

    if !(status == 200 || status == 206) {
        // Errors and 304s: pass, but never show ciphertext checksums or ETags.
        edits.remove = ciphertext_headers();
        if let Some(value) = envelope_value {
            if let Ok(env) = Envelope::parse(value) {
                if let Some(etag) = client_etag(&env, header(headers, "etag")) {
                    edits.set.push(("etag".into(), etag));
                }
            } else {
                edits.remove.push("etag".into());
            }
        }
        return Ok(ResponsePlan { status: None, edits, body: BodyPlan::Unchanged });
    }

    // Which stored bytes arrive: the whole object, or a Content-Range.
    let content_length: Option<u64> = header(headers, "content-length").and_then(|v| v.trim().parse().ok());
    let (start, end, total) = if status == 206 {
        header(headers, "content-range").and_then(range::parse_content_range).ok_or_else(|| corrupt("206 without a usable Content-Range"))?
    } else {
        let total = content_length.ok_or_else(|| corrupt("no Content-Length"))?;
        (0, total.saturating_sub(1), total)
    };
    let received_end = if total == 0 { 0 } else { end + 1 };

    let Some(envelope_value) = envelope_value else {
        if settings.unencrypted_objects == UnencryptedObjects::Refuse {
            return Err(S3Error::new(403, "AccessDenied", "This object was not written through the encryption gateway, and the gateway is configured to refuse unencrypted objects."));
        }
        // Unencrypted object: serve as is, trimmed to the range asked for.
        return slice_plain(request, start, received_end, total, edits);
    };

    let envelope = Envelope::parse(envelope_value).map_err(envelope_read_error)?;
    let dek = settings.keyring.open(&envelope).map_err(envelope_read_error)?;
    let chunk = envelope.chunk_size;
    let plain_total = sizes::plaintext_len(total, chunk).ok_or_else(|| corrupt("its length is not a possible ciphertext length"))?;
    if envelope.plaintext_len.is_some_and(|n| n != plain_total) {
        return Err(corrupt("its length differs from the length recorded at upload (truncated or extended)"));
    }

    // A suffix range (or a backend that ignores alignment) can start inside a
    // chunk: skip to the next chunk boundary.
    let sealed = u64::from(chunk) + CHUNK_OVERHEAD as u64;
    let aligned_start = start.div_ceil(sealed).saturating_mul(sealed).min(received_end);
    let skip = aligned_start - start;
    let start = aligned_start;
    let plain_start = start / sealed * u64::from(chunk);

    let wanted = match request.range {
        Some(r) => match range::resolve(r, plain_total) {
            Some(span) => Some(span),
            None => return Err(invalid_range(plain_total)),
        },
        None => None,
    };
    let (want_start, want_end) = match wanted {
        Some((a, b)) => (a, b + 1),
        None => (0, plain_total),
    };
    // The received chunks must cover what is wanted.
    let received_plain_end = if received_end == total { plain_total } else { (received_end / sealed) * u64::from(chunk) };
    if want_start < plain_start || want_end > received_plain_end {
        let why = if chunk == request.aligned_to { String::new() } else { format!(" (the object was written with chunk_size {chunk}; ranged reads of it need that chunk_size configured)") };
        return Err(S3Error::new(500, "InternalError", format!("The backend returned a range that does not cover the requested bytes{why}.")));
    }

    edits.remove = ciphertext_headers();
    edits.remove.push("content-range".into());
    edits.set.push(("content-length".into(), (want_end - want_start).to_string()));
    if let Some(etag) = client_etag(&envelope, header(headers, "etag")) {
        edits.set.push(("etag".into(), etag));
    }
    let status = if wanted.is_some() {
        edits.set.push(("content-range".into(), format!("bytes {}-{}/{}", want_start, want_end - 1, plain_total)));
        206
    } else {
        200
    };
    let body = if request.is_head {
        BodyPlan::Unchanged
    } else {
        let window = ReadWindow { object_len: total, start, end: received_end, plain_start, want_start, want_end };
        BodyPlan::Decrypt { skip, opener: Box::new(ChunkOpener::new(dek, envelope.suite, chunk, window)) }
    };
    Ok(ResponsePlan { status: Some(status), edits, body })
}

fn invalid_range(len: u64) -> S3Error {
    S3Error::new(416, "InvalidRange", format!("The requested range is not satisfiable (object size {len})."))
}

fn slice_plain(request: &ReadRequest, start: u64, received_end: u64, total: u64, mut edits: HeaderEdits) -> Result<ResponsePlan, S3Error> {
    let Some(r) = request.range else {
        return Ok(ResponsePlan { status: None, edits, body: BodyPlan::Unchanged });
    };
    let (a, b) = range::resolve(r, total).ok_or_else(|| invalid_range(total))?;
    if a < start || b >= received_end {
        return Err(S3Error::new(500, "InternalError", "The backend returned a range that does not cover the requested bytes."));
    }
    // Whole-object checksums do not describe a slice.
    edits.remove = ciphertext_headers();
    edits.set.push(("content-length".into(), (b - a + 1).to_string()));
    edits.set.push(("content-range".into(), format!("bytes {a}-{b}/{total}")));
    let body = if request.is_head { BodyPlan::Unchanged } else { BodyPlan::Slice { skip: a - start, len: b - a + 1, seen: 0 } };
    Ok(ResponsePlan { status: Some(206), edits, body })
}

impl BodyPlan {
    /// Transforms one body piece; `out` receives what the client gets.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), crate::stream::StreamError> {
        match self {
            BodyPlan::Unchanged => out.extend_from_slice(data),
            BodyPlan::Slice { skip, len, seen } => {
                let piece_start = *seen;
                let piece_end = piece_start + data.len() as u64;
                let from = (*skip).clamp(piece_start, piece_end) - piece_start;
                let to = (*skip + *len).clamp(piece_start, piece_end) - piece_start;
                // from <= to <= data.len(), so both fit usize.
                if let Some(s) = data.get(usize::try_from(from).unwrap_or(usize::MAX)..usize::try_from(to).unwrap_or(usize::MAX)) {
                    out.extend_from_slice(s);
                }
                *seen = piece_end;
            }
            BodyPlan::Decrypt { skip, opener } => {
                let dropped = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
                *skip -= dropped as u64;
                opener.push(data.get(dropped..).unwrap_or_default(), out)?;
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), crate::stream::StreamError> {
        match self {
            BodyPlan::Decrypt { opener, .. } => opener.finish(),
            _ => Ok(()),
        }
    }
}
