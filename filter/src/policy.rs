//! Per-access-key authorisation: the clients the gateway knows (access key
//! id, secret, grants) and the allow/deny decision for each request. Pure: no
//! host calls. Parsed once at configure time from the `clients` (and
//! `anonymous`) fields of the plugin JSON; every error names the field.
//!
//! ```json
//! "clients": [
//!   { "access_key_id": "AKIAEXAMPLE0000001",
//!     "secret_access_key_env": "CLIENT1_SECRET",          // or "secret_access_key": "..."
//!     "grants": [ { "bucket": "photos-*", "prefix": "alice/", "actions": ["read", "list"] } ] }
//! ],
//! "anonymous": { "grants": [ { "bucket": "public", "actions": ["read"] } ] }
//! ```
//!
//! A grant allows its `actions` on the buckets its `bucket` glob matches (`*`
//! any run of characters, `?` one character) and on the keys starting with
//! its `prefix` (a plain string, empty by default). What each request needs:
//!
//! | request                                               | needs                                            |
//! |-------------------------------------------------------|--------------------------------------------------|
//! | GetObject, HeadObject, object tagging/ACL reads       | `read` on (bucket, key)                          |
//! | PutObject, CreateMultipartUpload, UploadPart,         | `write` on (bucket, key)                         |
//! | CompleteMultipartUpload, AbortMultipartUpload,        |                                                  |
//! | object tagging/ACL writes                             |                                                  |
//! | DeleteObject; DeleteObjects, for every key            | `delete` on (bucket, key)                        |
//! | CopyObject, UploadPartCopy                            | `read` on the source and `write` on the target   |
//! | ListObjects(V2), ListObjectVersions,                  | `list` on (bucket, prefix): the request prefix   |
//! | ListMultipartUploads                                  | must start with the grant prefix                 |
//! | ListParts                                             | `list` on (bucket, key)                          |
//! | HeadBucket, GetBucketLocation                         | any grant on the bucket                          |
//! | CreateBucket, DeleteBucket, every other bucket-level  | one grant with all four actions, no prefix, on   |
//! | operation (configuration reads and writes)            | that bucket: the bucket's owner                  |
//! | ListBuckets                                           | `list` on every bucket (`"*"`, no prefix)        |
//!
//! Everything else is denied. A known client also has the anonymous grants
//! (anything an unsigned request may do, a signed one may do too). A key
//! (or listing prefix, or copy source) with `.` or `..` segments must stay
//! under the grant's prefix also once they are resolved as a file system
//! would (`shared/../private/x` is not under `shared/`): some backends store
//! objects as files.

use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::sigv4::Secret;

/// Shortest and longest access key id accepted (AWS's are 16 to 128
/// characters; test setups often use shorter ones such as `minioadmin`).
pub const MIN_ACCESS_KEY_ID_LEN: usize = 3;
pub const MAX_ACCESS_KEY_ID_LEN: usize = 128;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A `clients` / `anonymous` configuration error: which field, and what is
/// wrong with it (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientsConfigError {
    /// A path such as `clients[2].grants[0].actions[1]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ClientsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ClientsConfigError {}

impl From<ClientsConfigError> for crate::config::ConfigError {
    fn from(e: ClientsConfigError) -> Self {
        crate::config::ConfigError { field: e.field, message: e.message }
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ClientsConfigError {
    ClientsConfigError { field: field.into(), message: message.into() }
}

/// The four actions a grant can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Delete,
    List,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::List];

    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::List => "list",
        }
    }

    fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Write => 2,
            Action::Delete => 4,
            Action::List => 8,
        }
    }
}

/// One grant: actions on the keys under a prefix in the buckets a glob
/// matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    bucket: String,
    prefix: String,
    actions: u8,
    /// Where it was configured (`clients[0].grants[1]`), for the audit log.
    origin: String,
}

impl Grant {
    fn allows(&self, action: Action) -> bool {
        self.actions & action.bit() != 0
    }

    fn allows_all(&self) -> bool {
        Action::ALL.iter().all(|a| self.allows(*a))
    }

    fn covers_bucket(&self, bucket: &str) -> bool {
        // No bucket is empty, `.` or `..`; a path such as `//b/k` or
        // `/../b/k` names one only to a backend that resolves it.
        !bucket.is_empty() && !is_dot_segment(bucket) && glob_matches(self.bucket.as_bytes(), bucket.as_bytes())
    }

    /// `action` on a key (or, for `list`, on a listing prefix) of `bucket`.
    fn covers(&self, action: Action, bucket: &str, key_or_prefix: &str) -> bool {
        self.allows(action) && self.covers_bucket(bucket) && self.covers_key(key_or_prefix)
    }

    /// S3 takes `a/../b` as a key of its own, but backends that store
    /// objects as files (s3s-fs, and others) resolve the `..`: a key with
    /// `.` or `..` segments is covered only if it stays under the prefix
    /// both as written and as a file system resolves it.
    fn covers_key(&self, key: &str) -> bool {
        key.starts_with(self.prefix.as_str()) && (!key.split('/').any(is_dot_segment) || resolve_dot_segments(key).is_some_and(|resolved| resolved.starts_with(self.prefix.as_str())))
    }
}

fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// `key` as a file system path resolves: `.` and empty segments dropped,
/// `..` removing the segment before it; `None` if it climbs above the
/// bucket. A trailing `/` stays.
fn resolve_dot_segments(key: &str) -> Option<String> {
    let mut segments: Vec<&str> = Vec::new();
    for segment in key.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            name => segments.push(name),
        }
    }
    let mut resolved = segments.join("/");
    if key.ends_with('/') && !resolved.is_empty() {
        resolved.push('/');
    }
    Some(resolved)
}

struct Client {
    access_key_id: String,
    secret: Zeroizing<String>,
    grants: Vec<Grant>,
}

/// The configured clients and the anonymous grants.
#[derive(Default)]
pub struct Clients {
    clients: Vec<Client>,
    /// `None`: no `anonymous` field (no grants either).
    anonymous: Option<Vec<Grant>>,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids and grants only: never the secrets.
        f.debug_struct("Clients")
            .field("clients", &self.clients.iter().map(|c| (&c.access_key_id, &c.grants)).collect::<Vec<_>>())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// Reads the `clients` and `anonymous` fields of `value` (the plugin JSON
/// object; its other fields are config.rs's business). A missing `clients`
/// means no clients. `env` looks up the environment variables named by
/// `secret_access_key_env`. The secrets are copied into zeroizing strings;
/// the caller should drop `value` soon, as its copy is not wiped.
pub fn parse_clients(value: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Clients, ClientsConfigError> {
    let root = value.as_object().ok_or_else(|| err("configuration", "must be a JSON object"))?;
    let clients = match root.get("clients") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut clients: Vec<Client> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let client = parse_client(item, &format!("clients[{i}]"), env)?;
                if clients.iter().any(|c| c.access_key_id == client.access_key_id) {
                    return Err(err(format!("clients[{i}].access_key_id"), format!("duplicate access key id {:?}", client.access_key_id)));
                }
                clients.push(client);
            }
            clients
        }
        Some(_) => return Err(err("clients", "must be a list of clients")),
    };
    let anonymous = match root.get("anonymous") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let object = object_with(value, "anonymous", &["grants"])?;
            Some(parse_grants(object.get("grants"), "anonymous.grants")?)
        }
    };
    Ok(Clients { clients, anonymous })
}

fn object_with<'v>(value: &'v Value, field: &str, known: &[&str]) -> Result<&'v Map<String, Value>, ClientsConfigError> {
    let object = value.as_object().ok_or_else(|| err(field, "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(format!("{field}.{unknown}"), format!("unknown field; known fields: {}", known.join(", "))));
    }
    Ok(object)
}

fn string_field<'v>(object: &'v Map<String, Value>, field: &str, name: &str) -> Result<Option<&'v str>, ClientsConfigError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{field}.{name}"), "must be a string")),
    }
}

fn parse_client(value: &Value, field: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Client, ClientsConfigError> {
    let object = object_with(value, field, &["access_key_id", "secret_access_key", "secret_access_key_env", "grants"])?;
    let access_key_id = string_field(object, field, "access_key_id")?.ok_or_else(|| err(format!("{field}.access_key_id"), "required"))?;
    if !valid_access_key_id(access_key_id) {
        return Err(err(
            format!("{field}.access_key_id"),
            format!("{MIN_ACCESS_KEY_ID_LEN}-{MAX_ACCESS_KEY_ID_LEN} characters from A-Z a-z 0-9 . _ - (AWS style: 20 of A-Z 0-9)"),
        ));
    }
    let secret = match (string_field(object, field, "secret_access_key")?, string_field(object, field, "secret_access_key_env")?) {
        (Some(_), Some(_)) => return Err(err(format!("{field}.secret_access_key"), "give either secret_access_key or secret_access_key_env, not both")),
        (Some(secret), None) => (Zeroizing::new(secret.to_owned()), format!("{field}.secret_access_key")),
        (None, Some(var)) => {
            let secret = env(var).map(Zeroizing::new).ok_or_else(|| err(format!("{field}.secret_access_key_env"), format!("environment variable {var:?} is not set in the VM")))?;
            (secret, format!("{field}.secret_access_key_env"))
        }
        (None, None) => return Err(err(format!("{field}.secret_access_key"), "required (or secret_access_key_env)")),
    };
    let (secret, secret_field) = secret;
    if secret.is_empty() {
        return Err(err(secret_field, "the secret must not be empty"));
    }
    if secret.chars().any(char::is_control) || secret.trim() != secret.as_str() {
        return Err(err(secret_field, "the secret has control characters or leading/trailing white space (a stray newline?)"));
    }
    let grants = parse_grants(object.get("grants"), &format!("{field}.grants"))?;
    Ok(Client { access_key_id: access_key_id.to_owned(), secret, grants })
}

pub(crate) fn valid_access_key_id(id: &str) -> bool {
    (MIN_ACCESS_KEY_ID_LEN..=MAX_ACCESS_KEY_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_grants(value: Option<&Value>, field: &str) -> Result<Vec<Grant>, ClientsConfigError> {
    let items = match value {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(err(field, "required: a list of grants (it may be empty)")),
        Some(_) => return Err(err(field, "must be a list of grants")),
    };
    items.iter().enumerate().map(|(i, item)| parse_grant(item, &format!("{field}[{i}]"))).collect()
}

fn parse_grant(value: &Value, field: &str) -> Result<Grant, ClientsConfigError> {
    let object = object_with(value, field, &["bucket", "prefix", "actions"])?;
    let bucket = string_field(object, field, "bucket")?.ok_or_else(|| err(format!("{field}.bucket"), "required: a bucket name or glob (* and ?)"))?;
    if !valid_bucket_glob(bucket) {
        return Err(err(format!("{field}.bucket"), "a bucket name or glob: A-Z a-z 0-9 . _ - and the wildcards * (any run) and ? (one character)"));
    }
    let prefix = string_field(object, field, "prefix")?.unwrap_or_default();
    let actions = match object.get("actions") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(err(format!("{field}.actions"), "at least one action")),
        None | Some(Value::Null) => return Err(err(format!("{field}.actions"), "required: a list of \"read\", \"write\", \"delete\", \"list\"")),
        Some(_) => return Err(err(format!("{field}.actions"), "must be a list of \"read\", \"write\", \"delete\", \"list\"")),
    };
    let mut bits = 0u8;
    for (j, action) in actions.iter().enumerate() {
        let action = action.as_str().and_then(Action::from_name).ok_or_else(|| err(format!("{field}.actions[{j}]"), format!("unknown action {action}; use \"read\", \"write\", \"delete\" or \"list\"")))?;
        bits |= action.bit();
    }
    Ok(Grant { bucket: bucket.to_owned(), prefix: prefix.to_owned(), actions: bits, origin: field.to_owned() })
}

/// Bucket names are `[a-z0-9.-]` (legacy ones also upper case and `_`);
/// other glob syntax (`[...]`, `{...}`, escapes) is refused rather than
/// taken literally.
pub(crate) fn valid_bucket_glob(glob: &str) -> bool {
    !glob.is_empty() && glob.len() <= 255 && glob.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?'))
}

/// Whether `text` matches `pattern` (`*`: any run of bytes, `?`: one byte).
/// Iterative, with one backtrack point: linear in practice, never exponential.
pub(crate) fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // After the last '*': where the pattern resumes and the text it has eaten up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                star = Some((p + 1, t));
                p += 1;
            }
            (Some(b'?'), _) => {
                p += 1;
                t += 1;
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((resume, eaten)) => {
                    p = resume;
                    t = eaten + 1;
                    star = Some((resume, eaten + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

/// What a request does, as far as authorisation is concerned. Bucket names
/// and keys are decoded (as S3 stores them). See the module table for which
/// S3 operation maps to which access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// GetObject, HeadObject, object tagging/ACL reads: `read`.
    Read { bucket: &'a str, key: &'a str },
    /// PutObject and the multipart steps (create, upload part, complete,
    /// abort), object tagging/ACL writes: `write`.
    Write { bucket: &'a str, key: &'a str },
    /// DeleteObject, and each key of DeleteObjects: `delete`.
    Delete { bucket: &'a str, key: &'a str },
    /// ListObjects(V2), ListObjectVersions, ListMultipartUploads (`prefix` as
    /// requested, empty when absent), ListParts (`prefix` = the key): `list`.
    List { bucket: &'a str, prefix: &'a str },
    /// CopyObject, UploadPartCopy: `read` on the source, `write` on the target.
    Copy { source_bucket: &'a str, source_key: &'a str, bucket: &'a str, key: &'a str },
    /// HeadBucket, GetBucketLocation: any grant on the bucket.
    BucketMetadata { bucket: &'a str },
    /// CreateBucket, DeleteBucket and every other bucket-level operation: a
    /// grant with all four actions on the whole bucket.
    BucketAdmin { bucket: &'a str },
    /// ListBuckets: `list` on every bucket (`"*"`, no prefix).
    ListBuckets,
}

impl fmt::Display for Access<'_> {
    /// For the audit log: names and keys quoted with escapes (`{:?}`), so a
    /// key cannot forge log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Read { bucket, key } => write!(f, "read {bucket:?} {key:?}"),
            Access::Write { bucket, key } => write!(f, "write {bucket:?} {key:?}"),
            Access::Delete { bucket, key } => write!(f, "delete {bucket:?} {key:?}"),
            Access::List { bucket, prefix } => write!(f, "list {bucket:?} prefix {prefix:?}"),
            Access::Copy { source_bucket, source_key, bucket, key } => write!(f, "copy {source_bucket:?} {source_key:?} to {bucket:?} {key:?}"),
            Access::BucketMetadata { bucket } => write!(f, "bucket metadata {bucket:?}"),
            Access::BucketAdmin { bucket } => write!(f, "bucket administration {bucket:?}"),
            Access::ListBuckets => f.write_str("list buckets"),
        }
    }
}

/// An allow or deny, with why, for the audit log (no secrets in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: String) -> Decision {
        Decision { allowed: true, reason }
    }

    fn deny(reason: String) -> Decision {
        Decision { allowed: false, reason }
    }
}

impl Clients {
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Whether an `anonymous` section was configured.
    pub fn has_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The secret of an access key, for `sigv4::verify`'s look-up.
    pub fn secret(&self, access_key_id: &str) -> Option<Secret> {
        self.client(access_key_id).map(|c| Secret::from(c.secret.clone()))
    }

    fn client(&self, access_key_id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.access_key_id == access_key_id)
    }

    /// Whether `access_key` (`None`: an unsigned request) may do `access`.
    /// Call it only after the signature was verified. Denies by default.
    pub fn authorize(&self, access_key: Option<&str>, access: &Access<'_>) -> Decision {
        let anonymous = self.anonymous.as_deref().unwrap_or_default();
        let (who, own): (String, &[Grant]) = match access_key {
            None => ("anonymous".into(), &[]),
            Some(id) => match self.client(id) {
                Some(client) => (format!("client {id:?}"), &client.grants),
                None => return Decision::deny(format!("deny {access}: unknown access key {id:?}")),
            },
        };
        let grants = || own.iter().chain(anonymous.iter());
        let find = |test: &dyn Fn(&Grant) -> bool| grants().find(|g| test(g)).map(|g| g.origin.as_str());
        let found = match access {
            Access::Read { bucket, key } => find(&|g| g.covers(Action::Read, bucket, key)),
            Access::Write { bucket, key } => find(&|g| g.covers(Action::Write, bucket, key)),
            Access::Delete { bucket, key } => find(&|g| g.covers(Action::Delete, bucket, key)),
            Access::List { bucket, prefix } => find(&|g| g.covers(Action::List, bucket, prefix)),
            Access::BucketMetadata { bucket } => find(&|g| g.covers_bucket(bucket)),
            Access::BucketAdmin { bucket } => find(&|g| g.allows_all() && g.prefix.is_empty() && g.covers_bucket(bucket)),
            Access::ListBuckets => find(&|g| g.allows(Action::List) && g.prefix.is_empty() && g.bucket == "*"),
            Access::Copy { source_bucket, source_key, bucket, key } => {
                let read = find(&|g| g.covers(Action::Read, source_bucket, source_key));
                let write = find(&|g| g.covers(Action::Write, bucket, key));
                return match (read, write) {
                    (Some(r), Some(w)) => Decision::allow(format!("allow {access} for {who}: read by {r}, write by {w}")),
                    (None, _) => Decision::deny(format!("deny {access} for {who}: no grant allows read on the source")),
                    (_, None) => Decision::deny(format!("deny {access} for {who}: no grant allows write on the target")),
                };
            }
        };
        match found {
            Some(origin) => Decision::allow(format!("allow {access} for {who}: by {origin}")),
            None => Decision::deny(format!("deny {access} for {who}: no grant allows it")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn clients(value: Value) -> Clients {
        parse_clients(&value, &no_env).unwrap()
    }

    fn field_of(value: Value) -> String {
        match parse_clients(&value, &no_env) {
            Ok(_) => "ok".into(),
            Err(e) => e.field,
        }
    }

    fn grant(bucket: &str, prefix: &str, actions: &[&str]) -> Value {
        json!({"bucket": bucket, "prefix": prefix, "actions": actions})
    }

    fn one_client(grants: Vec<Value>) -> Clients {
        clients(json!({"clients": [{"access_key_id": "AKIAEXAMPLE0000001", "secret_access_key": "s3cret", "grants": grants}]}))
    }

    const ID: Option<&str> = Some("AKIAEXAMPLE0000001");

    fn allowed(c: &Clients, who: Option<&str>, access: Access<'_>) -> bool {
        c.authorize(who, &access).allowed
    }

    #[test]
    fn config_with_clients_and_anonymous() {
        let env = |name: &str| (name == "CLIENT2_SECRET").then(|| "from-env".to_string());
        let value = json!({
            "keys": "config.rs's business",
            "clients": [
                {"access_key_id": "AKIAEXAMPLE0000001", "secret_access_key": "s3cret", "grants": [grant("photos-*", "alice/", &["read", "list"])]},
                {"access_key_id": "minio.admin_2", "secret_access_key_env": "CLIENT2_SECRET", "grants": []},
            ],
            "anonymous": {"grants": [{"bucket": "public", "actions": ["read"]}]},
        });
        let c = parse_clients(&value, &env).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.has_anonymous());
        assert_eq!(c.secret("AKIAEXAMPLE0000001").unwrap().expose(), "s3cret");
        assert_eq!(c.secret("minio.admin_2").unwrap().expose(), "from-env");
        assert!(c.secret("AKIAOTHER").is_none());
        // Debug output carries ids and grants, never secrets.
        let debug = format!("{c:?}");
        assert!(debug.contains("AKIAEXAMPLE0000001") && !debug.contains("s3cret") && !debug.contains("from-env"), "{debug}");
        // No clients field: no clients, no anonymous grants.
        let empty = clients(json!({}));
        assert!(empty.is_empty() && !empty.has_anonymous());
    }

    #[test]
    fn config_errors_name_the_field() {
        let client = |extra: Value| {
            let mut c = json!({"access_key_id": "AKIAEXAMPLE0000001", "secret_access_key": "s", "grants": []});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            c
        };
        let ok = client(json!({}));
        assert_eq!(field_of(json!({"clients": [ok.clone()]})), "ok");
        assert_eq!(field_of(json!([])), "configuration");
        assert_eq!(field_of(json!({"clients": {}})), "clients");
        assert_eq!(field_of(json!({"clients": [ok.clone(), 3]})), "clients[1]");
        assert_eq!(field_of(json!({"clients": [client(json!({"colour": "blue"}))]})), "clients[0].colour");
        assert_eq!(field_of(json!({"clients": [client(json!({"access_key_id": null}))]})), "clients[0].access_key_id");
        assert_eq!(field_of(json!({"clients": [client(json!({"access_key_id": 7}))]})), "clients[0].access_key_id");
        for bad_id in ["AK", "AKIA EXAMPLE", "AKIA/EXAMPLE", "ÄKIAEXAMPLE", &"A".repeat(129)] {
            assert_eq!(field_of(json!({"clients": [client(json!({"access_key_id": bad_id}))]})), "clients[0].access_key_id", "{bad_id}");
        }
        assert_eq!(field_of(json!({"clients": [ok.clone(), ok.clone()]})), "clients[1].access_key_id");
        assert_eq!(field_of(json!({"clients": [client(json!({"secret_access_key": null}))]})), "clients[0].secret_access_key");
        assert_eq!(field_of(json!({"clients": [client(json!({"secret_access_key": ""}))]})), "clients[0].secret_access_key");
        assert_eq!(field_of(json!({"clients": [client(json!({"secret_access_key": "abc\n"}))]})), "clients[0].secret_access_key");
        assert_eq!(field_of(json!({"clients": [client(json!({"secret_access_key_env": "X"}))]})), "clients[0].secret_access_key");
        assert_eq!(field_of(json!({"clients": [client(json!({"secret_access_key": null, "secret_access_key_env": "NOT_SET"}))]})), "clients[0].secret_access_key_env");
        assert_eq!(field_of(json!({"clients": [client(json!({"grants": null}))]})), "clients[0].grants");
        assert_eq!(field_of(json!({"clients": [client(json!({"grants": {}}))]})), "clients[0].grants");
        let with_grant = |g: Value| json!({"clients": [ok.clone(), client(json!({"access_key_id": "AKIAEXAMPLE0000002", "grants": [grant("b", "", &["read"]), g]}))]});
        assert_eq!(field_of(with_grant(grant("b", "", &["read", "write", "delete", "list"]))), "ok");
        assert_eq!(field_of(with_grant(json!("b"))), "clients[1].grants[1]");
        assert_eq!(field_of(with_grant(json!({"bucket": "b", "actions": ["read"], "key": "x"}))), "clients[1].grants[1].key");
        assert_eq!(field_of(with_grant(json!({"actions": ["read"]}))), "clients[1].grants[1].bucket");
        for bad_glob in ["", "b[12]", "b{1,2}", "b\\*", "a/b", "bücket"] {
            assert_eq!(field_of(with_grant(grant(bad_glob, "", &["read"]))), "clients[1].grants[1].bucket", "{bad_glob}");
        }
        assert_eq!(field_of(with_grant(json!({"bucket": "b", "prefix": 3, "actions": ["read"]}))), "clients[1].grants[1].prefix");
        assert_eq!(field_of(with_grant(json!({"bucket": "b"}))), "clients[1].grants[1].actions");
        assert_eq!(field_of(with_grant(grant("b", "", &[]))), "clients[1].grants[1].actions");
        assert_eq!(field_of(with_grant(grant("b", "", &["read", "admin"]))), "clients[1].grants[1].actions[1]");
        assert_eq!(field_of(with_grant(json!({"bucket": "b", "actions": ["read", 1]}))), "clients[1].grants[1].actions[1]");
        assert_eq!(field_of(json!({"anonymous": []})), "anonymous");
        assert_eq!(field_of(json!({"anonymous": {}})), "anonymous.grants");
        assert_eq!(field_of(json!({"anonymous": {"grants": [], "clients": []}})), "anonymous.clients");
        assert_eq!(field_of(json!({"anonymous": {"grants": [grant("b", "", &["Read"])]}})), "anonymous.grants[0].actions[0]");
    }

    #[test]
    fn config_errors_never_show_the_secret() {
        let e = parse_clients(&json!({"clients": [{"access_key_id": "AKIAEXAMPLE0000001", "secret_access_key": "hunter2\n", "grants": []}]}), &no_env).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e: crate::config::ConfigError = e.into();
        assert_eq!(e.field, "clients[0].secret_access_key");
    }

    #[test]
    fn bucket_globs() {
        for (pattern, text, expected) in [
            ("photos", "photos", true),
            ("photos", "photos2", false),
            ("photos", "photo", false),
            ("photos-*", "photos-", true),
            ("photos-*", "photos-2024", true),
            ("photos-*", "photos", false),
            ("*", "anything.at.all", true),
            ("*-logs", "app-logs", true),
            ("*-logs", "app-logs-old", false),
            ("a*b*c", "aXXbYYbZZc", true),
            ("a*b*c", "aXXbYYcZZ", false),
            ("b?t", "bat", true),
            ("b?t", "bt", false),
            ("b?t", "boat", false),
            ("??", "ab", true),
            ("*?", "", false),
            ("**", "", true),
            ("a*", "a", true),
            ("*a*a*a*a*a*b", &"a".repeat(60), false),
        ] {
            assert_eq!(glob_matches(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn object_actions_need_their_own_action_under_the_prefix() {
        let c = one_client(vec![grant("photos-*", "alice/", &["read", "list"]), grant("inbox", "", &["write"]), grant("trash", "old/", &["delete"])]);
        assert!(allowed(&c, ID, Access::Read { bucket: "photos-2024", key: "alice/cat.jpg" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-2024", key: "bob/cat.jpg" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-2024", key: "alice" }), "the key must start with the whole prefix");
        assert!(!allowed(&c, ID, Access::Read { bucket: "videos", key: "alice/cat.jpg" }));
        assert!(!allowed(&c, ID, Access::Write { bucket: "photos-2024", key: "alice/cat.jpg" }));
        assert!(!allowed(&c, ID, Access::Delete { bucket: "photos-2024", key: "alice/cat.jpg" }));
        assert!(allowed(&c, ID, Access::Write { bucket: "inbox", key: "anything" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "inbox", key: "anything" }));
        assert!(allowed(&c, ID, Access::Delete { bucket: "trash", key: "old/x" }));
        assert!(!allowed(&c, ID, Access::Delete { bucket: "trash", key: "new/x" }));
        // Keys must start with the prefix as written, and stay under it as a
        // file system backend resolves them.
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-1", key: "./alice/x" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice/../bob/x" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice//../bob/x" }));
        assert!(!allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice/.." }));
        assert!(allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice/./x" }));
        assert!(allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice/x/../y" }));
        assert!(allowed(&c, ID, Access::Read { bucket: "photos-1", key: "alice/..x/.y" }));
        // Without a prefix: nothing may climb out of the bucket (into another one).
        assert!(allowed(&c, ID, Access::Write { bucket: "inbox", key: "x/./y" }));
        assert!(!allowed(&c, ID, Access::Write { bucket: "inbox", key: "../photos-1/alice/x" }));
        assert!(!allowed(&c, ID, Access::Write { bucket: "inbox", key: "a/../../photos-1/x" }));
        let everything = one_client(vec![grant("*", "", &["read", "write", "delete", "list"])]);
        assert!(!allowed(&everything, ID, Access::Read { bucket: "..", key: "etc/passwd" }));
        let any_bucket = one_client(vec![grant("*", "home/", &["read"])]);
        assert!(!allowed(&any_bucket, ID, Access::Read { bucket: "", key: "home/x" }), "//home/x");
        assert!(!allowed(&everything, ID, Access::List { bucket: "home", prefix: "../" }));
        assert!(!allowed(&everything, ID, Access::Copy { source_bucket: "b", source_key: "../c/k", bucket: "b", key: "k" }));
    }

    #[test]
    fn listing_must_stay_inside_the_grant_prefix() {
        let c = one_client(vec![grant("home", "alice/", &["list"])]);
        assert!(allowed(&c, ID, Access::List { bucket: "home", prefix: "alice/" }));
        assert!(allowed(&c, ID, Access::List { bucket: "home", prefix: "alice/photos/" }));
        // A wider listing would show other users' keys.
        assert!(!allowed(&c, ID, Access::List { bucket: "home", prefix: "" }));
        assert!(!allowed(&c, ID, Access::List { bucket: "home", prefix: "alice" }));
        assert!(!allowed(&c, ID, Access::List { bucket: "home", prefix: "al" }));
        // ListParts is a listing under the key.
        assert!(allowed(&c, ID, Access::List { bucket: "home", prefix: "alice/big.iso" }));
        // list does not read objects.
        assert!(!allowed(&c, ID, Access::Read { bucket: "home", key: "alice/x" }));
    }

    #[test]
    fn copy_needs_read_on_source_and_write_on_target() {
        let c = one_client(vec![grant("src", "", &["read"]), grant("dst", "in/", &["write"])]);
        assert!(allowed(&c, ID, Access::Copy { source_bucket: "src", source_key: "a", bucket: "dst", key: "in/a" }));
        let no_write = c.authorize(ID, &Access::Copy { source_bucket: "src", source_key: "a", bucket: "dst", key: "out/a" });
        assert!(!no_write.allowed);
        assert!(no_write.reason.contains("write on the target"), "{}", no_write.reason);
        let no_read = c.authorize(ID, &Access::Copy { source_bucket: "dst", source_key: "in/a", bucket: "dst", key: "in/b" });
        assert!(!no_read.allowed);
        assert!(no_read.reason.contains("read on the source"), "{}", no_read.reason);
        // Read and write on one bucket from one grant.
        let c = one_client(vec![grant("b", "", &["read", "write"])]);
        assert!(allowed(&c, ID, Access::Copy { source_bucket: "b", source_key: "x", bucket: "b", key: "y" }));
    }

    #[test]
    fn bucket_operations() {
        let c = one_client(vec![grant("owned", "", &["read", "write", "delete", "list"]), grant("shared", "", &["read", "write", "list"]), grant("team-*", "me/", &["read", "write", "delete", "list"])]);
        // Creating, deleting and configuring a bucket needs all actions on all of it.
        assert!(allowed(&c, ID, Access::BucketAdmin { bucket: "owned" }));
        assert!(!allowed(&c, ID, Access::BucketAdmin { bucket: "shared" }));
        assert!(!allowed(&c, ID, Access::BucketAdmin { bucket: "team-a" }));
        assert!(!allowed(&c, ID, Access::BucketAdmin { bucket: "new-bucket" }));
        // HeadBucket and GetBucketLocation need any grant on the bucket.
        assert!(allowed(&c, ID, Access::BucketMetadata { bucket: "shared" }));
        assert!(allowed(&c, ID, Access::BucketMetadata { bucket: "team-a" }));
        assert!(!allowed(&c, ID, Access::BucketMetadata { bucket: "other" }));
        // ListBuckets needs list on every bucket.
        assert!(!allowed(&c, ID, Access::ListBuckets));
        let admin = one_client(vec![grant("*", "", &["list"])]);
        assert!(allowed(&admin, ID, Access::ListBuckets));
        assert!(!allowed(&admin, ID, Access::BucketAdmin { bucket: "owned" }));
        let owner_of_all = one_client(vec![grant("*", "", &["read", "write", "delete", "list"])]);
        assert!(allowed(&owner_of_all, ID, Access::BucketAdmin { bucket: "anything" }));
    }

    #[test]
    fn anonymous_grants_apply_to_everyone() {
        let c = clients(json!({
            "clients": [{"access_key_id": "AKIAEXAMPLE0000001", "secret_access_key": "s", "grants": [grant("private", "", &["read"])]}],
            "anonymous": {"grants": [grant("public", "", &["read", "list"])]},
        }));
        assert!(allowed(&c, None, Access::Read { bucket: "public", key: "index.html" }));
        assert!(allowed(&c, None, Access::List { bucket: "public", prefix: "" }));
        assert!(!allowed(&c, None, Access::Write { bucket: "public", key: "index.html" }));
        assert!(!allowed(&c, None, Access::Read { bucket: "private", key: "x" }));
        // A signed request may do what an unsigned one may.
        assert!(allowed(&c, ID, Access::Read { bucket: "public", key: "index.html" }));
        assert!(allowed(&c, ID, Access::Read { bucket: "private", key: "x" }));
        let decision = c.authorize(None, &Access::Read { bucket: "public", key: "a" });
        assert_eq!(decision.reason, "allow read \"public\" \"a\" for anonymous: by anonymous.grants[0]");
    }

    #[test]
    fn deny_by_default() {
        let c = clients(json!({}));
        for access in [
            Access::Read { bucket: "b", key: "k" },
            Access::Write { bucket: "b", key: "k" },
            Access::Delete { bucket: "b", key: "k" },
            Access::List { bucket: "b", prefix: "" },
            Access::Copy { source_bucket: "b", source_key: "k", bucket: "b", key: "l" },
            Access::BucketMetadata { bucket: "b" },
            Access::BucketAdmin { bucket: "b" },
            Access::ListBuckets,
        ] {
            assert!(!allowed(&c, None, access), "{access}");
            assert!(!allowed(&c, ID, access), "{access}");
        }
        // A client with no grants may do nothing either.
        let c = one_client(vec![]);
        assert!(!allowed(&c, ID, Access::BucketMetadata { bucket: "b" }));
        // An unknown key (verify should have caught it) is denied, even where anonymous is allowed.
        let c = clients(json!({"anonymous": {"grants": [grant("*", "", &["read"])]}}));
        let decision = c.authorize(Some("AKIAUNKNOWN"), &Access::Read { bucket: "b", key: "k" });
        assert!(!decision.allowed);
        assert!(decision.reason.contains("unknown access key"), "{}", decision.reason);
    }

    #[test]
    fn multi_delete_is_decided_per_key() {
        let c = one_client(vec![grant("b", "tmp/", &["delete"])]);
        let keys = ["tmp/a", "tmp/b", "keep/c"];
        let decisions: Vec<bool> = keys.iter().map(|key| allowed(&c, ID, Access::Delete { bucket: "b", key })).collect();
        assert_eq!(decisions, [true, true, false]);
    }

    #[test]
    fn reasons_name_the_grant_and_escape_keys() {
        let c = one_client(vec![grant("b", "", &["read"]), grant("b", "x", &["write"])]);
        let allow = c.authorize(ID, &Access::Write { bucket: "b", key: "x\ny" });
        assert_eq!(allow.reason, "allow write \"b\" \"x\\ny\" for client \"AKIAEXAMPLE0000001\": by clients[0].grants[1]");
        let deny = c.authorize(ID, &Access::Delete { bucket: "b", key: "k" });
        assert_eq!(deny.reason, "deny delete \"b\" \"k\" for client \"AKIAEXAMPLE0000001\": no grant allows it");
        assert!(!deny.reason.contains("s3cret"));
    }

    #[test]
    fn secrets_feed_the_sigv4_lookup() {
        use crate::sigv4::{RequestParts, Verifier};
        let c = clients(json!({"clients": [{"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "grants": [grant("examplebucket", "", &["list"])]}]}));
        let headers: Vec<(String, String)> = [
            (":authority", "examplebucket.s3.amazonaws.com"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let request = RequestParts { method: "GET", path: "/?max-keys=2&prefix=J", headers: &headers };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_369_353_600);
        let verified = Verifier::new().verify(&request, now, &|id| c.secret(id)).unwrap();
        assert!(c.authorize(Some(&verified.access_key_id), &Access::List { bucket: "examplebucket", prefix: "J" }).allowed);
    }
}
