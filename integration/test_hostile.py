"""Hostile and malformed requests: each answers with a clear S3 error (or
passes as S3 itself would), the Envoy worker keeps serving, and nothing
undecryptable is stored."""

import http.client
import os
import socket
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3crypt_format  # noqa: E402
from conftest import TEST_KEY_HEX  # noqa: E402

CHUNK = 65536


def raw(gw, method, path, body=b"", headers=None):
    host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def still_serving(gw, make_s3, bucket):
    s3 = make_s3(gw)
    s3.put_object(Bucket=bucket, Key="canary", Body=b"alive")
    assert s3.get_object(Bucket=bucket, Key="canary")["Body"].read() == b"alive"


def test_bogus_lengths_and_framing(gateway, make_s3, backend_s3, data_dir, bucket):
    body = os.urandom(10_000)
    cases = [
        # Content-Length not a number is refused by Envoy's codec itself (400).
        ({"x-amz-decoded-content-length": "abc", "Content-Encoding": "aws-chunked",
          "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, b"0\r\n\r\n", "InvalidArgument"),
        ({"x-amz-decoded-content-length": str(10**20), "Content-Encoding": "aws-chunked",
          "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, b"0\r\n\r\n", None),
        # Chunk size larger than the data that follows, no final chunk.
        ({"x-amz-decoded-content-length": "100", "Content-Encoding": "aws-chunked",
          "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, b"ffff\r\n" + body[:100], None),
        # Trailer garbage.
        ({"x-amz-decoded-content-length": "3", "Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
          "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, b"3\r\nabc\r\n0\r\n\x00\x01garbage\r\n\r\n", None),
        # Unknown streaming scheme (SigV4a).
        ({"x-amz-decoded-content-length": "3", "Content-Encoding": "aws-chunked",
          "x-amz-content-sha256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"}, b"3\r\nabc\r\n0\r\n\r\n", "NotImplemented"),
        # A non-hex content hash.
        ({"x-amz-content-sha256": "not-a-hash"}, body, "InvalidArgument"),
    ]
    for i, (headers, data, code) in enumerate(cases):
        status, text = raw(gateway, "PUT", f"/{bucket}/bogus-{i}", data, headers)
        assert 400 <= status < 600 and b"<Error>" in text, (i, status, text)
        if code:
            assert f"<Code>{code}</Code>".encode() in text, (i, text)
        with pytest.raises(ClientError):
            backend_s3.head_object(Bucket=bucket, Key=f"bogus-{i}")
    still_serving(gateway, make_s3, bucket)


def test_ranges_that_are_not_ranges(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    data = os.urandom(3 * CHUNK)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    # Inverted, multiple and junk ranges: S3 ignores them and sends the whole object.
    for spec in ["bytes=5-1", ",".join(f"{i}-{i}" for i in range(2000)), "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)),
                 "bytes=abc", "chunks=0-1", "bytes=--1"]:
        status, text = raw(gateway, "GET", f"/{bucket}/r", headers={"Range": spec})
        assert status == 200 and text == data, spec[:40]
    still_serving(gateway, make_s3, bucket)


def test_oversized_and_malformed_headers(gateway, make_s3, bucket):
    # Larger than the listener's header limit: Envoy answers 431 itself.
    status, _ = raw(gateway, "GET", f"/{bucket}/r", headers={"x-amz-meta-big": "a" * 200_000})
    assert status in (400, 431)
    # Control characters in a header value: refused by Envoy's codec.
    host, port = gateway.endpoint.split("//")[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"GET /{bucket}/r HTTP/1.1\r\nHost: x\r\nx-bad: a\x01b\r\n\r\n".encode())
    reply = s.recv(100)
    s.close()
    assert reply.startswith(b"HTTP/1.1 400")
    # Huge user metadata (S3 allows 2 KB): the backend decides; nothing undecryptable either way.
    status, text = raw(gateway, "PUT", f"/{bucket}/meta", b"x", {f"x-amz-meta-k{i}": "v" * 500 for i in range(40)})
    assert status in (200, 400), text
    still_serving(gateway, make_s3, bucket)


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/../../b", "ctl\x01key", "nul\x00key"])
def test_path_tricks_and_control_characters_in_keys(gateway, make_s3, backend_s3, new_bucket, key):
    bucket = new_bucket("hostile-keys")
    from urllib.parse import quote
    status, text = raw(gateway, "PUT", f"/{bucket}/{quote(key, safe='/')}", b"data")
    # Whatever the backend makes of it, the gateway never writes plaintext and keeps serving.
    assert status < 600
    if status == 200:
        # (s3s-fs cannot list a bucket holding control characters in a key: look the key up.)
        head = backend_s3.head_object(Bucket=bucket, Key=key)
        stored = backend_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert s3crypt_format.decrypt_object(bytes.fromhex(TEST_KEY_HEX), head["Metadata"]["s3crypt"], stored) == b"data"
    still_serving(gateway, make_s3, bucket)


def test_hand_edited_envelopes_are_refused(gateway, make_s3, backend_s3, bucket):
    s3 = make_s3(gateway)
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="victim", Body=data)
    envelope = backend_s3.head_object(Bucket=bucket, Key="victim")["Metadata"]["s3crypt"]
    edits = {
        "key id": envelope.replace("k=default", "k=other"),
        "size": envelope.replace(f"n={len(data)}", f"n={len(data) - 1}"),
        "cipher": envelope.replace("s=chacha20-poly1305", "s=aes-256-gcm"),
        "chunk size": envelope.replace("c=65536", "c=32768"),
        "version": envelope.replace("v=1", "v=9"),
        "garbage": "v=1;nonsense",
    }
    for name, edited in edits.items():
        # A server-side copy onto itself with the edited metadata, straight at the backend.
        backend_s3.copy_object(Bucket=bucket, Key="victim", CopySource={"Bucket": bucket, "Key": "victim"},
                               MetadataDirective="REPLACE", Metadata={"s3crypt": edited})
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key="victim")["Body"].read()
        status = e.value.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status in (403, 500), (name, e.value.response)
        backend_s3.copy_object(Bucket=bucket, Key="victim", CopySource={"Bucket": bucket, "Key": "victim"},
                               MetadataDirective="REPLACE", Metadata={"s3crypt": envelope})
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == data
    still_serving(gateway, make_s3, bucket)
