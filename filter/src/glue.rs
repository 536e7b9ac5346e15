//! proxy-wasm glue: reads from the host, calls the core, writes back. Every
//! callback goes through a function returning `Result`; an error becomes an
//! S3 XML reply (before the response started) or a reset (after). Nothing
//! here may panic: a panic kills the VM.

use crate::config::{self, BucketWrite, Settings};
use crate::copy;
use crate::{auth, sigv4};
use crate::envelope::{Envelope, WrappedDek, CHECKSUM_HEADER, METADATA_HEADER};
use crate::kms::{self, DekCache, KmsError, StrictKms};
use crate::layout_cache::{Layout, LayoutCache};
use crate::multipart::{self, BodyRewrite, PendingUpload};
use crate::host::{self, HostError};
use crate::put::{self, header, HeaderEdits, Upload};
use crate::read::{self, BodyPlan, ReadRequest};
use crate::s3::{self, Operation, RequestLine, S3Error};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Counters shown on Envoy's stats pages as `wasmcustom.s3crypt_*`.
#[derive(Default)]
struct Metrics {
    objects_encrypted: Option<u32>,
    bytes_encrypted: Option<u32>,
    objects_decrypted: Option<u32>,
    bytes_decrypted: Option<u32>,
    auth_failures: Option<u32>,
    requests_refused: Option<u32>,
    auth_denied: Option<u32>,
    auth_allowed: Option<u32>,
    /// Strict KMS mode: calls made, data keys found in the cache, failed calls.
    kms_calls: Option<u32>,
    kms_cache_hits: Option<u32>,
    kms_failures: Option<u32>,
    /// One counter per S3 error code the filter answers with, made on first use.
    by_code: std::cell::RefCell<Vec<(&'static str, Option<u32>)>>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name: &str| host::define_counter(name).ok();
        Metrics {
            objects_encrypted: counter("s3crypt_objects_encrypted"),
            bytes_encrypted: counter("s3crypt_bytes_encrypted"),
            objects_decrypted: counter("s3crypt_objects_decrypted"),
            bytes_decrypted: counter("s3crypt_bytes_decrypted"),
            auth_failures: counter("s3crypt_auth_failures"),
            requests_refused: counter("s3crypt_requests_refused"),
            auth_denied: counter("s3crypt_requests_denied"),
            auth_allowed: counter("s3crypt_requests_allowed"),
            kms_calls: counter("s3crypt_kms_calls"),
            kms_cache_hits: counter("s3crypt_kms_cache_hits"),
            kms_failures: counter("s3crypt_kms_failures"),
            by_code: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// `s3crypt_errors_<code>`, e.g. `s3crypt_errors_SignatureDoesNotMatch`.
    fn for_code(&self, code: &'static str) -> Option<u32> {
        let mut known = self.by_code.try_borrow_mut().ok()?;
        if let Some((_, id)) = known.iter().find(|(c, _)| *c == code) {
            return *id;
        }
        let id = host::define_counter(&format!("s3crypt_errors_{code}")).ok();
        known.push((code, id));
        id
    }

    fn add(id: Option<u32>, by: u64) {
        if let Some(id) = id {
            host::increment(id, by);
        }
    }
}

#[derive(Default)]
struct Root {
    settings: Option<Rc<Settings>>,
    metrics: Rc<Metrics>,
    /// A configuration waiting for KMS-held keys, the keys decrypted so far,
    /// and the calls in flight (token -> key slot).
    staged: Option<config::Staged>,
    decrypted: Vec<(usize, zeroize::Zeroizing<[u8; crate::cipher::KEY_LEN]>)>,
    kms_calls: Vec<(u32, usize)>,
    /// Strict KMS mode: the data keys this VM unwrapped, shared by its requests.
    kms_cache: Option<Rc<RefCell<DekCache>>>,
    /// Objects' stored layouts this VM has seen, shared by its requests.
    layouts: Rc<RefCell<LayoutCache>>,
}

/// How often KMS calls that failed are tried again (requests are refused meanwhile).
const KMS_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(at) = self.kms_calls.iter().position(|(t, _)| *t == token_id) else {
            return;
        };
        let (_, slot) = self.kms_calls.swap_remove(at);
        let status = host::get_headers(host::CALL_RESPONSE_HEADERS).ok().and_then(|h| header(&h, ":status").and_then(|s| s.parse().ok())).unwrap_or(0);
        let body = host::get_buffer(host::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default();
        let id = self.staged.as_ref().and_then(|s| s.pending.iter().find(|p| p.slot() == slot)).map(|p| p.id.clone()).unwrap_or_default();
        match crate::kms::decrypt_response(status, &body) {
            Ok(key) => {
                host::log(host::LOG_INFO, &format!("key {id:?} decrypted by the KMS"));
                self.decrypted.push((slot, key));
                self.finish_if_ready();
            }
            Err(e) => host::log(host::LOG_ERROR, &format!("key {id:?}: {e}; refusing all requests, retrying in {}s", KMS_RETRY.as_secs())),
        }
    }
}

impl Root {
    fn ready(&mut self, settings: Settings) {
        host::log(
            host::LOG_INFO,
            &format!("configured: cipher {}, chunk_size {}, write key id {:?}, {} bucket rules", settings.suite.name(), settings.chunk_size, settings.keyring.active_id(), settings.buckets.len()),
        );
        match settings.clients.as_ref() {
            Some(clients) => host::log(host::LOG_INFO, &format!("client authentication on: {} access keys", clients.len())),
            None => host::log(host::LOG_WARN, "no \"clients\" configured: every request is served without authentication; keep the listener private"),
        }
        if let Some(strict) = settings.kms_strict.as_ref() {
            host::log(host::LOG_INFO, &format!("strict KMS mode: data keys from KMS key {:?} through cluster {:?}, {} cached per VM", strict.key_id, strict.cluster, strict.cache_entries));
            self.kms_cache = Some(Rc::new(RefCell::new(DekCache::new(strict.cache_entries))));
        }
        self.settings = Some(Rc::new(settings));
    }

    /// Asks the KMS for every pending key not decrypted or in flight.
    fn call_kms(&mut self) {
        let Some(staged) = self.staged.as_ref() else {
            return;
        };
        let mut calls = Vec::new();
        for pending in &staged.pending {
            let slot = pending.slot();
            if self.decrypted.iter().any(|(s, _)| *s == slot) || self.kms_calls.iter().any(|(_, s)| *s == slot) {
                continue;
            }
            let (headers, body) = crate::kms::decrypt_request(&pending.source);
            match host::dispatch_with_body(&pending.source.cluster, &headers, &body, std::time::Duration::from_secs(10)) {
                Ok(token) => calls.push((token, slot)),
                Err(HostError(status)) => host::log(host::LOG_ERROR, &format!("key {:?}: cannot call the KMS cluster {:?} (status {status}); refusing all requests", pending.id, pending.source.cluster)),
            }
        }
        self.kms_calls.extend(calls);
    }

    fn finish_if_ready(&mut self) {
        let all = self.staged.as_ref().is_some_and(|s| s.pending.iter().all(|p| self.decrypted.iter().any(|(slot, _)| *slot == p.slot())));
        if !all {
            return;
        }
        if let Some(staged) = self.staged.take() {
            match staged.finish(std::mem::take(&mut self.decrypted)) {
                Ok(settings) => {
                    let _ = host::set_tick_period(std::time::Duration::ZERO);
                    self.ready(settings);
                }
                Err(e) => host::log(host::LOG_ERROR, &format!("invalid configuration: {e}; refusing all requests")),
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.metrics = Rc::new(Metrics::define());
        let json = match host::plugin_configuration() {
            Ok(json) => json,
            Err(HostError(status)) => {
                host::log(host::LOG_ERROR, &format!("cannot read the plugin configuration (status {status}); refusing all requests"));
                self.settings = None;
                return false;
            }
        };
        match config::parse_staged(&json, &|name| std::env::var(name).ok()) {
            Ok(staged) if staged.pending.is_empty() => match staged.finish(Vec::new()) {
                Ok(settings) => {
                    self.ready(settings);
                    true
                }
                Err(e) => {
                    host::log(host::LOG_ERROR, &format!("invalid configuration: {e}; refusing all requests"));
                    false
                }
            },
            Ok(staged) => {
                // Requests are refused (503) until the KMS has answered for every key.
                host::log(host::LOG_INFO, &format!("waiting for the KMS to decrypt {} key(s); refusing requests until then", staged.pending.len()));
                self.settings = None;
                self.staged = Some(staged);
                self.call_kms();
                let _ = host::set_tick_period(KMS_RETRY);
                true
            }
            Err(e) => {
                host::log(host::LOG_ERROR, &format!("invalid configuration: {e}; refusing all requests"));
                self.settings = None;
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if self.staged.is_some() && self.kms_calls.is_empty() {
            self.call_kms();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Exchange { settings: self.settings.clone(), metrics: self.metrics.clone(), kms_cache: self.kms_cache.clone(), layouts: Some(self.layouts.clone()), ..Exchange::default() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// How long a request waits for the KMS in strict mode.
const KMS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A strict-KMS call in flight and what its answer completes. The request
/// (or response) headers are held meanwhile, and so are body pieces: they
/// stay in Envoy's buffer until the key is known.
enum KmsWait {
    /// PutObject: `GenerateDataKey`, then the upload goes on under that key.
    Put { claims: put::BodyClaims, envelope: Envelope, context: BTreeMap<String, String>, ended_at_headers: bool },
    /// CreateMultipartUpload: `GenerateDataKey`; its blob goes in the upload id.
    Create { envelope: Envelope, context: BTreeMap<String, String> },
    /// UploadPart whose data key is not cached: `Decrypt` of the upload id's blob.
    Part { claims: put::BodyClaims, id: crate::upload_id::ClientUploadId, part: u32, cache_id: [u8; 32], ended_at_headers: bool },
    /// GET/HEAD whose data key is not cached: `Decrypt` before the response goes on.
    Read { cache_id: [u8; 32] },
}

impl KmsWait {
    fn holds_request(&self) -> bool {
        !matches!(self, KmsWait::Read { .. })
    }
}

/// An upload that stores nothing (an empty object or part) whose request
/// body is still to come: an empty aws-chunked body still carries its
/// trailing checksum. An empty ciphertext would let the backend store the
/// object, and answer, before that trailer is seen; and with
/// `allow_on_headers_stop_iteration: false` the filter sees no body while it
/// holds the headers. So the request goes upstream with a placeholder
/// `Content-Length: 1` whose byte is never sent: it cannot complete, and is
/// cut when the client is answered. Once the body checked out, the filter
/// sends the real (empty) upload to the backend itself, and its answer is
/// the client's. A refused upload stores nothing, and replaces nothing.
struct EmptyUpload {
    /// The request headers as prepared for the backend.
    headers: Vec<(String, String)>,
    /// How many of the echoed checksums came as headers (the rest, from
    /// trailers, join the object's checksum record).
    header_checksums: usize,
    /// The real upload is on its way to the backend.
    sent: bool,
    /// The backend answered the placeholder (an early error such as
    /// NoSuchBucket): that answer stands, nothing more is sent.
    abandoned: bool,
}

/// Placeholder length of a held empty upload (`EmptyUpload`).
const PLACEHOLDER_LENGTH: &str = "1";

struct LayoutCheck {
    bucket: String,
    key: String,
    backend_id: String,
    chunk_size: u32,
    layout: multipart::PartLayout,
}

/// One HTTP request/response through the filter.
#[derive(Default)]
struct Exchange {
    settings: Option<Rc<Settings>>,
    metrics: Rc<Metrics>,
    resource: String,
    operation: Option<Operation>,
    upload: Option<Upload>,
    /// For the PutObject response: the object's envelope (its ETag).
    stored: Option<Envelope>,
    /// Checksum headers of an upload, echoed on its response as S3 does.
    echo_checksums: Vec<(String, String)>,
    /// CreateMultipartUpload: the data key, until the response names the upload.
    pending_upload: Option<PendingUpload>,
    /// ListParts: the upload id as the client knows it, and its chunk size.
    client_upload: Option<(String, u32)>,
    request_rewrite: Option<BodyRewrite>,
    response_rewrite: Option<BodyRewrite>,
    /// CopyObject waiting for the HEAD of its source.
    pending_copy: Option<copy::PendingCopy>,
    /// The bucket is configured to stay plaintext (`"encrypt": false`).
    plaintext_bucket: bool,
    /// An upload into such a bucket, passed on unencrypted.
    plaintext_write: bool,
    /// CopyObject with REPLACE: the KEK the data key is re-wrapped under.
    copy_write_key: String,
    /// CopyObject: the source's HEAD came back (the response body is rewritten).
    copy_checked: bool,
    /// CompleteMultipartUpload waiting for its part sizes.
    layout: Option<LayoutCheck>,
    /// A ranged read waiting for the object's HEAD (its stored length, and
    /// whether it has an envelope) before its backend range is settled.
    sizing_range: Option<crate::range::ByteRange>,
    /// A signed hex payload hash to check against a body the filter passes on.
    body_check: Option<crate::digest::PlaintextDigests>,
    /// DeleteObjects: every key needs `delete` (bucket, principal).
    delete_check: Option<(auth::DeleteKeys, String, Option<String>)>,
    /// The last byte of a passed-on body, until its end is checked.
    withheld: Vec<u8>,
    /// Body bytes (already transformed) held in Envoy's buffer while the
    /// request headers wait for a backend call (`awaiting_backend`).
    held: usize,
    read: Option<ReadRequest>,
    body: Option<BodyPlan>,
    /// Reused output buffer for transformed body pieces.
    out: Vec<u8>,
    plaintext_bytes: u64,
    /// A local reply or reset was sent: ignore the rest of the stream.
    finished: bool,
    /// Strict KMS mode: the VM's data-key cache, and the call in flight.
    kms_cache: Option<Rc<RefCell<DekCache>>>,
    kms_wait: Option<KmsWait>,
    /// The VM's cache of stored layouts (ranged reads), and the version a
    /// read names.
    layouts: Option<Rc<RefCell<LayoutCache>>>,
    read_version: Option<String>,
    /// The request's bucket and key, named in KMS encryption contexts.
    object: (String, String),
    /// Body bytes Envoy buffered for the filter while the headers wait for
    /// the KMS (request, response), and whether the body ended among them.
    /// Only with `allow_on_headers_stop_iteration: true`: otherwise Envoy
    /// holds the body itself, with flow control, until the headers go on.
    kms_held: usize,
    body_ended: bool,
    kms_held_response: usize,
    response_ended: bool,
    /// CopyObject onto its own source.
    copy_onto_itself: bool,
    /// An empty upload held until its body is checked.
    empty_upload: Option<EmptyUpload>,
}

/// A strict-KMS envelope for a new object, its key not made yet.
fn kms_envelope(strict: &StrictKms, suite: crate::cipher::Suite, chunk_size: u32, plaintext_len: Option<u64>) -> Envelope {
    Envelope { suite, chunk_size, key_id: strict.id.clone(), plaintext_len, wrapped_dek: WrappedDek::Kms(Vec::new()), plaintext_md5: None }
}

fn host_error(e: HostError) -> S3Error {
    S3Error::new(500, "InternalError", format!("gateway host call failed (status {})", e.0))
}

fn apply(map: u32, edits: &HeaderEdits) -> Result<(), S3Error> {
    for name in &edits.remove {
        host::remove_header(map, name).map_err(host_error)?;
    }
    for (name, value) in &edits.set {
        host::set_header(map, name, value).map_err(host_error)?;
    }
    Ok(())
}

fn set_value(headers: &mut [(String, String)], name: &str, value: &str) {
    for (k, v) in headers.iter_mut() {
        if k == name {
            value.clone_into(v);
        }
    }
}

fn request_id() -> String {
    let mut id = [0u8; 8];
    // A constant id is acceptable if the random source fails here; it only labels the error.
    let _ = crate::cipher::random_bytes(&mut id);
    hex::encode_upper(id)
}

impl Context for Exchange {
    fn on_http_call_response(&mut self, _token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if self.finished {
            return;
        }
        if let Some(wait) = self.kms_wait.take() {
            let request_side = wait.holds_request();
            if let Err(e) = self.kms_answered(wait, body_size) {
                // Nothing Envoy holds may leave.
                let _ = if request_side {
                    host::set_buffer(host::REQUEST_BODY, 0, std::mem::take(&mut self.kms_held), &[])
                } else {
                    host::set_buffer(host::RESPONSE_BODY, 0, std::mem::take(&mut self.kms_held_response), &[])
                };
                self.refuse(e);
            }
            return;
        }
        if self.empty_upload.as_ref().is_some_and(|held| held.sent) {
            let abandoned = self.empty_upload.take().is_some_and(|held| held.abandoned);
            if !abandoned {
                if let Err(e) = self.empty_upload_answered(body_size) {
                    self.refuse(e);
                }
            }
            return;
        }
        let result = if self.layout.is_some() {
            self.layout_page(body_size)
        } else if self.sizing_range.is_some() {
            self.range_sized()
        } else {
            self.copy_source_checked()
        };
        if let Err(e) = result {
            self.refuse(e);
        }
    }
}

impl HttpContext for Exchange {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        if matches!(host::get_headers(host::REQUEST_HEADERS), Ok(h) if header(&h, "x-s3crypt-test-panic").is_some()) {
            #[allow(clippy::panic)]
            {
                panic!("fault injection: x-s3crypt-test-panic");
            }
        }
        match self.request_headers(end_of_stream) {
            Ok(action) => action,
            Err(e) => self.refuse(e),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.finished {
            return Action::Pause;
        }
        match self.request_body(body_size, end_of_stream) {
            Ok(action) => action,
            Err(e) => {
                // Nothing of this piece may leave: on a reused upstream
                // connection Envoy was seen forwarding the buffered piece
                // after the local reply.
                let _ = host::set_buffer(host::REQUEST_BODY, 0, body_size, &[]);
                self.refuse(e)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.finished {
            return Action::Continue;
        }
        match self.response_headers() {
            Ok(action) => action,
            Err(e) => self.refuse(e),
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // After a refusal the body going out is our own local reply: let it pass.
        if self.finished {
            return Action::Continue;
        }
        match self.response_body(body_size, end_of_stream) {
            Ok(action) => action,
            Err(reason) => {
                // The response has started: the only honest end is a reset.
                // Nothing of this piece is released.
                Metrics::add(self.metrics.auth_failures, 1);
                host::log(host::LOG_WARN, &format!("GET {} failed mid-stream: {reason}; resetting the response", self.resource));
                let _ = host::set_buffer(host::RESPONSE_BODY, 0, body_size, &[]);
                let _ = host::reset_response();
                self.finished = true;
                self.body = None;
                Action::Pause
            }
        }
    }
}

impl Exchange {
    /// Sends an S3 XML error instead of forwarding; fails closed.
    fn refuse(&mut self, error: S3Error) -> Action {
        // The access log shows request headers; a refused upload's hex
        // payload hash is a hash of its plaintext.
        let _ = host::remove_header(host::REQUEST_HEADERS, "x-amz-content-sha256");
        if error.status >= 400 {
            Metrics::add(self.metrics.requests_refused, 1);
            Metrics::add(self.metrics.for_code(error.code), 1);
        }
        let id = request_id();
        let body = if error.has_body() { error.to_xml(&self.resource, &id) } else { String::new() };
        let mut headers = vec![("x-amz-request-id", id.as_str())];
        if error.has_body() {
            headers.push(("content-type", "application/xml"));
        }
        headers.extend(error.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Err(HostError(status)) = host::send_local_response(error.status, &headers, body.as_bytes()) {
            host::log(host::LOG_ERROR, &format!("cannot send error reply (status {status}); resetting"));
            let _ = host::reset_request();
        }
        host::log(host::LOG_INFO, &format!("refused {}: {} {}", self.resource, error.code, error.message));
        self.finished = true;
        self.upload = None;
        self.body = None;
        Action::Pause
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Result<Action, S3Error> {
        let settings = self.settings.clone().ok_or_else(|| S3Error::new(503, "ServiceUnavailable", "The encryption gateway is not configured; see the Envoy log."))?;
        let mut headers = host::get_headers(host::REQUEST_HEADERS).map_err(host_error)?;
        let method = header(&headers, ":method").unwrap_or_default().to_owned();
        self.resource = header(&headers, ":path").unwrap_or("/").split('?').next().unwrap_or("/").to_string();
        // Who signed it: checked on the request exactly as the client signed it.
        let verified = match settings.clients.as_ref() {
            Some(clients) => {
                let parts = sigv4::RequestParts { method: &method, path: header(&headers, ":path").unwrap_or("/"), headers: &headers };
                auth::authenticate(clients, &parts, header(&headers, "authorization"), std::time::SystemTime::now())
            }
            None => Ok(None),
        };
        let claimed = verified.is_err().then(|| auth::claimed_access_key(header(&headers, ":path").unwrap_or("/"), header(&headers, "authorization"))).flatten();
        // A presigned URL's own parameters never reach the backend (which
        // would check them against its own keys): the gateway signs instead.
        // Stripped before any refusal too, so the access log's path never
        // holds a signature (a URL dated in the future is refused now but
        // valid later).
        if let Some(stripped) = auth::strip_presign(header(&headers, ":path").unwrap_or("/")) {
            host::set_header(host::REQUEST_HEADERS, ":path", &stripped).map_err(host_error)?;
            set_value(&mut headers, ":path", &stripped);
        }
        // Virtual-hosted requests continue in path style (the routes expect it).
        let authority = header(&headers, ":authority").unwrap_or_default();
        if let Some((path, host)) = s3::to_path_style(header(&headers, ":path").unwrap_or("/"), authority, &settings.addressing) {
            host::set_header(host::REQUEST_HEADERS, ":path", &path).map_err(host_error)?;
            host::set_header(host::REQUEST_HEADERS, ":authority", &host).map_err(host_error)?;
            set_value(&mut headers, ":path", &path);
            set_value(&mut headers, ":authority", &host);
        }
        let path = header(&headers, ":path").unwrap_or("/");
        self.resource = path.split('?').next().unwrap_or("/").to_string();
        // Only the gateway writes its metadata; a client-sent copy is dropped.
        for name in [METADATA_HEADER, CHECKSUM_HEADER] {
            if header(&headers, name).is_some() {
                host::remove_header(host::REQUEST_HEADERS, name).map_err(host_error)?;
            }
        }
        let line = RequestLine {
            method: header(&headers, ":method").unwrap_or(""),
            path,
            host: header(&headers, ":authority").unwrap_or(""),
            has_copy_source: header(&headers, "x-amz-copy-source").is_some(),
            metadata_directive_replace: header(&headers, "x-amz-metadata-directive").is_some_and(|v| v.trim().eq_ignore_ascii_case("REPLACE")),
        };
        let operation = s3::classify(&line, &s3::Addressing::default());
        self.operation = Some(operation);
        self.object = auth::bucket_and_key(path);
        if !matches!(method.as_str(), "GET" | "HEAD") {
            // It may replace or remove the object.
            self.forget_layout();
        }
        let operation_name = auth::operation_name(operation, &method, path);
        let verified = match verified {
            Ok(verified) => verified,
            Err(e) => {
                let (bucket, key) = self.object.clone();
                self.audit(claimed.as_deref(), &operation_name, &method, path, (bucket.as_str(), key.as_str()), false, &format!("authentication failed: {e:?}"));
                return Err(auth::auth_error(&e));
            }
        };
        let principal = verified.as_ref().map(|v| v.access_key_id.clone());

        // What it may do: deny by default, every decision audited.
        if let Some(clients) = settings.clients.as_ref() {
            let (bucket, key) = auth::bucket_and_key(path);
            let prefix = s3::query_param(path, "prefix").unwrap_or_default();
            let copy_source = header(&headers, "x-amz-copy-source");
            let source = copy_source.and_then(copy::source);
            if copy_source.is_some() && source.is_none() {
                // Which object the backend would read is unknown: no read check is possible.
                return Err(S3Error::new(400, "InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey."));
            }
            let access = auth::access_of(operation, &method, path, &bucket, &key, &prefix, source.as_ref());
            // Which of two `prefix` values a backend lists is not the
            // gateway's to guess.
            let decision = if s3::query_param_count(path, "prefix") > 1 {
                crate::policy::Decision { allowed: false, reason: format!("deny {access}: the prefix parameter appears more than once") }
            } else {
                clients.authorize(principal.as_deref(), &access)
            };
            self.audit(principal.as_deref(), &operation_name, &method, path, (bucket.as_str(), key.as_str()), decision.allowed, &decision.reason);
            if !decision.allowed {
                return Err(S3Error::new(403, "AccessDenied", "Access Denied"));
            }
            if method == "POST" && key.is_empty() && s3::query_param(path, "delete").is_some() {
                self.delete_check = Some((auth::DeleteKeys::default(), bucket, principal.clone()));
            }
        }
        // Per-bucket rules: which key and cipher write, or no encryption.
        let bucket_write = settings.bucket_write(&auth::bucket_and_key(path).0);
        self.plaintext_bucket = bucket_write == BucketWrite::Plaintext;
        // In a plaintext bucket, an upload the gateway started (its id is the
        // gateway's token) stays encrypted.
        let gateway_upload = self.plaintext_bucket && multipart::backend_path(path).1.is_some();
        let operation = if self.plaintext_bucket { operation.in_plaintext_bucket(gateway_upload) } else { operation };
        self.operation = Some(operation);
        let write = match &bucket_write {
            BucketWrite::Encrypt(spec) => spec.clone(),
            // Copies keep their envelope, re-wrapped (REPLACE) under the active key.
            BucketWrite::Plaintext => config::WriteSpec { key_id: settings.keyring.active_id().to_owned(), suite: settings.suite, chunk_size: settings.chunk_size },
        };
        // A signed payload hash for bodies the filter does not otherwise read.
        if let Some(sigv4::ContentSha256::Sha256(hash)) = verified.as_ref().map(|v| &v.content_sha256) {
            if !matches!(operation, Operation::PutObject | Operation::UploadPart) {
                let mut check = crate::digest::PlaintextDigests::default();
                check.expect_content_sha256(&hex::encode(hash)).map_err(put::digest_error)?;
                self.body_check = Some(check);
            }
        }
        if end_of_stream {
            // No body: a signed hash must be that of the empty body.
            if let Some(check) = self.body_check.take() {
                check.verify().map_err(put::digest_error)?;
            }
        }
        let chunk_signatures = || -> Option<Box<dyn crate::aws_chunked::ChunkSignatures>> {
            verified.as_ref().and_then(|v| v.chunk_signatures()).map(|c| Box::new(c) as Box<dyn crate::aws_chunked::ChunkSignatures>)
        };

        match operation {
            Operation::PutObject | Operation::UploadPart if self.plaintext_bucket && !gateway_upload => {
                let (edits, upload) = put::plan_plaintext(&headers, chunk_signatures())?;
                apply(host::REQUEST_HEADERS, &edits)?;
                self.plaintext_write = true;
                self.start_upload(upload, end_of_stream)?;
            }
            Operation::PutObject => {
                if let Some(strict) = settings.kms_strict.as_ref() {
                    let claims = put::put_claims(&headers, chunk_signatures())?;
                    let envelope = kms_envelope(strict, write.suite, write.chunk_size, Some(claims.length()));
                    let context = kms::object_context(&self.object.0, &self.object.1, &envelope.prefix());
                    self.ask_kms(strict, kms::generate_data_key_request(strict, &context))?;
                    self.kms_wait = Some(KmsWait::Put { claims, envelope, context, ended_at_headers: end_of_stream });
                    return Ok(Action::Pause);
                }
                let (edits, upload, envelope) = put::plan(&headers, &settings, &write, chunk_signatures())?;
                apply(host::REQUEST_HEADERS, &edits)?;
                self.stored = Some(envelope);
                self.start_upload(upload, end_of_stream)?;
            }
            Operation::CreateMultipartUpload if self.plaintext_bucket => {
                // Checksums are the filter's to check on each part (as for encrypted uploads).
                apply(host::REQUEST_HEADERS, &HeaderEdits { remove: put::plaintext_integrity_headers(), set: Vec::new() })?;
            }
            Operation::UploadPart => {
                let (backend_path, id) = multipart::backend_path(path);
                let id = id.ok_or_else(|| S3Error::new(404, "NoSuchUpload", "The specified upload does not exist: it was not started through the encryption gateway."))?;
                let part = multipart::part_number(path)?;
                if id.kms_blob().is_some() {
                    let claims = put::part_claims(&headers, part, chunk_signatures())?;
                    host::set_header(host::REQUEST_HEADERS, ":path", &backend_path).map_err(host_error)?;
                    return self.start_kms_part(&settings, claims, id, part, end_of_stream);
                }
                let (edits, upload) = put::plan_part(&headers, &settings, &id, part, chunk_signatures())?;
                host::set_header(host::REQUEST_HEADERS, ":path", &backend_path).map_err(host_error)?;
                apply(host::REQUEST_HEADERS, &edits)?;
                self.start_upload(upload, end_of_stream)?;
            }
            Operation::CreateMultipartUpload => {
                if let Some(strict) = settings.kms_strict.as_ref() {
                    let envelope = kms_envelope(strict, write.suite, write.chunk_size, None);
                    let context = kms::object_context(&self.object.0, &self.object.1, &envelope.prefix());
                    self.ask_kms(strict, kms::generate_data_key_request(strict, &context))?;
                    self.kms_wait = Some(KmsWait::Create { envelope, context });
                    return Ok(Action::Pause);
                }
                let (edits, pending) = multipart::plan_create(&settings, &write)?;
                apply(host::REQUEST_HEADERS, &edits)?;
                self.pending_upload = Some(pending);
            }
            Operation::CompleteMultipartUpload | Operation::AbortMultipartUpload | Operation::ListParts => {
                let (backend_path, id) = multipart::backend_path(path);
                if backend_path != path {
                    host::set_header(host::REQUEST_HEADERS, ":path", &backend_path).map_err(host_error)?;
                }
                if operation == Operation::CompleteMultipartUpload {
                    // The body's part checksums describe plaintext: blanked out.
                    // Its hashes change with them, so they go too.
                    let mut edits = HeaderEdits { remove: put::plaintext_integrity_headers(), set: Vec::new() };
                    edits.remove.push("x-amz-mp-object-size".into());
                    apply(host::REQUEST_HEADERS, &edits)?;
                    self.request_rewrite = Some(BodyRewrite::complete());
                }
                let client_id = crate::s3::query_param(path, "uploadId").unwrap_or_default();
                self.client_upload = match &id {
                    Some(id) => Some((client_id, id.chunk_size)),
                    // A plaintext upload's parts are listed as stored.
                    None if self.plaintext_bucket => None,
                    None => Some((client_id, settings.chunk_size)),
                };
                // Before completing an upload, check its part sizes
                // (multipart::PartLayout), holding the request. Also when it
                // is named by the backend's id (as ListMultipartUploads shows
                // it): its parts went through the gateway all the same.
                let parts = self.client_upload.as_ref().map(|(client_id, chunk_size)| (id.as_ref().map_or_else(|| client_id.clone(), |id| id.backend_id.clone()), *chunk_size));
                if let (Operation::CompleteMultipartUpload, Some((backend_id, chunk_size)), Some(backend)) = (operation, parts, settings.backend.as_ref()) {
                    let (bucket, key) = auth::bucket_and_key(path);
                    self.layout = Some(LayoutCheck { bucket, key, backend_id, chunk_size, layout: multipart::PartLayout::default() });
                    self.list_parts_page(backend, 0)?;
                    return Ok(Action::Pause);
                }
            }
            Operation::ListObjects => {}
            Operation::GetObject | Operation::HeadObject => {
                let (edits, mut request) = read::plan_request(&headers, path, &settings, operation == Operation::HeadObject);
                request.plaintext_bucket = self.plaintext_bucket;
                apply(host::REQUEST_HEADERS, &edits)?;
                // Ask the backend about the object first when the range
                // cannot be laid out blind: the chunk-aligned suffix can be
                // longer than the object, which some backends refuse
                // (range::upstream_suffix_from); deep into an object that
                // may be stored without envelope, the chunk-aligned range
                // misses its bytes (range::covers_unsealed).
                // The layout seen last time spares the HEAD, and lays the
                // range out for an object sealed with another chunk size.
                let may_be_unsealed = request.plaintext_bucket || settings.unencrypted_objects == crate::config::UnencryptedObjects::Pass;
                self.read_version = s3::query_param(path, "versionId");
                let known = self.known_layout();
                let mut needs_head = request.range.filter(|r| matches!(r, crate::range::ByteRange::Suffix(_)));
                if let (Some(r), Some(Layout::Sealed(chunk)), None) = (request.range, known, needs_head) {
                    if let Some(value) = crate::range::upstream_header(r, chunk).filter(|_| chunk != request.aligned_to) {
                        host::set_header(host::REQUEST_HEADERS, "range", &value).map_err(host_error)?;
                        request.aligned_to = chunk;
                    }
                }
                if let Some(deep) = request.range.filter(|&r| needs_head.is_none() && may_be_unsealed && !crate::range::covers_unsealed(r, request.aligned_to)) {
                    match known {
                        Some(Layout::Sealed(_)) => {}
                        Some(Layout::Unsealed) => host::set_header(host::REQUEST_HEADERS, "range", &crate::range::unsealed_header(deep)).map_err(host_error)?,
                        None => needs_head = Some(deep),
                    }
                }
                self.read = Some(request);
                if let (Some(range), Some(backend)) = (needs_head, settings.backend.as_ref()) {
                    let head = copy::head_request(backend, &self.object.0, &self.object.1, self.read_version.as_deref());
                    // Unreachable: the range goes as laid out, and the
                    // backend's answer decides.
                    if host::dispatch(&backend.cluster, &head, std::time::Duration::from_secs(15)).is_ok() {
                        self.sizing_range = Some(range);
                        return Ok(Action::Pause);
                    }
                }
            }
            Operation::CopyObject => {
                self.copy_write_key = write.key_id;
                return self.start_copy(&headers, &settings);
            }
            Operation::PassThrough => {}
            Operation::Unsupported(what) => {
                return Err(S3Error::new(501, "NotImplemented", format!("{what} is not supported by the encryption gateway yet.")));
            }
        }
        Ok(Action::Continue)
    }

    /// CopyObject: look at the source first (HEAD through the backend cluster),
    /// holding the request; without a configured backend, only copies that
    /// keep the metadata (and so the envelope) can pass.
    fn start_copy(&mut self, headers: &[(String, String)], settings: &Settings) -> Result<Action, S3Error> {
        let (edits, pending) = copy::plan_request(headers);
        let Some(backend) = settings.backend.as_ref() else {
            if pending.replace_metadata {
                return Err(S3Error::new(501, "NotImplemented", "CopyObject with x-amz-metadata-directive REPLACE needs the plugin's \"backend\" setting."));
            }
            return Ok(Action::Continue);
        };
        let source = header(headers, "x-amz-copy-source").and_then(copy::source).ok_or_else(|| S3Error::new(400, "InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey."))?;
        let head = copy::head_request(backend, &source.0, &source.1, source.2.as_deref());
        self.copy_onto_itself = (source.0.as_str(), source.1.as_str()) == (self.object.0.as_str(), self.object.1.as_str());
        apply(host::REQUEST_HEADERS, &edits)?;
        host::dispatch(&backend.cluster, &head, std::time::Duration::from_secs(15)).map_err(|e| S3Error::new(503, "ServiceUnavailable", format!("cannot reach the backend cluster {:?} (status {})", backend.cluster, e.0)))?;
        self.pending_copy = Some(pending);
        Ok(Action::Pause)
    }

    fn list_parts_page(&mut self, backend: &copy::Backend, marker: u32) -> Result<(), S3Error> {
        let check = self.layout.as_ref().ok_or_else(|| S3Error::new(500, "InternalError", "no upload"))?;
        let headers = multipart::list_parts_request(backend, &check.bucket, &check.key, &check.backend_id, marker);
        host::dispatch(&backend.cluster, &headers, std::time::Duration::from_secs(15))
            .map(|_| ())
            .map_err(|e| S3Error::new(503, "ServiceUnavailable", format!("cannot reach the backend cluster {:?} (status {})", backend.cluster, e.0)))
    }

    fn layout_page(&mut self, body_size: usize) -> Result<(), S3Error> {
        let settings = self.settings.clone().ok_or_else(|| S3Error::new(503, "ServiceUnavailable", "not configured"))?;
        let status = host::get_headers(host::CALL_RESPONSE_HEADERS).ok().and_then(|h| header(&h, ":status").and_then(|s| s.parse().ok())).unwrap_or(0);
        let body = host::get_buffer(host::CALL_RESPONSE_BODY, 0, body_size).map_err(host_error)?;
        let check = self.layout.as_mut().ok_or_else(|| S3Error::new(500, "InternalError", "no upload"))?;
        let next = check.layout.add_page(status, &String::from_utf8_lossy(&body), check.chunk_size)?;
        match (next, settings.backend.as_ref()) {
            (Some(marker), Some(backend)) => self.list_parts_page(backend, marker),
            _ => {
                let mut check = self.layout.take().ok_or_else(|| S3Error::new(500, "InternalError", "no upload"))?;
                check.layout.check(check.chunk_size)?;
                self.resume_held_request()
            }
        }
    }

    /// The HEAD of a ranged read's object came back. A suffix is asked for
    /// from an absolute offset; an object without envelope gets the client's
    /// range as it is. If the HEAD failed, the range goes as laid out and the
    /// GET gets the backend's own answer.
    fn range_sized(&mut self) -> Result<(), S3Error> {
        let range = self.sizing_range.take();
        let head = host::get_headers(host::CALL_RESPONSE_HEADERS).map_err(host_error)?;
        let found = header(&head, ":status") == Some("200");
        let layout = if found { self.learn_layout(&head) } else { None };
        // Sealed with another chunk size than configured: laid out for its own.
        if let (Some(Layout::Sealed(chunk)), Some(read)) = (layout, self.read.as_mut()) {
            read.aligned_to = chunk;
        }
        let n = match range {
            Some(crate::range::ByteRange::Suffix(n)) => n,
            Some(r) => {
                let value = match layout {
                    Some(Layout::Unsealed) => Some(crate::range::unsealed_header(r)),
                    Some(Layout::Sealed(chunk)) => crate::range::upstream_header(r, chunk),
                    None => None,
                };
                if let Some(value) = value {
                    host::set_header(host::REQUEST_HEADERS, "range", &value).map_err(host_error)?;
                }
                return self.resume_held_request();
            }
            None => return self.resume_held_request(),
        };
        let stored_len = if found { header(&head, "content-length").and_then(|v| v.trim().parse().ok()) } else { None };
        let chunk_size = self.read.as_ref().map(|r| r.aligned_to);
        if stored_len == Some(0) {
            // No range fits an empty object; the response planning answers S3's way.
            host::remove_header(host::REQUEST_HEADERS, "range").map_err(host_error)?;
        } else if let Some(range) = stored_len.zip(chunk_size).and_then(|(len, chunk)| crate::range::upstream_suffix_from(n, chunk, len)) {
            host::set_header(host::REQUEST_HEADERS, "range", &range).map_err(host_error)?;
        }
        self.resume_held_request()
    }

    fn copy_source_checked(&mut self) -> Result<(), S3Error> {
        let pending = self.pending_copy.take().ok_or_else(|| S3Error::new(500, "InternalError", "unexpected callout"))?;
        let head = host::get_headers(host::CALL_RESPONSE_HEADERS).map_err(host_error)?;
        let settings = self.settings.clone().ok_or_else(|| S3Error::new(503, "ServiceUnavailable", "not configured"))?;
        let (edits, envelope) = copy::plan_after_head(&pending, &head, &settings.keyring, &self.copy_write_key, self.copy_onto_itself)?;
        apply(host::REQUEST_HEADERS, &edits)?;
        self.stored = envelope;
        self.copy_checked = true;
        self.resume_held_request()
    }

    fn start_upload(&mut self, upload: Upload, end_of_stream: bool) -> Result<(), S3Error> {
        self.echo_checksums = upload.echo_checksums.clone();
        if end_of_stream {
            // A body-less upload: only an empty object can end here, and an
            // empty segment has no chunk (FORMAT.md).
            self.out.clear();
            let trailers = upload.finish(&mut self.out).map_err(put::upload_error)?;
            self.echo_checksums.extend(trailers);
            if !self.out.is_empty() {
                return Err(S3Error::new(400, "IncompleteBody", "The request ended before its Content-Length."));
            }
            if !self.plaintext_write {
                Metrics::add(self.metrics.objects_encrypted, 1);
            }
        } else {
            let stores_nothing = upload.stores_nothing();
            self.upload = Some(upload);
            if stores_nothing {
                self.hold_empty_upload()?;
            }
        }
        Ok(())
    }

    /// Called while the request headers can still change (header callback,
    /// or a KMS answer while they are held): see `EmptyUpload`. Without a
    /// `backend` setting the filter cannot send the upload itself: it goes
    /// on as it is, its trailer checked only after the backend stored the
    /// empty object (README, "What the filter does").
    fn hold_empty_upload(&mut self) -> Result<(), S3Error> {
        if self.settings.as_ref().is_none_or(|s| s.backend.is_none()) {
            return Ok(());
        }
        let headers = host::get_headers(host::REQUEST_HEADERS).map_err(host_error)?;
        host::set_header(host::REQUEST_HEADERS, "content-length", PLACEHOLDER_LENGTH).map_err(host_error)?;
        self.empty_upload = Some(EmptyUpload { headers, header_checksums: self.echo_checksums.len(), sent: false, abandoned: false });
        Ok(())
    }

    /// The body of a held empty upload checked out: the real upload goes to
    /// the backend (through the backend cluster, which signs it).
    fn send_empty_upload(&mut self) -> Result<(), S3Error> {
        let settings = self.settings.clone().ok_or_else(|| S3Error::new(503, "ServiceUnavailable", "not configured"))?;
        let backend = settings.backend.as_ref().ok_or_else(|| S3Error::new(500, "InternalError", "no backend"))?;
        let Some(held) = self.empty_upload.as_mut() else {
            return Ok(());
        };
        let trailers = self.echo_checksums.get(held.header_checksums..).unwrap_or_default();
        let request = put::empty_upload_request(backend, &held.headers, trailers);
        host::dispatch_with_body(&backend.cluster, &request, &[], std::time::Duration::from_secs(30))
            .map_err(|e| S3Error::new(503, "ServiceUnavailable", format!("cannot reach the backend cluster {:?} (status {})", backend.cluster, e.0)))?;
        held.sent = true;
        Ok(())
    }

    /// The backend answered the real empty upload: that answer (with the
    /// edits any upload response gets) is the client's, and the placeholder
    /// is cut.
    fn empty_upload_answered(&mut self, body_size: usize) -> Result<(), S3Error> {
        let answer = host::get_headers(host::CALL_RESPONSE_HEADERS).map_err(host_error)?;
        let status: u32 = header(&answer, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        if status == 0 {
            return Err(S3Error::new(503, "ServiceUnavailable", "The backend did not answer the upload; it may or may not be stored. Retry it."));
        }
        let body = host::get_buffer(host::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default();
        let mut headers: Vec<(String, String)> = answer
            .into_iter()
            // Framing is the local reply's own; Envoy's markers (the call's
            // router adds x-envoy-upstream-service-time) never go to clients.
            .filter(|(name, _)| !name.starts_with(':') && !name.starts_with("x-envoy-") && !["content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"].contains(&name.as_str()))
            .collect();
        let edits = self.upload_response_edits(&headers);
        headers.retain(|(name, _)| !edits.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) && !edits.set.iter().any(|(s, _)| s.eq_ignore_ascii_case(name)));
        headers.extend(edits.set);
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.finished = true;
        self.upload = None;
        host::send_local_response(status, &pairs, &body).map_err(host_error)
    }

    /// A body the filter checks (signed hash, DeleteObjects keys) or rewrites
    /// (CompleteMultipartUpload) but does not encrypt. Its last byte is held
    /// back until the end of the body is seen and checked: end of stream can
    /// come as a separate empty callback, after the rest went upstream, and
    /// the backend must never hold a complete request that the filter refuses.
    ///
    /// While `awaiting_backend`, Envoy buffers the pieces (the callback's
    /// `body_size` is then everything buffered): each new piece is
    /// transformed in place behind the `held` bytes already done.
    fn passed_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, S3Error> {
        let held = self.held.min(body_size);
        let data = host::get_buffer(host::REQUEST_BODY, held, body_size - held).map_err(host_error)?;
        self.check_passed_body(&data, end_of_stream)?;
        self.out.clear();
        self.out.append(&mut self.withheld);
        match (self.request_rewrite.as_mut(), self.settings.as_ref()) {
            (Some(rewrite), Some(settings)) => rewrite.push(&data, end_of_stream, &mut self.out, settings.keyring.active().ok())?,
            _ => self.out.extend_from_slice(&data),
        }
        if !end_of_stream {
            if let Some(last) = self.out.pop() {
                self.withheld.push(last);
            }
        }
        host::set_buffer(host::REQUEST_BODY, held, body_size - held, &self.out).map_err(host_error)?;
        if self.awaiting_backend() {
            self.held = held + self.out.len();
            return Ok(Action::Pause);
        }
        Ok(Action::Continue)
    }

    /// One decision: a JSON line in Envoy's log, and the fields of the
    /// request's access-log line (envoy/gateway.yaml.tmpl), the last
    /// decision's where there are several (DeleteObjects: one per key).
    #[allow(clippy::too_many_arguments)]
    fn audit(&self, principal: Option<&str>, operation: &str, method: &str, path: &str, (bucket, key): (&str, &str), allowed: bool, reason: &str) {
        let entry = auth::AuditEntry { principal, operation, method, resource: path.split('?').next().unwrap_or("/"), bucket, key, allowed, reason };
        host::log(host::LOG_INFO, &entry.to_json());
        for (name, value) in [
            ("s3crypt_principal", principal.unwrap_or("anonymous")),
            ("s3crypt_operation", operation),
            ("s3crypt_bucket", bucket),
            ("s3crypt_key", key),
            ("s3crypt_decision", entry.decision()),
            ("s3crypt_reason", reason),
        ] {
            let _ = host::set_property(name, value);
        }
        Metrics::add(if allowed { self.metrics.auth_allowed } else { self.metrics.auth_denied }, 1);
    }

    /// Checks a body the filter passes on (signed hash, DeleteObjects keys)
    /// before its last piece leaves: a refusal then means the backend never
    /// gets a complete request.
    fn check_passed_body(&mut self, data: &[u8], end_of_stream: bool) -> Result<(), S3Error> {
        if let Some(check) = self.body_check.as_mut() {
            check.update(data);
            if end_of_stream {
                if let Some(check) = self.body_check.take() {
                    check.verify().map_err(put::digest_error)?;
                }
            }
        }
        if let Some((keys, _, _)) = self.delete_check.as_mut() {
            keys.push(data, end_of_stream)?;
            if end_of_stream {
                if let (Some((keys, bucket, principal)), Some(settings)) = (self.delete_check.take(), self.settings.clone()) {
                    let clients = settings.clients.as_ref().ok_or_else(|| S3Error::new(500, "InternalError", "no clients"))?;
                    for key in &keys.keys {
                        let decision = clients.authorize(principal.as_deref(), &crate::policy::Access::Delete { bucket: &bucket, key });
                        self.audit(principal.as_deref(), "DeleteObjects", "POST", &format!("/{bucket}"), (bucket.as_str(), key.as_str()), decision.allowed, &decision.reason);
                        if !decision.allowed {
                            return Err(S3Error::new(403, "AccessDenied", "Access Denied"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The request headers are held for a call to the backend (part sizes
    /// before CompleteMultipartUpload, the source's HEAD before CopyObject,
    /// the object's HEAD before some ranged reads).
    /// Body pieces arriving meanwhile must be held too: Envoy takes a
    /// `Continue` from a body callback as leave to send the held headers on.
    fn awaiting_backend(&self) -> bool {
        self.layout.is_some() || self.pending_copy.is_some() || self.sizing_range.is_some()
    }

    /// Goes on with a request held by `awaiting_backend`, and the body
    /// pieces Envoy buffered meanwhile.
    fn resume_held_request(&mut self) -> Result<(), S3Error> {
        self.held = 0;
        host::resume_request().map_err(host_error)
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, S3Error> {
        if self.kms_wait.as_ref().is_some_and(KmsWait::holds_request) {
            // Held in Envoy's buffer (body_size is all of it) until the key
            // is known: a Continue here would release the held headers.
            // Past Envoy's buffer limit the client gets 413, nothing stored.
            self.kms_held = body_size;
            self.body_ended = end_of_stream;
            return Ok(Action::Pause);
        }
        if self.body_check.is_some() || self.delete_check.is_some() || self.request_rewrite.is_some() || self.awaiting_backend() {
            return self.passed_body(body_size, end_of_stream);
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(Action::Continue);
        };
        let data = host::get_buffer(host::REQUEST_BODY, 0, body_size).map_err(host_error)?;
        self.out.clear();
        self.plaintext_bytes += upload.push(&data, &mut self.out).map_err(put::upload_error)?;
        if end_of_stream {
            if let Some(upload) = self.upload.take() {
                let trailers = upload.finish(&mut self.out).map_err(put::upload_error)?;
                self.echo_checksums.extend(trailers);
            }
            if !self.plaintext_write {
                Metrics::add(self.metrics.objects_encrypted, 1);
                Metrics::add(self.metrics.bytes_encrypted, self.plaintext_bytes);
            }
        }
        host::set_buffer(host::REQUEST_BODY, 0, body_size, &self.out).map_err(host_error)?;
        if let Some(held) = self.empty_upload.as_ref() {
            // Nothing of a held empty upload goes upstream, not even its end:
            // the placeholder must never complete.
            if end_of_stream && !held.abandoned {
                self.send_empty_upload()?;
            }
            return Ok(Action::Pause);
        }
        Ok(Action::Continue)
    }

    /// Plans a GET/HEAD response from its headers (`kms_dek`: the data key
    /// of a strict-KMS object) and applies the header edits.
    fn plan_read(&mut self, headers: &[(String, String)], kms_dek: Option<&[u8; crate::cipher::KEY_LEN]>) -> Result<(), S3Error> {
        let settings = self.settings.clone().ok_or_else(|| S3Error::new(503, "ServiceUnavailable", "not configured"))?;
        let request = self.read.as_ref().ok_or_else(|| S3Error::new(500, "InternalError", "no read request"))?;
        // What this response shows replaces what was remembered (a read that
        // fails on a stale entry is right on the next try); other answers
        // (the object is gone, say) forget it.
        let learned = matches!(header(headers, ":status"), Some("200" | "206")) && !request.part_number && self.learn_layout(headers).is_some();
        let plan = read::plan_response(headers, request, &settings, kms_dek).inspect_err(|e| {
            if !learned {
                self.forget_layout();
            }
            if e.status == 403 || e.code == "InternalError" {
                Metrics::add(self.metrics.auth_failures, 1);
            }
        })?;
        if let Some(status) = plan.status {
            host::set_header(host::RESPONSE_HEADERS, ":status", &status.to_string()).map_err(host_error)?;
        }
        apply(host::RESPONSE_HEADERS, &plan.edits)?;
        if matches!(plan.body, BodyPlan::Decrypt { .. }) {
            Metrics::add(self.metrics.objects_decrypted, 1);
        }
        self.body = Some(plan.body);
        Ok(())
    }

    /// The stored layout this VM last saw for the object read.
    fn known_layout(&self) -> Option<Layout> {
        let cache = self.layouts.as_ref()?.try_borrow().ok()?;
        cache.get(&self.object.0, &self.object.1, self.read_version.as_deref())
    }

    /// Remembers, and returns, the layout a GET or HEAD of the object showed
    /// (`None`: an envelope that does not parse).
    fn learn_layout(&self, headers: &[(String, String)]) -> Option<Layout> {
        let layout = match header(headers, METADATA_HEADER) {
            None => Layout::Unsealed,
            Some(value) => Layout::Sealed(Envelope::parse(value).ok()?.chunk_size),
        };
        if let Some(mut cache) = self.layouts.as_ref().and_then(|c| c.try_borrow_mut().ok()) {
            cache.remember(&self.object.0, &self.object.1, self.read_version.as_deref(), layout);
        }
        Some(layout)
    }

    /// A read failed: its object may have changed since it was seen.
    fn forget_layout(&self) {
        if let Some(mut cache) = self.layouts.as_ref().and_then(|c| c.try_borrow_mut().ok()) {
            cache.forget(&self.object.0, &self.object.1, self.read_version.as_deref());
        }
    }

    /// Sends one KMS call (headers, body) through the KMS cluster.
    fn ask_kms(&self, strict: &StrictKms, (headers, body): (Vec<(String, String)>, Vec<u8>)) -> Result<(), S3Error> {
        Metrics::add(self.metrics.kms_calls, 1);
        host::dispatch_with_body(&strict.cluster, &headers, &body, KMS_CALL_TIMEOUT).map(|_| ()).map_err(|e| {
            Metrics::add(self.metrics.kms_failures, 1);
            host::log(host::LOG_WARN, &format!("cannot call the KMS cluster {:?} (status {})", strict.cluster, e.0));
            S3Error::new(503, "ServiceUnavailable", "The gateway cannot reach its KMS; nothing was stored or read. Retry later.")
        })
    }

    fn cached_key(&self, cache_id: &[u8; 32]) -> Option<zeroize::Zeroizing<[u8; crate::cipher::KEY_LEN]>> {
        let key = self.kms_cache.as_ref()?.try_borrow_mut().ok()?.get(cache_id)?;
        Metrics::add(self.metrics.kms_cache_hits, 1);
        Some(key)
    }

    fn cache_key(&self, cache_id: [u8; 32], key: &[u8; crate::cipher::KEY_LEN]) {
        if let Some(mut cache) = self.kms_cache.as_ref().and_then(|c| c.try_borrow_mut().ok()) {
            cache.insert(cache_id, key);
        }
    }

    fn kms_error(&self, e: KmsError) -> S3Error {
        Metrics::add(self.metrics.kms_failures, 1);
        host::log(host::LOG_WARN, &format!("{} {}: {e}", self.operation.map(|o| format!("{o:?}")).unwrap_or_default(), self.resource));
        kms::s3_error(&e)
    }

    /// UploadPart of a strict-KMS upload: its data key from the cache, or
    /// from the KMS (`Decrypt` of the blob in the upload id).
    fn start_kms_part(&mut self, settings: &Settings, claims: put::BodyClaims, id: crate::upload_id::ClientUploadId, part: u32, end_of_stream: bool) -> Result<Action, S3Error> {
        let strict = settings
            .kms_strict
            .as_ref()
            .ok_or_else(|| S3Error::new(500, "InternalError", "The upload was started in strict KMS mode, and this gateway has no \"kms_strict\" setting to get its key."))?;
        let blob = id.kms_blob().unwrap_or_default().to_vec();
        let envelope = kms_envelope(strict, id.suite, id.chunk_size, None);
        let context = kms::object_context(&self.object.0, &self.object.1, &envelope.prefix());
        let cache_id = kms::cache_id(&context, &blob);
        if let Some(dek) = self.cached_key(&cache_id) {
            return self.kms_part_ready(claims, &id, part, &dek, end_of_stream).map(|()| Action::Continue);
        }
        self.ask_kms(strict, kms::decrypt_blob_request(strict, &blob, &context))?;
        self.kms_wait = Some(KmsWait::Part { claims, id, part, cache_id, ended_at_headers: end_of_stream });
        Ok(Action::Pause)
    }

    fn kms_part_ready(&mut self, claims: put::BodyClaims, id: &crate::upload_id::ClientUploadId, part: u32, dek: &[u8; crate::cipher::KEY_LEN], end_of_stream: bool) -> Result<(), S3Error> {
        id.check_kms_dek(dek).map_err(|_| S3Error::new(404, "NoSuchUpload", "The specified upload does not exist: its id does not match the key the gateway gave it."))?;
        let (edits, upload) = put::segment(claims, dek, id.suite, id.chunk_size, part)?;
        apply(host::REQUEST_HEADERS, &edits)?;
        self.start_upload(upload, end_of_stream)
    }

    /// The KMS answered: finish what waited for it, then let the held
    /// headers (and body pieces) go on.
    fn kms_answered(&mut self, wait: KmsWait, body_size: usize) -> Result<(), S3Error> {
        let status = host::get_headers(host::CALL_RESPONSE_HEADERS).ok().and_then(|h| header(&h, ":status").and_then(|s| s.parse().ok())).unwrap_or(0);
        // The answer holds a data key (base64): wiped when dropped.
        let body = zeroize::Zeroizing::new(host::get_buffer(host::CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default());
        match wait {
            KmsWait::Put { claims, mut envelope, context, ended_at_headers } => {
                let (dek, blob) = kms::generate_data_key_response(status, &body).map_err(|e| self.kms_error(e))?;
                self.cache_key(kms::cache_id(&context, &blob), &dek);
                envelope.wrapped_dek = WrappedDek::Kms(blob);
                let (edits, upload, envelope) = put::plan_with_key(claims, envelope, &dek)?;
                apply(host::REQUEST_HEADERS, &edits)?;
                self.stored = Some(envelope);
                self.start_upload(upload, ended_at_headers)?;
                self.release_held_request()
            }
            KmsWait::Create { mut envelope, context } => {
                let (dek, blob) = kms::generate_data_key_response(status, &body).map_err(|e| self.kms_error(e))?;
                self.cache_key(kms::cache_id(&context, &blob), &dek);
                envelope.wrapped_dek = WrappedDek::Kms(blob);
                let (edits, pending) = multipart::plan_create_kms(&envelope, &dek);
                apply(host::REQUEST_HEADERS, &edits)?;
                self.pending_upload = Some(pending);
                self.release_held_request()
            }
            KmsWait::Part { claims, id, part, cache_id, ended_at_headers } => {
                let dek = kms::decrypt_blob_response(status, &body).map_err(|e| self.kms_error(e))?;
                self.kms_part_ready(claims, &id, part, &dek, ended_at_headers)?;
                self.cache_key(cache_id, &dek);
                self.release_held_request()
            }
            KmsWait::Read { cache_id } => {
                let dek = kms::decrypt_blob_response(status, &body).map_err(|e| self.kms_error(e))?;
                self.cache_key(cache_id, &dek);
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                self.plan_read(&headers, Some(&dek))?;
                let held = std::mem::take(&mut self.kms_held_response);
                if held > 0 || self.response_ended {
                    // Decrypted in place. The response has not started: a
                    // failure is still a clean S3 error.
                    self.response_body(held, self.response_ended).map_err(|why| S3Error::new(500, "InternalError", format!("The stored object failed the gateway's integrity check: {why}.")))?;
                }
                host::resume_response().map_err(host_error)
            }
        }
    }

    /// Encrypts (or checks) the body pieces Envoy held while the KMS was
    /// asked, in place, then lets the request go on.
    fn release_held_request(&mut self) -> Result<(), S3Error> {
        let held = std::mem::take(&mut self.kms_held);
        if held > 0 || self.body_ended {
            self.request_body(held, self.body_ended)?;
        }
        self.resume_held_request()
    }

    fn response_headers(&mut self) -> Result<Action, S3Error> {
        let Some(settings) = self.settings.clone() else {
            return Ok(Action::Continue);
        };
        match self.operation {
            Some(Operation::PutObject) | Some(Operation::UploadPart) => {
                if let Some(held) = self.empty_upload.as_mut() {
                    // The placeholder of a held empty upload was answered
                    // (an error the backend gave before any body): it stands.
                    held.abandoned = true;
                }
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                let edits = self.upload_response_edits(&headers);
                apply(host::RESPONSE_HEADERS, &edits)?;
            }
            Some(Operation::CopyObject) if self.copy_checked => {
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                if header(&headers, ":status") == Some("200") {
                    self.response_rewrite = Some(BodyRewrite::copied(self.stored.take()));
                    host::remove_header(host::RESPONSE_HEADERS, "content-length").map_err(host_error)?;
                }
            }
            Some(Operation::CompleteMultipartUpload) if self.client_upload.is_some() => {
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                if header(&headers, ":status") == Some("200") {
                    self.response_rewrite = Some(BodyRewrite::completed());
                    host::remove_header(host::RESPONSE_HEADERS, "content-length").map_err(host_error)?;
                }
            }
            Some(Operation::CreateMultipartUpload) | Some(Operation::ListParts) | Some(Operation::ListObjects) => {
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                if header(&headers, ":status") != Some("200") {
                    return Ok(Action::Continue);
                }
                self.response_rewrite = match self.operation {
                    Some(Operation::CreateMultipartUpload) => self.pending_upload.take().map(BodyRewrite::created),
                    Some(Operation::ListParts) => self.client_upload.take().map(|(id, chunk)| BodyRewrite::parts(Some(id), chunk)),
                    _ => Some(BodyRewrite::listing(settings.chunk_size)),
                };
                // The rewritten body has another length: let Envoy frame it.
                host::remove_header(host::RESPONSE_HEADERS, "content-length").map_err(host_error)?;
                host::remove_header(host::RESPONSE_HEADERS, "content-md5").map_err(host_error)?;
            }
            Some(Operation::GetObject) | Some(Operation::HeadObject) => {
                if self.read.is_none() {
                    return Ok(Action::Continue);
                }
                let headers = host::get_headers(host::RESPONSE_HEADERS).map_err(host_error)?;
                let mut kms_dek = None;
                if let (Some(envelope), Some(strict)) = (read::kms_envelope(&headers), settings.kms_strict.as_ref()) {
                    if let WrappedDek::Kms(blob) = &envelope.wrapped_dek {
                        let context = kms::object_context(&self.object.0, &self.object.1, &envelope.prefix());
                        let cache_id = kms::cache_id(&context, blob);
                        match self.cached_key(&cache_id) {
                            Some(dek) => kms_dek = Some(dek),
                            None => {
                                self.ask_kms(strict, kms::decrypt_blob_request(strict, blob, &context))?;
                                self.kms_wait = Some(KmsWait::Read { cache_id });
                                return Ok(Action::Pause);
                            }
                        }
                    }
                }
                self.plan_read(&headers, kms_dek.as_deref())?;
            }
            _ => {}
        }
        Ok(Action::Continue)
    }

    /// PutObject/UploadPart response headers: no plaintext integrity header
    /// of the backend's, the client's checksums echoed, the ETag the client
    /// sees.
    fn upload_response_edits(&mut self, headers: &[(String, String)]) -> HeaderEdits {
        let mut edits = HeaderEdits { remove: put::plaintext_integrity_headers(), set: std::mem::take(&mut self.echo_checksums) };
        if let Some(etag) = self.stored.as_ref().and_then(|envelope| read::client_etag(envelope, header(headers, "etag"))) {
            edits.set.push(("etag".into(), etag));
        } else if self.operation == Some(Operation::UploadPart) && !self.plaintext_write {
            // The part's ETag is the ciphertext's MD5: marked so that
            // clients comparing it with their MD5 know it is not one;
            // CompleteMultipartUpload takes the mark off again.
            if let Some(etag) = header(headers, "etag").map(multipart::part_etag_for_client) {
                edits.set.push(("etag".into(), etag));
            }
        }
        edits
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Result<Action, String> {
        if matches!(self.kms_wait, Some(KmsWait::Read { .. })) {
            self.kms_held_response = body_size;
            self.response_ended = end_of_stream;
            return Ok(Action::Pause);
        }
        if let (Some(rewrite), Some(settings)) = (self.response_rewrite.as_mut(), self.settings.as_ref()) {
            let data = host::get_buffer(host::RESPONSE_BODY, 0, body_size).map_err(|e| format!("host status {}", e.0))?;
            self.out.clear();
            // Strict KMS uploads name no KEK: their ids carry the KMS blob.
            let kek = match rewrite.sealing_key_id() {
                Some(id) => settings.keyring.key(id).ok(),
                None => settings.keyring.active().ok(),
            };
            rewrite.push(&data, end_of_stream, &mut self.out, kek).map_err(|e| e.message)?;
            host::set_buffer(host::RESPONSE_BODY, 0, body_size, &self.out).map_err(|e| format!("host status {}", e.0))?;
            return Ok(Action::Continue);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(Action::Continue);
        };
        if matches!(body, BodyPlan::Unchanged) {
            return Ok(Action::Continue);
        }
        let data = host::get_buffer(host::RESPONSE_BODY, 0, body_size).map_err(|e| format!("host status {}", e.0))?;
        self.out.clear();
        body.push(&data, &mut self.out).map_err(|e| e.to_string())?;
        if end_of_stream {
            body.finish().map_err(|e| e.to_string())?;
        }
        if matches!(body, BodyPlan::Decrypt { .. }) {
            Metrics::add(self.metrics.bytes_decrypted, self.out.len() as u64);
        }
        host::set_buffer(host::RESPONSE_BODY, 0, body_size, &self.out).map_err(|e| format!("host status {}", e.0))?;
        Ok(Action::Continue)
    }
}
