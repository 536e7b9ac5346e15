"""Per-bucket rules (plugin JSON `buckets`): a bucket's own write key and
cipher, and buckets that stay plaintext, through real Envoy + s3s-fs."""

import base64
import hashlib
import io
import os
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3crypt_format  # noqa: E402
from conftest import TEST_KEY_HEX  # noqa: E402

LOGS_KEY = "c3" * 32
MiB = 1024 * 1024


def envelope_fields(backend_s3, bucket, key):
    value = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"]
    return dict(field.split("=", 1) for field in value.split(";")), value


@pytest.fixture(scope="module")
def rules_gateway(start_gateway):
    return start_gateway({
        "keys": [{"id": "main", "key_hex": TEST_KEY_HEX}, {"id": "logs", "key_hex": LOGS_KEY}],
        "write_key": "main",
        "unencrypted_objects": "refuse",
        "buckets": [
            {"match": "plain-*", "encrypt": False},
            {"match": "logs-*", "write_key": "logs", "cipher": "aes-256-gcm"},
        ],
    })


def test_a_bucket_rule_picks_the_write_key_and_cipher(rules_gateway, make_s3, new_bucket, backend_s3, data_dir):
    s3 = make_s3(rules_gateway)
    logs, other = new_bucket("logs"), new_bucket("other")
    data = os.urandom(200_000)
    for bucket in (logs, other):
        s3.put_object(Bucket=bucket, Key="obj", Body=data)
        assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    fields, value = envelope_fields(backend_s3, logs, "obj")
    assert (fields["k"], fields["s"]) == ("logs", "aes-256-gcm")
    assert s3crypt_format.decrypt_object(bytes.fromhex(LOGS_KEY), value, (data_dir / logs / "obj").read_bytes()) == data
    fields, _ = envelope_fields(backend_s3, other, "obj")
    assert (fields["k"], fields["s"]) == ("main", "chacha20-poly1305")

    # Multipart uploads too: the upload id carries the bucket's key.
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=logs, Key="mp")["UploadId"]
    etags = [s3.upload_part(Bucket=logs, Key="mp", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=logs, Key="mp", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]})
    assert s3.get_object(Bucket=logs, Key="mp")["Body"].read() == b"".join(parts)
    fields, value = envelope_fields(backend_s3, logs, "mp")
    assert (fields["k"], fields["s"]) == ("logs", "aes-256-gcm")
    assert s3crypt_format.decrypt_object(bytes.fromhex(LOGS_KEY), value, (data_dir / logs / "mp").read_bytes()) == b"".join(parts)

    # A copy with REPLACE into a logs bucket re-wraps under the logs key.
    s3.copy_object(Bucket=logs, Key="copied", CopySource={"Bucket": other, "Key": "obj"}, MetadataDirective="REPLACE", Metadata={"a": "b"})
    fields, _ = envelope_fields(backend_s3, logs, "copied")
    assert fields["k"] == "logs" and fields["s"] == "chacha20-poly1305", "the data stays under its own cipher"
    assert s3.get_object(Bucket=logs, Key="copied")["Body"].read() == data


def test_a_plaintext_bucket_stores_what_clients_send(rules_gateway, make_s3, new_bucket, backend_s3, data_dir):
    s3 = make_s3(rules_gateway)
    bucket = new_bucket("plain")
    data = os.urandom(1000)  # a size the listing rewrite would shrink by 40
    s3.put_object(Bucket=bucket, Key="small", Body=data, ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
    assert (data_dir / bucket / "small").read_bytes() == data
    head = backend_s3.head_object(Bucket=bucket, Key="small")
    assert "s3crypt" not in head["Metadata"]
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="small", Range="bytes=10-19")["Body"].read() == data[10:20]
    assert s3.head_object(Bucket=bucket, Key="small")["ContentLength"] == 1000
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("small", 1000)]

    # A wrong digest stores nothing, as for encrypted uploads.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=data, ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode())
    assert e.value.response["Error"]["Code"] == "BadDigest"
    assert not (data_dir / bucket / "bad").exists()

    # Multipart: the backend's own upload, parts stored as sent.
    parts = [os.urandom(5 * MiB), os.urandom(3000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    assert not upload.startswith("s3c1"), "the backend's upload id, not the gateway's token"
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    assert etags[0].strip('"') == hashlib.md5(parts[0]).hexdigest()
    listed_parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    # (s3s-fs lists parts in directory order)
    assert sorted((p["PartNumber"], p["Size"]) for p in listed_parts) == [(1, 5 * MiB), (2, 3000)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]})
    assert (data_dir / bucket / "mp").read_bytes() == b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"".join(parts)

    # aws-chunked with a trailing checksum (what SDKs send for streams): the
    # framing comes off, the checksum is checked, then echoed.
    from test_aws_chunked import chunked_body, send, unsigned_trailer_headers
    body = os.urandom(70_000)
    encoded = chunked_body(body)
    resp, answer = send(rules_gateway, "PUT", f"/{bucket}/streamed", encoded, unsigned_trailer_headers(body, encoded))
    assert resp.status == 200, answer
    assert resp.getheader("x-amz-checksum-crc32")
    assert (data_dir / bucket / "streamed").read_bytes() == body
    damaged = bytearray(encoded)
    damaged[-20] ^= 1  # inside the trailer's checksum value
    resp, answer = send(rules_gateway, "PUT", f"/{bucket}/streamed-bad", bytes(damaged), unsigned_trailer_headers(body, encoded))
    assert resp.status == 400, answer
    assert not (data_dir / bucket / "streamed-bad").exists()


def test_plaintext_buckets_still_decrypt_encrypted_objects(rules_gateway, make_s3, new_bucket, backend_s3):
    """An object written encrypted (before the rule, or copied in at the
    backend) keeps decrypting; objects outside plaintext buckets that carry
    no envelope stay refused (`unencrypted_objects: refuse`)."""
    s3 = make_s3(rules_gateway)
    plain, other = new_bucket("plain"), new_bucket("other")
    data = os.urandom(100_000)
    s3.put_object(Bucket=other, Key="secret", Body=data)
    backend_s3.copy_object(Bucket=plain, Key="secret", CopySource={"Bucket": other, "Key": "secret"})
    assert s3.get_object(Bucket=plain, Key="secret")["Body"].read() == data
    assert s3.head_object(Bucket=plain, Key="secret")["ContentLength"] == len(data)

    backend_s3.put_object(Bucket=other, Key="direct", Body=b"written around the gateway")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=other, Key="direct")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
