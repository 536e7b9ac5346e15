//! Helpers shared by the fuzz targets (FUZZING.md): split patterns, the
//! fixed keys the seed corpora are made with, and small reference
//! implementations used as oracles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The DEK of the FORMAT.md vectors (testdata/v1): seeds sealed with it are
/// valid objects for the `stream_open` target.
pub const DEK: [u8; 32] = [0xd0; 32];
/// A second data key: chunks sealed with it belong to "another object".
pub const OTHER_DEK: [u8; 32] = [0xd1; 32];
/// The KEK of the FORMAT.md vectors and of the configs the targets build.
pub const KEK: [u8; 32] = [0x0b; 32];
pub const KEK_ID: &str = "vector-kek";
pub const WRAP_NONCE: [u8; 24] = [0x5e; 24];

/// A tiny deterministic generator (xorshift64*): split points and fill
/// bytes derived from one fuzzer-chosen word, so a mutation of that word
/// explores another split pattern.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Splits `data` into pieces as Envoy might deliver a body: seed 0 gives the
/// whole body in one piece; other seeds mix empty pieces, 1-3 byte pieces,
/// small and large ones.
pub fn pieces(data: &[u8], seed: u64) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut rest = data;
    let mut empties = 0;
    while !rest.is_empty() {
        let r = rng.next();
        let n = match r % 8 {
            0 if empties < 4 => {
                empties += 1;
                0
            }
            0 | 1 | 2 => 1 + (r >> 8) as usize % 3,
            3 | 4 => (r >> 8) as usize % 64,
            5 => (r >> 8) as usize % 1024,
            _ => (r >> 8) as usize % (rest.len() + 1),
        };
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    if rng.next() % 4 == 0 {
        out.push(&[]);
    }
    out
}

/// Deterministic filler bytes.
pub fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The SigV4 chunk-signature chain, written here from the AWS pages
/// (sigv4-streaming.html, sigv4-streaming-trailers.html), independently of
/// the filter's `sigv4::ChunkSignatureChain`, which the targets check against it.
#[derive(Clone)]
pub struct ChunkSigner {
    key: [u8; 32],
    timestamp: String,
    scope: String,
    pub previous: String,
}

pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl ChunkSigner {
    pub fn new(secret: &str, date: &str, region: &str, timestamp: &str, seed: &str) -> ChunkSigner {
        let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac_sha256(&k, region.as_bytes());
        let k = hmac_sha256(&k, b"s3");
        let key = hmac_sha256(&k, b"aws4_request");
        ChunkSigner { key, timestamp: timestamp.into(), scope: format!("{date}/{region}/s3/aws4_request"), previous: seed.into() }
    }

    fn sign(&mut self, string_to_sign: &str) -> String {
        let s = hex::encode(hmac_sha256(&self.key, string_to_sign.as_bytes()));
        self.previous.clone_from(&s);
        s
    }

    pub fn chunk(&mut self, data: &[u8]) -> String {
        let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}", self.timestamp, self.scope, self.previous, hex::encode(sha256(data)));
        self.sign(&sts)
    }

    /// `canonical` is `name:value\n` per trailer, sorted by name.
    pub fn trailer(&mut self, canonical: &str) -> String {
        let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}", self.timestamp, self.scope, self.previous, hex::encode(sha256(canonical.as_bytes())));
        self.sign(&sts)
    }
}

/// Whether `out` is a prefix of the concatenation of some of `parts`, taken
/// in order (whole parts skipped, any number): what a reader of a multipart
/// object may release when whole parts were dropped from the stored object.
pub fn is_prefix_of_ordered_subsequence(out: &[u8], parts: &[Vec<u8>]) -> bool {
    if out.is_empty() {
        return true;
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if out.len() <= part.len() {
            if part.starts_with(out) {
                return true;
            }
        } else if out.starts_with(part) && is_prefix_of_ordered_subsequence(&out[part.len()..], &parts[i + 1..]) {
            return true;
        }
    }
    false
}

/// Whether `data` is the concatenation of some of `segments`, in order.
/// Returns the indexes used.
pub fn as_ordered_subsequence(data: &[u8], segments: &[Vec<u8>]) -> Option<Vec<usize>> {
    fn walk(data: &[u8], segments: &[Vec<u8>], from: usize, used: &mut Vec<usize>) -> bool {
        if data.is_empty() {
            return true;
        }
        for i in from..segments.len() {
            let s = &segments[i];
            if !s.is_empty() && data.starts_with(s) {
                used.push(i);
                if walk(&data[s.len()..], segments, i + 1, used) {
                    return true;
                }
                used.pop();
            }
        }
        false
    }
    let mut used = Vec::new();
    walk(data, segments, 0, &mut used).then_some(used)
}
