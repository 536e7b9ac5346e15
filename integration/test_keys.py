"""Key rotation without moving data, and recovery without the gateway."""

import hashlib
import os
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import recover  # noqa: E402
import rotate  # noqa: E402

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
    rotated, failed = rotate.rotate(make_s3(both), bucket, "")
    assert (rotated, failed) == (len(objects), [])

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


def test_recovery_tool_needs_only_the_backend_and_the_key(start_gateway, make_s3, new_bucket, backend, tmp_path):
    bucket = new_bucket("recover")
    gw = start_gateway({"keys": [{"id": "k", "password": "correct horse battery", "pbkdf2_salt": "0123456789abcdef",
                                  "pbkdf2_iterations": 100000}]})
    s3 = make_s3(gw)
    objects = {"x": os.urandom(70_000), "y/z": os.urandom(3 * 1024 * 1024)}
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    backend.client().put_object(Bucket=bucket, Key="plain", Body=b"never encrypted")
    config = tmp_path / "plugin.json"
    import json
    config.write_text(json.dumps(gw.plugin_config()))
    out = tmp_path / "restored"
    done, failed = recover.recover(backend.client(), bucket, "", recover.keys_from_config(config), out)
    assert (done, failed) == (3, [])
    for key, data in objects.items():
        assert hashlib.sha256((out / key).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (out / "plain").read_bytes() == b"never encrypted"
