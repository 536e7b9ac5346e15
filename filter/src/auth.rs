//! Client authentication and authorisation for one request: who signed it
//! (`sigv4`), what it does (`policy::Access`, from the S3 operation), whether
//! a grant allows it, and the audit record of the decision. Pure: the glue
//! supplies the request and acts on the outcome.

use crate::policy::{Access, Clients};
use crate::s3::{has_query_param, percent_decode, query_param, Operation, S3Error};
use crate::sigv4::{self, AuthError, RequestParts, Verified};
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
        // UploadPartCopy too: refused in encrypted buckets, but passed on
        // in plaintext ones, where it reads its source like a copy.
        Operation::CopyObject | Operation::Unsupported("UploadPartCopy") => match copy_source {
            Some((source_bucket, source_key, _)) => Access::Copy { source_bucket, source_key, bucket, key },
            // Unparseable source: the glue refuses the request; ask for write.
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

/// One authorisation decision, for the audit line in Envoy's log and the
/// fields of the request's access-log line.
pub struct AuditEntry<'a> {
    /// The verified access key; on a failed authentication, the one the
    /// request names (if it looks like one); `None`: anonymous.
    pub principal: Option<&'a str>,
    pub operation: &'a str,
    pub method: &'a str,
    /// The request path without its query.
    pub resource: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub allowed: bool,
    pub reason: &'a str,
}

impl AuditEntry<'_> {
    /// The audit line (values escaped by serde_json).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "audit": "s3crypt",
            "principal": self.principal.unwrap_or("anonymous"),
            "operation": self.operation,
            "method": self.method,
            "resource": self.resource,
            "bucket": self.bucket,
            "key": self.key,
            "decision": self.decision(),
            "reason": self.reason,
        })
        .to_string()
    }

    pub fn decision(&self) -> &'static str {
        if self.allowed {
            "allow"
        } else {
            "deny"
        }
    }
}

/// The access key id a request names (`Credential=` of the Authorization
/// header or `X-Amz-Credential`), whether or not its signature verifies: the
/// audit trail of a refused request says which key was tried. `None` if
/// there is none or it is not shaped like an access key id.
pub fn claimed_access_key(path: &str, authorization: Option<&str>) -> Option<String> {
    let credential = match authorization {
        Some(value) => value.split(|c: char| c == ',' || c.is_ascii_whitespace()).find_map(|part| part.strip_prefix("Credential="))?.to_owned(),
        None => query_param(path, "X-Amz-Credential")?,
    };
    let id = credential.split('/').next()?;
    crate::policy::valid_access_key_id(id).then(|| id.to_owned())
}

/// The S3 operation's name for the access log: the classified operation, or
/// for requests passed through, the name S3 gives them where it is plain
/// from the request line (`GET` + `?acl` on a bucket: `GET bucket ?acl`).
pub fn operation_name(op: Operation, method: &str, path: &str) -> String {
    let (bucket, key) = bucket_and_key(path);
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let subresource = query.split('&').next().and_then(|p| p.split('=').next()).unwrap_or_default();
    match op {
        Operation::Unsupported(what) => what.to_owned(),
        Operation::PassThrough if bucket.is_empty() && method == "GET" => "ListBuckets".into(),
        Operation::PassThrough if key.is_empty() => match (method, subresource) {
            ("HEAD", "") => "HeadBucket".into(),
            ("PUT", "") => "CreateBucket".into(),
            ("DELETE", "") => "DeleteBucket".into(),
            ("POST", "delete") => "DeleteObjects".into(),
            ("GET", "uploads") => "ListMultipartUploads".into(),
            ("GET", "location") => "GetBucketLocation".into(),
            _ => format!("{method} bucket ?{subresource}"),
        },
        Operation::PassThrough => match (method, subresource) {
            ("DELETE", "" | "versionId") => "DeleteObject".into(),
            _ => format!("{method} object ?{subresource}"),
        },
        other => format!("{other:?}"),
    }
}

/// Collects the keys of a DeleteObjects body as it streams, and reads them
/// at its end with a strict parser: every key the backend will delete must be
/// one the gateway checked. A lenient scan lets `<Key >`, `<s3:Key>` (Go's
/// and most XML parsers take either as Key) or CDATA hide a key from the
/// policy, so anything but the plain form S3 clients send is `MalformedXML`.
#[derive(Default)]
pub struct DeleteKeys {
    body: Vec<u8>,
    pub keys: Vec<String>,
}

/// DeleteObjects bodies are at most 1000 keys of at most 1 KiB.
pub const MAX_DELETE_BODY: usize = 2 * 1024 * 1024;

impl DeleteKeys {
    pub fn push(&mut self, data: &[u8], end: bool) -> Result<(), S3Error> {
        if self.body.len() + data.len() > MAX_DELETE_BODY {
            return Err(S3Error::new(400, "MalformedXML", "The DeleteObjects request body is too large."));
        }
        self.body.extend_from_slice(data);
        if end {
            self.keys = delete_request_keys(&self.body).ok_or_else(|| {
                S3Error::new(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
            })?;
        }
        Ok(())
    }
}

/// The keys of a DeleteObjects body, or `None` unless it is exactly
/// `[<?xml ...?>] <Delete [attributes]> (<Object> <Key>..</Key> [<VersionId>,
/// <ETag>, <LastModifiedTime>, <Size>] </Object> | <Quiet>..</Quiet>)*
/// </Delete>` with white space between elements: no comments, CDATA,
/// DOCTYPE, namespace prefixes or attributes on inner elements.
fn delete_request_keys(body: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text).trim_start();
    if rest.starts_with("<?xml") {
        rest = rest.get(rest.find("?>")? + 2..)?.trim_start();
    }
    // `<Delete>` or `<Delete xmlns="...">` (quoted values may hold '>').
    rest = rest.strip_prefix("<Delete")?;
    if !rest.starts_with('>') {
        if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return None;
        }
        let mut quote = None;
        let end = rest.char_indices().find(|&(_, c)| match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                false
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                false
            }
            None => c == '>',
        })?;
        if rest.get(..end.0)?.trim_end().ends_with('/') {
            return None;
        }
        rest = rest.get(end.0..)?;
    }
    rest = rest.strip_prefix('>')?;
    let mut keys = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("</Delete>") {
            return after.trim().is_empty().then_some(keys);
        }
        if let Some((_, after)) = simple_element(rest, "Quiet") {
            rest = after;
            continue;
        }
        rest = rest.strip_prefix("<Object>")?;
        let mut key = None;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix("</Object>") {
                rest = after;
                break;
            }
            if let Some((text, after)) = simple_element(rest, "Key") {
                if key.replace(text).is_some() {
                    return None;
                }
                rest = after;
                continue;
            }
            let (_, after) = ["VersionId", "ETag", "LastModifiedTime", "Size"].iter().find_map(|tag| simple_element(rest, tag))?;
            rest = after;
        }
        keys.push(key?);
    }
}

/// `<tag>text</tag>` at the start of `rest`: the decoded text and what
/// follows.
fn simple_element<'a>(rest: &'a str, tag: &str) -> Option<(String, &'a str)> {
    let inner = rest.strip_prefix('<')?.strip_prefix(tag)?.strip_prefix('>')?;
    let end = inner.find('<')?;
    let after = inner.get(end..)?.strip_prefix("</")?.strip_prefix(tag)?.strip_prefix('>')?;
    Some((xml_text(inner.get(..end)?)?, after))
}

/// Character data as an XML parser reads it: line ends normalised, the five
/// named entities and character references (Go's encoder writes `&#34;`,
/// `&#xD;`) decoded; anything else (`&nbsp;`, a bare `&`) is refused.
fn xml_text(raw: &str) -> Option<String> {
    let raw = raw.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(at) = rest.find('&') {
        out.push_str(rest.get(..at)?);
        let entity_end = rest.get(at..)?.find(';')? + at;
        let entity = rest.get(at + 1..entity_end)?;
        out.push(match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let number = entity.strip_prefix('#')?;
                let code = match number.strip_prefix('x') {
                    Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => u32::from_str_radix(hex, 16).ok()?,
                    None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => number.parse().ok()?,
                    _ => return None,
                };
                char::from_u32(code)?
            }
        });
        rest = rest.get(entity_end + 1..)?;
    }
    out.push_str(rest);
    Some(out)
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
        let source = ("src".to_string(), "private/x".to_string(), None);
        let copy = |op, path: &str| {
            let (b, k) = bucket_and_key(path);
            access_of(op, "PUT", path, &b, &k, "", Some(&source)).to_string()
        };
        assert_eq!(copy(Operation::CopyObject, "/b/k"), "copy \"src\" \"private/x\" to \"b\" \"k\"");
        assert_eq!(copy(Operation::Unsupported("UploadPartCopy"), "/b/k?partNumber=1&uploadId=u"), "copy \"src\" \"private/x\" to \"b\" \"k\"");
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
    fn delete_keys_as_clients_write_them() {
        let keys = |body: &str| {
            let mut d = DeleteKeys::default();
            d.push(body.as_bytes(), true).map(|()| d.keys)
        };
        // boto3 / aws-sdk-go (character references for quotes and CR) / minio-py.
        let boto = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a b</Key></Object><Quiet>true</Quiet></Delete>";
        assert_eq!(keys(boto).unwrap(), vec!["a b".to_string()]);
        assert_eq!(keys("<Delete><Object><Key>&#34;q&#39;&#xD;</Key></Object></Delete>").unwrap(), vec!["\"q'\r".to_string()]);
        // A literal CR LF in text is a LF to an XML parser (a reference is not).
        assert_eq!(keys("<Delete><Object><Key>a\r\nb\rc</Key></Object></Delete>").unwrap(), vec!["a\nb\nc".to_string()]);
        assert_eq!(keys("<Delete>\n  <Quiet>false</Quiet>\n  <Object>\n    <Key>k</Key>\n    <VersionId>v</VersionId>\n  </Object>\n</Delete>\n").unwrap(), vec!["k".to_string()]);
        assert_eq!(keys("<Delete></Delete>").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn delete_keys_hidden_from_a_lenient_scan_are_refused() {
        // Each of these names private/x to some XML parser (the backend's),
        // while a search for "<Key>" finds nothing or something else.
        for body in [
            "<Delete><Object><Key >private/x</Key></Object></Delete>",
            "<Delete><Object ><Key>private/x</Key></Object></Delete>",
            "<Delete><s3:Object xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\"><s3:Key>private/x</s3:Key></s3:Object></Delete>",
            "<Delete><Object><Key>shared/<![CDATA[../private/x]]></Key></Object></Delete>",
            "<Delete><Object><Key>shared/</Key><Key>private/x</Key></Object></Delete>",
            "<Delete><!-- --><Object><Key>private/x</Key></Object></Delete>",
            "<!DOCTYPE d [<!ENTITY p \"private/x\">]><Delete><Object><Key>&p;</Key></Object></Delete>",
            "<Delete><Object><Key>a&nbsp;</Key></Object></Delete>",
            "<Delete><Object><Key>a & b</Key></Object></Delete>",
            "<Delete><Object><Key>&#+65;</Key></Object></Delete>",
            "<Delete><Object><VersionId>1</VersionId></Object></Delete>",
            "<Delete><Object><Key>k</Key></Object></Delete><Delete><Object><Key>private/x</Key></Object></Delete>",
            "<Delete><Object><Key>k</Key></Object>",
            "<Delete/>",
        ] {
            let mut d = DeleteKeys::default();
            assert_eq!(d.push(body.as_bytes(), true).unwrap_err().code, "MalformedXML", "{body}");
        }
    }

    #[test]
    fn audit_lines_are_json() {
        let decision = AuditEntry { principal: Some("AK\"x"), operation: "GetObject", method: "GET", resource: "/b/k\n", bucket: "b", key: "k\n", allowed: false, reason: "deny" };
        let line = decision.to_json();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!((v["principal"].as_str(), v["operation"].as_str(), v["key"].as_str(), v["decision"].as_str()), (Some("AK\"x"), Some("GetObject"), Some("k\n"), Some("deny")));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn claimed_access_keys() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(claimed_access_key("/b/k", Some(header)).as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(claimed_access_key("/b/k?X-Amz-Credential=AKIDEXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request", None).as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(claimed_access_key("/b/k", Some("AWS4-HMAC-SHA256 Credential=\"<x>\"/2013")), None);
        assert_eq!(claimed_access_key("/b/k", None), None);
    }

    #[test]
    fn operation_names() {
        let name = |op, method, path| operation_name(op, method, path);
        assert_eq!(name(Operation::PutObject, "PUT", "/b/k"), "PutObject");
        assert_eq!(name(Operation::PassThrough, "GET", "/"), "ListBuckets");
        assert_eq!(name(Operation::PassThrough, "POST", "/b?delete"), "DeleteObjects");
        assert_eq!(name(Operation::PassThrough, "DELETE", "/b/k"), "DeleteObject");
        assert_eq!(name(Operation::PassThrough, "PUT", "/b/k?tagging"), "PUT object ?tagging");
        assert_eq!(name(Operation::Unsupported("UploadPartCopy"), "PUT", "/b/k?partNumber=1&uploadId=x"), "UploadPartCopy");
    }
}
