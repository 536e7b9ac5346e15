//! Client authentication and authorisation for one request: who signed it
//! (`sigv4`), what it does (`policy::Access`, from the S3 operation), whether
//! a grant allows it, and the audit record of the decision. Pure: the glue
//! supplies the request and acts on the outcome.

use crate::policy::{Access, Clients};
use crate::s3::{has_query_param, percent_decode, query_param, Operation, S3Error};
use crate::sigv4::{self, AuthError, RequestParts, Verified};
use crate::xml::{element_text, unescape, RecordRewriter};
use std::time::SystemTime;

/// Bucket and key of a path-style request path, percent-decoded.
pub fn bucket_and_key(path: &str) -> (String, String) {
    let path = path.split('?').next().unwrap_or("/");
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.split_once('/') {
        Some((bucket, key)) => (percent_decode(bucket), percent_decode(key)),
        None => (percent_decode(rest), String::new()),
    }
}

/// What the request does, for the policy. `copy_source` is the decoded
/// (bucket, key) of `x-amz-copy-source`.
pub fn access_of<'a>(op: Operation, method: &str, path: &str, bucket: &'a str, key: &'a str, prefix: &'a str, copy_source: Option<&'a (String, String, Option<String>)>) -> Access<'a> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    match op {
        Operation::PutObject | Operation::UploadPart | Operation::CreateMultipartUpload | Operation::CompleteMultipartUpload | Operation::AbortMultipartUpload => Access::Write { bucket, key },
        Operation::GetObject | Operation::HeadObject => Access::Read { bucket, key },
        Operation::ListObjects => Access::List { bucket, prefix },
        Operation::ListParts => Access::List { bucket, prefix: key },
        Operation::CopyObject => match copy_source {
            Some((source_bucket, source_key, _)) => Access::Copy { source_bucket, source_key, bucket, key },
            // Unparseable source: the copy will fail anyway; ask for write.
            None => Access::Write { bucket, key },
        },
        Operation::Unsupported(_) | Operation::PassThrough => {
            if bucket.is_empty() {
                return Access::ListBuckets;
            }
            if key.is_empty() {
                return match method {
                    "GET" if has_query_param(query, "uploads") => Access::List { bucket, prefix },
                    "HEAD" => Access::BucketMetadata { bucket },
                    "GET" if has_query_param(query, "location") => Access::BucketMetadata { bucket },
                    // DeleteObjects: each key is checked against `delete` once the body is read.
                    "POST" if has_query_param(query, "delete") => Access::BucketMetadata { bucket },
                    _ => Access::BucketAdmin { bucket },
                };
            }
            match method {
                "GET" | "HEAD" => Access::Read { bucket, key },
                "DELETE" if query.is_empty() || has_query_param(query, "versionId") => Access::Delete { bucket, key },
                _ => Access::Write { bucket, key },
            }
        }
    }
}

/// Whether the request carries any authentication at all.
pub fn is_anonymous(path: &str, authorization: Option<&str>) -> bool {
    authorization.is_none() && query_param(path, "X-Amz-Signature").is_none() && query_param(path, "Signature").is_none()
}

/// Verifies the request's signature; `Ok(None)` for an unsigned request
/// (anonymous grants may still allow it).
pub fn authenticate(clients: &Clients, parts: &RequestParts<'_>, authorization: Option<&str>, now: SystemTime) -> Result<Option<Verified>, AuthError> {
    if is_anonymous(parts.path, authorization) {
        return Ok(None);
    }
    sigv4::verify(parts, now, &|id| clients.secret(id)).map(Some)
}

pub fn auth_error(e: &AuthError) -> S3Error {
    let (code, status) = e.s3_code();
    S3Error::new(u32::from(status), code, e.message())
}

/// Query parameters of presigned URLs: the backend gets a request signed by
/// the gateway instead, and must not see a second mechanism.
const PRESIGN_PARAMS: [&str; 8] = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Content-Sha256"];

/// `path` without the presigned-URL parameters; `None` if it has none.
pub fn strip_presign(path: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let kept: Vec<&str> = query.split('&').filter(|p| !PRESIGN_PARAMS.contains(&p.split('=').next().unwrap_or_default())).collect();
    if kept.len() == query.split('&').count() {
        return None;
    }
    Some(if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) })
}

/// One audit record, as a JSON line (values escaped by serde_json).
pub fn audit_record(principal: Option<&str>, method: &str, resource: &str, allowed: bool, reason: &str) -> String {
    serde_json::json!({
        "audit": "s3crypt",
        "principal": principal.unwrap_or("anonymous"),
        "method": method,
        "resource": resource,
        "decision": if allowed { "allow" } else { "deny" },
        "reason": reason,
    })
    .to_string()
}

/// Collects the keys of a DeleteObjects body as it streams.
pub struct DeleteKeys {
    rewriter: RecordRewriter,
    pub keys: Vec<String>,
    seen: usize,
}

/// DeleteObjects bodies are at most 1000 keys of at most 1 KiB.
pub const MAX_DELETE_BODY: usize = 2 * 1024 * 1024;

impl Default for DeleteKeys {
    fn default() -> DeleteKeys {
        DeleteKeys { rewriter: RecordRewriter::new(&["Object"]), keys: Vec::new(), seen: 0 }
    }
}

impl DeleteKeys {
    pub fn push(&mut self, data: &[u8], end: bool) -> Result<(), S3Error> {
        self.seen += data.len();
        if self.seen > MAX_DELETE_BODY {
            return Err(S3Error::new(400, "MalformedXML", "The DeleteObjects request body is too large."));
        }
        let keys = &mut self.keys;
        let mut sink = Vec::new();
        self.rewriter.push(data, end, &mut sink, &mut |_, record| {
            if let Some(key) = element_text(record, "Key") {
                keys.push(unescape(key));
            }
            None
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(bucket_and_key("/b/dir/a%20b?x=1"), ("b".into(), "dir/a b".into()));
        assert_eq!(bucket_and_key("/b?list-type=2"), ("b".into(), String::new()));
        assert_eq!(bucket_and_key("/"), (String::new(), String::new()));
    }

    #[test]
    fn operations_map_to_accesses() {
        let a = |op, method, path: &str| {
            let (b, k) = bucket_and_key(path);
            access_of(op, method, path, &b, &k, "", None).to_string()
        };
        assert_eq!(a(Operation::PutObject, "PUT", "/b/k"), "write \"b\" \"k\"");
        assert_eq!(a(Operation::GetObject, "GET", "/b/k"), "read \"b\" \"k\"");
        assert_eq!(a(Operation::PassThrough, "DELETE", "/b/k"), "delete \"b\" \"k\"");
        assert_eq!(a(Operation::PassThrough, "DELETE", "/b/k?tagging"), "write \"b\" \"k\"");
        assert_eq!(a(Operation::PassThrough, "PUT", "/b"), "bucket administration \"b\"");
        assert_eq!(a(Operation::PassThrough, "HEAD", "/b"), "bucket metadata \"b\"");
        assert_eq!(a(Operation::PassThrough, "GET", "/"), "list buckets");
        assert_eq!(a(Operation::ListParts, "GET", "/b/k?uploadId=1"), "list \"b\" prefix \"k\"");
    }

    #[test]
    fn presign_parameters_are_stripped() {
        assert_eq!(strip_presign("/b/k?X-Amz-Algorithm=A&X-Amz-Signature=s&versionId=3").as_deref(), Some("/b/k?versionId=3"));
        assert_eq!(strip_presign("/b/k?X-Amz-Signature=s").as_deref(), Some("/b/k"));
        assert_eq!(strip_presign("/b/k?versionId=3"), None);
    }

    #[test]
    fn delete_keys_at_any_split() {
        let body = b"<Delete><Object><Key>a&amp;b</Key></Object><Object><Key>c/d</Key><VersionId>1</VersionId></Object><Quiet>true</Quiet></Delete>";
        for split in 0..body.len() {
            let mut d = DeleteKeys::default();
            d.push(&body[..split], false).unwrap();
            d.push(&body[split..], true).unwrap();
            assert_eq!(d.keys, vec!["a&b".to_string(), "c/d".to_string()]);
        }
    }

    #[test]
    fn audit_lines_are_json() {
        let line = audit_record(Some("AK\"x"), "GET", "/b/k\n", false, "deny");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["principal"], "AK\"x");
        assert!(!line.contains('\n'));
    }
}
