//! SigV4 parsers and `sigv4::verify` on arbitrary request parts, plus the S3
//! request helpers they meet (`s3::classify`, `to_path_style`,
//! `percent_decode`, `query_param`).
//!
//! Input: the text of a filter/testdata/sigv4 vector (`name: value` lines
//! with access-key, secret and now; a blank line; the request line and
//! header lines), parsed leniently, so every seed is a real signed request.
//!
//! Invariants, besides never panicking:
//! * `verify` never accepts the request under another secret than the one
//!   given (run after a verification with the right secret, so a signing-key
//!   cache answering with a stale key would show); an accepted request's
//!   `Verified` is consistent (access key, timestamp, scope, 64-hex seed);
//! * `AmzDate::parse` accepts only the canonical form: it displays as its
//!   input; `Credential`, `AuthorizationV4` results are well formed and
//!   round-trip through their own parsers;
//! * `canonical_uri` output is fully encoded and idempotent;
//!   `canonical_query` does not depend on the order of the parameters;
//! * `s3::percent_decode(uri_encode(s)) == s`; `query_param` finds a value
//!   put with `replace_query_param`; `to_path_style` is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt_filter::s3::{self, Addressing, RequestLine};
use s3crypt_filter::sigv4::{
    canonical_headers, canonical_query, canonical_request, canonical_trailers, canonical_uri, parse_query, verify, AmzDate, AuthorizationV4, ContentSha256, Credential, PresignedQuery, RequestParts, Secret,
    SignedHeaders,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (meta, request) = text.split_once("\n\n").unwrap_or(("", &text));
    let field = |name: &str| meta.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": "))).unwrap_or_default();
    let (access_key, secret, now_text) = (field("access-key"), field("secret"), field("now"));

    let mut lines = request.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, rest) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let path = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            let name = name.to_ascii_lowercase();
            (if name == "host" { ":authority".to_string() } else { name }, value.to_string())
        })
        .collect();

    // Dates.
    for candidate in [now_text, path, method] {
        date_invariants(candidate);
    }
    for (_, value) in &headers {
        date_invariants(value.trim());
        let _ = AmzDate::parse_http_date(value.trim());
        let _ = ContentSha256::parse(value.trim());
        authorization_invariants(value);
        if let Ok(signed) = SignedHeaders::parse(value.trim()) {
            let _ = canonical_headers(&headers, &signed);
        }
    }

    // Paths and queries.
    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    let uri = canonical_uri(raw_path);
    assert!(uri.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~/%".contains(&b)), "canonical URI not encoded: {uri:?}");
    assert_eq!(canonical_uri(&uri), uri, "canonical_uri is not idempotent");
    let params = parse_query(query);
    let mut reversed = params.clone();
    reversed.reverse();
    for presigned in [false, true] {
        assert_eq!(canonical_query(&params, presigned), canonical_query(&reversed, presigned), "canonical query depends on parameter order");
    }
    if let Ok(q) = PresignedQuery::parse(&params) {
        assert!((1..=604_800).contains(&q.expires), "X-Amz-Expires out of range: {}", q.expires);
        let _ = Credential::parse(&q.credential);
    }
    if let Ok(signed) = SignedHeaders::parse("host;x-amz-content-sha256;x-amz-date") {
        let _ = canonical_request(method, raw_path, &params, false, &headers, &signed, "UNSIGNED-PAYLOAD");
    }
    let _ = canonical_trailers(data);
    s3_helpers(method, path, &headers, &text);

    // Verification: the given secret, then another one.
    let now = AmzDate::parse(now_text).map_or(UNIX_EPOCH + Duration::from_secs(1_768_471_872), |d| UNIX_EPOCH + Duration::from_secs(d.unix_seconds()));
    let request = RequestParts { method, path, headers: &headers };
    let right = |id: &str| (id == access_key).then(|| Secret::new(secret));
    let wrong = |id: &str| (id == access_key).then(|| Secret::new(format!("{secret}\u{1}not-the-secret")));
    if let Ok(v) = verify(&request, now, &right) {
        assert_eq!(v.access_key_id, access_key);
        assert!(v.seed_signature.len() == 64 && v.seed_signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let stamp = AmzDate::parse(&v.timestamp).expect("the verified timestamp is a canonical x-amz-date");
        assert!(v.scope.starts_with(&stamp.date_stamp()) && v.scope.ends_with("/s3/aws4_request"), "scope {:?} for {:?}", v.scope, v.timestamp);
        let skew = stamp.unix_seconds().abs_diff(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        assert!(v.presigned || skew <= 15 * 60, "a header-signed request {skew} s from now was accepted");
        if v.content_sha256.has_chunk_signatures() {
            assert!(v.chunk_signatures().is_some());
        }
    }
    if let Ok(v) = verify(&request, now, &wrong) {
        panic!("accepted under a secret the request was not signed with: {v:?}");
    }
    let _ = verify(&request, SystemTime::UNIX_EPOCH, &right);
});

fn date_invariants(text: &str) {
    if let Ok(d) = AmzDate::parse(text) {
        assert_eq!(d.to_string(), text, "AmzDate accepted a non-canonical time");
        assert_eq!(AmzDate::parse(&d.to_string()), Ok(d));
        assert_eq!(AmzDate::from_unix_seconds(d.unix_seconds()), d);
        assert_eq!(d.date_stamp(), text[..8]);
    }
}

fn authorization_invariants(value: &str) {
    let Ok(auth) = AuthorizationV4::parse(value) else { return };
    assert!(auth.signature.len() == 64 && auth.signature.bytes().all(|b| b.is_ascii_hexdigit()));
    let c = auth.credential;
    assert!(!c.access_key_id.is_empty() && !c.region.is_empty() && !c.service.is_empty());
    assert!(c.date.len() == 8 && c.date.bytes().all(|b| b.is_ascii_digit()));
    let again = format!("{}/{}", c.access_key_id, c.scope());
    assert_eq!(Credential::parse(&again), Ok(c), "a credential does not round-trip");
    assert!(auth.signed_headers.names().all(|n| !n.is_empty() && !n.bytes().any(|b| b.is_ascii_uppercase() || b == b';')));
    let rebuilt = format!("AWS4-HMAC-SHA256 Credential={again}, SignedHeaders={}, Signature={}", auth.signed_headers.as_str(), auth.signature);
    assert_eq!(AuthorizationV4::parse(&rebuilt), Ok(auth), "an Authorization header does not round-trip");
}

fn s3_helpers(method: &str, path: &str, headers: &[(String, String)], text: &str) {
    let host = headers.iter().find(|(n, _)| n == ":authority").map_or("gw.example", |(_, v)| v.trim());
    let addressing = Addressing { virtual_host_suffixes: vec!["s3.example.com".into(), "gw.example".into()] };
    let has_copy_source = headers.iter().any(|(n, _)| n == "x-amz-copy-source");
    for addressing in [&addressing, &Addressing::default()] {
        let _ = s3::classify(&RequestLine { method, path, host, has_copy_source, metadata_directive_replace: false }, addressing);
        if let Some((new_path, new_host)) = s3::to_path_style(path, host, addressing) {
            assert_eq!(s3::to_path_style(&new_path, &new_host, addressing), None, "to_path_style is not idempotent");
            let _ = s3::classify(&RequestLine { method, path: &new_path, host: &new_host, has_copy_source, metadata_directive_replace: true }, addressing);
        }
    }
    let _ = s3::percent_decode(path);
    assert_eq!(s3::percent_decode(&s3::uri_encode(text)), text, "percent_decode(uri_encode(s)) != s");
    let value = text.get(..text.len().min(64)).unwrap_or_default();
    let replaced = s3::replace_query_param("/b/k?uploadId=x&partNumber=1", "uploadId", value);
    assert_eq!(s3::query_param(&replaced, "uploadId").as_deref(), Some(value), "query_param does not find the value replace_query_param put");
    let _ = s3::query_param(path, "uploadId");
}
