"""awscli v2 (Debian) over HTTP and awscli v1 (PyPI) over HTTPS through the gateway.
See client_matrix.py."""

from __future__ import annotations

import json
import os

from client_matrix import (  # noqa: F401  (fixtures: used by name)
    gwy,
    shim,
    env,
    tls_gateway,
    require_client,
    run,
    assert_stored_ciphertext,
    write_tree,
    read_tree,
    AWS_V2,
    VENV_BIN,
    MiB,
)


def test_awscli_v2(gwy, env, new_bucket, backend_s3, data_dir, tmp_path):
    version = require_client("awscli-v2")
    bucket = new_bucket("awscli-v2")

    def aws(*args):
        return run([AWS_V2, "--endpoint-url", gwy.endpoint, *args], env)

    assert version.startswith("2."), version
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB + 3))
    aws("s3", "cp", big, f"s3://{bucket}/big.bin")  # 8 MiB parts, Content-MD5 on each
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "big.bin").stdout)
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].endswith('-3"')
    aws("s3", "cp", f"s3://{bucket}/big.bin", tmp_path / "big.out")  # parallel ranged GETs
    assert (tmp_path / "big.out").read_bytes() == big.read_bytes()
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "big.bin", big.read_bytes())

    tree = tmp_path / "tree"
    files = write_tree(tree, {"one": 5000, "a/two": 70000, "a/b/three": 0})
    r = aws("s3", "sync", tree, f"s3://{bucket}/sync")
    assert r.stdout.count("upload:") == 3, r.stdout
    r = aws("s3", "sync", tree, f"s3://{bucket}/sync")
    assert "upload:" not in r.stdout, r.stdout
    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{bucket}/sync", back)
    assert read_tree(back) == files
    listed = aws("s3", "ls", "--recursive", f"s3://{bucket}/sync/").stdout
    assert {line.split()[3]: int(line.split()[2]) for line in listed.splitlines()} == \
        {f"sync/{k}": len(v) for k, v in files.items()}

    aws("s3", "mv", f"s3://{bucket}/sync/one", f"s3://{bucket}/moved")
    aws("s3api", "copy-object", "--bucket", bucket, "--key", "moved", "--copy-source", f"{bucket}/moved",
        "--metadata-directive", "REPLACE", "--content-type", "text/x-moved", "--metadata", "k=v")
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "moved").stdout)
    assert head["ContentType"] == "text/x-moved" and head["Metadata"] == {"k": "v"}
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "moved", files["one"])



def test_awscli_v1_https(tls_gateway, env, new_bucket, backend_s3, data_dir, tmp_path):
    bucket = new_bucket("awscli-v1-https")
    aws = [VENV_BIN / "aws", "--endpoint-url", tls_gateway.endpoint, "--ca-bundle", tls_gateway.ca]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB + 5))
    r = run([*aws, "--debug", "s3", "cp", big, f"s3://{bucket}/big.bin"], env)
    assert "aws-chunked" in r.stderr, "awscli v1 did not send aws-chunked bodies over https"
    run([*aws, "s3", "cp", f"s3://{bucket}/big.bin", tmp_path / "big.out"], env)
    assert (tmp_path / "big.out").read_bytes() == big.read_bytes()
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "big.bin", big.read_bytes())

    # sync (an empty file among them: aws-chunked with only a trailer), twice; mv;
    # head-object; copy-object REPLACE onto itself.
    tree = tmp_path / "tree"
    files = write_tree(tree, {"one": 5000, "a/two": 70000, "a/b/empty": 0})
    r = run([*aws, "s3", "sync", tree, f"s3://{bucket}/sync"], env)
    assert r.stdout.count("upload:") == 3, r.stdout
    r = run([*aws, "s3", "sync", tree, f"s3://{bucket}/sync"], env)
    assert "upload:" not in r.stdout, r.stdout
    back = tmp_path / "back"
    run([*aws, "s3", "sync", f"s3://{bucket}/sync", back], env)
    assert read_tree(back) == files
    run([*aws, "s3", "mv", f"s3://{bucket}/sync/one", f"s3://{bucket}/moved"], env)
    run([*aws, "s3api", "copy-object", "--bucket", bucket, "--key", "moved", "--copy-source", f"{bucket}/moved",
         "--metadata-directive", "REPLACE", "--content-type", "text/x-moved", "--cache-control", "max-age=9",
         "--metadata", "k=v"], env)
    head = json.loads(run([*aws, "s3api", "head-object", "--bucket", bucket, "--key", "moved"], env).stdout)
    assert (head["ContentType"], head["CacheControl"], head["Metadata"], head["ContentLength"]) == \
        ("text/x-moved", "max-age=9", {"k": "v"}, 5000)
    assert_stored_ciphertext(backend_s3, data_dir, bucket, "moved", files["one"])
    assert "s3crypt" in backend_s3.head_object(Bucket=bucket, Key="sync/a/b/empty")["Metadata"]
