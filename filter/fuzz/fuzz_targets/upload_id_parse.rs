//! `upload_id::parse` (client upload ids carrying a wrapped data key) and
//! the path rewrite around it (`multipart::backend_path`, `s3::query_param`).
//!
//! Input: first byte even: the rest is a client upload id (seeds: ids sealed
//! with the vectors' KEK and DEK); odd: structured.
//! Invariants, besides never panicking:
//! * a parsed id has the prefix, a non-empty backend id, a valid chunk size
//!   and key id; it opens under the KEK only to the DEK it was sealed with;
//! * `backend_path` finds the same id in a request path and puts the backend
//!   id in its place, where `query_param` reads it back;
//! * structured: seal then parse gives the fields back and opens to the DEK;
//!   the token moved onto another backend id does not open.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::envelope::{valid_chunk_size, valid_key_id, EnvelopeError, Kek, Keyring};
use s3crypt_filter::{multipart, s3, upload_id};
use s3crypt_filter_fuzz::{DEK, KEK, KEK_ID};
use zeroize::Zeroizing;

fn keyring() -> Keyring {
    Keyring::new(vec![Kek::new(KEK_ID.into(), Zeroizing::new(KEK))], KEK_ID).expect("keyring")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw(&String::from_utf8_lossy(rest));
    } else {
        let _ = structured(rest);
    }
});

fn raw(text: &str) {
    let parsed = upload_id::parse(text);
    if let Some(id) = &parsed {
        assert!(text.starts_with("s3c1") || text.starts_with("s3k1"));
        assert!(!id.backend_id.is_empty() && text.ends_with(&format!(".{}", id.backend_id)));
        assert!(valid_chunk_size(id.chunk_size));
        // A KEK id, or (strict KMS) a blob: never both.
        assert_ne!(id.key_id().is_some(), id.kms_blob().is_some());
        assert!(id.key_id().is_none_or(valid_key_id));
        match id.open(&keyring()) {
            Ok(dek) => assert_eq!(*dek, DEK, "an upload id opened to a key nobody sealed"),
            Err(EnvelopeError::UnknownKeyId(_) | EnvelopeError::UnwrapFailed(_)) => {}
            Err(EnvelopeError::KmsWrapped) => assert!(id.kms_blob().is_some()),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    let path = format!("/bkt/key?partNumber=1&uploadId={}", s3::uri_encode(text));
    let (new_path, found) = multipart::backend_path(&path);
    assert_eq!(found, parsed, "backend_path parses the id differently");
    match &found {
        Some(id) => assert_eq!(s3::query_param(&new_path, "uploadId").as_deref(), Some(id.backend_id.as_str()), "{new_path}"),
        None => assert_eq!(new_path, path),
    }
    let _ = multipart::backend_path(text);
    let _ = multipart::part_number(text);
}

fn structured(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let suite = if u.arbitrary()? { Suite::Aes256Gcm } else { Suite::ChaCha20Poly1305 };
    let chunk_size = 1u32 << u.int_in_range(14..=20)?;
    let dek: [u8; 32] = u.arbitrary()?;
    let backend_id: String = u.arbitrary()?;
    if backend_id.is_empty() {
        return Ok(());
    }
    let ring = keyring();
    let id = upload_id::seal(ring.active().expect("active"), &dek, suite, chunk_size, &backend_id).expect("seal");
    let parsed = upload_id::parse(&id).expect("a sealed id parses");
    assert_eq!((parsed.backend_id.as_str(), parsed.suite, parsed.chunk_size, parsed.key_id().unwrap_or_default()), (backend_id.as_str(), suite, chunk_size, KEK_ID));
    assert_eq!(*parsed.open(&ring).expect("opens"), dek);
    let (path, found) = multipart::backend_path(&format!("/b/k?uploadId={}&partNumber=7", s3::uri_encode(&id)));
    assert_eq!(found.as_ref(), Some(&parsed));
    assert_eq!(s3::query_param(&path, "uploadId").as_deref(), Some(backend_id.as_str()));
    let other: String = u.arbitrary()?;
    if !other.is_empty() && other != backend_id {
        let token = id.strip_suffix(&backend_id).expect("the id ends with the backend id");
        let moved = upload_id::parse(&format!("{token}{other}")).expect("a moved token still parses");
        assert!(matches!(moved.open(&ring), Err(EnvelopeError::UnwrapFailed(_))), "a token moved to another upload opened");
    }
    Ok(())
}
