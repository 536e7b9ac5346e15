//! `envelope::Envelope::parse` and the key wrapping behind it.
//!
//! Input: first byte even: the rest is an `x-amz-meta-s3crypt` value (seeds:
//! the testdata/v1 envelopes); odd: a structured envelope.
//! Invariants, besides never panicking:
//! * parse accepts only the canonical form: `encode(parse(s)) == trim(s)`
//!   (hex case of the unauthenticated `e` aside) and parse(encode(x)) == x;
//! * an envelope opens under the vectors' KEK only to the vectors' DEK (no
//!   accepted forgery);
//! * structured: wrap then open is the identity, and changing any bound field
//!   (suite, chunk size, length, key id) makes the unwrap fail.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::envelope::{Envelope, EnvelopeError, Kek, Keyring, WrappedDek, WRAPPED_LEN};
use s3crypt_filter_fuzz::{DEK, KEK, KEK_ID};
use zeroize::Zeroizing;

fn keyring() -> Keyring {
    Keyring::new(vec![Kek::new(KEK_ID.into(), Zeroizing::new(KEK)), Kek::new("other".into(), Zeroizing::new([0x0c; 32]))], KEK_ID).expect("keyring")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        let _ = structured(rest);
    }
});

fn raw(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(env) = Envelope::parse(&text) else { return };
    let encoded = env.encode();
    let canonical = match text.trim().split_once(";e=") {
        Some((head, md5)) => format!("{head};e={}", md5.to_ascii_lowercase()),
        None => text.trim().to_string(),
    };
    assert_eq!(encoded, canonical, "parse accepted a non-canonical envelope");
    assert_eq!(Envelope::parse(&encoded), Ok(env.clone()));
    match keyring().open(&env) {
        Ok(dek) => assert_eq!(*dek, DEK, "an envelope opened to a key nobody wrapped"),
        Err(EnvelopeError::UnknownKeyId(id)) => assert_eq!(id, env.key_id),
        Err(_) => {}
    }
}

fn structured(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let suite = if u.arbitrary()? { Suite::Aes256Gcm } else { Suite::ChaCha20Poly1305 };
    let chunk_size = 1u32 << u.int_in_range(14..=20)?;
    let id_len = u.int_in_range(1..=64)?;
    let key_id: String = (0..id_len).map(|_| u.choose(b"ABCXYZabcxyz0189._-").map(|&b| char::from(b))).collect::<Result<_>>()?;
    let plaintext_len: Option<u64> = u.arbitrary()?;
    let plaintext_md5: Option<[u8; 16]> = u.arbitrary()?;
    let dek: [u8; 32] = u.arbitrary()?;
    let nonce: [u8; 24] = u.arbitrary()?;
    let mut env = Envelope { suite, chunk_size, key_id: key_id.clone(), plaintext_len, wrapped_dek: WrappedDek::Kek([0; WRAPPED_LEN]), plaintext_md5 };
    let kek = Kek::new(key_id.clone(), Zeroizing::new(KEK));
    kek.wrap_with_nonce(&dek, &mut env, nonce).expect("wrap");
    let encoded = env.encode();
    assert_eq!(Envelope::parse(&encoded), Ok(env.clone()), "parse(encode(x)) != x for {encoded}");
    let ring = Keyring::new(vec![kek, Kek::new("other".into(), Zeroizing::new([0x0c; 32]))], &key_id).expect("keyring");
    assert_eq!(*ring.open(&env).expect("opens"), dek);

    // Every bound field is bound.
    let mut changed = env.clone();
    match u.int_in_range(0u8..=4)? {
        0 => changed.suite = if suite == Suite::Aes256Gcm { Suite::ChaCha20Poly1305 } else { Suite::Aes256Gcm },
        1 => changed.chunk_size = if chunk_size == 1 << 14 { 1 << 15 } else { chunk_size >> 1 },
        2 => changed.plaintext_len = match plaintext_len {
            None => Some(u.arbitrary()?),
            Some(n) if u.arbitrary()? => Some(n ^ u.int_in_range(1..=u64::MAX)?),
            Some(_) => None,
        },
        3 => {
            if let WrappedDek::Kek(wrapped) = &mut changed.wrapped_dek {
                wrapped[u.choose_index(WRAPPED_LEN)?] ^= u.int_in_range(1..=255)?;
            }
        }
        _ => {
            // The md5 is not bound (FORMAT.md): changing it still opens.
            changed.plaintext_md5 = Some(u.arbitrary()?);
            assert_eq!(*ring.open(&changed).expect("md5 is not bound"), dek);
            return Ok(());
        }
    }
    assert!(matches!(ring.open(&changed), Err(EnvelopeError::UnwrapFailed(_))), "a changed bound field still unwraps");
    Ok(())
}
