//! Plugin JSON: parsed and validated once per VM at configure time. Every
//! error names the field it is about; a bad config stops the plugin.

use crate::cipher::{Suite, KEY_LEN};
use crate::envelope::{valid_chunk_size, valid_key_id, Kek, Keyring, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::copy::Backend;
use crate::kms::{KmsSource, StrictKms};
use crate::policy::{parse_clients, Clients};
use crate::s3::Addressing;
use serde::Deserialize;
use zeroize::Zeroizing;

pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;
pub const MIN_PBKDF2_ITERATIONS: u32 = 100_000;
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
pub const MIN_SALT_LEN: usize = 16;

/// A configuration error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// What to do with objects that carry no encryption envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnencryptedObjects {
    /// Serve them as they are (e.g. data that predates the gateway).
    Pass,
    /// Refuse them with an S3 error.
    Refuse,
}

/// How new objects are written: under which key and cipher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSpec {
    pub key_id: String,
    pub suite: Suite,
    pub chunk_size: u32,
}

/// What a bucket's rule says about new objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketWrite {
    Encrypt(WriteSpec),
    /// A bucket that stays plaintext: writes pass unchanged, listings are
    /// not resized. Objects in it that carry an envelope still decrypt.
    Plaintext,
}

/// `buckets[i]`: the first rule whose glob matches a bucket decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRule {
    pub pattern: String,
    pub write: BucketWrite,
}

pub struct Settings {
    pub keyring: Keyring,
    pub suite: Suite,
    pub chunk_size: u32,
    /// Per-bucket exceptions to the defaults above, first match wins.
    pub buckets: Vec<BucketRule>,
    pub unencrypted_objects: UnencryptedObjects,
    pub addressing: Addressing,
    /// How the filter reaches the backend itself (CopyObject source lookups).
    pub backend: Option<Backend>,
    /// Client credentials and grants; `None`: no client authentication
    /// (every request is served, as on a loopback-only gateway).
    pub clients: Option<Clients>,
    /// Strict KMS mode: every new object's data key is made and unwrapped by
    /// the KMS (`kms_strict` in the plugin JSON).
    pub kms_strict: Option<StrictKms>,
}

pub const DEFAULT_KMS_CACHE_ENTRIES: usize = 1000;
pub const MAX_KMS_CACHE_ENTRIES: usize = 100_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    keys: Option<Vec<RawKey>>,
    write_key: Option<String>,
    cipher: Option<String>,
    chunk_size: Option<u32>,
    unencrypted_objects: Option<String>,
    virtual_host_suffixes: Option<Vec<String>>,
    backend: Option<RawBackend>,
    buckets: Option<Vec<RawBucketRule>>,
    /// Parsed by `policy::parse_clients`.
    clients: Option<serde_json::Value>,
    anonymous: Option<serde_json::Value>,
    kms_strict: Option<RawStrict>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrict {
    id: Option<String>,
    key_id: Option<String>,
    cluster: Option<String>,
    authority: Option<String>,
    cache_entries: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucketRule {
    #[serde(rename = "match")]
    pattern: Option<String>,
    encrypt: Option<bool>,
    write_key: Option<String>,
    cipher: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    cluster: Option<String>,
    authority: Option<String>,
    addressing: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: Option<String>,
    key_hex: Option<String>,
    key_hex_env: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    pbkdf2_salt: Option<String>,
    pbkdf2_iterations: Option<u32>,
    kms: Option<RawKms>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKms {
    ciphertext_blob: Option<String>,
    key_id: Option<String>,
    encryption_context: Option<std::collections::BTreeMap<String, String>>,
    cluster: Option<String>,
    authority: Option<String>,
}

impl Drop for RawKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = self.key_hex.as_mut() {
            k.zeroize();
        }
        if let Some(p) = self.password.as_mut() {
            p.zeroize();
        }
    }
}

/// Parses and validates the plugin JSON. `env` looks up environment variables
/// (those Envoy passes to the VM), so secrets need not sit in the YAML.
/// A KEK the KMS still has to decrypt.
pub struct PendingKey {
    pub id: String,
    pub source: KmsSource,
    slot: usize,
}

/// A validated configuration whose KMS-held keys are not decrypted yet.
pub struct Staged {
    pub pending: Vec<PendingKey>,
    keys: Vec<Option<Kek>>,
    write_key: String,
    settings: Box<dyn FnOnce(Keyring) -> Settings>,
}

impl Staged {
    /// Completes the configuration once every pending key has its KEK.
    pub fn finish(mut self, decrypted: Vec<(usize, Zeroizing<[u8; KEY_LEN]>)>) -> Result<Settings, ConfigError> {
        for (slot, key) in decrypted {
            let id = self.pending.iter().find(|p| p.slot == slot).map(|p| p.id.clone()).ok_or_else(|| err("keys", "unexpected KMS answer"))?;
            if let Some(entry) = self.keys.get_mut(slot) {
                *entry = Some(Kek::new(id, key));
            }
        }
        let keks: Option<Vec<Kek>> = self.keys.into_iter().collect();
        let keks = keks.ok_or_else(|| err("keys", "a KMS-held key was not decrypted"))?;
        let keyring = if keks.is_empty() {
            // Strict KMS mode without keys for older objects.
            Keyring::empty()
        } else {
            Keyring::new(keks, &self.write_key).ok_or_else(|| err("write_key", format!("no key with id {:?}", self.write_key)))?
        };
        Ok((self.settings)(keyring))
    }
}

impl PendingKey {
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// Parses and validates a configuration without KMS-held keys.
pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let staged = parse_staged(json, env)?;
    if let Some(p) = staged.pending.first() {
        return Err(err(format!("keys[{}].kms", p.slot), "KMS-held keys are decrypted by the running filter"));
    }
    staged.finish(Vec::new())
}

/// Parses and validates the plugin JSON; keys held by a KMS are left pending.
pub fn parse_staged(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Staged, ConfigError> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| err("configuration", format!("invalid JSON: {e}")))?;
    // serde's message names an unknown field but not where a value of the
    // wrong type sits ("invalid type: string, expected u32"): the path does.
    let raw: RawConfig = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => "configuration".to_string(),
            path => path,
        };
        err(field, e.into_inner().to_string())
    })?;
    let clients = if raw.clients.is_some() || raw.anonymous.is_some() { Some(parse_clients(&value, env)?) } else { None };

    let suite = match raw.cipher.as_deref() {
        None => Suite::ChaCha20Poly1305,
        Some(name) => cipher_named("cipher", name)?,
    };
    let chunk_size = raw.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
    if !valid_chunk_size(chunk_size) {
        return Err(err("chunk_size", format!("must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}, got {chunk_size}")));
    }
    let unencrypted_objects = match raw.unencrypted_objects.as_deref() {
        None | Some("pass") => UnencryptedObjects::Pass,
        Some("refuse") => UnencryptedObjects::Refuse,
        Some(other) => return Err(err("unencrypted_objects", format!("must be \"pass\" or \"refuse\", got {other:?}"))),
    };

    let virtual_host_suffixes = raw.virtual_host_suffixes.clone().unwrap_or_default();
    for (i, suffix) in virtual_host_suffixes.iter().enumerate() {
        let ok = !suffix.is_empty() && suffix.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            return Err(err(format!("virtual_host_suffixes[{i}]"), "must be a DNS name such as \"s3.example.com\" (no port, no scheme)"));
        }
    }
    let addressing = Addressing { virtual_host_suffixes: virtual_host_suffixes.iter().map(|s| s.to_ascii_lowercase()).collect() };

    let backend = match &raw.backend {
        None => None,
        Some(b) => {
            let cluster = b.cluster.clone().unwrap_or_else(|| "s3_backend".into());
            if cluster.is_empty() || cluster.contains(char::is_whitespace) {
                return Err(err("backend.cluster", "must be the name of the Envoy cluster that reaches the backend"));
            }
            let authority = b.authority.clone().ok_or_else(|| err("backend.authority", "required: the host[:port] the backend expects"))?;
            if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
                return Err(err("backend.authority", "must be host or host:port, without scheme or path"));
            }
            let virtual_hosted = match b.addressing.as_deref() {
                None | Some("path") => false,
                Some("virtual") => true,
                Some(other) => return Err(err("backend.addressing", format!("must be \"path\" or \"virtual\", got {other:?}"))),
            };
            Some(Backend { cluster, authority, virtual_hosted })
        }
    };

    let kms_strict = raw.kms_strict.as_ref().map(strict_kms).transpose()?;
    if kms_strict.is_some() && backend.is_none() {
        return Err(err("kms_strict", "needs \"backend\": CopyObject must look at the source's envelope"));
    }
    let raw_keys = raw.keys.as_deref().unwrap_or_default();
    if raw_keys.is_empty() && kms_strict.is_none() {
        return Err(err("keys", "at least one key is required"));
    }
    let mut keys: Vec<Option<Kek>> = Vec::with_capacity(raw_keys.len());
    let mut ids: Vec<String> = Vec::with_capacity(raw_keys.len());
    let mut pending = Vec::new();
    for (i, raw_key) in raw_keys.iter().enumerate() {
        let field = |name: &str| format!("keys[{i}].{name}");
        let id = raw_key.id.clone().ok_or_else(|| err(field("id"), "required"))?;
        if !valid_key_id(&id) {
            return Err(err(field("id"), "1-64 characters from A-Z a-z 0-9 . _ -"));
        }
        if ids.contains(&id) {
            return Err(err(field("id"), format!("duplicate key id {id:?}")));
        }
        ids.push(id.clone());
        match &raw_key.kms {
            Some(kms) => {
                if raw_key.key_hex.is_some() || raw_key.key_hex_env.is_some() || raw_key.password.is_some() || raw_key.password_env.is_some() {
                    return Err(err(field("kms"), "give either kms or key material, not both"));
                }
                pending.push(PendingKey { id, source: kms_source(kms, &field)?, slot: i });
                keys.push(None);
            }
            None => keys.push(Some(Kek::new(id, key_material(raw_key, &field, env)?))),
        }
    }

    let write_key = match raw.write_key {
        Some(id) => id,
        None if ids.len() <= 1 => ids.first().cloned().unwrap_or_default(),
        None => return Err(err("write_key", "required when more than one key is configured")),
    };
    if !ids.is_empty() && !ids.contains(&write_key) {
        return Err(err("write_key", format!("no key with id {write_key:?}")));
    }
    if let Some(strict) = &kms_strict {
        if ids.contains(&strict.id) {
            return Err(err("kms_strict.id", format!("{:?} is also the id of a key in \"keys\"; envelopes must name one or the other", strict.id)));
        }
    }
    let buckets = bucket_rules(raw.buckets.as_deref().unwrap_or_default(), &ids, &write_key, suite, chunk_size, kms_strict.is_some())?;
    let settings = Box::new(move |keyring| Settings { keyring, suite, chunk_size, buckets, unencrypted_objects, addressing, backend, clients, kms_strict });
    Ok(Staged { pending, keys, write_key, settings })
}

fn cipher_named(field: &str, name: &str) -> Result<Suite, ConfigError> {
    Suite::from_name(name).ok_or_else(|| err(field, format!("unknown cipher {name:?}; use \"chacha20-poly1305\" or \"aes-256-gcm\"")))
}

/// `strict`: in strict KMS mode the KMS makes every data key, so a rule
/// picks a cipher or no encryption, not a key.
fn bucket_rules(raw: &[RawBucketRule], key_ids: &[String], write_key: &str, suite: Suite, chunk_size: u32, strict: bool) -> Result<Vec<BucketRule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.iter().enumerate() {
        let field = |name: &str| format!("buckets[{i}].{name}");
        let pattern = rule.pattern.clone().ok_or_else(|| err(field("match"), "required: a bucket name or glob (* and ?), e.g. \"logs-*\""))?;
        if !crate::policy::valid_bucket_glob(&pattern) {
            return Err(err(field("match"), "a bucket name or glob of A-Z a-z 0-9 . _ - with * and ?"));
        }
        let write = if rule.encrypt.unwrap_or(true) {
            let key_id = match &rule.write_key {
                Some(_) if strict => return Err(err(field("write_key"), "with kms_strict the KMS makes every data key; a rule picks a cipher or \"encrypt\": false")),
                Some(id) if !key_ids.contains(id) => return Err(err(field("write_key"), format!("no key with id {id:?}"))),
                Some(id) => id.clone(),
                None => write_key.to_owned(),
            };
            let suite = match rule.cipher.as_deref() {
                None => suite,
                Some(name) => cipher_named(&field("cipher"), name)?,
            };
            BucketWrite::Encrypt(WriteSpec { key_id, suite, chunk_size })
        } else {
            if rule.write_key.is_some() || rule.cipher.is_some() {
                return Err(err(field("encrypt"), "a bucket with \"encrypt\": false takes no write_key or cipher"));
            }
            BucketWrite::Plaintext
        };
        rules.push(BucketRule { pattern, write });
    }
    Ok(rules)
}

impl Settings {
    /// How new objects in `bucket` are written: its rule, or the defaults.
    pub fn bucket_write(&self, bucket: &str) -> BucketWrite {
        self.buckets
            .iter()
            .find(|rule| crate::policy::glob_matches(rule.pattern.as_bytes(), bucket.as_bytes()))
            .map(|rule| rule.write.clone())
            .unwrap_or_else(|| BucketWrite::Encrypt(WriteSpec { key_id: self.keyring.active_id().to_owned(), suite: self.suite, chunk_size: self.chunk_size }))
    }
}

fn kms_source(raw: &RawKms, field: &dyn Fn(&str) -> String) -> Result<KmsSource, ConfigError> {
    use base64::Engine;
    let blob = raw.ciphertext_blob.as_deref().ok_or_else(|| err(field("kms.ciphertext_blob"), "required: the KEK encrypted by KMS Encrypt, base64"))?;
    let ciphertext_blob = base64::engine::general_purpose::STANDARD.decode(blob.trim()).map_err(|_| err(field("kms.ciphertext_blob"), "must be base64"))?;
    if ciphertext_blob.is_empty() || ciphertext_blob.len() > 6144 {
        return Err(err(field("kms.ciphertext_blob"), "must be 1 to 6144 bytes"));
    }
    let cluster = raw.cluster.clone().unwrap_or_else(|| "kms".into());
    if cluster.is_empty() || cluster.contains(char::is_whitespace) {
        return Err(err(field("kms.cluster"), "must name the Envoy cluster that reaches the KMS"));
    }
    let authority = raw.authority.clone().ok_or_else(|| err(field("kms.authority"), "required: the KMS endpoint's host, e.g. kms.eu-west-1.amazonaws.com"))?;
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(err(field("kms.authority"), "must be host or host:port, without scheme or path"));
    }
    Ok(KmsSource { cluster, authority, ciphertext_blob, key_id: raw.key_id.clone(), encryption_context: raw.encryption_context.clone().unwrap_or_default() })
}

fn strict_kms(raw: &RawStrict) -> Result<StrictKms, ConfigError> {
    let id = raw.id.clone().unwrap_or_else(|| "kms".into());
    if !valid_key_id(&id) {
        return Err(err("kms_strict.id", "1-64 characters from A-Z a-z 0-9 . _ -"));
    }
    let key_id = raw.key_id.clone().ok_or_else(|| err("kms_strict.key_id", "required: the KMS key (id, ARN or alias/...) that makes the data keys"))?;
    if key_id.is_empty() || key_id.len() > 2048 || key_id.contains(char::is_whitespace) {
        return Err(err("kms_strict.key_id", "must be a KMS key id, key ARN, alias name or alias ARN"));
    }
    let cluster = raw.cluster.clone().unwrap_or_else(|| "kms".into());
    if cluster.is_empty() || cluster.contains(char::is_whitespace) {
        return Err(err("kms_strict.cluster", "must name the Envoy cluster that reaches the KMS"));
    }
    let authority = raw.authority.clone().ok_or_else(|| err("kms_strict.authority", "required: the KMS endpoint's host, e.g. kms.eu-west-1.amazonaws.com"))?;
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(err("kms_strict.authority", "must be host or host:port, without scheme or path"));
    }
    let cache_entries = raw.cache_entries.unwrap_or(DEFAULT_KMS_CACHE_ENTRIES);
    if !(1..=MAX_KMS_CACHE_ENTRIES).contains(&cache_entries) {
        return Err(err("kms_strict.cache_entries", format!("must be from 1 to {MAX_KMS_CACHE_ENTRIES}")));
    }
    Ok(StrictKms { id, cluster, authority, key_id, cache_entries })
}

fn secret(value: &Option<String>, env_name: &Option<String>, field: &dyn Fn(&str) -> String, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Zeroizing<String>>, ConfigError> {
    match (value, env_name) {
        (Some(_), Some(_)) => Err(err(field(name), format!("give either {name} or {name}_env, not both"))),
        (Some(v), None) => Ok(Some(Zeroizing::new(v.clone()))),
        (None, Some(var)) => env(var).map(|v| Some(Zeroizing::new(v))).ok_or_else(|| err(field(&format!("{name}_env")), format!("environment variable {var:?} is not set in the VM"))),
        (None, None) => Ok(None),
    }
}

fn key_material(raw: &RawKey, field: &dyn Fn(&str) -> String, env: &dyn Fn(&str) -> Option<String>) -> Result<Zeroizing<[u8; KEY_LEN]>, ConfigError> {
    let key_hex = secret(&raw.key_hex, &raw.key_hex_env, field, "key_hex", env)?;
    let password = secret(&raw.password, &raw.password_env, field, "password", env)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    match (key_hex, password) {
        (Some(hex_key), None) => {
            if raw.pbkdf2_salt.is_some() || raw.pbkdf2_iterations.is_some() {
                return Err(err(field("pbkdf2_salt"), "only valid with password"));
            }
            hex::decode_to_slice(hex_key.trim(), key.as_mut_slice()).map_err(|_| err(field("key_hex"), "must be 64 hex digits (32 bytes)"))?;
        }
        (None, Some(password)) => {
            if password.is_empty() {
                return Err(err(field("password"), "must not be empty"));
            }
            let salt = raw.pbkdf2_salt.as_deref().ok_or_else(|| err(field("pbkdf2_salt"), "required with password"))?;
            if salt.len() < MIN_SALT_LEN {
                return Err(err(field("pbkdf2_salt"), format!("at least {MIN_SALT_LEN} bytes")));
            }
            let iterations = raw.pbkdf2_iterations.unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
            if !(MIN_PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
                return Err(err(field("pbkdf2_iterations"), format!("must be from {MIN_PBKDF2_ITERATIONS} to {MAX_PBKDF2_ITERATIONS}")));
            }
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt.as_bytes(), iterations, key.as_mut_slice());
        }
        (Some(_), Some(_)) => return Err(err(field("key_hex"), "give either key_hex or password, not both")),
        (None, None) => return Err(err(field("key_hex"), "each key needs key_hex (or key_hex_env) or password (or password_env)")),
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn field_of(json: &str) -> String {
        match parse(json.as_bytes(), &no_env) {
            Ok(_) => "ok".into(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn minimal_config_uses_defaults() {
        let s = parse(format!(r#"{{"keys":[{{"id":"main","key_hex":"{HEX}"}}]}}"#).as_bytes(), &no_env).unwrap();
        assert_eq!(s.suite, Suite::ChaCha20Poly1305);
        assert_eq!(s.chunk_size, 65_536);
        assert_eq!(s.unencrypted_objects, UnencryptedObjects::Pass);
        assert_eq!(s.keyring.active_id(), "main");
    }

    #[test]
    fn bucket_rules_pick_key_and_cipher_first_match_wins() {
        let json = format!(
            r#"{{"keys":[{{"id":"main","key_hex":"{HEX}"}},{{"id":"logs","key_hex":"{HEX}"}}],"write_key":"main",
               "buckets":[{{"match":"public-*","encrypt":false}},{{"match":"logs-?","write_key":"logs","cipher":"aes-256-gcm"}},{{"match":"logs-*","cipher":"aes-256-gcm"}}]}}"#
        );
        let s = parse(json.as_bytes(), &no_env).unwrap();
        let spec = |key: &str, suite| BucketWrite::Encrypt(WriteSpec { key_id: key.into(), suite, chunk_size: 65_536 });
        assert_eq!(s.bucket_write("public-www"), BucketWrite::Plaintext);
        assert_eq!(s.bucket_write("logs-1"), spec("logs", Suite::Aes256Gcm));
        assert_eq!(s.bucket_write("logs-12"), spec("main", Suite::Aes256Gcm));
        assert_eq!(s.bucket_write("data"), spec("main", Suite::ChaCha20Poly1305));
        assert_eq!(s.bucket_write("xpublic-www"), spec("main", Suite::ChaCha20Poly1305), "globs match whole names");
    }

    #[test]
    fn bucket_rule_errors_name_the_field() {
        let with = |rules: &str| field_of(&format!(r#"{{"keys":[{{"id":"main","key_hex":"{HEX}"}}],"buckets":{rules}}}"#));
        assert_eq!(with(r#"[{"encrypt":false}]"#), "buckets[0].match");
        assert_eq!(with(r#"[{"match":"a/b"}]"#), "buckets[0].match");
        assert_eq!(with(r#"[{"match":"a"},{"match":"b","write_key":"nope"}]"#), "buckets[1].write_key");
        assert_eq!(with(r#"[{"match":"a","cipher":"rot13"}]"#), "buckets[0].cipher");
        assert_eq!(with(r#"[{"match":"a","encrypt":false,"cipher":"aes-256-gcm"}]"#), "buckets[0].encrypt");
        assert_eq!(with(r#"[{"match":"a","chunk":1}]"#), "buckets[0].chunk");
        assert_eq!(with(r#"[{"match":"a","encrypt":true}]"#), "ok");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("{}"), "keys");
        assert_eq!(field_of("not json"), "configuration");
        assert_eq!(field_of(r#"{"keys":[],"bogus":1}"#), "bogus");
        // Unknown fields and values of the wrong type are named by their path.
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"chunk_size":"65536"}}"#)), "chunk_size");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"unencrypted_objects":true}}"#)), "unencrypted_objects");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}},{{"id":7,"key_hex":"{HEX}"}}]}}"#)), "keys[1].id");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}","pbkdf2_salts":"x"}}]}}"#)), "keys[0].pbkdf2_salts");
        assert_eq!(field_of(r#"{"keys":{"id":"a"}}"#), "keys");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"cipher":"des"}}"#)), "cipher");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"chunk_size":1000}}"#)), "chunk_size");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"chunk_size":4194304}}"#)), "chunk_size");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"unencrypted_objects":"maybe"}}"#)), "unencrypted_objects");
        assert_eq!(field_of(r#"{"keys":[{"id":"a","key_hex":"abcd"}]}"#), "keys[0].key_hex");
        assert_eq!(field_of(r#"{"keys":[{"id":"a"}]}"#), "keys[0].key_hex");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"key_hex":"{HEX}"}}]}}"#)), "keys[0].id");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a b","key_hex":"{HEX}"}}]}}"#)), "keys[0].id");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}},{{"id":"a","key_hex":"{HEX}"}}]}}"#)), "keys[1].id");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}},{{"id":"b","key_hex":"{HEX}"}}]}}"#)), "write_key");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"write_key":"z"}}"#)), "write_key");
        assert_eq!(field_of(r#"{"keys":[{"id":"a","password":"pw"}]}"#), "keys[0].pbkdf2_salt");
        assert_eq!(field_of(r#"{"keys":[{"id":"a","password":"pw","pbkdf2_salt":"short"}]}"#), "keys[0].pbkdf2_salt");
        assert_eq!(field_of(r#"{"keys":[{"id":"a","password":"pw","pbkdf2_salt":"0123456789abcdef","pbkdf2_iterations":10}]}"#), "keys[0].pbkdf2_iterations");
        assert_eq!(field_of(r#"{"keys":[{"id":"a","password_env":"NOPE"}]}"#), "keys[0].password_env");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"virtual_host_suffixes":["http://x:1"]}}"#)), "virtual_host_suffixes[0]");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"backend":{{}}}}"#)), "backend.authority");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"backend":{{"authority":"h:1","addressing":"x"}}}}"#)), "backend.addressing");
    }

    #[test]
    fn password_key_is_pbkdf2_sha256() {
        let json = r#"{"keys":[{"id":"pw","password":"correct horse","pbkdf2_salt":"0123456789abcdef","pbkdf2_iterations":100000}]}"#;
        let s = parse(json.as_bytes(), &no_env).unwrap();
        // The same password and salt must give the same KEK: a DEK wrapped by
        // one parse unwraps with another.
        let (env, dek) = s.keyring.new_object(Suite::ChaCha20Poly1305, 65_536, None).unwrap();
        let again = parse(json.as_bytes(), &no_env).unwrap();
        assert_eq!(*again.keyring.open(&env).unwrap(), *dek);
    }

    #[test]
    fn clients_are_parsed_and_named_in_errors() {
        let ok = format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}],"clients":[{{"access_key_id":"AKIDEXAMPLE","secret_access_key":"s3cr3t","grants":[{{"bucket":"*","actions":["read"]}}]}}]}}"#);
        let s = parse(ok.as_bytes(), &no_env).unwrap();
        assert_eq!(s.clients.map(|c| c.len()), Some(1));
        let bad = ok.replace("\"read\"", "\"fly\"");
        assert_eq!(field_of(&bad), "clients[0].grants[0].actions[0]");
        let none = parse(format!(r#"{{"keys":[{{"id":"a","key_hex":"{HEX}"}}]}}"#).as_bytes(), &no_env).unwrap();
        assert!(none.clients.is_none());
    }

    #[test]
    fn kms_keys_are_staged() {
        let json = format!(r#"{{"keys":[{{"id":"kms1","kms":{{"ciphertext_blob":"AQID","authority":"kms.local:4566"}}}},{{"id":"raw","key_hex":"{HEX}"}}],"write_key":"kms1"}}"#);
        let staged = parse_staged(json.as_bytes(), &no_env).unwrap();
        assert_eq!(staged.pending.len(), 1);
        let p = staged.pending.first().unwrap();
        assert_eq!((p.id.as_str(), p.slot(), p.source.cluster.as_str()), ("kms1", 0, "kms"));
        let s = staged.finish(vec![(0, Zeroizing::new([4; 32]))]).unwrap();
        assert_eq!(s.keyring.active_id(), "kms1");
        assert_eq!(field_of(&json), "keys[0].kms");
        assert_eq!(field_of(r#"{"keys":[{"id":"k","kms":{"authority":"h"}}]}"#), "keys[0].kms.ciphertext_blob");
        assert_eq!(field_of(r#"{"keys":[{"id":"k","kms":{"ciphertext_blob":"AQID"}}]}"#), "keys[0].kms.authority");
    }

    #[test]
    fn kms_strict_is_validated_and_needs_no_keys() {
        let backend = r#""backend":{"authority":"s3.local:9000"}"#;
        let ok = format!(r#"{{"kms_strict":{{"key_id":"alias/s3crypt","authority":"kms.local:4566"}},{backend}}}"#);
        let s = parse(ok.as_bytes(), &no_env).unwrap();
        let strict = s.kms_strict.unwrap();
        assert_eq!((strict.id.as_str(), strict.cluster.as_str(), strict.cache_entries), ("kms", "kms", 1000));
        assert_eq!(s.keyring.active_id(), "");
        assert_eq!(field_of(r#"{"kms_strict":{"key_id":"k","authority":"h"}}"#), "kms_strict");
        assert_eq!(field_of(&format!(r#"{{"kms_strict":{{"authority":"h"}},{backend}}}"#)), "kms_strict.key_id");
        assert_eq!(field_of(&format!(r#"{{"kms_strict":{{"key_id":"k"}},{backend}}}"#)), "kms_strict.authority");
        assert_eq!(field_of(&format!(r#"{{"kms_strict":{{"key_id":"k","authority":"h","cache_entries":0}},{backend}}}"#)), "kms_strict.cache_entries");
        assert_eq!(field_of(&format!(r#"{{"kms_strict":{{"key_id":"k","authority":"h","id":"a b"}},{backend}}}"#)), "kms_strict.id");
        assert_eq!(field_of(&format!(r#"{{"kms_strict":{{"key_id":"k","authority":"h","bogus":1}},{backend}}}"#)), "kms_strict.bogus");
        assert_eq!(field_of(&format!(r#"{{"keys":[{{"id":"kms","key_hex":"{HEX}"}}],"kms_strict":{{"key_id":"k","authority":"h"}},{backend}}}"#)), "kms_strict.id");
        // Keys beside strict mode read older objects.
        let with_keys = format!(r#"{{"keys":[{{"id":"old","key_hex":"{HEX}"}}],"kms_strict":{{"key_id":"k","authority":"h"}},{backend}}}"#);
        assert_eq!(parse(with_keys.as_bytes(), &no_env).unwrap().keyring.active_id(), "old");
    }

    #[test]
    fn secrets_from_the_environment() {
        let env = |name: &str| (name == "KEK_HEX").then(|| HEX.to_string());
        let s = parse(br#"{"keys":[{"id":"a","key_hex_env":"KEK_HEX"}]}"#, &env).unwrap();
        assert_eq!(s.keyring.active_id(), "a");
    }
}
