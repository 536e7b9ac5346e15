"""Walking skeleton, end to end: real Envoy + the s3crypt filter + s3s-fs
(which checks SigV4, payload hashes and checksums itself), with boto3 in its
default settings, awscli and raw HTTP.

What is checked on every object: the client gets its bytes back, HEAD
reports the plaintext size, the backend holds ciphertext of the size FORMAT.md
gives, and an independent decoder (s3crypt_format.py, written from FORMAT.md)
decrypts the stored bytes with the stored envelope.
"""

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway  # noqa: E402
import s3crypt_format  # noqa: E402

KEY_HEX = "7f" * 32
OTHER_KEY_HEX = "80" * 32
CHUNK = 65536
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024, 50 * 1024 * 1024]
BUCKET = "skeleton"


def plugin(key_hex=KEY_HEX, **extra):
    config = {"keys": [{"id": "main", "key_hex": key_hex}]}
    config.update(extra)
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One backend, the main gateway, and a client for each."""
    root = tmp_path_factory.mktemp("skeleton")
    backend = gateway.LocalBackend(root / "data", log=root / "s3s-fs.log").start()
    gw = gateway.Gateway(plugin(), backend=backend, run_dir=root / "gw", listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    direct = backend.client()
    direct.create_bucket(Bucket=BUCKET)
    yield {"root": root, "backend": backend, "gw": gw, "direct": direct, "data": root / "data"}
    gw.stop()
    backend.stop()


def client(gw, **config):
    """boto3 with default settings, pointed at the gateway."""
    return boto3.session.Session().client(
        "s3", endpoint_url=gw.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(**config) if config else None)


def stored_object(world, key):
    """The raw stored bytes and the envelope, as the backend has them."""
    head = world["direct"].head_object(Bucket=BUCKET, Key=key)
    return (world["data"] / BUCKET / key).read_bytes(), head["Metadata"].get("s3crypt")


def assert_stored_encrypted(world, key, plaintext):
    stored, envelope = stored_object(world, key)
    assert envelope, "no envelope in the stored metadata"
    assert len(stored) == s3crypt_format.ciphertext_len(len(plaintext), CHUNK)
    if len(plaintext) >= 16:  # shorter runs turn up in random bytes by chance
        assert plaintext[:64] not in stored, "plaintext visible in the stored object"
    assert s3crypt_format.decrypt_object(bytes.fromhex(KEY_HEX), envelope, stored) == plaintext


def raw_request(gw, method, path, body=b"", headers=None):
    """An HTTP request without SigV4 (client authentication is a later issue)."""
    host, port = gw.endpoint.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, conn


@pytest.mark.parametrize("size", SIZES)
def test_boto3_put_get_head_round_trip(world, size):
    s3 = client(world["gw"])
    key = f"boto3/obj-{size}"
    data = os.urandom(size)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["ContentLength"] == size
    assert got["Body"].read() == data
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == size
    assert "s3crypt" not in head["Metadata"], "the gateway's envelope leaked to the client"
    assert not any(k.startswith("x-amz-checksum") for k in head["ResponseMetadata"]["HTTPHeaders"])
    assert_stored_encrypted(world, key, data)


def test_boto3_keeps_user_metadata_and_content_type(world):
    s3 = client(world["gw"])
    s3.put_object(Bucket=BUCKET, Key="meta", Body=b"hello", Metadata={"owner": "ops"}, ContentType="text/plain")
    head = s3.head_object(Bucket=BUCKET, Key="meta")
    assert head["Metadata"] == {"owner": "ops"}
    assert head["ContentType"] == "text/plain"


def test_boto3_checksum_validation_on_get(world):
    """boto3 asks for response checksums by default; the ciphertext's must never be shown."""
    s3 = client(world["gw"], response_checksum_validation="when_supported")
    data = os.urandom(200_000)
    put = s3.put_object(Bucket=BUCKET, Key="cksum", Body=data, ChecksumAlgorithm="SHA256")
    want = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert put["ChecksumSHA256"] == want
    got = s3.get_object(Bucket=BUCKET, Key="cksum", ChecksumMode="ENABLED")
    # The plaintext checksum sent at upload comes back, and boto3 checks it.
    assert got["ChecksumSHA256"] == want
    assert got["Body"].read() == data
    assert s3.head_object(Bucket=BUCKET, Key="cksum", ChecksumMode="ENABLED")["ChecksumSHA256"] == want
    # A range has no whole-object checksum.
    ranged = s3.get_object(Bucket=BUCKET, Key="cksum", ChecksumMode="ENABLED", Range="bytes=0-9")
    assert "ChecksumSHA256" not in ranged and ranged["Body"].read() == data[:10]
    # The stored metadata holds no checksum of the ciphertext.
    stored = world["direct"].head_object(Bucket=BUCKET, Key="cksum", ChecksumMode="ENABLED")
    assert stored.get("ChecksumSHA256") != want


def test_etag_is_plaintext_md5_when_client_sent_content_md5(world):
    import base64
    s3 = client(world["gw"])
    data = os.urandom(100_000)
    md5 = hashlib.md5(data)
    put = s3.put_object(Bucket=BUCKET, Key="md5", Body=data, ContentMD5=base64.b64encode(md5.digest()).decode())
    assert put["ETag"] == f'"{md5.hexdigest()}"'
    assert s3.head_object(Bucket=BUCKET, Key="md5")["ETag"] == f'"{md5.hexdigest()}"'
    got = s3.get_object(Bucket=BUCKET, Key="md5")
    assert got["ETag"] == f'"{md5.hexdigest()}"'


def test_range_reads(world):
    s3 = client(world["gw"])
    data = os.urandom(3 * CHUNK + 123)
    s3.put_object(Bucket=BUCKET, Key="ranged", Body=data)
    n = len(data)
    for spec, (a, b) in {
        "bytes=0-0": (0, 0), "bytes=5-10": (5, 10), f"bytes={CHUNK - 2}-{CHUNK + 2}": (CHUNK - 2, CHUNK + 2),
        f"bytes={n - 1}-{n - 1}": (n - 1, n - 1), f"bytes={CHUNK}-": (CHUNK, n - 1), "bytes=-7": (n - 7, n - 1),
        f"bytes=10-{n + 1000}": (10, n - 1), f"bytes=-{CHUNK + 5}": (n - CHUNK - 5, n - 1),
    }.items():
        got = s3.get_object(Bucket=BUCKET, Key="ranged", Range=spec)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, spec
        assert got["ContentRange"] == f"bytes {a}-{b}/{n}", spec
        assert got["ContentLength"] == b - a + 1, spec
        assert got["Body"].read() == data[a:b + 1], spec
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="ranged", Range=f"bytes={n}-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_awscli_round_trip(world, tmp_path):
    gw = world["gw"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", gw.endpoint]
    for size in [0, 1, CHUNK + 1, 5 * 1024 * 1024, 50 * 1024 * 1024]:
        src = tmp_path / f"in-{size}"
        src.write_bytes(os.urandom(size))
        # `s3 cp` uploads 50 MiB as a multipart upload; `s3api put-object` always as one PUT.
        uploads = [(f"awscli/cp-{size}", ["s3", "cp", str(src), f"s3://{BUCKET}/awscli/cp-{size}"])]
        if size >= 5 * 1024 * 1024:
            uploads.append((f"awscli/put-{size}", ["s3api", "put-object", "--bucket", BUCKET, "--key", f"awscli/put-{size}", "--body", str(src)]))
        for key, command in uploads:
            subprocess.run(aws + command, env=env, check=True, capture_output=True)
            head = json.loads(subprocess.run(aws + ["s3api", "head-object", "--bucket", BUCKET, "--key", key],
                                             env=env, check=True, capture_output=True, text=True).stdout)
            assert head["ContentLength"] == size
            dst = tmp_path / "out"
            # `s3 cp` downloads large objects with parallel ranged GETs.
            subprocess.run(aws + ["s3", "cp", f"s3://{BUCKET}/{key}", str(dst)], env=env, check=True, capture_output=True)
            assert dst.read_bytes() == src.read_bytes(), key
            assert_stored_encrypted(world, key, src.read_bytes())


def test_flipped_byte_fails_without_releasing_the_damaged_chunk(world):
    s3 = client(world["gw"])
    data = os.urandom(4 * CHUNK)
    s3.put_object(Bucket=BUCKET, Key="flip", Body=data)
    path = world["data"] / BUCKET / "flip"
    stored = bytearray(path.read_bytes())
    damaged_chunk = 2
    stored[damaged_chunk * (CHUNK + 40) + 100] ^= 0x01
    path.write_bytes(bytes(stored))
    before = world["gw"].stats("wasmcustom.").get("wasmcustom.s3crypt_auth_failures", 0)

    resp, conn = raw_request(world["gw"], "GET", f"/{BUCKET}/flip")
    assert resp.status == 200
    assert int(resp.getheader("content-length")) == len(data)
    try:
        received = resp.read()
        pytest.fail(f"a damaged object was delivered as complete ({len(received)} bytes)")
    except http.client.IncompleteRead as e:
        received = e.partial
    except ConnectionError:
        received = b""
    conn.close()
    assert len(received) <= damaged_chunk * CHUNK, "plaintext of the damaged chunk was released"
    assert bytes(received) == data[:len(received)]
    # boto3 sees an error too, never a short body passed off as complete.
    with pytest.raises(Exception):
        body = s3.get_object(Bucket=BUCKET, Key="flip")["Body"].read()
        assert len(body) == len(data)  # unreachable if the stream is reset
    time.sleep(0.5)
    assert world["gw"].stats("wasmcustom.")["wasmcustom.s3crypt_auth_failures"] > before


def test_object_cut_at_chunk_boundary_is_refused_before_any_body(world):
    s3 = client(world["gw"])
    data = os.urandom(3 * CHUNK)
    s3.put_object(Bucket=BUCKET, Key="cut", Body=data)
    path = world["data"] / BUCKET / "cut"
    path.write_bytes(path.read_bytes()[: 2 * (CHUNK + 40)])
    resp, conn = raw_request(world["gw"], "GET", f"/{BUCKET}/cut")
    body = resp.read()
    conn.close()
    assert resp.status == 500
    assert b"<Code>InternalError</Code>" in body and b"integrity" in body
    assert data[:100] not in body


def test_wrong_key_gives_a_clear_error(world):
    s3 = client(world["gw"])
    s3.put_object(Bucket=BUCKET, Key="secret", Body=b"top secret")
    other = gateway.Gateway(plugin(OTHER_KEY_HEX), backend=world["backend"], run_dir=world["root"] / "gw-wrong",
                            listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    try:
        with pytest.raises(ClientError) as e:
            client(other).get_object(Bucket=BUCKET, Key="secret")
        err = e.value.response["Error"]
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err["Code"] == "AccessDenied" and "does not decrypt" in err["Message"]
        resp, conn = raw_request(other, "GET", f"/{BUCKET}/secret")
        body = resp.read()
        conn.close()
        assert b"top secret" not in body and b"<Error>" in body
    finally:
        other.stop()
    # Another key id: the error names it.
    renamed = gateway.Gateway({"keys": [{"id": "other", "key_hex": KEY_HEX}]}, backend=world["backend"],
                              run_dir=world["root"] / "gw-renamed", listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    try:
        with pytest.raises(ClientError) as e:
            client(renamed).get_object(Bucket=BUCKET, Key="secret")
        assert '"main"' in e.value.response["Error"]["Message"]
    finally:
        renamed.stop()


def test_plaintext_objects_pass_or_are_refused(world):
    data = os.urandom(70_000)
    world["direct"].put_object(Bucket=BUCKET, Key="legacy", Body=data)
    s3 = client(world["gw"])
    assert s3.get_object(Bucket=BUCKET, Key="legacy")["Body"].read() == data
    assert s3.head_object(Bucket=BUCKET, Key="legacy")["ContentLength"] == len(data)
    for a, b in [(100, 199), (0, len(data) - 1), (len(data) - 1, len(data) - 1)]:
        got = s3.get_object(Bucket=BUCKET, Key="legacy", Range=f"bytes={a}-{b}")
        assert got["Body"].read() == data[a:b + 1] and got["ContentRange"] == f"bytes {a}-{b}/{len(data)}"
    strict = gateway.Gateway(plugin(unencrypted_objects="refuse"), backend=world["backend"],
                             run_dir=world["root"] / "gw-strict", listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    try:
        with pytest.raises(ClientError) as e:
            client(strict).get_object(Bucket=BUCKET, Key="legacy")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        strict.stop()


def test_large_plaintext_objects_read_in_ranges(world, tmp_path):
    """Ranges deep into an object without envelope: awscli and boto3 download
    anything above 8 MiB in ranged parts, where the plaintext offset lies before
    the ciphertext chunk the gateway would ask for. Up to about C² / 40 bytes in
    (100 MiB at C = 64 KiB) the backend range covers both layouts; deeper, the
    gateway asks the backend whether the object has an envelope first."""
    data = os.urandom(20 * 1024 * 1024 + 5)
    world["direct"].put_object(Bucket=BUCKET, Key="legacy-big", Body=data)
    s3 = client(world["gw"])
    n = len(data)
    for a, b in [(8 << 20, (16 << 20) - 1), (CHUNK, CHUNK), (3 * CHUNK + 7, 5 * CHUNK), (n - CHUNK, n - 1)]:
        got = s3.get_object(Bucket=BUCKET, Key="legacy-big", Range=f"bytes={a}-{b}")
        assert got["ContentRange"] == f"bytes {a}-{b}/{n}"
        assert got["Body"].read() == data[a:b + 1], (a, b)
    assert s3.get_object(Bucket=BUCKET, Key="legacy-big", Range=f"bytes={16 << 20}-")["Body"].read() == data[16 << 20:]
    out = tmp_path / "legacy-big"
    s3.download_file(BUCKET, "legacy-big", str(out))
    assert out.read_bytes() == data
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    out.unlink()
    subprocess.run([str(Path(sys.executable).parent / "aws"), "--endpoint-url", world["gw"].endpoint, "s3", "cp",
                    f"s3://{BUCKET}/legacy-big", str(out)], env=env, check=True, capture_output=True)
    assert out.read_bytes() == data
    # With 16 KiB chunks the bound is 16384² / 40 bytes (6.4 MiB): past it the
    # gateway looks at the object first, for plaintext and sealed objects alike.
    small = gateway.Gateway(plugin(chunk_size=16384), backend=world["backend"], run_dir=world["root"] / "gw-16k",
                            listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    try:
        s3 = client(small)
        assert s3.get_object(Bucket=BUCKET, Key="legacy-big", Range="bytes=1048576-1048600")["Body"].read() == data[1048576:1048601]
        for a, b in [(8 << 20, (8 << 20) + 10), (n - 100, n - 1)]:
            got = s3.get_object(Bucket=BUCKET, Key="legacy-big", Range=f"bytes={a}-{b}")
            assert got["ContentRange"] == f"bytes {a}-{b}/{n}"
            assert got["Body"].read() == data[a:b + 1], (a, b)
        assert s3.get_object(Bucket=BUCKET, Key="legacy-big", Range=f"bytes={12 << 20}-")["Body"].read() == data[12 << 20:]
        # Seen once, the object's layout spares the HEAD: one backend request.
        before = small.stats("cluster.s3_backend.upstream_rq_total")
        assert s3.get_object(Bucket=BUCKET, Key="legacy-big", Range=f"bytes={10 << 20}-{(10 << 20) + 4}")["Body"].read() == data[10 << 20:(10 << 20) + 5]
        after = small.stats("cluster.s3_backend.upstream_rq_total")
        assert after["cluster.s3_backend.upstream_rq_total"] - before["cluster.s3_backend.upstream_rq_total"] == 1
        s3.put_object(Bucket=BUCKET, Key="sealed-16k", Body=data)
        assert stored_object(world, "sealed-16k")[1]
        for a, b in [(8 << 20, (8 << 20) + 10), ((12 << 20) + 3, (14 << 20) + 5), (n - 1, n - 1)]:
            got = s3.get_object(Bucket=BUCKET, Key="sealed-16k", Range=f"bytes={a}-{b}")
            assert got["ContentRange"] == f"bytes {a}-{b}/{n}"
            assert got["Body"].read() == data[a:b + 1], (a, b)
        assert s3.get_object(Bucket=BUCKET, Key="legacy-big")["Body"].read() == data
        # The gateway remembers each object's layout: replaced behind its back
        # (plaintext <-> sealed), a read may fail once, never gives wrong bytes.
        sealed_bytes, envelope = stored_object(world, "sealed-16k")
        world["direct"].put_object(Bucket=BUCKET, Key="legacy-big", Body=sealed_bytes, Metadata={"s3crypt": envelope})
        world["direct"].put_object(Bucket=BUCKET, Key="sealed-16k", Body=data)
        no_retry = client(small, retries={"total_max_attempts": 1})
        for key in ("legacy-big", "sealed-16k"):
            for attempt in range(2):
                try:
                    got = no_retry.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={8 << 20}-{(9 << 20) - 1}")
                except ClientError as e:
                    assert attempt == 0 and e.response["Error"]["Code"] == "InternalError", e
                    continue
                assert got["Body"].read() == data[8 << 20:9 << 20], (key, attempt)
                break
            else:
                raise AssertionError(f"{key}: no read succeeded")
        # Written through the gateway: known at once.
        s3.put_object(Bucket=BUCKET, Key="sealed-16k", Body=data)
        assert no_retry.get_object(Bucket=BUCKET, Key="sealed-16k", Range=f"bytes={8 << 20}-{(8 << 20) + 9}")["Body"].read() == data[8 << 20:(8 << 20) + 10]
        # A gateway configured with another chunk size: its first range into the
        # object may fail (an SDK retries it), then it reads with the object's own.
        other = client(world["gw"], retries={"total_max_attempts": 1})
        for attempt in range(2):
            try:
                got = other.get_object(Bucket=BUCKET, Key="sealed-16k", Range="bytes=100000-300000")
            except ClientError as e:
                assert attempt == 0 and e.response["Error"]["Code"] == "InternalError", e
                continue
            assert got["Body"].read() == data[100000:300001], attempt
            break
        else:
            raise AssertionError("no read succeeded")
        for a, b in [(0, 10), (5 << 20, (5 << 20) + 70000), (n - 20000, n - 1), (12 << 20, None)]:
            got = other.get_object(Bucket=BUCKET, Key="sealed-16k", Range=f"bytes={a}-{'' if b is None else b}")
            assert got["Body"].read() == data[a:None if b is None else b + 1], (a, b)
        out = tmp_path / "sealed-16k"
        client(world["gw"]).download_file(BUCKET, "sealed-16k", str(out))
        assert out.read_bytes() == data
    finally:
        small.stop()


def absent(world, key):
    try:
        world["direct"].head_object(Bucket=BUCKET, Key=key)
        return False
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize("header,value,code", [
    ("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==", "BadDigest"),
    ("x-amz-checksum-crc32", "AAAAAA==", "BadDigest"),
    ("x-amz-checksum-sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "BadDigest"),
    ("x-amz-content-sha256", "0" * 64, "XAmzContentSHA256Mismatch"),
    ("x-amz-checksum-crc32", "not base64", "InvalidRequest"),
    ("Content-MD5", "short", "InvalidDigest"),
])
def test_plaintext_digest_mismatch_stores_nothing(world, header, value, code):
    key = f"bad-digest-{header}-{code}"
    body = os.urandom(3 * CHUNK + 5)  # several chunks go upstream before the check
    resp, conn = raw_request(world["gw"], "PUT", f"/{BUCKET}/{key}", body, {header: value})
    text = resp.read()
    conn.close()
    assert resp.status == 400, text
    assert f"<Code>{code}</Code>".encode() in text
    time.sleep(0.3)
    assert absent(world, key), "a partial or unverified object was stored"


def test_correct_digests_are_accepted(world):
    import base64
    body = os.urandom(CHUNK + 3)
    headers = {
        "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    resp, conn = raw_request(world["gw"], "PUT", f"/{BUCKET}/good-digest", body, headers)
    resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("x-amz-checksum-sha256") == headers["x-amz-checksum-sha256"]
    assert_stored_encrypted(world, "good-digest", body)


def test_chunked_upload_without_length_gets_411(world):
    host, port = world["gw"].endpoint.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("PUT", f"/{BUCKET}/chunked", body=iter([b"abc", b"def"]), encode_chunked=True)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    assert resp.status == 411 and b"<Code>MissingContentLength</Code>" in text
    assert absent(world, "chunked")


def test_unsupported_operations_are_refused_not_passed(world):
    for method, path, headers in [("POST", f"/{BUCKET}", {}),
                                  ("PUT", f"/{BUCKET}/mpu?partNumber=1&uploadId=x", {"x-amz-copy-source": f"/{BUCKET}/meta"})]:
        resp, conn = raw_request(world["gw"], method, path, b"x" * 10, headers)
        text = resp.read()
        conn.close()
        assert resp.status == 501 and b"<Code>NotImplemented</Code>" in text, (method, path)
    # A part for an upload the gateway did not start would be stored in plaintext.
    upload = world["direct"].create_multipart_upload(Bucket=BUCKET, Key="foreign")["UploadId"]
    resp, conn = raw_request(world["gw"], "PUT", f"/{BUCKET}/foreign?partNumber=1&uploadId={upload}", b"x" * 10)
    text = resp.read()
    conn.close()
    assert resp.status == 404 and b"<Code>NoSuchUpload</Code>" in text
    assert not world["direct"].list_parts(Bucket=BUCKET, Key="foreign", UploadId=upload).get("Parts")


def test_client_cannot_forge_the_envelope(world):
    s3 = client(world["gw"])
    s3.put_object(Bucket=BUCKET, Key="forged", Body=b"data", Metadata={"s3crypt": "v=1;forged"})
    _, envelope = stored_object(world, "forged")
    assert "forged" not in envelope
    assert s3.get_object(Bucket=BUCKET, Key="forged")["Body"].read() == b"data"


def test_listing_and_delete_pass_through(world):
    s3 = client(world["gw"])
    s3.put_object(Bucket=BUCKET, Key="list/a", Body=b"a")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="list/")["Contents"]]
    assert keys == ["list/a"]
    s3.delete_object(Bucket=BUCKET, Key="list/a")
    assert absent(world, "list/a")


def test_counters_on_prometheus_page(world):
    s3 = client(world["gw"])
    s3.put_object(Bucket=BUCKET, Key="counted", Body=b"x" * 1000)
    s3.get_object(Bucket=BUCKET, Key="counted")["Body"].read()
    time.sleep(0.5)
    import urllib.request
    text = urllib.request.urlopen(world["gw"].admin_url + "/stats/prometheus").read().decode()
    # Envoy exports its custom "wasmcustom" namespace without the prefix.
    values = {}
    for line in text.splitlines():
        if line.startswith("s3crypt_"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    for name in ["objects_encrypted", "bytes_encrypted", "objects_decrypted", "bytes_decrypted"]:
        assert values.get(f"s3crypt_{name}", 0) > 0, name
    assert "s3crypt_auth_failures" in values and "s3crypt_requests_refused" in values


@pytest.mark.parametrize("config,field", [
    ({"keys": [{"id": "main", "key_hex": "abcd"}]}, "keys[0].key_hex"),
    ({"keys": [{"id": "main", "key_hex": KEY_HEX}], "chunk_size": 1000}, "chunk_size"),
    ({"keys": []}, "keys"),
    ({"keys": [{"id": "main", "key_hex": KEY_HEX}], "chunk_size": "65536"}, "chunk_size"),
    ({"keys": [{"id": "main", "key_hex": KEY_HEX, "pbkdf2_salts": "x"}]}, "keys[0].pbkdf2_salts"),
])
def test_bad_config_refuses_to_start(world, config, field):
    gw = gateway.Gateway(config, backend=world["backend"], run_dir=world["root"] / "gw-bad",
                         listen="127.0.0.1:0", admin="127.0.0.1:0")
    started = False
    try:
        gw.start(timeout=30)
        started = True
        log = gw.log.read_text(errors="replace")
    except gateway.GatewayError as e:  # Envoy refuses the config (validate or start)
        log = str(e) + (gw.log.read_text(errors="replace") if gw.log.exists() else "")
    try:
        assert f"invalid configuration: {field}:" in log, log[-2000:]
        if started:  # if Envoy came up at all, it must refuse, never forward
            resp, conn = raw_request(gw, "PUT", f"/{BUCKET}/must-not-exist", b"plaintext")
            resp.read()
            conn.close()
            assert resp.status >= 500
            assert absent(world, "must-not-exist")
    finally:
        gw.stop()


def test_copy_object_always_decrypts(world):
    s3 = client(world["gw"])
    data = os.urandom(150_000)
    md5 = hashlib.md5(data)
    s3.put_object(Bucket=BUCKET, Key="copy-src", Body=data, Metadata={"a": "1"}, ContentType="text/x-src",
                  ContentMD5=base64.b64encode(md5.digest()).decode())
    src_etag = s3.head_object(Bucket=BUCKET, Key="copy-src")["ETag"]
    assert src_etag == f'"{md5.hexdigest()}"'
    # Metadata COPY: the envelope travels with the body.
    r = s3.copy_object(Bucket=BUCKET, Key="copy-keep", CopySource={"Bucket": BUCKET, "Key": "copy-src"})
    assert r["CopyObjectResult"]["ETag"] == src_etag
    got = s3.get_object(Bucket=BUCKET, Key="copy-keep")
    assert got["Body"].read() == data and got["Metadata"] == {"a": "1"}
    # Metadata REPLACE: the gateway carries the envelope over.
    s3.copy_object(Bucket=BUCKET, Key="copy-replace", CopySource={"Bucket": BUCKET, "Key": "copy-src"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-new")
    got = s3.get_object(Bucket=BUCKET, Key="copy-replace")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"b": "2"} and got["ContentType"] == "text/x-new"
    assert_stored_encrypted(world, "copy-replace", data)
    # Copy conditions are about the ETag the client sees.
    s3.copy_object(Bucket=BUCKET, Key="copy-cond", CopySource={"Bucket": BUCKET, "Key": "copy-src"}, CopySourceIfMatch=src_etag)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=BUCKET, Key="copy-cond2", CopySource={"Bucket": BUCKET, "Key": "copy-src"}, CopySourceIfNoneMatch=src_etag)
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=BUCKET, Key="copy-missing", CopySource={"Bucket": BUCKET, "Key": "no-such-key"})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # A multipart source.
    big = os.urandom(6 * 1024 * 1024)
    from boto3.s3.transfer import TransferConfig
    import io
    s3.upload_fileobj(io.BytesIO(big), BUCKET, "copy-mp-src", Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
    s3.copy_object(Bucket=BUCKET, Key="copy-mp", CopySource={"Bucket": BUCKET, "Key": "copy-mp-src"}, MetadataDirective="REPLACE")
    assert s3.get_object(Bucket=BUCKET, Key="copy-mp")["Body"].read() == big
