//! GetObject / HeadObject: the upstream Range, the response headers the
//! client sees and the body transform. Pure: the glue applies the plan.

use crate::config::{Settings, UnencryptedObjects};
use crate::digest::ChecksumAlgorithm;
use crate::envelope::{Envelope, EnvelopeError, WrappedDek, CHECKSUM_HEADER, METADATA_HEADER};
use crate::put::{header, HeaderEdits, Headers};
use crate::range::{self, ByteRange};
use crate::s3::S3Error;
use crate::sizes;
use crate::stream::{ChunkOpener, ReadWindow, CHUNK_OVERHEAD};
use sha2::{Digest, Sha256};

/// What the request asked for, kept for the response callbacks (request
/// headers cannot be read there).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadRequest {
    pub range: Option<ByteRange>,
    /// Chunk size the upstream Range was aligned to.
    pub aligned_to: u32,
    pub is_head: bool,
    /// `?partNumber=N`: the backend picks the bytes, the client gets the part's plaintext.
    pub part_number: bool,
    pub conditions: Conditions,
    /// `x-amz-checksum-mode: ENABLED`: return the plaintext checksum if known.
    pub checksum_mode: bool,
    /// Serve objects without an envelope even if `unencrypted_objects` is
    /// `refuse` (the bucket is configured to stay plaintext).
    pub plaintext_bucket: bool,
}

/// Conditional-read headers. The backend only knows the ciphertext's ETag,
/// so the filter takes all four off the upstream request and decides itself
/// against the ETag the client sees, in the order S3 (RFC 7232) uses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
}

const CONDITION_HEADERS: [&str; 4] = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];

/// The outcome of the conditions for a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn etag_list_matches(list: &str, etags: &[&str]) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    list.split(',').any(|candidate| candidate.trim() == "*" || etags.iter().any(|etag| bare(candidate) == bare(etag)))
}

fn parse_date(value: &str) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

impl Conditions {
    fn from_headers(headers: &Headers) -> Conditions {
        let get = |name| header(headers, name).map(str::to_owned);
        Conditions { if_match: get("if-match"), if_none_match: get("if-none-match"), if_modified_since: get("if-modified-since"), if_unmodified_since: get("if-unmodified-since") }
    }

    /// Evaluates against the ETag and Last-Modified the client would see.
    /// Unparseable dates are ignored, as HTTP requires.
    pub fn evaluate(&self, etag: &str, last_modified: Option<&str>) -> Precondition {
        self.evaluate_any(&[etag], last_modified)
    }

    /// The same, for an object the client may know by any of `etags`.
    pub fn evaluate_any(&self, etags: &[&str], last_modified: Option<&str>) -> Precondition {
        let modified = last_modified.and_then(parse_date);
        match &self.if_match {
            Some(list) if !etag_list_matches(list, etags) => return Precondition::Failed,
            Some(_) => {}
            None => {
                if let (Some(since), Some(modified)) = (self.if_unmodified_since.as_deref().and_then(parse_date), modified) {
                    if modified > since {
                        return Precondition::Failed;
                    }
                }
            }
        }
        match &self.if_none_match {
            Some(list) if etag_list_matches(list, etags) => Precondition::NotModified,
            Some(_) => Precondition::Proceed,
            None => match (self.if_modified_since.as_deref().and_then(parse_date), modified) {
                (Some(since), Some(modified)) if modified <= since => Precondition::NotModified,
                _ => Precondition::Proceed,
            },
        }
    }
}

/// Rewrites a plaintext Range into whole ciphertext chunks and takes the
/// conditional headers over.
pub fn plan_request(headers: &Headers, path: &str, settings: &Settings, is_head: bool) -> (HeaderEdits, ReadRequest) {
    let part_number = crate::s3::query_param(path, "partNumber").is_some();
    let range = if part_number { None } else { header(headers, "range").and_then(range::parse) };
    let mut edits = HeaderEdits::default();
    match range.and_then(|r| range::upstream_header(r, settings.chunk_size)) {
        Some(upstream) => edits.set.push(("range".into(), upstream)),
        // A Range S3 would ignore: ignore it too, never forward it as is.
        // (With partNumber, the backend answers the Range error itself.)
        None if !part_number => edits.remove.push("range".into()),
        None => {}
    }
    let conditions = Conditions::from_headers(headers);
    edits.remove.extend(CONDITION_HEADERS.iter().map(|h| h.to_string()));
    let checksum_mode = header(headers, "x-amz-checksum-mode").is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled"));
    (edits, ReadRequest { range, aligned_to: settings.chunk_size, is_head, part_number, conditions, checksum_mode, plaintext_bucket: false })
}

/// The body transform for a response.
pub enum BodyPlan {
    /// Forward the body untouched.
    Unchanged,
    /// Forward only `[skip, skip + len)` of an unencrypted object's body.
    Slice { skip: u64, len: u64, seen: u64 },
    /// Drop `skip` bytes (a partial leading chunk), then decrypt and release
    /// only authenticated plaintext.
    /// `remaining` is what Content-Length promised: a stored object whose
    /// chunks hold more or less plaintext than its size says (odd multipart
    /// part sizes, see FORMAT.md) is cut, never passed off as complete.
    Decrypt { skip: u64, remaining: u64, opener: Box<ChunkOpener> },
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
    let mut names: Vec<String> = vec![METADATA_HEADER.into(), CHECKSUM_HEADER.into(), "content-md5".into(), "x-amz-checksum-type".into()];
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
        EnvelopeError::KmsWrapped => S3Error::new(
            500,
            "InternalError",
            "The object's data key is held by a KMS (written in strict KMS mode), and this gateway has no \"kms_strict\" setting to ask it.",
        ),
    }
}

fn corrupt(what: &str) -> S3Error {
    S3Error::new(500, "InternalError", format!("The stored object failed the gateway's integrity check: {what}."))
}

/// The envelope of a response whose data key only the KMS can unwrap: the
/// glue gets the key (cache or KMS `Decrypt`) before `plan_response`.
/// Errors, 304s and objects with other envelopes need no KMS.
pub fn kms_envelope(headers: &Headers) -> Option<Envelope> {
    let status = status_of(headers);
    if !(status == 200 || status == 206) {
        return None;
    }
    let envelope = Envelope::parse(header(headers, METADATA_HEADER)?).ok()?;
    matches!(envelope.wrapped_dek, WrappedDek::Kms(_)).then_some(envelope)
}

/// Plans the response to a GET/HEAD of an object from its response headers.
/// `kms_dek`: the data key the KMS unwrapped for a `kms=` envelope.
pub fn plan_response(headers: &Headers, request: &ReadRequest, settings: &Settings, kms_dek: Option<&[u8; crate::cipher::KEY_LEN]>) -> Result<ResponsePlan, S3Error> {
    let status = status_of(headers);
    let envelope_value = header(headers, METADATA_HEADER);
    let mut edits = HeaderEdits::default();

    if status == 416 && request.range.is_some() {
        // The backend judged the chunk-aligned range: its error names that
        // range and the stored size (S3's RangeRequested, ActualObjectSize).
        return Err(S3Error::new(416, "InvalidRange", "The requested range is not satisfiable."));
    }
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
        if settings.unencrypted_objects == UnencryptedObjects::Refuse && !request.plaintext_bucket {
            return Err(S3Error::new(403, "AccessDenied", "This object was not written through the encryption gateway, and the gateway is configured to refuse unencrypted objects."));
        }
        check_conditions(request, header(headers, "etag").unwrap_or_default(), None, header(headers, "last-modified"))?;
        // Unencrypted object: serve as is, trimmed to the range asked for.
        return slice_plain(request, start, received_end, total, edits);
    };

    let envelope = Envelope::parse(envelope_value).map_err(envelope_read_error)?;
    let shown_etag = client_etag(&envelope, header(headers, "etag"));
    // Listings show a single-part object's opaque ETag even when HEAD shows
    // the plaintext MD5 (`e`): a client may hold either.
    let listed_etag = header(headers, "etag").map(opaque_etag);
    check_conditions(request, shown_etag.as_deref().unwrap_or_default(), listed_etag.as_deref(), header(headers, "last-modified"))?;
    let dek = match (kms_dek, &envelope.wrapped_dek) {
        (Some(dek), WrappedDek::Kms(_)) => zeroize::Zeroizing::new(*dek),
        _ => settings.keyring.open(&envelope).map_err(envelope_read_error)?,
    };
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

    // The received chunks hold this much plaintext.
    let received_plain_end = if received_end == total { plain_total } else { (received_end / sealed) * u64::from(chunk) };
    let wanted = match request.range {
        // The last n > 0 bytes of an empty object: the whole (empty) object,
        // 200, as S3 answers (a 206 could not name an empty span).
        Some(ByteRange::Suffix(n)) if n > 0 && plain_total == 0 => None,
        Some(r) => match range::resolve(r, plain_total) {
            Some(span) => Some(span),
            None => return Err(invalid_range(plain_total)),
        },
        // A part: whatever the backend sent, as plaintext.
        None if request.part_number && status == 206 && received_plain_end > plain_start => Some((plain_start, received_plain_end - 1)),
        None => None,
    };
    let (want_start, want_end) = match wanted {
        Some((a, b)) => (a, b + 1),
        None => (0, plain_total),
    };
    // The received chunks must cover what is wanted.
    if want_start < plain_start || want_end > received_plain_end {
        let why = if chunk == request.aligned_to { String::new() } else { format!(" (the object was written with chunk_size {chunk}; ranged reads of it need that chunk_size configured)") };
        return Err(S3Error::new(500, "InternalError", format!("The backend returned a range that does not cover the requested bytes{why}.")));
    }

    edits.remove = ciphertext_headers();
    edits.remove.push("content-range".into());
    edits.set.push(("content-length".into(), (want_end - want_start).to_string()));
    if let Some(etag) = shown_etag {
        edits.set.push(("etag".into(), etag));
    }
    if request.checksum_mode && wanted.is_none() {
        edits.set.extend(stored_checksums(header(headers, CHECKSUM_HEADER).unwrap_or_default()));
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
        BodyPlan::Decrypt { skip, remaining: want_end - want_start, opener: Box::new(ChunkOpener::new(dek, envelope.suite, chunk, window)) }
    };
    Ok(ResponsePlan { status: Some(status), edits, body })
}

/// `crc32=<b64>;sha256=<b64>` from the checksum metadata, as response headers.
fn stored_checksums(value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = value
        .split(';')
        .filter_map(|field| field.split_once('='))
        .filter_map(|(name, v)| ChecksumAlgorithm::ALL.iter().find(|a| a.header().trim_start_matches("x-amz-checksum-") == name).map(|a| (a.header().to_string(), v.to_string())))
        .collect();
    if !out.is_empty() {
        out.push(("x-amz-checksum-type".into(), "FULL_OBJECT".into()));
    }
    out
}

/// Conditional headers decided against what the client sees: 412 and 304
/// become the reply instead of the object.
/// `listed`: the ETag listings show, when it differs from `etag` (HEAD's).
fn check_conditions(request: &ReadRequest, etag: &str, listed: Option<&str>, last_modified: Option<&str>) -> Result<(), S3Error> {
    let known: Vec<&str> = std::iter::once(etag).chain(listed).collect();
    match request.conditions.evaluate_any(&known, last_modified) {
        Precondition::Proceed => Ok(()),
        Precondition::Failed => Err(S3Error::new(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")),
        Precondition::NotModified => Err(S3Error::not_modified(etag, last_modified)),
    }
}

/// 416 with `Content-Range: bytes */len`, as S3 and RFC 9110 give it.
fn invalid_range(len: u64) -> S3Error {
    let mut error = S3Error::new(416, "InvalidRange", format!("The requested range is not satisfiable (object size {len})."));
    error.headers.push(("content-range".into(), format!("bytes */{len}")));
    error
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
            BodyPlan::Decrypt { skip, remaining, opener } => {
                let dropped = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
                *skip -= dropped as u64;
                let before = out.len();
                opener.push(data.get(dropped..).unwrap_or_default(), out)?;
                let produced = (out.len() - before) as u64;
                if produced > *remaining {
                    out.truncate(before);
                    return Err(crate::stream::StreamError::LengthMismatch);
                }
                *remaining -= produced;
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), crate::stream::StreamError> {
        match self {
            BodyPlan::Decrypt { opener, remaining, .. } => match opener.finish() {
                Ok(()) if *remaining == 0 => Ok(()),
                // Every byte asked for was released, each from an
                // authenticated chunk; a partial chunk after them (a range
                // laid out for another chunk size) is not read.
                Err(crate::stream::StreamError::Truncated) if *remaining == 0 => Ok(()),
                Ok(()) => Err(crate::stream::StreamError::LengthMismatch),
                Err(e) => Err(e),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAST_MODIFIED: &str = "Wed, 21 Oct 2026 07:28:00 GMT";
    const BEFORE: &str = "Tue, 20 Oct 2026 07:28:00 GMT";
    const AFTER: &str = "Thu, 22 Oct 2026 07:28:00 GMT";

    fn eval(c: Conditions) -> Precondition {
        c.evaluate("\"abc-1\"", Some(LAST_MODIFIED))
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn etag_conditions() {
        assert_eq!(eval(Conditions { if_match: s("\"abc-1\""), ..Default::default() }), Precondition::Proceed);
        assert_eq!(eval(Conditions { if_match: s("\"x\", \"abc-1\""), ..Default::default() }), Precondition::Proceed);
        assert_eq!(eval(Conditions { if_match: s("*"), ..Default::default() }), Precondition::Proceed);
        assert_eq!(eval(Conditions { if_match: s("\"other\""), ..Default::default() }), Precondition::Failed);
        assert_eq!(eval(Conditions { if_none_match: s("\"abc-1\""), ..Default::default() }), Precondition::NotModified);
        assert_eq!(eval(Conditions { if_none_match: s("W/\"abc-1\""), ..Default::default() }), Precondition::NotModified);
        assert_eq!(eval(Conditions { if_none_match: s("\"other\""), ..Default::default() }), Precondition::Proceed);
    }

    #[test]
    fn any_etag_the_client_may_hold() {
        let c = Conditions { if_match: s("\"listed-1\""), ..Default::default() };
        assert_eq!(c.evaluate_any(&["\"md5\"", "\"listed-1\""], None), Precondition::Proceed);
        assert_eq!(c.evaluate_any(&["\"md5\""], None), Precondition::Failed);
        let c = Conditions { if_none_match: s("\"listed-1\""), ..Default::default() };
        assert_eq!(c.evaluate_any(&["\"md5\"", "\"listed-1\""], None), Precondition::NotModified);
    }

    #[test]
    fn date_conditions_and_s3_precedence() {
        assert_eq!(eval(Conditions { if_modified_since: s(BEFORE), ..Default::default() }), Precondition::Proceed);
        assert_eq!(eval(Conditions { if_modified_since: s(AFTER), ..Default::default() }), Precondition::NotModified);
        assert_eq!(eval(Conditions { if_unmodified_since: s(BEFORE), ..Default::default() }), Precondition::Failed);
        assert_eq!(eval(Conditions { if_unmodified_since: s(AFTER), ..Default::default() }), Precondition::Proceed);
        // If-Match true wins over If-Unmodified-Since false (200).
        assert_eq!(eval(Conditions { if_match: s("\"abc-1\""), if_unmodified_since: s(BEFORE), ..Default::default() }), Precondition::Proceed);
        // If-None-Match false (it matches) with If-Modified-Since true: 304.
        assert_eq!(eval(Conditions { if_none_match: s("\"abc-1\""), if_modified_since: s(BEFORE), ..Default::default() }), Precondition::NotModified);
        // If-None-Match true (no match) overrides If-Modified-Since false.
        assert_eq!(eval(Conditions { if_none_match: s("\"x\""), if_modified_since: s(AFTER), ..Default::default() }), Precondition::Proceed);
        // Unparseable dates are ignored.
        assert_eq!(eval(Conditions { if_unmodified_since: s("yesterday"), ..Default::default() }), Precondition::Proceed);
    }

    #[test]
    fn opaque_etags() {
        let e = opaque_etag("\"0123456789abcdef0123456789abcdef\"");
        assert!(e.starts_with('"') && e.ends_with("-1\"") && e.len() == 36);
        assert_eq!(opaque_etag("\"abc-3\""), "\"abc-3\"");
        assert_eq!(e, opaque_etag("0123456789abcdef0123456789abcdef"));
    }
}
