//! GET/HEAD response planning against stored objects built with the real
//! sealer: whole reads, ranges, partNumber reads of multipart objects, and
//! objects whose size does not match their chunks.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::cast_possible_truncation, clippy::panic)]

use s3crypt_filter::config::{self, Settings};
use s3crypt_filter::envelope::METADATA_HEADER;
use s3crypt_filter::read::{self, BodyPlan};
use s3crypt_filter::stream::SegmentSealer;

const C: usize = 16_384;

fn settings() -> Settings {
    let json = format!(r#"{{"keys":[{{"id":"k","key_hex":"{}"}}],"chunk_size":{C}}}"#, "ab".repeat(32));
    config::parse(json.as_bytes(), &|_| None).unwrap()
}

/// A stored multipart object: (envelope value, stored bytes, plaintext of each part).
fn multipart(settings: &Settings, part_sizes: &[usize]) -> (String, Vec<u8>, Vec<Vec<u8>>) {
    let (envelope, dek) = settings.keyring.new_object(settings.suite, C as u32, None).unwrap();
    let mut stored = Vec::new();
    let mut parts = Vec::new();
    for (i, &size) in part_sizes.iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
        let mut sealer = SegmentSealer::new(&dek, settings.suite, i as u32 + 1, C, size as u64).unwrap();
        sealer.push(&data, &mut stored).unwrap();
        sealer.finish(&mut stored).unwrap();
        parts.push(data);
    }
    (envelope.encode(), stored, parts)
}

fn headers(status: u16, envelope: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut h = vec![(":status".to_string(), status.to_string()), (METADATA_HEADER.to_string(), envelope.to_string()), ("etag".to_string(), "\"abc-2\"".to_string())];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    h
}

fn header<'a>(edits: &'a [(String, String)], name: &str) -> Option<&'a str> {
    edits.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn run(body: &mut BodyPlan, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for piece in bytes.chunks(7_000) {
        body.push(piece, &mut out).map_err(|e| e.to_string())?;
    }
    body.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn part_number_read_of_a_multipart_object() {
    let s = settings();
    let (envelope, stored, parts) = multipart(&s, &[4 * C, 4 * C, 1000]);
    let sealed_part = 4 * (C + 40);
    let plain_total: usize = parts.iter().map(Vec::len).sum();
    let request = read::ReadRequest { part_number: true, aligned_to: C as u32, ..Default::default() };
    for (n, (from, to)) in [(0, sealed_part), (sealed_part, 2 * sealed_part), (2 * sealed_part, stored.len())].into_iter().enumerate() {
        let h = headers(206, &envelope, &[("content-range", format!("bytes {}-{}/{}", from, to - 1, stored.len())), ("content-length", (to - from).to_string())]);
        let mut plan = read::plan_response(&h, &request, &s, None).unwrap();
        assert_eq!(plan.status, Some(206));
        let plain_from = n * 4 * C;
        let plain_to = plain_from + parts[n].len();
        assert_eq!(header(&plan.edits.set, "content-range"), Some(format!("bytes {}-{}/{}", plain_from, plain_to - 1, plain_total).as_str()));
        assert_eq!(header(&plan.edits.set, "content-length"), Some(parts[n].len().to_string().as_str()));
        assert_eq!(run(&mut plan.body, &stored[from..to]).unwrap(), parts[n], "part {}", n + 1);
    }
}

#[test]
fn whole_multipart_object_and_a_range_across_parts() {
    let s = settings();
    let (envelope, stored, parts) = multipart(&s, &[2 * C, 2 * C, 5]);
    let whole = parts.concat();
    let h = headers(200, &envelope, &[("content-length", stored.len().to_string())]);
    let mut plan = read::plan_response(&h, &read::ReadRequest { aligned_to: C as u32, ..Default::default() }, &s, None).unwrap();
    assert_eq!(header(&plan.edits.set, "content-length"), Some(whole.len().to_string().as_str()));
    assert_eq!(run(&mut plan.body, &stored).unwrap(), whole);

    // bytes=(2C-3)-(2C+3): chunks 1 and 2, in parts 1 and 2.
    let (a, b) = (2 * C - 3, 2 * C + 3);
    let request = read::ReadRequest { range: Some(read_range(a, b)), aligned_to: C as u32, ..Default::default() };
    let (from, to) = (C + 40, 3 * (C + 40));
    let h = headers(206, &envelope, &[("content-range", format!("bytes {}-{}/{}", from, to - 1, stored.len()))]);
    let mut plan = read::plan_response(&h, &request, &s, None).unwrap();
    assert_eq!(run(&mut plan.body, &stored[from..to]).unwrap(), whole[a..=b]);
}

fn read_range(a: usize, b: usize) -> s3crypt_filter::range::ByteRange {
    s3crypt_filter::range::ByteRange::Span(a as u64, b as u64)
}

#[test]
fn odd_part_sizes_never_pass_as_complete() {
    // Parts that are not whole chunks: the stored size maps to another
    // plaintext size; the read must fail rather than deliver a short body.
    let s = settings();
    let (envelope, stored, _) = multipart(&s, &[C + 1, 1]);
    let h = headers(200, &envelope, &[("content-length", stored.len().to_string())]);
    match read::plan_response(&h, &read::ReadRequest { aligned_to: C as u32, ..Default::default() }, &s, None) {
        Err(e) => assert_eq!(e.status, 500),
        Ok(mut plan) => assert!(run(&mut plan.body, &stored).is_err()),
    }
}

#[test]
fn wrong_key_is_refused_before_the_body() {
    let s = settings();
    let (envelope, stored, _) = multipart(&s, &[10]);
    let other = config::parse(format!(r#"{{"keys":[{{"id":"k","key_hex":"{}"}}]}}"#, "cd".repeat(32)).as_bytes(), &|_| None).unwrap();
    let h = headers(200, &envelope, &[("content-length", stored.len().to_string())]);
    let err = read::plan_response(&h, &read::ReadRequest::default(), &other, None).err().unwrap();
    assert_eq!((err.status, err.code), (403, "AccessDenied"));
}

#[test]
fn kms_envelopes_read_with_the_kms_data_key_only() {
    use s3crypt_filter::envelope::{Envelope, WrappedDek};
    let s = settings();
    let (kek_envelope, stored, parts) = multipart(&s, &[2 * C, 5]);
    // The same object with its data key held by the KMS instead.
    let dek = *s.keyring.open(&Envelope::parse(&kek_envelope).unwrap()).unwrap();
    let mut envelope = Envelope::parse(&kek_envelope).unwrap();
    envelope.key_id = "kms".into();
    envelope.wrapped_dek = WrappedDek::Kms(vec![1, 2, 3]);
    let envelope = envelope.encode();
    let h = headers(200, &envelope, &[("content-length", stored.len().to_string())]);
    assert!(read::kms_envelope(&h).is_some());
    assert!(read::kms_envelope(&headers(200, &kek_envelope, &[])).is_none());
    assert!(read::kms_envelope(&headers(304, &envelope, &[])).is_none());
    assert!(read::kms_envelope(&headers(404, &envelope, &[])).is_none());
    let request = read::ReadRequest { aligned_to: C as u32, ..Default::default() };
    let mut plan = read::plan_response(&h, &request, &s, Some(&dek)).unwrap();
    assert_eq!(run(&mut plan.body, &stored).unwrap(), parts.concat());
    // Without the KMS's key: a clear error, no body.
    let err = read::plan_response(&h, &request, &s, None).err().unwrap();
    assert_eq!((err.status, err.code), (500, "InternalError"));
    assert!(err.message.contains("kms_strict"));
    // A KMS key is never used for a KEK envelope.
    let wrong = [0u8; 32];
    let h = headers(200, &kek_envelope, &[("content-length", stored.len().to_string())]);
    let mut plan = read::plan_response(&h, &request, &s, Some(&wrong)).unwrap();
    assert_eq!(run(&mut plan.body, &stored).unwrap(), parts.concat());
}

#[test]
fn suffix_of_an_empty_object_is_the_whole_object() {
    let s = settings();
    let (envelope, stored, _) = multipart(&s, &[0]);
    assert!(stored.is_empty());
    let h = headers(200, &envelope, &[("content-length", "0".to_string())]);
    let suffix = read::ReadRequest { range: Some(s3crypt_filter::range::ByteRange::Suffix(5)), aligned_to: C as u32, ..Default::default() };
    let mut plan = read::plan_response(&h, &suffix, &s, None).unwrap();
    assert_eq!(plan.status, Some(200));
    assert_eq!(header(&plan.edits.set, "content-length"), Some("0"));
    assert_eq!(run(&mut plan.body, &[]).unwrap(), Vec::<u8>::new());
    // A first byte is never satisfiable, nor an empty suffix.
    for range in [s3crypt_filter::range::ByteRange::From(0), s3crypt_filter::range::ByteRange::Suffix(0)] {
        let request = read::ReadRequest { range: Some(range), aligned_to: C as u32, ..Default::default() };
        assert_eq!(read::plan_response(&h, &request, &s, None).err().map(|e| e.status), Some(416));
    }
}
