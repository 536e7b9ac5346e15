//! `s3crypt`: the recovery and admin tool of the s3crypt gateway, built from
//! the filter's own format code. Gets data back without the gateway
//! (`decrypt`, `get`), checks stored objects (`inspect`, `verify`), makes
//! objects the gateway can read (`encrypt`) and moves objects to the active
//! key without moving their bodies (`rewrap`). Strict-KMS objects (`kms=`)
//! get their data keys from the KMS, asked with the object's bucket and key.
//! See README.md, "Getting your data back without the gateway".

mod keys;
mod object;
mod rewrap;
mod s3;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use keys::ObjectName;
use object::{decrypt_stream, encrypt_stream, envelope_from_metadata_text, parse_envelope, walk_layout};
use s3crypt_filter::cipher::Suite;
use s3crypt_filter::envelope::{valid_chunk_size, Envelope, WrappedDek, METADATA_HEADER};
use s3crypt_filter::sizes;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "s3crypt", version, about = "Inspect, decrypt, encrypt, verify and re-wrap s3crypt objects without the gateway", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Global {
    /// The gateway's plugin JSON: keys (key_hex, key_hex_env, password, password_env, kms), write_key, cipher, chunk_size.
    #[arg(long, global = true, env = "S3CRYPT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// A raw key-encryption key, ID=64 hex digits (repeatable; added to those of --config).
    #[arg(long = "key", global = true, value_name = "ID=HEX")]
    keys: Vec<String>,
    /// The S3 backend's URL (not the gateway's), for s3:// arguments. Path-style requests.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    endpoint: Option<String>,
    /// The backend's signing region.
    #[arg(long, global = true, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// KMS URL for KMS-held keys (default: https://<kms.authority> from the configuration).
    #[arg(long, global = true, value_name = "URL")]
    kms_endpoint: Option<String>,
    /// KMS signing region (default: from the KMS host name, else us-east-1).
    #[arg(long, global = true)]
    kms_region: Option<String>,
}

/// Where an object's envelope comes from when its bytes are a file or stdin,
/// and the name it was written under (for strict-KMS objects).
#[derive(Args, Clone, Default)]
struct EnvelopeSource {
    /// The object's x-amz-meta-s3crypt value ("v=1;s=...").
    #[arg(long, value_name = "VALUE", conflicts_with = "metadata_file")]
    envelope: Option<String>,
    /// A file with the object's metadata: `aws s3api head-object` JSON, {"s3crypt": ...}, header lines, or the bare value.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Stored size of an object piped on stdin whose envelope records no length (multipart objects).
    #[arg(long, value_name = "BYTES")]
    stored_length: Option<u64>,
    /// Strict-KMS objects (kms=): the bucket the object was written to (default: that of s3://BUCKET/KEY).
    #[arg(long, value_name = "BUCKET", requires = "object_key")]
    bucket: Option<String>,
    /// Strict-KMS objects (kms=): the key the object was written under (default: that of s3://BUCKET/KEY). Not --key, which gives a KEK.
    #[arg(long, value_name = "KEY", requires = "bucket")]
    object_key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Show an object's cipher, key id, chunk size, sizes and chunk layout (no key needed; with keys, whether its key unwraps).
    Inspect {
        /// A file, - for stdin, or s3://BUCKET/KEY (HEAD only).
        #[arg(default_value = "-")]
        input: String,
        #[command(flatten)]
        source: EnvelopeSource,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt a stored object (file, stdin or s3://BUCKET/KEY) to a file or stdout, authenticating every chunk.
    Decrypt {
        #[arg(default_value = "-")]
        input: String,
        /// Output file (default: stdout). Written under a temporary name and renamed once the whole object authenticated.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        source: EnvelopeSource,
    },
    /// Authenticate a whole stored object without writing it anywhere; exits 1 if it does not decrypt.
    Verify {
        #[arg(default_value = "-")]
        input: String,
        #[command(flatten)]
        source: EnvelopeSource,
    },
    /// Encrypt a file or stdin as the gateway's PutObject would; the envelope goes to stderr or --metadata-out.
    Encrypt {
        #[arg(default_value = "-")]
        input: String,
        /// Output file (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Plaintext length, required when stdin is a pipe (it is bound to the key up front).
        #[arg(long, value_name = "BYTES")]
        length: Option<u64>,
        /// chacha20-poly1305 or aes-256-gcm (default: the configuration's cipher).
        #[arg(long)]
        cipher: Option<String>,
        /// Chunk size (default: the configuration's chunk_size).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Write the metadata as JSON {"s3crypt": "..."} (what `aws s3api put-object --metadata file://...` takes) instead of printing it.
        #[arg(long, value_name = "FILE")]
        metadata_out: Option<PathBuf>,
    },
    /// Download every object under s3://BUCKET[/PREFIX] from the backend and decrypt it into a directory.
    Get {
        /// s3://BUCKET[/PREFIX]
        location: String,
        /// Directory to write the objects to (as DIR/KEY).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Resume: start after this key (the last key a previous run printed).
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
    },
    /// Re-wrap the data keys of the objects under s3://BUCKET[/PREFIX] under the active key (write_key), in place, through the backend's S3 API.
    Rewrap {
        /// s3://BUCKET[/PREFIX]
        location: String,
        /// Resume: start after this key (the last key a previous run printed).
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
        /// List what would be re-wrapped; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("s3crypt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Inspect { input, source, json } => inspect(&g, &input, &source, json),
        Command::Decrypt { input, output, source } => decrypt(&g, &input, output.as_deref(), &source),
        Command::Verify { input, source } => verify(&g, &input, &source),
        Command::Encrypt { input, output, length, cipher, chunk_size, metadata_out } => encrypt(&g, &input, output.as_deref(), length, cipher.as_deref(), chunk_size, metadata_out.as_deref()),
        Command::Get { location, output, start_after } => get(&g, &location, &output, start_after.as_deref()),
        Command::Rewrap { location, start_after, dry_run } => {
            let (bucket, prefix) = s3::parse_s3_url(&location).context("expected s3://BUCKET[/PREFIX]")?;
            let keys = load_keys(&g)?;
            rewrap::rewrap(&client(&g)?, &keys.keyring, &bucket, &prefix, start_after.as_deref(), dry_run)
        }
    }
}

fn load_keys(g: &Global) -> Result<keys::Keys> {
    keys::load(g.config.as_deref(), &g.keys, &keys::KmsOptions { endpoint: g.kms_endpoint.clone(), region: g.kms_region.clone() })
}

fn client(g: &Global) -> Result<s3::Client> {
    let endpoint = g.endpoint.as_deref().context("s3:// locations need --endpoint (the backend's URL) or AWS_ENDPOINT_URL")?;
    Ok(s3::Client::new(s3::Endpoint::parse(endpoint)?, g.region.clone(), "s3", s3::Credentials::from_env()?))
}

/// A stored object opened for reading: its bytes, size (if known) and envelope (if any).
struct Stored {
    reader: Box<dyn Read>,
    /// Seekable when the object is a file (the layout walk skips chunk bodies).
    file: Option<File>,
    len: Option<u64>,
    envelope: Option<String>,
    /// What S3 said about it (for inspect), when it came from S3.
    headers: Vec<(String, String)>,
    name: String,
    /// Its bucket and key, when it came from S3.
    s3_name: Option<ObjectName>,
}

fn open_input(g: &Global, input: &str, head_only: bool) -> Result<Stored> {
    if let Some((bucket, key)) = s3::parse_s3_url(input) {
        if key.is_empty() {
            bail!("{input}: name an object, s3://BUCKET/KEY");
        }
        let client = client(g)?;
        let response = if head_only { client.head_object(&bucket, &key)? } else { client.get_object(&bucket, &key)? };
        if response.status != 200 {
            bail!("{input}: {}", response.error_text());
        }
        let len = response.header("content-length").and_then(|v| v.trim().parse().ok());
        let envelope = response.header(METADATA_HEADER).map(str::to_owned);
        let headers = response.headers.clone();
        let s3_name = Some(ObjectName { bucket, key });
        return Ok(Stored { reader: Box::new(response.body.into_reader()), file: None, len, envelope, headers, name: input.to_owned(), s3_name });
    }
    if input == "-" {
        // A regular file on stdin (`< file`) has a size; a pipe does not.
        use std::os::fd::AsFd;
        let mut file = File::from(io::stdin().as_fd().try_clone_to_owned().context("reading stdin")?);
        let meta = file.metadata().context("reading stdin")?;
        if meta.is_file() {
            let position = file.stream_position().unwrap_or(0);
            let len = meta.len().saturating_sub(position);
            let reader = file.try_clone().context("reading stdin")?;
            return Ok(Stored { reader: Box::new(reader), file: Some(file), len: Some(len), envelope: None, headers: Vec::new(), name: "stdin".into(), s3_name: None });
        }
        return Ok(Stored { reader: Box::new(io::stdin().lock()), file: None, len: None, envelope: None, headers: Vec::new(), name: "stdin".into(), s3_name: None });
    }
    let file = File::open(input).with_context(|| format!("opening {input}"))?;
    let len = file.metadata().with_context(|| format!("reading {input}"))?.len();
    let reader = file.try_clone().with_context(|| format!("opening {input}"))?;
    Ok(Stored { reader: Box::new(reader), file: Some(file), len: Some(len), envelope: None, headers: Vec::new(), name: input.to_owned(), s3_name: None })
}

/// The envelope: from --envelope / --metadata-file, else from S3's answer.
fn envelope_of(stored: &Stored, source: &EnvelopeSource) -> Result<Option<Envelope>> {
    let value = if let Some(value) = &source.envelope {
        Some(value.clone())
    } else if let Some(path) = &source.metadata_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Some(envelope_from_metadata_text(&text)?)
    } else {
        stored.envelope.clone()
    };
    value.map(|v| parse_envelope(&v)).transpose()
}

fn require_envelope(stored: &Stored, source: &EnvelopeSource) -> Result<Envelope> {
    envelope_of(stored, source)?.with_context(|| {
        if stored.headers.is_empty() {
            format!("{}: give the object's envelope (--envelope \"v=1;...\" or --metadata-file FILE): the bytes alone cannot be decrypted", stored.name)
        } else {
            format!("{}: the object has no {METADATA_HEADER} metadata: it was not written through the gateway (its bytes are the plaintext)", stored.name)
        }
    })
}

/// The name the object was written under: --bucket/--object-key (e.g. a
/// copy restored elsewhere), else its s3:// location.
fn object_name(stored: &Stored, source: &EnvelopeSource) -> Option<ObjectName> {
    match (&source.bucket, &source.object_key) {
        (Some(bucket), Some(key)) => Some(ObjectName { bucket: bucket.clone(), key: key.clone() }),
        _ => stored.s3_name.clone(),
    }
}

/// The stored length the reader checks the object against.
fn stored_length(stored: &Stored, source: &EnvelopeSource, envelope: &Envelope) -> Result<u64> {
    if let Some(len) = stored.len.or(source.stored_length) {
        return Ok(len);
    }
    match envelope.plaintext_len {
        Some(n) => sizes::ciphertext_len(n, envelope.chunk_size).context("the recorded length is too large"),
        None => bail!("{}: the envelope records no length (a multipart object) and a pipe has none: give --stored-length BYTES (the object's Content-Length) or a file", stored.name),
    }
}

fn decrypt(g: &Global, input: &str, output: Option<&Path>, source: &EnvelopeSource) -> Result<ExitCode> {
    let mut stored = open_input(g, input, false)?;
    let envelope = require_envelope(&stored, source)?;
    let len = stored_length(&stored, source, &envelope)?;
    let keys = load_keys(g)?;
    let dek = keys.data_key(&envelope, object_name(&stored, source).as_ref()).with_context(|| format!("{}: not decrypted", stored.name))?;
    match output {
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            decrypt_stream(dek, &envelope, len, &mut stored.reader, Some(&mut out)).with_context(|| format!("{}: not decrypted (output may hold the chunks that authenticated before the failure)", stored.name))?;
        }
        Some(path) => {
            write_atomically(path, |out| decrypt_stream(dek, &envelope, len, &mut stored.reader, Some(out)).map(|_| ())).with_context(|| format!("{}: not decrypted", stored.name))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` through a temporary file in the same directory, renamed
/// only when `write` succeeded: a failed decryption leaves no file behind.
fn write_atomically(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let file_name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let mut partial_name = file_name.to_os_string();
    partial_name.push(".s3crypt-partial");
    let partial = path.with_file_name(partial_name);
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut out = io::BufWriter::with_capacity(object::IO_BUF, file);
    let result = write(&mut out).and_then(|()| out.flush().context("writing the output")).and_then(|()| out.get_ref().sync_all().context("writing the output"));
    drop(out);
    match result {
        Ok(()) => std::fs::rename(&partial, path).with_context(|| format!("renaming {} to {}", partial.display(), path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn verify(g: &Global, input: &str, source: &EnvelopeSource) -> Result<ExitCode> {
    let mut stored = open_input(g, input, false)?;
    let envelope = require_envelope(&stored, source)?;
    let len = stored_length(&stored, source, &envelope)?;
    let keys = load_keys(g)?;
    let name = object_name(&stored, source);
    match keys.data_key(&envelope, name.as_ref()).and_then(|dek| decrypt_stream(dek, &envelope, len, &mut stored.reader, None)) {
        Ok(plain) => {
            println!("OK {}: {plain} plaintext bytes authenticated ({}, key {}, {len} stored bytes)", stored.name, envelope.suite.name(), envelope.key_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED {}: {e:#}", stored.name);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn encrypt(g: &Global, input: &str, output: Option<&Path>, length: Option<u64>, cipher: Option<&str>, chunk_size: Option<u32>, metadata_out: Option<&Path>) -> Result<ExitCode> {
    if s3::parse_s3_url(input).is_some() {
        bail!("encrypt reads a file or stdin; upload its output with any S3 client");
    }
    let mut stored = open_input(g, input, false)?;
    let plaintext_len = length.or(stored.len).context("stdin is a pipe: give --length BYTES (the plaintext length is bound to the key before the first byte)")?;
    let keys = load_keys(g)?;
    if keys.keyring.active().is_err() {
        bail!("encrypt needs a key-encryption key (\"keys\" in the configuration, or --key ID=HEX): strict-KMS objects are made by the gateway, whose KMS gives each its key");
    }
    let suite = match cipher {
        Some(name) => Suite::from_name(name).with_context(|| format!("unknown cipher {name:?}; use chacha20-poly1305 or aes-256-gcm"))?,
        None => keys.suite,
    };
    let chunk_size = chunk_size.unwrap_or(keys.chunk_size);
    if !valid_chunk_size(chunk_size) {
        bail!("--chunk-size must be a power of two from 16384 to 1048576");
    }
    let encrypted = match output {
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            encrypt_stream(&keys.keyring, suite, chunk_size, plaintext_len, &mut stored.reader, &mut out)?
        }
        Some(path) => {
            let mut result = None;
            write_atomically(path, |out| {
                result = Some(encrypt_stream(&keys.keyring, suite, chunk_size, plaintext_len, &mut stored.reader, out)?);
                Ok(())
            })?;
            result.context("encryption produced nothing")?
        }
    };
    let value = encrypted.envelope.encode();
    match metadata_out {
        Some(path) => std::fs::write(path, serde_json::json!({ "s3crypt": value }).to_string() + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => eprintln!("{METADATA_HEADER}: {value}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(g: &Global, input: &str, source: &EnvelopeSource, json: bool) -> Result<ExitCode> {
    let is_s3 = s3::parse_s3_url(input).is_some();
    let mut stored = open_input(g, input, true)?;
    let envelope = envelope_of(&stored, source)?;
    // In the order a person reads it; JSON output is keyed anyway.
    let mut report: Vec<(String, serde_json::Value)> = Vec::new();
    let mut put = |name: &str, value: serde_json::Value| report.push((name.into(), value));
    put("object", stored.name.clone().into());
    if is_s3 {
        for name in ["content-type", "etag", "last-modified"] {
            if let Some(v) = stored.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                put(name, v.1.clone().into());
            }
        }
        let user: Vec<String> = stored.headers.iter().filter_map(|(n, _)| n.to_ascii_lowercase().strip_prefix("x-amz-meta-").map(str::to_owned)).collect();
        put("user_metadata", user.into());
    }
    // Walk the chunk headers of local bytes (no key needed).
    let (layout, walked) = if is_s3 {
        (None, None)
    } else {
        let mut walked: u64 = 0;
        let layout = match stored.file.take() {
            Some(mut file) => walk_layout(&mut file.try_clone()?, &mut |_, n| {
                let before = file.stream_position()?;
                let end = file.metadata()?.len();
                let to = before.saturating_add(n).min(end);
                file.seek(SeekFrom::Start(to))?;
                Ok(to - before)
            })?,
            None => walk_layout(&mut stored.reader, &mut |r, n| io::copy(&mut r.take(n), &mut io::sink()))?,
        };
        for (_, chunks, plain) in &layout.segments {
            walked += plain + chunks * s3crypt_filter::stream::CHUNK_OVERHEAD as u64;
        }
        (Some(layout), Some(walked))
    };
    let stored_len = stored.len.or(walked);
    if let Some(len) = stored_len {
        put("stored_length", len.into());
    }
    let Some(envelope) = envelope else {
        put("encrypted", false.into());
        put("note", format!("no {METADATA_HEADER} envelope: not written through the gateway, or give --envelope / --metadata-file").into());
        print_report(&report, json);
        return Ok(ExitCode::SUCCESS);
    };
    put("encrypted", true.into());
    put("format_version", 1.into());
    put("cipher", envelope.suite.name().into());
    put("chunk_size", envelope.chunk_size.into());
    put("key_id", envelope.key_id.clone().into());
    let strict_kms = matches!(envelope.wrapped_dek, WrappedDek::Kms(_));
    put("data_key", if strict_kms { "KMS-wrapped (kms=, strict mode)" } else { "KEK-wrapped (w=)" }.into());
    match envelope.plaintext_len {
        Some(n) => {
            put("plaintext_length", n.into());
            let expected = sizes::ciphertext_len(n, envelope.chunk_size);
            put("expected_stored_length", expected.into());
            if let Some(len) = stored_len {
                put("length_matches_envelope", (expected == Some(len)).into());
            }
        }
        None => {
            put("plaintext_length", serde_json::Value::Null);
            let derived = stored_len.and_then(|len| sizes::plaintext_len(len, envelope.chunk_size));
            put("plaintext_length_from_stored_length", derived.into());
        }
    }
    if let Some(md5) = envelope.plaintext_md5 {
        put("plaintext_md5", hex::encode(md5).into());
    }
    if let Some(layout) = layout {
        let kind = match layout.segments.as_slice() {
            [] => "empty (no chunk)",
            [(0, _, _)] => "single upload (part 0)",
            _ => "multipart upload",
        };
        put("layout", kind.into());
        let parts: Vec<serde_json::Value> = layout.segments.iter().map(|(part, chunks, plain)| serde_json::json!({ "part": part, "chunks": chunks, "plaintext_bytes": plain })).collect();
        put("segments", parts.into());
        put("chunks", layout.segments.iter().map(|s| s.1).sum::<u64>().into());
        if let Some(problem) = layout.problem {
            put("layout_problem", problem.into());
        }
    }
    if g.config.is_some() || !g.keys.is_empty() {
        let keys = load_keys(g)?;
        // For a kms= envelope this asks the KMS, as a read would.
        let status = match keys.data_key(&envelope, object_name(&stored, source).as_ref()) {
            Ok(_) => "unwraps".to_string(),
            Err(e) => format!("{e:#}"),
        };
        put("key", status.into());
    }
    print_report(&report, json);
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &[(String, serde_json::Value)], json: bool) {
    if json {
        let map: serde_json::Map<String, serde_json::Value> = report.iter().cloned().collect();
        println!("{}", serde_json::Value::Object(map));
        return;
    }
    for (name, value) in report {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Object(o) => match (o.get("part"), o.get("chunks"), o.get("plaintext_bytes")) {
                        (Some(part), Some(chunks), Some(bytes)) => format!("part {part}: {chunks} chunks, {bytes} bytes"),
                        _ => item.to_string(),
                    },
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        println!("{:<36} {text}", format!("{}:", name.replace('_', " ")));
    }
}

/// A key as a relative path under the output directory, refused if it
/// could leave it.
fn local_path(dir: &Path, key: &str) -> Option<PathBuf> {
    let relative = Path::new(key);
    let safe = !key.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
    safe.then(|| dir.join(relative))
}

fn get(g: &Global, location: &str, dir: &Path, start_after: Option<&str>) -> Result<ExitCode> {
    let (bucket, prefix) = s3::parse_s3_url(location).context("expected s3://BUCKET[/PREFIX]")?;
    let client = client(g)?;
    let keys = load_keys(g)?;
    let (mut done, mut failed) = (0u64, 0u64);
    let mut last: Option<String> = None;
    let mut token: Option<String> = None;
    loop {
        let page = client.list_page(&bucket, &prefix, start_after, token.as_deref()).with_context(|| resume_hint(last.as_deref()))?;
        for listed in page.objects {
            let key = listed.key;
            if key.ends_with('/') && listed.size == 0 {
                last = Some(key);
                continue;
            }
            let Some(target) = local_path(dir, &key) else {
                eprintln!("FAILED {key}: the key is not a safe relative path; fetch it with `decrypt s3://{bucket}/KEY -o FILE`");
                failed += 1;
                last = Some(key);
                continue;
            };
            let response = client.get_object(&bucket, &key).with_context(|| resume_hint(last.as_deref()))?;
            if response.status != 200 {
                eprintln!("FAILED {key}: {}", response.error_text());
                failed += 1;
                last = Some(key);
                continue;
            }
            if let Some(Err(e)) = target.parent().map(std::fs::create_dir_all) {
                // E.g. a key "a" and a key "a/b": both cannot be files.
                eprintln!("FAILED {key}: creating its directory: {e}");
                failed += 1;
                last = Some(key);
                continue;
            }
            let len = response.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
            let envelope = response.header(METADATA_HEADER).map(str::to_owned);
            let mut body = response.body.into_reader();
            let result = match (envelope, len) {
                (None, _) => write_atomically(&target, |out| io::copy(&mut body, out).map(|_| ()).context("copying")).map(|()| "not encrypted, copied as stored".to_string()),
                (Some(_), None) => Err(anyhow::anyhow!("the backend sent no Content-Length")),
                (Some(value), Some(len)) => parse_envelope(&value).and_then(|env| {
                    let dek = keys.data_key(&env, Some(&ObjectName { bucket: bucket.clone(), key: key.clone() }))?;
                    let mut plain = 0;
                    write_atomically(&target, |out| {
                        plain = decrypt_stream(dek, &env, len, &mut body, Some(out))?;
                        Ok(())
                    })
                    .map(|()| format!("decrypted, {plain} bytes"))
                }),
            };
            match result {
                Ok(what) => {
                    done += 1;
                    println!("{key}: {what}");
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("FAILED {key}: {e:#}");
                }
            }
            last = Some(key);
        }
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    println!("get: {done} written, {failed} failed; last key: {}", last.as_deref().unwrap_or("-"));
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn resume_hint(last: Option<&str>) -> String {
    match last {
        Some(key) => format!("interrupted after {key:?}; resume with --start-after {key:?}"),
        None => "interrupted before the first object".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_leave_the_output_directory() {
        let dir = Path::new("/out");
        assert_eq!(local_path(dir, "a/b.txt"), Some(PathBuf::from("/out/a/b.txt")));
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "./a"] {
            assert_eq!(local_path(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["s3crypt", "decrypt", "obj", "-o", "out", "--envelope", "v=1", "--config", "p.json"]).unwrap();
        assert!(matches!(cli.command, Command::Decrypt { .. }));
        assert!(Cli::try_parse_from(["s3crypt", "decrypt", "--envelope", "v=1", "--metadata-file", "m"]).is_err());
        // A strict-KMS object's name: both parts or none; --key stays a KEK.
        let cli = Cli::try_parse_from(["s3crypt", "verify", "obj", "--bucket", "b", "--object-key", "dir/k", "--key", "k=00"]).unwrap();
        assert!(matches!(&cli.command, Command::Verify { source, .. } if source.bucket.as_deref() == Some("b") && source.object_key.as_deref() == Some("dir/k")));
        assert_eq!(cli.global.keys, ["k=00"]);
        assert!(Cli::try_parse_from(["s3crypt", "verify", "obj", "--bucket", "b"]).is_err());
        assert!(Cli::try_parse_from(["s3crypt", "decrypt", "obj", "--object-key", "k"]).is_err());
    }
}
