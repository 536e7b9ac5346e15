//! Key-encryption keys from the gateway's own plugin JSON, parsed by the
//! filter's config code (so `key_hex`, `key_hex_env`, `password`,
//! `password_env` + PBKDF2 mean exactly what they mean in the gateway), plus
//! `--key ID=HEX` on the command line. KMS-held keys are decrypted with a
//! signed KMS `Decrypt` call, as the gateway does at start-up; so are the
//! data keys of strict-KMS objects (`kms=` envelopes), one call per object,
//! with the object's bucket and key in the encryption context.

use crate::object::unwrap_with_keyring;
use crate::s3::{Client, Credentials, Endpoint};
use anyhow::{bail, Context, Result};
use s3crypt_filter::cipher::{Suite, KEY_LEN};
use s3crypt_filter::config;
use s3crypt_filter::envelope::{Envelope, Keyring, WrappedDek};
use s3crypt_filter::kms::{self, KmsError, StrictKms};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// The configuration fields the tool uses; the rest of the plugin JSON
/// (clients, backend, ...) is the gateway's business and is not read, so a
/// secret it names through `*_env` need not be set here.
const KEPT_FIELDS: &[&str] = &["keys", "write_key", "cipher", "chunk_size", "kms_strict"];

pub struct Keys {
    pub keyring: Keyring,
    /// The configured cipher and chunk size (what `encrypt` uses by default).
    pub suite: Suite,
    pub chunk_size: u32,
    /// The gateway's `kms_strict` setting: the KMS key that made the data
    /// keys of `kms=` objects.
    pub strict: Option<StrictKms>,
    pub kms_options: KmsOptions,
}

/// The name an object was written under: the encryption context of a
/// strict-KMS data key names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub bucket: String,
    pub key: String,
}

impl Keys {
    /// An object's data key: unwrapped by the KEK its envelope names (`w=`),
    /// or by the KMS (`kms=`), asked with the name the object was written
    /// under (`None`: not known, an error for a `kms=` envelope).
    pub fn data_key(&self, envelope: &Envelope, name: Option<&ObjectName>) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let WrappedDek::Kms(_) = envelope.wrapped_dek else {
            return unwrap_with_keyring(&self.keyring, envelope);
        };
        let strict = self.strict.as_ref().context(
            "kms_wrapped: a strict-KMS object (kms=): its data key is held by the KMS; give the gateway's plugin JSON with its \"kms_strict\" setting (--config), which names the KMS key",
        )?;
        let name = name.context("kms_wrapped: a strict-KMS object (kms=): the KMS decrypts its data key only for the bucket and key it was written under: give --bucket BUCKET and --object-key KEY")?;
        strict_data_key(strict, &self.kms_options, envelope, name)
    }
}

/// How to reach a KMS for KMS-held keys.
#[derive(Default, Clone)]
pub struct KmsOptions {
    /// Overrides `https://<kms.authority>` from the configuration.
    pub endpoint: Option<String>,
    /// Overrides the region taken from the authority (`kms.<region>.amazonaws.com`).
    pub region: Option<String>,
}

/// The plugin JSON reduced to the key fields, with `--key ID=HEX` keys added.
pub fn key_config(config_json: Option<&[u8]>, extra_keys: &[String]) -> Result<Vec<u8>> {
    let mut value = match config_json {
        Some(json) => serde_json::from_slice::<serde_json::Value>(json).context("the plugin configuration is not valid JSON")?,
        None => serde_json::json!({ "keys": [] }),
    };
    let object = value.as_object_mut().context("the plugin configuration must be a JSON object")?;
    object.retain(|name, _| KEPT_FIELDS.contains(&name.as_str()));
    if object.contains_key("kms_strict") {
        // The gateway needs "backend" beside "kms_strict" (for its own
        // CopyObject lookups); the tool reaches the backend through
        // --endpoint, so a stand-in satisfies the shared validation.
        object.insert("backend".into(), serde_json::json!({ "authority": "unused.invalid" }));
    }
    let keys = object.entry("keys").or_insert_with(|| serde_json::json!([])).as_array_mut().context("\"keys\" must be a list")?;
    let single_configured = if keys.len() == 1 { keys.first().and_then(|k| k.get("id")).and_then(|id| id.as_str()).map(str::to_owned) } else { None };
    let mut first_extra = None;
    for item in extra_keys {
        let (id, hex_key) = item.split_once('=').with_context(|| format!("--key {item:?}: expected ID=HEX"))?;
        first_extra.get_or_insert_with(|| id.to_owned());
        keys.push(serde_json::json!({ "id": id, "key_hex": hex_key }));
    }
    if !object.contains_key("write_key") {
        // A one-key configuration needs no write_key; with keys added, its key stays the active one.
        if let Some(active) = single_configured.or(first_extra) {
            object.insert("write_key".into(), active.into());
        }
    }
    serde_json::to_vec(&value).context("re-encoding the configuration")
}

pub fn load(config_path: Option<&Path>, extra_keys: &[String], kms_options: &KmsOptions) -> Result<Keys> {
    if config_path.is_none() && extra_keys.is_empty() {
        bail!("no keys: give --config plugin.json (the gateway's plugin configuration) or --key ID=HEX");
    }
    let json = match config_path {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let reduced = Zeroizing::new(key_config(json.as_deref(), extra_keys)?);
    drop(json.map(Zeroizing::new));
    let env = |name: &str| std::env::var(name).ok();
    let staged = config::parse_staged(&reduced, &env).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let mut decrypted = Vec::with_capacity(staged.pending.len());
    for pending in &staged.pending {
        let key = kms_decrypt(&pending.source, kms_options).with_context(|| format!("key {:?} is held by a KMS and could not be decrypted", pending.id))?;
        decrypted.push((pending.slot(), key));
    }
    let settings = staged.finish(decrypted).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    Ok(Keys { keyring: settings.keyring, suite: settings.suite, chunk_size: settings.chunk_size, strict: settings.kms_strict, kms_options: kms_options.clone() })
}

/// `kms.eu-west-1.amazonaws.com` -> `eu-west-1`.
fn region_of_kms_host(authority: &str) -> Option<String> {
    let host = authority.split(':').next()?;
    let mut labels = host.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    (service.starts_with("kms") && host.ends_with(".amazonaws.com")).then(|| region.to_owned())
}

/// A KMS request as the filter's `kms` module builds it: headers, body.
type KmsRequest = (Vec<(String, String)>, Vec<u8>);

/// Sends a KMS request built by the filter's `kms` module (its pseudo-headers
/// and host are the signing client's business) to `https://<authority>` or
/// the --kms-endpoint; returns the status and the answer (wiped when dropped:
/// it holds a key).
fn kms_call(authority: &str, options: &KmsOptions, request: KmsRequest) -> Result<(u32, Zeroizing<Vec<u8>>)> {
    let url = options.endpoint.clone().unwrap_or_else(|| format!("https://{authority}"));
    let endpoint = Endpoint::parse(&url)?;
    let region = options.region.clone().or_else(|| region_of_kms_host(authority)).unwrap_or_else(|| "us-east-1".into());
    let client = Client::new(endpoint, region, "kms", Credentials::from_env()?);
    let (request_headers, body) = request;
    let headers: Vec<(String, String)> = request_headers.into_iter().filter(|(n, _)| n == "content-type" || n == "x-amz-target").collect();
    let response = client.send("POST", "/", "", &headers, &body)?;
    let status = response.status;
    let mut body = response.body;
    let answer = Zeroizing::new(body.with_config().limit(1024 * 1024).read_to_vec().context("reading the KMS answer")?);
    Ok((u32::from(status), answer))
}

fn kms_decrypt(source: &kms::KmsSource, options: &KmsOptions) -> Result<Zeroizing<[u8; 32]>> {
    let (status, answer) = kms_call(&source.authority, options, kms::decrypt_request(source))?;
    kms::decrypt_response(status, &answer).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The encryption context of a strict-KMS object's data key (FORMAT.md,
/// "KMS-wrapped data keys"): its bucket, key and envelope up to `;kms=`.
pub fn strict_context(envelope: &Envelope, name: &ObjectName) -> BTreeMap<String, String> {
    kms::object_context(&name.bucket, &name.key, &envelope.prefix())
}

/// The KMS `Decrypt` request for a strict-KMS object's data key, as the
/// gateway makes it: the blob, the object's context, the configured KMS key.
pub fn strict_request(strict: &StrictKms, envelope: &Envelope, name: &ObjectName) -> Result<KmsRequest> {
    let WrappedDek::Kms(blob) = &envelope.wrapped_dek else {
        bail!("the envelope has no kms= data key");
    };
    Ok(kms::decrypt_blob_request(strict, blob, &strict_context(envelope, name)))
}

fn strict_data_key(strict: &StrictKms, options: &KmsOptions, envelope: &Envelope, name: &ObjectName) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let (status, answer) = kms_call(&strict.authority, options, strict_request(strict, envelope, name)?)?;
    kms::decrypt_blob_response(status, &answer).map_err(|e| match &e {
        KmsError::Refused { kind, .. } if kind == "InvalidCiphertextException" || kind == "IncorrectKeyException" => anyhow::anyhow!(
            "unwrap_failed: the KMS does not decrypt this object's data key for bucket {:?}, key {:?} ({e}): the object was written under another name (give that one with --bucket and --object-key), its envelope was altered, or it was made under another KMS key than kms_strict.key_id {:?}",
            name.bucket,
            name.key,
            strict.key_id
        ),
        _ => anyhow::anyhow!("the KMS did not give this object's data key: {e}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const HEX_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const HEX_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

    fn keys_of(json: &str, extra: &[&str]) -> Result<Keys> {
        // One file per call: tests run in parallel, several with the same JSON.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("s3crypt-tool-keys-{}-{call}", std::process::id()));
        std::fs::write(&dir, json).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let keys = load(Some(&dir), &extra, &KmsOptions::default());
        std::fs::remove_file(&dir).unwrap();
        keys
    }

    #[test]
    fn the_gateways_plugin_json_is_read_as_the_gateway_reads_it() {
        // Other fields (clients naming an unset secret variable) do not matter here.
        let json = format!(
            r#"{{"keys":[{{"id":"new","key_hex":"{HEX_A}"}},{{"id":"old","key_hex":"{HEX_B}"}}],"write_key":"new","cipher":"aes-256-gcm","chunk_size":16384,
               "clients":[{{"access_key_id":"AK","secret_access_key_env":"S3CRYPT_TOOL_TEST_UNSET","grants":[]}}],"backend":{{"authority":"x:1"}}}}"#
        );
        let keys = keys_of(&json, &[]).unwrap();
        assert_eq!(keys.keyring.active_id(), "new");
        assert!(keys.keyring.key("old").is_ok());
        assert_eq!((keys.suite, keys.chunk_size), (Suite::Aes256Gcm, 16_384));
    }

    #[test]
    fn extra_keys_join_and_the_configured_key_stays_active() {
        let json = format!(r#"{{"keys":[{{"id":"main","key_hex":"{HEX_A}"}}]}}"#);
        let keys = keys_of(&json, &[&format!("older={HEX_B}")]).unwrap();
        assert_eq!(keys.keyring.active_id(), "main");
        assert!(keys.keyring.key("older").is_ok());
        let reduced = key_config(None, &[format!("x={HEX_A}"), format!("y={HEX_B}")]).unwrap();
        let parsed = config::parse(&reduced, &|_| None).unwrap();
        assert_eq!(parsed.keyring.active_id(), "x");
        assert!(key_config(None, &["nohex".into()]).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let err = keys_of(r#"{"keys":[{"id":"a","key_hex_env":"S3CRYPT_TOOL_TEST_UNSET"}]}"#, &[]).err().unwrap().to_string();
        assert!(err.contains("keys[0].key_hex_env"), "{err}");
    }

    /// The plugin JSON of a strict-mode gateway, as `make run` would have it.
    fn strict_json(extra: &str) -> String {
        format!(
            r#"{{"kms_strict":{{"key_id":"alias/s3crypt","authority":"kms.eu-west-1.amazonaws.com"}},"backend":{{"authority":"s3.local:9000"}},
               "clients":[{{"access_key_id":"AK","secret_access_key_env":"S3CRYPT_TOOL_TEST_UNSET","grants":[]}}]{extra}}}"#
        )
    }

    /// The format's strict-KMS vector: its envelope and `kms_context`.
    fn kms_vector() -> (Envelope, serde_json::Value) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter/testdata/v1/kms_chacha20-poly1305_two_chunks.vec");
        let bytes = std::fs::read(path).unwrap();
        let head = String::from_utf8_lossy(&bytes[..bytes.windows(2).position(|w| w == b"\n\n").unwrap()]).into_owned();
        let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap().to_owned();
        let envelope = Envelope::parse(&field("envelope")).unwrap();
        (envelope, serde_json::from_str(&field("kms_context")).unwrap())
    }

    #[test]
    fn strict_kms_settings_are_read_without_keys_or_the_gateways_backend() {
        let keys = keys_of(&strict_json(""), &[]).unwrap();
        let strict = keys.strict.unwrap();
        assert_eq!((strict.key_id.as_str(), strict.authority.as_str(), strict.id.as_str()), ("alias/s3crypt", "kms.eu-west-1.amazonaws.com", "kms"));
        // A hand-written file needs no "backend": the tool reaches it through --endpoint.
        let minimal = keys_of(r#"{"kms_strict":{"key_id":"alias/s3crypt","authority":"kms.local:4566"}}"#, &[]).unwrap();
        assert_eq!(minimal.strict.map(|s| s.authority), Some("kms.local:4566".into()));
        // Older objects' keys beside it.
        let both = keys_of(&strict_json(&format!(r#","keys":[{{"id":"old","key_hex":"{HEX_A}"}}]"#)), &[]).unwrap();
        assert!(both.keyring.key("old").is_ok() && both.strict.is_some());
    }

    #[test]
    fn strict_decrypt_requests_carry_the_vectors_encryption_context() {
        let (envelope, context) = kms_vector();
        let name = ObjectName { bucket: "vector-bucket".into(), key: "vector/key".into() };
        let built = serde_json::to_value(strict_context(&envelope, &name)).unwrap();
        assert_eq!(built, context);
        let strict = keys_of(&strict_json(""), &[]).unwrap().strict.unwrap();
        let (headers, body) = strict_request(&strict, &envelope, &name).unwrap();
        assert!(headers.contains(&("x-amz-target".into(), "TrentService.Decrypt".into())));
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["EncryptionContext"], context);
        assert_eq!(body["KeyId"], "alias/s3crypt");
        let WrappedDek::Kms(blob) = &envelope.wrapped_dek else { panic!("not a kms= vector") };
        use base64::Engine;
        assert_eq!(body["CiphertextBlob"].as_str().map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap()), Some(blob.clone()));
        // Another name is another context: the KMS would refuse it.
        let moved = ObjectName { key: "vector/other".into(), ..name };
        assert_ne!(serde_json::to_value(strict_context(&envelope, &moved)).unwrap(), context);
    }

    #[test]
    fn strict_objects_need_the_kms_setting_and_their_name() {
        let (envelope, _) = kms_vector();
        let keyed = keys_of(&format!(r#"{{"keys":[{{"id":"kms-not","key_hex":"{HEX_A}"}}]}}"#), &[]).unwrap();
        let err = format!("{:#}", keyed.data_key(&envelope, None).unwrap_err());
        assert!(err.starts_with("kms_wrapped:") && err.contains("\"kms_strict\""), "{err}");
        let strict = keys_of(&strict_json(""), &[]).unwrap();
        let err = format!("{:#}", strict.data_key(&envelope, None).unwrap_err());
        assert!(err.starts_with("kms_wrapped:") && err.contains("--bucket BUCKET and --object-key KEY"), "{err}");
        // A KEK-wrapped envelope needs neither.
        let (kek_envelope, dek) = keyed.keyring.new_object(Suite::Aes256Gcm, 16_384, Some(3)).unwrap();
        assert_eq!(*keyed.data_key(&kek_envelope, None).unwrap(), *dek);
    }

    #[test]
    fn kms_regions() {
        assert_eq!(region_of_kms_host("kms.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of_kms_host("kms-fips.us-east-2.amazonaws.com:443").as_deref(), Some("us-east-2"));
        assert_eq!(region_of_kms_host("127.0.0.1:4566"), None);
    }
}
