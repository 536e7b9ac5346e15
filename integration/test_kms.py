"""Key-encryption keys held by a KMS (moto's KMS server, a real KMS API, behind
an Envoy cluster that signs for service kms): decrypted once per VM at start-up,
never per object; a KMS that cannot answer keeps the gateway closed."""

import base64
import os
import socket
import subprocess
import sys
import time

import boto3
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import s3crypt_format  # noqa: E402

from conftest import gw  # noqa: E402  (the launcher module, scripts/gateway.py)


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory):
    port = gw.free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def kms_key(kms_server):
    kms = boto3.client("kms", endpoint_url=kms_server, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    key_id = kms.create_key(Description="s3crypt KEK wrapping key")["KeyMetadata"]["KeyId"]
    kek = os.urandom(32)
    blob = kms.encrypt(KeyId=key_id, Plaintext=kek, EncryptionContext={"purpose": "s3crypt-kek"})["CiphertextBlob"]
    return kek, base64.b64encode(blob).decode(), key_id


def kms_config(blob, authority, **extra):
    kms = {"ciphertext_blob": blob, "authority": authority, "encryption_context": {"purpose": "s3crypt-kek"}}
    kms.update(extra)
    return {"keys": [{"id": "kms-2026", "kms": kms}]}


def test_kms_held_key_encrypts_and_decrypts(start_gateway, make_s3, new_bucket, backend_s3, data_dir, kms_server, kms_key):
    kek, blob, key_id = kms_key
    authority = kms_server.split("//")[1]
    g = start_gateway(kms_config(blob, authority, key_id=key_id), kms=kms_server)
    s3 = make_s3(g)
    bucket = new_bucket("kms")
    deadline = time.time() + 20
    while True:  # the first requests may come before the KMS answered
        try:
            s3.put_object(Bucket=bucket, Key="obj", Body=b"under a KMS-held key")
            break
        except Exception:  # noqa: BLE001
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"under a KMS-held key"
    envelope = backend_s3.head_object(Bucket=bucket, Key="obj")["Metadata"]["s3crypt"]
    assert s3crypt_format.parse_envelope(envelope)["key_id"] == "kms-2026"
    stored = (data_dir / bucket / "obj").read_bytes()
    assert s3crypt_format.decrypt_object(kek, envelope, stored) == b"under a KMS-held key"
    # The KMS is off the data path: a burst of objects makes no KMS call.
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"burst-{i}", Body=b"x")
    log = g.log.read_text(errors="replace")
    assert log.count("decrypted by the KMS") <= 4  # once per VM (main thread + workers)


def wait_for_log(g, text, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if g.log.exists() and text in g.log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    pytest.fail(f"{text!r} not in the Envoy log")


def test_kms_outage_at_startup_fails_closed(start_gateway, make_s3, new_bucket, kms_key):
    _, blob, _ = kms_key
    dead = f"127.0.0.1:{gw.free_port()}"  # nothing listens there
    g = start_gateway(kms_config(blob, dead), kms=f"http://{dead}")
    bucket = new_bucket("kms-down")
    wait_for_log(g, "refusing all requests")
    with pytest.raises(Exception) as e:
        make_s3(g).put_object(Bucket=bucket, Key="never", Body=b"plaintext must not pass")
    assert "503" in str(e.value) or "ServiceUnavailable" in str(e.value)


def test_kms_refusing_the_blob_fails_closed(start_gateway, make_s3, new_bucket, kms_server):
    authority = kms_server.split("//")[1]
    g = start_gateway(kms_config(base64.b64encode(os.urandom(100)).decode(), authority), kms=kms_server)
    wait_for_log(g, "KMS refused Decrypt")
    with pytest.raises(Exception):
        make_s3(g).list_objects_v2(Bucket=new_bucket("kms-bad"))
