"""s3cmd (Debian) through the gateway: put, get, ls, info, cp, sync, del. See client_matrix.py."""

from __future__ import annotations

import os
import re

import pytest

from client_matrix import (  # noqa: F401  (fixtures: used by name)
    gwy,
    shim,
    env,
    require_client,
    run,
    md5_hex,
    assert_stored_ciphertext,
    write_tree,
    read_tree,
    MiB,
    REGION,
    CLIENT_KEY,
    CLIENT_SECRET,
    S3CMD,
)


@pytest.fixture(scope="module")
def s3cmd(gwy, env, tmp_path_factory):
    version = require_client("s3cmd")
    host = gwy.endpoint.split("//", 1)[1]
    cfg = tmp_path_factory.mktemp("s3cmd") / "s3cfg"
    # Path style: host_bucket without %(bucket)s.
    cfg.write_text(f"[default]\naccess_key = {CLIENT_KEY}\nsecret_key = {CLIENT_SECRET}\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
                   f"bucket_location = {REGION}\nsignature_v2 = False\n")

    def s3c(*args, check=True):
        return run([S3CMD, "-c", cfg, "--host", host, "--host-bucket", host, *args], env, check=check)

    s3c.version = version
    return s3c


def uploads(out: str) -> list[str]:
    return sorted(m.group(1) for m in re.finditer(r"upload: '([^']+)' ->", out))


def downloads(out: str) -> list[str]:
    return sorted(m.group(1) for m in re.finditer(r"download: '([^']+)' ->", out))


def test_s3cmd(s3cmd, new_bucket, backend_s3, data_dir, tmp_path):
    bucket = new_bucket("s3cmd")
    src = tmp_path / "src"
    files = write_tree(src, {"small.bin": 1000, "mid.bin": 200_000, "big.bin": 20 * MiB})

    # put: s3cmd compares its MD5 with the PUT's ETag unless the ETag has a "-":
    # the gateway's opaque "...-1" ETags pass (s3cmd sends no Content-MD5).
    r = s3cmd("put", src / "small.bin", src / "mid.bin", f"s3://{bucket}/dir/")
    r2 = s3cmd("put", "--disable-multipart", src / "big.bin", f"s3://{bucket}/dir/big.bin")
    for out in (r, r2):
        assert "MD5" not in out.stderr, out.stderr
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "dir/big.bin", files["big.bin"])
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "dir/small.bin", files["small.bin"])

    # ls, ls -r: plaintext sizes.
    for out in (s3cmd("ls", f"s3://{bucket}/dir/").stdout, s3cmd("ls", "-r", f"s3://{bucket}").stdout):
        sizes = {m.group(2): int(m.group(1)) for m in re.finditer(rf"\s(\d+)\s+s3://{bucket}/dir/(\S+)", out)}
        assert sizes == {k: len(v) for k, v in files.items()}, out

    # info: size and the MD5 s3cmd stored in its attrs header.
    info = s3cmd("info", f"s3://{bucket}/dir/mid.bin").stdout
    assert re.search(r"File size:\s+200000\b", info) and md5_hex(files["mid.bin"]) in info, info

    # get: s3cmd checks the download against the MD5 in its attrs header.
    down = tmp_path / "down"
    down.mkdir()
    for name in files:
        r = s3cmd("get", f"s3://{bucket}/dir/{name}", down / name)
        assert "MD5" not in r.stderr, r.stderr
    assert read_tree(down) == files

    # cp (CopyObject): a copy that decrypts.
    s3cmd("cp", f"s3://{bucket}/dir/mid.bin", f"s3://{bucket}/dir/copy.bin")
    s3cmd("get", f"s3://{bucket}/dir/copy.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == files["mid.bin"]

    # sync up twice (the second finds everything up to date), then down twice.
    tree = tmp_path / "tree"
    synced = write_tree(tree, {"one": 5000, "a/two": 70000, "a/b/three": 65536})
    r = s3cmd("sync", f"{tree}/", f"s3://{bucket}/sync/")
    assert len(uploads(r.stdout)) == 3, r.stdout
    r = s3cmd("sync", f"{tree}/", f"s3://{bucket}/sync/")
    assert uploads(r.stdout) == [], r.stdout
    back = tmp_path / "back"
    r = s3cmd("sync", f"s3://{bucket}/sync/", f"{back}/")
    assert len(downloads(r.stdout)) == 3, r.stdout
    assert read_tree(back) == synced
    r = s3cmd("sync", f"s3://{bucket}/sync/", f"{back}/")
    assert downloads(r.stdout) == [], r.stdout

    # del
    s3cmd("del", f"s3://{bucket}/dir/copy.bin")
    assert f"s3://{bucket}/dir/copy.bin" not in s3cmd("ls", f"s3://{bucket}/dir/").stdout


def test_s3cmd_multipart_put(s3cmd, new_bucket, tmp_path):
    bucket = new_bucket("s3cmd-mp")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 * MiB))  # above the 15 MiB default chunk: 2 parts
    r = s3cmd("put", src, f"s3://{bucket}/big.bin", check=False)
    assert r.returncode == 0 and "MD5 Sums don't match" not in r.stderr, r.stderr[-2000:]
    dst = tmp_path / "back.bin"
    s3cmd("get", f"s3://{bucket}/big.bin", dst)
    assert dst.read_bytes() == src.read_bytes()
