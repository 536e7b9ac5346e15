//! The plugin JSON (`config::parse`, `config::parse_staged`, and through
//! them `policy::parse_clients`).
//!
//! Input: JSON bytes. Inputs naming a `password` are skipped: PBKDF2 at the
//! minimum 100 000 iterations would make each run take ~0.1 s.
//! Invariants, besides never panicking: parsing is deterministic (same
//! outcome, same field named); an accepted config has a valid chunk size and
//! an active key that encrypts a new object's key and opens it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt_filter::config;
use s3crypt_filter::envelope::{valid_chunk_size, valid_key_id};

const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fuzz_target!(|data: &[u8]| {
    if data.windows(8).any(|w| w.eq_ignore_ascii_case(b"password")) {
        return;
    }
    let env = |name: &str| match name {
        "KEK_HEX" => Some(HEX.to_string()),
        "SECRET" => Some("s3cr3t".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let first = config::parse(data, &env);
    let second = config::parse(data, &env);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.keyring.active_id(), b.keyring.active_id());
            assert!(valid_chunk_size(a.chunk_size));
            assert!(valid_key_id(a.keyring.active_id()));
            let (envelope, dek) = a.keyring.new_object(a.suite, a.chunk_size, Some(1)).expect("a configured key wraps");
            assert_eq!(*b.keyring.open(&envelope).expect("the same config opens it"), *dek);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "parsing is not deterministic");
            assert!(!a.field.is_empty());
        }
        _ => panic!("parsing is not deterministic"),
    }
    let _ = config::parse_staged(data, &env);
});
