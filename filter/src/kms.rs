//! Key-encryption keys held by a KMS: the plugin configuration carries the
//! KEK encrypted under a KMS key (a `CiphertextBlob`), and the filter asks the
//! KMS to decrypt it once per VM at start-up, through an Envoy cluster that
//! signs the call for service `kms` (so no KMS credentials live in the VM).
//! Objects never reach the KMS: it is off the data path.
//!
//! Pure: builds the AWS KMS `Decrypt` request (JSON 1.1 protocol) and reads
//! its answer; the glue dispatches it.

use crate::cipher::KEY_LEN;
use base64::engine::general_purpose::STANDARD;
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
}

impl std::fmt::Display for KmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmsError::Refused { status, kind, message } => write!(f, "KMS refused Decrypt (HTTP {status}, {kind}): {message}"),
            KmsError::BadResponse(why) => write!(f, "unusable KMS Decrypt response: {why}"),
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
}
