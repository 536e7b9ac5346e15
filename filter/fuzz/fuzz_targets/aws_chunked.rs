//! The `aws-chunked` request-body decoder (`aws_chunked::Decoder`), with and
//! without the SigV4 chunk-signature chain (`sigv4::ChunkSignatureChain`).
//!
//! Input: first byte picks the mode.
//! * raw (even): `variant (1) || trailers (1) || decoded length (u64 LE) ||
//!   verifier (1) || split seed (u64 LE) || body`. Never panics; the payload
//!   emitted never exceeds the decoded length (after every push); the outcome,
//!   payload and trailers do not depend on the split points; an error sticks;
//!   success means exactly the decoded length was emitted, only announced
//!   trailers came, each once, and `is_complete()`.
//! * encoded (odd): structured. A body built by an encoder written here from
//!   the AWS pages (the shapes of botocore, the Java/Go/JS SDKs, the CRT,
//!   minio-go and the AWS documentation), signed by this file's own signer
//!   and verified by the filter's chain: decoding at any split is the
//!   identity. Then one mutation: a signed, verified body that still decodes
//!   gives exactly the signed payload and trailers.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use s3crypt_filter::aws_chunked::{ChunkSignatures, ChunkedError, Decoder, Variant};
use s3crypt_filter::sigv4::{ChunkSignatureChain, Secret, SigningKey};
use s3crypt_filter_fuzz::{fill, pieces, ChunkSigner};

/// The AWS documentation's signing example (sigv4-streaming.html).
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_DATE: &str = "20130524";
const DOC_REGION: &str = "us-east-1";
const DOC_TIME: &str = "20130524T000000Z";
const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";
/// Seeds of the documentation's two examples (signed; signed with trailer).
const DOC_SEEDS: [&str; 2] = ["4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9", "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"];

const TRAILER_NAMES: [&str; 6] = ["x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-meta-extra"];
const VARIANTS: [Variant; 3] = [Variant::UnsignedTrailer, Variant::Signed, Variant::SignedTrailer];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let _ = if mode % 2 == 0 { raw(rest) } else { encoded(rest) };
});

fn chain(seed: &str) -> Box<dyn ChunkSignatures> {
    let key = SigningKey::derive(&Secret::new(DOC_SECRET), DOC_DATE, DOC_REGION, "s3");
    Box::new(ChunkSignatureChain::new(seed, key, DOC_SCOPE, DOC_TIME))
}

type Outcome = (Vec<u8>, std::result::Result<Vec<(String, String)>, ChunkedError>);

/// Pushes the pieces and finishes, checking the length bound after every
/// push and that an error sticks.
fn decode(decoder: &mut Decoder, pieces: &[&[u8]], decoded_len: u64) -> Outcome {
    let mut out = Vec::new();
    let mut result = Ok(Vec::new());
    for piece in pieces {
        let r = decoder.push(piece, &mut out);
        assert!(out.len() as u64 <= decoded_len, "emitted {} bytes, more than the decoded length {decoded_len}", out.len());
        if let Err(e) = r {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = decoder.finish();
    }
    match &result {
        Ok(trailers) => {
            assert_eq!(out.len() as u64, decoded_len, "finished with another length than declared");
            assert!(decoder.is_complete());
            for (i, (name, _)) in trailers.iter().enumerate() {
                assert!(!trailers[..i].iter().any(|(n, _)| n == name), "trailer {name} returned twice");
            }
        }
        Err(_) => {
            let before = out.len();
            assert_eq!(decoder.push(b"0\r\n\r\n", &mut out), Err(ChunkedError::Poisoned), "an error must stick");
            assert_eq!(decoder.finish(), Err(ChunkedError::Poisoned), "an error must stick");
            assert_eq!(out.len(), before);
            assert!(!decoder.is_complete());
        }
    }
    (out, result)
}

fn raw(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let variant = VARIANTS[usize::from(u.arbitrary::<u8>()?) % 3];
    let mask: u8 = u.arbitrary()?;
    let decoded_len: u64 = u.arbitrary()?;
    let verifier: u8 = u.arbitrary()?;
    let seed: u64 = u.arbitrary()?;
    let body = u.take_rest();
    let expected: Vec<String> = TRAILER_NAMES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| n.to_string()).collect();
    let make = || {
        let sigs = match verifier % 3 {
            0 => None,
            v => Some(chain(DOC_SEEDS[usize::from(v) - 1])),
        };
        Decoder::new(variant, decoded_len, expected.clone(), sigs)
    };
    let whole = decode(&mut make(), &[body], decoded_len);
    let split = decode(&mut make(), &pieces(body, seed | 1), decoded_len);
    assert_eq!(whole.1, split.1, "the outcome depends on the split points");
    assert_eq!(whole.0, split.0, "the payload depends on the split points");
    if let Ok(trailers) = &whole.1 {
        for (name, value) in trailers {
            assert!(expected.contains(name), "trailer {name} was not announced");
            assert!(!value.chars().any(char::is_control));
        }
    }
    Ok(())
}

/// How the encoder lays a body out (what real clients do).
struct Shape {
    upper_hex: bool,
    leading_zeros: usize,
    /// The AWS documentation's form: an empty line before the trailers.
    empty_line_before_trailers: bool,
    /// minio-go: trailer lines end in a bare LF, an empty line before the signature.
    minio_go: bool,
    /// The closing empty line left out (accepted at `finish`).
    no_final_empty_line: bool,
}

fn encode(variant: Variant, payload: &[u8], sizes: &[usize], trailers: &[(String, String)], shape: &Shape, signer: &mut ChunkSigner) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rest = payload;
    let mut sizes = sizes.iter().cycle();
    loop {
        let n = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len().max(1)).min(rest.len());
        let (data, tail) = rest.split_at(n);
        let zeros = "0".repeat(shape.leading_zeros);
        let size = if shape.upper_hex { format!("{zeros}{:X}", data.len()) } else { format!("{zeros}{:x}", data.len()) };
        body.extend_from_slice(size.as_bytes());
        if variant.is_signed() {
            body.extend_from_slice(format!(";chunk-signature={}", signer.chunk(data)).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if data.is_empty() {
            break;
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
        rest = tail;
    }
    if shape.empty_line_before_trailers && !trailers.is_empty() {
        body.extend_from_slice(b"\r\n");
    }
    let eol: &[u8] = if shape.minio_go { b"\n" } else { b"\r\n" };
    let mut canonical: Vec<String> = Vec::new();
    for (name, value) in trailers {
        body.extend_from_slice(format!("{name}:{value}").as_bytes());
        body.extend_from_slice(eol);
        canonical.push(format!("{}:{}\n", name.to_ascii_lowercase(), value.trim()));
    }
    if variant == Variant::SignedTrailer {
        canonical.sort();
        if shape.minio_go {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("x-amz-trailer-signature:{}\r\n", signer.trailer(&canonical.concat())).as_bytes());
    }
    if !shape.no_final_empty_line {
        body.extend_from_slice(b"\r\n");
    }
    body
}

fn encoded(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let variant = VARIANTS[u.choose_index(3)?];
    let payload = if u.ratio(1, 16)? { fill(u.int_in_range(0..=70_000)?, u.arbitrary()?) } else { u.arbitrary::<Vec<u8>>()? };
    // At most ~300 chunks: each costs two HMAC chains in the signed variants.
    let floor = payload.len() / 300;
    let mut sizes: Vec<usize> = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        sizes.push((*u.choose(&[1usize, 2, 3, 7, 16, 100, 1000, 8192, 65_536])?).max(floor));
    }
    let mut trailers: Vec<(String, String)> = Vec::new();
    if variant.has_trailers() {
        for name in TRAILER_NAMES {
            if u.ratio(1, 4)? {
                // Names in any case; base64-ish values, maybe with spaces around.
                let name = if u.arbitrary()? { name.to_ascii_uppercase() } else { name.to_string() };
                let len = u.int_in_range(0..=44)?;
                let mut value: String = (0..len).map(|_| u.choose(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=").map(|&b| char::from(b))).collect::<Result<_>>()?;
                if value.is_empty() || u.ratio(1, 8)? {
                    value = format!(" {value}\t");
                }
                trailers.push((name, value));
            }
        }
    }
    let shape = Shape {
        upper_hex: u.arbitrary()?,
        leading_zeros: if u.ratio(1, 8)? { u.int_in_range(1..=5)? } else { 0 },
        empty_line_before_trailers: u.ratio(1, 4)?,
        minio_go: u.ratio(1, 4)?,
        no_final_empty_line: u.ratio(1, 8)?,
    };
    let seed_signature = hex::encode(u.arbitrary::<[u8; 32]>()?);
    let verify = !u.ratio(1, 8)?;
    let split_seed: u64 = u.arbitrary()?;
    let mut signer = ChunkSigner::new(DOC_SECRET, DOC_DATE, DOC_REGION, DOC_TIME, &seed_signature);
    let body = encode(variant, &payload, &sizes, &trailers, &shape, &mut signer);
    let names: Vec<String> = trailers.iter().map(|(n, _)| n.clone()).collect();
    let want_trailers: Vec<(String, String)> = trailers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string())).collect();
    let decoded_len = payload.len() as u64;
    let make = || Decoder::new(variant, decoded_len, names.clone(), verify.then(|| chain(&seed_signature)));

    // Identity at any split.
    let (out, result) = decode(&mut make(), &pieces(&body, split_seed), decoded_len);
    let got = result.unwrap_or_else(|e| panic!("a well-formed body was refused: {e}"));
    assert!(out == payload, "a well-formed body decoded to another payload");
    assert_eq!(got, want_trailers);

    // One mutation.
    let mut mutated = body.clone();
    match u.int_in_range(0u8..=3)? {
        0 if !body.is_empty() => {
            let at = u.choose_index(body.len())?;
            mutated[at] ^= u.int_in_range(1..=255)?;
        }
        1 => mutated.truncate(u.int_in_range(0..=body.len())?),
        2 => {
            let at = u.int_in_range(0..=body.len())?;
            let bytes: Vec<u8> = u.arbitrary()?;
            mutated.splice(at..at, bytes);
        }
        _ if !body.is_empty() => {
            let at = u.choose_index(body.len())?;
            let n = u.int_in_range(1..=body.len() - at)?;
            mutated.drain(at..at + n);
        }
        _ => {}
    }
    let (out, result) = decode(&mut make(), &pieces(&mutated, split_seed.rotate_left(23)), decoded_len);
    if let Ok(got) = result {
        if variant.is_signed() && verify {
            assert!(out == payload, "a modified signed body decoded to another payload");
            assert_eq!(got, want_trailers, "a modified signed body gave other trailers");
        }
    }
    Ok(())
}
