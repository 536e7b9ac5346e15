//! `Range: bytes=...` on plaintext, mapped to whole ciphertext chunks.
//! See FORMAT.md, "Range reads". One range per request, as S3 supports.

use crate::sizes::chunk_offset;
use crate::stream::CHUNK_OVERHEAD;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive).
    Span(u64, u64),
    /// `bytes=a-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a single byte range. `None` means "not a range S3 honours": S3
/// ignores such a header and returns the whole object, and so do we.
pub fn parse(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> { if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) { None } else { s.parse().ok() } };
    match (first.trim(), last.trim()) {
        ("", n) => number(n).map(ByteRange::Suffix),
        (a, "") => number(a).map(ByteRange::From),
        (a, b) => {
            let (a, b) = (number(a)?, number(b)?);
            (a <= b).then_some(ByteRange::Span(a, b))
        }
    }
}

/// The ciphertext range to ask the backend for: whole chunks covering the
/// plaintext range, for objects sealed with `chunk_size`.
///
/// Whether the object has an envelope is only known from the response, and an
/// object written around the gateway is served as stored, so the range also
/// covers its bytes from `a` where that costs at most one chunk more. Chunk
/// `k` starts at `k * (C + 40)`, after plaintext offset `a = k * C + r` when
/// `r < 40 k`; the range then starts at `a` if `a` lies less than one sealed
/// chunk before it (offsets up to about C² / 40: 100 MiB at C = 64 KiB), and
/// the reader skips to the chunk boundary without decrypting anything more.
/// Deeper in, `covers_unsealed` says no and the gateway asks the backend
/// whether the object has an envelope first.
pub fn upstream_header(range: ByteRange, chunk_size: u32) -> Option<String> {
    let c = u64::from(chunk_size);
    Some(match range {
        ByteRange::Span(a, b) => {
            let start = covering_start(a, chunk_size)?;
            let end = chunk_offset(b / c + 1, chunk_size)?.checked_sub(1)?;
            format!("bytes={start}-{end}")
        }
        ByteRange::From(a) => format!("bytes={}-", covering_start(a, chunk_size)?),
        ByteRange::Suffix(n) => format!("bytes=-{}", suffix_len(n, chunk_size)?),
    })
}

/// Where the backend range for plaintext offset `a` starts: the chunk that
/// holds `a`, or `a` itself when that is less than one sealed chunk before.
fn covering_start(a: u64, chunk_size: u32) -> Option<u64> {
    let chunk_start = chunk_offset(a / u64::from(chunk_size), chunk_size)?;
    let sealed = u64::from(chunk_size) + CHUNK_OVERHEAD as u64;
    Some(if chunk_start > a && chunk_start - a < sealed { a } else { chunk_start })
}

/// Whether `upstream_header`'s range also holds the requested bytes of an
/// object stored without envelope (as it is).
pub fn covers_unsealed(range: ByteRange, chunk_size: u32) -> bool {
    match range {
        ByteRange::Span(a, _) | ByteRange::From(a) => covering_start(a, chunk_size).is_some_and(|start| start <= a),
        // At least n stored bytes from the end.
        ByteRange::Suffix(_) => true,
    }
}

/// The range as the client sent it, for an object stored as it is.
pub fn unsealed_header(range: ByteRange) -> String {
    match range {
        ByteRange::Span(a, b) => format!("bytes={a}-{b}"),
        ByteRange::From(a) => format!("bytes={a}-"),
        ByteRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// The stored bytes that hold the last `n` plaintext bytes: at most
/// ceil(n/C) + 1 chunks (the final chunk may be short).
fn suffix_len(n: u64, chunk_size: u32) -> Option<u64> {
    n.div_ceil(u64::from(chunk_size)).checked_add(1)?.checked_mul(u64::from(chunk_size) + CHUNK_OVERHEAD as u64)
}

/// A suffix range as an absolute one, once the stored length is known. The
/// chunk-aligned suffix is often longer than a small object: S3 then sends
/// the whole object, but some backends (s3s-fs) answer 500 instead.
pub fn upstream_suffix_from(n: u64, chunk_size: u32, stored_len: u64) -> Option<String> {
    Some(format!("bytes={}-", stored_len.saturating_sub(suffix_len(n, chunk_size)?)))
}

/// The inclusive plaintext span a range selects in an object of `len` bytes,
/// or `None` when it is unsatisfiable (S3's 416 InvalidRange).
pub fn resolve(range: ByteRange, len: u64) -> Option<(u64, u64)> {
    let last = len.checked_sub(1)?;
    match range {
        ByteRange::Span(a, b) if a <= last => Some((a, b.min(last))),
        ByteRange::From(a) if a <= last => Some((a, last)),
        ByteRange::Suffix(n) if n > 0 => Some((len.saturating_sub(n), last)),
        _ => None,
    }
}

/// Parses `Content-Range: bytes s-e/total` into (s, e, total).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (s, e) = span.split_once('-')?;
    let (s, e, total) = (s.trim().parse().ok()?, e.trim().parse().ok()?, total.trim().parse().ok()?);
    (s <= e && e < total).then_some((s, e, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_ranges_only() {
        assert_eq!(parse("bytes=0-9"), Some(ByteRange::Span(0, 9)));
        assert_eq!(parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        for bad in ["bytes=9-0", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", "bytes=-", "bytes=+1-2"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn maps_to_whole_chunks() {
        let c = 65_536;
        assert_eq!(upstream_header(ByteRange::Span(0, 0), c).as_deref(), Some("bytes=0-65575"));
        assert_eq!(upstream_header(ByteRange::Span(65_576, 65_577), c).as_deref(), Some("bytes=65576-131151"));
        assert_eq!(upstream_header(ByteRange::Span(65_535, 65_536), c).as_deref(), Some("bytes=0-131151"));
        assert_eq!(upstream_header(ByteRange::From(131_152), c).as_deref(), Some("bytes=131152-"));
        assert_eq!(upstream_header(ByteRange::Suffix(1), c).as_deref(), Some("bytes=-131152"));
        // The same bytes from a known stored length; never before the start.
        assert_eq!(upstream_suffix_from(1, c, 1_000_000).as_deref(), Some("bytes=868848-"));
        assert_eq!(upstream_suffix_from(1, c, 41).as_deref(), Some("bytes=0-"));
        assert_eq!(upstream_suffix_from(0, c, 0).as_deref(), Some("bytes=0-"));
    }

    #[test]
    fn also_covers_the_bytes_of_an_object_without_envelope() {
        let c = 65_536;
        let sealed = 65_536 + 40;
        // Chunk 1 starts at 65576, after plaintext offset 65536: start at the offset.
        assert_eq!(upstream_header(ByteRange::Span(65_536, 65_537), c).as_deref(), Some("bytes=65536-131151"));
        assert_eq!(upstream_header(ByteRange::From(131_072), c).as_deref(), Some("bytes=131072-"));
        // 8 MiB into an object (a part boundary of awscli and boto3 downloads).
        let a = 8 << 20;
        assert_eq!(upstream_header(ByteRange::Span(a, 2 * a - 1), c), Some(format!("bytes={a}-{}", 256 * sealed - 1)));
        for a in [0, 1, 39, 40, 65_535, 65_536, 65_575, 65_576, 65_577, 100 << 20, 10 << 30] {
            for range in [ByteRange::Span(a, a + 10), ByteRange::From(a)] {
                let header = upstream_header(range, c).unwrap();
                let start: u64 = header.trim_start_matches("bytes=").split('-').next().unwrap().parse().unwrap();
                let chunk_start = chunk_offset(a / 65_536, c).unwrap();
                // The chunk holding `a`, never more than one sealed chunk before it.
                assert!(start <= chunk_start && chunk_start - start < sealed, "{range:?}: {header}");
                assert_eq!(covers_unsealed(range, c), start <= a, "{range:?}: {header}");
                if a < 100 << 20 {
                    assert!(covers_unsealed(range, c), "{range:?}: {header}");
                }
            }
        }
        // Past C² / 40 the offset lies more than a sealed chunk before its chunk.
        assert!(!covers_unsealed(ByteRange::From(10 << 30), c));
        assert_eq!(unsealed_header(ByteRange::From(10 << 30)), format!("bytes={}-", 10u64 << 30));
        assert_eq!(unsealed_header(ByteRange::Span(3, 9)), "bytes=3-9");
    }

    #[test]
    fn resolves_like_s3() {
        assert_eq!(resolve(ByteRange::Span(0, 99), 10), Some((0, 9)));
        assert_eq!(resolve(ByteRange::Span(10, 12), 10), None);
        assert_eq!(resolve(ByteRange::From(9), 10), Some((9, 9)));
        assert_eq!(resolve(ByteRange::Suffix(20), 10), Some((0, 9)));
        assert_eq!(resolve(ByteRange::Suffix(0), 10), None);
        assert_eq!(resolve(ByteRange::From(0), 0), None);
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
    }
}
