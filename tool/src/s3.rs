//! A small S3 client for the few calls the tool makes straight to the backend
//! (GetObject, HeadObject, ListObjectsV2, CopyObject) and the KMS Decrypt
//! call: path-style URLs, SigV4 header signing with the filter's own
//! canonical-request code (`sigv4::authorization`), a blocking HTTP client.

use anyhow::{bail, Context, Result};
use s3crypt_filter::sigv4::{self, AmzDate, Secret, EMPTY_SHA256};
use s3crypt_filter::xml;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// Credentials from the usual AWS variables.
pub struct Credentials {
    pub access_key_id: String,
    pub secret: Secret,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn from_env() -> Result<Credentials> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key_id = get("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set (the backend's credentials, not the gateway's)")?;
        let secret = get("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
        Ok(Credentials { access_key_id, secret: Secret::new(secret), session_token: get("AWS_SESSION_TOKEN") })
    }
}

/// `scheme://host[:port][/base]` split into its parts; default ports dropped
/// so that the signed `host` is the one the HTTP client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    pub authority: String,
    /// A path prefix some S3 services sit under (usually empty), without a trailing `/`.
    pub base: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let (scheme, rest) = url.split_once("://").context("the endpoint must be a URL such as https://s3.eu-west-1.amazonaws.com")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            bail!("endpoint {url:?}: only http and https are supported");
        }
        let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        if authority.is_empty() || authority.contains(['?', '#', '@']) {
            bail!("endpoint {url:?}: expected scheme://host[:port]");
        }
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let authority = authority.strip_suffix(default_port).unwrap_or(authority).to_owned();
        let base = base.trim_end_matches('/');
        let base = if base.is_empty() { String::new() } else { format!("/{base}") };
        Ok(Endpoint { scheme, authority, base })
    }
}

/// `/bucket/key` with every key segment URI-encoded as SigV4 expects (`/` kept).
pub fn object_path(base: &str, bucket: &str, key: Option<&str>) -> String {
    let mut path = format!("{base}/{}", s3crypt_filter::s3::uri_encode(bucket));
    if let Some(key) = key {
        path.push('/');
        let segments: Vec<String> = key.split('/').map(s3crypt_filter::s3::uri_encode).collect();
        path.push_str(&segments.join("/"));
    }
    path
}

pub struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    region: String,
    service: &'static str,
    credentials: Credentials,
}

/// A response whose status the caller checks.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ureq::Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The S3 or KMS error as text: status, code and message from the body.
    pub fn error_text(mut self) -> String {
        let body = self.body.with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        let code = xml::element_text(&body, "Code").map(xml::unescape);
        let message = xml::element_text(&body, "Message").map(xml::unescape);
        match (code, message) {
            (Some(c), Some(m)) => format!("HTTP {} {c}: {m}", self.status),
            (Some(c), None) => format!("HTTP {} {c}", self.status),
            _ if body.trim().is_empty() => format!("HTTP {}", self.status),
            _ => format!("HTTP {}: {}", self.status, body.trim().chars().take(300).collect::<String>()),
        }
    }
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// One page of ListObjectsV2.
#[derive(Debug, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<Listed>,
    pub next_token: Option<String>,
}

impl Client {
    pub fn new(endpoint: Endpoint, region: String, service: &'static str, credentials: Credentials) -> Client {
        let config = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build();
        Client { agent: ureq::Agent::new_with_config(config), endpoint, region, service, credentials }
    }

    /// Sends a signed request. `headers` are extra headers (lower-case
    /// names), all signed; `body` is sent as is.
    pub fn send(&self, method: &str, path: &str, query: &str, headers: &[(String, String)], body: &[u8]) -> Result<Response> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?.as_secs();
        let timestamp = AmzDate::from_unix_seconds(now);
        let payload_hash = if body.is_empty() { EMPTY_SHA256.to_owned() } else { hex::encode(Sha256::digest(body)) };
        let mut signed: Vec<(String, String)> = headers.to_vec();
        signed.push(("host".into(), self.endpoint.authority.clone()));
        signed.push(("x-amz-date".into(), timestamp.to_string()));
        signed.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        if let Some(token) = &self.credentials.session_token {
            signed.push(("x-amz-security-token".into(), token.clone()));
        }
        let authorization = sigv4::authorization(&self.credentials.access_key_id, &self.credentials.secret, &timestamp, &self.region, self.service, method, path, query, &signed, &payload_hash)
            .map_err(|e| anyhow::anyhow!("cannot sign the request: {e}"))?;
        let url = if query.is_empty() { format!("{}://{}{path}", self.endpoint.scheme, self.endpoint.authority) } else { format!("{}://{}{path}?{query}", self.endpoint.scheme, self.endpoint.authority) };
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in signed.iter().filter(|(n, _)| n != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        request = request.header("authorization", authorization);
        // GET and HEAD carry no body at all; a PUT (CopyObject) carries an
        // empty one, with the Content-Length S3 requires.
        let response = if body.is_empty() && (method == "GET" || method == "HEAD") {
            self.agent.run(request.body(()).with_context(|| format!("building the request for {url}"))?)
        } else {
            self.agent.run(request.body(body.to_vec()).with_context(|| format!("building the request for {url}"))?)
        }
        .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        Ok(Response { status, headers, body: response.into_body() })
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Response> {
        self.send("GET", &object_path(&self.endpoint.base, bucket, Some(key)), "", &[], &[])
    }

    pub fn head_object(&self, bucket: &str, key: &str) -> Result<Response> {
        self.send("HEAD", &object_path(&self.endpoint.base, bucket, Some(key)), "", &[], &[])
    }

    /// One page of ListObjectsV2 after `start_after` (exclusive) or at `token`.
    pub fn list_page(&self, bucket: &str, prefix: &str, start_after: Option<&str>, token: Option<&str>) -> Result<ListPage> {
        let enc = s3crypt_filter::s3::uri_encode;
        let mut query = format!("list-type=2&prefix={}", enc(prefix));
        if let Some(token) = token {
            query.push_str(&format!("&continuation-token={}", enc(token)));
        } else if let Some(after) = start_after {
            query.push_str(&format!("&start-after={}", enc(after)));
        }
        let response = self.send("GET", &object_path(&self.endpoint.base, bucket, None), &query, &[], &[])?;
        if response.status != 200 {
            bail!("listing s3://{bucket}/{prefix}: {}", response.error_text());
        }
        let mut body = response.body;
        let text = body.with_config().limit(64 * 1024 * 1024).read_to_string().context("reading the listing")?;
        parse_list_page(&text)
    }

    /// CopyObject of an object onto itself with the given metadata and
    /// headers (`x-amz-metadata-directive: REPLACE`), only if its ETag is
    /// still `etag`. The backend copies the body server-side. The outer error
    /// is a failed exchange; the inner one, the backend's refusal.
    pub fn copy_onto_itself(&self, bucket: &str, key: &str, etag: &str, headers: &[(String, String)]) -> Result<Result<(), String>> {
        let path = object_path(&self.endpoint.base, bucket, Some(key));
        let mut all = headers.to_vec();
        all.push(("x-amz-copy-source".into(), object_path("", bucket, Some(key))));
        all.push(("x-amz-metadata-directive".into(), "REPLACE".into()));
        all.push(("x-amz-copy-source-if-match".into(), etag.to_owned()));
        let response = self.send("PUT", &path, "", &all, &[])?;
        if response.status != 200 {
            return Ok(Err(response.error_text()));
        }
        // S3 can answer 200 and still fail the copy, in the body.
        let mut body = response.body;
        let text = body.with_config().limit(1024 * 1024).read_to_string().context("reading the CopyObject answer")?;
        if text.contains("<Error>") {
            let code = xml::element_text(&text, "Code").map(xml::unescape).unwrap_or_default();
            let message = xml::element_text(&text, "Message").map(xml::unescape).unwrap_or_default();
            return Ok(Err(format!("{code}: {message}")));
        }
        Ok(Ok(()))
    }
}

pub fn parse_list_page(text: &str) -> Result<ListPage> {
    if !text.contains("<ListBucketResult") {
        bail!("the listing is not a ListObjectsV2 answer");
    }
    let mut objects = Vec::new();
    let mut problem = None;
    let mut rewriter = xml::RecordRewriter::new(&["Contents"]);
    let mut sink = Vec::new();
    rewriter.push(text.as_bytes(), true, &mut sink, &mut |_, record| {
        let key = xml::element_text(record, "Key").map(xml::unescape);
        let size = xml::element_text(record, "Size").and_then(|s| s.trim().parse().ok());
        match (key, size) {
            (Some(key), Some(size)) => objects.push(Listed { key, size }),
            _ => problem = Some(record.chars().take(200).collect::<String>()),
        }
        None
    });
    if let Some(record) = problem {
        bail!("a listing entry has no Key or Size: {record}");
    }
    let truncated = xml::element_text(text, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next_token = xml::element_text(text, "NextContinuationToken").map(xml::unescape);
    if truncated && next_token.is_none() {
        bail!("the listing is truncated but has no NextContinuationToken");
    }
    Ok(ListPage { objects, next_token: if truncated { next_token } else { None } })
}

/// Splits `s3://bucket/key` (or `s3://bucket/prefix`).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://s3.eu-west-1.amazonaws.com:443/").unwrap();
        assert_eq!(e, Endpoint { scheme: "https".into(), authority: "s3.eu-west-1.amazonaws.com".into(), base: String::new() });
        let e = Endpoint::parse("http://127.0.0.1:9000/minio/").unwrap();
        assert_eq!((e.authority.as_str(), e.base.as_str()), ("127.0.0.1:9000", "/minio"));
        assert!(Endpoint::parse("s3.amazonaws.com").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(object_path("", "b", Some("dir/a b+c~é.txt")), "/b/dir/a%20b%2Bc~%C3%A9.txt");
        assert_eq!(object_path("/base", "b", None), "/base/b");
    }

    #[test]
    fn listing_pages() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken><Contents><Key>a&amp;b</Key><Size>41</Size><ETag>"x"</ETag></Contents><Contents><Key>c</Key><Size>0</Size></Contents></ListBucketResult>"#;
        let page = parse_list_page(xml).unwrap();
        assert_eq!(page.objects, vec![Listed { key: "a&b".into(), size: 41 }, Listed { key: "c".into(), size: 0 }]);
        assert_eq!(page.next_token.as_deref(), Some("t&1"));
        let last = parse_list_page(&xml.replace("<IsTruncated>true", "<IsTruncated>false")).unwrap();
        assert_eq!(last.next_token, None);
        assert!(parse_list_page("<Error><Code>NoSuchBucket</Code></Error>").is_err());
    }

    #[test]
    fn s3_urls() {
        assert_eq!(parse_s3_url("s3://b/k/x"), Some(("b".into(), "k/x".into())));
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_s3_url("/tmp/x"), None);
    }
}
