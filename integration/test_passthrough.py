"""Envoy without the filter: proxying, re-signing and host rewriting work with real clients.

The clients sign with test/test, which s3s-fs does not know: every success
below means Envoy re-signed the request with the backend's keys for the Host
the backend received. Objects are stored as plain files, so what a client
uploads must land byte for byte in data_dir/bucket/key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(passthrough_gateway):
    return passthrough_gateway


@pytest.fixture(scope="module")
def s3(gw, make_s3):
    return make_s3(gw)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A 20 MiB file of random bytes (multipart for awscli and upload_file)."""
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(os.urandom(20 * MIB))
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def wait_for_log(gateway, predicate, until=bool, timeout=5.0) -> list[dict]:
    """Access-log lines matching predicate, once until(lines) holds (flushed every 250 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [e for e in gateway.access_log() if predicate(e)]
        if until(hits) or time.monotonic() > deadline:
            return hits
        time.sleep(0.1)


def test_backend_rejects_the_client_keys(backend, make_s3, bucket):
    """Guard for the other tests: the client's own signature is not accepted by s3s-fs."""
    class Direct:  # make_s3 only needs .endpoint
        endpoint = backend.endpoint
    with pytest.raises(ClientError) as e:
        make_s3(Direct).head_bucket(Bucket=bucket)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_boto3_put_head_get_list_delete(s3, bucket, data_dir):
    body = os.urandom(1024)
    put = s3.put_object(Bucket=bucket, Key="dir/small.bin", Body=body, Metadata={"color": "blue"})
    assert put["ETag"] == f'"{md5(body)}"'
    assert (data_dir / bucket / "dir" / "small.bin").read_bytes() == body

    head = s3.head_object(Bucket=bucket, Key="dir/small.bin")
    assert head["ContentLength"] == 1024
    assert head["Metadata"] == {"color": "blue"}

    get = s3.get_object(Bucket=bucket, Key="dir/small.bin")
    assert get["Body"].read() == body
    ranged = s3.get_object(Bucket=bucket, Key="dir/small.bin", Range="bytes=100-199")
    assert ranged["ContentRange"] == "bytes 100-199/1024"
    assert ranged["Body"].read() == body[100:200]

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]]
    assert keys == ["dir/small.bin"]

    s3.delete_object(Bucket=bucket, Key="dir/small.bin")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="dir/small.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_boto3_keys_needing_escapes(s3, bucket, data_dir):
    key = "odd/a b+c%d=é~!.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"
    assert (data_dir / bucket / key).read_bytes() == b"x"


def test_boto3_bucket_lifecycle(s3, backend_s3):
    name = "pt-lifecycle-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in backend_s3.list_buckets()["Buckets"]]


def test_boto3_20mib_put_object_and_multipart(s3, bucket, data_dir, big, tmp_path):
    data = big.read_bytes()
    s3.put_object(Bucket=bucket, Key="big-single", Body=data)
    assert md5((data_dir / bucket / "big-single").read_bytes()) == md5(data)

    s3.upload_file(str(big), bucket, "big-multipart")  # 8 MiB parts
    assert md5((data_dir / bucket / "big-multipart").read_bytes()) == md5(data)
    out = tmp_path / "down.bin"
    s3.download_file(bucket, "big-multipart", str(out))
    assert md5(out.read_bytes()) == md5(data)


@pytest.mark.parametrize("size", [1024, 20 * MIB], ids=["1KiB", "20MiB"])
def test_awscli_cp_roundtrip(gw, aws, bucket, data_dir, tmp_path, size):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    key = f"cli/{size}.bin"
    aws(gw, "s3", "cp", "--only-show-errors", str(src), f"s3://{bucket}/{key}")
    assert md5((data_dir / bucket / key).read_bytes()) == md5(src.read_bytes())
    dst = tmp_path / "dst.bin"
    aws(gw, "s3", "cp", "--only-show-errors", f"s3://{bucket}/{key}", str(dst))
    assert md5(dst.read_bytes()) == md5(src.read_bytes())
    listing = aws(gw, "s3", "ls", f"s3://{bucket}/cli/").stdout.decode()
    assert f"{size} {size}.bin" in listing


def test_awscli_s3api_put_object(gw, aws, bucket, data_dir, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1024))
    aws(gw, "s3api", "put-object", "--bucket", bucket, "--key", "api.bin", "--body", str(src))
    assert (data_dir / bucket / "api.bin").read_bytes() == src.read_bytes()
    aws(gw, "s3api", "delete-object", "--bucket", bucket, "--key", "api.bin")
    assert not (data_dir / bucket / "api.bin").exists()


def test_host_is_rewritten_to_the_backend(gw, s3, bucket, backend):
    s3.put_object(Bucket=bucket, Key="host-check", Body=b"h")
    lines = wait_for_log(gw, lambda e: e.get("path") == f"/{bucket}/host-check")
    assert lines, "no access-log line for the request"
    assert lines[-1]["host"] == f"127.0.0.1:{backend.port}"
    assert lines[-1]["host"] != gw.endpoint.removeprefix("http://")
    assert lines[-1]["amz_content_sha256"] == "UNSIGNED-PAYLOAD"


# --------------------------------------------------------------------------
# Virtual-hosted addressing and TLS upstreams, against local stand-ins.


def _exercise(s3, bucket: str, data_dir: Path) -> None:
    s3.put_object(Bucket=bucket, Key="v/one", Body=b"one")
    assert (data_dir / bucket / "v" / "one").read_bytes() == b"one"
    assert s3.get_object(Bucket=bucket, Key="v/one")["Body"].read() == b"one"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["v/one"]
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_object(Bucket=bucket, Key="v/one")


def test_virtual_addressing(start_backend, start_gateway, make_s3, new_bucket, data_dir):
    # s3s-fs serving the session's data with virtual-hosted style for localhost:<port>.
    vbackend = start_backend(data_dir, virtual=True)
    gw = start_gateway(no_filter=True, backend=vbackend, addressing="virtual")
    bucket = new_bucket("virtual")
    _exercise(make_s3(gw), bucket, data_dir)
    # The access log shows the request as sent upstream: bucket in the Host, not the path.
    want = {("PUT", "/v/one"), ("GET", "/v/one"), ("DELETE", "/v/one")}
    lines = wait_for_log(gw, lambda e: e.get("host") == f"{bucket}.localhost:{vbackend.port}",
                         until=lambda hits: {(e["method"], e["path"]) for e in hits} >= want)
    assert {(e["method"], e["path"]) for e in lines} >= want


class TlsTerminator:
    """TLS on a loopback port, relaying plain TCP to another port (an https S3 stand-in)."""

    def __init__(self, cert: Path, key: Path):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target: int | None = None
        self.sni: list[str] = []
        self.ctx.sni_callback = lambda s, name, c: self.sni.append(name) or None

    def serve(self, target_port: int) -> None:
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
            plain = socket.create_connection(("127.0.0.1", self.target))
        except (OSError, ssl.SSLError):
            conn.close()
            return
        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        threading.Thread(target=pump, args=(plain, tls), daemon=True).start()
        pump(tls, plain)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", d / "key.pem", "-out", d / "cert.pem", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,DNS:*.localhost"],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_https_upstream(addressing, tls_cert, start_backend, start_gateway, make_s3, new_bucket,
                        data_dir, monkeypatch):
    """An https upstream by host name: SNI, certificate check against the Host, re-signing."""
    cert, key = tls_cert
    proxy = TlsTerminator(cert, key)
    try:
        # s3s-fs sees the Host the gateway sends: localhost:<tls port> (or bucket.localhost:...).
        b = start_backend(data_dir, domain=f"localhost:{proxy.port}")
        proxy.serve(b.port)
        monkeypatch.setenv("S3CRYPT_CA_BUNDLE", str(cert))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", b.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", b.secret_key)
        gw = start_gateway(no_filter=True, backend=f"https://localhost:{proxy.port}", addressing=addressing)
        bucket = new_bucket(f"tls-{addressing}")
        _exercise(make_s3(gw), bucket, data_dir)
        expected_sni = f"{bucket}.localhost" if addressing == "virtual" else "localhost"
        assert expected_sni in proxy.sni
    finally:
        proxy.close()


def test_https_upstream_with_untrusted_certificate_fails(tls_cert, start_backend, start_gateway,
                                                         make_s3, bucket, monkeypatch):
    cert, key = tls_cert
    proxy = TlsTerminator(cert, key)
    try:
        b = start_backend(domain=f"localhost:{proxy.port}")
        proxy.serve(b.port)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", b.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", b.secret_key)
        # Default CA bundle: the self-signed certificate is not trusted.
        gw = start_gateway(no_filter=True, backend=f"https://localhost:{proxy.port}")
        s3 = make_s3(gw, retries={"max_attempts": 1})
        with pytest.raises(ClientError) as e:
            s3.list_buckets()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        proxy.close()
