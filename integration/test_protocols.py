"""Odd keys, batch deletes, HTTP/2 clients and Expect: 100-continue through
the gateway (the backend's own key handling is the reference)."""

import hashlib
import http.client
import os
import subprocess

import pytest

ODD_KEYS = [
    "dir with space/a+b%20c ü.txt", "plus+sign", "percent%2Fslash", "unicode/日本語/ファイル",
    "q?mark#hash", "tilde~x", "semi;colon=eq&amp", "emoji/🙂.bin", "quote\"and'apos",
]
# Not here: "a//b" and "trailing/": s3s-fs stores keys as files and cannot hold them.


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys(gateway, make_s3, backend_s3, bucket, key):
    s3 = make_s3(gateway)
    body = os.urandom(70_000)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=10-19")["Body"].read() == body[10:20]
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(body)
    s3.copy_object(Bucket=bucket, Key=key + ".copy", CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE")
    assert s3.get_object(Bucket=bucket, Key=key + ".copy")["Body"].read() == body
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key + ".mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key + ".mp", UploadId=upload, PartNumber=1, Body=body)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key=key + ".mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key=key + ".mp")["Body"].read() == body
    # The gateway lists what the backend lists (s3s-fs decodes some keys twice
    # in listings; the gateway passes keys through untouched).
    through = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    direct = {o["Key"] for o in backend_s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert set(through) == direct
    s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(Exception):
        s3.head_object(Bucket=bucket, Key=key)


def test_delete_objects_batch(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    keys = [f"batch/{i}" for i in range(5)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[:3]]})
    assert sorted(d["Key"] for d in out["Deleted"]) == keys[:3]
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="batch/")["Contents"]]
    assert left == keys[3:]


def test_expect_100_continue(gateway, make_s3, bucket):
    host, port = gateway.endpoint.split("//")[1].rsplit(":", 1)
    body = os.urandom(300_000)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("PUT", f"/{bucket}/expect")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    conn.send(body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    assert make_s3(gateway).get_object(Bucket=bucket, Key="expect")["Body"].read() == body


def test_http2_clients(gateway, make_s3, bucket, tmp_path):
    src = tmp_path / "h2.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    url = f"{gateway.endpoint}/{bucket}/h2"
    put = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          "-T", str(src), url], capture_output=True, text=True, timeout=60)
    assert put.stdout == "2 200", put.stdout + put.stderr
    dst = tmp_path / "back.bin"
    get = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", str(dst), "-w", "%{http_version} %{http_code}", url],
                         capture_output=True, text=True, timeout=60)
    assert get.stdout == "2 200", get.stdout + get.stderr
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    ranged = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-r", "100-199", url], capture_output=True, timeout=60)
    assert ranged.stdout == src.read_bytes()[100:200]
    assert make_s3(gateway).head_object(Bucket=bucket, Key="h2")["ContentLength"] == src.stat().st_size
