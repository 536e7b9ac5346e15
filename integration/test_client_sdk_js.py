"""AWS SDK for JavaScript v3 (@aws-sdk/client-s3, @aws-sdk/lib-storage) through the
gateway, driven by clients/sdk_v3.mjs. See client_matrix.py."""

from __future__ import annotations

import base64
import json
import zlib

from client_matrix import (  # noqa: F401  (fixtures: used by name)
    gwy,
    shim,
    env,
    require_client,
    run,
    assert_stored_ciphertext,
    write_tree,
    CLIENTS_DIR,
    MiB,
)


def test_aws_sdk_js_v3(gwy, env, new_bucket, backend_s3, data_dir, tmp_path):
    require_client("aws-sdk-js-v3")
    bucket = new_bucket("sdk-js")
    inputs = write_tree(tmp_path, {"small.bin": 1000, "stream.bin": 300_000, "big.bin": 20 * MiB + 777})
    r = run(["node", CLIENTS_DIR / "sdk_v3.mjs", gwy.endpoint, bucket, tmp_path],
            dict(env, NODE_NO_WARNINGS="1"), cwd=CLIENTS_DIR)
    out = json.loads(r.stdout)

    # A stream body goes aws-chunked with a CRC32 trailer even over plain HTTP.
    put_stream = out["sent"][0]
    assert put_stream["op"] == "PutObjectCommand"
    assert put_stream["headers"]["content-encoding"] == "aws-chunked"
    assert put_stream["headers"]["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert put_stream["headers"]["x-amz-trailer"] == "x-amz-checksum-crc32"
    crc = base64.b64encode(zlib.crc32(inputs["stream.bin"]).to_bytes(4, "big")).decode()
    assert out["putStream"]["checksumCRC32"] == crc
    # An empty stream: aws-chunked as well, its trailer checked before anything is stored.
    put_empty = out["sent"][1]
    assert put_empty["headers"]["content-encoding"] == "aws-chunked", put_empty
    empty_crc = base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")).decode()
    assert out["putEmpty"]["checksumCRC32"] == empty_crc
    assert out["getEmpty"] == {"body": "", "checksumCRC32": empty_crc}
    # A Buffer body: the checksum as a header, returned on GET and validated by the SDK.
    put_buffer = next(s for s in out["sent"] if s["op"] == "PutObjectCommand" and "x-amz-trailer" not in s["headers"])
    assert "x-amz-checksum-crc32" in put_buffer["headers"]
    assert out["getSmall"]["checksums"].get("ChecksumCRC32") == out["putBuffer"]["checksumCRC32"]
    # lib-storage: 5 parts, each with a CRC32 header.
    parts = [s for s in out["sent"] if s["op"] == "UploadPartCommand"]
    assert len(parts) == 5 and all("x-amz-checksum-crc32" in p["headers"] for p in parts)
    assert out["upload"]["etag"].endswith('-5"')

    for name in ("small", "stream", "big"):
        assert (tmp_path / f"{name}.out").read_bytes() == inputs[f"{name}.bin"], name
    assert out["headSmall"]["contentLength"] == 1000 and out["headSmall"]["metadata"] == {"origin": "sdk-v3"}
    assert out["headSmall"]["contentType"] == "application/x-test"
    assert {o["key"]: o["size"] for o in out["list"]} == {f"sdk/{k}": len(v) for k, v in inputs.items()}
    assert sorted(out["listAfterDelete"]) == ["sdk/big.bin", "sdk/stream.bin"]

    # The aws-chunked framing is not in the object: it decrypts to exactly the stream's bytes.
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "sdk/stream.bin", inputs["stream.bin"])
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "sdk/big.bin", inputs["big.bin"])
