//! Key rotation through the backend's S3 API: each object whose envelope
//! names another key gets its data key re-wrapped under the active key and
//! written back with a server-side CopyObject onto itself (metadata directive
//! REPLACE), so no body byte moves or changes. Resumable: keys are listed in
//! order and every line names the key it finished. Strict-KMS objects
//! (`kms=`) are left alone: the KMS holds their data keys, no KEK wraps them.

use crate::object::{envelope_error, parse_envelope};
use crate::s3::{Client, Response};
use anyhow::{Context, Result};
use s3crypt_filter::envelope::{Keyring, WrappedDek, METADATA_HEADER};
use std::process::ExitCode;

/// S3's limit for a single CopyObject.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// Headers a CopyObject with REPLACE would otherwise reset, kept as HEAD
/// shows them (besides every x-amz-meta-*).
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-amz-website-redirect-location",
    "x-amz-storage-class",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-bucket-key-enabled",
];

enum Outcome {
    Rewrapped { from: String },
    WouldRewrap { from: String },
    AlreadyActive,
    /// A strict-KMS object: its data key is the KMS's, no KEK wraps it.
    KmsHeld,
    NotEncrypted,
    Failed(String),
}

/// The headers of the copy: the object's own metadata and kept headers, the
/// envelope replaced by `new_envelope`.
pub fn copy_headers(head: &[(String, String)], new_envelope: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in head {
        let name = name.to_ascii_lowercase();
        if name == METADATA_HEADER {
            continue;
        }
        if name.starts_with("x-amz-meta-") || KEPT_HEADERS.contains(&name.as_str()) {
            out.push((name, value.clone()));
        }
    }
    out.push((METADATA_HEADER.into(), new_envelope.into()));
    out
}

fn rewrap_one(client: &Client, keyring: &Keyring, bucket: &str, key: &str, dry_run: bool) -> Result<Outcome> {
    let head: Response = client.head_object(bucket, key)?;
    if head.status != 200 {
        return Ok(Outcome::Failed(format!("HEAD: {}", head.error_text())));
    }
    let Some(value) = head.header(METADATA_HEADER).map(str::to_owned) else {
        return Ok(Outcome::NotEncrypted);
    };
    let envelope = match parse_envelope(&value) {
        Ok(e) => e,
        Err(e) => return Ok(Outcome::Failed(format!("{e:#}"))),
    };
    if matches!(envelope.wrapped_dek, WrappedDek::Kms(_)) {
        return Ok(Outcome::KmsHeld);
    }
    if envelope.key_id == keyring.active_id() {
        return Ok(Outcome::AlreadyActive);
    }
    let from = envelope.key_id.clone();
    let size: u64 = head.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if size > MAX_COPY {
        return Ok(Outcome::Failed(format!("{size} bytes: larger than 5 GiB, cannot be copied in one request (not re-wrapped)")));
    }
    let rewrapped = match keyring.rewrap(&envelope) {
        Ok(e) => e,
        Err(e) => return Ok(Outcome::Failed(envelope_error(&e))),
    };
    if dry_run {
        return Ok(Outcome::WouldRewrap { from });
    }
    let Some(etag) = head.header("etag").map(str::to_owned) else {
        return Ok(Outcome::Failed("HEAD returned no ETag".into()));
    };
    let headers = copy_headers(&head.headers, &rewrapped.encode());
    match client.copy_onto_itself(bucket, key, &etag, &headers)? {
        Ok(()) => Ok(Outcome::Rewrapped { from }),
        // E.g. PreconditionFailed: the object changed since the HEAD.
        Err(refusal) => Ok(Outcome::Failed(format!("CopyObject: {refusal}"))),
    }
}

pub fn rewrap(client: &Client, keyring: &Keyring, bucket: &str, prefix: &str, start_after: Option<&str>, dry_run: bool) -> Result<ExitCode> {
    let active = keyring.active_id().to_owned();
    let (mut rewrapped, mut already, mut kms_held, mut plain, mut failed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last: Option<String> = start_after.map(str::to_owned);
    let mut token: Option<String> = None;
    let mut n = 0u64;
    loop {
        let page = client.list_page(bucket, prefix, start_after, token.as_deref()).with_context(|| crate::resume_hint(last.as_deref()))?;
        for listed in page.objects {
            n += 1;
            let key = listed.key;
            let outcome = rewrap_one(client, keyring, bucket, &key, dry_run).with_context(|| crate::resume_hint(last.as_deref()))?;
            match outcome {
                Outcome::Rewrapped { from } => {
                    rewrapped += 1;
                    println!("[{n}] rewrapped {key} ({from} -> {active})");
                }
                Outcome::WouldRewrap { from } => {
                    rewrapped += 1;
                    println!("[{n}] would rewrap {key} ({from} -> {active})");
                }
                Outcome::AlreadyActive => {
                    already += 1;
                    println!("[{n}] already under {active}: {key}");
                }
                Outcome::KmsHeld => {
                    kms_held += 1;
                    println!("[{n}] strict KMS object, its data key is the KMS's (nothing to rewrap), left alone: {key}");
                }
                Outcome::NotEncrypted => {
                    plain += 1;
                    println!("[{n}] not encrypted, left alone: {key}");
                }
                Outcome::Failed(why) => {
                    failed += 1;
                    eprintln!("[{n}] FAILED {key}: {why}");
                }
            }
            last = Some(key);
        }
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if plain > 0 && rewrapped + already + kms_held + failed == 0 {
        eprintln!("note: no object under s3://{bucket}/{prefix} has an envelope: is --endpoint the backend? (the gateway hides {METADATA_HEADER})");
    }
    let verb = if dry_run { "to rewrap" } else { "rewrapped" };
    println!("rewrap: {rewrapped} {verb}, {already} already under {active}, {kms_held} held by the KMS, {plain} not encrypted, {failed} failed; last key: {}", last.as_deref().unwrap_or("-"));
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_metadata_and_content_headers_and_replace_the_envelope() {
        let head: Vec<(String, String)> = [
            ("Content-Type", "application/x-test"),
            ("Content-Length", "41"),
            ("ETag", "\"abc\""),
            ("x-amz-meta-owner", "ops"),
            ("x-amz-meta-s3crypt", "v=1;old"),
            ("x-amz-meta-s3crypt-checksum", "crc32=AAAAAA=="),
            ("Cache-Control", "no-cache"),
            ("Last-Modified", "x"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let headers = copy_headers(&head, "v=1;new");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-amz-meta-owner", "x-amz-meta-s3crypt-checksum", "cache-control", "x-amz-meta-s3crypt"]);
        assert_eq!(headers.last().unwrap().1, "v=1;new");
    }
}
