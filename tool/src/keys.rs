//! Key-encryption keys from the gateway's own plugin JSON, parsed by the
//! filter's config code (so `key_hex`, `key_hex_env`, `password`,
//! `password_env` + PBKDF2 mean exactly what they mean in the gateway), plus
//! `--key ID=HEX` on the command line. KMS-held keys are decrypted with a
//! signed KMS `Decrypt` call, as the gateway does at start-up.

use crate::s3::{Client, Credentials, Endpoint};
use anyhow::{bail, Context, Result};
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::config;
use s3crypt_filter::envelope::Keyring;
use s3crypt_filter::kms;
use std::path::Path;
use zeroize::Zeroizing;

/// The configuration fields the tool uses; the rest of the plugin JSON
/// (clients, backend, ...) is the gateway's business and is not read, so a
/// secret it names through `*_env` need not be set here.
const KEPT_FIELDS: &[&str] = &["keys", "write_key", "cipher", "chunk_size"];

pub struct Keys {
    pub keyring: Keyring,
    /// The configured cipher and chunk size (what `encrypt` uses by default).
    pub suite: Suite,
    pub chunk_size: u32,
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
    Ok(Keys { keyring: settings.keyring, suite: settings.suite, chunk_size: settings.chunk_size })
}

/// `kms.eu-west-1.amazonaws.com` -> `eu-west-1`.
fn region_of_kms_host(authority: &str) -> Option<String> {
    let host = authority.split(':').next()?;
    let mut labels = host.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    (service.starts_with("kms") && host.ends_with(".amazonaws.com")).then(|| region.to_owned())
}

fn kms_decrypt(source: &kms::KmsSource, options: &KmsOptions) -> Result<Zeroizing<[u8; 32]>> {
    let url = options.endpoint.clone().unwrap_or_else(|| format!("https://{}", source.authority));
    let endpoint = Endpoint::parse(&url)?;
    let region = options.region.clone().or_else(|| region_of_kms_host(&source.authority)).unwrap_or_else(|| "us-east-1".into());
    let client = Client::new(endpoint, region, "kms", Credentials::from_env()?);
    let (request_headers, body) = kms::decrypt_request(source);
    let headers: Vec<(String, String)> = request_headers.into_iter().filter(|(n, _)| n == "content-type" || n == "x-amz-target").collect();
    let response = client.send("POST", "/", "", &headers, &body)?;
    let status = response.status;
    let mut body = response.body;
    let answer = Zeroizing::new(body.with_config().limit(1024 * 1024).read_to_vec().context("reading the KMS answer")?);
    kms::decrypt_response(u32::from(status), &answer).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEX_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    const HEX_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

    fn keys_of(json: &str, extra: &[&str]) -> Result<Keys> {
        let dir = std::env::temp_dir().join(format!("s3crypt-tool-keys-{}-{}", std::process::id(), json.len() + extra.len()));
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

    #[test]
    fn kms_regions() {
        assert_eq!(region_of_kms_host("kms.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of_kms_host("kms-fips.us-east-2.amazonaws.com:443").as_deref(), Some("us-east-2"));
        assert_eq!(region_of_kms_host("127.0.0.1:4566"), None);
    }
}
