//! Format v1 chunk stream: the STREAM construction over one object or one
//! multipart part. FORMAT.md is the spec; names here follow it.
//!
//! A *segment* is what one upload request carries: the whole object for
//! PutObject, one part for UploadPart. It is a run of chunks:
//!
//! ```text
//! chunk  = header (24 bytes) || ciphertext (len bytes) || tag (16 bytes)
//! header = salt (12) || part (u32 BE) || index (u32 BE) || flags (1) || len (u24 BE)
//! ```
//!
//! * `salt` is random per segment (per request), so a part re-sent under the
//!   same part number never reuses a key/nonce pair, even with other bytes.
//! * segment key = HKDF-SHA256(ikm = DEK, salt = salt,
//!   info = "s3crypt v1 segment key" || suite id || part (u32 BE)).
//! * nonce = 7 zero bytes || index (u32 BE) || last flag (0x00 or 0x01): the
//!   STREAM nonce of age / Hoang-Reyhanitabar-Rogaway-Vizár.
//! * AAD = the 24 header bytes, so part, index, last flag and length are all
//!   authenticated, and a reader can check the order of chunks it meets
//!   anywhere in an object (range reads) without the segment's start.
//!
//! Every chunk but the last of a segment holds exactly `chunk_size` plaintext
//! bytes; the last holds 1..=chunk_size bytes. An empty segment has no chunk
//! at all (its length is bound by the envelope instead, see FORMAT.md). This
//! keeps the ciphertext length a pure function of the plaintext length.

use crate::cipher::{ChunkCipher, Suite, KEY_LEN, NONCE_LEN, TAG_LEN};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

pub const SALT_LEN: usize = 12;
pub const HEADER_LEN: usize = 24;
/// Bytes each chunk adds to its plaintext.
pub const CHUNK_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest value the 24-bit length field can carry.
pub const MAX_CHUNK_LEN: u32 = (1 << 24) - 1;

const FLAG_LAST: u8 = 0x01;
const SEGMENT_KEY_INFO: &[u8] = b"s3crypt v1 segment key";

/// Why a chunk stream was refused. Names match FORMAT.md, "Errors".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// A chunk failed authentication (modified, wrong key, spliced from another object).
    ChunkAuthFailed,
    /// A header field is not valid (unknown flags, empty chunk, length above the chunk size, short non-final chunk).
    BadChunkHeader,
    /// A chunk is not the one that must come next (reordered, duplicated, dropped, from another part).
    ChunkOutOfOrder,
    /// The stream ended before the final chunk.
    Truncated,
    /// Bytes follow the final chunk of the object.
    TrailingData,
    /// The plaintext is longer or shorter than the length declared up front.
    LengthMismatch,
    /// A segment would need more than 2^32 chunks.
    CounterOverflow,
    /// The operating system's random generator failed.
    RandomUnavailable,
    /// An earlier error stopped this stream; it stays stopped.
    Poisoned,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            StreamError::ChunkAuthFailed => "chunk_auth_failed",
            StreamError::BadChunkHeader => "bad_chunk_header",
            StreamError::ChunkOutOfOrder => "chunk_out_of_order",
            StreamError::Truncated => "truncated",
            StreamError::TrailingData => "trailing_data",
            StreamError::LengthMismatch => "length_mismatch",
            StreamError::CounterOverflow => "counter_overflow",
            StreamError::RandomUnavailable => "random_unavailable",
            StreamError::Poisoned => "poisoned",
        };
        f.write_str(text)
    }
}

/// The clear, authenticated header in front of every chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub salt: [u8; SALT_LEN],
    pub part: u32,
    pub index: u32,
    pub last: bool,
    pub len: u32,
}

impl ChunkHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (salt, rest) = out.split_at_mut(SALT_LEN);
        salt.copy_from_slice(&self.salt);
        let (part, rest) = rest.split_at_mut(4);
        part.copy_from_slice(&self.part.to_be_bytes());
        let (index, rest) = rest.split_at_mut(4);
        index.copy_from_slice(&self.index.to_be_bytes());
        // rest = flags (1) || len (u24 BE): the low three bytes of len's BE form.
        let len = self.len.to_be_bytes();
        rest.copy_from_slice(&[if self.last { FLAG_LAST } else { 0 }, len[1], len[2], len[3]]);
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<ChunkHeader, StreamError> {
        let [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, p0, p1, p2, p3, i0, i1, i2, i3, flags, l0, l1, l2] = *bytes;
        if flags & !FLAG_LAST != 0 {
            return Err(StreamError::BadChunkHeader);
        }
        Ok(ChunkHeader {
            salt: [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11],
            part: u32::from_be_bytes([p0, p1, p2, p3]),
            index: u32::from_be_bytes([i0, i1, i2, i3]),
            last: flags & FLAG_LAST != 0,
            len: u32::from_be_bytes([0, l0, l1, l2]),
        })
    }

    /// nonce = 0x00 * 7 || index (u32 BE) || last flag.
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        let index = self.index.to_be_bytes();
        nonce[7..11].copy_from_slice(&index);
        nonce[11] = u8::from(self.last);
        nonce
    }
}

/// segment key = HKDF-SHA256(DEK, salt, "s3crypt v1 segment key" || suite id || part).
pub fn segment_key(dek: &[u8; KEY_LEN], suite: Suite, salt: &[u8; SALT_LEN], part: u32) -> Zeroizing<[u8; KEY_LEN]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), dek);
    let info = [SEGMENT_KEY_INFO, &[suite.id()], &part.to_be_bytes()].concat();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // 32 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail;
    // an all-zero key would only result if it did, and is never used then.
    if hk.expand(&info, key.as_mut_slice()).is_err() {
        key.fill(0);
    }
    key
}

/// Seals one segment, chunk by chunk, from plaintext pushed in pieces of any
/// size. The plaintext length is declared up front (it fixes Content-Length
/// before the body is seen) and checked at the end.
pub struct SegmentSealer {
    cipher: ChunkCipher,
    salt: [u8; SALT_LEN],
    part: u32,
    next_index: u32,
    chunk_size: usize,
    /// Plaintext bytes still to come, including those in `pending`.
    remaining: u64,
    /// Plaintext of the chunk being filled; never holds more than one chunk.
    pending: Vec<u8>,
    failed: bool,
}

impl SegmentSealer {
    /// A sealer with a fresh random salt.
    pub fn new(dek: &[u8; KEY_LEN], suite: Suite, part: u32, chunk_size: usize, plaintext_len: u64) -> Result<SegmentSealer, StreamError> {
        let mut salt = [0u8; SALT_LEN];
        crate::cipher::random_bytes(&mut salt).map_err(|_| StreamError::RandomUnavailable)?;
        Ok(SegmentSealer::with_salt(dek, suite, part, chunk_size, plaintext_len, salt))
    }

    /// A sealer with a given salt: for test vectors only; never reuse a salt.
    pub fn with_salt(dek: &[u8; KEY_LEN], suite: Suite, part: u32, chunk_size: usize, plaintext_len: u64, salt: [u8; SALT_LEN]) -> SegmentSealer {
        let key = segment_key(dek, suite, &salt, part);
        SegmentSealer {
            cipher: ChunkCipher::new(suite, &key),
            salt,
            part,
            next_index: 0,
            chunk_size,
            remaining: plaintext_len,
            pending: Vec::with_capacity(chunk_size),
            failed: false,
        }
    }

    /// Takes the next plaintext piece and appends every chunk it completes to
    /// `out`. The final chunk is only sealed by `finish`, so a caller can still
    /// refuse the upload (e.g. a checksum mismatch) before the backend has a
    /// complete object.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        if data.len() as u64 > self.remaining.saturating_sub(self.pending.len() as u64) {
            self.failed = true;
            return Err(StreamError::LengthMismatch);
        }
        while !data.is_empty() {
            let room = self.chunk_size - self.pending.len();
            let take = room.min(data.len());
            let (head, tail) = data.split_at(take);
            data = tail;
            let full = self.pending.len() + take == self.chunk_size;
            // A full chunk that is not the segment's last can be sealed now; the
            // last one waits for `finish`. Seal straight from the input when no
            // partial chunk is pending: one copy, into `out`.
            if full && self.remaining > self.chunk_size as u64 {
                if self.pending.is_empty() {
                    self.seal_chunk(head, false, out)?;
                } else {
                    self.pending.extend_from_slice(head);
                    let chunk = std::mem::take(&mut self.pending);
                    let sealed = self.seal_chunk(&chunk, false, out);
                    self.pending = chunk;
                    self.pending.clear();
                    sealed?;
                }
                self.remaining -= self.chunk_size as u64;
            } else {
                self.pending.extend_from_slice(head);
            }
        }
        Ok(())
    }

    /// Seals the final chunk once all declared plaintext has arrived.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        if self.pending.len() as u64 != self.remaining {
            return Err(StreamError::LengthMismatch);
        }
        if self.pending.is_empty() {
            // Only an empty segment reaches here with nothing pending: it has no chunk.
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.pending);
        self.seal_chunk(&chunk, true, out)
    }

    fn seal_chunk(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let len = u32::try_from(plaintext.len()).map_err(|_| StreamError::BadChunkHeader)?;
        let header = ChunkHeader { salt: self.salt, part: self.part, index: self.next_index, last, len };
        let aad = header.encode();
        out.reserve(plaintext.len() + CHUNK_OVERHEAD);
        out.extend_from_slice(&aad);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let body = out.get_mut(start..).ok_or(StreamError::BadChunkHeader)?;
        let tag = self.cipher.seal(&header.nonce(), &aad, body).map_err(|_| {
            self.failed = true;
            StreamError::ChunkAuthFailed
        })?;
        out.extend_from_slice(&tag);
        // Refuse to go on before the counter can wrap (the nonce would repeat).
        match self.next_index.checked_add(1) {
            Some(next) => self.next_index = next,
            None if last => {}
            None => {
                self.failed = true;
                return Err(StreamError::CounterOverflow);
            }
        }
        Ok(())
    }
}

/// What part of an object a reader receives, in ciphertext and plaintext
/// coordinates. A whole-object GET is `ReadWindow::whole(len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadWindow {
    /// Ciphertext length of the whole object.
    pub object_len: u64,
    /// Ciphertext offset of the first received byte; a chunk boundary.
    pub start: u64,
    /// Ciphertext offset just past the last received byte.
    pub end: u64,
    /// Plaintext offset of the first received chunk's first byte.
    pub plain_start: u64,
    /// Plaintext bytes to release: `[want_start, want_end)`.
    pub want_start: u64,
    pub want_end: u64,
}

impl ReadWindow {
    pub fn whole(object_len: u64) -> ReadWindow {
        ReadWindow { object_len, start: 0, end: object_len, plain_start: 0, want_start: 0, want_end: u64::MAX }
    }
}

struct OpenSegment {
    cipher: ChunkCipher,
    salt: [u8; SALT_LEN],
    part: u32,
}

/// Opens a run of chunks from anywhere in an object and releases only
/// authenticated plaintext, in order. Checks that every chunk is the one that
/// must follow the previous one; the first chunk of a read that starts at
/// chunk `n > 0` is checked against `n` where the layout allows (single
/// segment: index must be `n`).
pub struct ChunkOpener {
    dek: Zeroizing<[u8; KEY_LEN]>,
    suite: Suite,
    chunk_size: u32,
    window: ReadWindow,
    /// Ciphertext offset of the next byte pushed.
    offset: u64,
    /// Plaintext offset of the next chunk's first byte.
    plain_offset: u64,
    previous: Option<ChunkHeader>,
    segment: Option<OpenSegment>,
    /// Bytes of the chunk being received (header, ciphertext, tag).
    buf: Vec<u8>,
    failed: bool,
}

impl ChunkOpener {
    pub fn new(dek: Zeroizing<[u8; KEY_LEN]>, suite: Suite, chunk_size: u32, window: ReadWindow) -> ChunkOpener {
        ChunkOpener {
            dek,
            suite,
            chunk_size,
            window,
            offset: window.start,
            plain_offset: window.plain_start,
            previous: None,
            segment: None,
            buf: Vec::with_capacity(chunk_size as usize + CHUNK_OVERHEAD),
            failed: false,
        }
    }

    /// Takes the next ciphertext piece; appends the plaintext of every chunk it
    /// completes (after authenticating it) to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        while !data.is_empty() {
            let need = self.bytes_needed();
            let take = need.saturating_sub(self.buf.len()).min(data.len());
            let (head, tail) = data.split_at(take);
            self.buf.extend_from_slice(head);
            data = tail;
            // Bytes past the announced end are never added (a backend can
            // announce any Content-Range).
            self.offset = self.offset.checked_add(take as u64).filter(|o| *o <= self.window.end).ok_or(StreamError::TrailingData).inspect_err(|_| self.failed = true)?;
            if self.buf.len() == HEADER_LEN {
                if let Err(e) = self.check_header() {
                    self.failed = true;
                    return Err(e);
                }
            } else if self.buf.len() == need && need > HEADER_LEN {
                if let Err(e) = self.open_chunk(out) {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Called at end of stream: the last chunk received must be complete, and
    /// the final chunk of the object if the read reaches the object's end.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        if !self.buf.is_empty() || self.offset != self.window.end {
            self.failed = true;
            return Err(StreamError::Truncated);
        }
        Ok(())
    }

    /// Total bytes of the chunk being received, as far as known.
    fn bytes_needed(&self) -> usize {
        // The length field is the header's last three bytes.
        match self.buf.get(..HEADER_LEN) {
            Some([.., l0, l1, l2]) => HEADER_LEN + (usize::from(*l0) << 16 | usize::from(*l1) << 8 | usize::from(*l2)) + TAG_LEN,
            _ => HEADER_LEN,
        }
    }

    fn parsed_header(&self) -> Result<ChunkHeader, StreamError> {
        let bytes: &[u8; HEADER_LEN] = self.buf.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(StreamError::BadChunkHeader)?;
        ChunkHeader::decode(bytes)
    }

    /// Checks a header as soon as it is complete, before any ciphertext of its
    /// chunk is accepted.
    fn check_header(&mut self) -> Result<(), StreamError> {
        let h = self.parsed_header()?;
        if h.len == 0 || h.len > self.chunk_size || (!h.last && h.len != self.chunk_size) {
            return Err(StreamError::BadChunkHeader);
        }
        let chunk_start = self.offset.checked_sub(HEADER_LEN as u64).ok_or(StreamError::BadChunkHeader)?;
        let chunk_end = chunk_start.checked_add(u64::from(h.len) + CHUNK_OVERHEAD as u64).ok_or(StreamError::Truncated)?;
        if chunk_end > self.window.object_len {
            return Err(StreamError::Truncated);
        }
        // The chunk that ends the object must be final; nothing may follow the
        // final chunk of a single-segment object. Both are checked before the
        // chunk's plaintext is released.
        if chunk_end == self.window.object_len && !h.last {
            return Err(StreamError::Truncated);
        }
        if h.last && h.part == 0 && chunk_end != self.window.object_len {
            return Err(StreamError::TrailingData);
        }
        match self.previous {
            None => {
                // The first chunk of a read must sit where its header says. In a
                // single segment, and in part 1 of a multipart object, chunk n
                // has index n.
                let n = chunk_start / (u64::from(self.chunk_size) + CHUNK_OVERHEAD as u64);
                let i = u64::from(h.index);
                // S3 lets an upload skip part numbers, so past part 1 only the
                // weaker i <= n holds for every object; the object's start
                // must be an index 0 whatever its first part number.
                let fits = match u64::from(h.part) {
                    0 | 1 => i == n,
                    _ => i <= n && (n > 0 || i == 0),
                };
                if !fits {
                    return Err(StreamError::ChunkOutOfOrder);
                }
            }
            Some(p) if !p.last => {
                if h.salt != p.salt || h.part != p.part || Some(h.index) != p.index.checked_add(1) {
                    return Err(StreamError::ChunkOutOfOrder);
                }
            }
            Some(p) => {
                // A new segment: the next part of a multipart object.
                if p.part == 0 || h.part <= p.part || h.index != 0 {
                    return Err(StreamError::ChunkOutOfOrder);
                }
            }
        }
        let same_segment = matches!(&self.segment, Some(s) if s.salt == h.salt && s.part == h.part);
        if !same_segment {
            let key = segment_key(&self.dek, self.suite, &h.salt, h.part);
            self.segment = Some(OpenSegment { cipher: ChunkCipher::new(self.suite, &key), salt: h.salt, part: h.part });
        }
        Ok(())
    }

    fn open_chunk(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let header = self.parsed_header()?;
        let segment = self.segment.as_ref().ok_or(StreamError::BadChunkHeader)?;
        let total = self.buf.len();
        let (aad, rest) = self.buf.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(total - HEADER_LEN - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| StreamError::BadChunkHeader)?;
        segment.cipher.open(&header.nonce(), aad, body, tag).map_err(|_| StreamError::ChunkAuthFailed)?;
        // Release only the wanted plaintext window.
        let chunk_start = self.plain_offset;
        let chunk_end = chunk_start.saturating_add(body.len() as u64);
        let from = self.window.want_start.clamp(chunk_start, chunk_end) - chunk_start;
        let to = self.window.want_end.clamp(chunk_start, chunk_end) - chunk_start;
        // from <= to <= body.len(), so both fit usize.
        if let Some(wanted) = body.get(usize::try_from(from).unwrap_or(usize::MAX)..usize::try_from(to).unwrap_or(usize::MAX)) {
            out.extend_from_slice(wanted);
        }
        self.plain_offset = chunk_end;
        self.previous = Some(header);
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = ChunkHeader { salt: [7; SALT_LEN], part: 10_000, index: 0xdead_beef, last: true, len: 65_536 };
        assert_eq!(ChunkHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_rejects_unknown_flags() {
        let mut bytes = ChunkHeader { salt: [0; SALT_LEN], part: 0, index: 0, last: false, len: 1 }.encode();
        bytes[20] = 0x02;
        assert_eq!(ChunkHeader::decode(&bytes), Err(StreamError::BadChunkHeader));
    }

    #[test]
    fn nonce_layout() {
        let h = ChunkHeader { salt: [0; SALT_LEN], part: 3, index: 0x0102_0304, last: true, len: 0 };
        assert_eq!(h.nonce(), [0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 1]);
    }
}
