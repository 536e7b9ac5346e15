//! Multipart uploads and listings: request edits and XML body rewrites.
//! Pure: the glue applies the edits and feeds body pieces.

use crate::cipher::{Suite, KEY_LEN};
use crate::config::{Settings, WriteSpec};
use crate::envelope::{Envelope, Kek, WrappedDek, METADATA_HEADER};
use crate::put::{envelope_error, plaintext_integrity_headers, HeaderEdits};
use crate::read::opaque_etag;
use crate::s3::{query_param, replace_query_param, xml_escape, S3Error};
use crate::sizes;
use crate::upload_id::{self, ClientUploadId};
use crate::xml::{element_text, remove_elements, replace_element_text, unescape, RecordRewriter};

use zeroize::Zeroizing;

/// The data key of an upload being created, kept until the response names
/// the backend's upload id.
pub struct PendingUpload {
    dek: Zeroizing<[u8; KEY_LEN]>,
    suite: Suite,
    chunk_size: u32,
    /// The KEK that seals the upload id (the envelope's).
    key_id: String,
    /// Strict KMS mode: the data key's `CiphertextBlob` goes in the upload id.
    kms_blob: Option<Vec<u8>>,
}

impl PendingUpload {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// CreateMultipartUpload: a new data key, its envelope as the object's
/// metadata (S3 applies it to the completed object).
/// `write`: the bucket's key and cipher (`Settings::bucket_write`).
pub fn plan_create(settings: &Settings, write: &WriteSpec) -> Result<(HeaderEdits, PendingUpload), S3Error> {
    let (envelope, dek) = settings.keyring.new_object_under(&write.key_id, write.suite, write.chunk_size, None).map_err(envelope_error)?;
    let mut edits = HeaderEdits { remove: plaintext_integrity_headers(), set: Vec::new() };
    edits.set.push((METADATA_HEADER.into(), envelope.encode()));
    Ok((edits, PendingUpload { dek, suite: write.suite, chunk_size: write.chunk_size, key_id: write.key_id.clone(), kms_blob: None }))
}

/// CreateMultipartUpload in strict KMS mode, once the KMS made the data key:
/// `envelope` carries its `CiphertextBlob`.
pub fn plan_create_kms(envelope: &Envelope, dek: &[u8; KEY_LEN]) -> (HeaderEdits, PendingUpload) {
    let mut edits = HeaderEdits { remove: plaintext_integrity_headers(), set: Vec::new() };
    edits.set.push((METADATA_HEADER.into(), envelope.encode()));
    let kms_blob = match &envelope.wrapped_dek {
        WrappedDek::Kms(blob) => Some(blob.clone()),
        WrappedDek::Kek(_) => None,
    };
    (edits, PendingUpload { dek: Zeroizing::new(*dek), suite: envelope.suite, chunk_size: envelope.chunk_size, key_id: envelope.key_id.clone(), kms_blob })
}

/// Requests naming an upload: the client's id becomes the backend's in the
/// path. Returns the new path and the parsed id (`None`: an upload that was
/// not started through the gateway).
pub fn backend_path(path: &str) -> (String, Option<ClientUploadId>) {
    match query_param(path, "uploadId").as_deref().and_then(upload_id::parse) {
        Some(id) => (replace_query_param(path, "uploadId", &id.backend_id), Some(id)),
        None => (path.to_owned(), None),
    }
}

pub fn part_number(path: &str) -> Result<u32, S3Error> {
    query_param(path, "partNumber")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| S3Error::new(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive."))
}

/// The parts of an upload, read page by page from ListParts before its
/// CompleteMultipartUpload goes on: every part but the last must be a whole
/// number of chunks, or the completed object's plaintext size could not be
/// derived from its stored size (FORMAT.md, "Part sizes and plaintext sizes")
/// and no GET of it could give a correct Content-Length. Refusing the
/// Complete keeps the parts, so the client can upload them again with
/// another part size; completing would make an object nobody can read.
#[derive(Default)]
pub struct PartLayout {
    /// (part number, plaintext size).
    parts: Vec<(u32, u64)>,
}

/// ListParts of `backend_id` from part `marker` on, through the backend cluster.
pub fn list_parts_request(backend: &crate::copy::Backend, bucket: &str, key: &str, backend_id: &str, marker: u32) -> Vec<(String, String)> {
    let mut headers = crate::copy::head_request(backend, bucket, key, None);
    for (name, value) in headers.iter_mut() {
        match name.as_str() {
            ":method" => "GET".clone_into(value),
            ":path" => value.push_str(&format!("?uploadId={}&part-number-marker={marker}", crate::s3::uri_encode(backend_id))),
            _ => {}
        }
    }
    headers
}

impl PartLayout {
    /// Reads one ListParts page; `Ok(Some(marker))` if another page follows.
    pub fn add_page(&mut self, status: u32, xml: &str, chunk_size: u32) -> Result<Option<u32>, S3Error> {
        if status != 200 {
            // The backend will answer the Complete itself (NoSuchUpload...).
            return Ok(None);
        }
        let mut rest = xml;
        while let Some(start) = rest.find("<Part>") {
            let Some(end) = rest.get(start..).and_then(|r| r.find("</Part>")).map(|e| e + start) else { break };
            let record = rest.get(start..end).unwrap_or_default();
            let number = element_text(record, "PartNumber").and_then(|n| n.trim().parse().ok());
            let stored = element_text(record, "Size").and_then(|n| n.trim().parse().ok());
            if let (Some(number), Some(stored)) = (number, stored) {
                let plain = sizes::plaintext_len(stored, chunk_size)
                    .ok_or_else(|| S3Error::new(400, "InvalidPart", format!("Part {number} was not uploaded through the encryption gateway.")))?;
                self.parts.push((number, plain));
            }
            rest = rest.get(end..).unwrap_or_default();
        }
        let truncated = element_text(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
        Ok(if truncated { element_text(xml, "NextPartNumberMarker").and_then(|m| m.trim().parse().ok()) } else { None })
    }

    /// Whether every part but the highest-numbered is whole chunks.
    pub fn check(&mut self, chunk_size: u32) -> Result<(), S3Error> {
        self.parts.sort_unstable();
        let last = self.parts.len().saturating_sub(1);
        for (number, plain) in self.parts.iter().take(last) {
            if plain % u64::from(chunk_size) != 0 {
                return Err(S3Error::new(
                    400,
                    "InvalidPart",
                    format!("Part {number} holds {plain} bytes, not a multiple of the gateway's chunk size ({chunk_size}): the object's size could not be read from storage. Upload the parts again with a part size that is a multiple of {chunk_size} bytes (any multiple of 1 MiB is)."),
                ));
            }
        }
        Ok(())
    }
}

/// A part's ETag as the client sees it: the backend's (the MD5 of the
/// ciphertext part) with a `-1` suffix, so tools that compare part ETags with
/// the MD5 of what they sent (s3cmd) know it is not one.
pub fn part_etag_for_client(backend: &str) -> String {
    let bare = backend.trim().trim_matches('"');
    if is_md5_hex(bare) {
        format!("\"{bare}-1\"")
    } else {
        backend.trim().to_owned()
    }
}

fn is_md5_hex(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The backend's part ETag from what the client sends back at Complete.
fn backend_part_etag(client: &str) -> Option<String> {
    let (quote, bare) = match client.strip_prefix("&quot;").and_then(|c| c.strip_suffix("&quot;")) {
        Some(bare) => ("&quot;", bare),
        None => ("\"", client.trim_matches('"')),
    };
    let md5 = bare.strip_suffix("-1").filter(|m| is_md5_hex(m))?;
    Some(format!("{quote}{md5}{quote}"))
}

/// What a rewritten XML body is.
enum Kind {
    /// CreateMultipartUpload response: the backend's UploadId becomes the
    /// client id carrying the wrapped data key.
    Created(PendingUpload),
    /// ListParts response: plaintext part sizes; the client's own upload id.
    Parts { client_id: Option<String>, chunk_size: u32 },
    /// ListObjects(V2)/ListObjectVersions: plaintext sizes, ETags as HEAD shows them.
    Listing { chunk_size: u32 },
    /// CompleteMultipartUpload request: part checksums (of the plaintext, which
    /// the backend never saw) blanked out without changing the length.
    Complete,
    /// CopyObject response: the ETag the client will see on the copy; no
    /// checksums of the ciphertext.
    Copied(Option<crate::envelope::Envelope>),
    /// CompleteMultipartUpload response: no checksums of the ciphertext (a
    /// backend may compute its own, e.g. S3's default CRC64NVME).
    Completed,
}

pub struct BodyRewrite {
    rewriter: RecordRewriter,
    kind: Kind,
}

impl BodyRewrite {
    pub fn created(pending: PendingUpload) -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["UploadId"]), kind: Kind::Created(pending) }
    }

    pub fn parts(client_id: Option<String>, chunk_size: u32) -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["UploadId", "Part"]), kind: Kind::Parts { client_id, chunk_size } }
    }

    pub fn listing(chunk_size: u32) -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["Contents", "Version"]), kind: Kind::Listing { chunk_size } }
    }

    pub fn copied(envelope: Option<crate::envelope::Envelope>) -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["CopyObjectResult"]), kind: Kind::Copied(envelope) }
    }

    pub fn completed() -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["CompleteMultipartUploadResult"]), kind: Kind::Completed }
    }

    pub fn complete() -> BodyRewrite {
        BodyRewrite { rewriter: RecordRewriter::new(&["Part"]), kind: Kind::Complete }
    }

    /// The KEK `push` must be given: a created upload's id is sealed under
    /// its envelope's key; `None`: any (the active one).
    pub fn sealing_key_id(&self) -> Option<&str> {
        match &self.kind {
            Kind::Created(pending) => Some(pending.key_id()),
            _ => None,
        }
    }

    /// Rewrites one body piece into `out`.
    /// `kek`: the KEK `sealing_key_id` names (else the active one), which
    /// seals new upload ids outside strict KMS mode.
    pub fn push(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>, kek: Option<&Kek>) -> Result<(), S3Error> {
        let mut failure = None;
        let kind = &self.kind;
        let mut rewrite = |tag: &str, record: &str| -> Option<String> {
            match (kind, tag) {
                (Kind::Created(p), "UploadId") => {
                    let backend_id = unescape(element_text(record, "UploadId")?);
                    if backend_id.is_empty() {
                        // No upload to name: left as the backend sent it.
                        return None;
                    }
                    let sealed = match (&p.kms_blob, kek) {
                        (Some(blob), _) => Ok(upload_id::seal_kms(&p.dek, blob, p.suite, p.chunk_size, &backend_id)),
                        (None, Some(kek)) => upload_id::seal(kek, &p.dek, p.suite, p.chunk_size, &backend_id),
                        (None, None) => Err(crate::envelope::EnvelopeError::UnknownKeyId(String::new())),
                    };
                    match sealed {
                        Ok(id) => Some(replace_element_text(record, "UploadId", &xml_escape(&id))),
                        Err(e) => {
                            failure = Some(envelope_error(e));
                            None
                        }
                    }
                }
                (Kind::Parts { client_id, .. }, "UploadId") => client_id.as_ref().map(|id| replace_element_text(record, "UploadId", &xml_escape(id))),
                (Kind::Parts { chunk_size, .. }, "Part") => {
                    let record = remove_elements(record, "Checksum");
                    let record = plaintext_size(&record, *chunk_size).unwrap_or(record);
                    // The same marked ETag UploadPart showed.
                    match element_text(&record, "ETag").map(|e| part_etag_for_client(&unescape(e))) {
                        Some(etag) => Some(replace_element_text(&record, "ETag", &xml_escape(&etag))),
                        None => Some(record),
                    }
                }
                (Kind::Listing { chunk_size }, _) => {
                    let resized = plaintext_size(record, *chunk_size)?;
                    // Single-part ETags are MD5s of the ciphertext: show the opaque form HEAD shows.
                    match element_text(&resized, "ETag") {
                        Some(etag) if !etag.contains('-') => {
                            let shown = xml_escape(&opaque_etag(&unescape(etag)));
                            Some(replace_element_text(&resized, "ETag", &shown))
                        }
                        _ => Some(resized),
                    }
                }
                (Kind::Copied(envelope), _) => {
                    let record = remove_elements(record, "Checksum");
                    let stored = unescape(element_text(&record, "ETag")?);
                    let shown = match envelope {
                        Some(env) => crate::read::client_etag(env, Some(&stored))?,
                        None => stored,
                    };
                    Some(replace_element_text(&record, "ETag", &xml_escape(&shown)))
                }
                (Kind::Completed, _) => Some(remove_elements(record, "Checksum")),
                (Kind::Complete, "Part") => {
                    let mut trimmed = remove_elements(record, "Checksum");
                    if let Some(etag) = element_text(&trimmed, "ETag").and_then(backend_part_etag) {
                        trimmed = replace_element_text(&trimmed, "ETag", &etag);
                    }
                    // Same length as before: the request's Content-Length stands.
                    Some(format!("{trimmed}{}", " ".repeat(record.len().saturating_sub(trimmed.len()))))
                }
                _ => None,
            }
        };
        self.rewriter.push(data, end, out, &mut rewrite);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `record` with its `<Size>` turned into the plaintext size; `None` if the
/// size is not a possible ciphertext length (an object not written through
/// the gateway keeps its size).
fn plaintext_size(record: &str, chunk_size: u32) -> Option<String> {
    let stored: u64 = element_text(record, "Size")?.trim().parse().ok()?;
    let plain = sizes::plaintext_len(stored, chunk_size)?;
    Some(replace_element_text(record, "Size", &plain.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::envelope::Keyring;

    fn ring() -> Keyring {
        Keyring::new(vec![Kek::new("main".into(), Zeroizing::new([3; 32]))], "main").unwrap()
    }

    fn run(mut rw: BodyRewrite, body: &str, ring: &Keyring) -> String {
        let mut out = Vec::new();
        let (a, b) = body.split_at(body.len() / 2);
        rw.push(a.as_bytes(), false, &mut out, ring.active().ok()).unwrap();
        rw.push(b.as_bytes(), true, &mut out, ring.active().ok()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn created_upload_id_carries_the_data_key() {
        let ring = ring();
        let pending = PendingUpload { dek: Zeroizing::new([7; 32]), suite: Suite::ChaCha20Poly1305, chunk_size: 65_536, key_id: "main".into(), kms_blob: None };
        let body = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>backend-1</UploadId></InitiateMultipartUploadResult>";
        let out = run(BodyRewrite::created(pending), body, &ring);
        let client_id = element_text(&out, "UploadId").unwrap();
        let (path, parsed) = backend_path(&format!("/b/k?partNumber=3&uploadId={client_id}"));
        assert_eq!(path, "/b/k?partNumber=3&uploadId=backend-1");
        assert_eq!(*parsed.unwrap().open(&ring).unwrap(), [7; 32]);
    }

    #[test]
    fn created_kms_upload_id_carries_the_blob() {
        let envelope = Envelope { suite: Suite::ChaCha20Poly1305, chunk_size: 65_536, key_id: "kms".into(), plaintext_len: None, wrapped_dek: WrappedDek::Kms(vec![4, 5, 6]), plaintext_md5: None };
        let (edits, pending) = plan_create_kms(&envelope, &[7; 32]);
        assert!(edits.set.contains(&(METADATA_HEADER.to_string(), envelope.encode())));
        let body = "<InitiateMultipartUploadResult><UploadId>backend-1</UploadId></InitiateMultipartUploadResult>";
        let mut out = Vec::new();
        BodyRewrite::created(pending).push(body.as_bytes(), true, &mut out, None).unwrap();
        let out = String::from_utf8(out).unwrap();
        let (_, parsed) = backend_path(&format!("/b/k?partNumber=1&uploadId={}", element_text(&out, "UploadId").unwrap()));
        let parsed = parsed.unwrap();
        assert_eq!(parsed.kms_blob(), Some(&[4u8, 5, 6][..]));
        assert!(parsed.check_kms_dek(&[7; 32]).is_ok());
    }

    #[test]
    fn list_parts_shows_plaintext_sizes_and_the_client_id() {
        let ring = ring();
        let body = "<ListPartsResult><UploadId>backend-1</UploadId><Part><PartNumber>1</PartNumber><ETag>\"e\"</ETag><Size>5246080</Size></Part><Part><PartNumber>2</PartNumber><Size>41</Size><ChecksumCRC32>x</ChecksumCRC32></Part></ListPartsResult>";
        let out = run(BodyRewrite::parts(Some("s3c1T.backend-1".into()), 65_536), body, &ring);
        assert!(out.contains("<UploadId>s3c1T.backend-1</UploadId>"));
        assert!(out.contains("<Size>5242880</Size>") && out.contains("<Size>1</Size>"));
        assert!(!out.contains("Checksum"));
    }

    #[test]
    fn listing_sizes_and_etags() {
        let ring = ring();
        let body = "<ListBucketResult><Contents><Key>a</Key><ETag>&quot;abc&quot;</ETag><Size>41</Size></Contents><Contents><Key>m</Key><ETag>&quot;abc-3&quot;</ETag><Size>65617</Size></Contents><Contents><Key>plain</Key><ETag>&quot;x&quot;</ETag><Size>3</Size></Contents></ListBucketResult>";
        let out = run(BodyRewrite::listing(65_536), body, &ring);
        assert!(out.contains("<Key>a</Key><ETag>&quot;") && out.contains("-1&quot;</ETag><Size>1</Size>"), "{out}");
        assert!(out.contains("<ETag>&quot;abc-3&quot;</ETag><Size>65537</Size>"));
        assert!(out.contains("<ETag>&quot;x&quot;</ETag><Size>3</Size>"));
    }

    #[test]
    fn completed_upload_shows_no_ciphertext_checksum() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>l</Location><Bucket>b</Bucket><Key>k</Key><ETag>\"e-2\"</ETag><ChecksumCRC64NVME>AAAAAAAAAAA=</ChecksumCRC64NVME><ChecksumType>FULL_OBJECT</ChecksumType></CompleteMultipartUploadResult>";
        let out = run(BodyRewrite::completed(), body, &ring());
        assert!(!out.contains("Checksum"), "{out}");
        assert!(out.contains("<ETag>\"e-2\"</ETag>") && out.contains("<Key>k</Key>"), "{out}");
        // An error S3 sends with status 200 passes as it is.
        let error = "<Error><Code>InternalError</Code><Message>m</Message></Error>";
        assert_eq!(run(BodyRewrite::completed(), error, &ring()), error);
    }

    #[test]
    fn complete_body_keeps_its_length() {
        let ring = ring();
        let body = "<CompleteMultipartUpload><Part><ETag>\"a\"</ETag><ChecksumCRC32>AAAA</ChecksumCRC32><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>";
        let out = run(BodyRewrite::complete(), body, &ring);
        assert_eq!(out.len(), body.len());
        assert!(!out.contains("Checksum") && out.contains("<PartNumber>1</PartNumber></Part>"));
    }

    #[test]
    fn part_layouts() {
        let page = |parts: &[(u32, u64)], truncated: bool| {
            let mut xml = String::from("<ListPartsResult>");
            for (n, size) in parts {
                xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><Size>{}</Size></Part>", sizes::ciphertext_len(*size, 65_536).unwrap()));
            }
            xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated><NextPartNumberMarker>{}</NextPartNumberMarker></ListPartsResult>", parts.last().map_or(0, |p| p.0)));
            xml
        };
        let mut ok = PartLayout::default();
        assert_eq!(ok.add_page(200, &page(&[(1, 5 << 20), (2, 5 << 20)], true), 65_536).unwrap(), Some(2));
        assert_eq!(ok.add_page(200, &page(&[(3, 17)], false), 65_536).unwrap(), None);
        assert!(ok.check(65_536).is_ok());
        let mut odd = PartLayout::default();
        odd.add_page(200, &page(&[(2, 5_000_000), (1, 5_000_000), (3, 10)], false), 65_536).unwrap();
        assert_eq!(odd.check(65_536).unwrap_err().code, "InvalidPart");
    }

    #[test]
    fn part_etags_are_marked_and_unmarked() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let shown = part_etag_for_client(&format!("\"{md5}\""));
        assert_eq!(shown, format!("\"{md5}-1\""));
        assert_eq!(part_etag_for_client("\"odd\""), "\"odd\"");
        let ring = ring();
        for (quoted, plain) in [(format!("&quot;{md5}-1&quot;"), format!("&quot;{md5}&quot;")), (shown.clone(), format!("\"{md5}\""))] {
            let body = format!("<CompleteMultipartUpload><Part><ETag>{quoted}</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>");
            let out = run(BodyRewrite::complete(), &body, &ring);
            assert_eq!(out.len(), body.len());
            assert!(out.contains(&format!("<ETag>{plain}</ETag>")), "{out}");
        }
    }
}
