//! `range::parse`, `parse_content_range`, `resolve` and `upstream_header`.
//!
//! Input: `chunk size index (1) || object length (u64 LE) || header text`.
//! Invariants, besides never panicking:
//! * `parse` gives `Span(a, b)` only with `a <= b`, and re-parses its own
//!   canonical form to the same range;
//! * `resolve` is S3's rule, and its span always lies inside the object;
//! * `upstream_header` is a range the same parser reads, starting on a chunk
//!   boundary or at the plaintext offset less than one sealed chunk before it
//!   (or a suffix), and the ciphertext it asks for covers every chunk holding
//!   the resolved plaintext span, for objects of any length; `None` only when
//!   the ciphertext offsets overflow u64;
//! * `covers_unsealed` says whether it starts at or before the plaintext offset;
//! * `parse_content_range` gives `s <= e < total`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt_filter::range::{self, ByteRange};
use s3crypt_filter::sizes;

const CHUNK_SIZES: [u32; 4] = [16_384, 65_536, 262_144, 1_048_576];
const OVERHEAD: u128 = 40;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let c = CHUNK_SIZES[usize::from(data[0]) % CHUNK_SIZES.len()];
    let len_bytes: [u8; 8] = data[1..9].try_into().unwrap_or_default();
    // Mostly plausible object sizes, sometimes any u64.
    let raw_len = u64::from_le_bytes(len_bytes);
    let len = if data[0] & 0x80 != 0 { raw_len } else { raw_len % (8 * u64::from(c) + 100) };
    let text = String::from_utf8_lossy(&data[9..]);

    if let Some((s, e, t)) = range::parse_content_range(&text) {
        assert!(s <= e && e < t, "content-range {s}-{e}/{t}");
    }
    let Some(r) = range::parse(&text) else { return };
    let canonical = match r {
        ByteRange::Span(a, b) => {
            assert!(a <= b);
            format!("bytes={a}-{b}")
        }
        ByteRange::From(a) => format!("bytes={a}-"),
        ByteRange::Suffix(n) => format!("bytes=-{n}"),
    };
    assert_eq!(range::parse(&canonical), Some(r), "{canonical} does not re-parse");

    // resolve: S3's rule, inside the object.
    let resolved = range::resolve(r, len);
    let expected = match r {
        _ if len == 0 => None,
        ByteRange::Span(a, b) if a < len => Some((a, b.min(len - 1))),
        ByteRange::From(a) if a < len => Some((a, len - 1)),
        ByteRange::Suffix(n) if n > 0 => Some((len - n.min(len), len - 1)),
        _ => None,
    };
    assert_eq!(resolved, expected, "resolve({r:?}, {len})");
    if let Some((a, b)) = resolved {
        assert!(a <= b && b < len);
    }

    // upstream_header: whole chunks covering the range.
    let cc = u128::from(c);
    let sealed = cc + OVERHEAD;
    let upstream = range::upstream_header(r, c);
    let Some(header) = upstream else {
        // Only when a ciphertext offset does not fit in u64.
        let needed = match r {
            ByteRange::Span(_, b) => (u128::from(b) / cc + 1) * sealed,
            ByteRange::From(a) => u128::from(a) / cc * sealed,
            ByteRange::Suffix(n) => (u128::from(n).div_ceil(cc) + 1) * sealed,
        };
        assert!(needed > u128::from(u64::MAX), "no upstream range for {r:?} at chunk size {c}");
        return;
    };
    let up = range::parse(&header).unwrap_or_else(|| panic!("upstream range {header:?} does not parse"));
    match (r, up) {
        (ByteRange::Span(a, _), ByteRange::Span(s, _)) | (ByteRange::From(a), ByteRange::From(s)) => {
            let chunk_start = u128::from(a) / cc * sealed;
            let (s, a) = (u128::from(s), u128::from(a));
            assert!(s == chunk_start || (s == a && a < chunk_start && chunk_start - a < sealed), "{header} starts neither on the chunk of {a} nor at {a} within a chunk of it");
            assert_eq!(range::covers_unsealed(r, c), s <= a, "covers_unsealed({r:?}) with {header}");
        }
        (ByteRange::Suffix(_), ByteRange::Suffix(_)) => {}
        _ => panic!("{r:?} became {up:?}"),
    }
    // For a stored object of the plaintext length `len`, the ciphertext the
    // backend returns (S3's rule again) must hold every chunk of the span.
    let (Some((a, b)), Some(total)) = (resolved, sizes::ciphertext_len(len, c)) else { return };
    let Some((s, e)) = range::resolve(up, total) else { panic!("{header} is unsatisfiable for a {total}-byte object holding {a}-{b}") };
    let first_chunk_start = u128::from(a) / cc * sealed;
    let last_chunk_end = ((u128::from(b) / cc + 1) * sealed).min(u128::from(total)) - 1;
    assert!(u128::from(s) <= first_chunk_start && u128::from(e) >= last_chunk_end, "{header} ({s}-{e} of {total}) misses chunks of plaintext {a}-{b}");
});
