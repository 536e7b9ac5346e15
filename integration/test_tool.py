"""The native recovery and admin tool (tool/, binary `s3crypt`) against what the
real gateway stored: objects written through Envoy + the filter (single-part
and multipart, both ciphers) are fetched straight from the s3s-fs backend,
bytes + metadata, and decrypted byte-exact by the tool; `verify` catches a
flipped byte; `rewrap` moves objects to a new key through the backend's S3
API without changing a body byte, and the gateway reads them with the new key
alone. Strict-KMS objects (`kms=` envelopes) written through a strict-mode
gateway come back with a KMS Decrypt call naming the object (moto's KMS).
The binary is built by `make tool` (part of `make integration-test`);
S3CRYPT_TOOL overrides its path.
"""

import base64
import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from test_kms import kms_config, kms_key, kms_server, strict_config, strict_key  # noqa: F401  (moto's KMS server fixtures)

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
OLD = "a1" * 32
NEW = "b2" * 32
CIPHERS = ["chacha20-poly1305", "aes-256-gcm"]


@pytest.fixture(scope="module")
def tool() -> Path:
    path = Path(os.environ.get("S3CRYPT_TOOL") or REPO / "target" / "release" / "s3crypt")
    if not path.is_file():
        pytest.fail(f"s3crypt tool not built: {path} (run `make tool`)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def run(tool, backend, tmp_path_factory):
    """run(*args, input=None, check=True) -> CompletedProcess, with the backend's
    credentials and endpoint in the environment (never the gateway's)."""
    home = tmp_path_factory.mktemp("tool-home")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "AWS_ACCESS_KEY_ID": backend.access_key, "AWS_SECRET_ACCESS_KEY": backend.secret_key,
           "AWS_ENDPOINT_URL": backend.endpoint}

    def go(*args, input: bytes | None = None, check: bool = True, extra_env: dict | None = None):
        r = subprocess.run([str(tool), *map(str, args)], input=input, capture_output=True, timeout=300,
                           env={**env, **(extra_env or {})})
        if check and r.returncode != 0:
            raise AssertionError(f"s3crypt {' '.join(map(str, args))} exited {r.returncode}:\n"
                                 f"{r.stderr.decode(errors='replace')}")
        return r

    return go


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def old_config(cipher: str) -> dict:
    return {"keys": [{"id": "k2025", "key_hex": OLD}], "cipher": cipher}


@pytest.fixture(scope="module")
def stored(start_gateway, make_s3, new_bucket, backend_s3, tmp_path_factory):
    """Objects written through the gateway with each cipher, then fetched
    straight from the backend: {name: (plaintext, stored file, metadata file, cipher)}."""
    bucket = new_bucket("tool")
    here = tmp_path_factory.mktemp("tool-objects")
    small_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    objects = {}
    for cipher in CIPHERS:
        s3 = make_s3(start_gateway(old_config(cipher)))
        plain = {f"{cipher}/single": os.urandom(200_000), f"{cipher}/empty": b"",
                 f"{cipher}/multipart": os.urandom(11 * MiB + 17)}
        for key, data in plain.items():
            if key.endswith("multipart"):
                s3.upload_fileobj(io.BytesIO(data), bucket, key, Config=small_parts,
                                  ExtraArgs={"Metadata": {"owner": "ops"}, "ContentType": "application/x-test"})
            else:
                s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"owner": "ops"}, ContentType="application/x-test")
        for key, data in plain.items():
            got = backend_s3.get_object(Bucket=bucket, Key=key)
            body = got["Body"].read()
            assert body != data or data == b""  # ciphertext on the backend
            name = key.replace("/", "_")
            (here / name).write_bytes(body)
            # What `aws s3api head-object` prints: the tool reads that shape.
            (here / f"{name}.json").write_text(json.dumps({"ContentLength": len(body), "Metadata": got["Metadata"]}))
            objects[key] = (data, here / name, here / f"{name}.json", cipher)
    return bucket, objects


def test_decrypts_backend_bytes_and_metadata_byte_exact(run, stored, tmp_path):
    _, objects = stored
    config = write_config(tmp_path / "plugin.json", old_config("chacha20-poly1305"))
    for key, (data, body, meta, cipher) in objects.items():
        out = tmp_path / "out"
        run("decrypt", body, "--metadata-file", meta, "--config", config, "-o", out)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest(), key
        assert not list(tmp_path.glob("*.s3crypt-partial"))
        # The same from stdin to stdout, the envelope on the command line; a
        # pipe carries no size, so a multipart object needs --stored-length.
        envelope = json.loads(meta.read_text())["Metadata"]["s3crypt"]
        assert (f"s={cipher};" in envelope)
        r = run("decrypt", "--envelope", envelope, "--key", f"k2025={OLD}",
                "--stored-length", body.stat().st_size, input=body.read_bytes())
        assert r.stdout == data, key


def test_decrypts_straight_from_the_backend(run, stored, tmp_path):
    bucket, objects = stored
    config = write_config(tmp_path / "plugin.json", old_config("aes-256-gcm"))
    for key, (data, *_rest) in objects.items():
        r = run("decrypt", f"s3://{bucket}/{key}", "--config", config)
        assert r.stdout == data, key


def test_verify_passes_and_catches_a_flipped_byte(run, stored, tmp_path):
    _, objects = stored
    config = write_config(tmp_path / "plugin.json", old_config("chacha20-poly1305"))
    for key, (data, body, meta, _) in objects.items():
        r = run("verify", body, "--metadata-file", meta, "--config", config)
        assert r.stdout.decode().startswith("OK"), key
        if not data:
            continue
        for position in (30, body.stat().st_size // 2, body.stat().st_size - 1):
            bad = tmp_path / "bad"
            raw = bytearray(body.read_bytes())
            raw[position] ^= 0x01
            bad.write_bytes(bytes(raw))
            r = run("verify", bad, "--metadata-file", meta, "--config", config, check=False)
            assert r.returncode == 1, (key, position)
            assert "FAILED" in r.stderr.decode() and "chunk_auth_failed" in r.stderr.decode(), r.stderr
            out = tmp_path / "never"
            r = run("decrypt", bad, "--metadata-file", meta, "--config", config, "-o", out, check=False)
            assert r.returncode == 1 and not out.exists() and not list(tmp_path.glob("*.s3crypt-partial"))
    # A cut object and a wrong key.
    data, body, meta, _ = objects["aes-256-gcm/multipart"]
    cut = tmp_path / "cut"
    cut.write_bytes(body.read_bytes()[:-1])
    r = run("verify", cut, "--metadata-file", meta, "--config", config, check=False)
    assert r.returncode == 1 and "truncated" in r.stderr.decode()
    r = run("verify", body, "--metadata-file", meta, "--key", f"k2025={NEW}", check=False)
    assert r.returncode == 1 and "unwrap_failed" in r.stderr.decode()


def test_inspect_reports_cipher_key_chunks_and_layout(run, stored, tmp_path):
    bucket, objects = stored
    for key, (data, body, meta, cipher) in objects.items():
        info = json.loads(run("inspect", body, "--metadata-file", meta, "--key", f"k2025={OLD}", "--json").stdout)
        assert (info["cipher"], info["key_id"], info["chunk_size"], info["key"]) == (cipher, "k2025", 65536, "unwraps")
        assert info["stored_length"] == body.stat().st_size
        if key.endswith("multipart"):
            assert info["plaintext_length"] is None
            assert info["plaintext_length_from_stored_length"] == len(data)
            assert info["layout"] == "multipart upload"
            assert [s["part"] for s in info["segments"]] == [1, 2, 3]
            assert sum(s["plaintext_bytes"] for s in info["segments"]) == len(data)
        elif data:
            assert info["plaintext_length"] == len(data) and info["length_matches_envelope"] is True
            assert info["layout"] == "single upload (part 0)" and info["chunks"] == -(-len(data) // 65536)
        else:
            assert info["layout"] == "empty (no chunk)"
    # From S3: HEAD only.
    info = json.loads(run("inspect", f"s3://{bucket}/aes-256-gcm/single", "--json").stdout)
    assert info["cipher"] == "aes-256-gcm" and info["content-type"] == "application/x-test" and "owner" in info["user_metadata"]


def test_encrypted_by_the_tool_reads_through_the_gateway(run, start_gateway, make_s3, new_bucket, backend_s3, tmp_path):
    bucket = new_bucket("tool-enc")
    s3 = make_s3(start_gateway(old_config("chacha20-poly1305")))
    for cipher in CIPHERS:
        config = write_config(tmp_path / "plugin.json", old_config(cipher))
        src = tmp_path / "src"
        data = os.urandom(3 * 65536 + 5)
        src.write_bytes(data)
        run("encrypt", src, "--config", config, "-o", tmp_path / "enc", "--metadata-out", tmp_path / "meta.json")
        metadata = json.loads((tmp_path / "meta.json").read_text())
        assert f"s={cipher};" in metadata["s3crypt"]
        backend_s3.put_object(Bucket=bucket, Key=cipher, Body=(tmp_path / "enc").read_bytes(), Metadata=metadata)
        assert s3.get_object(Bucket=bucket, Key=cipher)["Body"].read() == data
    # From a pipe, with the length given; the envelope goes to stderr.
    r = run("encrypt", "--key", f"k2025={OLD}", "--length", 10, input=b"0123456789")
    value = r.stderr.decode().strip().removeprefix("x-amz-meta-s3crypt: ")
    assert run("decrypt", "--envelope", value, "--key", f"k2025={OLD}", input=r.stdout).stdout == b"0123456789"
    assert run("encrypt", "--key", f"k2025={OLD}", "--length", 11, input=b"0123456789", check=False).returncode == 1


def test_rewrap_moves_objects_to_the_new_key_without_touching_bodies(run, start_gateway, make_s3, new_bucket, backend_s3,
                                                                   data_dir, tmp_path):
    bucket = new_bucket("tool-rewrap")
    old_gateway = start_gateway(old_config("aes-256-gcm"))
    s3_old = make_s3(old_gateway)
    objects = {"a": os.urandom(10), "dir/b": os.urandom(300_000), "dir/c d+e": os.urandom(70_000), "empty": b"",
               "mp": os.urandom(10 * MiB + 3)}
    small_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    for key, data in objects.items():
        extra = {"Metadata": {"owner": "ops"}, "ContentType": "application/x-test"}
        s3_old.upload_fileobj(io.BytesIO(data), bucket, key, Config=small_parts, ExtraArgs=extra)
    backend_s3.put_object(Bucket=bucket, Key="plain", Body=b"never encrypted")
    before = {k: (data_dir / bucket / k).read_bytes() for k in [*objects, "plain"]}

    both = write_config(tmp_path / "both.json", {"keys": [{"id": "k2026", "key_hex": NEW}, {"id": "k2025", "key_hex": OLD}],
                                                  "write_key": "k2026"})
    # Pointed at the gateway by mistake, it sees no envelope and says so.
    r = run("rewrap", f"s3://{bucket}", "--config", both, "--endpoint", old_gateway.endpoint)
    assert "is --endpoint the backend?" in r.stderr.decode() and "0 rewrapped" in r.stdout.decode()
    # A dry run changes nothing.
    r = run("rewrap", f"s3://{bucket}", "--config", both, "--dry-run")
    assert r.stdout.decode().count("would rewrap") == len(objects)
    assert backend_s3.head_object(Bucket=bucket, Key="a")["Metadata"]["s3crypt"].split(";")[3] == "k=k2025"

    # Resumable: a run that starts after "a" leaves "a" alone...
    r = run("rewrap", f"s3://{bucket}", "--config", both, "--start-after", "a")
    out = r.stdout.decode()
    assert "rewrapped a " not in out and out.count("rewrapped ") == len(objects) - 1, out
    assert "not encrypted, left alone: plain" in out and out.rstrip().endswith("last key: plain")
    assert "k=k2025" in backend_s3.head_object(Bucket=bucket, Key="a")["Metadata"]["s3crypt"]
    # ...and a full run does it, skipping the done ones.
    r = run("rewrap", f"s3://{bucket}", "--config", both)
    out = r.stdout.decode()
    assert "rewrapped a (k2025 -> k2026)" in out and out.count("] already under k2026: ") == len(objects) - 1, out

    for key in [*objects, "plain"]:
        assert (data_dir / bucket / key).read_bytes() == before[key], key
        head = backend_s3.head_object(Bucket=bucket, Key=key)
        if key != "plain":
            assert "k=k2026" in head["Metadata"]["s3crypt"]
            assert head["Metadata"]["owner"] == "ops" and head["ContentType"] == "application/x-test", head
    new_only = make_s3(start_gateway({"keys": [{"id": "k2026", "key_hex": NEW}]}))
    for key, data in objects.items():
        got = new_only.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data, key
        assert got["Metadata"] == {"owner": "ops"} and got["ContentType"] == "application/x-test"

    # And `get` brings the whole bucket back with the new key alone.
    out_dir = tmp_path / "restored"
    r = run("get", f"s3://{bucket}", "--key", f"k2026={NEW}", "-o", out_dir)
    for key, data in objects.items():
        assert (out_dir / key).read_bytes() == data, key
    assert (out_dir / "plain").read_bytes() == b"never encrypted"
    assert r.stdout.decode().rstrip().endswith("6 written, 0 failed; last key: plain")


def test_kms_held_keys_are_decrypted_with_a_signed_kms_call(run, kms_server, kms_key, tmp_path):
    kek, blob, key_id = kms_key
    authority = kms_server.split("//")[1]
    config = write_config(tmp_path / "kms.json", kms_config(blob, authority, key_id=key_id))
    data = os.urandom(100_000)
    (tmp_path / "src").write_bytes(data)
    run("encrypt", tmp_path / "src", "--config", config, "--kms-endpoint", kms_server, "-o", tmp_path / "enc",
        "--metadata-out", tmp_path / "meta.json")
    # The KEK the KMS gave the tool is the one it holds: the raw key opens the object.
    r = run("decrypt", tmp_path / "enc", "--metadata-file", tmp_path / "meta.json", "--key", f"kms-2026={kek.hex()}")
    assert r.stdout == data
    # A blob the KMS refuses: a clear error naming the key.
    bad = write_config(tmp_path / "bad.json", kms_config(base64.b64encode(os.urandom(100)).decode(), authority))
    r = run("verify", tmp_path / "enc", "--metadata-file", tmp_path / "meta.json", "--config", bad,
            "--kms-endpoint", kms_server, check=False)
    assert r.returncode == 1 and "kms-2026" in r.stderr.decode() and "KMS refused Decrypt" in r.stderr.decode(), r.stderr


def test_strict_kms_objects_come_back_with_a_kms_decrypt_naming_the_object(run, start_gateway, make_s3, new_bucket, backend_s3,
                                                                           kms_server, strict_key, tmp_path):
    gateway = start_gateway(strict_config(kms_server, strict_key), kms=kms_server)
    s3 = make_s3(gateway)
    bucket = new_bucket("tool-strict")
    objects = {"single": os.urandom(200_000), "dir/multi part": os.urandom(11 * MiB + 17), "empty": b""}
    small_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    for key, data in objects.items():
        s3.upload_fileobj(io.BytesIO(data), bucket, key, Config=small_parts)
    # The gateway's own plugin JSON (kms_strict, backend); the KMS is moto's,
    # over http, so its URL is given (default: https://<kms_strict.authority>).
    config = write_config(tmp_path / "strict.json", gateway.filter_config())
    kms = ("--config", config, "--kms-endpoint", kms_server)
    files = {}
    for key, data in objects.items():
        got = backend_s3.get_object(Bucket=bucket, Key=key)
        envelope = got["Metadata"]["s3crypt"]
        assert ";k=kms;" in envelope and ";kms=" in envelope and ";w=" not in envelope, envelope
        body, meta = tmp_path / f"{key.replace('/', '_')}.stored", tmp_path / f"{key.replace('/', '_')}.json"
        body.write_bytes(got["Body"].read())
        meta.write_text(json.dumps({"Metadata": got["Metadata"]}))
        files[key] = (body, meta)

        # Straight from the backend: the name is the s3:// location's.
        assert run("decrypt", f"s3://{bucket}/{key}", *kms).stdout == data, key
        # From files: the name the object was written under is given.
        out = tmp_path / "out"
        run("decrypt", body, "--metadata-file", meta, "--bucket", bucket, "--object-key", key, *kms, "-o", out)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest(), key
        r = run("verify", body, "--metadata-file", meta, "--bucket", bucket, "--object-key", key, *kms)
        assert r.stdout.decode().startswith("OK") and f"{len(data)} plaintext bytes" in r.stdout.decode(), r.stdout

    body, meta = files["dir/multi part"]
    info = json.loads(run("inspect", body, "--metadata-file", meta, "--bucket", bucket, "--object-key", "dir/multi part", *kms, "--json").stdout)
    assert (info["key"], info["key_id"], info["layout"]) == ("unwraps", "kms", "multipart upload"), info
    assert [s["part"] for s in info["segments"]] == [1, 2, 3] and info["data_key"].startswith("KMS-wrapped")

    # Without the name, a clear error naming the flags; without kms_strict, one naming it.
    r = run("decrypt", body, "--metadata-file", meta, *kms, "-o", tmp_path / "never", check=False)
    assert r.returncode == 1 and "--bucket BUCKET and --object-key KEY" in r.stderr.decode(), r.stderr
    assert not (tmp_path / "never").exists()
    r = run("verify", body, "--metadata-file", meta, "--key", f"k2025={OLD}", "--bucket", bucket, "--object-key", "dir/multi part",
            check=False)
    assert r.returncode == 1 and "kms_strict" in r.stderr.decode(), r.stderr

    # verify catches a flipped byte, after the KMS gave the key.
    body, meta = files["single"]
    raw = bytearray(body.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "bad").write_bytes(bytes(raw))
    r = run("verify", tmp_path / "bad", "--metadata-file", meta, "--bucket", bucket, "--object-key", "single", *kms, check=False)
    assert r.returncode == 1 and "FAILED" in r.stderr.decode() and "chunk_auth_failed" in r.stderr.decode(), r.stderr

    # The blob presented under another name: the KMS refuses the context.
    r = run("verify", body, "--metadata-file", meta, "--bucket", bucket, "--object-key", "other", *kms, check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and "unwrap_failed" in err and '"other"' in err and "InvalidCiphertextException" in err, err
    r = run("decrypt", body, "--metadata-file", meta, "--bucket", "another-bucket", "--object-key", "single", *kms, check=False)
    assert r.returncode == 1 and "unwrap_failed" in r.stderr.decode() and r.stdout == b"", r.stderr

    # `get` restores the bucket, asking the KMS per object with its own name.
    restored = tmp_path / "restored"
    r = run("get", f"s3://{bucket}", *kms, "-o", restored)
    for key, data in objects.items():
        assert (restored / key).read_bytes() == data, key
    assert r.stdout.decode().rstrip().endswith("3 written, 0 failed; last key: single")

    # Stored bytes and metadata moved to another key: unreadable under the
    # new name (as through the gateway), readable under the one it was written under.
    backend_s3.put_object(Bucket=bucket, Key="moved", Body=body.read_bytes(), Metadata=json.loads(meta.read_text())["Metadata"])
    r = run("decrypt", f"s3://{bucket}/moved", *kms, check=False)
    assert r.returncode == 1 and "unwrap_failed" in r.stderr.decode() and '"moved"' in r.stderr.decode(), r.stderr
    assert run("decrypt", f"s3://{bucket}/moved", "--bucket", bucket, "--object-key", "single", *kms).stdout == objects["single"]

    # rewrap leaves strict objects alone (the KMS holds their keys) and does not fail.
    with_kek = write_config(tmp_path / "with-kek.json", {**gateway.filter_config(), "keys": [{"id": "k2026", "key_hex": NEW}]})
    before = {key: backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"] for key in [*objects, "moved"]}
    r = run("rewrap", f"s3://{bucket}", "--config", with_kek)
    out = r.stdout.decode()
    assert out.count("strict KMS object, its data key is the KMS's (nothing to rewrap), left alone: ") == len(objects) + 1, out
    assert "0 rewrapped" in out and f"{len(objects) + 1} held by the KMS" in out and "0 failed" in out, out
    for key, envelope in before.items():
        assert backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"] == envelope, key
