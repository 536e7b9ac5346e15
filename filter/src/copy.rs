//! CopyObject: the gateway looks at the source (a HEAD through the backend
//! cluster) so that a copy always decrypts and its conditions and ETags are
//! the ones the client sees.
//!
//! * metadata directive COPY: S3 copies the envelope with the body.
//! * metadata directive REPLACE: the client's new metadata would drop the
//!   envelope, so the gateway adds the source's envelope (and checksum
//!   record) to the request, its data key re-wrapped under the active KEK:
//!   copying an object onto itself with REPLACE is how a KEK rotation moves
//!   it to the new key without moving its body.
//! * `x-amz-copy-source-if-*` name ETags the client saw; the backend only
//!   knows ciphertext ETags, so the gateway decides them itself.
//! * A strict-KMS object's data key is bound by its encryption context to
//!   its bucket and key: a copy elsewhere could never be read, so it is
//!   refused (501); a copy onto itself (metadata REPLACE) keeps the envelope.

use crate::envelope::{Envelope, Keyring, WrappedDek, CHECKSUM_HEADER, METADATA_HEADER};
use crate::put::{header, HeaderEdits, Headers};
use crate::read::{client_etag, Conditions, Precondition};
use crate::s3::{percent_decode, uri_encode, S3Error};

/// Where and how the filter reaches the backend itself (plugin JSON `backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The Envoy cluster that signs and sends requests to the backend.
    pub cluster: String,
    /// Host (and port) the backend expects.
    pub authority: String,
    /// Bucket in the host name (`bucket.<authority>`) instead of the path.
    pub virtual_hosted: bool,
}

const COPY_CONDITIONS: [&str; 4] = ["x-amz-copy-source-if-match", "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since", "x-amz-copy-source-if-unmodified-since"];

/// A CopyObject waiting for its source's HEAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCopy {
    pub replace_metadata: bool,
    conditions: Conditions,
}

/// The source named by `x-amz-copy-source`: `[/]bucket/key[?versionId=v]`, key URL-encoded.
pub fn source(value: &str) -> Option<(String, String, Option<String>)> {
    let value = value.trim();
    let (path, query) = value.split_once('?').unwrap_or((value, ""));
    let (bucket, key) = path.trim_start_matches('/').split_once('/')?;
    let bucket = percent_decode(bucket);
    let key = percent_decode(key);
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    let version = query.split('&').find_map(|p| p.strip_prefix("versionId=")).map(percent_decode);
    Some((bucket, key, version))
}

/// Headers of the HEAD request for the source.
pub fn head_request(backend: &Backend, bucket: &str, key: &str, version: Option<&str>) -> Vec<(String, String)> {
    let encoded_key: Vec<String> = key.split('/').map(uri_encode).collect();
    let query = version.map(|v| format!("?versionId={}", uri_encode(v))).unwrap_or_default();
    let (authority, path) = if backend.virtual_hosted {
        (format!("{bucket}.{}", backend.authority), format!("/{}{query}", encoded_key.join("/")))
    } else {
        (backend.authority.clone(), format!("/{}/{}{query}", uri_encode(bucket), encoded_key.join("/")))
    };
    vec![(":method".into(), "HEAD".into()), (":path".into(), path), (":authority".into(), authority), ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into())]
}

/// Reads the copy's own request headers; the conditions leave the request.
pub fn plan_request(headers: &Headers) -> (HeaderEdits, PendingCopy) {
    let get = |name| header(headers, name).map(str::to_owned);
    let conditions = Conditions {
        if_match: get("x-amz-copy-source-if-match"),
        if_none_match: get("x-amz-copy-source-if-none-match"),
        if_modified_since: get("x-amz-copy-source-if-modified-since"),
        if_unmodified_since: get("x-amz-copy-source-if-unmodified-since"),
    };
    let replace_metadata = header(headers, "x-amz-metadata-directive").is_some_and(|v| v.trim().eq_ignore_ascii_case("REPLACE"));
    let edits = HeaderEdits { remove: COPY_CONDITIONS.iter().map(|h| h.to_string()).collect(), set: Vec::new() };
    (edits, PendingCopy { replace_metadata, conditions })
}

/// With the source's HEAD response: the edits that complete the copy request,
/// and the source's envelope (for the response ETag). With `REPLACE`, the
/// data key is re-wrapped under `write_key` (the destination bucket's).
/// `same_object`: the copy's destination is its source.
pub fn plan_after_head(pending: &PendingCopy, head: &Headers, keyring: &Keyring, write_key: &str, same_object: bool) -> Result<(HeaderEdits, Option<Envelope>), S3Error> {
    let status = header(head, ":status").unwrap_or_default();
    if status != "200" {
        // Let the backend answer the copy itself (NoSuchKey, AccessDenied...).
        return Ok((HeaderEdits::default(), None));
    }
    let envelope = header(head, METADATA_HEADER).and_then(|v| Envelope::parse(v).ok());
    let etag = match &envelope {
        Some(env) => client_etag(env, header(head, "etag")).unwrap_or_default(),
        None => header(head, "etag").unwrap_or_default().to_owned(),
    };
    // For a copy, a failed or "not modified" condition is 412 either way.
    if pending.conditions.evaluate(&etag, header(head, "last-modified")) != Precondition::Proceed {
        return Err(S3Error::new(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"));
    }
    let kms_bound = envelope.as_ref().is_some_and(|e| matches!(e.wrapped_dek, WrappedDek::Kms(_)));
    if kms_bound && !same_object {
        return Err(S3Error::new(
            501,
            "NotImplemented",
            "The source's data key is bound by the KMS to its own bucket and key (strict KMS mode), so a copy elsewhere could not be read. Download the object and upload it again.",
        ));
    }
    let mut edits = HeaderEdits::default();
    let mut envelope = envelope;
    if pending.replace_metadata {
        if header(head, METADATA_HEADER).is_some() {
            // A source the gateway cannot open stays unreadable: refuse rather than copy it blind.
            let source = envelope.as_ref().ok_or_else(|| crate::read::envelope_read_error(crate::envelope::EnvelopeError::Malformed))?;
            let rewrapped = if kms_bound { source.clone() } else { keyring.rewrap_under(write_key, source).map_err(crate::read::envelope_read_error)? };
            edits.set.push((METADATA_HEADER.into(), rewrapped.encode()));
            envelope = Some(rewrapped);
        }
        if let Some(value) = header(head, CHECKSUM_HEADER) {
            edits.set.push((CHECKSUM_HEADER.into(), value.to_owned()));
        }
    }
    Ok((edits, envelope))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn copy_source_forms() {
        assert_eq!(source("/b/dir/a%20b.txt"), Some(("b".into(), "dir/a b.txt".into(), None)));
        assert_eq!(source("b/k?versionId=3%2B"), Some(("b".into(), "k".into(), Some("3+".into()))));
        assert_eq!(source("/b"), None);
        assert_eq!(source("/b/"), None);
    }

    #[test]
    fn head_request_addressing() {
        let mut backend = Backend { cluster: "c".into(), authority: "s3.example:9000".into(), virtual_hosted: false };
        let path = |b: &Backend| head_request(b, "bkt", "a b/c+d", None).into_iter().find(|(k, _)| k == ":path").unwrap().1;
        assert_eq!(path(&backend), "/bkt/a%20b/c%2Bd");
        backend.virtual_hosted = true;
        assert_eq!(path(&backend), "/a%20b/c%2Bd");
    }

    #[test]
    fn replace_rewraps_the_envelope_and_conditions_use_client_etags() {
        use crate::cipher::Suite;
        use crate::envelope::Kek;
        use zeroize::Zeroizing;
        let old = Keyring::new(vec![Kek::new("old".into(), Zeroizing::new([1; 32]))], "old").unwrap();
        let (env, _) = old.new_object(Suite::ChaCha20Poly1305, 65_536, Some(3)).unwrap();
        let ring = Keyring::new(vec![Kek::new("new".into(), Zeroizing::new([2; 32])), Kek::new("old".into(), Zeroizing::new([1; 32]))], "new").unwrap();
        let head = h(&[(":status", "200"), ("etag", "\"abc\""), (METADATA_HEADER, &env.encode())]);
        let (_, pending) = plan_request(&h(&[("x-amz-metadata-directive", "REPLACE"), ("x-amz-copy-source-if-match", "\"nope\"")]));
        assert_eq!(plan_after_head(&pending, &head, &ring, ring.active_id(), false).unwrap_err().status, 412);
        let (_, pending) = plan_request(&h(&[("x-amz-metadata-directive", "REPLACE")]));
        let (edits, new_env) = plan_after_head(&pending, &head, &ring, ring.active_id(), false).unwrap();
        let (name, value) = edits.set.first().unwrap();
        assert_eq!(name, METADATA_HEADER);
        assert_eq!(Envelope::parse(value).unwrap().key_id, "new");
        assert_eq!(new_env.unwrap().key_id, "new");
        // A source envelope the gateway cannot open is not copied blind.
        let broken = h(&[(":status", "200"), ("etag", "\"abc\""), (METADATA_HEADER, "v=1;broken")]);
        assert!(plan_after_head(&pending, &broken, &ring, ring.active_id(), false).is_err());
        // A strict-KMS source: only onto itself, its envelope unchanged.
        let kms_env = Envelope { wrapped_dek: WrappedDek::Kms(vec![1, 2]), key_id: "kms".into(), ..env.clone() };
        let kms_head = h(&[(":status", "200"), ("etag", "\"abc\""), (METADATA_HEADER, &kms_env.encode())]);
        assert_eq!(plan_after_head(&pending, &kms_head, &ring, ring.active_id(), false).unwrap_err().status, 501);
        let (edits, _) = plan_after_head(&pending, &kms_head, &ring, ring.active_id(), true).unwrap();
        assert!(edits.set.contains(&(METADATA_HEADER.to_string(), kms_env.encode())));
        // A missing source: the backend answers the copy.
        assert_eq!(plan_after_head(&pending, &h(&[(":status", "404")]), &ring, ring.active_id(), false).unwrap().0, HeaderEdits::default());
    }
}
