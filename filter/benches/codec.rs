//! The codec alone, natively: sealing and opening a 64 MiB segment through
//! `SegmentSealer` / `ChunkOpener`, both suites, chunk sizes 16 KiB to 1 MiB.
//!
//! Input is pushed in 1 MiB pieces (the size Envoy most often hands a body
//! callback) and the output buffer is emptied after every piece, as the
//! filter does, so the working set stays near one piece whatever the object.
//!
//!     cargo bench -p s3crypt-filter --bench codec
//!
//! Results: criterion's usual text, and target/criterion/codec/<op>-<suite>/<chunk>/new/estimates.json
//! (bench/run.py turns the medians into MB/s for bench/RESULTS.md).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::stream::{ChunkOpener, ReadWindow, SegmentSealer};
use std::time::Duration;
use zeroize::Zeroizing;

const OBJECT: usize = 64 << 20;
const PIECE: usize = 1 << 20;
const CHUNKS: [usize; 4] = [16 << 10, 64 << 10, 256 << 10, 1 << 20];
const SUITES: [Suite; 2] = [Suite::ChaCha20Poly1305, Suite::Aes256Gcm];
const DEK: [u8; 32] = [0x42; 32];

fn plaintext() -> Vec<u8> {
    // Any bytes will do (the ciphers' speed does not depend on them); a cheap
    // xorshift keeps them from being all alike.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..OBJECT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn seal(suite: Suite, chunk: usize, plain: &[u8], out: &mut Vec<u8>, keep: bool) -> Result<(), String> {
    let mut sealer = SegmentSealer::with_salt(&DEK, suite, 0, chunk, plain.len() as u64, [7; 12]);
    for piece in plain.chunks(PIECE) {
        if !keep {
            out.clear();
        }
        sealer.push(piece, out).map_err(|e| e.to_string())?;
        black_box(out.len());
    }
    if !keep {
        out.clear();
    }
    sealer.finish(out).map_err(|e| e.to_string())
}

fn open(suite: Suite, chunk: usize, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let chunk = u32::try_from(chunk).map_err(|e| e.to_string())?;
    let mut opener = ChunkOpener::new(Zeroizing::new(DEK), suite, chunk, ReadWindow::whole(sealed.len() as u64));
    for piece in sealed.chunks(PIECE) {
        out.clear();
        opener.push(piece, out).map_err(|e| e.to_string())?;
        black_box(out.len());
    }
    opener.finish().map_err(|e| e.to_string())
}

fn codec(c: &mut Criterion) {
    let plain = plaintext();
    let mut group = c.benchmark_group("codec");
    // One iteration moves 64 MiB (tens of milliseconds): flat sampling, few samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(OBJECT as u64));
    let mut out = Vec::with_capacity(2 * PIECE);
    for suite in SUITES {
        for chunk in CHUNKS {
            group.bench_with_input(BenchmarkId::new(format!("seal-{}", suite.name()), chunk), &chunk, |b, &chunk| {
                b.iter(|| seal(suite, chunk, &plain, &mut out, false))
            });
            let mut sealed = Vec::with_capacity(OBJECT + OBJECT / chunk * 40 + 40);
            let mut check = Vec::with_capacity(OBJECT);
            let round_trip = seal(suite, chunk, &plain, &mut sealed, true).and_then(|()| {
                let chunk = u32::try_from(chunk).map_err(|e| e.to_string())?;
                let mut opener = ChunkOpener::new(Zeroizing::new(DEK), suite, chunk, ReadWindow::whole(sealed.len() as u64));
                opener.push(&sealed, &mut check).and_then(|()| opener.finish()).map_err(|e| e.to_string())
            });
            if round_trip.is_err() || check != plain {
                eprintln!("codec bench: {} {chunk}: round trip failed ({round_trip:?}); skipped", suite.name());
                continue;
            }
            group.bench_with_input(BenchmarkId::new(format!("open-{}", suite.name()), chunk), &chunk, |b, &chunk| {
                b.iter(|| open(suite, chunk, &sealed, &mut out))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
