//! One stored object in and out of format v1, streaming: decrypt (or only
//! authenticate) from any reader, encrypt into the body and envelope the
//! gateway would store. Only the filter crate's codec is used; this file adds
//! the whole-object checks a reader of FORMAT.md must make around it.

use anyhow::{bail, Context, Result};
use s3crypt_filter::cipher::{Suite, KEY_LEN};
use s3crypt_filter::envelope::{Envelope, EnvelopeError, Keyring, METADATA_HEADER};
use s3crypt_filter::sizes;
use s3crypt_filter::stream::{ChunkHeader, ChunkOpener, ReadWindow, SegmentSealer, StreamError, CHUNK_OVERHEAD, HEADER_LEN};
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

/// Read and write in pieces of this size: memory stays at a few chunks
/// whatever the object's size.
pub const IO_BUF: usize = 256 * 1024;

/// Envelope errors as FORMAT.md names them, with what to do about them.
pub fn envelope_error(e: &EnvelopeError) -> String {
    match e {
        EnvelopeError::Malformed => "malformed: the x-amz-meta-s3crypt value is not a valid v1 envelope".into(),
        EnvelopeError::UnsupportedVersion => "unsupported_version: the envelope names a format version this tool does not know".into(),
        EnvelopeError::UnknownKeyId(id) => format!("unknown_key_id: no key with id {id:?} in the configuration (add it to \"keys\")"),
        EnvelopeError::UnwrapFailed(id) => format!("unwrap_failed: key {id:?} does not unwrap this object's data key (wrong key material, or the envelope was altered)"),
        EnvelopeError::RandomUnavailable => "the operating system's random generator failed".into(),
        EnvelopeError::KmsWrapped => "kms_wrapped: a strict-KMS object (kms=): its data key is unwrapped only by the KMS, with the object's bucket and key as encryption context (FORMAT.md, \"KMS-wrapped data keys\"), not by a key in \"keys\"".into(),
    }
}

/// An object's data key from the KEK its envelope names (`w=` envelopes).
pub fn unwrap_with_keyring(keyring: &Keyring, envelope: &Envelope) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    keyring.open(envelope).map_err(|e| anyhow::anyhow!(envelope_error(&e)))
}

pub fn parse_envelope(value: &str) -> Result<Envelope> {
    Envelope::parse(value).map_err(|e| anyhow::anyhow!(envelope_error(&e)))
}

/// The envelope value from a metadata file: a JSON object as `aws s3api
/// head-object` prints it (`{"Metadata": {"s3crypt": ...}}`) or as
/// `--metadata` takes it (`{"s3crypt": ...}`), header lines
/// (`x-amz-meta-s3crypt: v=1;...`), or the bare value.
pub fn envelope_from_metadata_text(text: &str) -> Result<String> {
    let text = text.trim();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).context("metadata file: invalid JSON")?;
        let maps = [value.get("Metadata").or_else(|| value.get("metadata")), Some(&value)];
        for map in maps.into_iter().flatten() {
            if let Some(obj) = map.as_object() {
                for (name, v) in obj {
                    let name = name.to_ascii_lowercase();
                    if name == "s3crypt" || name == METADATA_HEADER {
                        return v.as_str().map(str::to_owned).context("metadata file: the s3crypt value is not a string");
                    }
                }
            }
        }
        bail!("metadata file: no \"s3crypt\" entry (the object has no s3crypt envelope, or this is not its metadata)");
    }
    if text.starts_with("v=") {
        return Ok(text.to_owned());
    }
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case(METADATA_HEADER) {
                return Ok(value.trim().to_owned());
            }
        }
    }
    bail!("metadata file: no {METADATA_HEADER} line, JSON metadata or envelope value found")
}

/// A whole stored object being decrypted: the chunk codec plus the checks
/// that tie it to its envelope (FORMAT.md, "Reading rules").
pub struct ObjectDecryptor {
    opener: ChunkOpener,
    /// `n` from the envelope, checked against what the chunks hold.
    expected_plaintext: Option<u64>,
    produced: u64,
}

impl ObjectDecryptor {
    /// `dek`: the object's data key, unwrapped first (an altered `n` is an
    /// altered envelope, `unwrap_failed`, before any length check).
    pub fn new(dek: Zeroizing<[u8; KEY_LEN]>, envelope: &Envelope, stored_len: u64) -> Result<ObjectDecryptor> {
        if let Some(n) = envelope.plaintext_len {
            if sizes::ciphertext_len(n, envelope.chunk_size) != Some(stored_len) {
                bail!(
                    "{}: the envelope records {n} plaintext bytes, which are stored in {} bytes, but the object has {stored_len} (truncated or extended)",
                    StreamError::LengthMismatch,
                    sizes::ciphertext_len(n, envelope.chunk_size).map_or("more than 2^64".into(), |t| t.to_string())
                );
            }
        }
        let opener = ChunkOpener::new(dek, envelope.suite, envelope.chunk_size, ReadWindow::whole(stored_len));
        Ok(ObjectDecryptor { opener, expected_plaintext: envelope.plaintext_len, produced: 0 })
    }

    /// Authenticates `data` and appends the plaintext of every chunk it completes.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let before = out.len();
        // Chunks before a failing one in the same piece did authenticate.
        let result = self.opener.push(data, out);
        self.produced += (out.len() - before) as u64;
        result
    }

    /// The object ended: everything announced arrived and the last chunk was final.
    pub fn finish(mut self) -> Result<u64, StreamError> {
        self.opener.finish()?;
        match self.expected_plaintext {
            Some(n) if n != self.produced => Err(StreamError::LengthMismatch),
            _ => Ok(self.produced),
        }
    }
}

/// Decrypts a whole object from `input` into `output` (or only authenticates
/// it when `output` is `None`). Plaintext is written chunk by chunk once
/// authenticated; a failure at the end (a cut object) is still an error, so a
/// caller writing to a file removes it.
pub fn decrypt_stream(dek: Zeroizing<[u8; KEY_LEN]>, envelope: &Envelope, stored_len: u64, input: &mut dyn Read, mut output: Option<&mut dyn Write>) -> Result<u64> {
    let mut decryptor = ObjectDecryptor::new(dek, envelope, stored_len)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut plain = Vec::with_capacity(IO_BUF + envelope.chunk_size as usize);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the stored object"),
        };
        let piece = buf.get(..n).unwrap_or_default();
        decryptor.push(piece, &mut plain).map_err(|e| stream_failure(e, decryptor.produced))?;
        if let Some(out) = output.as_mut() {
            out.write_all(&plain).context("writing the plaintext")?;
        }
        plain.clear();
    }
    let authenticated = decryptor.produced;
    let total = decryptor.finish().map_err(|e| stream_failure(e, authenticated))?;
    if let Some(out) = output.as_mut() {
        out.flush().context("writing the plaintext")?;
    }
    Ok(total)
}

fn stream_failure(e: StreamError, authenticated: u64) -> anyhow::Error {
    let why = match e {
        StreamError::ChunkAuthFailed => "a chunk failed authentication (modified bytes, another object's chunk, or the wrong key)",
        StreamError::BadChunkHeader => "a chunk header is invalid",
        StreamError::ChunkOutOfOrder => "a chunk is out of order (reordered, duplicated, dropped or spliced)",
        StreamError::Truncated => "the object ends before its final chunk",
        StreamError::TrailingData => "bytes follow the object's final chunk",
        StreamError::LengthMismatch => "the plaintext length differs from the one recorded in the envelope",
        _ => "the object cannot be decrypted",
    };
    anyhow::anyhow!("{e}: {why}, after {authenticated} plaintext bytes that authenticated")
}

/// What encrypting produced: the envelope value to store as `x-amz-meta-s3crypt`.
pub struct Encrypted {
    pub envelope: Envelope,
}

/// Encrypts `plaintext_len` bytes from `input` as one PutObject would: part 0,
/// a fresh data key wrapped under the keyring's active key, `n` recorded.
pub fn encrypt_stream(keyring: &Keyring, suite: Suite, chunk_size: u32, plaintext_len: u64, input: &mut dyn Read, output: &mut dyn Write) -> Result<Encrypted> {
    let (envelope, dek) = keyring.new_object(suite, chunk_size, Some(plaintext_len)).map_err(|e| anyhow::anyhow!(envelope_error(&e)))?;
    let mut sealer = SegmentSealer::new(&dek, suite, 0, chunk_size as usize, plaintext_len).map_err(|e| anyhow::anyhow!("cannot start encrypting: {e}"))?;
    let mut buf = vec![0u8; IO_BUF];
    let mut sealed = Vec::with_capacity(IO_BUF + 2 * (chunk_size as usize + CHUNK_OVERHEAD));
    let mut read: u64 = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the plaintext"),
        };
        read += n as u64;
        sealer.push(buf.get(..n).unwrap_or_default(), &mut sealed).map_err(|_| length_error(plaintext_len, read))?;
        output.write_all(&sealed).context("writing the encrypted object")?;
        sealed.clear();
    }
    sealer.finish(&mut sealed).map_err(|_| length_error(plaintext_len, read))?;
    output.write_all(&sealed).context("writing the encrypted object")?;
    output.flush().context("writing the encrypted object")?;
    Ok(Encrypted { envelope })
}

fn length_error(declared: u64, read: u64) -> anyhow::Error {
    if read > declared {
        anyhow::anyhow!("the input is longer than the declared {declared} bytes")
    } else {
        anyhow::anyhow!("the input ended after {read} of the declared {declared} bytes")
    }
}

/// The chunk layout of a stored object, read from its clear chunk headers
/// alone (no key needed): which segments (parts) it has and how many chunks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// (part number, chunks, plaintext bytes) per segment, in stored order.
    pub segments: Vec<(u32, u64, u64)>,
    /// Why the walk stopped early, if it did.
    pub problem: Option<String>,
}

/// Walks the chunk headers of a stored object. `skip` must move `input`
/// forward by the given number of bytes (a seek on files).
pub fn walk_layout(input: &mut dyn Read, skip: &mut dyn FnMut(&mut dyn Read, u64) -> io::Result<u64>) -> Result<Layout> {
    let mut layout = Layout::default();
    let mut header = [0u8; HEADER_LEN];
    loop {
        let got = read_full(input, &mut header).context("reading a chunk header")?;
        if got == 0 {
            break;
        }
        if got < HEADER_LEN {
            layout.problem = Some(format!("{}: the object ends inside a chunk header", StreamError::Truncated));
            break;
        }
        let h = match ChunkHeader::decode(&header) {
            Ok(h) => h,
            Err(e) => {
                layout.problem = Some(format!("{e}: unknown flags in a chunk header"));
                break;
            }
        };
        let body = u64::from(h.len) + (CHUNK_OVERHEAD - HEADER_LEN) as u64;
        if skip(input, body).context("reading a chunk")? != body {
            layout.problem = Some(format!("{}: the object ends inside a chunk", StreamError::Truncated));
            break;
        }
        match layout.segments.last_mut() {
            Some((part, chunks, plain)) if *part == h.part && h.index != 0 => {
                *chunks += 1;
                *plain += u64::from(h.len);
            }
            _ => layout.segments.push((h.part, 1, u64::from(h.len))),
        }
    }
    Ok(layout)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use s3crypt_filter::envelope::Kek;

    const C: u32 = 16_384;

    fn keyring(id: &str, byte: u8) -> Keyring {
        Keyring::new(vec![Kek::new(id.into(), Zeroizing::new([byte; 32]))], id).unwrap()
    }

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn encrypt(ring: &Keyring, suite: Suite, data: &[u8]) -> (Vec<u8>, Envelope) {
        let mut out = Vec::new();
        let e = encrypt_stream(ring, suite, C, data.len() as u64, &mut &data[..], &mut out).unwrap();
        assert_eq!(sizes::ciphertext_len(data.len() as u64, C), Some(out.len() as u64));
        (out, e.envelope)
    }

    fn decrypt(ring: &Keyring, env: &Envelope, stored: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        decrypt_stream(unwrap_with_keyring(ring, env)?, env, stored.len() as u64, &mut &stored[..], Some(&mut out))?;
        Ok(out)
    }

    /// A multipart object as the gateway completes it: one segment per part,
    /// every part but the last a whole number of chunks.
    fn multipart(ring: &Keyring, suite: Suite, parts: &[&[u8]]) -> (Vec<u8>, Envelope) {
        let (env, dek) = ring.new_object(suite, C, None).unwrap();
        let mut stored = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let mut s = SegmentSealer::new(&dek, suite, i as u32 + 1, C as usize, part.len() as u64).unwrap();
            s.push(part, &mut stored).unwrap();
            s.finish(&mut stored).unwrap();
        }
        (stored, env)
    }

    #[test]
    fn round_trip_both_suites_around_chunk_boundaries() {
        let ring = keyring("k", 1);
        for suite in [Suite::ChaCha20Poly1305, Suite::Aes256Gcm] {
            for len in [0, 1, C as usize - 1, C as usize, C as usize + 1, 3 * C as usize + 7] {
                let data = plaintext(len);
                let (stored, env) = encrypt(&ring, suite, &data);
                assert_eq!(env.plaintext_len, Some(len as u64));
                assert_eq!(stored.len() as u64, sizes::ciphertext_len(len as u64, C).unwrap());
                assert_eq!(decrypt(&ring, &Envelope::parse(&env.encode()).unwrap(), &stored).unwrap(), data, "{suite:?} {len}");
            }
        }
    }

    #[test]
    fn multipart_objects_decrypt() {
        let ring = keyring("k", 1);
        let a = plaintext(2 * C as usize);
        let b = plaintext(C as usize);
        let c = plaintext(100);
        for suite in [Suite::ChaCha20Poly1305, Suite::Aes256Gcm] {
            let (stored, env) = multipart(&ring, suite, &[&a, &b, &c]);
            assert_eq!(decrypt(&ring, &env, &stored).unwrap(), [a.clone(), b.clone(), c.clone()].concat());
            let mut file = &stored[..];
            let layout = walk_layout(&mut file, &mut |r, n| io::copy(&mut r.take(n), &mut io::sink())).unwrap();
            assert_eq!(layout, Layout { segments: vec![(1, 2, 2 * u64::from(C)), (2, 1, u64::from(C)), (3, 1, 100)], problem: None });
        }
    }

    #[test]
    fn multipart_objects_with_odd_part_sizes_still_decrypt() {
        // Completed around the gateway (FORMAT.md): each part's last chunk
        // carries its length, so the tool reads what the gateway refuses to serve.
        let ring = keyring("k", 1);
        let (a, b) = (plaintext(C as usize + 5), plaintext(7));
        let (stored, env) = multipart(&ring, Suite::Aes256Gcm, &[&a, &b]);
        let whole = [a, b].concat();
        assert_ne!(sizes::plaintext_len(stored.len() as u64, C), Some(whole.len() as u64));
        assert_eq!(decrypt(&ring, &env, &stored).unwrap(), whole);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let ring = keyring("k", 1);
        let (stored, env) = encrypt(&ring, Suite::Aes256Gcm, &plaintext(C as usize + 10));
        for i in (0..stored.len()).step_by(97).chain([0, 23, 24, stored.len() - 1]) {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            let mut sink = io::sink();
            assert!(decrypt_stream(unwrap_with_keyring(&ring, &env).unwrap(), &env, bad.len() as u64, &mut &bad[..], Some(&mut sink)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn cut_extended_and_foreign_objects_are_refused() {
        let ring = keyring("k", 1);
        let (stored, env) = encrypt(&ring, Suite::ChaCha20Poly1305, &plaintext(2 * C as usize + 5));
        let cut = &stored[..stored.len() - 1];
        assert!(decrypt(&ring, &env, cut).unwrap_err().to_string().starts_with("length_mismatch"));
        let mut longer = stored.clone();
        longer.push(0);
        assert!(decrypt(&ring, &env, &longer).is_err());
        // Without `n` (multipart), a cut inside the last part is still caught;
        // dropping whole trailing parts is FORMAT.md's documented limit.
        let (mp, mp_env) = multipart(&ring, Suite::ChaCha20Poly1305, &[&plaintext(C as usize), &plaintext(10)]);
        let err = decrypt(&ring, &mp_env, &mp[..mp.len() - 1]).unwrap_err().to_string();
        assert!(err.starts_with("truncated"), "{err}");
        assert_eq!(decrypt(&ring, &mp_env, &mp[..C as usize + CHUNK_OVERHEAD]).map(|p| p.len()).ok(), Some(C as usize));
        // A stream shorter than the length it announced.
        let mut sink = io::sink();
        let err = decrypt_stream(unwrap_with_keyring(&ring, &mp_env).unwrap(), &mp_env, mp.len() as u64 + 41, &mut &mp[..], Some(&mut sink)).unwrap_err().to_string();
        assert!(err.starts_with("truncated"), "{err}");
        // Another key, another key id.
        let err = decrypt(&keyring("k", 2), &env, &stored).unwrap_err().to_string();
        assert!(err.starts_with("unwrap_failed"), "{err}");
        let err = decrypt(&keyring("other", 1), &env, &stored).unwrap_err().to_string();
        assert!(err.starts_with("unknown_key_id"), "{err}");
    }

    #[test]
    fn encrypt_checks_the_declared_length() {
        let ring = keyring("k", 1);
        let data = plaintext(100);
        let mut out = Vec::new();
        assert!(encrypt_stream(&ring, Suite::Aes256Gcm, C, 101, &mut &data[..], &mut out).is_err());
        let mut out = Vec::new();
        assert!(encrypt_stream(&ring, Suite::Aes256Gcm, C, 99, &mut &data[..], &mut out).is_err());
    }

    #[test]
    fn metadata_files_in_every_accepted_shape() {
        let v = "v=1;s=aes-256-gcm;c=65536;k=a;w=x";
        for text in [
            format!(r#"{{"AcceptRanges":"bytes","Metadata":{{"owner":"ops","s3crypt":"{v}"}}}}"#),
            format!(r#"{{"s3crypt":"{v}"}}"#),
            format!(r#"{{"x-amz-meta-s3crypt":"{v}"}}"#),
            format!("content-type: text/plain\nX-Amz-Meta-S3crypt: {v}\n"),
            format!("{v}\n"),
        ] {
            assert_eq!(envelope_from_metadata_text(&text).unwrap(), v, "{text}");
        }
        assert!(envelope_from_metadata_text(r#"{"Metadata":{"owner":"ops"}}"#).is_err());
        assert!(envelope_from_metadata_text("hello").is_err());
    }

    #[test]
    fn filter_vectors_decrypt() {
        // The format's own vectors (filter/testdata/v1): every `ok` vector
        // decrypts to its recorded plaintext, every other one is refused.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter/testdata/v1");
        let (mut seen, mut kms_seen) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("vec") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
            let head = std::str::from_utf8(&bytes[..split]).unwrap();
            let body = &bytes[split + 2..];
            let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::to_owned);
            let (Some(expect), Some(kek), Some(envelope)) = (field("expect"), field("kek"), field("envelope")) else { continue };
            let mut key = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(&kek, key.as_mut_slice()).unwrap();
            let env = match Envelope::parse(&envelope) {
                Ok(env) => env,
                Err(_) => {
                    assert_ne!(expect, "ok", "{path:?}");
                    continue;
                }
            };
            let ring = Keyring::new(vec![Kek::new(env.key_id.clone(), key)], &env.key_id).unwrap();
            let mut result = decrypt(&ring, &env, body);
            if field("kms_context").is_some() {
                // A strict-KMS object: no KEK unwraps its data key; with the
                // one the KMS gives (the vector's `dek`), it reads as any other.
                let err = result.expect_err(&format!("{path:?} needs the KMS")).to_string();
                assert!(err.starts_with("kms_wrapped:"), "{path:?}: {err}");
                let mut dek = Zeroizing::new([0u8; KEY_LEN]);
                hex::decode_to_slice(field("dek").unwrap(), dek.as_mut_slice()).unwrap();
                let mut out = Vec::new();
                result = decrypt_stream(dek, &env, body.len() as u64, &mut &body[..], Some(&mut out)).map(|_| out);
                kms_seen += 1;
            }
            if expect == "ok" {
                let plain = result.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                use sha2::Digest;
                assert_eq!(Some(hex::encode(sha2::Sha256::digest(&plain))), field("plaintext_sha256"), "{path:?}");
            } else {
                let err = result.expect_err(&format!("{path:?} should fail")).to_string();
                assert!(err.starts_with(&format!("{expect}:")), "{path:?}: expected {expect}, got {err}");
            }
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} vectors read");
        assert!(kms_seen >= 1, "no kms_* vector read");
    }
}
