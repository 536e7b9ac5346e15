//! Round trips and tampering of the v1 chunk stream, through the same
//! streaming APIs the filter uses, with body pieces split at many points.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use proptest::prelude::*;
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::sizes;
use s3crypt_filter::stream::{ChunkOpener, ReadWindow, SegmentSealer, StreamError, CHUNK_OVERHEAD, HEADER_LEN};
use zeroize::Zeroizing;

const DEK: [u8; 32] = [0x42; 32];
const C: u32 = 16_384;
const SUITES: [Suite; 2] = [Suite::ChaCha20Poly1305, Suite::Aes256Gcm];

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn seal_segment(suite: Suite, part: u32, data: &[u8], piece: usize) -> Vec<u8> {
    let mut sealer = SegmentSealer::new(&DEK, suite, part, C as usize, data.len() as u64).unwrap();
    let mut out = Vec::new();
    for p in data.chunks(piece.max(1)) {
        sealer.push(p, &mut out).unwrap();
    }
    sealer.finish(&mut out).unwrap();
    out
}

fn open_window(suite: Suite, stored: &[u8], window: ReadWindow, piece: usize) -> Result<Vec<u8>, StreamError> {
    let mut opener = ChunkOpener::new(Zeroizing::new(DEK), suite, C, window);
    let mut out = Vec::new();
    let received = &stored[window.start as usize..window.end as usize];
    for p in received.chunks(piece.max(1)) {
        opener.push(p, &mut out)?;
    }
    opener.finish()?;
    Ok(out)
}

fn open_all(suite: Suite, stored: &[u8], piece: usize) -> Result<Vec<u8>, StreamError> {
    open_window(suite, stored, ReadWindow::whole(stored.len() as u64), piece)
}

#[test]
fn round_trip_sizes_around_chunk_boundaries() {
    let c = C as usize;
    for suite in SUITES {
        for len in [0, 1, c - 1, c, c + 1, 2 * c - 1, 2 * c, 2 * c + 1, 5 * c + 17] {
            let data = plaintext(len);
            for piece in [1, 7, c - 1, c, c + 1, 3 * c + 5, 1 << 20] {
                if piece == 1 && len > 2 * c {
                    continue;
                }
                let stored = seal_segment(suite, 0, &data, piece);
                assert_eq!(stored.len() as u64, sizes::ciphertext_len(len as u64, C).unwrap(), "len {len}");
                assert_eq!(sizes::plaintext_len(stored.len() as u64, C), Some(len as u64));
                for read_piece in [1, 13, c + CHUNK_OVERHEAD, 1 << 20] {
                    if read_piece == 1 && len > 2 * c {
                        continue;
                    }
                    assert_eq!(open_all(suite, &stored, read_piece).unwrap(), data, "{suite:?} len {len} piece {piece}/{read_piece}");
                }
            }
        }
    }
}

#[test]
fn every_flipped_byte_is_detected_before_its_chunk_is_released() {
    let c = C as usize;
    let data = plaintext(2 * c + 100);
    for suite in SUITES {
        let stored = seal_segment(suite, 0, &data, 4096);
        // Flip one byte in each region of each chunk: header, body, tag.
        let sealed = c + CHUNK_OVERHEAD;
        for chunk in 0..3 {
            for offset in [0, 11, 12, 16, 20, 21, 23, HEADER_LEN, HEADER_LEN + 5, sealed - 1] {
                let at = chunk * sealed + offset;
                if at >= stored.len() {
                    continue;
                }
                let mut bad = stored.clone();
                bad[at] ^= 0x01;
                let mut opener = ChunkOpener::new(Zeroizing::new(DEK), suite, C, ReadWindow::whole(bad.len() as u64));
                let mut out = Vec::new();
                let result = opener.push(&bad, &mut out).and_then(|_| opener.finish());
                assert!(result.is_err(), "{suite:?} flip at {at} accepted");
                // Nothing from the damaged chunk (or after it) was released.
                assert!(out.len() <= chunk * c, "released {} bytes for a flip in chunk {chunk}", out.len());
                assert_eq!(&out[..], &data[..out.len()]);
            }
        }
    }
}

#[test]
fn truncation_at_a_chunk_boundary_is_detected_before_release() {
    let c = C as usize;
    let data = plaintext(3 * c);
    let stored = seal_segment(Suite::ChaCha20Poly1305, 0, &data, c);
    let sealed = c + CHUNK_OVERHEAD;
    for chunks_kept in 1..3 {
        let cut = &stored[..chunks_kept * sealed];
        let mut opener = ChunkOpener::new(Zeroizing::new(DEK), Suite::ChaCha20Poly1305, C, ReadWindow::whole(cut.len() as u64));
        let mut out = Vec::new();
        let result = opener.push(cut, &mut out);
        assert_eq!(result, Err(StreamError::Truncated));
        assert_eq!(out.len(), (chunks_kept - 1) * c, "the last kept chunk is not final and must not be released");
    }
    // A stream that stops short of its declared length.
    let mut opener = ChunkOpener::new(Zeroizing::new(DEK), Suite::ChaCha20Poly1305, C, ReadWindow::whole(stored.len() as u64));
    let mut out = Vec::new();
    opener.push(&stored[..sealed + 10], &mut out).unwrap();
    assert_eq!(opener.finish(), Err(StreamError::Truncated));
}

#[test]
fn reordered_duplicated_dropped_and_spliced_chunks_are_rejected() {
    let c = C as usize;
    let sealed = c + CHUNK_OVERHEAD;
    let data = plaintext(3 * c);
    let stored = seal_segment(Suite::ChaCha20Poly1305, 0, &data, c);
    let chunk = |i: usize| stored[i * sealed..(i + 1) * sealed].to_vec();
    let swapped = [chunk(1), chunk(0), chunk(2)].concat();
    let duplicated = [chunk(0), chunk(0), chunk(2)].concat();
    let dropped_middle = [chunk(0), chunk(2)].concat();
    // The same chunk position from another object under the same DEK
    // (another salt) and from another object's DEK.
    let other = seal_segment(Suite::ChaCha20Poly1305, 0, &plaintext(3 * c), c);
    let spliced = [chunk(0), other[sealed..2 * sealed].to_vec(), chunk(2)].concat();
    let mut trailing = stored.clone();
    trailing.extend_from_slice(&chunk(2));
    for (name, bad) in [("swapped", swapped), ("duplicated", duplicated), ("dropped", dropped_middle), ("spliced", spliced), ("trailing", trailing)] {
        let result = open_all(Suite::ChaCha20Poly1305, &bad, 1 << 20);
        assert!(result.is_err(), "{name} accepted");
    }
    // A whole object sealed under another DEK fails authentication.
    let mut opener = ChunkOpener::new(Zeroizing::new([0x43; 32]), Suite::ChaCha20Poly1305, C, ReadWindow::whole(stored.len() as u64));
    let mut out = Vec::new();
    assert_eq!(opener.push(&stored, &mut out), Err(StreamError::ChunkAuthFailed));
    assert!(out.is_empty());
    // And under the other suite.
    assert!(open_all(Suite::Aes256Gcm, &stored, 1 << 20).is_err());
}

#[test]
fn multipart_segments_concatenate() {
    let c = C as usize;
    let parts = [plaintext(2 * c), plaintext(2 * c), plaintext(100)];
    let stored: Vec<u8> = parts.iter().enumerate().flat_map(|(i, p)| seal_segment(Suite::Aes256Gcm, i as u32 + 1, p, 999)).collect();
    let all: Vec<u8> = parts.concat();
    // Parts that are whole chunks give the single-part size formula.
    assert_eq!(stored.len() as u64, sizes::ciphertext_len(all.len() as u64, C).unwrap());
    assert_eq!(open_all(Suite::Aes256Gcm, &stored, 5000).unwrap(), all);
    // Parts in the wrong order are refused.
    let sealed = c + CHUNK_OVERHEAD;
    let swapped = [&stored[2 * sealed..4 * sealed], &stored[..2 * sealed], &stored[4 * sealed..]].concat();
    assert!(open_all(Suite::Aes256Gcm, &swapped, 5000).is_err());
}

#[test]
fn sealer_refuses_wrong_lengths() {
    let mut sealer = SegmentSealer::new(&DEK, Suite::ChaCha20Poly1305, 0, C as usize, 10).unwrap();
    let mut out = Vec::new();
    assert_eq!(sealer.push(&[0; 11], &mut out), Err(StreamError::LengthMismatch));
    let mut sealer = SegmentSealer::new(&DEK, Suite::ChaCha20Poly1305, 0, C as usize, 10).unwrap();
    sealer.push(&[0; 9], &mut out).unwrap();
    assert_eq!(sealer.finish(&mut out), Err(StreamError::LengthMismatch));
}

#[test]
fn salts_differ_per_segment() {
    let a = seal_segment(Suite::ChaCha20Poly1305, 0, b"same", 4);
    let b = seal_segment(Suite::ChaCha20Poly1305, 0, b"same", 4);
    assert_ne!(a[..12], b[..12]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_sizes_pieces_and_ranges(len in 0usize..(5 * C as usize), piece in 1usize..70_000, read_piece in 1usize..70_000, suite_aes in any::<bool>(), a in any::<u64>(), b in any::<u64>()) {
        let suite = if suite_aes { Suite::Aes256Gcm } else { Suite::ChaCha20Poly1305 };
        let data = plaintext(len);
        let stored = seal_segment(suite, 0, &data, piece);
        prop_assert_eq!(&open_all(suite, &stored, read_piece).unwrap(), &data);
        if len > 0 {
            // A range read of whole chunks covering [a, b].
            let (a, b) = ((a % len as u64).min(b % len as u64), (a % len as u64).max(b % len as u64));
            let c = u64::from(C);
            let start = sizes::chunk_offset(a / c, C).unwrap();
            let end = sizes::chunk_offset(b / c + 1, C).unwrap().min(stored.len() as u64);
            let window = ReadWindow { object_len: stored.len() as u64, start, end, plain_start: a / c * c, want_start: a, want_end: b + 1 };
            prop_assert_eq!(&open_window(suite, &stored, window, read_piece).unwrap()[..], &data[a as usize..=b as usize]);
        }
    }
}
