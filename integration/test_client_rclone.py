"""rclone (Debian) through the gateway: copy, check, md5sum, lsl, sync, cat,
delete with an S3 remote (provider Other), its MD5 checks on. See client_matrix.py."""

from __future__ import annotations

import os
import re
import subprocess

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
)


@pytest.fixture(scope="module")
def rclone(gwy, env, tmp_path_factory):
    version = require_client("rclone")
    conf = tmp_path_factory.mktemp("rclone") / "rclone.conf"
    conf.write_text("")
    e = dict(env, RCLONE_CONFIG=str(conf),
             RCLONE_CONFIG_GW_TYPE="s3", RCLONE_CONFIG_GW_PROVIDER="Other",
             RCLONE_CONFIG_GW_ENDPOINT=gwy.endpoint, RCLONE_CONFIG_GW_REGION=REGION,
             RCLONE_CONFIG_GW_ACCESS_KEY_ID=CLIENT_KEY, RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=CLIENT_SECRET)

    def rc(*args, check=True, timeout=300):
        return run(["rclone", "--low-level-retries", "2", "--retries", "1", *args], e, check=check, timeout=timeout)

    rc.version, rc.env = version, e
    return rc


def copied(log: str) -> list[str]:
    return sorted(m.group(1) for m in re.finditer(r"INFO  : (.+?): Copied \(", log))


def test_rclone(rclone, new_bucket, backend_s3, data_dir, tmp_path):
    bucket = new_bucket("rclone")
    src = tmp_path / "src"
    files = write_tree(src, {"small.txt": 12345, "empty": 0, "sub/mid.bin": 70000, "large.bin": 40 * MiB})

    # copy up: every file is verified (rclone compares its MD5 with the ETag the
    # gateway answers: the plaintext MD5, since rclone sends Content-MD5).
    r = rclone("copy", "-vv", src, f"gw:{bucket}/folder")
    assert copied(r.stderr) == sorted(files)
    for rel, data in files.items():
        assert f"{rel}: md5 = {md5_hex(data)} OK" in r.stderr, rel
    assert "ERROR" not in r.stderr

    # The same folder as multipart uploads above 16 MiB (5 MiB parts): rclone keeps
    # the MD5 in x-amz-meta-md5chksum, as multipart ETags are no MD5.
    r = rclone("copy", "-vv", "--s3-upload-cutoff", "16Mi", src, f"gw:{bucket}/mp")
    assert "large.bin: multipart upload starting chunk 8" in r.stderr
    assert f"large.bin: md5 = {md5_hex(files['large.bin'])} OK" in r.stderr
    head = backend_s3.head_object(Bucket=bucket, Key="mp/large.bin")
    assert head["ETag"].endswith('-8"') and "md5chksum" in head["Metadata"]

    for prefix in ("folder", "mp"):
        r = rclone("check", src, f"gw:{bucket}/{prefix}")
        assert "0 differences found" in r.stderr and f"{len(files)} matching files" in r.stderr, r.stderr
        assert "hashes could not be checked" not in r.stderr, r.stderr
    r = rclone("check", "--download", src, f"gw:{bucket}/mp")
    assert "0 differences found" in r.stderr and f"{len(files)} matching files" in r.stderr, r.stderr

    # lsl and md5sum: plaintext sizes and MD5s (single PUT: the ETag; multipart: the metadata).
    listed = {}
    for line in rclone("lsl", f"gw:{bucket}/folder").stdout.splitlines():
        size, _date, _time, name = line.split(None, 3)
        listed[name] = int(size)
    assert listed == {rel: len(data) for rel, data in files.items()}
    for prefix in ("folder", "mp"):
        sums = dict(reversed(line.split(None, 1)) for line in rclone("md5sum", f"gw:{bucket}/{prefix}").stdout.splitlines())
        assert sums == {rel: md5_hex(data) for rel, data in files.items()}, prefix

    # copy down (MD5 checked by rclone), byte equality.
    down = tmp_path / "down"
    r = rclone("copy", "-vv", f"gw:{bucket}/mp", down)
    assert f"large.bin: md5 = {md5_hex(files['large.bin'])} OK" in r.stderr
    assert read_tree(down) == files

    # sync twice: the first sends the changed and the new file, the second nothing.
    files["small.txt"] = os.urandom(777)
    (src / "small.txt").write_bytes(files["small.txt"])
    files["sub/new.bin"] = os.urandom(65536 * 3)
    (src / "sub" / "new.bin").write_bytes(files["sub/new.bin"])
    r = rclone("sync", "-v", src, f"gw:{bucket}/folder")
    assert copied(r.stderr) == ["small.txt", "sub/new.bin"], r.stderr
    r = rclone("sync", "-v", src, f"gw:{bucket}/folder")
    assert copied(r.stderr) == [], r.stderr

    # cat
    assert subprocess.run(["rclone", "cat", f"gw:{bucket}/folder/small.txt"], env=rclone.env,
                          capture_output=True, check=True).stdout == files["small.txt"]

    # The stored objects are ciphertext: single PUT, multipart, and the synced one.
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "folder/large.bin", files["large.bin"])
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "mp/large.bin", files["large.bin"])
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "folder/small.txt", files["small.txt"])

    # deletefile, delete
    rclone("deletefile", f"gw:{bucket}/folder/sub/mid.bin")
    rclone("delete", f"gw:{bucket}/mp")
    left = sorted(rclone("lsf", "-R", "--files-only", f"gw:{bucket}").stdout.split())
    assert left == sorted(f"folder/{rel}" for rel in files if rel != "sub/mid.bin")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "rclone's use_multipart_etag (default for providers AWS, Minio, Ceph, ...) checks the ETag a "
    "HEAD shows after the upload against md5(part MD5s)-N of the plaintext; the object's ETag is the "
    "backend's, of the ciphertext parts: 'multipart upload corrupted: Etag differ'"))
def test_rclone_multipart_etag_check(rclone, new_bucket, tmp_path):
    bucket = new_bucket("rclone-mpetag")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 * MiB))
    r = rclone("copyto", "-v", "--s3-use-multipart-etag=true", "--s3-upload-cutoff", "5Mi",
               src, f"gw:{bucket}/big.bin", check=False)
    if r.returncode != 0 and "multipart upload corrupted: Etag differ" not in r.stderr:
        pytest.fail(f"failed, but not as known:\n{r.stderr[-3000:]}")
    assert r.returncode == 0, r.stderr[-2000:]
