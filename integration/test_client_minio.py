"""minio-py through the gateway: fput/put/get/stat/list/remove, multipart, presigned
GET. See client_matrix.py."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request

import pytest

from client_matrix import (  # noqa: F401  (fixtures: used by name)
    gwy,
    shim,
    require_client,
    assert_stored_ciphertext,
    MiB,
    REGION,
    CLIENT_KEY,
    CLIENT_SECRET,
)


@pytest.fixture(scope="module")
def minio_client(gwy):
    require_client("minio-py")
    from minio import Minio
    return Minio(gwy.endpoint.split("//", 1)[1], access_key=CLIENT_KEY, secret_key=CLIENT_SECRET,
                 secure=False, region=REGION)


def test_minio_py(minio_client, new_bucket, backend_s3, data_dir, tmp_path):
    mc, bucket = minio_client, new_bucket("minio")
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(os.urandom(1000))
    big.write_bytes(os.urandom(18 * MiB + 5))  # 4 parts of 5 MiB (minio-py's minimum part size)
    mc.fput_object(bucket, "d/small.bin", str(small))
    w = mc.fput_object(bucket, "d/big.bin", str(big))
    assert w.etag.endswith("-4"), w.etag
    stream = os.urandom(300_000)
    mc.put_object(bucket, "d/stream.bin", io.BytesIO(stream), len(stream))

    for name, path in (("small.bin", small), ("big.bin", big)):
        out = tmp_path / f"{name}.out"
        mc.fget_object(bucket, f"d/{name}", str(out))
        assert out.read_bytes() == path.read_bytes(), name
        assert mc.stat_object(bucket, f"d/{name}").size == path.stat().st_size
    got = mc.get_object(bucket, "d/stream.bin")
    try:
        assert got.read() == stream
    finally:
        got.close()
        got.release_conn()

    want = {"d/small.bin": 1000, "d/big.bin": big.stat().st_size, "d/stream.bin": len(stream)}
    assert {o.object_name: o.size for o in mc.list_objects(bucket, recursive=True)} == want
    assert {o.object_name: o.size for o in mc.list_objects(bucket, prefix="d/")} == want
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "d/big.bin", big.read_bytes())

    mc.remove_object(bucket, "d/small.bin")
    assert "d/small.bin" not in {o.object_name for o in mc.list_objects(bucket, recursive=True)}


def test_minio_py_presigned_get(minio_client, plugin_config, new_bucket):
    mc, bucket = minio_client, new_bucket("minio-presign")
    data = os.urandom(5000)
    mc.put_object(bucket, "p.bin", io.BytesIO(data), len(data))
    url = mc.presigned_get_object(bucket, "p.bin")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.read() == data
    except urllib.error.HTTPError as e:
        raise AssertionError(f"presigned GET: {e.code} {e.read().decode(errors='replace')}") from None
