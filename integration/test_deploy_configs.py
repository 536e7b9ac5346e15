"""The deployment configurations under envoy/: validated, and exercised where this machine allows.

* envoy/production.yaml.tmpl (rendered by envoy/deploy.py): `envoy --mode validate` for
  every provider preset and option; impossible settings refused. Then a real Envoy on
  it: boto3 over https to the gateway's TLS listener (a test CA), the gateway over https
  (SNI, certificate check) to a fault-injecting proxy in front of s3s-fs, the health
  listener (/healthz, /stats/prometheus with the filter's counters), the per-client rate
  limit (a burst from one loopback address gets 429 SlowDown, another address does not),
  GET retried after a backend reset while a PUT is never replayed (not even when the
  client asks with x-envoy-retry-on), and the Kubernetes pre-stop drain command.
* The backup mirror (MIRROR): two s3s-fs backends with different credentials; a PUT
  lands as identical ciphertext on both, decrypts through a gateway on either, deletes
  are not mirrored, and a failing or slow mirror never fails or delays the primary.
* envoy/kubernetes/*.yaml: Kubernetes JSON schemas (PyPI kubernetes-validate, strict);
  the ConfigMap's envoy.yaml is what deploy.py renders and passes `envoy --mode validate`.
* envoy/istio/*.yaml: Istio 1.29 CRD schemas (npm @kubernetes-models/istio, ajv) plus an
  unknown-field check from the same package's type declarations; the Envoy fragments of
  the EnvoyFilter pass `envoy --mode validate` inside a bootstrap.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parent.parent
ENVOY_DIR = REPO / "envoy"
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(ENVOY_DIR))
import gateway as gw  # noqa: E402  (scripts/gateway.py)
import deploy  # noqa: E402  (envoy/deploy.py)

from conftest import CLIENT_KEY, CLIENT_SECRET, TEST_KEY_HEX  # noqa: E402

KEK_ENV = "S3CRYPT_TEST_KEK"
MIB = 1024 * 1024


def _prod_plugin() -> dict:
    """The conftest's plugin configuration, its key read from the environment (key_hex_env)
    instead: same key and id, so either gateway reads the other's objects."""
    config = json.loads(json.dumps(gw.default_plugin_config(TEST_KEY_HEX)))
    for k in config["keys"]:
        if k.get("key_hex") == TEST_KEY_HEX:
            del k["key_hex"]
            k["key_hex_env"] = KEK_ENV
    return config


PLUGIN = _prod_plugin()
# With client authentication, as deploy.py renders by default; the secret from
# the environment like the key.
CLIENT_SECRET_ENV = "S3CRYPT_CLIENT_SECRET"
PLUGIN_WITH_CLIENTS = {**PLUGIN, "clients": [{"access_key_id": "AKIARENDER0000000001", "secret_access_key_env": CLIENT_SECRET_ENV,
                                              "grants": [{"bucket": "*", "actions": ["read", "write", "delete", "list"]}]}]}


# --------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate for localhost / 127.0.0.1 (server side of both hops)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", d / "key.pem", "-out", d / "cert.pem", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


class FaultProxy:
    """An HTTP/1.1 proxy in front of s3s-fs (optionally serving TLS) that records what it
    receives and can fail chosen requests: "reset" closes the connection without an
    answer, "503" answers SlowDown, "delay:<s>" answers late."""

    def __init__(self, target_port: int, tls: tuple[Path, Path] | None = None):
        self.target_port = target_port
        self.seen: list[tuple[str, str, str]] = []  # (method, path, host)
        self.sni: list[str] = []
        self.faults: list[dict] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path, self.headers.get("Host", "")))
                fault = proxy._take_fault(self.command, self.path)
                if fault == "reset":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if fault == "503":
                    xml = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                if fault and fault.startswith("delay:"):
                    time.sleep(float(fault.partition(":")[2]))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("connection", "expect"):
                            conn.putheader(k, v)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response_only(resp.status, resp.reason)
                chunked = False
                for k, v in resp.getheaders():
                    if k.lower() == "transfer-encoding":
                        chunked = True
                    elif k.lower() != "connection":
                        self.send_header(k, v)
                if chunked:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            ctx.sni_callback = lambda s, name, c: self.sni.append(name) or None
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, method: str, path_part: str, how: str, times: int = 1) -> None:
        with self.lock:
            self.faults.append({"method": method, "part": path_part, "how": how, "times": times})

    def _take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            for f in self.faults:
                if f["times"] > 0 and f["method"] == method and f["part"] in path:
                    f["times"] -= 1
                    return f["how"]
        return None

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p, _ in self.seen if m == method and path_part in p)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ProdGateway:
    """Envoy on a configuration rendered from envoy/production.yaml.tmpl."""

    def __init__(self, run_dir: Path, deployment: deploy.Deployment, env: dict[str, str]):
        self.run_dir = run_dir
        self.deployment = deployment
        self.env = env
        self.config = run_dir / "envoy.yaml"
        self.log = run_dir / "envoy.log"
        self.child: gw.Child | None = None

    @property
    def listen_port(self) -> int:
        return int(self.deployment.listen.rpartition(":")[2])

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.deployment.health.rpartition(':')[2]}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.deployment.admin_port}"

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.listen_port}"

    def start(self) -> "ProdGateway":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.deployment.render())
        argv = [str(gw.envoy_binary()), "-c", str(self.config), "--concurrency", "1",
                "--disable-hot-restart", "-l", "warning", "--file-flush-interval-msec", "250",
                "--drain-time-s", "2"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self.child = gw.Child("envoy", argv, env, self.log).start()
        gw._wait("healthy", self.child, lambda: http_get(self.health_url + "/healthz")[0] == 200, 60)
        return self

    def stop(self) -> None:
        if self.child:
            self.child.stop()

    def stats(self) -> dict[str, int]:
        text = http_get(self.admin_url + "/stats?format=json")[1] or b"{}"
        return {s["name"]: s["value"] for s in json.loads(text).get("stats", []) if "value" in s}

    def access_log(self) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else []:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


def http_get(url: str, method: str = "GET", timeout: float = 5) -> tuple[int | None, bytes | None]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, urllib.error.URLError):
        return None, None


def ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        p = gw.free_port()
        if p not in out:
            out.append(p)
    return out


def s3_client(endpoint: str, ca: Path | None, **config) -> "boto3.client":
    config.setdefault("s3", {"addressing_style": "path"})
    # Default settings: over https boto3 sends PUT bodies aws-chunked with a
    # trailing CRC32, which the filter decodes and checks.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", verify=str(ca) if ca else None,
        aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET, config=Config(**config))


def signed(method: str, url: str, headers: dict | None = None, body: bytes = b"") -> dict:
    """Headers of a SigV4 request (payload hash of `body`) with the test client's keys, for
    raw http.client requests."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    req.context["payload_signing_enabled"] = True
    S3SigV4Auth(Credentials(CLIENT_KEY, CLIENT_SECRET), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def prod_deployment(*, backend_url: str, ca: Path, cert: Path, key: Path, **kwargs) -> deploy.Deployment:
    listen, health, admin = ports(3)
    d = deploy.Deployment(
        backend=deploy.Backend("generic", backend_url),
        listen=f"127.0.0.1:{listen}", health=f"127.0.0.1:{health}", admin_port=admin,
        tls_cert=str(cert), tls_key=str(key), ca_bundle=str(ca),
        wasm=str(gw.default_wasm()), plugin_config=PLUGIN, allow_unauthenticated=True,
        max_heap_bytes=4 << 30)
    for k, v in kwargs.items():
        setattr(d, k, v)
    return d


def require_wasm() -> None:
    if not gw.default_wasm().is_file():
        pytest.fail(f"wasm filter not built: {gw.default_wasm()} (run `make build`)", pytrace=False)


# --------------------------------------------------------------------------
# Settings checks and envoy --mode validate (no traffic)


@pytest.mark.parametrize("args,problem", [
    (dict(provider="minio", endpoint="http://10.1.2.3:9000", addressing="virtual"), "needs a host name"),
    (dict(provider="generic", endpoint="https://[::1]:9000", addressing="virtual"), "needs a host name"),
    (dict(provider="r2", account_id="abc123", region="us-east-1"), "region `auto`"),
    (dict(provider="aws", region="auto"), "no region `auto`"),
    (dict(provider="aws"), "needs --region"),
    (dict(provider="aws", region="eu-west-1", endpoint="https://s3.us-east-2.amazonaws.com"), "in region us-east-2"),
    (dict(provider="aws", region="eu-west-1", endpoint="https://s3.amazonaws.com"), "global endpoint"),
    (dict(provider="aws", region="eu-west-1", endpoint="http://s3.eu-west-1.amazonaws.com"), "https only"),
    (dict(provider="r2", endpoint="https://s3.eu-west-1.amazonaws.com"), "not an R2"),
    (dict(provider="r2"), "needs --account-id"),
    (dict(provider="wasabi", region="eu-central-1", endpoint="https://s3.eu-west-1.wasabisys.com"), "in region eu-west-1"),
    (dict(provider="generic", endpoint="https://example.com/bucket"), "no path"),
    (dict(provider="minio"), "needs --endpoint"),
])
def test_impossible_provider_settings_are_refused(args, problem):
    d = deploy.Deployment(backend=deploy.Backend(**args), plugin_config=PLUGIN)
    with pytest.raises(deploy.SettingsError) as e:
        d.check()
    assert problem in str(e.value)


def test_impossible_mirror_settings_are_refused():
    cases = [
        (deploy.Backend("aws", region="eu-west-1"), deploy.Backend("wasabi", region="eu-central-1"), "x",
         "needs path addressing"),
        (deploy.Backend("minio", "http://127.0.0.1:9000"), deploy.Backend("minio", "http://127.0.0.1:9000"), "x",
         "same endpoint"),
        (deploy.Backend("minio", "http://127.0.0.1:9000"), deploy.Backend("minio", "http://127.0.0.1:9001"), None,
         "--mirror-credentials-file"),
    ]
    for backend, mirror, creds, problem in cases:
        d = deploy.Deployment(backend=backend, mirror=mirror, mirror_credentials_file=creds, plugin_config=PLUGIN)
        with pytest.raises(deploy.SettingsError) as e:
            d.check()
        assert problem in str(e.value)


def test_presets_resolve_to_their_documented_endpoints():
    want = {
        ("aws", "eu-west-1", None): ("https://s3.eu-west-1.amazonaws.com", "eu-west-1", "virtual"),
        ("r2", None, "0123abcd"): ("https://0123abcd.r2.cloudflarestorage.com", "auto", "path"),
        ("wasabi", "eu-central-1", None): ("https://s3.eu-central-1.wasabisys.com", "eu-central-1", "path"),
    }
    for (provider, region, account), (endpoint, r, addressing) in want.items():
        b, errors, _ = deploy.Backend(provider, region=region, account_id=account).resolved()
        assert not errors
        assert (b.endpoint, b.region, b.addressing) == (endpoint, r, addressing)
    table = deploy.presets_table()
    for p in deploy.PRESETS.values():
        assert f"`{p.name}`" in table


RENDER_CASES = {
    "aws-virtual": dict(backend=deploy.Backend("aws", region="eu-west-1")),
    "aws-path-file-credentials": dict(backend=deploy.Backend("aws", region="us-east-2", addressing="path"),
                                      credentials_file="CREDS", credentials_profile="s3crypt"),
    "r2": dict(backend=deploy.Backend("r2", account_id="0123abcd")),
    "r2-virtual-mtls": dict(backend=deploy.Backend("r2", account_id="0123abcd", addressing="virtual"),
                            client_ca="CERT"),
    "minio-http": dict(backend=deploy.Backend("minio", "http://minio.storage.svc:9000")),
    "wasabi": dict(backend=deploy.Backend("wasabi", region="eu-central-1")),
    "generic-ip": dict(backend=deploy.Backend("generic", "https://192.0.2.10:9443")),
    "mirror-minio-to-wasabi": dict(backend=deploy.Backend("minio", "https://minio.example:9000"),
                                   mirror=deploy.Backend("wasabi", region="eu-central-1"),
                                   mirror_credentials_file="CREDS", mirror_credentials_profile="mirror"),
    "mirror-aws-path-to-r2": dict(backend=deploy.Backend("aws", region="eu-west-1", addressing="path"),
                                  mirror=deploy.Backend("r2", account_id="0123abcd"),
                                  mirror_credentials_file="CREDS"),
}


@pytest.mark.parametrize("name", sorted(RENDER_CASES))
def test_rendered_production_config_passes_envoy_validate(name, certs, tmp_path):
    require_wasm()
    cert, key = certs
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n"
                     "[s3crypt]\naws_access_key_id = c\naws_secret_access_key = d\n"
                     "[mirror]\naws_access_key_id = e\naws_secret_access_key = f\n")
    settings = dict(RENDER_CASES[name])
    for k, v in settings.items():
        settings[k] = {"CREDS": str(creds), "CERT": str(cert)}.get(v, v) if isinstance(v, str) else v
    d = deploy.Deployment(plugin_config=PLUGIN_WITH_CLIENTS, wasm=str(gw.default_wasm()), tls_cert=str(cert),
                          tls_key=str(key), ca_bundle=str(cert), **settings)
    text = d.render()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "${" in line or "#{" in line]
    assert CLIENT_SECRET_ENV in text  # handed to the wasm VM
    ok, out = deploy.envoy_validate(text, env={KEK_ENV: TEST_KEY_HEX, CLIENT_SECRET_ENV: "render-test-secret-0000000000000000000000"})
    assert ok, out
    # Retries only on the GET/HEAD routes; mirroring only on PUT routes.
    import yaml
    hcm = yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for route in hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]:
        methods = [h["string_match"] for h in route["match"].get("headers", []) if h["name"] == ":method"]
        if "retry_policy" in route["route"]:
            assert methods == [{"safe_regex": {"regex": "GET|HEAD"}}], route["name"]
        if "request_mirror_policies" in route["route"]:
            assert methods == [{"exact": "PUT"}] and route["name"] == "put_mirrored"
    names = [r["name"] for r in hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]]
    assert names[-1] == "other" and ("put_mirrored" in names) == ("mirror" in name)


def test_deploy_cli_render_and_check(certs, tmp_path):
    require_wasm()
    cert, key = certs
    (tmp_path / "plugin.json").write_text(json.dumps(PLUGIN))
    out = tmp_path / "envoy.yaml"
    render = [sys.executable, str(ENVOY_DIR / "deploy.py"), "render", "--provider", "r2",
              "--account-id", "0123abcd", "--plugin-config", str(tmp_path / "plugin.json"),
              "--wasm", str(gw.default_wasm()), "--tls-cert", str(cert), "--tls-key", str(key),
              "--validate", "-o", str(out)]
    # No "clients" and no client certificates: refused unless said out loud.
    r = subprocess.run(render, capture_output=True, text=True, env={**os.environ, KEK_ENV: TEST_KEY_HEX})
    assert r.returncode == 2 and "clients: required" in r.stderr and not out.exists(), r.stderr
    r = subprocess.run(render + ["--allow-unauthenticated"], capture_output=True, text=True,
                       env={**os.environ, KEK_ENV: TEST_KEY_HEX})
    assert r.returncode == 0, r.stderr
    assert "envoy --mode validate: OK" in r.stderr and out.is_file()
    r = subprocess.run([sys.executable, str(ENVOY_DIR / "deploy.py"), "check", "--provider", "r2",
                        "--account-id", "x1", "--region", "eu"], capture_output=True, text=True)
    assert r.returncode == 2 and "region `auto`" in r.stderr


# --------------------------------------------------------------------------
# The production gateway, running


@pytest.fixture(scope="module")
def upstream_proxy(backend, certs):
    """https://localhost:<port> -> s3s-fs (the session backend), with fault injection."""
    proxy = FaultProxy(backend.port, tls=certs)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def prod(backend, upstream_proxy, certs, tmp_path_factory):
    require_wasm()
    cert, key = certs
    d = prod_deployment(backend_url=f"https://localhost:{upstream_proxy.port}", ca=cert, cert=cert, key=key,
                        rate_limit_burst=40, rate_limit_per_second=5)
    env = {"AWS_ACCESS_KEY_ID": backend.access_key, "AWS_SECRET_ACCESS_KEY": backend.secret_key,
           KEK_ENV: TEST_KEY_HEX}
    g = ProdGateway(tmp_path_factory.mktemp("prod"), d, env).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def prod_s3(prod, certs):
    return s3_client(prod.endpoint, certs[0], retries={"total_max_attempts": 1})


def test_https_round_trip_with_tls_upstream(prod, prod_s3, bucket, data_dir, upstream_proxy):
    body = os.urandom(300_000)
    prod_s3.put_object(Bucket=bucket, Key="tls/obj", Body=body)
    got = prod_s3.get_object(Bucket=bucket, Key="tls/obj")
    assert got["Body"].read() == body
    assert prod_s3.head_object(Bucket=bucket, Key="tls/obj")["ContentLength"] == len(body)
    stored = (data_dir / bucket / "tls" / "obj").read_bytes()
    assert stored != body and body[:4096] not in stored and len(stored) > len(body)
    # The upstream hop was TLS with SNI = the endpoint's host name, Host = its authority.
    assert "localhost" in upstream_proxy.sni
    assert ("PUT", f"/{bucket}/tls/obj", f"localhost:{upstream_proxy.port}") in upstream_proxy.seen
    # JSON access log: who, over which TLS version, which route.
    def logged():
        lines = [e for e in prod.access_log() if e.get("path") == f"/{bucket}/tls/obj"]
        return lines if {e["method"] for e in lines} >= {"PUT", "GET", "HEAD"} else None
    lines = wait_until(logged, what="access log lines for PUT, GET and HEAD")
    put = next(e for e in lines if e["method"] == "PUT")
    assert put["client"] == "127.0.0.1" and put["tls"].startswith("TLSv1.")
    assert put["route"] == "other" and put["status"] == 200


def test_production_copy_replace_and_empty_aws_chunked_uploads(prod, prod_s3, bucket, certs, backend_s3):
    """deploy.py gives the filter its `backend` (the s3_backend cluster): a
    CopyObject onto itself with REPLACE works, and an empty aws-chunked upload
    (what boto3 sends over HTTPS) is held until its trailer is checked."""
    import base64
    import zlib
    prod_s3.put_object(Bucket=bucket, Key="prod/replace", Body=b"data")
    prod_s3.copy_object(Bucket=bucket, Key="prod/replace", CopySource={"Bucket": bucket, "Key": "prod/replace"},
                        MetadataDirective="REPLACE", ContentType="text/x-new", Metadata={"k": "v"})
    head = prod_s3.head_object(Bucket=bucket, Key="prod/replace")
    assert (head["ContentType"], head["Metadata"]) == ("text/x-new", {"k": "v"})
    assert prod_s3.get_object(Bucket=bucket, Key="prod/replace")["Body"].read() == b"data"
    empty_crc = base64.b64encode(zlib.crc32(b"").to_bytes(4, "big")).decode()
    assert prod_s3.put_object(Bucket=bucket, Key="prod/empty", Body=b"")["ChecksumCRC32"] == empty_crc
    assert prod_s3.get_object(Bucket=bucket, Key="prod/empty", ChecksumMode="ENABLED")["ChecksumCRC32"] == empty_crc
    body = b"0\r\nx-amz-checksum-crc32:AAAAAQ==\r\n\r\n"
    conn = http.client.HTTPSConnection("127.0.0.1", prod.listen_port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(certs[0])))
    conn.putrequest("PUT", f"/{bucket}/prod/empty-bad")
    for name, value in {"Host": "localhost", "Content-Encoding": "aws-chunked", "Content-Length": str(len(body)),
                        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "x-amz-decoded-content-length": "0",
                        "x-amz-trailer": "x-amz-checksum-crc32"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    time.sleep(0.3)
    conn.send(body)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    assert resp.status == 400 and b"BadDigest" in text, text
    with pytest.raises(ClientError):
        backend_s3.head_object(Bucket=bucket, Key="prod/empty-bad")


def test_tls_listener_refuses_plain_http_and_untrusted_clients(prod, certs):
    # Plain HTTP on the TLS port: no S3 answer.
    conn = http.client.HTTPConnection("127.0.0.1", prod.listen_port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/")
        conn.getresponse()
    conn.close()
    # A client that does not trust the gateway's certificate.
    s3 = s3_client(prod.endpoint, None, retries={"total_max_attempts": 1})
    with pytest.raises(Exception) as e:
        s3.list_buckets()
    assert "SSL" in repr(e.value) or "certificate" in repr(e.value).lower()


def test_health_endpoint_and_prometheus_stats(prod, prod_s3, bucket):
    status, body = http_get(prod.health_url + "/healthz")
    assert status == 200
    assert http_get(prod.health_url + "/config_dump")[0] == 404
    # /healthz on the S3 listener is an object key like any other: it reaches the backend.
    with pytest.raises(ClientError) as e:
        prod_s3.head_object(Bucket="healthz", Key="x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    prod_s3.put_object(Bucket=bucket, Key="stats/one", Body=b"x" * 1000)
    prod_s3.get_object(Bucket=bucket, Key="stats/one")["Body"].read()

    def counters():
        text = (http_get(prod.health_url + "/stats/prometheus")[1] or b"").decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("s3crypt_"):
                name, value = line.rsplit(" ", 1)
                values[name.split("{")[0]] = float(value)
        return values if values.get("s3crypt_objects_decrypted", 0) > 0 else None
    values = wait_until(counters, what="s3crypt counters on /stats/prometheus")
    assert values["s3crypt_objects_encrypted"] > 0 and values["s3crypt_bytes_encrypted"] >= 1000


def test_rate_limit_is_per_client_address(prod, bucket, certs):
    ctx = ssl.create_default_context(cafile=str(certs[0]))

    def burst(source: str, n: int) -> list[int]:
        conn = http.client.HTTPSConnection("127.0.0.1", prod.listen_port, context=ctx, timeout=10,
                                           source_address=(source, 0))
        statuses = []
        path = f"/{bucket}/ratelimit/missing"
        for _ in range(n):
            conn.request("HEAD", path, headers=signed("HEAD", f"{prod.endpoint}{path}"))
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
        conn.close()
        return statuses

    statuses = burst("127.0.0.2", 100)  # bucket: 40, +5 per second
    assert statuses[:30] == [404] * 30, statuses
    assert statuses.count(429) >= 20, statuses
    # Another client address has its own bucket.
    assert burst("127.0.0.3", 10) == [404] * 10
    # The 429 is S3's SlowDown in XML (SDKs back off on it).
    conn = http.client.HTTPSConnection("127.0.0.1", prod.listen_port, context=ctx, timeout=10,
                                       source_address=("127.0.0.2", 0))
    for _ in range(60):
        path = f"/{bucket}/ratelimit/missing"
        conn.request("GET", path, headers=signed("GET", f"{prod.endpoint}{path}"))
        r = conn.getresponse()
        data = r.read()
        if r.status == 429:
            assert b"<Code>SlowDown</Code>" in data and r.getheader("content-type") == "application/xml"
            break
    else:
        pytest.fail("no 429 after 60 quick requests")
    conn.close()
    assert prod.stats().get("s3crypt_client.http_local_rate_limit.rate_limited", 0) >= 20


def test_get_is_retried_put_is_never_replayed(prod, prod_s3, bucket, upstream_proxy, certs):
    body = os.urandom(100_000)
    prod_s3.put_object(Bucket=bucket, Key="retry/obj", Body=body)
    before = prod.stats().get("cluster.s3_backend.upstream_rq_retry", 0)
    # The backend drops the first GET without an answer, then answers 503 to the second.
    upstream_proxy.fail("GET", "/retry/obj", "reset", times=1)
    upstream_proxy.fail("GET", "/retry/obj", "503", times=1)
    n = upstream_proxy.count("GET", "/retry/obj")
    assert prod_s3.get_object(Bucket=bucket, Key="retry/obj")["Body"].read() == body
    assert upstream_proxy.count("GET", "/retry/obj") == n + 3
    assert prod.stats()["cluster.s3_backend.upstream_rq_retry"] >= before + 2
    upstream_proxy.fail("HEAD", "/retry/obj", "reset", times=1)
    assert prod_s3.head_object(Bucket=bucket, Key="retry/obj")["ContentLength"] == len(body)

    # A PUT whose connection drops is not sent again: the client gets a 503 (in S3's
    # XML) and may retry with its own copy of the body.
    upstream_proxy.fail("PUT", "/retry/put", "reset", times=1)
    with pytest.raises(ClientError) as e:
        prod_s3.put_object(Bucket=bucket, Key="retry/put", Body=b"y" * 70_000)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert upstream_proxy.count("PUT", "/retry/put") == 1
    # ... not even when the client asks for retries with Envoy's own headers.
    ctx = ssl.create_default_context(cafile=str(certs[0]))
    upstream_proxy.fail("PUT", "/retry/raw", "reset", times=1)
    conn = http.client.HTTPSConnection("127.0.0.1", prod.listen_port, context=ctx, timeout=30)
    path = f"/{bucket}/retry/raw"
    conn.request("PUT", path, body=b"z" * 1000,
                 headers=signed("PUT", f"{prod.endpoint}{path}",
                                {"x-envoy-retry-on": "5xx,reset,connect-failure", "x-envoy-max-retries": "3"},
                                body=b"z" * 1000))
    r = conn.getresponse()
    data = r.read()
    conn.close()
    assert r.status == 503, (data, upstream_proxy.seen[-3:], upstream_proxy.faults)
    assert upstream_proxy.count("PUT", "/retry/raw") == 1


def test_prestop_drain_waits_for_in_flight_uploads(prod, bucket, certs, data_dir):
    """The Deployment's preStop hook, run against this Envoy (last test on it: it drains the
    listeners): /healthz turns 503 at once, and the hook returns only once an upload that
    was in flight has finished, successfully."""
    deployment = load_yaml_docs(ENVOY_DIR / "kubernetes" / "deployment.yaml")[0]
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"] and "/dev/tcp/127.0.0.1/9901" in command[2]
    script = command[2].replace("/dev/tcp/127.0.0.1/9901", f"/dev/tcp/127.0.0.1/{prod.deployment.admin_port}")
    script = script.replace("sleep 5", "sleep 1")
    ctx = ssl.create_default_context(cafile=str(certs[0]))
    result: dict = {}

    body = os.urandom(8 * 65536)

    def slow_upload():  # 8 x 64 KiB over ~3 s
        conn = http.client.HTTPSConnection("127.0.0.1", prod.listen_port, context=ctx, timeout=60)
        path = f"/{bucket}/drain/slow"
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        for k, v in signed("PUT", f"{prod.endpoint}{path}", {"Content-Length": str(len(body))}, body).items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(8):
            conn.send(body[i * 65536:(i + 1) * 65536])
            time.sleep(0.4)
        r = conn.getresponse()
        r.read()
        result.update(status=r.status, done=time.monotonic())
        conn.close()

    def guarded():
        try:
            slow_upload()
        except Exception as e:  # reported by the assertion below
            result["error"] = repr(e)

    upload = threading.Thread(target=guarded)
    upload.start()
    time.sleep(0.5)
    hook = subprocess.Popen(["bash", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: http_get(prod.health_url + "/healthz")[0] == 503, timeout=5, what="/healthz 503")
        hook.wait(timeout=60)
        hook_done = time.monotonic()
    finally:
        if hook.poll() is None:
            hook.kill()
    upload.join(timeout=30)
    assert hook.returncode == 0, hook.stderr.read()
    assert result.get("status") == 200, result
    assert hook_done >= result["done"] - 0.05, "the hook returned before the upload finished"
    assert (data_dir / bucket / "drain" / "slow").is_file()


# --------------------------------------------------------------------------
# Backup mirror


@pytest.fixture(scope="module")
def mirror_world(backend, certs, tmp_path_factory, start_gateway, plugin_config):
    """Primary: the session backend. Mirror: another s3s-fs with other keys, behind a proxy."""
    require_wasm()
    root = tmp_path_factory.mktemp("mirror")
    mirror = gw.LocalBackend(root / "mirror-data", log=root / "mirror-s3s-fs.log")
    mirror.access_key, mirror.secret_key = "s3crypt-mirror", "s3crypt-mirror-secret"
    mirror.start()
    proxy = FaultProxy(mirror.port)
    creds = root / "mirror-credentials"
    creds.write_text(f"[backup]\naws_access_key_id = {mirror.access_key}\n"
                     f"aws_secret_access_key = {mirror.secret_key}\n")
    cert, key = certs
    d = prod_deployment(backend_url=f"http://127.0.0.1:{backend.port}", ca=cert, cert=cert, key=key,
                        mirror=deploy.Backend("minio", f"http://127.0.0.1:{proxy.port}"),
                        mirror_credentials_file=str(creds), mirror_credentials_profile="backup")
    env = {"AWS_ACCESS_KEY_ID": backend.access_key, "AWS_SECRET_ACCESS_KEY": backend.secret_key,
           KEK_ENV: TEST_KEY_HEX}
    g = ProdGateway(root / "gw", d, env).start()
    try:
        yield {"gw": g, "mirror": mirror, "proxy": proxy,
               "s3": s3_client(g.endpoint, cert, retries={"total_max_attempts": 1}),
               # A plain gateway reading the mirror backend (same key, inline).
               "via_mirror": start_gateway(plugin_config, backend=mirror)}
    finally:
        g.stop()
        proxy.close()
        mirror.stop()


def test_mirror_stores_identical_ciphertext_decryptable_from_both(mirror_world, data_dir, make_s3):
    s3, mirror, proxy = mirror_world["s3"], mirror_world["mirror"], mirror_world["proxy"]
    bucket = gw_bucket_name("mirror")
    # CreateBucket is a PUT: mirrored too.
    s3.create_bucket(Bucket=bucket)
    wait_until(lambda: (mirror.data_dir / bucket).is_dir(), what="bucket on the mirror")
    body = os.urandom(3 * MIB + 12345)  # well over Envoy's 1 MiB buffer: the mirror streams
    s3.put_object(Bucket=bucket, Key="dir/obj", Body=body)
    primary = data_dir / bucket / "dir" / "obj"
    copy = mirror.data_dir / bucket / "dir" / "obj"
    wait_until(lambda: copy.is_file() and copy.stat().st_size == primary.stat().st_size,
               what="object on the mirror")
    assert primary.read_bytes() == copy.read_bytes(), "the mirror must hold the very same ciphertext"
    assert body[:4096] not in primary.read_bytes()
    # The mirror got its own Host (no "-shadow") and was signed with its own keys
    # (s3s-fs checks the signature: a wrong one would have left nothing there).
    assert ("PUT", f"/{bucket}/dir/obj", f"127.0.0.1:{proxy.port}") in proxy.seen
    # Both copies decrypt: through the mirroring gateway (primary) and a gateway on the mirror.
    assert s3.get_object(Bucket=bucket, Key="dir/obj")["Body"].read() == body
    via_mirror = make_s3(mirror_world["via_mirror"])
    assert via_mirror.get_object(Bucket=bucket, Key="dir/obj")["Body"].read() == body
    # Reads are not mirrored; deletes are not either (the mirror is a backup).
    assert proxy.count("GET", "/dir/obj") == 0
    s3.delete_object(Bucket=bucket, Key="dir/obj")
    assert not primary.exists()
    time.sleep(0.5)
    assert copy.is_file() and proxy.count("DELETE", "/dir/obj") == 0


def test_mirror_failure_or_slowness_never_fails_the_primary(mirror_world, data_dir):
    s3, mirror, proxy, g = mirror_world["s3"], mirror_world["mirror"], mirror_world["proxy"], mirror_world["gw"]
    bucket = gw_bucket_name("mirror-fail")
    s3.create_bucket(Bucket=bucket)
    wait_until(lambda: (mirror.data_dir / bucket).is_dir(), what="bucket on the mirror")
    # Mirror answers 503, then drops the connection: the primary write succeeds anyway.
    proxy.fail("PUT", "/down-503", "503")
    proxy.fail("PUT", "/down-reset", "reset")
    for key in ("down-503", "down-reset"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"important")
        assert (data_dir / bucket / key).is_file()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"important"
    # A mirror that takes 3 s to answer does not delay the client's answer.
    proxy.fail("PUT", "/slow", "delay:3")
    t0 = time.monotonic()
    s3.put_object(Bucket=bucket, Key="slow", Body=b"x" * 1000)
    assert time.monotonic() - t0 < 2.0
    wait_until(lambda: (mirror.data_dir / bucket / "slow").is_file(), timeout=10, what="slow mirror copy")
    stats = g.stats()
    assert stats.get("cluster.s3_mirror.upstream_rq_503", 0) >= 1
    assert stats.get("cluster.s3_mirror.upstream_rq_2xx", 0) >= 1


def gw_bucket_name(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


# --------------------------------------------------------------------------
# Kubernetes and Istio manifests (offline schema validation)


def load_yaml_docs(path: Path) -> list[dict]:
    import yaml
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


K8S_DIR = ENVOY_DIR / "kubernetes"
ISTIO_DIR = ENVOY_DIR / "istio"
K8S_VERSIONS = ["1.30.0", "1.37.0"]


def test_kubernetes_manifests_match_the_kubernetes_schemas():
    """Strict JSON-schema validation (unknown fields rejected), PyPI kubernetes-validate."""
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    files = sorted(K8S_DIR.glob("*.yaml")) + [ISTIO_DIR / "workload-example.yaml"]
    kinds = set()
    for path in files:
        for doc in load_yaml_docs(path):
            kinds.add(doc["kind"])
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): "
                                f"{e.path}: {e.message}")
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}
    # The validator does reject a misspelt field.
    bad = load_yaml_docs(K8S_DIR / "deployment.yaml")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kubernetes_deployment_hardening_and_wiring():
    deployment = load_yaml_docs(K8S_DIR / "deployment.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = envoy["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert envoy["resources"]["limits"]["memory"] and envoy["resources"]["requests"]["cpu"]
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert envoy["livenessProbe"]["httpGet"]["port"] == "health"
    # Every secret-backed variable the plugin JSON and the signer need is set from a Secret.
    plugin = json.loads((K8S_DIR / "plugin.json").read_text())
    env = {e["name"]: e for e in envoy["env"]}
    for name in deploy.env_names(plugin) + ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        assert "secretKeyRef" in env[name]["valueFrom"], name
    secrets = {d["metadata"]["name"]: d for d in load_yaml_docs(K8S_DIR / "secret.example.yaml")}
    for e in env.values():
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    # The ConfigMap's envoy.yaml listens where the Deployment's ports and probes look,
    # and uses the mounted paths.
    cm = load_yaml_docs(K8S_DIR / "configmap.yaml")[0]
    import yaml
    cfg = yaml.safe_load(cm["data"]["envoy.yaml"])
    listeners = {l["name"]: l["address"]["socket_address"]["port_value"] for l in cfg["static_resources"]["listeners"]}
    assert listeners == {"s3crypt": ports["s3"], "s3crypt_health": ports["health"]}
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    admin_port = cfg["admin"]["address"]["socket_address"]["port_value"]
    assert f"/dev/tcp/127.0.0.1/{admin_port}" in envoy["lifecycle"]["preStop"]["exec"]["command"][2]
    mounts = {m["name"]: m["mountPath"] for m in envoy["volumeMounts"]}
    text = cm["data"]["envoy.yaml"]
    assert f'{mounts["filter"]}/s3crypt_filter.wasm' in text and f'{mounts["tls"]}/tls.crt' in text
    assert envoy["args"][:2] == ["--config-path", f'{mounts["envoy-config"]}/envoy.yaml']
    assert json.loads(cm["data"]["plugin.json"]) == plugin
    svc = load_yaml_docs(K8S_DIR / "service.yaml")[0]
    pdb = load_yaml_docs(K8S_DIR / "pdb.yaml")[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()


def test_kubernetes_configmap_is_current_and_passes_envoy_validate(certs, tmp_path):
    """The ConfigMap is exactly what its header command renders, and Envoy accepts it
    (with the in-pod paths pointed at local test files)."""
    require_wasm()
    text = (K8S_DIR / "configmap.yaml").read_text()
    command = shlex.split(text.splitlines()[1].lstrip("# "))
    assert command[:3] == ["python3", "envoy/deploy.py", "render"]
    out = tmp_path / "configmap.yaml"
    i = command.index("-o")
    command[i + 1] = str(out)
    r = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines()[2:] == text.splitlines()[2:], \
        "envoy/kubernetes/configmap.yaml is stale: rerun the command in its header"
    envoy_yaml = load_yaml_docs(K8S_DIR / "configmap.yaml")[0]["data"]["envoy.yaml"]
    cert, key = certs
    local = (envoy_yaml.replace("/etc/s3crypt/tls/tls.crt", str(cert))
             .replace("/etc/s3crypt/tls/tls.key", str(key))
             .replace("/etc/s3crypt/filter/s3crypt_filter.wasm", str(gw.default_wasm())))
    assert str(cert) in local and str(gw.default_wasm()) in local
    ok, out_text = deploy.envoy_validate(local, env={"S3CRYPT_KEK_2026_11": TEST_KEY_HEX,
                                                     "S3CRYPT_CLIENT_ADMIN_SECRET": "validate-secret-00000000000000000000"})
    assert ok, out_text
    # The in-cluster Service answers only clients that sign with a gateway key.
    assert json.loads((K8S_DIR / "plugin.json").read_text())["clients"]


ISTIO_MODELS = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): "extensions.istio.io/v1alpha1",
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): "networking.istio.io/v1alpha3",
    ("networking.istio.io/v1", "ServiceEntry"): "networking.istio.io/v1",
    ("networking.istio.io/v1", "DestinationRule"): "networking.istio.io/v1",
    ("networking.istio.io/v1", "VirtualService"): "networking.istio.io/v1",
}
ISTIO_NPM = "@kubernetes-models/istio@3.0.1"  # models generated from Istio 1.29.2's CRDs


@pytest.fixture(scope="module")
def istio_models():
    """Node + the npm package with Istio's CRD schemas (compiled ajv validators)."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed: Istio CRD schema validation needs npm @kubernetes-models/istio")
    prefix = gw.cache_dir() / "npm-istio"
    pkg = prefix / "node_modules" / "@kubernetes-models" / "istio"
    if not (pkg / "package.json").is_file() or \
            json.loads((pkg / "package.json").read_text())["version"] != ISTIO_NPM.rpartition("@")[2]:
        prefix.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                            "--loglevel=error", ISTIO_NPM], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.skip(f"could not install {ISTIO_NPM} from npm: {r.stderr.strip()[-500:]}")
    script = prefix / "s3crypt-validate.mjs"
    script.write_text(
        "import { readFileSync } from 'node:fs';\n"
        "const docs = JSON.parse(readFileSync(0, 'utf8'));\n"
        "const out = [];\n"
        "for (const [module, kind, doc] of docs) {\n"
        "  const mod = await import(`@kubernetes-models/istio/${module}`);\n"
        "  try { new mod[kind](doc).validate(); out.push(null); }\n"
        "  catch (e) { out.push(String(e.message || e)); }\n"
        "}\n"
        "console.log(JSON.stringify(out));\n")

    def validate(docs: list[dict]) -> list[str | None]:
        batch = [[ISTIO_MODELS[(d["apiVersion"], d["kind"])], d["kind"], d] for d in docs]
        r = subprocess.run(["node", str(script)], input=json.dumps(batch), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def declared_fields(module: str, kind: str) -> dict:
        return parse_dts((pkg / module / f"{kind}.d.ts").read_text())

    return validate, declared_fields


def parse_dts(text: str) -> dict:
    """The field tree of a kubernetes-models .d.ts interface: {"props": {name: node}} for
    objects, {"map": node} for string-keyed maps, None for leaves and free-form objects."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    start = text.index("{", text.index("export interface I"))
    tokens = re.findall(r'"[^"]*"|\[key: string\]|Array<|[{}<>;:?|()&,]|[^\s{}<>;:?|()&,"]+', text[start:])
    pos = 0

    def parse_type():
        # The first object / Array<...> of the type; intersections and unions that
        # follow (e.g. "& (Exclude<{...}, ...>)" for one-of constraints) are skipped.
        nonlocal pos
        node = None
        depth = 0
        while True:
            t = tokens[pos]
            if depth == 0:
                if t in (";", ">", "}"):
                    return node
                if t == "{" and node is None:
                    node = parse_object()
                    continue
                if t == "Array<" and node is None:
                    pos += 1
                    node = parse_type()
                    assert tokens[pos] == ">", tokens[pos - 3:pos + 3]
                    pos += 1
                    continue
            if t in ("(", "<", "{", "Array<"):
                depth += 1
            elif t in (")", ">", "}"):
                depth -= 1
            pos += 1

    def parse_object():
        nonlocal pos
        assert tokens[pos] == "{"
        pos += 1
        props: dict = {}
        map_node = "none"
        while tokens[pos] != "}":
            t = tokens[pos]
            if t == "[key: string]":
                pos += 2  # ":" follows
                map_node = parse_type()
            else:
                name = t.strip('"')
                pos += 1
                if tokens[pos] == "?":
                    pos += 1
                assert tokens[pos] == ":", (name, tokens[pos - 3:pos + 3])
                pos += 1
                props[name] = parse_type()
            if tokens[pos] == ";":
                pos += 1
        pos += 1
        if map_node != "none":
            return {"map": map_node}
        return {"props": props} if props else None

    return parse_object()


def unknown_fields(value, node, path: str = "") -> list[str]:
    if node is None:
        return []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in unknown_fields(v, node, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    if "map" in node:
        return [p for k, v in value.items() for p in unknown_fields(v, node["map"], f"{path}.{k}")]
    out = []
    for k, v in value.items():
        if k not in node["props"]:
            out.append(f"{path}.{k}")
        else:
            out += unknown_fields(v, node["props"][k], f"{path}.{k}")
    return out


def istio_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(ISTIO_DIR.glob("*.yaml")) for d in load_yaml_docs(p)
            if d["apiVersion"].split("/")[0].endswith("istio.io")]


def test_istio_manifests_match_the_istio_crd_schemas(istio_models):
    validate, declared_fields = istio_models
    docs = istio_docs()
    assert {d["kind"] for _, d in docs} == {"WasmPlugin", "EnvoyFilter", "ServiceEntry", "DestinationRule",
                                           "VirtualService"}
    for (name, doc), error in zip(docs, validate([d for _, d in docs])):
        assert error is None, f"{name}: {doc['kind']}/{doc['metadata']['name']}: {error}"
    # CRD schemas do not forbid unknown fields (the API server prunes them silently):
    # check the spec against the fields the same package declares.
    for name, doc in docs:
        fields = declared_fields(ISTIO_MODELS[(doc["apiVersion"], doc["kind"])], doc["kind"])
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        assert unknown_fields(doc["spec"], fields["props"]["spec"], "spec") == [], f"{name}: {doc['kind']}"
    # Both checks bite.
    wasm = next(d for _, d in docs if d["kind"] == "WasmPlugin")
    bad = json.loads(json.dumps(wasm))
    bad["spec"]["failStrategy"] = "FAIL_SOMETIMES"
    assert validate([bad])[0] is not None
    bad = json.loads(json.dumps(wasm))
    bad["spec"]["allowOnHeadersStopIteration"] = True
    assert unknown_fields(bad["spec"], declared_fields("extensions.istio.io/v1alpha1", "WasmPlugin")
                          ["props"]["spec"], "spec") == ["spec.allowOnHeadersStopIteration"]


def test_istio_plugin_settings_agree_with_the_kubernetes_ones():
    docs = {d["kind"]: d for _, d in istio_docs()}
    # The same settings, except that the sidecar serves only its own pod's
    # application (outbound): it has no client keys of its own.
    plugin = json.loads((K8S_DIR / "plugin.json").read_text())
    del plugin["clients"]
    wasm = docs["WasmPlugin"]["spec"]
    assert wasm["failStrategy"] == "FAIL_CLOSE"
    assert wasm["pluginConfig"] == plugin
    assert [e["name"] for e in wasm["vmConfig"]["env"]] == deploy.env_names(plugin)
    patches = docs["EnvoyFilter"]["spec"]["configPatches"]
    wasm_filter = patches[0]["patch"]["value"]["typed_config"]["config"]
    assert json.loads(wasm_filter["configuration"]["value"]) == plugin
    assert wasm_filter["allow_on_headers_stop_iteration"] is False
    assert wasm_filter["failure_policy"] == "FAIL_RELOAD"
    assert wasm_filter["vm_config"]["environment_variables"]["host_env_keys"] == deploy.env_names(plugin)
    port = docs["ServiceEntry"]["spec"]["ports"][0]["number"]
    assert {p["match"]["listener"]["portNumber"] for p in patches} == {port}
    assert wasm["match"][0]["ports"] == [{"number": port}]
    host = docs["ServiceEntry"]["spec"]["hosts"][0]
    assert patches[1]["patch"]["value"]["typed_config"]["host_rewrite"] == host
    assert docs["DestinationRule"]["spec"]["host"] == host
    routes = docs["VirtualService"]["spec"]["http"]
    assert routes[0]["match"][0]["method"] == {"regex": "GET|HEAD"} and routes[0]["retries"]["attempts"] > 0
    assert routes[1]["retries"]["attempts"] == 0 and all(r["timeout"] == "0s" for r in routes)


@pytest.fixture(scope="module")
def sidecar_like(backend, tmp_path_factory):
    """The two HTTP filters of envoy/istio/envoyfilter.yaml, as the EnvoyFilter inserts them
    (wasm, then aws_request_signing with host_rewrite, then the router), in a plain-HTTP
    Envoy in front of s3s-fs: the sidecar's filter chain without Istio."""
    require_wasm()
    import yaml
    envoy_filter = next(d for _, d in istio_docs() if d["kind"] == "EnvoyFilter")
    filters = [json.loads(json.dumps(p["patch"]["value"])) for p in envoy_filter["spec"]["configPatches"]]
    filters[0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(gw.default_wasm())
    filters[1]["typed_config"]["host_rewrite"] = f"127.0.0.1:{backend.port}"
    filters[1]["typed_config"]["region"] = "us-east-1"
    listen, admin = ports(2)
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "sidecar_8480", "address": {"socket_address": {"address": "127.0.0.1",
                                                                                  "port_value": listen}},
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": {
                                   "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                            "http_connection_manager.v3.HttpConnectionManager",
                                   "stat_prefix": "sidecar", "normalize_path": False, "merge_slashes": False,
                                   "route_config": {"virtual_hosts": [{"name": "s3", "domains": ["*"], "routes": [
                                       {"match": {"prefix": "/"}, "route": {"cluster": "provider", "timeout": "0s"}}]}]},
                                   "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                                       "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                               }}]}]}],
            "clusters": [{"name": "provider", "type": "STATIC", "connect_timeout": "5s",
                          "load_assignment": {"cluster_name": "provider", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                           "port_value": backend.port}}}}]}]}}],
        },
    }
    text = yaml.safe_dump(config)
    env = {"S3CRYPT_KEK_2026_11": TEST_KEY_HEX, "AWS_ACCESS_KEY_ID": backend.access_key,
           "AWS_SECRET_ACCESS_KEY": backend.secret_key}
    ok, out = deploy.envoy_validate(text, env=env)
    assert ok, out
    run = tmp_path_factory.mktemp("sidecar")
    (run / "envoy.yaml").write_text(text)
    child = gw.Child("envoy", [str(gw.envoy_binary()), "-c", str(run / "envoy.yaml"), "--concurrency", "1",
                               "--disable-hot-restart", "-l", "warning"],
                     {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, run / "envoy.log").start()
    gw._wait("ready", child, lambda: http_get(f"http://127.0.0.1:{admin}/ready")[1] == b"LIVE\n", 60)
    yield f"http://127.0.0.1:{listen}"
    child.stop()


def test_istio_envoyfilter_chain_encrypts_and_signs(sidecar_like, bucket, data_dir, start_gateway, make_s3,
                                                    plugin_config):
    s3 = s3_client(sidecar_like, None, retries={"total_max_attempts": 1})
    body = os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="istio/obj", Body=body)
    assert s3.get_object(Bucket=bucket, Key="istio/obj")["Body"].read() == body
    stored = (data_dir / bucket / "istio" / "obj").read_bytes()
    assert body[:4096] not in stored and len(stored) > len(body)
    # Written with the Kubernetes key id ("2026-11"): not readable with the test key's id,
    # but the format is the gateway's: the conftest gateway sees an envelope it cannot open.
    with pytest.raises(ClientError):
        make_s3(start_gateway(plugin_config)).get_object(Bucket=bucket, Key="istio/obj")["Body"].read()
