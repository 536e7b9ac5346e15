//! S3 request classification and S3-style error responses. No host calls.

/// The operations the filter acts on; everything else passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    PutObject,
    GetObject,
    HeadObject,
    /// CopyObject keeping the source's metadata (the envelope travels with it).
    CopyObjectKeepMetadata,
    /// Operations that would store plaintext, lose the envelope or leak
    /// ciphertext-derived data until they are supported: refused.
    Unsupported(&'static str),
    /// Bucket operations, listings, deletes, tagging, ACLs...
    PassThrough,
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

pub fn classify(line: &RequestLine<'_>, addressing: &Addressing) -> Operation {
    let (key, query) = key_and_query(line, addressing);
    let q = |name| has_query_param(query, name);
    if key.is_empty() {
        // Bucket level. A POST to a bucket without a subresource is a browser
        // form upload: it would store plaintext.
        if line.method == "POST" && !q("delete") {
            return Operation::Unsupported("POST object (browser form upload)");
        }
        return Operation::PassThrough;
    }
    match line.method {
        "PUT" if line.has_copy_source && q("partNumber") => Operation::Unsupported("UploadPartCopy"),
        "PUT" if q("partNumber") || q("uploadId") => Operation::Unsupported("UploadPart"),
        "PUT" if line.has_copy_source => {
            if line.metadata_directive_replace {
                Operation::Unsupported("CopyObject with x-amz-metadata-directive REPLACE")
            } else {
                Operation::CopyObjectKeepMetadata
            }
        }
        "PUT" if is_object_subresource(query) => Operation::PassThrough,
        "PUT" => Operation::PutObject,
        "POST" if q("uploads") => Operation::Unsupported("CreateMultipartUpload"),
        "POST" if q("uploadId") => Operation::Unsupported("CompleteMultipartUpload"),
        "POST" if q("select") => Operation::Unsupported("SelectObjectContent"),
        "POST" if q("restore") => Operation::PassThrough,
        "POST" => Operation::Unsupported("POST on an object"),
        "GET" | "HEAD" if q("partNumber") => Operation::Unsupported("GetObject with partNumber"),
        "GET" if q("attributes") => Operation::Unsupported("GetObjectAttributes"),
        "GET" if q("uploadId") => Operation::Unsupported("ListParts"),
        "GET" if q("torrent") => Operation::Unsupported("GetObjectTorrent"),
        "GET" if is_object_subresource(query) => Operation::PassThrough,
        "GET" => Operation::GetObject,
        "HEAD" => Operation::HeadObject,
        _ => Operation::PassThrough,
    }
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
}

impl S3Error {
    pub fn new(status: u32, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error { status, code, message: message.into() }
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
        assert_eq!(op_with("PUT", "/b/k", true, false), Operation::CopyObjectKeepMetadata);
    }

    #[test]
    fn bucket_and_subresource_operations_pass() {
        for (m, p) in [("PUT", "/b"), ("GET", "/b?list-type=2"), ("GET", "/b/"), ("DELETE", "/b/k"), ("PUT", "/b/k?tagging"), ("GET", "/b/k?acl"), ("POST", "/b?delete"), ("HEAD", "/b")] {
            assert_eq!(op(m, p), Operation::PassThrough, "{m} {p}");
        }
    }

    #[test]
    fn operations_that_would_lose_data_are_refused() {
        for (m, p) in [("POST", "/b/k?uploads"), ("PUT", "/b/k?partNumber=1&uploadId=x"), ("POST", "/b/k?uploadId=x"), ("POST", "/b"), ("GET", "/b/k?partNumber=1"), ("POST", "/b/k?select&select-type=2")] {
            assert!(matches!(op(m, p), Operation::Unsupported(_)), "{m} {p}");
        }
        assert!(matches!(op_with("PUT", "/b/k", true, true), Operation::Unsupported(_)));
    }

    #[test]
    fn virtual_hosted_requests() {
        let addressing = Addressing { virtual_host_suffixes: vec!["s3.example.com".into()] };
        let line = |path| RequestLine { method: "PUT", path, host: "bucket.s3.example.com:443", has_copy_source: false, metadata_directive_replace: false };
        assert_eq!(classify(&line("/key"), &addressing), Operation::PutObject);
        assert_eq!(classify(&line("/"), &addressing), Operation::PassThrough);
    }

    #[test]
    fn error_xml_is_escaped() {
        let xml = S3Error::new(400, "BadDigest", "a<b").to_xml("/b/k&", "id");
        assert!(xml.contains("<Code>BadDigest</Code><Message>a&lt;b</Message><Resource>/b/k&amp;</Resource>"));
    }
}
