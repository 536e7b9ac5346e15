//! AWS Signature Version 4 verification of the requests clients send to the
//! gateway, and the chunk-signature chain of `aws-chunked` bodies. Pure: no
//! host calls. The glue hands in the request line and headers as Envoy gives
//! them, the clock and a secret look-up; it maps [`AuthError`] onto the S3
//! XML error with [`AuthError::s3_code`].
//!
//! AWS pages this follows (S3 API reference):
//! - `sig-v4-header-based-auth.html`: the `Authorization` header, the
//!   canonical request, the four documented examples;
//! - `sigv4-query-string-auth.html`: presigned URLs (`X-Amz-*` parameters);
//! - `sigv4-streaming.html`, `sigv4-streaming-trailers.html`: the chunk and
//!   trailer signatures of `aws-chunked` bodies.
//!
//! What S3 does differently from the generic SigV4 of other services:
//! - the path is not normalised (`/./`, `/../`, `//` are signed as sent) and
//!   each segment is URI-encoded once, not twice;
//! - the payload hash in the canonical request is the `x-amz-content-sha256`
//!   header, which header-signed requests must carry (it need not be
//!   signed); presigned URLs use `UNSIGNED-PAYLOAD`;
//! - every `x-amz-*` header a request carries must be signed, except
//!   `x-amz-content-sha256` (S3 answers `AccessDenied`, "There were headers
//!   present in the request which were not signed").

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

type HmacSha256 = Hmac<Sha256>;

/// The only signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// How far the request time of a header-signed request may be from the
/// gateway clock, either way (S3: 15 minutes). Presigned URLs may not be
/// dated further than this in the future.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest validity of a presigned URL (`X-Amz-Expires`): seven days.
pub const MAX_PRESIGNED_EXPIRES_SECS: u64 = 604_800;
/// Signing keys kept by a [`Verifier`] (one per access key, day, region and
/// service).
pub const SIGNING_KEY_CACHE_CAPACITY: usize = 64;

const SERVICE: &str = "s3";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a request was not authenticated. Each variant is one S3 error (see
/// [`AuthError::s3_code`]). Signature failures say nothing about what was
/// computed: no canonical request, no string to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header and no presigned parameters. The glue may
    /// still allow the request through anonymous grants (see `policy`).
    Anonymous,
    /// Signature Version 2 (`Authorization: AWS AKID:sig`, `AWSAccessKeyId=`
    /// query), SigV4a or another scheme: only AWS4-HMAC-SHA256 is accepted.
    UnsupportedAuthorization,
    /// Both an `Authorization` header and presigned query parameters.
    ConflictingAuthMechanisms,
    /// The `Authorization` header does not parse, or its credential scope is
    /// wrong (service, terminator, date).
    AuthorizationHeaderMalformed(&'static str),
    /// The presigned query parameters are missing, do not parse or are out of
    /// range (`X-Amz-Expires` above seven days).
    AuthorizationQueryParametersError(&'static str),
    /// A header-signed request without `x-amz-content-sha256`.
    MissingContentSha256,
    /// An `x-amz-content-sha256` that is neither a hex SHA-256 nor one of the
    /// constants this gateway knows.
    InvalidContentSha256,
    /// A header-signed request with neither `x-amz-date` nor `Date`.
    MissingDate,
    /// A header-signed request whose `x-amz-date` (or `Date`) does not parse.
    InvalidDate,
    /// The access key id is not configured.
    InvalidAccessKeyId,
    /// A session token (`x-amz-security-token`): this gateway only has
    /// long-term keys, so no token can be valid.
    InvalidToken,
    /// The signature does not verify.
    SignatureDoesNotMatch,
    /// A header-signed request dated more than 15 minutes from now.
    RequestTimeTooSkewed,
    /// A presigned URL past `X-Amz-Date + X-Amz-Expires`.
    Expired,
    /// A presigned URL dated more than 15 minutes in the future.
    NotYetValid,
    /// `x-amz-*` headers (listed, comma-separated) outside `SignedHeaders`.
    HeadersNotSigned(String),
}

impl AuthError {
    /// The S3 error code and HTTP status to answer with.
    pub fn s3_code(&self) -> (&'static str, u16) {
        match self {
            AuthError::Anonymous | AuthError::InvalidDate | AuthError::Expired | AuthError::NotYetValid | AuthError::HeadersNotSigned(_) => ("AccessDenied", 403),
            AuthError::UnsupportedAuthorization | AuthError::MissingContentSha256 => ("InvalidRequest", 400),
            AuthError::MissingDate => ("MissingSecurityHeader", 400),
            AuthError::ConflictingAuthMechanisms | AuthError::InvalidContentSha256 => ("InvalidArgument", 400),
            AuthError::AuthorizationHeaderMalformed(_) => ("AuthorizationHeaderMalformed", 400),
            AuthError::AuthorizationQueryParametersError(_) => ("AuthorizationQueryParametersError", 400),
            AuthError::InvalidAccessKeyId => ("InvalidAccessKeyId", 403),
            AuthError::InvalidToken => ("InvalidToken", 400),
            AuthError::SignatureDoesNotMatch => ("SignatureDoesNotMatch", 403),
            AuthError::RequestTimeTooSkewed => ("RequestTimeTooSkewed", 403),
        }
    }

    /// The message of the S3 error (S3's own wording where it is known).
    pub fn message(&self) -> String {
        match self {
            AuthError::Anonymous => "Access Denied".into(),
            AuthError::UnsupportedAuthorization => "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".into(),
            AuthError::ConflictingAuthMechanisms => {
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified".into()
            }
            AuthError::AuthorizationHeaderMalformed(detail) => format!("The authorization header is malformed; {detail}"),
            AuthError::AuthorizationQueryParametersError(detail) => (*detail).into(),
            AuthError::MissingContentSha256 => "Missing required header for this request: x-amz-content-sha256".into(),
            AuthError::InvalidContentSha256 => {
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, STREAMING-UNSIGNED-PAYLOAD-TRAILER or a valid sha256 value.".into()
            }
            AuthError::MissingDate => "Your request was missing a required header: x-amz-date (or Date).".into(),
            AuthError::InvalidDate => "AWS authentication requires a valid Date or x-amz-date header".into(),
            AuthError::InvalidAccessKeyId => "The AWS Access Key Id you provided does not exist in our records.".into(),
            AuthError::InvalidToken => "The provided token is malformed or otherwise invalid.".into(),
            AuthError::SignatureDoesNotMatch => "The request signature we calculated does not match the signature you provided. Check your key and signing method.".into(),
            AuthError::RequestTimeTooSkewed => "The difference between the request time and the current time is too large.".into(),
            AuthError::Expired => "Request has expired".into(),
            AuthError::NotYetValid => "Request is not valid yet".into(),
            AuthError::HeadersNotSigned(_) => "There were headers present in the request which were not signed".into(),
        }
    }

    /// For [`AuthError::HeadersNotSigned`]: the header names, for S3's
    /// `<HeadersNotSigned>` element.
    pub fn headers_not_signed(&self) -> Option<&str> {
        match self {
            AuthError::HeadersNotSigned(names) => Some(names),
            _ => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.s3_code().0, self.message())
    }
}

impl std::error::Error for AuthError {}

/// A header or parameter that does not parse; the text says what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

// ---------------------------------------------------------------------------
// Secrets and signing keys
// ---------------------------------------------------------------------------

/// A secret access key, wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(secret.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<Zeroizing<String>> for Secret {
    fn from(secret: Zeroizing<String>) -> Secret {
        Secret(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The derived key of one (secret, day, region, service), wiped on drop.
#[derive(Clone)]
pub struct SigningKey(Zeroizing<[u8; 32]>);

impl SigningKey {
    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`
    pub fn derive(secret: &Secret, date: &str, region: &str, service: &str) -> SigningKey {
        let mut start = Zeroizing::new(Vec::with_capacity(4 + secret.expose().len()));
        start.extend_from_slice(b"AWS4");
        start.extend_from_slice(secret.expose().as_bytes());
        let k_date = Zeroizing::new(hmac(&start, date.as_bytes()));
        let k_region = Zeroizing::new(hmac(k_date.as_slice(), region.as_bytes()));
        let k_service = Zeroizing::new(hmac(k_region.as_slice(), service.as_bytes()));
        SigningKey(Zeroizing::new(hmac(k_service.as_slice(), TERMINATOR.as_bytes())))
    }

    /// `HMAC(kSigning, string_to_sign)`.
    fn sign(&self, string_to_sign: &str) -> [u8; 32] {
        hmac(self.0.as_slice(), string_to_sign.as_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC zero-pads a key to the block size, after hashing it if longer.
    // Doing that here gives a block-sized key, which `KeyInit::new` takes
    // without the (never failing) `Result` of `new_from_slice`.
    let mut block = Key::<HmacSha256>::default();
    let digest;
    let key = if key.len() > block.len() {
        digest = Sha256::digest(key);
        digest.as_slice()
    } else {
        key
    };
    if let Some(dst) = block.get_mut(..key.len()) {
        dst.copy_from_slice(key);
    }
    let mut mac = <HmacSha256 as KeyInit>::new(&block);
    block.as_mut_slice().zeroize();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Signing keys already derived, so a client sending many requests costs one
/// HMAC per request instead of five. Keyed by (access key, date, region,
/// service); an entry also remembers the secret it came from, so a changed
/// secret is never answered with a stale key. Bounded: the oldest entry
/// makes room.
pub struct SigningKeyCache {
    entries: Vec<CachedKey>,
    next: usize,
}

struct CachedKey {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    secret: Secret,
    key: SigningKey,
}

impl Default for SigningKeyCache {
    fn default() -> Self {
        SigningKeyCache::new()
    }
}

impl SigningKeyCache {
    pub fn new() -> SigningKeyCache {
        SigningKeyCache { entries: Vec::new(), next: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn signing_key(&mut self, secret: &Secret, access_key_id: &str, date: &str, region: &str, service: &str) -> SigningKey {
        let found = self.entries.iter_mut().find(|e| e.access_key_id == access_key_id && e.date == date && e.region == region && e.service == service);
        if let Some(entry) = found {
            let same_secret: bool = entry.secret.expose().as_bytes().ct_eq(secret.expose().as_bytes()).into();
            if !same_secret {
                entry.secret = secret.clone();
                entry.key = SigningKey::derive(secret, date, region, service);
            }
            return entry.key.clone();
        }
        let key = SigningKey::derive(secret, date, region, service);
        let entry = CachedKey {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            secret: secret.clone(),
            key: key.clone(),
        };
        if self.entries.len() < SIGNING_KEY_CACHE_CAPACITY {
            self.entries.push(entry);
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = entry;
            self.next = (self.next + 1) % SIGNING_KEY_CACHE_CAPACITY;
        }
        key
    }
}

// ---------------------------------------------------------------------------
// Typed parsers, one per header / parameter
// ---------------------------------------------------------------------------

/// A request time: `x-amz-date` / `X-Amz-Date` in ISO 8601 basic format
/// (`YYYYMMDDTHHMMSSZ`), or an RFC 1123 `Date` header. Displays in the basic
/// format, which is how the string to sign carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AmzDate {
    unix: u64,
}

impl AmzDate {
    /// `YYYYMMDD 'T' HHMMSS 'Z'`, UTC, years 1970 to 9999.
    pub fn parse(text: &str) -> Result<AmzDate, ParseError> {
        const BAD: ParseError = ParseError("expected a time like 20130524T000000Z");
        let b = text.as_bytes();
        if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
            return Err(BAD);
        }
        let field = |range: std::ops::Range<usize>| b.get(range).and_then(digits).ok_or(BAD);
        let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
        let (hour, minute, second) = (field(9..11)?, field(11..13)?, field(13..15)?);
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
            return Err(BAD);
        }
        let days = days_from_civil(year, month, day);
        Ok(AmzDate { unix: days * 86_400 + hour * 3_600 + minute * 60 + second })
    }

    /// An HTTP `Date` header (`Fri, 24 May 2013 00:00:00 GMT`).
    pub fn parse_http_date(text: &str) -> Result<AmzDate, ParseError> {
        let time = httpdate::parse_http_date(text).map_err(|_| ParseError("expected an HTTP date"))?;
        let unix = time.duration_since(UNIX_EPOCH).map_err(|_| ParseError("date before 1970"))?.as_secs();
        Ok(AmzDate { unix })
    }

    pub fn from_unix_seconds(unix: u64) -> AmzDate {
        AmzDate { unix }
    }

    pub fn unix_seconds(&self) -> u64 {
        self.unix
    }

    /// `YYYYMMDD`, the date of the credential scope.
    pub fn date_stamp(&self) -> String {
        let (y, m, d) = civil_from_days(self.unix / 86_400);
        format!("{y:04}{m:02}{d:02}")
    }
}

impl fmt::Display for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix % 86_400;
        write!(f, "{}T{:02}{:02}{:02}Z", self.date_stamp(), secs / 3_600, secs % 3_600 / 60, secs % 60)
    }
}

fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| if b.is_ascii_digit() { acc.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None })
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let before_march = month <= 2;
    let y = if before_march { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if before_march { month + 9 } else { month - 3 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `Credential=AKID/YYYYMMDD/region/service/aws4_request` (also the decoded
/// `X-Amz-Credential`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl<'a> Credential<'a> {
    pub fn parse(text: &'a str) -> Result<Credential<'a>, ParseError> {
        // Split from the right: the four scope fields never contain '/'.
        let mut parts = text.rsplitn(5, '/');
        let (Some(terminator), Some(service), Some(region), Some(date), Some(access_key_id)) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError("the credential must look like ACCESS_KEY/YYYYMMDD/region/s3/aws4_request"));
        };
        if terminator != TERMINATOR {
            return Err(ParseError("the credential must end with aws4_request"));
        }
        if date.len() != 8 || digits(date.as_bytes()).is_none() {
            return Err(ParseError("the credential date must be YYYYMMDD"));
        }
        if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
            return Err(ParseError("the credential has an empty field"));
        }
        Ok(Credential { access_key_id, date, region, service })
    }

    /// `YYYYMMDD/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/{TERMINATOR}", self.date, self.region, self.service)
    }
}

/// `SignedHeaders=host;range;x-amz-date`: lower-case names separated by `;`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    text: &'a str,
}

impl<'a> SignedHeaders<'a> {
    pub fn parse(text: &'a str) -> Result<SignedHeaders<'a>, ParseError> {
        let valid = |name: &str| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b';');
        if !text.split(';').all(valid) {
            return Err(ParseError("SignedHeaders must be lower-case header names separated by ';'"));
        }
        Ok(SignedHeaders { text })
    }

    pub fn as_str(&self) -> &'a str {
        self.text
    }

    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.text.split(';')
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }
}

/// The `Authorization` header of SigV4:
/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=<64 hex>`.
/// The three components come in any order, separated by commas, with or
/// without spaces around them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorizationV4<'a> {
    pub credential: Credential<'a>,
    pub signed_headers: SignedHeaders<'a>,
    /// 64 hex digits.
    pub signature: &'a str,
}

impl<'a> AuthorizationV4<'a> {
    pub fn parse(header: &'a str) -> Result<AuthorizationV4<'a>, ParseError> {
        let rest = header.trim().strip_prefix(ALGORITHM).ok_or(ParseError("the algorithm must be AWS4-HMAC-SHA256"))?;
        if !rest.starts_with([' ', '\t']) {
            return Err(ParseError("a space must follow AWS4-HMAC-SHA256"));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or(ParseError("each component must be name=value"))?;
            let slot = match name.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(ParseError("unknown component; expected Credential, SignedHeaders and Signature")),
            };
            if slot.replace(value.trim()).is_some() {
                return Err(ParseError("a component appears twice"));
            }
        }
        let credential = Credential::parse(credential.ok_or(ParseError("missing Credential"))?)?;
        let signed_headers = SignedHeaders::parse(signed_headers.ok_or(ParseError("missing SignedHeaders"))?)?;
        let signature = signature.ok_or(ParseError("missing Signature"))?;
        if !is_signature_hex(signature) {
            return Err(ParseError("Signature must be 64 hex digits"));
        }
        Ok(AuthorizationV4 { credential, signed_headers, signature })
    }
}

fn is_signature_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `x-amz-content-sha256` header: what the client says about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentSha256 {
    /// The SHA-256 of the body: the glue must check it.
    Sha256([u8; 32]),
    /// `UNSIGNED-PAYLOAD` (and every presigned URL).
    UnsignedPayload,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: aws-chunked with chunk signatures.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: chunk signatures and a
    /// signed trailer.
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked, no chunk signatures,
    /// an unsigned trailer (usually a checksum).
    StreamingUnsignedTrailer,
}

impl ContentSha256 {
    /// The SigV4a streaming constants (`STREAMING-AWS4-ECDSA-P256-SHA256-*`)
    /// are refused like the SigV4a algorithm itself.
    pub fn parse(text: &str) -> Result<ContentSha256, ParseError> {
        match text {
            UNSIGNED_PAYLOAD => Ok(ContentSha256::UnsignedPayload),
            STREAMING_SIGNED => Ok(ContentSha256::StreamingSigned),
            STREAMING_SIGNED_TRAILER => Ok(ContentSha256::StreamingSignedTrailer),
            STREAMING_UNSIGNED_TRAILER => Ok(ContentSha256::StreamingUnsignedTrailer),
            _ => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(text, &mut hash).map_err(|_| ParseError("x-amz-content-sha256 is not a SHA-256 or a known constant"))?;
                Ok(ContentSha256::Sha256(hash))
            }
        }
    }

    /// Whether the body is aws-chunked with a chunk-signature chain.
    pub fn has_chunk_signatures(&self) -> bool {
        matches!(self, ContentSha256::StreamingSigned | ContentSha256::StreamingSignedTrailer)
    }
}

/// The presigned-URL parameters (`X-Amz-*`), decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresignedQuery {
    /// `X-Amz-Credential`, decoded: parse it with [`Credential::parse`].
    pub credential: String,
    pub date: AmzDate,
    /// `X-Amz-Expires`, 1 to 604800.
    pub expires: u64,
    pub signed_headers: String,
    pub signature: String,
    pub security_token: Option<String>,
    /// `X-Amz-Content-Sha256`, rarely sent; `UNSIGNED-PAYLOAD` otherwise.
    pub content_sha256: Option<String>,
}

/// The query parameters that make a request presigned (the others are then
/// required); names are case-sensitive, as in S3.
const PRESIGN_PARAMS: &[&str] = &["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"];

impl PresignedQuery {
    /// From the decoded query parameters. Error texts are S3's where known.
    pub fn parse(params: &[QueryParam]) -> Result<PresignedQuery, ParseError> {
        let get = |name: &str| -> Result<Option<String>, ParseError> {
            let mut values = params.iter().filter(|p| p.name == name.as_bytes());
            let Some(first) = values.next() else { return Ok(None) };
            if values.next().is_some() {
                return Err(ParseError("a presigned URL parameter appears twice"));
            }
            String::from_utf8(first.value.clone()).map(Some).map_err(|_| ParseError("a presigned URL parameter is not UTF-8"))
        };
        const MISSING: ParseError =
            ParseError("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.");
        let algorithm = get("X-Amz-Algorithm")?.ok_or(MISSING)?;
        let credential = get("X-Amz-Credential")?.ok_or(MISSING)?;
        let signature = get("X-Amz-Signature")?.ok_or(MISSING)?;
        let date = get("X-Amz-Date")?.ok_or(MISSING)?;
        let signed_headers = get("X-Amz-SignedHeaders")?.ok_or(MISSING)?;
        let expires = get("X-Amz-Expires")?.ok_or(MISSING)?;
        if algorithm != ALGORITHM {
            return Err(ParseError("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
        }
        let date = AmzDate::parse(&date).map_err(|_| ParseError("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""))?;
        let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let expires = if all_digits(&expires) {
            match digits(expires.as_bytes()) {
                Some(0) => return Err(ParseError("X-Amz-Expires must be at least 1 second")),
                Some(n) if n <= MAX_PRESIGNED_EXPIRES_SECS => n,
                _ => return Err(ParseError("X-Amz-Expires must be less than a week (in seconds) that is 604800")),
            }
        } else if expires.strip_prefix('-').is_some_and(all_digits) {
            return Err(ParseError("X-Amz-Expires must be non-negative"));
        } else {
            return Err(ParseError("X-Amz-Expires should be a number"));
        };
        if !is_signature_hex(&signature) {
            return Err(ParseError("X-Amz-Signature must be 64 hex digits"));
        }
        Ok(PresignedQuery {
            credential,
            date,
            expires,
            signed_headers,
            signature,
            security_token: get("X-Amz-Security-Token")?,
            content_sha256: get("X-Amz-Content-Sha256")?,
        })
    }
}

// ---------------------------------------------------------------------------
// Canonical request
// ---------------------------------------------------------------------------

/// One query parameter, percent-decoded (bytes: S3 keys are UTF-8, but a
/// signature is over whatever bytes were sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParam {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Splits a raw query string at `&` and the first `=` of each piece, and
/// percent-decodes names and values (`+` stays `+`). Empty pieces (`a&&b`)
/// are dropped; repeated names are kept.
pub fn parse_query(query: &str) -> Vec<QueryParam> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            QueryParam { name: percent_decode(name), value: percent_decode(value) }
        })
        .collect()
}

/// CanonicalURI: `"/" + UriEncode(segment)` for each segment of the path as
/// sent. The client sent it percent-encoded, so each segment is decoded and
/// encoded again (once: S3 does not double-encode), `/` kept, nothing
/// normalised (`/./`, `/../`, `//` stay).
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(path.len() + 8);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode_into(&mut out, &percent_decode(segment));
    }
    out
}

/// CanonicalQueryString: `UriEncode(name) + "=" + UriEncode(value)` for every
/// parameter (`=` even without a value), sorted by encoded name then encoded
/// value, joined with `&`. `X-Amz-Signature` is left out for presigned URLs.
pub fn canonical_query(params: &[QueryParam], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|p| !(presigned && p.name == b"X-Amz-Signature"))
        .map(|p| {
            let (mut name, mut value) = (String::new(), String::new());
            uri_encode_into(&mut name, &p.name);
            uri_encode_into(&mut value, &p.value);
            (name, value)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// CanonicalHeaders: `name + ":" + Trimall(value) + "\n"` for each signed
/// header, in SignedHeaders order; several values of one name (several
/// header lines) are joined with `,` in the order received. `host` is
/// Envoy's `:authority` when no `host` header is present. A signed header the
/// request lacks gets an empty value (and so, a signature mismatch).
pub fn canonical_headers(headers: &[(String, String)], signed: &SignedHeaders<'_>) -> String {
    let mut out = String::new();
    for name in signed.names() {
        out.push_str(name);
        out.push(':');
        let mut values = header_values(headers, name).peekable();
        let values: Vec<&str> = if name == "host" && values.peek().is_none() { header_values(headers, ":authority").collect() } else { values.collect() };
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Trimall: strip both ends, fold inner runs of whitespace to one space.
            for (j, word) in value.split_ascii_whitespace().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out
}

/// CanonicalRequest:
/// `Method \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n SignedHeaders \n HashedPayload`
/// (CanonicalHeaders ends with its own `\n`, hence the blank line).
pub fn canonical_request(method: &str, path: &str, params: &[QueryParam], presigned: bool, headers: &[(String, String)], signed: &SignedHeaders<'_>, payload_hash: &str) -> String {
    format!(
        "{method}\n{}\n{}\n{}\n{}\n{payload_hash}",
        canonical_uri(path),
        canonical_query(params, presigned),
        canonical_headers(headers, signed),
        signed.as_str()
    )
}

/// StringToSign: `"AWS4-HMAC-SHA256" \n timestamp \n scope \n Hex(SHA256(CanonicalRequest))`.
pub fn string_to_sign(timestamp: &AmzDate, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{timestamp}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

fn uri_encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            out.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
        }
    }
}

/// Percent-decoding to bytes; a `%` not followed by two hex digits stays.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex_value = |at: usize| bytes.get(at).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex_value(i + 1), hex_value(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn header_values<'h>(headers: &'h [(String, String)], name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------
// Signing (the client side: the recovery tool's requests to a backend)
// ---------------------------------------------------------------------------

/// The `Authorization` header value for a header-signed request, built from
/// the same canonical-request code the verifier uses. Every header in
/// `headers` is signed (names lower-case; `host`, `x-amz-date` and
/// `x-amz-content-sha256` must be among them); `path` is percent-encoded as
/// sent and `query` is the raw query string without `?`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(access_key_id: &str, secret: &Secret, timestamp: &AmzDate, region: &str, service: &str, method: &str, path: &str, query: &str, headers: &[(String, String)], payload_hash: &str) -> Result<String, ParseError> {
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let names = names.join(";");
    let signed = SignedHeaders::parse(&names)?;
    let canonical = canonical_request(method, path, &parse_query(query), false, headers, &signed, payload_hash);
    let date = timestamp.date_stamp();
    let scope = format!("{date}/{region}/{service}/{TERMINATOR}");
    let signature = SigningKey::derive(secret, &date, region, service).sign(&string_to_sign(timestamp, &scope, &canonical));
    Ok(format!("{ALGORITHM} Credential={access_key_id}/{scope},SignedHeaders={names},Signature={}", hex::encode(signature)))
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// What the glue reads from Envoy.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// `:path` as received: percent-encoded path and query.
    pub path: &'a str,
    /// Lower-case names as Envoy gives them, `:authority` included.
    pub headers: &'a [(String, String)],
}

/// An authenticated request.
#[derive(Clone, Debug)]
pub struct Verified {
    pub access_key_id: String,
    /// The payload claim the glue must enforce (hash to check, aws-chunked
    /// framing to decode, or nothing).
    pub content_sha256: ContentSha256,
    pub presigned: bool,
    /// The region of the credential scope (any region is accepted).
    pub region: String,
    /// The request signature, lower-case hex: the seed of a chunk chain.
    pub seed_signature: String,
    pub signing_key: SigningKey,
    /// `YYYYMMDD/region/s3/aws4_request`.
    pub scope: String,
    /// `YYYYMMDDTHHMMSSZ`.
    pub timestamp: String,
}

impl Verified {
    /// The chunk-signature verifier of an aws-chunked body, when the payload
    /// claim says chunks are signed.
    pub fn chunk_signatures(&self) -> Option<ChunkSignatureChain> {
        self.content_sha256
            .has_chunk_signatures()
            .then(|| ChunkSignatureChain::new(&self.seed_signature, self.signing_key.clone(), &self.scope, &self.timestamp))
    }
}

/// Verifies requests, keeping derived signing keys between them. One per VM
/// (share it between HTTP contexts); [`verify`] uses a thread-local one.
#[derive(Default)]
pub struct Verifier {
    cache: RefCell<SigningKeyCache>,
}

thread_local! {
    static VERIFIER: Verifier = Verifier::new();
}

/// [`Verifier::verify`] with this thread's verifier (proxy-wasm VMs are
/// single-threaded, so one cache per VM).
pub fn verify(request: &RequestParts<'_>, now: SystemTime, lookup: &dyn Fn(&str) -> Option<Secret>) -> Result<Verified, AuthError> {
    VERIFIER.with(|verifier| verifier.verify(request, now, lookup))
}

enum Mechanism<'a> {
    Header(&'a str),
    Presigned,
}

/// A request taken apart once, whichever the mechanism.
struct Incoming<'r> {
    method: &'r str,
    path: &'r str,
    params: Vec<QueryParam>,
    headers: &'r [(String, String)],
    /// Unix seconds.
    now: u64,
    service: &'r str,
}

/// What the client claims, from the header or the query, once checked for
/// form, scope and time.
struct Claim<'a> {
    credential: Credential<'a>,
    signed_headers: SignedHeaders<'a>,
    timestamp: AmzDate,
    payload_hash: &'a str,
    signature: &'a str,
    presigned: bool,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Authenticates an S3 request signed with SigV4, in the header or in the
    /// query. `lookup` gives the secret of an access key id.
    pub fn verify(&self, request: &RequestParts<'_>, now: SystemTime, lookup: &dyn Fn(&str) -> Option<Secret>) -> Result<Verified, AuthError> {
        self.verify_for_service(request, now, lookup, SERVICE)
    }

    /// The number of signing keys held.
    pub fn cached_keys(&self) -> usize {
        self.cache.try_borrow().map_or(0, |c| c.len())
    }

    /// `service` is "s3" except in tests replaying the generic SigV4 suite.
    fn verify_for_service(&self, request: &RequestParts<'_>, now: SystemTime, lookup: &dyn Fn(&str) -> Option<Secret>, service: &str) -> Result<Verified, AuthError> {
        let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        let incoming = Incoming {
            method: request.method,
            path,
            params: parse_query(query),
            headers: request.headers,
            now: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            service,
        };
        match mechanism(request.headers, &incoming.params)? {
            Mechanism::Header(authorization) => self.verify_header(&incoming, authorization, lookup),
            Mechanism::Presigned => self.verify_presigned(&incoming, lookup),
        }
    }

    fn verify_header(&self, req: &Incoming<'_>, authorization: &str, lookup: &dyn Fn(&str) -> Option<Secret>) -> Result<Verified, AuthError> {
        let auth = AuthorizationV4::parse(authorization).map_err(|e| AuthError::AuthorizationHeaderMalformed(e.0))?;
        if auth.credential.service != req.service {
            return Err(AuthError::AuthorizationHeaderMalformed("the credential scope service must be s3"));
        }
        let timestamp = match single_header(req.headers, "x-amz-date").map_err(|_| AuthError::InvalidDate)? {
            Some(value) => AmzDate::parse(value.trim()),
            None => match single_header(req.headers, "date").map_err(|_| AuthError::InvalidDate)? {
                Some(value) => AmzDate::parse_http_date(value.trim()),
                None => return Err(AuthError::MissingDate),
            },
        }
        .map_err(|_| AuthError::InvalidDate)?;
        if auth.credential.date != timestamp.date_stamp() {
            return Err(AuthError::AuthorizationHeaderMalformed("Invalid credential date. Date is not the same as X-Amz-Date."));
        }
        if timestamp.unix_seconds().abs_diff(req.now) > MAX_CLOCK_SKEW.as_secs() {
            return Err(AuthError::RequestTimeTooSkewed);
        }
        if !auth.signed_headers.contains("host") {
            return Err(AuthError::AuthorizationHeaderMalformed("SignedHeaders must include host"));
        }
        let payload_hash = single_header(req.headers, "x-amz-content-sha256").map_err(|_| AuthError::InvalidContentSha256)?.ok_or(AuthError::MissingContentSha256)?;
        if header_values(req.headers, "x-amz-security-token").next().is_some() {
            return Err(AuthError::InvalidToken);
        }
        let claim = Claim { credential: auth.credential, signed_headers: auth.signed_headers, timestamp, payload_hash: payload_hash.trim(), signature: auth.signature, presigned: false };
        self.check_claim(req, &claim, lookup)
    }

    fn verify_presigned(&self, req: &Incoming<'_>, lookup: &dyn Fn(&str) -> Option<Secret>) -> Result<Verified, AuthError> {
        let query = PresignedQuery::parse(&req.params).map_err(|e| AuthError::AuthorizationQueryParametersError(e.0))?;
        let credential = Credential::parse(&query.credential).map_err(|_| AuthError::AuthorizationQueryParametersError("Error parsing the X-Amz-Credential parameter"))?;
        if credential.service != req.service {
            return Err(AuthError::AuthorizationQueryParametersError("Error parsing the X-Amz-Credential parameter; incorrect service. This endpoint belongs to \"s3\"."));
        }
        if credential.date != query.date.date_stamp() {
            return Err(AuthError::AuthorizationQueryParametersError("Invalid credential date. Date is not the same as X-Amz-Date."));
        }
        let signed_headers = SignedHeaders::parse(&query.signed_headers).map_err(|e| AuthError::AuthorizationQueryParametersError(e.0))?;
        if !signed_headers.contains("host") {
            return Err(AuthError::AuthorizationQueryParametersError("X-Amz-SignedHeaders must include host"));
        }
        let signed_at = query.date.unix_seconds();
        if req.now > signed_at.saturating_add(query.expires) {
            return Err(AuthError::Expired);
        }
        if signed_at > req.now.saturating_add(MAX_CLOCK_SKEW.as_secs()) {
            return Err(AuthError::NotYetValid);
        }
        if query.security_token.is_some() || header_values(req.headers, "x-amz-security-token").next().is_some() {
            return Err(AuthError::InvalidToken);
        }
        // Presigned URLs sign UNSIGNED-PAYLOAD unless the client put a hash
        // in the query (or, as MinIO also accepts, in the header).
        let header_hash = single_header(req.headers, "x-amz-content-sha256").map_err(|_| AuthError::InvalidContentSha256)?;
        let payload_hash = query.content_sha256.as_deref().or(header_hash).map_or(UNSIGNED_PAYLOAD, str::trim);
        let claim = Claim { credential, signed_headers, timestamp: query.date, payload_hash, signature: &query.signature, presigned: true };
        self.check_claim(req, &claim, lookup)
    }

    /// The common end: payload claim, secret, canonical request, signature,
    /// unsigned x-amz-* headers.
    fn check_claim(&self, req: &Incoming<'_>, claim: &Claim<'_>, lookup: &dyn Fn(&str) -> Option<Secret>) -> Result<Verified, AuthError> {
        let content_sha256 = ContentSha256::parse(claim.payload_hash).map_err(|_| AuthError::InvalidContentSha256)?;
        let secret = lookup(claim.credential.access_key_id).ok_or(AuthError::InvalidAccessKeyId)?;
        let canonical = canonical_request(req.method, req.path, &req.params, claim.presigned, req.headers, &claim.signed_headers, claim.payload_hash);
        let signing_key = self.signing_key(&secret, &claim.credential);
        let scope = claim.credential.scope();
        let computed = signing_key.sign(&string_to_sign(&claim.timestamp, &scope, &canonical));
        check_signature(claim.signature, &computed)?;
        check_all_amz_headers_signed(req.headers, &claim.signed_headers)?;
        Ok(Verified {
            access_key_id: claim.credential.access_key_id.to_owned(),
            content_sha256,
            presigned: claim.presigned,
            region: claim.credential.region.to_owned(),
            seed_signature: hex::encode(computed),
            signing_key,
            scope,
            timestamp: claim.timestamp.to_string(),
        })
    }

    fn signing_key(&self, secret: &Secret, credential: &Credential<'_>) -> SigningKey {
        match self.cache.try_borrow_mut() {
            Ok(mut cache) => cache.signing_key(secret, credential.access_key_id, credential.date, credential.region, credential.service),
            // Only if `lookup` re-entered the verifier: derive without caching.
            Err(_) => SigningKey::derive(secret, credential.date, credential.region, credential.service),
        }
    }
}

/// Which mechanism the request uses, or why none applies.
fn mechanism<'h>(headers: &'h [(String, String)], params: &[QueryParam]) -> Result<Mechanism<'h>, AuthError> {
    let authorization = single_header(headers, "authorization").map_err(|_| AuthError::AuthorizationHeaderMalformed("more than one Authorization header"))?;
    let presigned = params.iter().any(|p| PRESIGN_PARAMS.iter().any(|name| p.name == name.as_bytes()));
    let sigv2_query = params.iter().any(|p| p.name == b"AWSAccessKeyId");
    match authorization {
        Some(_) if presigned || sigv2_query => Err(AuthError::ConflictingAuthMechanisms),
        Some(value) => {
            let value = value.trim();
            if value.split_ascii_whitespace().next() == Some(ALGORITHM) {
                Ok(Mechanism::Header(value))
            } else {
                // "AWS AKID:signature" (SigV2), "AWS4-ECDSA-P256-SHA256 ..." (SigV4a), Bearer...
                Err(AuthError::UnsupportedAuthorization)
            }
        }
        None if presigned && sigv2_query => Err(AuthError::ConflictingAuthMechanisms),
        None if presigned => Ok(Mechanism::Presigned),
        None if sigv2_query => Err(AuthError::UnsupportedAuthorization),
        None => Err(AuthError::Anonymous),
    }
}

/// The value of a header that may appear at most once.
fn single_header<'h>(headers: &'h [(String, String)], name: &'h str) -> Result<Option<&'h str>, ()> {
    let mut values = header_values(headers, name);
    let first = values.next();
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// Constant-time comparison of the client's hex signature with ours.
fn check_signature(provided_hex: &str, computed: &[u8; 32]) -> Result<(), AuthError> {
    let mut provided = [0u8; 32];
    hex::decode_to_slice(provided_hex, &mut provided).map_err(|_| AuthError::SignatureDoesNotMatch)?;
    if bool::from(provided.ct_eq(computed)) {
        Ok(())
    } else {
        Err(AuthError::SignatureDoesNotMatch)
    }
}

/// S3 refuses `x-amz-*` headers outside the signature (they change what a
/// request does: `x-amz-copy-source`, `x-amz-acl`...), except
/// `x-amz-content-sha256`, which the canonical request covers anyway.
fn check_all_amz_headers_signed(headers: &[(String, String)], signed: &SignedHeaders<'_>) -> Result<(), AuthError> {
    let mut unsigned: Vec<String> = headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| name.starts_with("x-amz-") && name != "x-amz-content-sha256" && !signed.contains(name))
        .collect();
    if unsigned.is_empty() {
        return Ok(());
    }
    unsigned.sort();
    unsigned.dedup();
    Err(AuthError::HeadersNotSigned(unsigned.join(", ")))
}

// ---------------------------------------------------------------------------
// aws-chunked signature chain
// ---------------------------------------------------------------------------

/// Verifies the chunk signatures of an aws-chunked body in order. Each chunk
/// signature signs the previous one, starting from the request signature
/// (the seed), so chunks can be neither reordered nor dropped:
///
/// ```text
/// chunk:   "AWS4-HMAC-SHA256-PAYLOAD" \n timestamp \n scope \n previous-signature \n
///          Hex(SHA256("")) \n Hex(SHA256(chunk-data))
/// trailer: "AWS4-HMAC-SHA256-TRAILER" \n timestamp \n scope \n previous-signature \n
///          Hex(SHA256(trailer-bytes))
/// ```
///
/// The final chunk is the zero-length one; only a trailer may follow it, and
/// nothing may follow the trailer. A failure sticks: every later check fails.
/// `trailer_bytes` are the trailer lines as received (CRLF or LF line ends,
/// the `x-amz-trailer-signature` line left out); what is hashed is their
/// canonical form, see [`canonical_trailers`].
#[derive(Debug)]
pub struct ChunkSignatureChain {
    signing_key: SigningKey,
    timestamp: String,
    scope: String,
    previous: String,
    state: ChainState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChainState {
    Chunks,
    AfterFinalChunk,
    Done,
    Failed,
}

impl ChunkSignatureChain {
    pub fn new(seed_signature: &str, signing_key: SigningKey, scope: &str, timestamp: &str) -> ChunkSignatureChain {
        ChunkSignatureChain { signing_key, timestamp: timestamp.to_owned(), scope: scope.to_owned(), previous: seed_signature.to_ascii_lowercase(), state: ChainState::Chunks }
    }

    /// Checks the signature of the next chunk, given the SHA-256 of its data.
    pub fn check_chunk(&mut self, signature: &str, data_sha256: &[u8; 32]) -> bool {
        if self.state != ChainState::Chunks {
            self.state = ChainState::Failed;
            return false;
        }
        let string_to_sign = format!("AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}", self.timestamp, self.scope, self.previous, hex::encode(data_sha256));
        let final_chunk = hex::encode(data_sha256) == EMPTY_SHA256;
        self.advance(signature, &string_to_sign, if final_chunk { ChainState::AfterFinalChunk } else { ChainState::Chunks })
    }

    /// Checks the `x-amz-trailer-signature` of the trailing headers.
    pub fn check_trailer(&mut self, signature: &str, trailer_bytes: &[u8]) -> bool {
        if self.state != ChainState::AfterFinalChunk {
            self.state = ChainState::Failed;
            return false;
        }
        let Some(canonical) = canonical_trailers(trailer_bytes) else {
            self.state = ChainState::Failed;
            return false;
        };
        let string_to_sign = format!("AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}", self.timestamp, self.scope, self.previous, sha256_hex(canonical.as_bytes()));
        self.advance(signature, &string_to_sign, ChainState::Done)
    }

    fn advance(&mut self, signature: &str, string_to_sign: &str, next: ChainState) -> bool {
        let computed = self.signing_key.sign(string_to_sign);
        let ok = is_signature_hex(signature) && check_signature(signature, &computed).is_ok();
        if ok {
            self.previous = hex::encode(computed);
            self.state = next;
        } else {
            self.state = ChainState::Failed;
        }
        ok
    }
}

impl crate::aws_chunked::ChunkSignatures for ChunkSignatureChain {
    fn check_chunk(&mut self, signature: &str, data_sha256: &[u8; 32]) -> bool {
        ChunkSignatureChain::check_chunk(self, signature, data_sha256)
    }

    fn check_trailer(&mut self, signature: &str, trailer_bytes: &[u8]) -> bool {
        ChunkSignatureChain::check_trailer(self, signature, trailer_bytes)
    }
}

/// The trailing headers as the trailer signature hashes them: one
/// `name:value\n` per trailer, names lower case, values trimmed, sorted by
/// name (as the SDKs canonicalise headers). Line ends may be CRLF or LF;
/// empty lines are skipped. `None` if a line is not `name:value` or not UTF-8.
pub fn canonical_trailers(trailer_bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(trailer_bytes).ok()?;
    let mut trailers = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        trailers.push((name.trim().to_ascii_lowercase(), value.trim_matches([' ', '\t'])));
    }
    trailers.sort();
    Some(trailers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    const DOC_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const DOC_TIME: &str = "20130524T000000Z";
    const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";

    // ---- Test vectors: filter/testdata/sigv4/*.txt
    //
    // A header of `name: value` lines (source, access-key, secret, service,
    // now, expect, and `payload: add-empty-sha256` for the generic suite, whose
    // requests lack the x-amz-content-sha256 S3 requires), a blank line, then
    // the request as sent: request line, `Name: value` header lines. Header
    // names are lower-cased and Host becomes `:authority`, as Envoy hands them.

    struct Vector {
        name: String,
        meta: BTreeMap<String, String>,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Vector {
        fn load(name: &str) -> Vector {
            Vector::read(&dir().join(name))
        }

        fn read(path: &Path) -> Vector {
            let text = std::fs::read_to_string(path).unwrap();
            let (meta_text, request) = text.split_once("\n\n").unwrap();
            let meta: BTreeMap<String, String> = meta_text.lines().map(|l| l.split_once(": ").unwrap()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let mut lines = request.lines();
            let request_line = lines.next().unwrap();
            let (method, rest) = request_line.split_once(' ').unwrap();
            let target = rest.strip_suffix(" HTTP/1.1").unwrap();
            let mut headers: Vec<(String, String)> = lines
                .take_while(|l| !l.is_empty())
                .map(|l| {
                    let (name, value) = l.split_once(':').unwrap();
                    let name = name.to_ascii_lowercase();
                    (if name == "host" { ":authority".to_string() } else { name }, value.to_string())
                })
                .collect();
            if meta.get("payload").map(String::as_str) == Some("add-empty-sha256") && !headers.iter().any(|(n, _)| n == "x-amz-content-sha256") {
                headers.push(("x-amz-content-sha256".into(), EMPTY_SHA256.into()));
            }
            Vector { name: path.file_name().unwrap().to_string_lossy().into_owned(), meta, method: method.to_string(), path: target.to_string(), headers }
        }

        fn now(&self) -> SystemTime {
            at(&self.meta["now"])
        }

        fn verify(&self) -> Result<Verified, AuthError> {
            self.verify_at(self.now())
        }

        fn verify_at(&self, now: SystemTime) -> Result<Verified, AuthError> {
            self.verify_with(now, &self.meta["secret"])
        }

        fn verify_with(&self, now: SystemTime, secret: &str) -> Result<Verified, AuthError> {
            let access_key = self.meta["access-key"].clone();
            let secret = secret.to_string();
            let lookup = move |id: &str| (id == access_key).then(|| Secret::new(secret.clone()));
            let request = RequestParts { method: &self.method, path: &self.path, headers: &self.headers };
            Verifier::new().verify_for_service(&request, now, &lookup, &self.meta["service"])
        }

        fn header(&self, name: &str) -> &str {
            &self.headers.iter().find(|(n, _)| n == name).unwrap().1
        }

        fn set_header(&mut self, name: &str, value: &str) {
            self.headers.retain(|(n, _)| n != name);
            self.headers.push((name.into(), value.into()));
        }

        fn remove_header(&mut self, name: &str) {
            self.headers.retain(|(n, _)| n != name);
        }
    }

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sigv4")
    }

    fn at(stamp: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(AmzDate::parse(stamp).unwrap().unix_seconds())
    }

    fn code(result: Result<Verified, AuthError>) -> &'static str {
        match result {
            Ok(_) => "ok",
            Err(e) => e.s3_code().0,
        }
    }

    fn assert_ok(name: &str) -> Verified {
        let vector = Vector::load(name);
        vector.verify().unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    // ---- Every vector file gives what its header expects.

    #[test]
    fn every_vector_file_gives_its_expected_result() {
        let mut count = 0;
        for entry in std::fs::read_dir(dir()).unwrap() {
            let vector = Vector::read(&entry.unwrap().path());
            let result = vector.verify();
            if let Ok(verified) = &result {
                assert_eq!(verified.access_key_id, vector.meta["access-key"], "{}", vector.name);
            }
            assert_eq!(code(result.clone()), vector.meta["expect"], "{}: {result:?}", vector.name);
            count += 1;
        }
        assert!(count >= 30, "only {count} vectors");
    }

    // ---- The S3 documentation examples (sig-v4-header-based-auth).

    #[test]
    fn s3_doc_get_object_range() {
        let verified = assert_ok("s3_doc_get_object_range.txt");
        assert_eq!(verified.access_key_id, DOC_ACCESS_KEY);
        assert_eq!(verified.content_sha256, ContentSha256::Sha256(Sha256::digest(b"").into()));
        assert_eq!(verified.seed_signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert_eq!((verified.region.as_str(), verified.scope.as_str(), verified.timestamp.as_str()), ("us-east-1", DOC_SCOPE, DOC_TIME));
        assert!(!verified.presigned);
    }

    #[test]
    fn s3_doc_get_object_range_canonical_request_and_string_to_sign() {
        let v = Vector::load("s3_doc_get_object_range.txt");
        let signed = SignedHeaders::parse("host;range;x-amz-content-sha256;x-amz-date").unwrap();
        let canonical = canonical_request("GET", "/test.txt", &[], false, &v.headers, &signed, EMPTY_SHA256);
        assert_eq!(
            canonical,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let sts = string_to_sign(&AmzDate::parse(DOC_TIME).unwrap(), DOC_SCOPE, &canonical);
        assert_eq!(sts, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    }

    #[test]
    fn s3_doc_put_object() {
        let verified = assert_ok("s3_doc_put_object.txt");
        assert_eq!(verified.content_sha256, ContentSha256::Sha256(Sha256::digest(b"Welcome to Amazon S3.").into()));
    }

    #[test]
    fn s3_doc_put_object_with_the_dollar_unencoded() {
        // The documentation writes the request line with a raw '$'; the
        // canonical URI encodes it (/test%24file.text) either way.
        let mut v = Vector::load("s3_doc_put_object.txt");
        v.path = "/test$file.text".into();
        assert_eq!(code(v.verify()), "ok");
        assert_eq!(canonical_uri("/test$file.text"), "/test%24file.text");
    }

    #[test]
    fn s3_doc_get_bucket_lifecycle() {
        assert_ok("s3_doc_get_bucket_lifecycle.txt");
        assert_eq!(canonical_query(&parse_query("lifecycle"), false), "lifecycle=");
    }

    #[test]
    fn s3_doc_list_objects() {
        assert_ok("s3_doc_list_objects.txt");
    }

    #[test]
    fn s3_doc_authorization_header_spacing_variants() {
        // AWS accepts ", " (its overview) and "," (its examples) between components.
        let v = Vector::load("s3_doc_get_object_range.txt");
        let original = v.header("authorization").to_string();
        for variant in [
            original.replace(",", ", "),
            original.replace(",", " ,  "),
            original.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256   "),
            format!("  {original}  "),
            // Components in another order.
            "AWS4-HMAC-SHA256 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request".into(),
        ] {
            let mut w = Vector::load("s3_doc_get_object_range.txt");
            w.set_header("authorization", &variant);
            assert_eq!(code(w.verify()), "ok", "{variant}");
        }
    }

    #[test]
    fn s3_doc_get_object_range_is_signed_as_documented() {
        // The signing side reproduces the documented signature, and the
        // verifier accepts what it signs.
        let v = Vector::load("s3_doc_get_object_range.txt");
        let headers: Vec<(String, String)> = v.headers.iter().filter(|(n, _)| n != "authorization").map(|(n, value)| (if n == ":authority" { "host".to_string() } else { n.clone() }, value.trim().to_string())).collect();
        let timestamp = AmzDate::parse(DOC_TIME).unwrap();
        let signed = authorization(DOC_ACCESS_KEY, &Secret::new(DOC_SECRET), &timestamp, "us-east-1", "s3", "GET", "/test.txt", "", &headers, EMPTY_SHA256).unwrap();
        assert_eq!(signed, v.header("authorization").trim());
    }

    #[test]
    fn signed_requests_verify() {
        // A CopyObject onto itself with new metadata, as the recovery tool
        // sends it: encoded path, query, x-amz-* headers all signed.
        let timestamp = AmzDate::parse(DOC_TIME).unwrap();
        let mut request = headers(&[
            ("host", "127.0.0.1:9000"),
            ("x-amz-date", DOC_TIME),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-copy-source", "/bucket/a%20b/c%2B.txt"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("x-amz-meta-s3crypt", "v=1;s=aes-256-gcm;c=65536;k=new;w=AAAA"),
            ("content-type", "text/plain"),
        ]);
        let path = "/bucket/a%20b/c%2B.txt";
        let auth = authorization(DOC_ACCESS_KEY, &Secret::new(DOC_SECRET), &timestamp, "us-east-1", "s3", "PUT", path, "x-id=CopyObject", &request, EMPTY_SHA256).unwrap();
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-copy-source;x-amz-date;x-amz-meta-s3crypt;x-amz-metadata-directive,"), "{auth}");
        request.retain(|(n, _)| n != "host");
        request.push((":authority".into(), "127.0.0.1:9000".into()));
        request.push(("authorization".into(), auth));
        let target = format!("{path}?x-id=CopyObject");
        let lookup = |id: &str| (id == DOC_ACCESS_KEY).then(|| Secret::new(DOC_SECRET));
        let parts = RequestParts { method: "PUT", path: &target, headers: &request };
        assert!(Verifier::new().verify(&parts, at(DOC_TIME), &lookup).is_ok());
        let tampered = RequestParts { method: "PUT", path: "/bucket/a%20b/other", headers: &request };
        assert_eq!(code(Verifier::new().verify(&tampered, at(DOC_TIME), &lookup)), "SignatureDoesNotMatch");
    }

    // ---- Presigned URLs (sigv4-query-string-auth).

    #[test]
    fn s3_doc_presigned_get_object() {
        let verified = assert_ok("s3_doc_presigned_get_object.txt");
        assert!(verified.presigned);
        assert_eq!(verified.content_sha256, ContentSha256::UnsignedPayload);
    }

    #[test]
    fn s3_doc_presigned_get_object_string_to_sign() {
        let v = Vector::load("s3_doc_presigned_get_object.txt");
        let (path, query) = v.path.split_once('?').unwrap();
        let signed = SignedHeaders::parse("host").unwrap();
        let canonical = canonical_request("GET", path, &parse_query(query), true, &v.headers, &signed, "UNSIGNED-PAYLOAD");
        assert_eq!(
            canonical,
            "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        let sts = string_to_sign(&AmzDate::parse(DOC_TIME).unwrap(), DOC_SCOPE, &canonical);
        assert!(sts.ends_with("\n3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"), "{sts}");
    }

    #[test]
    fn presigned_url_is_valid_until_it_expires() {
        let v = Vector::load("s3_doc_presigned_get_object.txt");
        let signed_at = at(DOC_TIME);
        assert_eq!(code(v.verify_at(signed_at + Duration::from_secs(86_400))), "ok");
        assert_eq!(v.verify_at(signed_at + Duration::from_secs(86_401)).unwrap_err(), AuthError::Expired);
        assert_eq!(AuthError::Expired.s3_code(), ("AccessDenied", 403));
        assert_eq!(AuthError::Expired.message(), "Request has expired");
        // A clock slightly behind the signer's is fine; far behind is not.
        assert_eq!(code(v.verify_at(signed_at - Duration::from_secs(60))), "ok");
        assert_eq!(v.verify_at(signed_at - Duration::from_secs(16 * 60)).unwrap_err(), AuthError::NotYetValid);
    }

    #[test]
    fn presigned_url_expires_must_be_one_second_to_seven_days() {
        let v = Vector::load("botocore_presigned_put_object_one_week.txt");
        assert_eq!(code(v.verify()), "ok");
        assert_eq!(code(v.verify_at(v.now() + Duration::from_secs(604_800))), "ok");
        assert_eq!(v.verify_at(v.now() + Duration::from_secs(604_801)).unwrap_err(), AuthError::Expired);
        for (expires, message) in [
            ("604801", "X-Amz-Expires must be less than a week (in seconds) that is 604800"),
            ("0", "X-Amz-Expires must be at least 1 second"),
            ("-5", "X-Amz-Expires must be non-negative"),
            ("soon", "X-Amz-Expires should be a number"),
            ("", "X-Amz-Expires should be a number"),
            ("99999999999999999999", "X-Amz-Expires must be less than a week (in seconds) that is 604800"),
            ("+5", "X-Amz-Expires should be a number"),
        ] {
            let mut w = Vector::load("botocore_presigned_put_object_one_week.txt");
            w.path = w.path.replace("X-Amz-Expires=604800", &format!("X-Amz-Expires={expires}"));
            assert_eq!(w.verify().unwrap_err(), AuthError::AuthorizationQueryParametersError(message), "{expires}");
        }
    }

    #[test]
    fn presigned_url_parameter_errors() {
        let base = Vector::load("s3_doc_presigned_get_object.txt");
        let with_path = |path: String| {
            let mut v = Vector::load("s3_doc_presigned_get_object.txt");
            v.path = path;
            v.verify()
        };
        let missing = with_path(base.path.replace("&X-Amz-Expires=86400", "")).unwrap_err();
        assert!(matches!(missing, AuthError::AuthorizationQueryParametersError(m) if m.starts_with("Query-string authentication version 4 requires")));
        let twice = with_path(format!("{}&X-Amz-Date=20130524T000000Z", base.path)).unwrap_err();
        assert_eq!(twice.s3_code().0, "AuthorizationQueryParametersError");
        let sigv4a = with_path(base.path.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256")).unwrap_err();
        assert_eq!(sigv4a, AuthError::AuthorizationQueryParametersError("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\""));
        let bad_date = with_path(base.path.replace("X-Amz-Date=20130524T000000Z", "X-Amz-Date=2013-05-24T00:00:00Z")).unwrap_err();
        assert_eq!(bad_date.s3_code().0, "AuthorizationQueryParametersError");
        let other_day = with_path(base.path.replace("X-Amz-Date=20130524T000000Z", "X-Amz-Date=20130525T000000Z")).unwrap_err();
        assert_eq!(other_day, AuthError::AuthorizationQueryParametersError("Invalid credential date. Date is not the same as X-Amz-Date."));
        let other_service = with_path(base.path.replace("%2Fs3%2F", "%2Fiam%2F")).unwrap_err();
        assert_eq!(other_service.s3_code().0, "AuthorizationQueryParametersError");
        let short_signature = with_path(base.path.replace("f604d404", "f604d40")).unwrap_err();
        assert_eq!(short_signature.s3_code().0, "AuthorizationQueryParametersError");
        let token = with_path(format!("{}&X-Amz-Security-Token=abc", base.path)).unwrap_err();
        assert_eq!(token, AuthError::InvalidToken);
    }

    #[test]
    fn presigned_url_must_sign_host() {
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.path = v.path.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range");
        assert_eq!(v.verify().unwrap_err(), AuthError::AuthorizationQueryParametersError("X-Amz-SignedHeaders must include host"));
    }

    #[test]
    fn presigned_url_tampered_query_or_path_does_not_match() {
        for (from, to) in [("/test.txt", "/test2.txt"), ("X-Amz-Expires=86400", "X-Amz-Expires=86399"), ("aeeed9bb", "aeeed9bc")] {
            let mut v = Vector::load("s3_doc_presigned_get_object.txt");
            v.path = v.path.replace(from, to);
            assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch, "{to}");
        }
        // An extra parameter is part of the canonical query too.
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.path.push_str("&response-content-type=text%2Fhtml");
        assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch);
        // Parameter order on the wire does not matter: the canonical query is sorted.
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        let (path, query) = v.path.split_once('?').unwrap();
        let mut params: Vec<&str> = query.split('&').collect();
        params.reverse();
        v.path = format!("{path}?{}", params.join("&"));
        assert_eq!(code(v.verify()), "ok");
    }

    #[test]
    fn presigned_url_refuses_unsigned_amz_headers() {
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.set_header("x-amz-acl", "public-read");
        assert_eq!(v.verify().unwrap_err(), AuthError::HeadersNotSigned("x-amz-acl".into()));
        // Headers that are not x-amz-* may come and go.
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.set_header("user-agent", "curl/8");
        v.set_header("range", "bytes=5-");
        assert_eq!(code(v.verify()), "ok");
    }

    // ---- aws-chunked (sigv4-streaming, sigv4-streaming-trailers).

    fn doc_signing_key() -> SigningKey {
        SigningKey::derive(&Secret::new(DOC_SECRET), "20130524", "us-east-1", "s3")
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn s3_doc_streaming_put_object_seed_and_chunk_signatures() {
        let verified = assert_ok("s3_doc_streaming_put_object.txt");
        assert_eq!(verified.content_sha256, ContentSha256::StreamingSigned);
        assert_eq!(verified.seed_signature, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
        let mut chain = verified.chunk_signatures().unwrap();
        assert!(chain.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", &sha(&[b'a'; 65_536])));
        assert!(chain.check_chunk("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497", &sha(&[b'a'; 1_024])));
        assert!(chain.check_chunk("b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9", &sha(b"")));
        // Nothing may follow the final chunk of a body without trailers.
        assert!(!chain.check_chunk("b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9", &sha(b"")));
    }

    #[test]
    fn chunk_signatures_are_chained_in_order() {
        let chain = || ChunkSignatureChain::new("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9", doc_signing_key(), DOC_SCOPE, DOC_TIME);
        // The second chunk's signature does not verify in first place.
        let mut c = chain();
        assert!(!c.check_chunk("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497", &sha(&[b'a'; 1_024])));
        // Other data under the right signature fails; the failure sticks.
        let mut c = chain();
        let mut data = vec![b'a'; 65_536];
        data[100] = b'b';
        assert!(!c.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", &sha(&data)));
        assert!(!c.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", &sha(&[b'a'; 65_536])));
        // Upper-case hex of the right signature is the same signature.
        let mut c = chain();
        assert!(c.check_chunk(&"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648".to_ascii_uppercase(), &sha(&[b'a'; 65_536])));
        assert!(c.check_chunk("0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497", &sha(&[b'a'; 1_024])));
        // Not hex, or not 64 digits.
        let mut c = chain();
        assert!(!c.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a28864", &sha(&[b'a'; 65_536])));
        // A wrong seed (another request's signature) breaks the first chunk.
        let mut c = ChunkSignatureChain::new("106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e", doc_signing_key(), DOC_SCOPE, DOC_TIME);
        assert!(!c.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", &sha(&[b'a'; 65_536])));
    }

    /// The trailer example's request (sigv4-streaming-trailers).
    fn doc_trailer_request() -> Vector {
        let mut v = Vector::load("s3_doc_streaming_put_object.txt");
        v.set_header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER");
        v.set_header("x-amz-trailer", "x-amz-checksum-crc32c");
        v.remove_header("content-length");
        v.set_header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer,Signature=106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        );
        v
    }

    #[test]
    fn s3_doc_streaming_trailer_put_object_seed_chunk_and_trailer_signatures() {
        let verified = doc_trailer_request().verify().unwrap();
        assert_eq!(verified.content_sha256, ContentSha256::StreamingSignedTrailer);
        let mut chain = verified.chunk_signatures().unwrap();
        assert!(chain.check_chunk("b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2", &sha(&[b'a'; 65_536])));
        assert!(chain.check_chunk("1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7", &sha(&[b'a'; 1_024])));
        assert!(chain.check_chunk("2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992", &sha(b"")));
        assert!(chain.check_trailer("d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435", b"x-amz-checksum-crc32c:sOO8/Q==\r\n"));
        // The trailer is the end.
        assert!(!chain.check_trailer("d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435", b"x-amz-checksum-crc32c:sOO8/Q==\r\n"));
    }

    #[test]
    fn trailer_signature_covers_the_canonical_trailers() {
        let after_final_chunk = || {
            let mut c = ChunkSignatureChain::new("2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992", doc_signing_key(), DOC_SCOPE, DOC_TIME);
            // Re-seed so that `previous` is the final chunk signature: start
            // the chain there and mark the final chunk as seen.
            c.state = ChainState::AfterFinalChunk;
            c
        };
        const SIG: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";
        // LF line ends (minio-go), spaces around the value, an upper-case name: same canonical form.
        for raw in [&b"x-amz-checksum-crc32c:sOO8/Q==\r\n"[..], b"x-amz-checksum-crc32c:sOO8/Q==\n", b"X-Amz-Checksum-Crc32c: sOO8/Q== \r\n", b"x-amz-checksum-crc32c:sOO8/Q=="] {
            assert!(after_final_chunk().check_trailer(SIG, raw), "{}", String::from_utf8_lossy(raw));
        }
        for raw in [&b"x-amz-checksum-crc32c:sOO8/Q=!\r\n"[..], b"x-amz-checksum-crc32:sOO8/Q==\r\n", b"x-amz-checksum-crc32c sOO8/Q==\r\n", b"\xff"] {
            assert!(!after_final_chunk().check_trailer(SIG, raw), "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(canonical_trailers(b"b:2\r\na: 1\n\r\n").unwrap(), "a:1\nb:2\n");
        // A trailer before the final chunk is out of order.
        let mut c = ChunkSignatureChain::new("2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992", doc_signing_key(), DOC_SCOPE, DOC_TIME);
        assert!(!c.check_trailer(SIG, b"x-amz-checksum-crc32c:sOO8/Q==\n"));
    }

    #[test]
    fn chain_plugs_into_the_aws_chunked_decoder() {
        use crate::aws_chunked::ChunkSignatures;
        let verified = assert_ok("s3_doc_streaming_put_object.txt");
        let mut chain: Box<dyn ChunkSignatures> = Box::new(verified.chunk_signatures().unwrap());
        assert!(chain.check_chunk("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648", &sha(&[b'a'; 65_536])));
    }

    #[test]
    fn no_chunk_chain_without_signed_chunks() {
        assert!(assert_ok("s3_doc_put_object.txt").chunk_signatures().is_none());
        assert!(assert_ok("s3_doc_presigned_get_object.txt").chunk_signatures().is_none());
        let unsigned_trailer = assert_ok("botocore_put_object_streaming_unsigned_trailer.txt");
        assert_eq!(unsigned_trailer.content_sha256, ContentSha256::StreamingUnsignedTrailer);
        assert!(unsigned_trailer.chunk_signatures().is_none());
    }

    // ---- Credentials, time, tampering.

    #[test]
    fn wrong_secret_does_not_match() {
        let v = Vector::load("s3_doc_get_object_range.txt");
        assert_eq!(v.verify_with(v.now(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz").unwrap_err(), AuthError::SignatureDoesNotMatch);
        let v = Vector::load("s3_doc_presigned_get_object.txt");
        assert_eq!(v.verify_with(v.now(), "").unwrap_err(), AuthError::SignatureDoesNotMatch);
    }

    #[test]
    fn unknown_access_key_is_invalid_access_key_id() {
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.meta.insert("access-key".into(), "AKIAOTHERKEY0000".into());
        assert_eq!(v.verify().unwrap_err(), AuthError::InvalidAccessKeyId);
        assert_eq!(AuthError::InvalidAccessKeyId.s3_code(), ("InvalidAccessKeyId", 403));
    }

    #[test]
    fn tampered_signed_header_does_not_match() {
        for (name, value) in [("range", "bytes=0-10"), (":authority", "otherbucket.s3.amazonaws.com"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")] {
            let mut v = Vector::load("s3_doc_get_object_range.txt");
            v.set_header(name, value);
            assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch, "{name}");
        }
        // A second value for a signed header changes its canonical line.
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.headers.push(("range".into(), "bytes=20-30".into()));
        assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch);
        // So does the method or the path.
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.method = "DELETE".into();
        assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch);
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.path = "/Test.txt".into();
        assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch);
    }

    #[test]
    fn tampered_query_does_not_match() {
        for path in ["/?max-keys=2&prefix=K", "/?max-keys=3&prefix=J", "/?max-keys=2&prefix=J&delimiter=%2F", "/?max-keys=2", "/?max-keys=2&prefix=J&prefix=J"] {
            let mut v = Vector::load("s3_doc_list_objects.txt");
            v.path = path.into();
            assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch, "{path}");
        }
        // Same parameters, other order or other (equivalent) encoding: still valid.
        for path in ["/?prefix=J&max-keys=2", "/?prefix=%4A&max-keys=%32", "/?&max-keys=2&&prefix=J&"] {
            let mut v = Vector::load("s3_doc_list_objects.txt");
            v.path = path.into();
            assert_eq!(code(v.verify()), "ok", "{path}");
        }
    }

    #[test]
    fn unsigned_headers_may_change_freely() {
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.set_header("user-agent", "aws-cli/2");
        v.set_header("x-forwarded-for", "10.0.0.1");
        v.set_header("x-request-id", "abc");
        v.set_header("x-amzn-trace-id", "Root=1-abc");
        v.set_header("content-type", "text/plain");
        v.set_header(":path", "/test.txt");
        v.set_header(":method", "GET");
        assert_eq!(code(v.verify()), "ok");
    }

    #[test]
    fn unsigned_amz_headers_are_refused() {
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.set_header("x-amz-copy-source", "/other/key");
        v.set_header("x-amz-acl", "public-read");
        v.headers.push(("x-amz-acl".into(), "private".into()));
        let error = v.verify().unwrap_err();
        assert_eq!(error, AuthError::HeadersNotSigned("x-amz-acl, x-amz-copy-source".into()));
        assert_eq!(error.s3_code(), ("AccessDenied", 403));
        assert_eq!(error.headers_not_signed(), Some("x-amz-acl, x-amz-copy-source"));
        assert_eq!(error.message(), "There were headers present in the request which were not signed");
    }

    #[test]
    fn content_sha256_may_be_unsigned() {
        // S3 requires the header but not its signature (the canonical request
        // carries the value either way).
        let v = Vector::load("suite_get_space_unnormalized.txt");
        assert!(!v.header("authorization").contains("x-amz-content-sha256"));
        assert_eq!(code(v.verify()), "ok");
    }

    #[test]
    fn request_time_may_be_fifteen_minutes_off() {
        let v = Vector::load("s3_doc_get_object_range.txt");
        let t = at(DOC_TIME);
        for offset in [0, 60, 15 * 60] {
            assert_eq!(code(v.verify_at(t + Duration::from_secs(offset))), "ok", "+{offset}");
            assert_eq!(code(v.verify_at(t - Duration::from_secs(offset))), "ok", "-{offset}");
        }
        for offset in [15 * 60 + 1, 86_400] {
            assert_eq!(v.verify_at(t + Duration::from_secs(offset)).unwrap_err(), AuthError::RequestTimeTooSkewed, "+{offset}");
            assert_eq!(v.verify_at(t - Duration::from_secs(offset)).unwrap_err(), AuthError::RequestTimeTooSkewed, "-{offset}");
        }
        assert_eq!(AuthError::RequestTimeTooSkewed.s3_code(), ("RequestTimeTooSkewed", 403));
    }

    #[test]
    fn date_header_stands_in_for_x_amz_date() {
        // Without x-amz-date the Date header is the request time; the string
        // to sign carries it in the basic format.
        let v = Vector::load("s3_date_header_without_x_amz_date.txt");
        assert_eq!(v.verify().unwrap().timestamp, DOC_TIME);
        assert_eq!(v.verify_at(at("20130524T001600Z")).unwrap_err(), AuthError::RequestTimeTooSkewed);
        let mut v = Vector::load("s3_date_header_without_x_amz_date.txt");
        v.set_header("date", "Fri, 24 May 2013 00:00:01 GMT");
        assert_eq!(v.verify().unwrap_err(), AuthError::SignatureDoesNotMatch);
        v.set_header("date", "the 24th of May");
        assert_eq!(v.verify().unwrap_err(), AuthError::InvalidDate);
        assert_eq!(AuthError::InvalidDate.s3_code(), ("AccessDenied", 403));
        v.remove_header("date");
        assert_eq!(v.verify().unwrap_err(), AuthError::MissingDate);
        assert_eq!(AuthError::MissingDate.s3_code(), ("MissingSecurityHeader", 400));
    }

    #[test]
    fn header_auth_errors() {
        let with = |name: &str, value: Option<&str>| {
            let mut v = Vector::load("s3_doc_get_object_range.txt");
            match value {
                Some(value) => v.set_header(name, value),
                None => v.remove_header(name),
            }
            v.verify().unwrap_err()
        };
        assert_eq!(with("x-amz-content-sha256", None), AuthError::MissingContentSha256);
        assert_eq!(AuthError::MissingContentSha256.s3_code(), ("InvalidRequest", 400));
        assert_eq!(with("x-amz-content-sha256", Some("abc")), AuthError::InvalidContentSha256);
        assert_eq!(with("x-amz-content-sha256", Some("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")), AuthError::InvalidContentSha256);
        assert_eq!(with("x-amz-date", Some("2013-05-24T00:00:00Z")), AuthError::InvalidDate);
        assert_eq!(with("x-amz-security-token", Some("token")), AuthError::InvalidToken);
        let auth = |value: &str| with("authorization", Some(value));
        let good = Vector::load("s3_doc_get_object_range.txt").header("authorization").to_string();
        assert_eq!(auth(&good.replace("20130524/", "20130523/")), AuthError::AuthorizationHeaderMalformed("Invalid credential date. Date is not the same as X-Amz-Date."));
        assert_eq!(auth(&good.replace("/s3/", "/sts/")), AuthError::AuthorizationHeaderMalformed("the credential scope service must be s3"));
        assert_eq!(auth(&good.replace("aws4_request", "aws5_request")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth(&good.replace("SignedHeaders=host;", "SignedHeaders=")), AuthError::AuthorizationHeaderMalformed("SignedHeaders must include host"));
        assert_eq!(auth(&good.replace("SignedHeaders=host;range", "SignedHeaders=Host;Range")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth(&good.replace("Signature=f0e8", "Signature=f0e")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth(&good.replace("Signature=f0e8", "Signature=zze8")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth(&format!("{good},Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth(&format!("{good},Colour=blue")).s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth("AWS4-HMAC-SHA256").s3_code().0, "AuthorizationHeaderMalformed");
        assert_eq!(auth("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request").s3_code().0, "AuthorizationHeaderMalformed");
        // Two Authorization headers.
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.headers.push(("authorization".into(), good.clone()));
        assert_eq!(v.verify().unwrap_err().s3_code().0, "AuthorizationHeaderMalformed");
    }

    #[test]
    fn sigv2_is_refused() {
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.set_header("authorization", "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=");
        assert_eq!(v.verify().unwrap_err(), AuthError::UnsupportedAuthorization);
        assert_eq!(AuthError::UnsupportedAuthorization.s3_code(), ("InvalidRequest", 400));
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.path = "/test.txt?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1369353600&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D".into();
        assert_eq!(v.verify().unwrap_err(), AuthError::UnsupportedAuthorization);
        // SigV4a and other schemes too.
        for scheme in ["AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/s3/aws4_request, SignedHeaders=host, Signature=3045", "Bearer abc", "AWS4-HMAC-SHA256X Credential=x"] {
            let mut v = Vector::load("s3_doc_get_object_range.txt");
            v.set_header("authorization", scheme);
            assert_eq!(v.verify().unwrap_err(), AuthError::UnsupportedAuthorization, "{scheme}");
        }
    }

    #[test]
    fn anonymous_request_is_refused() {
        let mut v = Vector::load("s3_doc_get_object_range.txt");
        v.remove_header("authorization");
        assert_eq!(v.verify().unwrap_err(), AuthError::Anonymous);
        assert_eq!(AuthError::Anonymous.s3_code(), ("AccessDenied", 403));
        // Lower-case look-alikes of the presigned parameters are plain parameters.
        v.path = "/test.txt?x-amz-signature=abc&x-amz-credential=def".into();
        assert_eq!(v.verify().unwrap_err(), AuthError::Anonymous);
    }

    #[test]
    fn header_and_query_auth_together_are_refused() {
        let mut v = Vector::load("s3_doc_presigned_get_object.txt");
        v.set_header("authorization", Vector::load("s3_doc_get_object_range.txt").header("authorization"));
        assert_eq!(v.verify().unwrap_err(), AuthError::ConflictingAuthMechanisms);
        assert_eq!(AuthError::ConflictingAuthMechanisms.s3_code(), ("InvalidArgument", 400));
    }

    #[test]
    fn error_messages_do_not_leak_the_computation() {
        let message = AuthError::SignatureDoesNotMatch.to_string();
        assert_eq!(message, "SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. Check your key and signing method.");
        let debug = format!("{:?}", assert_ok("s3_doc_get_object_range.txt"));
        assert!(debug.contains("SigningKey(..)") && !debug.contains(DOC_SECRET), "{debug}");
        assert_eq!(format!("{:?}", Secret::new(DOC_SECRET)), "Secret(..)");
    }

    // ---- Canonicalisation: the generic SigV4 suite cases S3 shares, and botocore.

    #[test]
    fn suite_unnormalized_paths_are_signed_as_sent() {
        for name in ["suite_get_slashes_unnormalized.txt", "suite_get_slash_dot_slash_unnormalized.txt", "suite_get_relative_relative_unnormalized.txt", "suite_get_slash_pointless_dot_unnormalized.txt", "suite_get_space_unnormalized.txt"] {
            assert_ok(name);
        }
        assert_eq!(canonical_uri("//example//"), "//example//");
        assert_eq!(canonical_uri("/example1/example2/../.."), "/example1/example2/../..");
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        assert_eq!(canonical_uri(""), "/");
    }

    #[test]
    fn suite_header_values_are_trimmed_joined_in_order() {
        assert_ok("suite_get_header_value_trim.txt");
        assert_ok("suite_get_header_key_duplicate.txt");
        assert_ok("suite_get_header_value_order.txt");
        let h = headers(&[("my-header1", "value4"), ("My-Header1", " value1  "), ("my-header2", "\"a   b \t c\"")]);
        assert_eq!(canonical_headers(&h, &SignedHeaders::parse("my-header1;my-header2").unwrap()), "my-header1:value4,value1\nmy-header2:\"a b c\"\n");
    }

    #[test]
    fn suite_query_strings_are_sorted_and_encoded() {
        assert_ok("suite_get_vanilla_query_order_key_case.txt");
        assert_ok("suite_get_vanilla_query_unreserved.txt");
        assert_ok("suite_get_vanilla_utf8_query.txt");
        assert_ok("suite_get_vanilla_empty_query_key.txt");
        assert_ok("suite_get_utf8.txt");
    }

    #[test]
    fn suite_presigned_requests() {
        assert_ok("suite_query_get_vanilla_query_order_key_case.txt");
        assert_ok("suite_query_get_utf8.txt");
    }

    #[test]
    fn suite_session_token_is_refused() {
        // No session credentials exist behind this gateway.
        assert_eq!(Vector::load("suite_get_vanilla_with_session_token.txt").verify().unwrap_err(), AuthError::InvalidToken);
    }

    #[test]
    fn botocore_keys_with_spaces_unicode_and_plus() {
        let v = assert_ok("botocore_put_object_key_with_space_unicode_plus.txt");
        assert_eq!(v.region, "eu-west-3");
        assert_ok("botocore_put_object_key_with_odd_characters.txt");
        assert_ok("botocore_presigned_get_object.txt");
        // A literal '+' in the path is the character '+', as %2B is.
        assert_eq!(canonical_uri("/bkt/a+b"), "/bkt/a%2Bb");
        assert_eq!(canonical_uri("/bkt/a%2Bb"), "/bkt/a%2Bb");
        // An encoded slash inside a key stays inside its segment.
        assert_eq!(canonical_uri("/bkt/a%2Fb/c"), "/bkt/a%2Fb/c");
        // Lower-case escapes and needlessly escaped unreserved characters normalise.
        assert_eq!(canonical_uri("/bkt/%c3%bc%7e%41"), "/bkt/%C3%BC~A");
        // Invalid UTF-8 is signed byte for byte; a stray '%' is a '%'.
        assert_eq!(canonical_uri("/bkt/%FF%zz"), "/bkt/%FF%25zz");
    }

    #[test]
    fn botocore_repeated_and_empty_query_parameters() {
        assert_ok("botocore_repeated_and_empty_query_parameters.txt");
        let params = parse_query("z=1&a=2&a=1&a=10&empty=&flag&list-type=2");
        assert_eq!(canonical_query(&params, false), "a=1&a=10&a=2&empty=&flag=&list-type=2&z=1");
        // '+' in a query value is a plus sign, not a space.
        assert_eq!(canonical_query(&parse_query("prefix=a+b%20c&x=%2b"), false), "prefix=a%2Bb%20c&x=%2B");
        assert_eq!(canonical_query(&parse_query("X-Amz-Signature=abc&b=1"), true), "b=1");
        assert_eq!(canonical_query(&parse_query("X-Amz-Signature=abc&b=1"), false), "X-Amz-Signature=abc&b=1");
    }

    // ---- Parsers.

    #[test]
    fn amz_date_parses_only_the_basic_format() {
        let date = AmzDate::parse("20130524T000000Z").unwrap();
        assert_eq!(date.unix_seconds(), 1_369_353_600);
        assert_eq!(date.to_string(), "20130524T000000Z");
        assert_eq!(date.date_stamp(), "20130524");
        assert_eq!(AmzDate::parse("20240229T235959Z").unwrap().to_string(), "20240229T235959Z");
        assert_eq!(AmzDate::parse("19700101T000000Z").unwrap().unix_seconds(), 0);
        assert_eq!(AmzDate::parse("99991231T235959Z").unwrap().to_string(), "99991231T235959Z");
        for bad in ["20130524T000000", "2013-05-24T00:00:00Z", "20130524t000000z", "20230229T000000Z", "20131324T000000Z", "20130524T240000Z", "20130524T006000Z", "19691231T235959Z", "2013O524T000000Z", "", "20130524T000000Z "] {
            assert!(AmzDate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(AmzDate::parse_http_date("Fri, 24 May 2013 00:00:00 GMT").unwrap(), date);
        assert!(AmzDate::parse_http_date("yesterday").is_err());
        // Round trip over a range of days.
        for day in (0..200_000u64).step_by(997) {
            let d = AmzDate::from_unix_seconds(day * 86_400 + 3_723);
            assert_eq!(AmzDate::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn credential_parses_from_the_right() {
        let c = Credential::parse("AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request").unwrap();
        assert_eq!((c.access_key_id, c.date, c.region, c.service), ("AKIAIOSFODNN7EXAMPLE", "20130524", "us-east-1", "s3"));
        assert_eq!(c.scope(), DOC_SCOPE);
        for bad in ["AKID/20130524/us-east-1/s3", "AKID/2013052/us-east-1/s3/aws4_request", "/20130524/us-east-1/s3/aws4_request", "AKID/20130524//s3/aws4_request", "AKID/20130524/us-east-1/s3/aws4_request/"] {
            assert!(Credential::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_sha256_values() {
        assert_eq!(ContentSha256::parse("UNSIGNED-PAYLOAD").unwrap(), ContentSha256::UnsignedPayload);
        assert_eq!(ContentSha256::parse("STREAMING-AWS4-HMAC-SHA256-PAYLOAD").unwrap(), ContentSha256::StreamingSigned);
        assert_eq!(ContentSha256::parse("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER").unwrap(), ContentSha256::StreamingSignedTrailer);
        assert_eq!(ContentSha256::parse("STREAMING-UNSIGNED-PAYLOAD-TRAILER").unwrap(), ContentSha256::StreamingUnsignedTrailer);
        assert_eq!(ContentSha256::parse(EMPTY_SHA256).unwrap(), ContentSha256::Sha256(sha(b"")));
        for bad in ["unsigned-payload", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "", "e3b0", &format!("{EMPTY_SHA256}0")] {
            assert!(ContentSha256::parse(bad).is_err(), "{bad}");
        }
    }

    // ---- Signing keys.

    #[test]
    fn signing_key_matches_the_aws_general_reference_example() {
        // AWS General Reference, "Examples of how to derive a signing key":
        // secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam.
        let key = SigningKey::derive(&Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "20120215", "us-east-1", "iam");
        assert_eq!(hex::encode(*key.0), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn hmac_takes_keys_longer_than_a_block() {
        // RFC 4231 test case 6: a 131-byte key.
        let mac = hmac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
        let long_secret = Secret::new("x".repeat(200));
        assert_eq!(SigningKey::derive(&long_secret, "20130524", "us-east-1", "s3").0.len(), 32);
    }

    #[test]
    fn signing_keys_are_cached_per_key_day_region_and_service() {
        let verifier = Verifier::new();
        let v = Vector::load("s3_doc_get_object_range.txt");
        let request = RequestParts { method: &v.method, path: &v.path, headers: &v.headers };
        let lookup = |_: &str| Some(Secret::new(DOC_SECRET));
        for _ in 0..3 {
            verifier.verify(&request, v.now(), &lookup).unwrap();
        }
        assert_eq!(verifier.cached_keys(), 1);
        // A changed secret is not answered from the cache.
        let wrong = |_: &str| Some(Secret::new("changed"));
        assert_eq!(verifier.verify(&request, v.now(), &wrong).unwrap_err(), AuthError::SignatureDoesNotMatch);
        assert_eq!(verifier.verify(&request, v.now(), &lookup).map(|_| ()), Ok(()));
        assert_eq!(verifier.cached_keys(), 1);
        // The cache is bounded.
        let mut cache = SigningKeyCache::new();
        let secret = Secret::new(DOC_SECRET);
        for i in 0..(SIGNING_KEY_CACHE_CAPACITY + 10) {
            cache.signing_key(&secret, &format!("AKID{i}"), "20130524", "us-east-1", "s3");
        }
        assert_eq!(cache.len(), SIGNING_KEY_CACHE_CAPACITY);
        let fresh = cache.signing_key(&secret, "AKID0", "20130524", "us-east-1", "s3");
        assert_eq!(*fresh.0, *SigningKey::derive(&secret, "20130524", "us-east-1", "s3").0);
    }

    #[test]
    fn thread_local_verify_matches_a_verifier() {
        let v = Vector::load("s3_doc_list_objects.txt");
        let request = RequestParts { method: &v.method, path: &v.path, headers: &v.headers };
        let lookup = |id: &str| (id == DOC_ACCESS_KEY).then(|| Secret::new(DOC_SECRET));
        assert_eq!(verify(&request, v.now(), &lookup).unwrap().access_key_id, DOC_ACCESS_KEY);
    }
}
