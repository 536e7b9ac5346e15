"""Keys held by a KMS (moto's KMS server, a real KMS API, behind an Envoy
cluster that signs for service kms).

* KMS-held KEKs: decrypted once per VM at start-up, never per object; a KMS
  that cannot answer keeps the gateway closed.
* Strict mode (`kms_strict`): every object's data key is made by
  GenerateDataKey and unwrapped by Decrypt, with the bucket and key in the
  encryption context; unwrapped keys are cached per VM; a KMS that cannot
  answer gives the client an S3 error and nothing is stored."""

import base64
import os
import socket
import subprocess
import sys
import time

import boto3
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import s3crypt_format  # noqa: E402

from conftest import gw  # noqa: E402  (the launcher module, scripts/gateway.py)


def start_moto(run_dir):
    """A moto server on a free loopback port: (process, URL)."""
    port = gw.free_port()
    log = open(run_dir / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("moto server did not start")


def stop_moto(proc):
    proc.terminate()
    proc.wait(10)


def kms_client(url):
    return boto3.client("kms", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory):
    proc, url = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    stop_moto(proc)


@pytest.fixture(scope="module")
def kms_key(kms_server):
    kms = boto3.client("kms", endpoint_url=kms_server, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    key_id = kms.create_key(Description="s3crypt KEK wrapping key")["KeyMetadata"]["KeyId"]
    kek = os.urandom(32)
    blob = kms.encrypt(KeyId=key_id, Plaintext=kek, EncryptionContext={"purpose": "s3crypt-kek"})["CiphertextBlob"]
    return kek, base64.b64encode(blob).decode(), key_id


def kms_config(blob, authority, **extra):
    kms = {"ciphertext_blob": blob, "authority": authority, "encryption_context": {"purpose": "s3crypt-kek"}}
    kms.update(extra)
    return {"keys": [{"id": "kms-2026", "kms": kms}]}


def test_kms_held_key_encrypts_and_decrypts(start_gateway, make_s3, new_bucket, backend_s3, data_dir, kms_server, kms_key):
    kek, blob, key_id = kms_key
    authority = kms_server.split("//")[1]
    g = start_gateway(kms_config(blob, authority, key_id=key_id), kms=kms_server)
    s3 = make_s3(g)
    bucket = new_bucket("kms")
    deadline = time.time() + 20
    while True:  # the first requests may come before the KMS answered
        try:
            s3.put_object(Bucket=bucket, Key="obj", Body=b"under a KMS-held key")
            break
        except Exception:  # noqa: BLE001
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"under a KMS-held key"
    envelope = backend_s3.head_object(Bucket=bucket, Key="obj")["Metadata"]["s3crypt"]
    assert s3crypt_format.parse_envelope(envelope)["key_id"] == "kms-2026"
    stored = (data_dir / bucket / "obj").read_bytes()
    assert s3crypt_format.decrypt_object(kek, envelope, stored) == b"under a KMS-held key"
    # The KMS is off the data path: a burst of objects makes no KMS call.
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"burst-{i}", Body=b"x")
    log = g.log.read_text(errors="replace")
    assert log.count("decrypted by the KMS") <= 4  # once per VM (main thread + workers)


def wait_for_log(g, text, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if g.log.exists() and text in g.log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    pytest.fail(f"{text!r} not in the Envoy log")


def test_kms_outage_at_startup_fails_closed(start_gateway, make_s3, new_bucket, kms_key):
    _, blob, _ = kms_key
    dead = f"127.0.0.1:{gw.free_port()}"  # nothing listens there
    g = start_gateway(kms_config(blob, dead), kms=f"http://{dead}")
    bucket = new_bucket("kms-down")
    wait_for_log(g, "refusing all requests")
    with pytest.raises(Exception) as e:
        make_s3(g).put_object(Bucket=bucket, Key="never", Body=b"plaintext must not pass")
    assert "503" in str(e.value) or "ServiceUnavailable" in str(e.value)


def test_kms_refusing_the_blob_fails_closed(start_gateway, make_s3, new_bucket, kms_server):
    authority = kms_server.split("//")[1]
    g = start_gateway(kms_config(base64.b64encode(os.urandom(100)).decode(), authority), kms=kms_server)
    wait_for_log(g, "KMS refused Decrypt")
    with pytest.raises(Exception):
        make_s3(g).list_objects_v2(Bucket=new_bucket("kms-bad"))


# ---------------------------------------------------------------------------
# Strict mode

MiB = 1024 * 1024


def strict_config(url, key_id, **extra):
    strict = {"key_id": key_id, "authority": url.split("//")[1]}
    strict.update(extra)
    return {"kms_strict": strict}


@pytest.fixture(scope="module")
def strict_key(kms_server):
    return kms_client(kms_server).create_key(Description="s3crypt data keys")["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def strict_gateway(start_gateway, kms_server, strict_key):
    return start_gateway(strict_config(kms_server, strict_key), kms=kms_server)


def kms_stats(g):
    stats = g.stats("wasmcustom.s3crypt_kms")
    return {name.rpartition("_kms_")[2]: value for name, value in stats.items()}


def s3_error(call):
    """The S3 error (HTTP status, code) a call ends with."""
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def backend_keys(backend_s3, bucket):
    return sorted(o["Key"] for o in backend_s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def backend_uploads(data_dir, bucket):
    """Multipart uploads s3s-fs holds for a bucket (it has no ListMultipartUploads):
    one metadata file per upload, named after the bucket and key."""
    name = base64.urlsafe_b64encode(bucket.encode()).decode().rstrip("=")
    return list(data_dir.glob(f".bucket-{name}.object-*.upload-*"))


def test_strict_put_get_range_and_the_format(strict_gateway, make_s3, new_bucket, backend_s3, data_dir, kms_server):
    s3 = make_s3(strict_gateway)
    bucket = new_bucket("strict")
    body = os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="dir/obj", Body=body)
    assert s3.get_object(Bucket=bucket, Key="dir/obj")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="dir/obj", Range="bytes=70000-140000")["Body"].read() == body[70000:140001]
    assert s3.head_object(Bucket=bucket, Key="dir/obj")["ContentLength"] == len(body)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""

    # What is stored decrypts by FORMAT.md alone, with the data key the KMS
    # gives for this bucket and key, and for no other.
    envelope = backend_s3.head_object(Bucket=bucket, Key="dir/obj")["Metadata"]["s3crypt"]
    env = s3crypt_format.parse_envelope(envelope)
    assert env["kms_blob"] and env["wrapped"] is None and env["key_id"] == "kms"
    kms = kms_client(kms_server)
    context = s3crypt_format.kms_context(bucket, "dir/obj", envelope)
    dek = kms.decrypt(CiphertextBlob=env["kms_blob"], EncryptionContext=context)["Plaintext"]
    stored = (data_dir / bucket / "dir" / "obj").read_bytes()
    assert body not in stored
    assert s3crypt_format.decrypt_object(None, envelope, stored, dek=dek) == body
    for other in ({**context, "key": "dir/other"}, {**context, "bucket": "elsewhere"}, {**context, "s3crypt": context["s3crypt"].replace("n=200000", "n=1")}):
        with pytest.raises(Exception, match="InvalidCiphertext"):
            kms.decrypt(CiphertextBlob=env["kms_blob"], EncryptionContext=other)


def test_strict_large_put_while_the_kms_is_asked(strict_gateway, make_s3, new_bucket):
    """Body pieces that arrive while GenerateDataKey runs are held, then encrypted."""
    s3 = make_s3(strict_gateway)
    bucket = new_bucket("strict-large")
    body = os.urandom(6 * MiB + 123)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == body


def test_strict_multipart(strict_gateway, make_s3, new_bucket, backend_s3, data_dir, kms_server):
    s3 = make_s3(strict_gateway)
    bucket = new_bucket("strict-mp")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    assert upload.startswith("s3k1")
    assert len(backend_uploads(data_dir, bucket)) == 1  # what the checks below rely on
    parts = [os.urandom(5 * MiB), os.urandom(70_000)]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n + 1} for n, e in enumerate(etags)]})
    body = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 10}")["Body"].read() == body[5 * MiB - 10:5 * MiB + 11]
    envelope = backend_s3.head_object(Bucket=bucket, Key="mp")["Metadata"]["s3crypt"]
    env = s3crypt_format.parse_envelope(envelope)
    dek = kms_client(kms_server).decrypt(CiphertextBlob=env["kms_blob"], EncryptionContext=s3crypt_format.kms_context(bucket, "mp", envelope))["Plaintext"]
    assert s3crypt_format.decrypt_object(None, envelope, (data_dir / bucket / "mp").read_bytes(), dek=dek) == body

    # An upload id moved onto another upload of the same object does not encrypt parts.
    other = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    token, _, backend_id = upload.partition(".")
    moved = token + "." + other.partition(".")[2]
    assert s3_error(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=moved, PartNumber=1, Body=b"x"))[1] == "NoSuchUpload"
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=other)


def test_strict_envelope_moved_to_another_key_is_refused(strict_gateway, make_s3, new_bucket, backend_s3, data_dir):
    s3 = make_s3(strict_gateway, retries={"total_max_attempts": 1})
    bucket = new_bucket("strict-moved")
    s3.put_object(Bucket=bucket, Key="a", Body=b"secret a")
    # Someone with backend access moves the stored object and its metadata.
    stored = (data_dir / bucket / "a").read_bytes()
    metadata = backend_s3.head_object(Bucket=bucket, Key="a")["Metadata"]
    backend_s3.put_object(Bucket=bucket, Key="b", Body=stored, Metadata=metadata)
    assert s3_error(lambda: s3.get_object(Bucket=bucket, Key="b")) == (403, "AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"secret a"
    # CopyObject elsewhere would make an unreadable copy: refused; onto itself is fine.
    assert s3_error(lambda: s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "a"})) == (501, "NotImplemented")
    assert "c" not in backend_keys(backend_s3, bucket)
    s3.copy_object(Bucket=bucket, Key="a", CopySource={"Bucket": bucket, "Key": "a"}, MetadataDirective="REPLACE", Metadata={"tag": "x"})
    got = s3.get_object(Bucket=bucket, Key="a")
    assert got["Body"].read() == b"secret a" and got["Metadata"] == {"tag": "x"}


def test_strict_cache_saves_kms_calls(start_gateway, strict_gateway, make_s3, new_bucket, kms_server, strict_key):
    bucket = new_bucket("strict-cache")
    big = os.urandom(5 * MiB + 7)
    writer = make_s3(strict_gateway)
    writer.put_object(Bucket=bucket, Key="obj", Body=b"cached" * 1000)
    writer.put_object(Bucket=bucket, Key="big", Body=big)
    # A fresh gateway (empty cache) on the same backend and KMS.
    fresh = start_gateway(strict_config(kms_server, strict_key, cache_entries=10), kms=kms_server)
    s3 = make_s3(fresh)
    calls = lambda: kms_stats(fresh).get("calls", 0)  # noqa: E731
    hits = lambda: kms_stats(fresh).get("cache_hits", 0)  # noqa: E731
    before = calls()
    # The response waits for Decrypt; megabytes of body arrive meanwhile.
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    assert calls() == before + 1
    assert s3.get_object(Bucket=bucket, Key="obj", Range="bytes=10-20")["Body"].read() == (b"cached" * 1000)[10:21]
    assert calls() == before + 2
    first_hits = hits()
    # Second reads: the data keys come from the VM's cache, no KMS call.
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"cached" * 1000
    assert s3.head_object(Bucket=bucket, Key="obj")["ContentLength"] == 6000
    assert s3.get_object(Bucket=bucket, Key="big", Range="bytes=-100")["Body"].read() == big[-100:]
    assert calls() == before + 2, "a cached data key needs no KMS call"
    assert hits() == first_hits + 3


def test_strict_kms_down_at_start_refuses_writes(start_gateway, make_s3, new_bucket, backend_s3, data_dir):
    dead = f"http://127.0.0.1:{gw.free_port()}"  # nothing listens there
    g = start_gateway(strict_config(dead, "alias/none"), kms=dead)
    s3 = make_s3(g, retries={"total_max_attempts": 1})
    bucket = new_bucket("strict-down")
    assert s3_error(lambda: s3.put_object(Bucket=bucket, Key="never", Body=b"plaintext must not pass")) == (503, "ServiceUnavailable")
    assert s3_error(lambda: s3.create_multipart_upload(Bucket=bucket, Key="never-mp")) == (503, "ServiceUnavailable")
    assert backend_keys(backend_s3, bucket) == []
    assert backend_uploads(data_dir, bucket) == []


def test_strict_kms_down_mid_run(start_gateway, make_s3, new_bucket, backend_s3, data_dir, tmp_path):
    proc, url = start_moto(tmp_path)
    try:
        key_id = kms_client(url).create_key()["KeyMetadata"]["KeyId"]
        g = start_gateway(strict_config(url, key_id), kms=url)
        s3 = make_s3(g, retries={"total_max_attempts": 1})
        bucket = new_bucket("strict-midrun")
        s3.put_object(Bucket=bucket, Key="before", Body=b"written while the KMS answered")
        fresh = start_gateway(strict_config(url, key_id), kms=url)  # holds no data key yet
    finally:
        stop_moto(proc)
    body = os.urandom(300_000)
    assert s3_error(lambda: s3.put_object(Bucket=bucket, Key="after", Body=body)) == (503, "ServiceUnavailable")
    assert s3_error(lambda: s3.create_multipart_upload(Bucket=bucket, Key="after-mp")) == (503, "ServiceUnavailable")
    assert backend_keys(backend_s3, bucket) == ["before"]
    assert backend_uploads(data_dir, bucket) == []
    # A data key this VM already holds still reads; one it does not, not.
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"written while the KMS answered"
    assert s3_error(lambda: make_s3(fresh, retries={"total_max_attempts": 1}).get_object(Bucket=bucket, Key="before")) == (503, "ServiceUnavailable")
    assert kms_stats(g).get("failures", 0) >= 2


def test_strict_mode_reads_older_objects_and_others_refuse_its_objects(start_gateway, gateway, strict_gateway, make_s3, new_bucket, kms_server, strict_key):
    from conftest import TEST_KEY_HEX
    bucket = new_bucket("strict-mixed")
    make_s3(gateway).put_object(Bucket=bucket, Key="old", Body=b"written under a KEK")
    make_s3(strict_gateway).put_object(Bucket=bucket, Key="new", Body=b"written in strict mode")
    # Strict mode with the old KEK beside it reads both kinds.
    config = strict_config(kms_server, strict_key)
    config["keys"] = [{"id": "default", "key_hex": TEST_KEY_HEX}]
    both = make_s3(start_gateway(config, kms=kms_server))
    assert both.get_object(Bucket=bucket, Key="old")["Body"].read() == b"written under a KEK"
    assert both.get_object(Bucket=bucket, Key="new")["Body"].read() == b"written in strict mode"
    # A gateway without kms_strict cannot read strict objects, and says why.
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        make_s3(gateway, retries={"total_max_attempts": 1}).get_object(Bucket=bucket, Key="new")
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert "kms_strict" in e.value.response["Error"]["Message"]


def test_strict_kms_key_errors_are_s3_kms_errors(start_gateway, make_s3, new_bucket, backend_s3, kms_server):
    g = start_gateway(strict_config(kms_server, "alias/no-such-key"), kms=kms_server)
    s3 = make_s3(g, retries={"total_max_attempts": 1})
    bucket = new_bucket("strict-nokey")
    assert s3_error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)) == (400, "KMS.NotFoundException")
    assert backend_keys(backend_s3, bucket) == []


def test_strict_empty_aws_chunked_upload(strict_gateway, make_s3, new_bucket, backend_s3):
    """An empty aws-chunked upload waits for the KMS, then for its trailer:
    a wrong trailer stores nothing; a right one stores the empty object."""
    from test_aws_chunked import absent, chunked_body, send_slowly, unsigned_trailer_headers
    bucket = new_bucket("strict-empty")
    good = chunked_body(b"")
    bad = good.replace(base64.b64encode((0).to_bytes(4, "big")), b"AAAAAQ==")
    assert bad != good
    resp, text = send_slowly(strict_gateway, "PUT", f"/{bucket}/bad", bad, unsigned_trailer_headers(b"", bad))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    assert absent(backend_s3, bucket, "bad")
    resp, text = send_slowly(strict_gateway, "PUT", f"/{bucket}/good", good, unsigned_trailer_headers(b"", good))
    assert resp.status == 200, text
    assert make_s3(strict_gateway).get_object(Bucket=bucket, Key="good")["Body"].read() == b""
