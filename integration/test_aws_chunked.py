"""aws-chunked request bodies (what current AWS SDKs send over HTTPS, and for
streams): the framing is taken off, never encrypted into the object; trailing
checksums are checked against the plaintext; the backend gets a plain
ciphertext body with a correct Content-Length.

The bodies here are made by botocore's own aws-chunked writer, byte for byte
what boto3 sends.
"""

import base64
import hashlib
import http.client
import io
import os
import sys
import time
import zlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3crypt_format  # noqa: E402
from conftest import TEST_KEY_HEX  # noqa: E402

MiB = 1024 * 1024


def send(gw, method, path, body, headers):
    host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def send_slowly(gw, method, path, body, headers, pause=0.5):
    """Like send, but the body leaves `pause` seconds after the headers (as
    from a client that streams it): the filter sees them apart."""
    host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    time.sleep(pause)
    conn.send(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def chunked_body(payload, checksum_cls=Crc32Checksum, name="x-amz-checksum-crc32"):
    return AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=checksum_cls, checksum_name=name).read()


def unsigned_trailer_headers(payload, encoded, trailer="x-amz-checksum-crc32", chunked_transfer=False):
    h = {
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": trailer,
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    if not chunked_transfer:
        h["Content-Length"] = str(len(encoded))
    return h


def stored(backend_s3, data_dir, bucket, key):
    envelope = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"]
    raw = (data_dir / bucket / key).read_bytes()
    return s3crypt_format.decrypt_object(bytes.fromhex(TEST_KEY_HEX), envelope, raw), raw


@pytest.mark.parametrize("size", [0, 1, 65536, 3 * MiB + 7])
def test_unsigned_trailer_put(gateway, make_s3, backend_s3, data_dir, bucket, size):
    payload = os.urandom(size)
    body = chunked_body(payload)
    key = f"chunked-{size}"
    resp, text = send(gateway, "PUT", f"/{bucket}/{key}", body, unsigned_trailer_headers(payload, body))
    assert resp.status == 200, text
    # S3 echoes the trailer checksum (for an empty body too: the filter holds
    # it until the trailer is read, README "What the filter does").
    assert resp.getheader("x-amz-checksum-crc32") == base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    plain, raw = stored(backend_s3, data_dir, bucket, key)
    assert plain == payload
    assert len(raw) == s3crypt_format.ciphertext_len(size, 65536)  # no framing inside
    assert make_s3(gateway).get_object(Bucket=bucket, Key=key)["Body"].read() == payload


def test_chunked_transfer_without_content_length(gateway, make_s3, bucket):
    payload = os.urandom(200_000)
    body = chunked_body(payload)
    host, port = gateway.endpoint.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("PUT", f"/{bucket}/chunked-te", body=iter([body[:1000], body[1000:]]),
                 headers=unsigned_trailer_headers(payload, body, chunked_transfer=True), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()
    assert make_s3(gateway).get_object(Bucket=bucket, Key="chunked-te")["Body"].read() == payload


def test_sha256_trailer(gateway, make_s3, bucket):
    payload = os.urandom(100_000)
    body = chunked_body(payload, Sha256Checksum, "x-amz-checksum-sha256")
    headers = unsigned_trailer_headers(payload, body, trailer="x-amz-checksum-sha256")
    resp, text = send(gateway, "PUT", f"/{bucket}/chunked-sha", body, headers)
    assert resp.status == 200, text
    assert make_s3(gateway).get_object(Bucket=bucket, Key="chunked-sha")["Body"].read() == payload


def absent(backend_s3, bucket, key):
    try:
        backend_s3.head_object(Bucket=bucket, Key=key)
        return False
    except ClientError:
        return True


def test_wrong_trailer_checksum_stores_nothing(gateway, backend_s3, bucket):
    payload = os.urandom(300_000)
    body = chunked_body(payload).replace(base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")), b"AAAAAA==")
    resp, text = send(gateway, "PUT", f"/{bucket}/bad-trailer", body, unsigned_trailer_headers(payload, body))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    assert absent(backend_s3, bucket, "bad-trailer")


@pytest.mark.parametrize("damage", ["missing-trailer", "short", "long", "bad-framing"])
def test_broken_framing_stores_nothing(gateway, backend_s3, bucket, damage):
    payload = os.urandom(100_000)
    body = chunked_body(payload)
    headers = unsigned_trailer_headers(payload, body)
    if damage == "missing-trailer":
        body = body[: body.index(b"x-amz-checksum-crc32")] + b"\r\n"
    elif damage == "short":
        headers["x-amz-decoded-content-length"] = str(len(payload) + 10)
    elif damage == "long":
        headers["x-amz-decoded-content-length"] = str(len(payload) - 10)
    else:
        body = body.replace(b"\r\n", b"\n", 1)
    headers["Content-Length"] = str(len(body))
    resp, text = send(gateway, "PUT", f"/{bucket}/broken-{damage}", body, headers)
    assert 400 <= resp.status < 500, (damage, text)
    assert absent(backend_s3, bucket, f"broken-{damage}")


def test_signed_streaming_payload_is_unframed(gateway, make_s3, bucket):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD: signatures are stripped here (the
    gateway verifies them when client authentication is configured)."""
    payload = os.urandom(70_000)
    sig = "0" * 64
    body = b""
    for i in range(0, len(payload), 65536):
        piece = payload[i:i + 65536]
        body += f"{len(piece):x};chunk-signature={sig}\r\n".encode() + piece + b"\r\n"
    body += f"0;chunk-signature={sig}\r\n\r\n".encode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
               "x-amz-decoded-content-length": str(len(payload)), "Content-Length": str(len(body))}
    resp, text = send(gateway, "PUT", f"/{bucket}/signed-stream", body, headers)
    assert resp.status == 200, text
    assert make_s3(gateway).get_object(Bucket=bucket, Key="signed-stream")["Body"].read() == payload


def test_upload_part_with_aws_chunked_body(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-chunked")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    etags = []
    for n, payload in enumerate(parts, 1):
        body = chunked_body(payload)
        resp, text = send(gateway, "PUT", f"/{bucket}/mp-chunked?partNumber={n}&uploadId={upload}", body,
                          unsigned_trailer_headers(payload, body))
        assert resp.status == 200, text
        etags.append(resp.getheader("etag"))
    s3.complete_multipart_upload(Bucket=bucket, Key="mp-chunked", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert s3.get_object(Bucket=bucket, Key="mp-chunked")["Body"].read() == b"".join(parts)


def test_gzip_content_encoding_survives(gateway, backend_s3, make_s3, bucket):
    payload = os.urandom(5000)
    body = chunked_body(payload)
    headers = unsigned_trailer_headers(payload, body)
    headers["Content-Encoding"] = "gzip,aws-chunked"
    resp, text = send(gateway, "PUT", f"/{bucket}/gz", body, headers)
    assert resp.status == 200, text
    assert backend_s3.head_object(Bucket=bucket, Key="gz").get("ContentEncoding") == "gzip"


@pytest.mark.parametrize("existing", [False, True])
def test_empty_upload_with_wrong_trailer_stores_nothing(gateway, make_s3, backend_s3, bucket, existing):
    """An empty aws-chunked body has an empty ciphertext: the trailer is all
    there is to check, and still nothing may be stored (or replaced) when it
    is wrong."""
    key = f"empty-bad-trailer-{existing}"
    if existing:
        make_s3(gateway).put_object(Bucket=bucket, Key=key, Body=b"kept")
    body = chunked_body(b"").replace(base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")), b"AAAAAQ==")
    resp, text = send_slowly(gateway, "PUT", f"/{bucket}/{key}", body, unsigned_trailer_headers(b"", body))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    if existing:
        assert make_s3(gateway).get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    else:
        assert absent(backend_s3, bucket, key)


def test_empty_upload_with_right_trailer_is_stored(gateway, make_s3, backend_s3, data_dir, bucket):
    """The held empty upload goes to the backend once its trailer checked out:
    stored (empty ciphertext, envelope), checksum echoed, recorded for
    x-amz-checksum-mode, and the ETag is the one HEAD shows."""
    body = chunked_body(b"")
    crc = base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")).decode()
    headers = unsigned_trailer_headers(b"", body)
    headers["Content-Type"] = "text/x-empty"
    headers["x-amz-meta-colour"] = "blue"
    resp, text = send_slowly(gateway, "PUT", f"/{bucket}/empty-ok", body, headers)
    assert resp.status == 200, text
    assert resp.getheader("x-amz-checksum-crc32") == crc
    assert not [name for name, _ in resp.getheaders() if name.lower().startswith("x-envoy-")], resp.getheaders()
    plain, raw = stored(backend_s3, data_dir, bucket, "empty-ok")
    assert plain == b"" and raw == b""
    s3 = make_s3(gateway)
    head = s3.head_object(Bucket=bucket, Key="empty-ok", ChecksumMode="ENABLED")
    assert head["ETag"] == resp.getheader("etag")
    assert head["ContentType"] == "text/x-empty" and head["Metadata"] == {"colour": "blue"}
    assert head.get("ChecksumCRC32") == crc
    assert s3.get_object(Bucket=bucket, Key="empty-ok")["Body"].read() == b""


def empty_body(crc_ok=True):
    body = chunked_body(b"")
    return body if crc_ok else body.replace(base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")), b"AAAAAQ==")


def test_empty_part_with_aws_chunked_body(gateway, make_s3, bucket):
    """UploadPart of an empty part: held like an empty PutObject."""
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-empty")["UploadId"]
    path = f"/{bucket}/mp-empty?partNumber=1&uploadId={upload}"
    resp, text = send_slowly(gateway, "PUT", path, empty_body(False), unsigned_trailer_headers(b"", empty_body(False)))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    assert s3.list_parts(Bucket=bucket, Key="mp-empty", UploadId=upload).get("Parts", []) == []
    resp, text = send_slowly(gateway, "PUT", path, empty_body(), unsigned_trailer_headers(b"", empty_body()))
    assert resp.status == 200, text
    etag = resp.getheader("etag")
    assert etag.endswith('-1"'), etag  # a part ETag, marked as no MD5
    s3.complete_multipart_upload(Bucket=bucket, Key="mp-empty", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="mp-empty")["Body"].read() == b""


def test_empty_upload_answered_early_by_the_backend(gateway, make_s3, bucket):
    """The backend may answer the placeholder before any body (a failed
    If-None-Match, checked before the body is read): that answer reaches the
    client and nothing hangs. A condition that holds goes on to the backend."""
    s3 = make_s3(gateway)
    s3.put_object(Bucket=bucket, Key="exists", Body=b"old")
    headers = dict(unsigned_trailer_headers(b"", empty_body()), **{"If-None-Match": "*"})
    resp, text = send_slowly(gateway, "PUT", f"/{bucket}/exists", empty_body(), headers)
    assert resp.status == 412, (resp.status, text)
    assert s3.get_object(Bucket=bucket, Key="exists")["Body"].read() == b"old"
    resp, text = send_slowly(gateway, "PUT", f"/{bucket}/fresh", empty_body(), headers)
    assert resp.status == 200, text
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b""


def test_empty_upload_in_a_plaintext_bucket(start_gateway, new_bucket, backend_s3, data_dir):
    gw = start_gateway({"keys": [{"id": "main", "key_hex": TEST_KEY_HEX}], "buckets": [{"match": "plainempty-*", "encrypt": False}]})
    bucket = new_bucket("plainempty")
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/bad", empty_body(False), unsigned_trailer_headers(b"", empty_body(False)))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    assert absent(backend_s3, bucket, "bad")
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/good", empty_body(), unsigned_trailer_headers(b"", empty_body()))
    assert resp.status == 200, text
    assert (data_dir / bucket / "good").read_bytes() == b""
    assert "s3crypt" not in backend_s3.head_object(Bucket=bucket, Key="good")["Metadata"]


def test_empty_upload_to_a_virtual_hosted_backend(start_backend, start_gateway, data_dir, backend_s3, new_bucket):
    """The filter addresses the backend itself as the routes would."""
    vbackend = start_backend(data_dir, virtual=True)
    gw = start_gateway({"keys": [{"id": "main", "key_hex": TEST_KEY_HEX}]}, backend=vbackend, addressing="virtual")
    bucket = new_bucket("vempty")
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/bad", empty_body(False), unsigned_trailer_headers(b"", empty_body(False)))
    assert resp.status == 400 and b"<Code>BadDigest</Code>" in text, text
    assert absent(backend_s3, bucket, "bad")
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/dir/good", empty_body(), unsigned_trailer_headers(b"", empty_body()))
    assert resp.status == 200, text
    assert (data_dir / bucket / "dir" / "good").read_bytes() == b""
    assert "s3crypt" in backend_s3.head_object(Bucket=bucket, Key="dir/good")["Metadata"]



def _reflected_crc(data, poly, width):
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
    return (crc ^ mask).to_bytes(width // 8, "big")


CHECKSUMS = {
    "crc32": lambda d: zlib.crc32(d).to_bytes(4, "big"),
    "crc32c": lambda d: _reflected_crc(d, 0x82F63B78, 32),
    "crc64nvme": lambda d: _reflected_crc(d, 0x9A6C9329AC4BC9B5, 64),
    "sha1": lambda d: hashlib.sha1(d).digest(),
    "sha256": lambda d: hashlib.sha256(d).digest(),
}


@pytest.mark.parametrize("size", [0, 70_001])
@pytest.mark.parametrize("algorithm", sorted(CHECKSUMS))
def test_every_checksum_algorithm_as_header_and_trailer(gateway, make_s3, backend_s3, bucket, algorithm, size):
    """x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}: verified against the
    plaintext as a header and as a trailer; a header one comes back with
    checksum mode on; a wrong one stores nothing."""
    assert base64.b64encode(CHECKSUMS["crc64nvme"](b"hello world")) == b"jSnVw/bqjr4="  # the test's own CRC
    name = f"x-amz-checksum-{algorithm}"
    payload = os.urandom(size)
    value = base64.b64encode(CHECKSUMS[algorithm](payload)).decode()
    wrong = base64.b64encode(CHECKSUMS[algorithm](payload + b"!")).decode()
    key = f"algo-{algorithm}-{size}"
    for claimed, status in ((wrong, 400), (value, 200)):
        resp, text = send(gateway, "PUT", f"/{bucket}/{key}-h", payload, {"Content-Length": str(size), name: claimed})
        assert resp.status == status, text
        body = f"{size:x}\r\n".encode() + payload + b"\r\n" if size else b""
        body += f"0\r\n{name}:{claimed}\r\n\r\n".encode()
        headers = dict(unsigned_trailer_headers(payload, body, trailer=name), **{"x-amz-sdk-checksum-algorithm": algorithm.upper()})
        resp, text = send_slowly(gateway, "PUT", f"/{bucket}/{key}-t", body, headers, pause=0.05)
        assert resp.status == status, text
        if status == 400:
            assert b"<Code>BadDigest</Code>" in text
            assert absent(backend_s3, bucket, f"{key}-h") and absent(backend_s3, bucket, f"{key}-t")
        else:
            assert resp.getheader(name) == value
    s3 = make_s3(gateway)
    head = s3.head_object(Bucket=bucket, Key=f"{key}-h", ChecksumMode="ENABLED")
    assert head["ResponseMetadata"]["HTTPHeaders"].get(name) == value
    assert s3.get_object(Bucket=bucket, Key=f"{key}-t")["Body"].read() == payload


def test_empty_upload_without_a_backend_setting(start_gateway, new_bucket, backend_s3, data_dir):
    """Without `backend` the filter cannot send the upload itself: a right
    trailer still stores the empty object (README: its trailer is then checked
    only after the backend stored it), and nothing hangs."""
    gw = start_gateway({"keys": [{"id": "main", "key_hex": TEST_KEY_HEX}], "backend": None})
    bucket = new_bucket("nobackend")
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/good", empty_body(), unsigned_trailer_headers(b"", empty_body()))
    assert resp.status == 200, text
    assert (data_dir / bucket / "good").read_bytes() == b""
    resp, text = send_slowly(gw, "PUT", f"/{bucket}/bad", empty_body(False), unsigned_trailer_headers(b"", empty_body(False)))
    assert resp.status in (200, 400), text  # the documented limitation: either answer, never a hang
