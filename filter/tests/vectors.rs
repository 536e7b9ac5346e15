//! FORMAT.md test vectors: fixed keys, salts and nonces giving exact bytes.
//!
//! Each file in `testdata/v1/` is a text header, a blank line, then the
//! stored object's raw bytes (see FORMAT.md, "Test vectors"). This test
//! rebuilds every passing vector from its inputs and checks the bytes, and
//! decrypts every vector (passing and failing) expecting what the header says.
//! `S3CRYPT_BLESS=1 cargo test --test vectors` rewrites the files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use s3crypt_filter::cipher::Suite;
use s3crypt_filter::envelope::{Envelope, Kek, Keyring, WrappedDek, WRAPPED_LEN};
use s3crypt_filter::sizes;
use s3crypt_filter::stream::{ChunkOpener, ReadWindow, SegmentSealer, StreamError, CHUNK_OVERHEAD, SALT_LEN};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

const KEK: [u8; 32] = [0x0b; 32];
const DEK: [u8; 32] = [0xd0; 32];
const WRAP_NONCE: [u8; 24] = [0x5e; 24];
const CHUNK: u32 = 16_384;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/v1")
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn salt(n: u8) -> [u8; SALT_LEN] {
    [n; SALT_LEN]
}

/// Seals `parts` (part number 0 for a single PutObject) and builds the envelope.
fn build(suite: Suite, parts: &[(u32, Vec<u8>)], len_in_envelope: bool) -> (Envelope, Vec<u8>) {
    let mut stored = Vec::new();
    for (i, (part, data)) in parts.iter().enumerate() {
        let mut sealer = SegmentSealer::with_salt(&DEK, suite, *part, CHUNK as usize, data.len() as u64, salt(i as u8 + 1));
        sealer.push(data, &mut stored).unwrap();
        sealer.finish(&mut stored).unwrap();
    }
    let total: u64 = parts.iter().map(|(_, d)| d.len() as u64).sum();
    let mut envelope = Envelope {
        suite,
        chunk_size: CHUNK,
        key_id: "vector-kek".into(),
        plaintext_len: len_in_envelope.then_some(total),
        wrapped_dek: WrappedDek::Kek([0; WRAPPED_LEN]),
        plaintext_md5: None,
    };
    Kek::new("vector-kek".into(), Zeroizing::new(KEK)).wrap_with_nonce(&DEK, &mut envelope, WRAP_NONCE).unwrap();
    (envelope, stored)
}

struct Vector {
    name: &'static str,
    expect: &'static str,
    kek: [u8; 32],
    envelope: Envelope,
    plaintext: Vec<u8>,
    stored: Vec<u8>,
    /// `kms_*` vectors: the encryption context of the stand-in blob.
    kms_context: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let sealed = CHUNK as usize + CHUNK_OVERHEAD;
    let mut out = Vec::new();
    let mut ok = |name, suite, parts: Vec<(u32, Vec<u8>)>, with_len| {
        let (envelope, stored) = build(suite, &parts, with_len);
        let plaintext = parts.iter().flat_map(|(_, d)| d.clone()).collect();
        out.push(Vector { name, expect: "ok", kek: KEK, envelope, plaintext, stored, kms_context: None });
    };
    ok("chacha20-poly1305_empty", Suite::ChaCha20Poly1305, vec![(0, vec![])], true);
    ok("chacha20-poly1305_one_byte", Suite::ChaCha20Poly1305, vec![(0, b"a".to_vec())], true);
    ok("chacha20-poly1305_two_chunks", Suite::ChaCha20Poly1305, vec![(0, plaintext(CHUNK as usize + 5))], true);
    ok("aes-256-gcm_one_full_chunk", Suite::Aes256Gcm, vec![(0, plaintext(CHUNK as usize))], true);
    ok("aes-256-gcm_three_chunks", Suite::Aes256Gcm, vec![(0, plaintext(2 * CHUNK as usize + 1))], true);
    ok("chacha20-poly1305_multipart_two_parts", Suite::ChaCha20Poly1305, vec![(1, plaintext(2 * CHUNK as usize)), (2, plaintext(7))], false);

    let base = |suite| build(suite, &[(0, plaintext(2 * CHUNK as usize + 1))], true);
    let mut bad = |name, expect, mutate: &dyn Fn(&mut Envelope, &mut Vec<u8>), kek: [u8; 32]| {
        let (mut envelope, mut stored) = base(Suite::ChaCha20Poly1305);
        mutate(&mut envelope, &mut stored);
        out.push(Vector { name, expect, kek, envelope, plaintext: plaintext(2 * CHUNK as usize + 1), stored, kms_context: None });
    };
    bad("bad_flipped_ciphertext_byte", "chunk_auth_failed", &|_, s| s[sealed + 100] ^= 1, KEK);
    bad("bad_flipped_tag_byte", "chunk_auth_failed", &|_, s| s[sealed - 1] ^= 1, KEK);
    bad("bad_flipped_length_field", "bad_chunk_header", &|_, s| s[2 * sealed + 23] ^= 1, KEK);
    bad("bad_truncated_at_chunk_boundary", "length_mismatch", &|_, s| s.truncate(2 * sealed), KEK);
    bad("bad_reordered_chunks", "chunk_out_of_order", &|_, s| {
        let (a, rest) = s.split_at_mut(sealed);
        a.swap_with_slice(&mut rest[..sealed]);
    }, KEK);
    bad("bad_wrong_kek", "unwrap_failed", &|_, _| {}, [0x0c; 32]);
    bad("bad_envelope_length_changed", "unwrap_failed", &|e, s| {
        e.plaintext_len = Some(2 * u64::from(CHUNK));
        s.truncate(2 * sealed);
    }, KEK);
    bad("bad_suite_changed", "unwrap_failed", &|e, _| e.suite = Suite::Aes256Gcm, KEK);

    // Strict KMS mode: the same chunks, the DEK as a KMS blob (a stand-in:
    // real blobs depend on the KMS).
    let data = plaintext(CHUNK as usize + 5);
    let (mut envelope, stored) = build(Suite::ChaCha20Poly1305, &[(0, data.clone())], true);
    envelope.key_id = "kms".into();
    envelope.wrapped_dek = WrappedDek::Kms(b"stand-in for a KMS CiphertextBlob".to_vec());
    let context = s3crypt_filter::kms::object_context("vector-bucket", "vector/key", &envelope.prefix());
    let kms_context = Some(serde_json::to_string(&context).unwrap());
    out.push(Vector { name: "kms_chacha20-poly1305_two_chunks", expect: "ok", kek: KEK, envelope, plaintext: data, stored, kms_context });
    out
}

/// Opens a vector the way the filter does: envelope, length, then chunks.
/// `kms_dek`: what the KMS would unwrap from a `kms=` envelope.
fn open(kek: [u8; 32], envelope_text: &str, stored: &[u8], kms_dek: [u8; 32]) -> Result<Vec<u8>, String> {
    let envelope = Envelope::parse(envelope_text).map_err(|e| format!("{e:?}"))?;
    let ring = Keyring::new(vec![Kek::new("vector-kek".into(), Zeroizing::new(kek))], "vector-kek").unwrap();
    let dek = match envelope.wrapped_dek {
        WrappedDek::Kms(_) => Zeroizing::new(kms_dek),
        WrappedDek::Kek(_) => ring.open(&envelope).map_err(|_| "unwrap_failed".to_string())?,
    };
    let plain_len = sizes::plaintext_len(stored.len() as u64, envelope.chunk_size).ok_or("length_mismatch")?;
    if envelope.plaintext_len.is_some_and(|n| n != plain_len) {
        return Err("length_mismatch".into());
    }
    let mut opener = ChunkOpener::new(dek, envelope.suite, envelope.chunk_size, ReadWindow::whole(stored.len() as u64));
    let mut out = Vec::new();
    opener.push(stored, &mut out).and_then(|_| opener.finish()).map_err(|e: StreamError| e.to_string())?;
    Ok(out)
}

fn render(v: &Vector) -> Vec<u8> {
    let mut text = String::new();
    text.push_str(&format!("expect: {}\n", v.expect));
    text.push_str(&format!("kek: {}\n", hex::encode(v.kek)));
    text.push_str(&format!("dek: {}\n", hex::encode(DEK)));
    text.push_str(&format!("envelope: {}\n", v.envelope.encode()));
    if let Some(context) = &v.kms_context {
        text.push_str(&format!("kms_context: {context}\n"));
    }
    text.push_str(&format!("plaintext_len: {}\n", v.plaintext.len()));
    text.push_str(&format!("plaintext_sha256: {}\n", hex::encode(Sha256::digest(&v.plaintext))));
    text.push('\n');
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&v.stored);
    bytes
}

fn parse_file(bytes: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    let split = bytes.windows(2).position(|w| w == b"\n\n").expect("header end");
    let header = std::str::from_utf8(&bytes[..split]).unwrap();
    let fields = header.lines().map(|l| l.split_once(": ").unwrap()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    (fields, bytes[split + 2..].to_vec())
}

#[test]
fn vectors_match_files_and_decrypt_as_expected() {
    let bless = std::env::var_os("S3CRYPT_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(dir()).unwrap();
    }
    for v in vectors() {
        let path = dir().join(format!("{}.vec", v.name));
        let rendered = render(&v);
        if bless {
            std::fs::write(&path, &rendered).unwrap();
        }
        let file = std::fs::read(&path).unwrap_or_else(|_| panic!("missing {path:?}; run with S3CRYPT_BLESS=1"));
        assert!(file == rendered, "{} differs from the code's output: the format changed", v.name);

        let (fields, stored) = parse_file(&file);
        let kek: [u8; 32] = hex::decode(&fields["kek"]).unwrap().try_into().unwrap();
        let dek: [u8; 32] = hex::decode(&fields["dek"]).unwrap().try_into().unwrap();
        let result = open(kek, &fields["envelope"], &stored, dek);
        match fields["expect"].as_str() {
            "ok" => {
                let plain = result.unwrap_or_else(|e| panic!("{}: {e}", v.name));
                assert_eq!(hex::encode(Sha256::digest(&plain)), fields["plaintext_sha256"], "{}", v.name);
                assert_eq!(plain.len().to_string(), fields["plaintext_len"]);
            }
            expected => assert_eq!(result.err().as_deref(), Some(expected), "{}", v.name),
        }
    }
}

#[test]
fn every_vector_file_is_known() {
    let names: Vec<String> = vectors().iter().map(|v| format!("{}.vec", v.name)).collect();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&name), "stray vector file {name}");
    }
}
