"""Faults through real Envoy: what is stored and what the client sees when a
client disconnects mid-upload, the backend dies or stalls mid-download,
Envoy is killed during traffic, or the filter's VM fails.
"""

import os
import signal
import socket
import threading
import time
import http.client
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import TEST_KEY_HEX

REPO = Path(__file__).resolve().parent.parent
FAULT_WASM = REPO / "target" / "fault" / "wasm32-wasip1" / "release" / "s3crypt_filter.wasm"
PLUGIN = {"keys": [{"id": "default", "key_hex": TEST_KEY_HEX}]}
MiB = 1024 * 1024


def host_port(gw):
    host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
    return host, int(port)


def send_partial_upload(gw, path, declared, sent):
    """Opens a PUT that declares `declared` bytes, sends `sent`, then drops the connection."""
    s = socket.create_connection(host_port(gw))
    s.sendall(f"PUT {path} HTTP/1.1\r\nHost: {gw.endpoint.split('//')[1]}\r\nContent-Length: {declared}\r\n\r\n".encode())
    chunk = os.urandom(256 * 1024)
    done = 0
    while done < sent:
        s.sendall(chunk[: min(len(chunk), sent - done)])
        done += min(len(chunk), sent - done)
    time.sleep(0.3)
    s.close()


def wait_idle(gw, timeout=10):
    """Until Envoy has no request in flight."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        active = gw.stats("http.s3crypt.downstream_rq_active").get("http.s3crypt.downstream_rq_active", 0)
        if active == 0:
            return
        time.sleep(0.1)
    pytest.fail("requests still active in Envoy")


def test_client_disconnect_mid_put_stores_nothing(gateway, backend_s3, new_bucket, data_dir):
    bucket = new_bucket("faults")
    send_partial_upload(gateway, f"/{bucket}/cut-put", 8 * MiB, 3 * MiB)
    wait_idle(gateway)
    with pytest.raises(ClientError):
        backend_s3.head_object(Bucket=bucket, Key="cut-put")
    assert not (data_dir / bucket / "cut-put").exists()


def test_client_disconnect_mid_upload_part_stores_no_part(gateway, make_s3, backend_s3, new_bucket):
    bucket = new_bucket("faults")
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="cut-part")["UploadId"]
    send_partial_upload(gateway, f"/{bucket}/cut-part?partNumber=1&uploadId={upload}", 8 * MiB, 3 * MiB)
    wait_idle(gateway)
    assert not s3.list_parts(Bucket=bucket, Key="cut-part", UploadId=upload).get("Parts")
    s3.abort_multipart_upload(Bucket=bucket, Key="cut-part", UploadId=upload)


def read_slowly(gw, path, out, started):
    host, port = host_port(gw)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    out["status"], out["length"] = resp.status, int(resp.getheader("content-length") or -1)
    received = 0
    try:
        while True:
            piece = resp.read(64 * 1024)
            if not piece:
                break
            received += len(piece)
            if received > 4 * MiB:
                started.set()
                time.sleep(0.01)
    except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
        out["error"] = repr(e)
    out["received"] = received
    # A body shorter than its Content-Length, ended by a closed connection, is
    # an error every HTTP client reports (http.client's read(n) just stops).
    if received != out["length"]:
        out.setdefault("error", "short body")
    conn.close()


def test_backend_killed_mid_get_is_an_error_not_a_short_body(start_backend, start_gateway, make_s3, tmp_path):
    backend = start_backend()
    gw = start_gateway(PLUGIN, backend=backend)
    backend.client().create_bucket(Bucket="dying")
    make_s3(gw).put_object(Bucket="dying", Key="big", Body=os.urandom(64 * MiB))
    out, started = {}, threading.Event()
    t = threading.Thread(target=read_slowly, args=(gw, "/dying/big", out, started))
    t.start()
    assert started.wait(30)
    os.killpg(backend.child.proc.pid, signal.SIGKILL)
    t.join(60)
    assert out["status"] == 200 and out["length"] == 64 * MiB
    assert out["received"] < 64 * MiB and "error" in out, out


def test_stalled_backend_times_out_cleanly(start_backend, start_gateway, make_s3):
    backend = start_backend()
    gw = start_gateway(PLUGIN, backend=backend, stream_idle_timeout=2)
    backend.client().create_bucket(Bucket="stalling")
    s3 = make_s3(gw)
    s3.put_object(Bucket="stalling", Key="big", Body=os.urandom(64 * MiB))
    out, started = {}, threading.Event()
    t = threading.Thread(target=read_slowly, args=(gw, "/stalling/big", out, started))
    t.start()
    assert started.wait(30)
    pgid = backend.child.proc.pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        t.join(30)
        assert not t.is_alive(), "the client is stuck"
        assert "error" in out and out["received"] < 64 * MiB, out
        wait_idle(gw)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    # The gateway serves again once the backend does.
    assert s3.get_object(Bucket="stalling", Key="big", Range="bytes=0-9")["ContentLength"] == 10


def test_envoy_killed_during_uploads_leaves_no_undecryptable_object(start_backend, start_gateway, make_s3):
    backend = start_backend()
    gw = start_gateway(PLUGIN, backend=backend)
    backend.client().create_bucket(Bucket="crash")
    s3 = make_s3(gw)
    payloads = {f"obj-{i}": os.urandom(20 * MiB) for i in range(4)}
    errors = []

    def put(key):
        try:
            s3.put_object(Bucket="crash", Key=key, Body=payloads[key])
        except Exception as e:  # noqa: BLE001 - the crash makes these fail
            errors.append(e)

    threads = [threading.Thread(target=put, args=(k,)) for k in payloads]
    for t in threads:
        t.start()
    time.sleep(0.4)
    os.killpg(gw.envoy.proc.pid, signal.SIGKILL)
    for t in threads:
        t.join(60)
    gw.start()  # a new Envoy on the same configuration
    s3 = make_s3(gw)
    for key, data in payloads.items():
        try:
            got = s3.get_object(Bucket="crash", Key=key)["Body"].read()
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, (key, e)
            continue
        assert got == data, key  # whatever exists is whole and decrypts
    s3.put_object(Bucket="crash", Key="after", Body=b"works")
    assert s3.get_object(Bucket="crash", Key="after")["Body"].read() == b"works"


@pytest.mark.skipif(not FAULT_WASM.exists(), reason="fault-injection build missing (make build-fault)")
def test_vm_failure_fails_only_that_request(start_gateway, make_s3, new_bucket):
    gw = start_gateway(PLUGIN, wasm=FAULT_WASM)
    bucket = new_bucket("vmfail")
    s3 = make_s3(gw)
    s3.put_object(Bucket=bucket, Key="before", Body=b"before")
    host, port = host_port(gw)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", f"/{bucket}/before", headers={"x-s3crypt-test-panic": "1"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status >= 500
    time.sleep(0.5)  # the reload backoff (envoy/gateway.yaml.tmpl: 0.1 s)
    # Later requests work: FAIL_RELOAD brought up a fresh VM.
    for _ in range(3):
        assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"before"
    s3.put_object(Bucket=bucket, Key="after", Body=b"after")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"after"
    assert gw.stats("wasm.s3crypt.vm_reload_success").get("wasm.s3crypt.vm_reload_success", 0) >= 1
