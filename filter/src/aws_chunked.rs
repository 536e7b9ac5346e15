//! Streaming decoder for `Content-Encoding: aws-chunked` request bodies, the
//! framing AWS SDKs use for PutObject and UploadPart when they send a
//! checksum trailer or sign the payload chunk by chunk. Pure: bytes in,
//! payload bytes out; chunk and trailer signatures are checked through the
//! [`ChunkSignatures`] trait, which the sigv4 module implements.
//!
//! The three `x-amz-content-sha256` values this module decodes
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>):
//!
//! ```text
//! body           = *chunk last-chunk trailer-section
//! chunk          = chunk-size [ signature ] CRLF chunk-data CRLF   ; chunk-size > 0
//! last-chunk     = 1*"0" [ signature ] CRLF
//! chunk-size     = 1*HEXDIG                     ; either case: Java, Go, JS, botocore write
//!                                                ; lower case, the CRT and Rust SDKs upper case
//! signature      = ";chunk-signature=" 64HEXDIG ; present in the signed variants, absent otherwise
//! trailer-section = *( trailer EOL ) [ "x-amz-trailer-signature:" 64HEXDIG EOL ] [ CRLF ]
//! trailer        = name ":" OWS value OWS       ; name: one of those listed in x-amz-trailer
//! EOL            = CRLF / LF
//! ```
//!
//! | `x-amz-content-sha256`                        | chunk signatures | trailers | trailer signature |
//! |-----------------------------------------------|------------------|----------|-------------------|
//! | `STREAMING-UNSIGNED-PAYLOAD-TRAILER`          | refused          | yes      | refused           |
//! | `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`          | required         | refused  | refused           |
//! | `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`  | required         | yes      | required, last    |
//!
//! What real clients send, and so what is accepted beyond the RFC 9112 shape
//! (`last-chunk`, trailer lines, one empty line):
//!
//! * botocore, Go v2, JS v3, Java v2, the CRT: `0\r\nx-amz-checksum-crc32:<b64>\r\n\r\n`
//!   (signed: `0;chunk-signature=<sig>\r\n<trailers>x-amz-trailer-signature:<sig>\r\n\r\n`).
//!   The CRT and the Rust SDK send the whole payload as one chunk, with an
//!   upper-case size; the others use fixed sizes (64 KiB, 128 KiB, 1 MiB) or
//!   whatever their stream yields.
//! * Transcriptions of the AWS documentation's trailer example (s3s, others)
//!   write the last chunk "with empty data", i.e. an empty line, before the
//!   trailers.
//! * minio-go ends its trailer lines with a bare LF and writes an empty line
//!   before `x-amz-trailer-signature`.
//!
//! Hence the one lenience: inside the trailer section, lines may end in LF,
//! and empty lines are skipped until every trailer named in `x-amz-trailer`
//! (and, signed, the trailer signature) has been read; the first empty line
//! after that ends the body. The body may also end right after the last
//! required line, without that empty line. Everything else is strict, and the
//! whole trailer section is bounded ([`MAX_TRAILER_SECTION_LEN`]).
//!
//! Chunk data is never buffered: it is streamed to the caller as it arrives
//! (and hashed on the way when signatures are checked), so a chunk's bytes are
//! emitted before its signature can be checked. The caller must therefore hold
//! back anything irrevocable until [`Decoder::finish`] succeeds: `finish` is
//! where the end of the stream is validated (final chunk, length, trailers,
//! trailer signature).

use sha2::{Digest, Sha256};

/// Longest chunk-size or trailer line accepted, without its line end. A
/// signed chunk line without leading zeros is at most 16 + 17 + 64 bytes.
pub const MAX_LINE_LEN: usize = 4096;
/// Most bytes accepted after the last-chunk line (trailers, their signature,
/// empty lines).
pub const MAX_TRAILER_SECTION_LEN: usize = 8192;

const CHUNK_SIGNATURE_EXT: &str = "chunk-signature=";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const SIGNATURE_HEX_LEN: usize = 64;

/// Why an aws-chunked body was refused. S3 codes are chosen at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedError {
    /// The framing does not follow the grammar (what is wrong is named).
    Malformed(&'static str),
    /// The payload is longer or shorter than `x-amz-decoded-content-length`.
    LengthMismatch,
    /// A chunk signature is not the next one in the SigV4 chain.
    ChunkSignature,
    /// The trailer signature does not cover the trailers received.
    TrailerSignature,
    /// A trailer named in `x-amz-trailer` (or the trailer signature) never came.
    MissingTrailer(String),
    /// A line or the trailer section is longer than this decoder accepts.
    TooLarge,
    /// An earlier error stopped this body; it stays stopped.
    Poisoned,
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkedError::Malformed(what) => write!(f, "malformed aws-chunked body: {what}"),
            ChunkedError::LengthMismatch => f.write_str("the decoded payload length differs from x-amz-decoded-content-length"),
            ChunkedError::ChunkSignature => f.write_str("a chunk signature does not match"),
            ChunkedError::TrailerSignature => f.write_str("the trailer signature does not match"),
            ChunkedError::MissingTrailer(name) => write!(f, "the trailer {name} was announced but not sent"),
            ChunkedError::TooLarge => f.write_str("an aws-chunked line or the trailer section is too long"),
            ChunkedError::Poisoned => f.write_str("an earlier error stopped this body"),
        }
    }
}

impl std::error::Error for ChunkedError {}

/// Verifies the SigV4 chunk-signature chain; implemented by the (separate) sigv4 module.
pub trait ChunkSignatures {
    /// `signature` is the hex from `;chunk-signature=`, `data_sha256` the
    /// SHA-256 of that chunk's data (of nothing for the final chunk); returns
    /// whether it is the next valid signature in the chain.
    fn check_chunk(&mut self, signature: &str, data_sha256: &[u8; 32]) -> bool;
    /// The trailer lines exactly as received, each with its own line end
    /// (CRLF, or LF from minio-go), without empty lines and without the
    /// `x-amz-trailer-signature` line; and that signature. The signed string
    /// hashes the canonical form (`name:value\n` per trailer, names lower
    /// case, values trimmed, sorted by name), which the implementation builds
    /// from these lines.
    fn check_trailer(&mut self, signature: &str, trailer_bytes: &[u8]) -> bool;
}

/// Which aws-chunked framing a request uses, from `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`
    UnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
    Signed,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`
    SignedTrailer,
}

impl Variant {
    /// The variant for an `x-amz-content-sha256` value; `None` for anything
    /// else, including the SigV4a (`STREAMING-AWS4-ECDSA-P256-SHA256-*`) ones.
    pub fn from_content_sha256(v: &str) -> Option<Variant> {
        match v.trim() {
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Some(Variant::UnsignedTrailer),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(Variant::Signed),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(Variant::SignedTrailer),
            _ => None,
        }
    }

    /// Whether every chunk line carries `;chunk-signature=`.
    pub fn is_signed(self) -> bool {
        matches!(self, Variant::Signed | Variant::SignedTrailer)
    }

    /// Whether the body may carry trailers.
    pub fn has_trailers(self) -> bool {
        matches!(self, Variant::UnsignedTrailer | Variant::SignedTrailer)
    }
}

/// The trailer names of an `x-amz-trailer` header value (comma-separated;
/// Envoy joins repeated headers with commas), lower case, without empties.
pub fn trailer_names(header_value: &str) -> Vec<String> {
    header_value.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line into `line`.
    SizeLine,
    /// Streaming chunk data; this many bytes are left in the chunk.
    Data(u64),
    /// Chunk data read; its CR must come next.
    DataCr,
    /// Chunk data and CR read; its LF must come next.
    DataLf,
    /// After the last-chunk line: reading trailer lines into `line`.
    Trailers,
    /// The empty line ending the body has been read (or `finish` accepted its absence).
    Done,
}

/// Decodes one aws-chunked body. Errors stick: after the first, every call
/// returns [`ChunkedError::Poisoned`].
pub struct Decoder {
    variant: Variant,
    decoded_len: u64,
    /// Payload bytes emitted so far; never above `decoded_len`.
    emitted: u64,
    expected_trailers: Vec<String>,
    signatures: Option<Box<dyn ChunkSignatures>>,
    state: State,
    /// The line being read (size line or trailer line), line end included.
    line: Vec<u8>,
    /// The current chunk's `chunk-signature` hex, kept until its data is hashed.
    chunk_signature: String,
    /// SHA-256 of the current chunk's data, when signatures are checked.
    chunk_hash: Option<Sha256>,
    /// Bytes read since the last-chunk line.
    trailer_section_len: usize,
    /// Trailer lines as received, for the trailer signature.
    trailer_bytes: Vec<u8>,
    trailers: Vec<(String, String)>,
    trailer_signature_seen: bool,
    poisoned: bool,
}

impl Decoder {
    /// `decoded_len` is `x-amz-decoded-content-length`; `expected_trailers`
    /// the names from `x-amz-trailer` (see [`trailer_names`]); `signatures`
    /// the chain to check in the signed variants (`None`: signatures are
    /// only checked for syntax and stripped; ignored in the unsigned variant).
    pub fn new(variant: Variant, decoded_len: u64, expected_trailers: Vec<String>, signatures: Option<Box<dyn ChunkSignatures>>) -> Decoder {
        let expected_trailers = expected_trailers.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
        let signatures = if variant.is_signed() { signatures } else { None };
        Decoder {
            variant,
            decoded_len,
            emitted: 0,
            expected_trailers,
            signatures,
            state: State::SizeLine,
            line: Vec::new(),
            chunk_signature: String::new(),
            chunk_hash: None,
            trailer_section_len: 0,
            trailer_bytes: Vec::new(),
            trailers: Vec::new(),
            trailer_signature_seen: false,
            poisoned: false,
        }
    }

    /// Consumes encoded bytes; appends decoded payload bytes to `out`. Pieces
    /// may split anywhere (even inside the size line or CRLF). On error, the
    /// bytes of this piece before the fault may already be in `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkedError> {
        if self.poisoned {
            return Err(ChunkedError::Poisoned);
        }
        let result = self.push_inner(data, out);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// At end of body: the stream must be complete; returns the trailers as
    /// (lower-case name, trimmed value), without the trailer signature.
    pub fn finish(&mut self) -> Result<Vec<(String, String)>, ChunkedError> {
        if self.poisoned {
            return Err(ChunkedError::Poisoned);
        }
        let result = self.finish_inner();
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Whether the final (zero-size) chunk and trailers have been fully read,
    /// up to the empty line that ends the body (or `finish` has succeeded).
    pub fn is_complete(&self) -> bool {
        !self.poisoned && self.state == State::Done
    }

    fn push_inner(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkedError> {
        let mut rest = data;
        while let Some((&first, after_first)) = rest.split_first() {
            match self.state {
                State::SizeLine | State::Trailers => {
                    if self.read_line(&mut rest)? {
                        let line = std::mem::take(&mut self.line);
                        let result = if self.state == State::SizeLine { self.on_size_line(&line) } else { self.on_trailer_line(&line) };
                        self.line = line;
                        self.line.clear();
                        result?;
                    }
                }
                State::Data(remaining) => {
                    let n = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let (piece, tail) = rest.split_at_checked(n).ok_or(ChunkedError::Malformed("internal: chunk split"))?;
                    out.extend_from_slice(piece);
                    if let Some(hash) = self.chunk_hash.as_mut() {
                        hash.update(piece);
                    }
                    self.emitted += n as u64;
                    let remaining = remaining - n as u64;
                    rest = tail;
                    if remaining == 0 {
                        let digest: [u8; 32] = self.chunk_hash.take().map(|h| h.finalize().into()).unwrap_or_default();
                        self.check_chunk_signature(&digest)?;
                        self.state = State::DataCr;
                    } else {
                        self.state = State::Data(remaining);
                    }
                }
                State::DataCr | State::DataLf => {
                    let (want, next) = if self.state == State::DataCr { (b'\r', State::DataLf) } else { (b'\n', State::SizeLine) };
                    if first != want {
                        return Err(ChunkedError::Malformed("chunk data is not followed by CRLF"));
                    }
                    self.state = next;
                    rest = after_first;
                }
                State::Done => return Err(ChunkedError::Malformed("data after the end of the body")),
            }
        }
        Ok(())
    }

    /// Moves bytes from `rest` into `line` up to and including the next LF.
    /// Returns whether a whole line is now in `line`.
    fn read_line(&mut self, rest: &mut &[u8]) -> Result<bool, ChunkedError> {
        let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (rest.len(), false),
        };
        let (piece, tail) = rest.split_at_checked(take).ok_or(ChunkedError::Malformed("internal: line split"))?;
        // Line end (up to CRLF) not counted against the limit.
        if self.line.len() + piece.len() > MAX_LINE_LEN + 2 {
            return Err(ChunkedError::TooLarge);
        }
        if self.state == State::Trailers {
            self.trailer_section_len += piece.len();
            if self.trailer_section_len > MAX_TRAILER_SECTION_LEN {
                return Err(ChunkedError::TooLarge);
            }
        }
        self.line.extend_from_slice(piece);
        *rest = tail;
        Ok(complete)
    }

    fn on_size_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let content = line.strip_suffix(b"\r\n").ok_or(ChunkedError::Malformed("chunk-size line does not end in CRLF"))?;
        let (size_hex, extension) = match content.iter().position(|&b| b == b';') {
            Some(i) => {
                let (size_hex, ext) = content.split_at_checked(i).ok_or(ChunkedError::Malformed("internal: size split"))?;
                (size_hex, Some(ext.get(1..).unwrap_or_default()))
            }
            None => (content, None),
        };
        let size = parse_chunk_size(size_hex)?;
        match (self.variant.is_signed(), extension) {
            (false, None) => {}
            (false, Some(_)) => return Err(ChunkedError::Malformed("chunk extension in an unsigned body")),
            (true, None) => return Err(ChunkedError::Malformed("chunk without chunk-signature in a signed body")),
            (true, Some(ext)) => {
                let hex = ext.strip_prefix(CHUNK_SIGNATURE_EXT.as_bytes()).ok_or(ChunkedError::Malformed("chunk extension other than chunk-signature"))?;
                self.chunk_signature = signature_hex(hex).ok_or(ChunkedError::Malformed("chunk-signature is not 64 hex digits"))?;
            }
        }
        // Refuse a chunk that would overrun the declared length before any of its bytes go out.
        let room = self.decoded_len - self.emitted;
        match size {
            Some(size) if size <= room => {
                if size == 0 {
                    if room != 0 {
                        return Err(ChunkedError::LengthMismatch);
                    }
                    self.check_chunk_signature(&Sha256::digest(b"").into())?;
                    self.state = State::Trailers;
                } else {
                    self.chunk_hash = self.signatures.as_ref().map(|_| Sha256::new());
                    self.state = State::Data(size);
                }
                Ok(())
            }
            // Longer than what is left, or than any u64.
            _ => Err(ChunkedError::LengthMismatch),
        }
    }

    fn check_chunk_signature(&mut self, data_sha256: &[u8; 32]) -> Result<(), ChunkedError> {
        if let Some(signatures) = self.signatures.as_mut() {
            if !signatures.check_chunk(&self.chunk_signature, data_sha256) {
                return Err(ChunkedError::ChunkSignature);
            }
        }
        Ok(())
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            // Ends the body once all that must come has come; before that, a
            // separator some clients write (see the module docs).
            if self.missing_trailer().is_none() {
                self.state = State::Done;
            }
            return Ok(());
        }
        if self.trailer_signature_seen {
            return Err(ChunkedError::Malformed("trailer after x-amz-trailer-signature"));
        }
        let colon = content.iter().position(|&b| b == b':').ok_or(ChunkedError::Malformed("trailer line without a colon"))?;
        let (name, value) = content.split_at_checked(colon).ok_or(ChunkedError::Malformed("internal: trailer split"))?;
        let value = value.get(1..).unwrap_or_default();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ChunkedError::Malformed("trailer name is not a token"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = std::str::from_utf8(value).map_err(|_| ChunkedError::Malformed("trailer value is not UTF-8"))?.trim_matches([' ', '\t']);
        if value.chars().any(char::is_control) {
            return Err(ChunkedError::Malformed("control character in a trailer value"));
        }
        if name == TRAILER_SIGNATURE {
            if self.variant != Variant::SignedTrailer {
                return Err(ChunkedError::Malformed("x-amz-trailer-signature in a body without signed trailers"));
            }
            let signature = signature_hex(value.as_bytes()).ok_or(ChunkedError::Malformed("x-amz-trailer-signature is not 64 hex digits"))?;
            // The signature comes last: everything it covers must be in.
            if let Some(missing) = self.missing_announced() {
                return Err(ChunkedError::MissingTrailer(missing.clone()));
            }
            if let Some(signatures) = self.signatures.as_mut() {
                if !signatures.check_trailer(&signature, &self.trailer_bytes) {
                    return Err(ChunkedError::TrailerSignature);
                }
            }
            self.trailer_signature_seen = true;
            return Ok(());
        }
        if !self.variant.has_trailers() || !self.expected_trailers.contains(&name) {
            return Err(ChunkedError::Malformed("trailer not announced in x-amz-trailer"));
        }
        if self.trailers.iter().any(|(t, _)| *t == name) {
            return Err(ChunkedError::Malformed("trailer sent twice"));
        }
        self.trailers.push((name, value.to_string()));
        self.trailer_bytes.extend_from_slice(line);
        Ok(())
    }

    /// The first trailer named in `x-amz-trailer` not yet read.
    fn missing_announced(&self) -> Option<&String> {
        self.expected_trailers.iter().find(|n| !self.trailers.iter().any(|(t, _)| t == *n))
    }

    /// The first required trailer-section line not yet read.
    fn missing_trailer(&self) -> Option<String> {
        if let Some(name) = self.missing_announced() {
            return Some(name.clone());
        }
        (self.variant == Variant::SignedTrailer && !self.trailer_signature_seen).then(|| TRAILER_SIGNATURE.to_string())
    }

    fn finish_inner(&mut self) -> Result<Vec<(String, String)>, ChunkedError> {
        match self.state {
            State::Done => {}
            State::Trailers => {
                if !self.line.is_empty() {
                    return Err(ChunkedError::Malformed("body ends inside a trailer line"));
                }
                if let Some(name) = self.missing_trailer() {
                    return Err(ChunkedError::MissingTrailer(name));
                }
                // Only the closing empty line is absent: accepted.
            }
            State::SizeLine | State::Data(_) | State::DataCr | State::DataLf => {
                if self.emitted < self.decoded_len {
                    return Err(ChunkedError::LengthMismatch);
                }
                return Err(ChunkedError::Malformed("body ends before its final chunk"));
            }
        }
        self.state = State::Done;
        Ok(self.trailers.clone())
    }
}

/// `1*HEXDIG` as a number; `Ok(None)` when it does not fit in a u64.
fn parse_chunk_size(hex: &[u8]) -> Result<Option<u64>, ChunkedError> {
    if hex.is_empty() {
        return Err(ChunkedError::Malformed("empty chunk size"));
    }
    let mut size: Option<u64> = Some(0);
    for &b in hex {
        let digit = char::from(b).to_digit(16).ok_or(ChunkedError::Malformed("chunk size is not hexadecimal"))?;
        size = size.and_then(|s| s.checked_mul(16)).and_then(|s| s.checked_add(u64::from(digit)));
    }
    Ok(size)
}

/// Exactly 64 hex digits (either case), as a string.
fn signature_hex(bytes: &[u8]) -> Option<String> {
    (bytes.len() == SIGNATURE_HEX_LEN && bytes.iter().all(u8::is_ascii_hexdigit)).then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::digest::{ChecksumAlgorithm, PlaintextDigests};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    // ---- A real SigV4 chunk chain, for the tests only (the sigv4 module owns the real one).

    const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const DOC_STAMP: &str = "20130524T000000Z";
    const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    /// The rolling signature of the documentation examples.
    #[derive(Clone)]
    struct Chain {
        key: [u8; 32],
        previous: String,
    }

    impl Chain {
        fn doc(seed: &str) -> Chain {
            let k = hmac(format!("AWS4{DOC_SECRET}").as_bytes(), b"20130524");
            let k = hmac(&k, b"us-east-1");
            let k = hmac(&k, b"s3");
            Chain { key: hmac(&k, b"aws4_request"), previous: seed.to_string() }
        }

        fn sign(&mut self, string_to_sign: String) -> String {
            let signature = hex::encode(hmac(&self.key, string_to_sign.as_bytes()));
            self.previous = signature.clone();
            signature
        }

        fn chunk(&mut self, data_sha256: &[u8; 32]) -> String {
            let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{DOC_STAMP}\n{DOC_SCOPE}\n{}\n{EMPTY_SHA256}\n{}", self.previous, hex::encode(data_sha256));
            self.sign(sts)
        }

        fn trailer(&mut self, trailer_bytes: &[u8]) -> String {
            let hash = hex::encode(Sha256::digest(canonical_trailers(trailer_bytes)));
            let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{DOC_STAMP}\n{DOC_SCOPE}\n{}\n{hash}", self.previous);
            self.sign(sts)
        }
    }

    /// `name:value\n` per trailer, sorted: what the trailer signature hashes.
    fn canonical_trailers(raw: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(raw).unwrap();
        let mut lines: Vec<String> = text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                format!("{}:{}\n", name.trim().to_ascii_lowercase(), value.trim())
            })
            .collect();
        lines.sort();
        lines.concat().into_bytes()
    }

    /// Checks the chain as the sigv4 module will; logs what it was given.
    struct Verifier {
        chain: Chain,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl ChunkSignatures for Verifier {
        fn check_chunk(&mut self, signature: &str, data_sha256: &[u8; 32]) -> bool {
            let mut next = self.chain.clone();
            let ok = next.chunk(data_sha256) == signature;
            if ok {
                self.chain = next;
            }
            self.log.borrow_mut().push(format!("chunk {signature} {ok}"));
            ok
        }

        fn check_trailer(&mut self, signature: &str, trailer_bytes: &[u8]) -> bool {
            let ok = self.chain.clone().trailer(trailer_bytes) == signature;
            self.log.borrow_mut().push(format!("trailer {} {ok}", String::from_utf8_lossy(trailer_bytes)));
            ok
        }
    }

    fn verifier(seed: &str) -> (Box<dyn ChunkSignatures>, Rc<RefCell<Vec<String>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        (Box::new(Verifier { chain: Chain::doc(seed), log: log.clone() }), log)
    }

    // ---- Encoders shaped like the clients.

    struct Encoding<'a> {
        variant: Variant,
        chunk_sizes: &'a [usize],
        trailers: &'a [(&'a str, &'a str)],
        upper_hex: bool,
    }

    /// Java v2 / Go v2 / botocore shape, signed under `Chain::doc("seed")` when the
    /// variant is: `size[;chunk-signature=..]\r\ndata\r\n` cycling through
    /// `chunk_sizes`, `0[;chunk-signature=..]\r\n`, trailer lines, trailer signature, `\r\n`.
    fn encode(e: Encoding<'_>, payload: &[u8]) -> Vec<u8> {
        let mut chain = Chain::doc("seed");
        let mut body = Vec::new();
        let mut rest = payload;
        let mut sizes = e.chunk_sizes.iter().cycle();
        loop {
            let n = sizes.next().map_or(rest.len(), |&n| n.clamp(1, rest.len().max(1))).min(rest.len());
            let (data, tail) = rest.split_at(n);
            let size = if e.upper_hex { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
            body.extend_from_slice(size.as_bytes());
            if e.variant.is_signed() {
                body.extend_from_slice(format!(";chunk-signature={}", chain.chunk(&Sha256::digest(data).into())).as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            if data.is_empty() {
                break;
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
            rest = tail;
        }
        let mut trailer_bytes = Vec::new();
        for (name, value) in e.trailers {
            trailer_bytes.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        body.extend_from_slice(&trailer_bytes);
        if e.variant == Variant::SignedTrailer {
            body.extend_from_slice(format!("x-amz-trailer-signature:{}\r\n", chain.trailer(&trailer_bytes)).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body
    }

    // ---- Driving the decoder.

    type Decoded = (Vec<u8>, Vec<(String, String)>);

    fn decode_pieces<'a>(decoder: &mut Decoder, pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Decoded, ChunkedError> {
        let mut out = Vec::new();
        for piece in pieces {
            decoder.push(piece, &mut out)?;
        }
        let trailers = decoder.finish()?;
        Ok((out, trailers))
    }

    fn decode(variant: Variant, decoded_len: u64, expected: &[&str], body: &[u8]) -> Result<Decoded, ChunkedError> {
        let mut d = Decoder::new(variant, decoded_len, expected.iter().map(|s| s.to_string()).collect(), None);
        decode_pieces(&mut d, [body])
    }

    fn decode_split(variant: Variant, decoded_len: u64, expected: &[&str], body: &[u8], piece: usize) -> Result<Decoded, ChunkedError> {
        let mut d = Decoder::new(variant, decoded_len, expected.iter().map(|s| s.to_string()).collect(), None);
        decode_pieces(&mut d, body.chunks(piece))
    }

    fn trailers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn crc32_b64(data: &[u8]) -> String {
        STANDARD.encode(crc32fast::hash(data).to_be_bytes())
    }

    fn checksum_matches(algorithm: ChecksumAlgorithm, value: &str, payload: &[u8]) -> bool {
        let mut d = PlaintextDigests::default();
        d.expect_checksum(algorithm, value).unwrap();
        d.update(payload);
        d.verify().is_ok()
    }

    // ---- The AWS documentation examples.

    const DOC_SIGNED_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const DOC_SIGNED_CHUNKS: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];
    const DOC_TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
    const DOC_TRAILER_CHUNKS: [&str; 3] = [
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    ];
    const DOC_TRAILER_SIGNATURE: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";
    const DOC_CRC32C: &str = "sOO8/Q==";

    /// 64 KiB + 1 KiB of 'a' in chunks signed `sigs`, a final chunk, then `tail`.
    fn doc_body(sigs: [&str; 3], tail: &str) -> Vec<u8> {
        let mut body = format!("10000;chunk-signature={}\r\n", sigs[0]).into_bytes();
        body.extend_from_slice(&[b'a'; 65536]);
        body.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", sigs[1]).as_bytes());
        body.extend_from_slice(&[b'a'; 1024]);
        body.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n{tail}", sigs[2]).as_bytes());
        body
    }

    #[test]
    fn aws_doc_example_put_object_chunked_decodes_with_its_signatures() {
        let body = doc_body(DOC_SIGNED_CHUNKS, "\r\n");
        assert_eq!(body.len(), 66824, "the example's Content-Length");
        let (sigs, log) = verifier(DOC_SIGNED_SEED);
        let mut d = Decoder::new(Variant::Signed, 66560, vec![], Some(sigs));
        let (out, trailers) = decode_pieces(&mut d, body.chunks(8192)).unwrap();
        assert_eq!(out, vec![b'a'; 66560]);
        assert!(trailers.is_empty());
        assert!(d.is_complete());
        let expected: Vec<String> = DOC_SIGNED_CHUNKS.iter().map(|s| format!("chunk {s} true")).collect();
        assert_eq!(*log.borrow(), expected);
    }

    #[test]
    fn aws_doc_example_chain_is_reproduced_by_the_test_signer() {
        let mut chain = Chain::doc(DOC_SIGNED_SEED);
        let sigs = [chain.chunk(&Sha256::digest([b'a'; 65536]).into()), chain.chunk(&Sha256::digest([b'a'; 1024]).into()), chain.chunk(&Sha256::digest(b"").into())];
        assert_eq!(sigs, DOC_SIGNED_CHUNKS);
        let mut chain = Chain::doc(DOC_TRAILER_SEED);
        let sigs = [chain.chunk(&Sha256::digest([b'a'; 65536]).into()), chain.chunk(&Sha256::digest([b'a'; 1024]).into()), chain.chunk(&Sha256::digest(b"").into())];
        assert_eq!(sigs, DOC_TRAILER_CHUNKS);
        assert_eq!(chain.trailer(b"x-amz-checksum-crc32c:sOO8/Q==\r\n"), DOC_TRAILER_SIGNATURE);
    }

    #[test]
    fn aws_doc_example_put_object_with_trailer_decodes_and_verifies() {
        // As Java v2 and RFC 9112 lay it out: trailers straight after the last chunk line.
        let tail = format!("x-amz-checksum-crc32c:{DOC_CRC32C}\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n\r\n");
        let body = doc_body(DOC_TRAILER_CHUNKS, &tail);
        let (sigs, log) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::SignedTrailer, 66560, vec!["x-amz-checksum-crc32c".into()], Some(sigs));
        let (out, got) = decode_pieces(&mut d, body.chunks(777)).unwrap();
        assert_eq!(out, vec![b'a'; 66560]);
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32c", DOC_CRC32C)]));
        assert!(checksum_matches(ChecksumAlgorithm::Crc32c, &got[0].1, &out));
        assert_eq!(log.borrow().last().unwrap(), "trailer x-amz-checksum-crc32c:sOO8/Q==\r\n true");
    }

    #[test]
    fn aws_doc_example_trailer_after_an_empty_line_is_accepted() {
        // The documentation shows the last chunk "with empty data", i.e. an empty line before the trailers.
        let tail = format!("\r\nx-amz-checksum-crc32c:{DOC_CRC32C}\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n\r\n");
        let body = doc_body(DOC_TRAILER_CHUNKS, &tail);
        let (sigs, _) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::SignedTrailer, 66560, vec!["x-amz-checksum-crc32c".into()], Some(sigs));
        let (_, got) = decode_pieces(&mut d, [&body[..]]).unwrap();
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32c", DOC_CRC32C)]));
    }

    #[test]
    fn minio_go_trailer_with_lf_line_and_empty_line_before_signature_is_accepted() {
        let tail = format!("x-amz-checksum-crc32c:{DOC_CRC32C}\n\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n\r\n");
        let body = doc_body(DOC_TRAILER_CHUNKS, &tail);
        let (sigs, log) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::SignedTrailer, 66560, vec!["x-amz-checksum-crc32c".into()], Some(sigs));
        let (_, got) = decode_pieces(&mut d, body.chunks(1000)).unwrap();
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32c", DOC_CRC32C)]));
        assert_eq!(log.borrow().last().unwrap(), "trailer x-amz-checksum-crc32c:sOO8/Q==\n true");
    }

    #[test]
    fn doc_example_with_one_flipped_data_byte_fails_its_chunk_signature() {
        let mut body = doc_body(DOC_SIGNED_CHUNKS, "\r\n");
        body[1000] = b'b';
        let (sigs, _) = verifier(DOC_SIGNED_SEED);
        let mut d = Decoder::new(Variant::Signed, 66560, vec![], Some(sigs));
        assert_eq!(decode_pieces(&mut d, [&body[..]]), Err(ChunkedError::ChunkSignature));
        assert_eq!(d.finish(), Err(ChunkedError::Poisoned));
    }

    #[test]
    fn doc_example_under_another_seed_fails_the_first_chunk() {
        let body = doc_body(DOC_SIGNED_CHUNKS, "\r\n");
        let (sigs, log) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::Signed, 66560, vec![], Some(sigs));
        let mut out = Vec::new();
        assert_eq!(d.push(&body, &mut out), Err(ChunkedError::ChunkSignature));
        assert_eq!(log.borrow().len(), 1);
    }

    #[test]
    fn doc_example_with_swapped_chunk_signatures_fails() {
        let body = doc_body([DOC_SIGNED_CHUNKS[1], DOC_SIGNED_CHUNKS[0], DOC_SIGNED_CHUNKS[2]], "\r\n");
        let (sigs, _) = verifier(DOC_SIGNED_SEED);
        let mut d = Decoder::new(Variant::Signed, 66560, vec![], Some(sigs));
        assert_eq!(decode_pieces(&mut d, [&body[..]]), Err(ChunkedError::ChunkSignature));
    }

    #[test]
    fn doc_example_final_chunk_signature_is_checked() {
        let body = doc_body([DOC_SIGNED_CHUNKS[0], DOC_SIGNED_CHUNKS[1], DOC_SIGNED_CHUNKS[1]], "\r\n");
        let (sigs, _) = verifier(DOC_SIGNED_SEED);
        let mut d = Decoder::new(Variant::Signed, 66560, vec![], Some(sigs));
        assert_eq!(decode_pieces(&mut d, [&body[..]]), Err(ChunkedError::ChunkSignature));
    }

    #[test]
    fn doc_trailer_example_with_another_checksum_value_fails_the_trailer_signature() {
        let tail = format!("x-amz-checksum-crc32c:sOO8/A==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n\r\n");
        let body = doc_body(DOC_TRAILER_CHUNKS, &tail);
        let (sigs, _) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::SignedTrailer, 66560, vec!["x-amz-checksum-crc32c".into()], Some(sigs));
        assert_eq!(decode_pieces(&mut d, [&body[..]]), Err(ChunkedError::TrailerSignature));
    }

    #[test]
    fn signed_trailer_without_its_signature_is_missing_a_trailer() {
        let body = doc_body(DOC_TRAILER_CHUNKS, &format!("x-amz-checksum-crc32c:{DOC_CRC32C}\r\n\r\n"));
        let (sigs, _) = verifier(DOC_TRAILER_SEED);
        let mut d = Decoder::new(Variant::SignedTrailer, 66560, vec!["x-amz-checksum-crc32c".into()], Some(sigs));
        assert_eq!(decode_pieces(&mut d, [&body[..]]), Err(ChunkedError::MissingTrailer("x-amz-trailer-signature".into())));
    }

    #[test]
    fn signed_body_without_a_verifier_strips_signatures() {
        let body = doc_body(DOC_SIGNED_CHUNKS, "\r\n");
        assert_eq!(decode(Variant::Signed, 66560, &[], &body).unwrap().0, vec![b'a'; 66560]);
        let tail = format!("x-amz-checksum-crc32c:{DOC_CRC32C}\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n\r\n");
        let body = doc_body(DOC_TRAILER_CHUNKS, &tail);
        let (out, got) = decode(Variant::SignedTrailer, 66560, &["x-amz-checksum-crc32c"], &body).unwrap();
        assert_eq!(out.len(), 66560);
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32c", DOC_CRC32C)]));
    }

    // ---- Unsigned bodies as the SDKs write them.

    /// botocore `AwsChunkedWrapper._make_chunk`: `hex(len)[2:]` chunks of 1 MiB, then
    /// `0\r\n<name>:<b64>\r\n\r\n`.
    fn botocore_body(payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for chunk in payload.chunks(1024 * 1024) {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{}\r\n\r\n", crc32_b64(payload)).as_bytes());
        body
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn botocore_unsigned_trailer_body_decodes_with_a_crc32_that_verifies() {
        let payload = pseudo_random(2 * 1024 * 1024 + 12345);
        let body = botocore_body(&payload);
        let (out, got) = decode_split(Variant::UnsignedTrailer, payload.len() as u64, &["x-amz-checksum-crc32"], &body, 65536).unwrap();
        assert_eq!(out, payload);
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32", &crc32_b64(&payload))]));
        assert!(checksum_matches(ChecksumAlgorithm::Crc32, &got[0].1, &out));
    }

    #[test]
    fn botocore_empty_body_is_just_the_final_chunk_and_trailer() {
        let body = botocore_body(b"");
        assert_eq!(body, b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        let (out, got) = decode(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], &body).unwrap();
        assert!(out.is_empty());
        assert_eq!(got, trailers(&[("x-amz-checksum-crc32", "AAAAAA==")]));
    }

    #[test]
    fn crt_and_rust_sdk_single_upper_case_chunk_decodes() {
        let payload = pseudo_random(0xABCDE);
        let mut body = b"ABCDE\r\n".to_vec();
        body.extend_from_slice(&payload);
        body.extend_from_slice(format!("\r\n0\r\nx-amz-checksum-crc32:{}\r\n\r\n", crc32_b64(&payload)).as_bytes());
        let (out, _) = decode_split(Variant::UnsignedTrailer, 0xABCDE, &["x-amz-checksum-crc32"], &body, 4096).unwrap();
        assert_eq!(out, payload);
    }

    #[test]
    fn several_trailers_are_returned_in_order_received() {
        let body = b"3\r\nabc\r\n0\r\nX-Amz-Checksum-SHA1: qZk+NkcGgWq6PiVxeFDCbJzQ2J0= \r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n";
        let (_, got) = decode(Variant::UnsignedTrailer, 3, &["x-amz-checksum-crc32", "x-amz-checksum-sha1"], body).unwrap();
        assert_eq!(got, trailers(&[("x-amz-checksum-sha1", "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="), ("x-amz-checksum-crc32", "NSRBwg==")]));
        assert!(checksum_matches(ChecksumAlgorithm::Sha1, &got[0].1, b"abc"));
        assert!(checksum_matches(ChecksumAlgorithm::Crc32, &got[1].1, b"abc"));
    }

    #[test]
    fn unsigned_body_without_announced_trailers_ends_after_the_final_chunk() {
        let (out, got) = decode(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"hello");
        assert!(got.is_empty());
    }

    #[test]
    fn closing_empty_line_may_be_missing_but_is_complete_only_after_finish() {
        let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n";
        let mut d = Decoder::new(Variant::UnsignedTrailer, 5, vec!["x-amz-checksum-crc32".into()], None);
        let mut out = Vec::new();
        d.push(body, &mut out).unwrap();
        assert!(!d.is_complete());
        assert_eq!(d.finish().unwrap(), trailers(&[("x-amz-checksum-crc32", "NhCmhg==")]));
        assert!(d.is_complete());
        assert!(checksum_matches(ChecksumAlgorithm::Crc32, "NhCmhg==", &out));
    }

    #[test]
    fn is_complete_once_the_closing_empty_line_is_read() {
        let mut d = Decoder::new(Variant::UnsignedTrailer, 5, vec![], None);
        let mut out = Vec::new();
        d.push(b"5\r\nhello\r\n0\r\n\r", &mut out).unwrap();
        assert!(!d.is_complete());
        d.push(b"\n", &mut out).unwrap();
        assert!(d.is_complete());
    }

    // ---- Every split point.

    /// (variant, announced trailers, encoded body, payload)
    type Case = (Variant, Vec<&'static str>, Vec<u8>, Vec<u8>);

    fn small_bodies() -> Vec<Case> {
        let payload = b"The quick brown fox jumps over the lazy dog".to_vec();
        let crc = crc32_b64(&payload);
        let unsigned = encode(
            Encoding { variant: Variant::UnsignedTrailer, chunk_sizes: &[7, 16], trailers: &[("x-amz-checksum-crc32", &crc)], upper_hex: false },
            &payload,
        );
        let signed = encode(Encoding { variant: Variant::Signed, chunk_sizes: &[20], trailers: &[], upper_hex: true }, &payload);
        let signed_trailer = encode(
            Encoding { variant: Variant::SignedTrailer, chunk_sizes: &[11], trailers: &[("x-amz-checksum-crc32", &crc)], upper_hex: false },
            &payload,
        );
        vec![
            (Variant::UnsignedTrailer, vec!["x-amz-checksum-crc32"], unsigned, payload.clone()),
            (Variant::Signed, vec![], signed, payload.clone()),
            (Variant::SignedTrailer, vec!["x-amz-checksum-crc32"], signed_trailer, payload),
        ]
    }

    #[test]
    fn every_piece_size_decodes_the_same() {
        for (variant, expected, body, payload) in small_bodies() {
            for piece in 1..=body.len() {
                let (sigs, _) = verifier("seed");
                let mut d = Decoder::new(variant, payload.len() as u64, expected.iter().map(|s| s.to_string()).collect(), Some(sigs));
                let result = decode_pieces(&mut d, body.chunks(piece));
                assert!(result.is_ok(), "{variant:?} piece {piece}: {result:?}");
                let (out, got) = result.unwrap();
                assert_eq!(out, payload, "{variant:?} piece {piece}");
                assert_eq!(got.len(), expected.len());
                assert!(d.is_complete());
            }
        }
    }

    #[test]
    fn every_two_way_split_decodes_the_same() {
        for (variant, expected, body, payload) in small_bodies() {
            for at in 0..=body.len() {
                let (sigs, _) = verifier("seed");
                let mut d = Decoder::new(variant, payload.len() as u64, expected.iter().map(|s| s.to_string()).collect(), Some(sigs));
                let result = decode_pieces(&mut d, [&body[..at], &body[at..]]);
                assert!(result.is_ok(), "{variant:?} split {at}: {result:?}");
                let (out, _) = result.unwrap();
                assert_eq!(out, payload, "{variant:?} split {at}");
            }
        }
    }

    #[test]
    fn every_truncation_fails_at_finish_except_the_closing_empty_line() {
        for (variant, expected, body, payload) in small_bodies() {
            for len in 0..body.len() {
                let mut d = Decoder::new(variant, payload.len() as u64, expected.iter().map(|s| s.to_string()).collect(), None);
                let result = decode_pieces(&mut d, [&body[..len]]);
                if len == body.len() - 2 {
                    assert_eq!(result.unwrap().0, payload, "{variant:?}: only the closing CRLF is missing");
                } else {
                    assert!(result.is_err(), "{variant:?}: a body cut to {len} of {} bytes was accepted", body.len());
                }
            }
        }
    }

    // ---- Refusals.

    fn refused(variant: Variant, decoded_len: u64, expected: &[&str], body: &[u8]) -> ChunkedError {
        let err = decode(variant, decoded_len, expected, body).unwrap_err();
        // Byte by byte too: the verdict must not depend on how the body is cut.
        assert_eq!(decode_split(variant, decoded_len, expected, body, 1).unwrap_err(), err, "{body:?}");
        err
    }

    const SIG: &str = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";

    #[test]
    fn chunk_size_that_is_not_hex_is_malformed() {
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5g\r\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"0x5\r\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b" 5\r\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"\r\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
    }

    #[test]
    fn chunk_size_line_must_end_in_crlf() {
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
    }

    #[test]
    fn chunk_data_must_be_followed_by_crlf() {
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhelloX\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\rX0\r\n\r\n"), ChunkedError::Malformed(_)));
    }

    #[test]
    fn oversized_line_is_too_large() {
        let mut body = vec![b'0'; MAX_LINE_LEN + 1];
        body.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(refused(Variant::UnsignedTrailer, 5, &[], &body), ChunkedError::TooLarge);
        // Leading zeros are still hex: at the limit, the line is accepted.
        let mut body = vec![b'0'; MAX_LINE_LEN - 1];
        body.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode(Variant::UnsignedTrailer, 5, &[], &body).unwrap().0, b"hello");
        let long_value = "A".repeat(MAX_LINE_LEN);
        let body = format!("0\r\nx-amz-checksum-crc32:{long_value}\r\n\r\n");
        assert_eq!(refused(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::TooLarge);
    }

    #[test]
    fn endless_empty_lines_in_the_trailer_section_are_too_large() {
        let mut body = b"0\r\n".to_vec();
        body.extend(b"\r\n".repeat(MAX_TRAILER_SECTION_LEN));
        assert_eq!(refused(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], &body), ChunkedError::TooLarge);
    }

    #[test]
    fn chunk_signature_in_an_unsigned_body_is_malformed() {
        let body = format!("5;chunk-signature={SIG}\r\nhello\r\n0\r\n\r\n");
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], body.as_bytes()), ChunkedError::Malformed(_)));
        let body = format!("5\r\nhello\r\n0;chunk-signature={SIG}\r\n\r\n");
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], body.as_bytes()), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5;\r\nhello\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
    }

    #[test]
    fn signed_body_needs_a_well_formed_chunk_signature() {
        for line in [
            "5\r\n".to_string(),
            format!("5;chunk-signature={}\r\n", &SIG[..63]),
            format!("5;chunk-signature={SIG}0\r\n"),
            format!("5;chunk-signature={}g\r\n", &SIG[..63]),
            format!("5;chunk-signatur={SIG}\r\n"),
            format!("5;chunk-signature={SIG};x=y\r\n"),
            format!("5 ;chunk-signature={SIG}\r\n"),
        ] {
            let body = format!("{line}hello\r\n0;chunk-signature={SIG}\r\n\r\n");
            assert!(matches!(refused(Variant::Signed, 5, &[], body.as_bytes()), ChunkedError::Malformed(_)), "{line}");
        }
        let body = format!("5;chunk-signature={SIG}\r\nhello\r\n0\r\n\r\n");
        assert!(matches!(refused(Variant::Signed, 5, &[], body.as_bytes()), ChunkedError::Malformed(_)), "final chunk unsigned");
    }

    #[test]
    fn chunk_beyond_the_decoded_length_is_refused_before_its_bytes_go_out() {
        let mut d = Decoder::new(Variant::UnsignedTrailer, 7, vec![], None);
        let mut out = Vec::new();
        d.push(b"5\r\nhello\r\n", &mut out).unwrap();
        assert_eq!(d.push(b"3\r\nabc\r\n0\r\n\r\n", &mut out), Err(ChunkedError::LengthMismatch));
        assert_eq!(out, b"hello");
        assert_eq!(d.push(b"", &mut out), Err(ChunkedError::Poisoned));
        assert_eq!(refused(Variant::UnsignedTrailer, 4, &[], b"5\r\nhello\r\n0\r\n\r\n"), ChunkedError::LengthMismatch);
        assert_eq!(refused(Variant::UnsignedTrailer, u64::MAX, &[], b"10000000000000000\r\n"), ChunkedError::LengthMismatch);
    }

    #[test]
    fn final_chunk_before_the_decoded_length_is_a_length_mismatch() {
        assert_eq!(refused(Variant::UnsignedTrailer, 6, &[], b"5\r\nhello\r\n0\r\n\r\n"), ChunkedError::LengthMismatch);
        assert_eq!(refused(Variant::UnsignedTrailer, 1, &[], b"0\r\n\r\n"), ChunkedError::LengthMismatch);
    }

    #[test]
    fn body_cut_short_is_a_length_mismatch_or_malformed() {
        assert_eq!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhel"), ChunkedError::LengthMismatch);
        assert_eq!(refused(Variant::UnsignedTrailer, 5, &[], b""), ChunkedError::LengthMismatch);
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n0\r"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &["x-amz-checksum-crc32"], b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:Nh"), ChunkedError::Malformed(_)));
    }

    #[test]
    fn announced_trailer_that_never_comes_is_missing() {
        let expected = ["x-amz-checksum-crc32"];
        let missing = ChunkedError::MissingTrailer("x-amz-checksum-crc32".into());
        assert_eq!(refused(Variant::UnsignedTrailer, 5, &expected, b"5\r\nhello\r\n0\r\n\r\n"), missing);
        assert_eq!(refused(Variant::UnsignedTrailer, 5, &expected, b"5\r\nhello\r\n0\r\n"), missing);
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-trailer-signature:{SIG}\r\n\r\n");
        assert_eq!(refused(Variant::SignedTrailer, 0, &expected, body.as_bytes()), missing);
    }

    #[test]
    fn trailer_not_announced_is_refused() {
        let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-sha256:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\r\n\r\n";
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &["x-amz-checksum-crc32"], body), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], body), ChunkedError::Malformed(_)));
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        assert!(matches!(refused(Variant::Signed, 0, &[], body.as_bytes()), ChunkedError::Malformed(_)));
    }

    #[test]
    fn trailer_sent_twice_is_refused() {
        let body = b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        assert!(matches!(refused(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], body), ChunkedError::Malformed(_)));
    }

    #[test]
    fn trailer_lines_must_be_name_colon_value() {
        for line in ["x-amz-checksum-crc32 AAAAAA==", ":AAAAAA==", "x-amz checksum:AAAAAA==", "x-amz-checksum-crc32:AA\u{7f}AA"] {
            let body = format!("0\r\n{line}\r\n\r\n");
            assert!(matches!(refused(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::Malformed(_)), "{line}");
        }
    }

    #[test]
    fn trailer_signature_where_none_belongs_is_refused() {
        let body = format!("0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{SIG}\r\n\r\n");
        assert!(matches!(refused(Variant::UnsignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::Malformed(_)));
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-trailer-signature:{SIG}\r\n\r\n");
        assert!(matches!(refused(Variant::Signed, 0, &[], body.as_bytes()), ChunkedError::Malformed(_)));
    }

    #[test]
    fn nothing_may_follow_the_trailer_signature_but_the_end() {
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-trailer-signature:{SIG}\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        assert!(matches!(refused(Variant::SignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::MissingTrailer(_)));
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{SIG}\r\nx-amz-meta-a:b\r\n\r\n");
        assert!(matches!(refused(Variant::SignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::Malformed(_)));
        let body = format!("0;chunk-signature={SIG}\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:{}\r\n\r\n", &SIG[..60]);
        assert!(matches!(refused(Variant::SignedTrailer, 0, &["x-amz-checksum-crc32"], body.as_bytes()), ChunkedError::Malformed(_)));
    }

    #[test]
    fn data_after_the_end_is_malformed() {
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n0\r\n\r\nX"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n0\r\n\r\n\r\n"), ChunkedError::Malformed(_)));
        assert!(matches!(refused(Variant::UnsignedTrailer, 5, &[], b"5\r\nhello\r\n0\r\n\r\n0\r\n\r\n"), ChunkedError::Malformed(_)));
        let mut d = Decoder::new(Variant::UnsignedTrailer, 0, vec![], None);
        let mut out = Vec::new();
        d.push(b"0\r\n", &mut out).unwrap();
        assert!(d.finish().is_ok());
        assert!(matches!(d.push(b"x", &mut out), Err(ChunkedError::Malformed(_))));
    }

    #[test]
    fn errors_stick() {
        let mut d = Decoder::new(Variant::UnsignedTrailer, 5, vec![], None);
        let mut out = Vec::new();
        assert!(matches!(d.push(b"zz\r\n", &mut out), Err(ChunkedError::Malformed(_))));
        assert_eq!(d.push(b"5\r\nhello\r\n0\r\n\r\n", &mut out), Err(ChunkedError::Poisoned));
        assert_eq!(d.finish(), Err(ChunkedError::Poisoned));
        assert!(!d.is_complete());
        assert!(out.is_empty());
        let mut d = Decoder::new(Variant::UnsignedTrailer, 5, vec![], None);
        assert_eq!(d.finish(), Err(ChunkedError::LengthMismatch));
        assert_eq!(d.finish(), Err(ChunkedError::Poisoned));
    }

    #[test]
    fn variant_from_content_sha256() {
        assert_eq!(Variant::from_content_sha256("STREAMING-UNSIGNED-PAYLOAD-TRAILER"), Some(Variant::UnsignedTrailer));
        assert_eq!(Variant::from_content_sha256("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), Some(Variant::Signed));
        assert_eq!(Variant::from_content_sha256("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"), Some(Variant::SignedTrailer));
        assert_eq!(Variant::from_content_sha256("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"), None);
        assert_eq!(Variant::from_content_sha256("UNSIGNED-PAYLOAD"), None);
        assert_eq!(Variant::from_content_sha256(EMPTY_SHA256), None);
    }

    #[test]
    fn trailer_names_from_the_x_amz_trailer_header() {
        assert_eq!(trailer_names("x-amz-checksum-crc32"), vec!["x-amz-checksum-crc32"]);
        assert_eq!(trailer_names(" X-Amz-Checksum-CRC32C , x-amz-checksum-sha256,"), vec!["x-amz-checksum-crc32c", "x-amz-checksum-sha256"]);
        assert!(trailer_names("").is_empty());
    }

    // ---- Properties.

    fn variant_strategy() -> impl Strategy<Value = Variant> {
        prop_oneof![Just(Variant::UnsignedTrailer), Just(Variant::Signed), Just(Variant::SignedTrailer)]
    }

    proptest! {
        #[test]
        fn encoding_then_decoding_at_random_splits_is_the_identity(
            variant in variant_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk_sizes in proptest::collection::vec(1usize..700, 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            upper_hex in any::<bool>(),
        ) {
            let crc = crc32_b64(&payload);
            let trailer_list: Vec<(&str, &str)> = if variant.has_trailers() { vec![("x-amz-checksum-crc32", &crc)] } else { vec![] };
            let body = encode(Encoding { variant, chunk_sizes: &chunk_sizes, trailers: &trailer_list, upper_hex }, &payload);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            cuts.push(0);
            cuts.push(body.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &body[w[0]..w[1]]).collect();
            let expected: Vec<String> = trailer_list.iter().map(|(n, _)| n.to_string()).collect();
            let (sigs, _) = verifier("seed");
            let mut d = Decoder::new(variant, payload.len() as u64, expected, Some(sigs));
            let (out, got) = decode_pieces(&mut d, pieces).unwrap();
            prop_assert_eq!(out, payload);
            prop_assert_eq!(got, trailers(&trailer_list));
            prop_assert!(d.is_complete());
        }

        #[test]
        fn a_changed_byte_is_never_silently_accepted_in_a_verified_body(
            variant in prop_oneof![Just(Variant::Signed), Just(Variant::SignedTrailer)],
            payload in proptest::collection::vec(any::<u8>(), 1..400),
            chunk_size in 1usize..200,
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let crc = crc32_b64(&payload);
            let trailer_list: Vec<(&str, &str)> = if variant.has_trailers() { vec![("x-amz-checksum-crc32", &crc)] } else { vec![] };
            let mut body = encode(Encoding { variant, chunk_sizes: &[chunk_size], trailers: &trailer_list, upper_hex: false }, &payload);
            let at = at.index(body.len());
            let original = body[at];
            body[at] ^= xor;
            let expected: Vec<String> = trailer_list.iter().map(|(n, _)| n.to_string()).collect();
            let (sigs, _) = verifier("seed");
            let mut d = Decoder::new(variant, payload.len() as u64, expected, Some(sigs));
            // Only the case of a size digit or a trailer name may change and still decode.
            if let Ok((out, got)) = decode_pieces(&mut d, [&body[..]]) {
                prop_assert!(xor == 0x20 && original.is_ascii_alphabetic(), "byte {} changed from {:?}", at, char::from(original));
                prop_assert_eq!(out, payload);
                prop_assert_eq!(got, trailers(&trailer_list));
            }
        }
    }

    proptest! {
        // Quadratic in the body length: fewer, smaller cases.
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_prefix_of_a_random_body_is_refused_at_finish(
            variant in variant_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            chunk_sizes in proptest::collection::vec(4usize..40, 1..4),
        ) {
            let crc = crc32_b64(&payload);
            let trailer_list: Vec<(&str, &str)> = if variant.has_trailers() { vec![("x-amz-checksum-crc32", &crc)] } else { vec![] };
            let body = encode(Encoding { variant, chunk_sizes: &chunk_sizes, trailers: &trailer_list, upper_hex: false }, &payload);
            let expected: Vec<String> = trailer_list.iter().map(|(n, _)| n.to_string()).collect();
            for len in 0..body.len() - 2 {
                let mut d = Decoder::new(variant, payload.len() as u64, expected.clone(), None);
                prop_assert!(decode_pieces(&mut d, [&body[..len]]).is_err(), "accepted {} of {} bytes", len, body.len());
            }
        }
    }
}
