//! Key-encryption keys held by a KMS: the plugin configuration carries the
//! KEK encrypted under a KMS key (a `CiphertextBlob`), and the filter asks the
//! KMS to decrypt it once per VM at start-up, through an Envoy cluster that
//! signs the call for service `kms` (so no KMS credentials live in the VM).
//! Objects never reach the KMS: it is off the data path.
//!
//! Pure: builds the AWS KMS `Decrypt` request (JSON 1.1 protocol) and reads
//! its answer; the glue dispatches it.
//!
//! Strict mode (`kms_strict`, below) puts the KMS on the data path instead:
//! every object's data key is made and unwrapped by the KMS.

use crate::cipher::KEY_LEN;
use crate::s3::S3Error;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use base64::Engine;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Where a KEK's ciphertext is decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsSource {
    /// The Envoy cluster reaching the KMS (signing for service `kms`).
    pub cluster: String,
    /// Host the KMS endpoint expects, e.g. `kms.eu-west-1.amazonaws.com`.
    pub authority: String,
    pub ciphertext_blob: Vec<u8>,
    /// Optional: the KMS key that must have encrypted the blob.
    pub key_id: Option<String>,
    /// The encryption context the blob was encrypted with.
    pub encryption_context: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmsError {
    /// The KMS answered with an error (its `__type` and message).
    Refused { status: u32, kind: String, message: String },
    /// The answer is not a Decrypt response with a 32-byte plaintext.
    BadResponse(&'static str),
    /// No usable answer: the KMS could not be reached, timed out, or failed
    /// without saying why.
    Unavailable(String),
}

impl std::fmt::Display for KmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmsError::Refused { status, kind, message } => write!(f, "KMS refused Decrypt (HTTP {status}, {kind}): {message}"),
            KmsError::BadResponse(why) => write!(f, "unusable KMS Decrypt response: {why}"),
            KmsError::Unavailable(why) => write!(f, "KMS unavailable: {why}"),
        }
    }
}

/// The HTTP request (headers, body) for `Decrypt`.
pub fn decrypt_request(source: &KmsSource) -> (Vec<(String, String)>, Vec<u8>) {
    let mut body = serde_json::Map::new();
    body.insert("CiphertextBlob".into(), STANDARD.encode(&source.ciphertext_blob).into());
    if let Some(key_id) = &source.key_id {
        body.insert("KeyId".into(), key_id.clone().into());
    }
    if !source.encryption_context.is_empty() {
        let context: serde_json::Map<String, serde_json::Value> = source.encryption_context.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        body.insert("EncryptionContext".into(), context.into());
    }
    let body = serde_json::Value::Object(body).to_string().into_bytes();
    let headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/".into()),
        (":authority".into(), source.authority.clone()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-target".into(), "TrentService.Decrypt".into()),
        ("content-length".into(), body.len().to_string()),
    ];
    (headers, body)
}

/// The KEK from a `Decrypt` response.
pub fn decrypt_response(status: u32, body: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KmsError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| KmsError::BadResponse("not JSON"))?;
    if status != 200 {
        let text = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let message = if text("message").is_empty() { text("Message") } else { text("message") };
        return Err(KmsError::Refused { status, kind: text("__type"), message });
    }
    let plaintext = value.get("Plaintext").and_then(|v| v.as_str()).ok_or(KmsError::BadResponse("no Plaintext"))?;
    let bytes = Zeroizing::new(STANDARD.decode(plaintext).map_err(|_| KmsError::BadResponse("Plaintext is not base64"))?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(KmsError::BadResponse("the decrypted key is not 32 bytes"));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

// ---------------------------------------------------------------------------
// Strict mode: one data key per object, made and unwrapped by the KMS.
//
// PutObject and CreateMultipartUpload ask the KMS for a new data key
// (`GenerateDataKey`); the envelope keeps its `CiphertextBlob`; reads and
// UploadParts ask the KMS to `Decrypt` it. Every call names the object in
// its encryption context (FORMAT.md, "KMS-wrapped data keys"), so a blob
// moved onto another object does not decrypt. Unwrapped keys are cached per
// VM, bounded by count.

/// The plugin's `kms_strict` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrictKms {
    /// The id the envelope's `k` field carries for KMS-wrapped data keys.
    pub id: String,
    /// The Envoy cluster reaching the KMS (signing for service `kms`).
    pub cluster: String,
    pub authority: String,
    /// The KMS key that makes (and must have made) every data key.
    pub key_id: String,
    /// How many unwrapped data keys one VM keeps.
    pub cache_entries: usize,
}

/// Largest `CiphertextBlob` accepted in an envelope or upload id: S3 allows
/// 2 KiB of user metadata in all (AWS KMS blobs are under 200 bytes).
pub const MAX_BLOB_LEN: usize = 1024;

/// The encryption context of an object's data key.
pub fn object_context(bucket: &str, key: &str, envelope_prefix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("bucket".to_string(), bucket.to_string()), ("key".to_string(), key.to_string()), ("s3crypt".to_string(), envelope_prefix.to_string())])
}

fn json_request(kms: &StrictKms, target: &str, body: serde_json::Value) -> (Vec<(String, String)>, Vec<u8>) {
    let body = body.to_string().into_bytes();
    let headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/".into()),
        (":authority".into(), kms.authority.clone()),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-target".into(), format!("TrentService.{target}")),
        ("content-length".into(), body.len().to_string()),
    ];
    (headers, body)
}

fn context_json(context: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(context.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect())
}

/// `GenerateDataKey`: a new 256-bit data key for one object.
pub fn generate_data_key_request(kms: &StrictKms, context: &BTreeMap<String, String>) -> (Vec<(String, String)>, Vec<u8>) {
    let body = serde_json::json!({ "KeyId": kms.key_id, "KeySpec": "AES_256", "EncryptionContext": context_json(context) });
    json_request(kms, "GenerateDataKey", body)
}

/// `Decrypt` of an object's data key, under the configured KMS key only.
pub fn decrypt_blob_request(kms: &StrictKms, blob: &[u8], context: &BTreeMap<String, String>) -> (Vec<(String, String)>, Vec<u8>) {
    let body = serde_json::json!({ "CiphertextBlob": STANDARD.encode(blob), "KeyId": kms.key_id, "EncryptionContext": context_json(context) });
    json_request(kms, "Decrypt", body)
}

/// The KMS's answer as JSON, or the error it stands for. Status 0 is a call
/// that got no answer (connection refused, reset, timeout).
fn answer(status: u32, body: &[u8]) -> Result<serde_json::Value, KmsError> {
    if status == 0 {
        return Err(KmsError::Unavailable("no answer".into()));
    }
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let text = |name: &str| value.as_ref().and_then(|v| v.get(name)).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        // `__type` may carry a namespace: "com.amazonaws.kms#NotFoundException".
        let kind = text("__type").rsplit('#').next().unwrap_or_default().to_owned();
        if kind.is_empty() {
            return Err(KmsError::Unavailable(format!("HTTP {status}")));
        }
        let message = if text("message").is_empty() { text("Message") } else { text("message") };
        return Err(KmsError::Refused { status, kind, message });
    }
    value.ok_or(KmsError::BadResponse("not JSON"))
}

fn base64_field(value: &serde_json::Value, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let text = value.get(name).and_then(|v| v.as_str()).ok_or(KmsError::BadResponse("a field is missing"))?;
    STANDARD.decode(text).map(Zeroizing::new).map_err(|_| KmsError::BadResponse("a field is not base64"))
}

/// The data key from an answer's `Plaintext`; the parsed copy of its text
/// is wiped as it is read.
fn plaintext_key(value: &mut serde_json::Value) -> Result<Zeroizing<[u8; KEY_LEN]>, KmsError> {
    let key = base64_field(value, "Plaintext").and_then(|bytes| data_key(&bytes));
    if let Some(serde_json::Value::String(text)) = value.get_mut("Plaintext") {
        zeroize::Zeroize::zeroize(text);
    }
    key
}

fn data_key(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KmsError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(KmsError::BadResponse("the data key is not 32 bytes"));
    }
    key.copy_from_slice(bytes);
    Ok(key)
}

/// A `GenerateDataKey` answer: the data key and its `CiphertextBlob`.
pub fn generate_data_key_response(status: u32, body: &[u8]) -> Result<(Zeroizing<[u8; KEY_LEN]>, Vec<u8>), KmsError> {
    let mut value = answer(status, body)?;
    let key = plaintext_key(&mut value)?;
    let blob = base64_field(&value, "CiphertextBlob")?.to_vec();
    if blob.is_empty() || blob.len() > MAX_BLOB_LEN {
        return Err(KmsError::BadResponse("the CiphertextBlob is empty or longer than 1024 bytes"));
    }
    Ok((key, blob))
}

/// A `Decrypt` answer for an object's data key.
pub fn decrypt_blob_response(status: u32, body: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, KmsError> {
    let mut value = answer(status, body)?;
    plaintext_key(&mut value)
}

/// The S3 error a client gets when the KMS did not give a data key. Like S3
/// with SSE-KMS: `KMS.*` codes for the key's state, AccessDenied for
/// permissions and for a key that does not belong to this object, 503 when
/// the KMS cannot answer (the client may retry).
pub fn s3_error(e: &KmsError) -> S3Error {
    match e {
        KmsError::Unavailable(why) => S3Error::new(503, "ServiceUnavailable", format!("The gateway's KMS did not answer ({why}); nothing was stored or read. Retry later.")),
        KmsError::BadResponse(why) => S3Error::new(503, "ServiceUnavailable", format!("The gateway's KMS gave an unusable answer ({why}).")),
        KmsError::Refused { kind, message, .. } => match kind.as_str() {
            "NotFoundException" => S3Error::new(400, "KMS.NotFoundException", message.clone()),
            "DisabledException" => S3Error::new(400, "KMS.DisabledException", message.clone()),
            "KMSInvalidStateException" => S3Error::new(400, "KMS.KMSInvalidStateException", message.clone()),
            "InvalidCiphertextException" | "IncorrectKeyException" => S3Error::new(
                403,
                "AccessDenied",
                "The KMS does not decrypt this object's data key for this bucket and key: the object's encryption metadata was moved from another object or altered.",
            ),
            "AccessDeniedException" => S3Error::new(403, "AccessDenied", format!("The KMS denied the gateway: {message}")),
            "ThrottlingException" | "LimitExceededException" => S3Error::new(503, "SlowDown", "The gateway's KMS is throttling requests. Reduce your request rate."),
            _ => S3Error::new(503, "ServiceUnavailable", format!("The gateway's KMS refused the call ({kind}).")),
        },
    }
}

/// What a cached data key is filed under: its blob and the encryption
/// context the KMS checked it with, so a blob moved onto another object
/// never finds the key the KMS gave for the first.
pub fn cache_id(context: &BTreeMap<String, String>, blob: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new_with_prefix(b"s3crypt kms cache\0");
    hash.update(context_json(context).to_string().as_bytes());
    hash.update([0u8]);
    hash.update(blob);
    hash.finalize().into()
}

/// Unwrapped data keys, most recently used last; the oldest goes first when
/// full. Keys are zeroized when they leave (`Zeroizing`).
pub struct DekCache {
    capacity: usize,
    entries: Vec<([u8; 32], Zeroizing<[u8; KEY_LEN]>)>,
}

impl DekCache {
    pub fn new(capacity: usize) -> DekCache {
        DekCache { capacity, entries: Vec::new() }
    }

    pub fn get(&mut self, id: &[u8; 32]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let at = self.entries.iter().position(|(k, _)| k == id)?;
        let entry = self.entries.remove(at);
        let key = Zeroizing::new(*entry.1);
        self.entries.push(entry);
        Some(key)
    }

    pub fn insert(&mut self, id: [u8; 32], key: &[u8; KEY_LEN]) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(k, _)| *k != id);
        while self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((id, Zeroizing::new(*key)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn source() -> KmsSource {
        KmsSource {
            cluster: "kms".into(),
            authority: "kms.eu-west-1.amazonaws.com".into(),
            ciphertext_blob: vec![1, 2, 3],
            key_id: Some("alias/s3crypt".into()),
            encryption_context: BTreeMap::from([("purpose".to_string(), "s3crypt-kek".to_string())]),
        }
    }

    #[test]
    fn request_is_kms_json_1_1() {
        let (headers, body) = decrypt_request(&source());
        assert!(headers.contains(&("x-amz-target".into(), "TrentService.Decrypt".into())));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["CiphertextBlob"], "AQID");
        assert_eq!(v["KeyId"], "alias/s3crypt");
        assert_eq!(v["EncryptionContext"]["purpose"], "s3crypt-kek");
    }

    #[test]
    fn responses() {
        let ok = format!(r#"{{"KeyId":"k","Plaintext":"{}"}}"#, STANDARD.encode([7u8; 32]));
        assert_eq!(*decrypt_response(200, ok.as_bytes()).unwrap(), [7u8; 32]);
        let short = format!(r#"{{"Plaintext":"{}"}}"#, STANDARD.encode([7u8; 16]));
        assert!(matches!(decrypt_response(200, short.as_bytes()), Err(KmsError::BadResponse(_))));
        let refused = decrypt_response(400, br#"{"__type":"InvalidCiphertextException","message":"bad"}"#).unwrap_err();
        assert_eq!(refused.to_string(), "KMS refused Decrypt (HTTP 400, InvalidCiphertextException): bad");
    }
    fn strict() -> StrictKms {
        StrictKms { id: "kms".into(), cluster: "kms".into(), authority: "kms.local:4566".into(), key_id: "alias/s3crypt".into(), cache_entries: 2 }
    }

    #[test]
    fn strict_requests_name_the_object_in_their_context() {
        let context = object_context("bkt", "dir/a b", "v=1;s=chacha20-poly1305;c=65536;k=kms;n=5");
        let (headers, body) = generate_data_key_request(&strict(), &context);
        assert!(headers.contains(&("x-amz-target".into(), "TrentService.GenerateDataKey".into())));
        assert!(headers.contains(&(":authority".into(), "kms.local:4566".into())));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["KeyId"].as_str(), v["KeySpec"].as_str()), (Some("alias/s3crypt"), Some("AES_256")));
        assert_eq!(v["EncryptionContext"]["bucket"], "bkt");
        assert_eq!(v["EncryptionContext"]["key"], "dir/a b");
        assert_eq!(v["EncryptionContext"]["s3crypt"], "v=1;s=chacha20-poly1305;c=65536;k=kms;n=5");
        let (headers, body) = decrypt_blob_request(&strict(), &[1, 2, 3], &context);
        assert!(headers.contains(&("x-amz-target".into(), "TrentService.Decrypt".into())));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["CiphertextBlob"].as_str(), v["KeyId"].as_str()), (Some("AQID"), Some("alias/s3crypt")));
        assert_eq!(v["EncryptionContext"]["key"], "dir/a b");
    }

    #[test]
    fn strict_responses_and_their_s3_errors() {
        let ok = format!(r#"{{"KeyId":"k","Plaintext":"{}","CiphertextBlob":"AQID"}}"#, STANDARD.encode([7u8; 32]));
        let (key, blob) = generate_data_key_response(200, ok.as_bytes()).unwrap();
        assert_eq!((*key, blob), ([7u8; 32], vec![1, 2, 3]));
        assert_eq!(*decrypt_blob_response(200, ok.as_bytes()).unwrap(), [7u8; 32]);
        let no_blob = format!(r#"{{"Plaintext":"{}"}}"#, STANDARD.encode([7u8; 32]));
        assert!(matches!(generate_data_key_response(200, no_blob.as_bytes()), Err(KmsError::BadResponse(_))));
        let code = |status, body: &[u8]| s3_error(&decrypt_blob_response(status, body).unwrap_err());
        assert_eq!((code(0, b"").status, code(0, b"").code), (503, "ServiceUnavailable"));
        assert_eq!(code(503, b"upstream connect error").code, "ServiceUnavailable");
        assert_eq!(code(400, br#"{"__type":"NotFoundException","message":"no key"}"#).code, "KMS.NotFoundException");
        assert_eq!(code(400, br#"{"__type":"com.amazonaws.kms#DisabledException"}"#).code, "KMS.DisabledException");
        let moved = code(400, br#"{"__type":"InvalidCiphertextException","message":""}"#);
        assert_eq!((moved.status, moved.code), (403, "AccessDenied"));
        assert_eq!(code(400, br#"{"__type":"ThrottlingException"}"#).code, "SlowDown");
        assert_eq!(code(500, br#"{"__type":"KMSInternalException"}"#).status, 503);
        assert!(matches!(decrypt_blob_response(200, b"{}"), Err(KmsError::BadResponse(_))));
    }

    #[test]
    fn cache_is_bounded_and_keyed_by_blob_and_context() {
        let a = cache_id(&object_context("b", "k1", "p"), &[1]);
        let moved = cache_id(&object_context("b", "k2", "p"), &[1]);
        assert_ne!(a, moved);
        assert_ne!(a, cache_id(&object_context("b", "k1", "p"), &[2]));
        let (b, c) = (cache_id(&object_context("b", "x", "p"), &[1]), cache_id(&object_context("b", "y", "p"), &[1]));
        let mut cache = DekCache::new(2);
        cache.insert(a, &[1; 32]);
        cache.insert(b, &[2; 32]);
        assert_eq!(cache.get(&a).map(|k| *k), Some([1; 32])); // a is now the most recent
        cache.insert(c, &[3; 32]); // b goes
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b).is_none());
        assert_eq!(cache.get(&a).map(|k| *k), Some([1; 32]));
        assert_eq!(cache.get(&c).map(|k| *k), Some([3; 32]));
        assert!(cache.get(&moved).is_none());
    }
}
