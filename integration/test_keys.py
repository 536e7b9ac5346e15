"""Key rotation without moving data, through the gateway (a CopyObject onto
itself with metadata directive REPLACE re-wraps), and recovery without the
gateway with the native tool and a password-derived key. The tool's own suite
is test_tool.py."""

import hashlib
import json
import os

import pytest
from botocore.exceptions import ClientError

from test_tool import run, tool  # noqa: F401  (fixtures)

OLD = "a1" * 32
NEW = "b2" * 32


def test_rotation_rewraps_without_moving_bodies(start_gateway, make_s3, new_bucket, data_dir):
    bucket = new_bucket("rotate")
    old_gw = start_gateway({"keys": [{"id": "2025", "key_hex": OLD}]})
    s3_old = make_s3(old_gw)
    objects = {"a": os.urandom(10), "dir/b": os.urandom(300_000), "empty": b""}
    for key, data in objects.items():
        s3_old.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"owner": "ops"}, ContentType="application/x-test")
    stored_before = {k: (data_dir / bucket / k).read_bytes() for k in objects}

    both = start_gateway({"keys": [{"id": "2026", "key_hex": NEW}, {"id": "2025", "key_hex": OLD}], "write_key": "2026"})
    s3_both = make_s3(both)
    for key in objects:
        # What any client can do: copy the object onto itself with its own
        # metadata; the gateway re-wraps its data key under the active key.
        head = s3_both.head_object(Bucket=bucket, Key=key)
        s3_both.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE",
                            Metadata=head["Metadata"], ContentType=head["ContentType"], CopySourceIfMatch=head["ETag"])

    # The bodies did not change; only the envelope did.
    for k in objects:
        assert (data_dir / bucket / k).read_bytes() == stored_before[k]
    new_only = make_s3(start_gateway({"keys": [{"id": "2026", "key_hex": NEW}]}))
    for key, data in objects.items():
        got = new_only.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data
        assert got["Metadata"] == {"owner": "ops"} and got["ContentType"] == "application/x-test"
    with pytest.raises(ClientError) as e:
        s3_old.get_object(Bucket=bucket, Key="a")
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_recovery_tool_needs_only_the_backend_and_the_key(start_gateway, make_s3, new_bucket, backend, run, tmp_path):
    bucket = new_bucket("recover")
    kek = {"id": "k", "pbkdf2_salt": "0123456789abcdef", "pbkdf2_iterations": 100000}
    gw = start_gateway({"keys": [{**kek, "password": "correct horse battery"}]})
    s3 = make_s3(gw)
    objects = {"x": os.urandom(70_000), "y/z": os.urandom(3 * 1024 * 1024)}
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    backend.client().put_object(Bucket=bucket, Key="plain", Body=b"never encrypted")
    config = tmp_path / "plugin.json"
    # The same key, its password from the environment.
    config.write_text(json.dumps({"keys": [{**kek, "password_env": "S3CRYPT_TEST_PASSWORD"}]}))
    out = tmp_path / "restored"
    r = run("get", f"s3://{bucket}", "--config", config, "-o", out, extra_env={"S3CRYPT_TEST_PASSWORD": "correct horse battery"})
    assert r.stdout.decode().rstrip().endswith("3 written, 0 failed; last key: y/z")
    for key, data in objects.items():
        assert hashlib.sha256((out / key).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (out / "plain").read_bytes() == b"never encrypted"
    # Without the password the key cannot be derived: a clear error naming the field.
    r = run("get", f"s3://{bucket}", "--config", config, "-o", tmp_path / "again", check=False)
    assert r.returncode == 1 and "password_env" in r.stderr.decode()
