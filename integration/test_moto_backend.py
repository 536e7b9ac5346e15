"""A second S3 implementation behind the gateway: moto's server (PyPI). It
holds keys a file-system backend cannot (`a//b`, `trailing/`) and implements
ListObjectVersions, so those are checked here."""

import base64
import hashlib
import io
import os
import socket
import subprocess
import sys
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import TEST_KEY_HEX, gw

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def moto_gateway(tmp_path_factory, monkeypatch_module):
    port = gw.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    # The gateway re-signs for moto with these (moto accepts any).
    monkeypatch_module.setenv("AWS_ACCESS_KEY_ID", "moto")
    monkeypatch_module.setenv("AWS_SECRET_ACCESS_KEY", "moto")
    g = gw.Gateway({"keys": [{"id": "default", "key_hex": TEST_KEY_HEX}]}, backend=f"http://127.0.0.1:{port}",
                   run_dir=tmp_path_factory.mktemp("moto-gw"), listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    yield g, f"http://127.0.0.1:{port}"
    g.stop()
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_keys_versions_and_multipart_on_moto(moto_gateway, make_s3):
    g, moto_url = moto_gateway
    s3 = make_s3(g)
    direct = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="moto", aws_secret_access_key="moto")
    s3.create_bucket(Bucket="moto-bucket")
    s3.put_bucket_versioning(Bucket="moto-bucket", VersioningConfiguration={"Status": "Enabled"})
    objects = {"a//b": os.urandom(1000), "trailing/": b"", "//lead": os.urandom(70_000), "x/./y": b"dot"}
    for key, body in objects.items():
        s3.put_object(Bucket="moto-bucket", Key=key, Body=body)
    big = os.urandom(9 * MiB)
    s3.upload_fileobj(io.BytesIO(big), "moto-bucket", "big")  # multipart, 8 MiB parts
    s3.put_object(Bucket="moto-bucket", Key="a//b", Body=b"second version")
    objects["a//b"] = b"second version"
    objects["big"] = big
    for key, body in objects.items():
        assert s3.get_object(Bucket="moto-bucket", Key=key)["Body"].read() == body, key
        assert s3.head_object(Bucket="moto-bucket", Key=key)["ContentLength"] == len(body), key
        stored = direct.head_object(Bucket="moto-bucket", Key=key)
        assert "s3crypt" in stored["Metadata"] and stored["ContentLength"] >= len(body)
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="moto-bucket")["Contents"]}
    assert listed == {k: len(v) for k, v in objects.items()}
    versions = s3.list_object_versions(Bucket="moto-bucket")["Versions"]
    sizes = sorted((v["Key"], v["Size"]) for v in versions if v["Key"] == "a//b")
    assert sizes == sorted([("a//b", 1000), ("a//b", len(b"second version"))])
    assert s3.get_object(Bucket="moto-bucket", Key="big", Range="bytes=8388600-8388700")["Body"].read() == big[8388600:8388701]
    # Past the end of an object of whole chunks, the backend itself refuses the
    # chunk-aligned range; its error must not name the stored size or that range.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="moto-bucket", Key="big", Range=f"bytes={len(big)}-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"
    assert "ActualObjectSize" not in e.value.response["Error"] and "RangeRequested" not in e.value.response["Error"], e.value.response["Error"]


def test_conditions_accept_the_etag_a_listing_shows(moto_gateway, make_s3):
    """With Content-MD5 at upload, HEAD shows the plaintext MD5 while listings
    (which carry no metadata) show the opaque ETag: a client may hold either.
    (s3s-fs lists no ETags, hence moto.)"""
    import base64
    import hashlib
    g, _ = moto_gateway
    s3 = make_s3(g)
    s3.create_bucket(Bucket="moto-cond")
    body = b"listed and headed"
    md5 = hashlib.md5(body)
    s3.put_object(Bucket="moto-cond", Key="k", Body=body, ContentMD5=base64.b64encode(md5.digest()).decode())
    headed = s3.head_object(Bucket="moto-cond", Key="k")["ETag"]
    listed = s3.list_objects_v2(Bucket="moto-cond")["Contents"][0]["ETag"]
    assert headed == f'"{md5.hexdigest()}"' and listed != headed
    for etag in (headed, listed):
        assert s3.get_object(Bucket="moto-cond", Key="k", IfMatch=etag)["Body"].read() == body
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="moto-cond", Key="k", IfNoneMatch=etag)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["etag"] == headed


def test_odd_key_copies_and_empty_aws_chunked_uploads_on_moto(moto_gateway, make_s3):
    """Copies (same and across buckets, COPY and REPLACE, onto itself) of keys a
    file-system backend cannot hold; an empty aws-chunked upload with a wrong
    trailer stores nothing on this backend either."""
    from test_aws_chunked import chunked_body, send_slowly, unsigned_trailer_headers
    g, moto_url = moto_gateway
    s3 = make_s3(g)
    direct = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="moto", aws_secret_access_key="moto")
    for name in ("moto-src", "moto-dst"):
        s3.create_bucket(Bucket=name)
    data = os.urandom(70_000)
    for key in ("a//b", "trailing/", "//lead", "sp ace+plus%25/ü/x"):
        s3.put_object(Bucket="moto-src", Key=key, Body=data, ContentType="text/a", Metadata={"a": "1"})
        s3.copy_object(Bucket="moto-dst", Key=key, CopySource={"Bucket": "moto-src", "Key": key})
        s3.copy_object(Bucket="moto-dst", Key=key + ".r", CopySource={"Bucket": "moto-src", "Key": key},
                       MetadataDirective="REPLACE", ContentType="text/r", Metadata={"m": "1"})
        s3.copy_object(Bucket="moto-src", Key=key, CopySource={"Bucket": "moto-src", "Key": key}, MetadataDirective="REPLACE",
                       ContentType="text/b", CacheControl="no-cache", Metadata={"n": "2"})
        for bucket, name, want in (("moto-dst", key, ("text/a", None, {"a": "1"})), ("moto-dst", key + ".r", ("text/r", None, {"m": "1"})),
                                   ("moto-src", key, ("text/b", "no-cache", {"n": "2"}))):
            got = s3.get_object(Bucket=bucket, Key=name)
            assert got["Body"].read() == data, (bucket, name)
            assert (got["ContentType"], got.get("CacheControl"), got["Metadata"]) == want, (bucket, name)
    # The copy's result names the ETag HEAD shows (moto, like S3, puts a
    # namespace on <CopyObjectResult>): here the plaintext MD5.
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket="moto-src", Key="md5", Body=data, ContentMD5=md5)
    copied = s3.copy_object(Bucket="moto-dst", Key="md5", CopySource={"Bucket": "moto-src", "Key": "md5"}, MetadataDirective="REPLACE")
    assert copied["CopyObjectResult"]["ETag"] == s3.head_object(Bucket="moto-dst", Key="md5")["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    good = chunked_body(b"")
    bad = good.replace(b"AAAAAA==", b"AAAAAQ==")
    resp, text = send_slowly(g, "PUT", "/moto-src/empty-bad", bad, unsigned_trailer_headers(b"", bad))
    assert resp.status == 400 and b"BadDigest" in text, text
    resp, text = send_slowly(g, "PUT", "/moto-src/empty-good", good, unsigned_trailer_headers(b"", good))
    assert resp.status == 200 and resp.getheader("x-amz-checksum-crc32") == "AAAAAA==", text
    keys = {o["Key"] for o in direct.list_objects_v2(Bucket="moto-src")["Contents"]}
    assert "empty-good" in keys and "empty-bad" not in keys
    assert s3.head_object(Bucket="moto-src", Key="empty-good", ChecksumMode="ENABLED")["ChecksumCRC32"] == "AAAAAA=="
