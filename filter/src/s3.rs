//! S3 request classification and S3-style error responses. No host calls.

/// The operations the filter acts on; everything else passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    PutObject,
    GetObject,
    HeadObject,
    /// CopyObject (metadata COPY or REPLACE: see `copy`).
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// ListObjects (V1), ListObjectsV2, ListObjectVersions: sizes rewritten.
    ListObjects,
    /// Operations that would store plaintext, lose the envelope or leak
    /// ciphertext-derived data until they are supported: refused.
    Unsupported(&'static str),
    /// Bucket operations, listings, deletes, tagging, ACLs...
    PassThrough,
}

impl Operation {
    /// The same request in a bucket configured to stay plaintext
    /// (`"encrypt": false`). Listings are not resized, and what is refused
    /// only because it would store plaintext passes. Uploads still go
    /// through the filter (`put::plan_plaintext`): aws-chunked framing and
    /// the client's digests are the filter's to take off and check, since
    /// the backend request is re-signed. Uploads the gateway started there
    /// (`gateway_upload`: their id is the gateway's token) stay encrypted,
    /// reads keep decrypting objects that carry an envelope, and what would
    /// expose an encrypted object's ciphertext stays refused.
    pub fn in_plaintext_bucket(self, gateway_upload: bool) -> Operation {
        match self {
            Operation::ListObjects => Operation::PassThrough,
            Operation::Unsupported("UploadPartCopy") if !gateway_upload => Operation::PassThrough,
            Operation::Unsupported("POST object (browser form upload)") => Operation::PassThrough,
            other => other,
        }
    }
}

/// Where the bucket name sits in the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addressing {
    /// Host suffixes for virtual-hosted requests (`bucket.<suffix>`). Empty:
    /// every request is path-style.
    pub virtual_host_suffixes: Vec<String>,
}

/// The parts of a request line the classification looks at.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub has_copy_source: bool,
    pub metadata_directive_replace: bool,
}

/// True when the query string has parameter `name` (with or without value).
pub fn has_query_param(query: &str, name: &str) -> bool {
    query.split('&').any(|p| p.split('=').next() == Some(name))
}

/// The percent-decoded value of query parameter `name` in `path?query`.
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// How many times query parameter `name` appears in `path?query`.
pub fn query_param_count(path: &str, name: &str) -> usize {
    path.split_once('?').map_or(0, |(_, query)| query.split('&').filter(|p| p.split('=').next() == Some(name)).count())
}

/// `path` with the value of query parameter `name` replaced by `value`
/// (encoded here as SigV4 does).
pub fn replace_query_param(path: &str, name: &str, value: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| {
            let k = p.split_once('=').map_or(p, |(k, _)| k);
            if k == name {
                format!("{k}={}", uri_encode(value))
            } else {
                p.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Percent-decoding of a URI component (`+` is not a space in S3 paths).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// URI encoding as SigV4 specifies it: unreserved characters stay, every
/// other byte becomes %XX (upper-case hex).
pub fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query parameters of the listing operations; a bucket GET with only these
/// is ListObjects (V1), ListObjectsV2 or ListObjectVersions.
const LISTING_PARAMS: &[&str] = &[
    "list-type", "prefix", "delimiter", "encoding-type", "marker", "max-keys", "continuation-token", "fetch-owner", "start-after", "versions", "key-marker",
    "version-id-marker", "x-id", "optional-object-attributes",
];

fn is_listing(query: &str) -> bool {
    query.split('&').filter(|p| !p.is_empty()).all(|p| LISTING_PARAMS.contains(&p.split('=').next().unwrap_or_default()))
}

/// Splits `path?query` into the object key part (after the bucket) and query.
fn key_and_query<'a>(line: &RequestLine<'a>, addressing: &Addressing) -> (&'a str, &'a str) {
    let (path, query) = line.path.split_once('?').unwrap_or((line.path, ""));
    let host = line.host.rsplit_once(':').map_or(line.host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { line.host });
    let virtual_hosted = addressing.virtual_host_suffixes.iter().any(|s| host.len() > s.len() + 1 && host.ends_with(s.as_str()) && host.as_bytes().get(host.len() - s.len() - 1) == Some(&b'.'));
    let key = if virtual_hosted {
        path.strip_prefix('/').unwrap_or(path)
    } else {
        // path-style: /bucket/key
        let rest = path.strip_prefix('/').unwrap_or(path);
        rest.split_once('/').map_or("", |(_, key)| key)
    };
    (key, query)
}

/// A virtual-hosted request (`Host: bucket.<suffix>`, path `/key`) in path
/// style (`Host: <suffix>`, path `/bucket/key`), the form the gateway's routes
/// and the rest of the filter use. `None` if it is path style already.
pub fn to_path_style(path: &str, host: &str, addressing: &Addressing) -> Option<(String, String)> {
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host, None),
    };
    let name = name.to_ascii_lowercase();
    addressing.virtual_host_suffixes.iter().find_map(|suffix| {
        let bucket = name.strip_suffix(suffix.as_str())?.strip_suffix('.')?;
        if bucket.is_empty() {
            return None;
        }
        let new_host = match port {
            Some(p) => format!("{suffix}:{p}"),
            None => suffix.clone(),
        };
        Some((format!("/{bucket}{path}"), new_host))
    })
}

pub fn classify(line: &RequestLine<'_>, addressing: &Addressing) -> Operation {
    let (key, query) = key_and_query(line, addressing);
    let q = |name| has_query_param(query, name);
    if key.is_empty() {
        // Bucket level. A POST to a bucket without a subresource is a browser
        // form upload: it would store plaintext.
        if line.method == "POST" && !q("delete") {
            return Operation::Unsupported("POST object (browser form upload)");
        }
        if line.method == "GET" && is_listing(query) && !path_is_service(line, addressing) {
            return Operation::ListObjects;
        }
        return Operation::PassThrough;
    }
    match line.method {
        "PUT" if line.has_copy_source && q("partNumber") => Operation::Unsupported("UploadPartCopy"),
        "PUT" if q("partNumber") && q("uploadId") => Operation::UploadPart,
        "PUT" if q("partNumber") || q("uploadId") => Operation::Unsupported("PUT with only one of partNumber and uploadId"),
        "PUT" if line.has_copy_source => Operation::CopyObject,
        "PUT" if is_object_subresource(query) => Operation::PassThrough,
        "PUT" => Operation::PutObject,
        "POST" if q("uploads") => Operation::CreateMultipartUpload,
        "POST" if q("uploadId") => Operation::CompleteMultipartUpload,
        "DELETE" if q("uploadId") => Operation::AbortMultipartUpload,
        "POST" if q("select") => Operation::Unsupported("SelectObjectContent"),
        "POST" if q("restore") => Operation::PassThrough,
        "POST" => Operation::Unsupported("POST on an object"),
        "GET" if q("attributes") => Operation::Unsupported("GetObjectAttributes"),
        "GET" if q("uploadId") => Operation::ListParts,
        "GET" if q("torrent") => Operation::Unsupported("GetObjectTorrent"),
        "GET" if is_object_subresource(query) => Operation::PassThrough,
        "GET" => Operation::GetObject,
        "HEAD" => Operation::HeadObject,
        _ => Operation::PassThrough,
    }
}

/// `GET /` (ListBuckets) has neither bucket nor key.
fn path_is_service(line: &RequestLine<'_>, addressing: &Addressing) -> bool {
    let path = line.path.split('?').next().unwrap_or("/");
    let host = line.host.rsplit_once(':').map_or(line.host, |(h, _)| h);
    let virtual_hosted = addressing.virtual_host_suffixes.iter().any(|s| host.ends_with(&format!(".{s}")));
    !virtual_hosted && path.trim_matches('/').is_empty()
}

/// Object subresources whose bodies are not object data.
fn is_object_subresource(query: &str) -> bool {
    ["acl", "tagging", "retention", "legal-hold"].iter().any(|name| has_query_param(query, name))
}

/// An S3 error as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Error {
    pub status: u32,
    pub code: &'static str,
    pub message: String,
    /// Headers the reply carries besides the XML body (e.g. the ETag of a 304).
    pub headers: Vec<(String, String)>,
}

impl S3Error {
    pub fn new(status: u32, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error { status, code, message: message.into(), headers: Vec::new() }
    }

    /// 304 Not Modified: no body, the ETag and Last-Modified the client knows.
    pub fn not_modified(etag: &str, last_modified: Option<&str>) -> S3Error {
        let mut headers = vec![("etag".to_string(), etag.to_string())];
        headers.extend(last_modified.map(|l| ("last-modified".to_string(), l.to_string())));
        S3Error { status: 304, code: "NotModified", message: String::new(), headers }
    }

    /// Whether the reply has an XML body (a 304 has none).
    pub fn has_body(&self) -> bool {
        self.status != 304
    }

    /// The XML body S3 sends with an error.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            self.code,
            xml_escape(&self.message),
            xml_escape(resource),
            xml_escape(request_id)
        )
    }
}

pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, path: &str) -> Operation {
        op_with(method, path, false, false)
    }

    fn op_with(method: &str, path: &str, copy: bool, replace: bool) -> Operation {
        let line = RequestLine { method, path, host: "127.0.0.1:10000", has_copy_source: copy, metadata_directive_replace: replace };
        classify(&line, &Addressing::default())
    }

    #[test]
    fn object_data_operations() {
        assert_eq!(op("PUT", "/b/k"), Operation::PutObject);
        assert_eq!(op("PUT", "/b/dir/k?x-id=PutObject"), Operation::PutObject);
        assert_eq!(op("GET", "/b/k"), Operation::GetObject);
        assert_eq!(op("GET", "/b/k?versionId=3"), Operation::GetObject);
        assert_eq!(op("HEAD", "/b/k"), Operation::HeadObject);
        assert_eq!(op_with("PUT", "/b/k", true, false), Operation::CopyObject);
        assert_eq!(op_with("PUT", "/b/k", true, true), Operation::CopyObject);
    }

    #[test]
    fn bucket_and_subresource_operations_pass() {
        for (m, p) in [("PUT", "/b"), ("GET", "/b?location"), ("DELETE", "/b/k"), ("PUT", "/b/k?tagging"), ("GET", "/b/k?acl"), ("POST", "/b?delete"), ("HEAD", "/b")] {
            assert_eq!(op(m, p), Operation::PassThrough, "{m} {p}");
        }
    }

    #[test]
    fn multipart_and_listing_operations() {
        assert_eq!(op("POST", "/b/k?uploads"), Operation::CreateMultipartUpload);
        assert_eq!(op("PUT", "/b/k?partNumber=1&uploadId=x"), Operation::UploadPart);
        assert_eq!(op("POST", "/b/k?uploadId=x"), Operation::CompleteMultipartUpload);
        assert_eq!(op("DELETE", "/b/k?uploadId=x"), Operation::AbortMultipartUpload);
        assert_eq!(op("GET", "/b/k?uploadId=x&max-parts=2"), Operation::ListParts);
        assert_eq!(op("GET", "/b?list-type=2&prefix=a%2F"), Operation::ListObjects);
        assert_eq!(op("GET", "/b"), Operation::ListObjects);
        assert_eq!(op("GET", "/b?versions&prefix=x"), Operation::ListObjects);
        assert_eq!(op("GET", "/b?uploads"), Operation::PassThrough);
        assert_eq!(op("GET", "/b?acl"), Operation::PassThrough);
        assert_eq!(op("GET", "/"), Operation::PassThrough);
    }

    #[test]
    fn query_helpers() {
        assert_eq!(query_param("/b/k?partNumber=2&uploadId=a%2Bb%7E", "uploadId").as_deref(), Some("a+b~"));
        assert_eq!(query_param("/b/k?uploads", "uploads").as_deref(), Some(""));
        assert_eq!(query_param("/b/k", "x"), None);
        assert_eq!((query_param_count("/b?prefix=a&prefix=b&prefixes=c", "prefix"), query_param_count("/b?list-type=2", "prefix"), query_param_count("/b", "prefix")), (2, 0, 0));
        assert_eq!(replace_query_param("/b/k?uploadId=long&partNumber=1", "uploadId", "a+b/c"), "/b/k?uploadId=a%2Bb%2Fc&partNumber=1");
    }

    #[test]
    fn operations_that_would_lose_data_are_refused() {
        for (m, p) in [("PUT", "/b/k?partNumber=1"), ("POST", "/b"), ("POST", "/b/k?select&select-type=2")] {
            assert!(matches!(op(m, p), Operation::Unsupported(_)), "{m} {p}");
        }
    }

    #[test]
    fn plaintext_buckets_pass_writes_but_keep_gateway_uploads_and_reads() {
        assert_eq!(op("GET", "/b?list-type=2").in_plaintext_bucket(false), Operation::PassThrough);
        assert_eq!(op("POST", "/b").in_plaintext_bucket(false), Operation::PassThrough);
        let copy = RequestLine { method: "PUT", path: "/b/k?partNumber=1&uploadId=x", host: "", has_copy_source: true, metadata_directive_replace: false };
        assert_eq!(classify(&copy, &Addressing::default()).in_plaintext_bucket(false), Operation::PassThrough);
        assert!(matches!(classify(&copy, &Addressing::default()).in_plaintext_bucket(true), Operation::Unsupported(_)));
        for (m, p) in [("PUT", "/b/k"), ("POST", "/b/k?uploads"), ("PUT", "/b/k?partNumber=1&uploadId=x"), ("POST", "/b/k?uploadId=x"), ("GET", "/b/k?uploadId=x")] {
            assert_eq!(op(m, p).in_plaintext_bucket(false), op(m, p), "{m} {p}: handled by the filter without encryption");
        }
        assert!(matches!(op("PUT", "/b/k?partNumber=1").in_plaintext_bucket(false), Operation::Unsupported(_)));
        assert_eq!(op("GET", "/b/k").in_plaintext_bucket(false), Operation::GetObject);
        assert_eq!(op("HEAD", "/b/k").in_plaintext_bucket(false), Operation::HeadObject);
        assert!(matches!(op("POST", "/b/k?select&select-type=2").in_plaintext_bucket(false), Operation::Unsupported(_)));
    }

    #[test]
    fn virtual_hosted_requests() {
        let addressing = Addressing { virtual_host_suffixes: vec!["s3.example.com".into()] };
        let line = |path| RequestLine { method: "PUT", path, host: "bucket.s3.example.com:443", has_copy_source: false, metadata_directive_replace: false };
        assert_eq!(classify(&line("/key"), &addressing), Operation::PutObject);
        assert_eq!(classify(&line("/"), &addressing), Operation::PassThrough);
    }

    #[test]
    fn virtual_hosted_to_path_style() {
        let addressing = Addressing { virtual_host_suffixes: vec!["s3.example.com".into()] };
        assert_eq!(to_path_style("/a/b?x=1", "Photos.s3.example.com:8443", &addressing), Some(("/photos/a/b?x=1".into(), "s3.example.com:8443".into())));
        assert_eq!(to_path_style("/?list-type=2", "b.s3.example.com", &addressing), Some(("/b/?list-type=2".into(), "s3.example.com".into())));
        assert_eq!(to_path_style("/b/k", "s3.example.com", &addressing), None);
        assert_eq!(to_path_style("/b/k", "127.0.0.1:10000", &addressing), None);
        assert_eq!(to_path_style("/k", "evil-s3.example.com", &addressing), None);
    }

    #[test]
    fn error_xml_is_escaped() {
        let xml = S3Error::new(400, "BadDigest", "a<b").to_xml("/b/k&", "id");
        assert!(xml.contains("<Code>BadDigest</Code><Message>a&lt;b</Message><Resource>/b/k&amp;</Resource>"));
    }
}
