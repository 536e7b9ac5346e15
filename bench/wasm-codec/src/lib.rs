//! Exports for wasm_codec.mjs: seal and open a segment through the filter's
//! own `SegmentSealer` / `ChunkOpener`, inside the wasm VM, input pushed in
//! 1 MiB pieces and the output emptied after each, like the filter's body
//! callbacks. The caller times `seal` and `open` from JavaScript.

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
        let State { plain, sealed, out } = &mut *s;
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
        let State { plain, sealed, out } = &mut *s;
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
