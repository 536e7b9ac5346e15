"""boto3 over HTTPS with default settings (aws-chunked bodies, CRC32 trailers)
through the gateway; over HTTP boto3 drives the other test modules. See
client_matrix.py."""

from __future__ import annotations

import base64
import os
import zlib

from client_matrix import (  # noqa: F401  (fixtures: used by name)
    tls_gateway,
    assert_stored_ciphertext,
    MiB,
    REGION,
    CLIENT_KEY,
    CLIENT_SECRET,
)


def test_boto3_https_defaults(tls_gateway, new_bucket, backend_s3, data_dir, tmp_path):
    import boto3
    from botocore.config import Config
    bucket = new_bucket("boto3-https")
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=tls_gateway.endpoint, region_name=REGION, verify=str(tls_gateway.ca),
        aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
        config=Config(s3={"addressing_style": "path"}))
    sent = []

    def record(request, **_):
        sent.append((request.url, {k.lower(): v.decode() if isinstance(v, bytes) else v
                                   for k, v in request.headers.items()}))
    s3.meta.events.register("before-send.s3", record)

    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="put.bin", Body=data)
    _, h = sent[-1]
    assert h.get("content-encoding") == "aws-chunked", h
    assert h["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", h
    assert h["x-amz-trailer"] == "x-amz-checksum-crc32", h
    got = s3.get_object(Bucket=bucket, Key="put.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ContentLength"] == len(data)
    assert s3.head_object(Bucket=bucket, Key="put.bin")["ContentLength"] == len(data)
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "put.bin", data)

    # An empty body: aws-chunked too, its trailer all there is to check.
    out = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert sent[-1][1].get("content-encoding") == "aws-chunked", sent[-1][1]
    assert out["ChecksumCRC32"] == base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")).decode()
    got = s3.get_object(Bucket=bucket, Key="empty", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"" and got["ChecksumCRC32"] == out["ChecksumCRC32"]
    assert "s3crypt" in backend_s3.head_object(Bucket=bucket, Key="empty")["Metadata"]

    # copy (REPLACE onto itself: new metadata, still decrypts) and delete.
    s3.copy_object(Bucket=bucket, Key="put.bin", CopySource={"Bucket": bucket, "Key": "put.bin"},
                   MetadataDirective="REPLACE", ContentType="text/x-replaced", Metadata={"k": "v"})
    head = s3.head_object(Bucket=bucket, Key="put.bin")
    assert head["ContentType"] == "text/x-replaced" and head["Metadata"] == {"k": "v"}
    assert s3.get_object(Bucket=bucket, Key="put.bin")["Body"].read() == data
    s3.delete_object(Bucket=bucket, Key="empty")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["put.bin"]

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB + 11))
    s3.upload_file(str(big), bucket, "big.bin")  # 8 MiB parts, each aws-chunked
    part_puts = [h for url, h in sent if "partNumber=" in url]
    assert len(part_puts) == 3 and all(h.get("content-encoding") == "aws-chunked" for h in part_puts)
    s3.download_file(bucket, "big.bin", str(tmp_path / "big.out"))
    assert (tmp_path / "big.out").read_bytes() == big.read_bytes()
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == big.stat().st_size
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "big.bin", big.read_bytes())
