//! Exports for wasm_codec.mjs: seal and open a segment through the filter's
//! own `SegmentSealer` / `ChunkOpener`, inside the wasm VM, input pushed in
//! 1 MiB pieces and the output emptied after each, like the filter's body
//! callbacks. The caller times `seal` and `open` from JavaScript.
//! `bench_ghash` times GHASH alone (ghash.mjs).

use s3crypt_filter::cipher::Suite;
use s3crypt_filter::stream::{ChunkOpener, ReadWindow, SegmentSealer};
use std::cell::RefCell;
use zeroize::Zeroizing;

const PIECE: usize = 1 << 20;
const DEK: [u8; 32] = [0x42; 32];

#[derive(Default)]
struct State {
    plain: Vec<u8>,
    sealed: Vec<u8>,
    out: Vec<u8>,
    /// The GHASH values of the last `bench_ghash`, XORed: kept so the work
    /// cannot be optimized away, and compared by `bench_ghash_check`.
    ghash_sum: [u8; 16],
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn suite(id: u32) -> Suite {
    if id == 2 {
        Suite::Aes256Gcm
    } else {
        Suite::ChaCha20Poly1305
    }
}

/// Makes `len` bytes of plaintext; returns 0.
#[no_mangle]
pub extern "C" fn bench_setup(len: u32) -> u32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        s.plain = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        s.out = Vec::with_capacity(2 * PIECE);
        0
    })
}

/// Seals the plaintext once (suite 1 = ChaCha20-Poly1305, 2 = AES-256-GCM);
/// `keep` = 1 stores the sealed segment for `open`. Returns 0, or 1 on error.
#[no_mangle]
pub extern "C" fn bench_seal(suite_id: u32, chunk: u32, keep: u32) -> u32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let State { plain, sealed, out, .. } = &mut *s;
        let mut sealer = SegmentSealer::with_salt(&DEK, suite(suite_id), 0, chunk as usize, plain.len() as u64, [7; 12]);
        if keep == 1 {
            sealed.clear();
            let ok = sealer.push(plain, sealed).and_then(|()| sealer.finish(sealed));
            return u32::from(ok.is_err());
        }
        for piece in plain.chunks(PIECE) {
            out.clear();
            if sealer.push(piece, out).is_err() {
                return 1;
            }
        }
        out.clear();
        u32::from(sealer.finish(out).is_err())
    })
}

/// Opens the segment kept by the last `bench_seal(.., 1)`. Returns 0, 1 on
/// error, 2 if the plaintext differs (checked only when `check` = 1).
#[no_mangle]
pub extern "C" fn bench_open(suite_id: u32, chunk: u32, check: u32) -> u32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let State { plain, sealed, out, .. } = &mut *s;
        let mut opener = ChunkOpener::new(Zeroizing::new(DEK), suite(suite_id), chunk, ReadWindow::whole(sealed.len() as u64));
        let mut at = 0usize;
        for piece in sealed.chunks(PIECE) {
            out.clear();
            if opener.push(piece, out).is_err() {
                return 1;
            }
            if check == 1 {
                if plain.get(at..at + out.len()) != Some(&out[..]) {
                    return 2;
                }
                at += out.len();
            }
        }
        if opener.finish().is_err() {
            return 1;
        }
        if check == 1 && at != plain.len() {
            return 2;
        }
        0
    })
}

/// H for bench_ghash (any value: GHASH's speed does not depend on it).
const GHASH_H: [u8; 16] = [0x66, 0xe9, 0x4b, 0xd4, 0xef, 0x8a, 0x2c, 0x3b, 0x88, 0x4c, 0xfa, 0x59, 0xca, 0x34, 0x2b, 0x2e];

/// GHASH over the plaintext in messages of `chunk` bytes, a fresh state per
/// message as AES-GCM has: `which` = 0 the `ghash` crate (what aes-gcm
/// uses), 1 `s3crypt_filter::ghash` (keyed once, `reset` per message).
/// Returns 0.
#[no_mangle]
pub extern "C" fn bench_ghash(which: u32, chunk: u32) -> u32 {
    use ghash::universal_hash::{KeyInit, UniversalHash};
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let State { plain, ghash_sum, .. } = &mut *s;
        let mut sum = [0u8; 16];
        let mut ours = s3crypt_filter::ghash::GHash::new(&GHASH_H);
        for message in plain.chunks(chunk.max(1) as usize) {
            let value: [u8; 16] = if which == 0 {
                let mut g = ghash::GHash::new(&GHASH_H.into());
                g.update_padded(message);
                g.finalize().into()
            } else {
                ours.reset();
                ours.update_padded(message);
                ours.finalize()
            };
            for (a, b) in sum.iter_mut().zip(value) {
                *a ^= b;
            }
        }
        *ghash_sum = sum;
        0
    })
}

/// Runs `bench_ghash` with both implementations: 0 if they agree, 2 if not.
#[no_mangle]
pub extern "C" fn bench_ghash_check(chunk: u32) -> u32 {
    bench_ghash(0, chunk);
    let expected = STATE.with(|s| s.borrow().ghash_sum);
    bench_ghash(1, chunk);
    STATE.with(|s| if s.borrow().ghash_sum == expected { 0 } else { 2 })
}

/// Keys `s3crypt_filter::ghash::GHash` `count` times (its tables for H to
/// H^4), to time `new` (plus a one-block update and the drop's zeroizing).
/// Each value keys the next, so no `new` is dead code. Returns 0.
#[no_mangle]
pub extern "C" fn bench_ghash_new(count: u32) -> u32 {
    let mut h = GHASH_H;
    for _ in 0..count {
        let mut g = s3crypt_filter::ghash::GHash::new(&h);
        g.update_padded(&[1]);
        h = g.finalize();
    }
    STATE.with(|s| s.borrow_mut().ghash_sum = h);
    0
}
