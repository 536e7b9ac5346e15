"""The client compatibility matrix, shared by the per-client modules
(integration/test_client_*.py, one per client): real S3 clients through the
gateway (real Envoy + the filter + s3s-fs), each doing what its users do, with
its own integrity checks on (nothing disabled: only the endpoint, path-style
addressing and test keys).

Each client checks byte equality with its source files, the sizes it lists, and
that the backend holds ciphertext that the independent decoder
(s3crypt_format.decrypt_object) decrypts with the test key.

Clients come from scripts/install_clients.sh (run by `make test`), which writes
$S3CRYPT_CACHE/clients.status; a client is skipped only when the installer
recorded it as unavailable on this platform, and the skip says why.

The gateway here reaches s3s-fs through clients/s3s_shim.py, which fixes three
places where s3s-fs 0.14.1 answers unlike S3 (listings without ETags, an empty
`delimiter=` taken as a delimiter, 500 for HEAD of a "folder" key); see its
docstring. The HTTPS rows use the development Envoy configuration with a TLS
listener added (certificate made with openssl at test time), because boto3 and
awscli send aws-chunked bodies only over HTTPS.

Known failures are `xfail(strict=True)` tests: they name the client, the exact
error, and turn into failures (to be moved to the passing rows) once the gateway
is fixed. MATRIX below is the README's "Client compatibility" table, and
test_client_matrix.py keeps the two equal.

Fixtures (module scope: each client module gets its own gateway): `gwy` (the
gateway, client authentication on, in front of s3s-fs through the shim), `env`
(client process environment), `tls_gateway` (the same over HTTPS, no client
authentication).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "clients"))
import gateway as gw  # noqa: E402  (scripts/gateway.py)
import s3crypt_format  # noqa: E402
from conftest import CLIENT_KEY, CLIENT_SECRET, REGION, TEST_KEY_HEX  # noqa: E402,F401  (REGION: for the client modules)
from s3s_shim import S3sShim  # noqa: E402  (integration/clients/s3s_shim.py)

MiB = 1024 * 1024
CLIENTS_DIR = HERE / "clients"
VENV_BIN = Path(sys.executable).parent
AWS_V2 = Path("/usr/bin/aws")
S3CMD = Path("/usr/bin/s3cmd")

# --------------------------------------------------------------------------
# The matrix (README "Client compatibility"): client, operations, result.
# "works" rows are the tests below that must pass; "fails" rows are the
# strict xfail tests.

MATRIX = [
    ("rclone", "Debian `rclone`",
     "`copy` up (40 MiB single PUT with Content-MD5; 40 MiB multipart with `--s3-upload-cutoff 16Mi`), "
     "`check`, `check --download`, `md5sum`, `lsl`, `copy` down, `sync` (second run transfers nothing), "
     "`cat`, `deletefile`, `delete`; MD5 verified on every transfer",
     "works"),
    ("rclone", "Debian `rclone`",
     "multipart upload with `use_multipart_etag` on (the default for providers AWS, Minio, Ceph, ...; "
     "`--s3-use-multipart-etag=true` with provider Other)",
     "fails: `multipart upload corrupted: Etag differ`"),
    ("s3cmd", "Debian `s3cmd`",
     "`put` (single PUT, also 20 MiB with `--disable-multipart`), `get`, `ls`, `ls -r`, `info`, `cp`, "
     "`sync` up and down (second runs transfer nothing), `del`",
     "works"),
    ("s3cmd", "Debian `s3cmd`",
     "`put` of a file above 15 MiB (multipart, the default): part ETags carry a `-1` mark, so s3cmd "
     "does not compare them with its MD5s",
     "works"),
    ("minio-py", "PyPI `minio`",
     "`fput_object` 1 KB and 18 MiB (multipart, 5 MiB parts), `put_object` (stream), `fget_object`, "
     "`get_object`, `stat_object`, `list_objects` (recursive and by prefix), `remove_object`",
     "works"),
    ("minio-py", "PyPI `minio`",
     "`presigned_get_object` fetched with plain HTTP (the gateway strips the URL's own signature and signs "
     "for the backend)",
     "works"),
    ("AWS SDK for JavaScript v3", "npm `@aws-sdk/client-s3`, `@aws-sdk/lib-storage`",
     "PutObject with a stream (aws-chunked, CRC32 trailer, over plain HTTP; also an empty one) and with a Buffer (CRC32 header), "
     "`Upload` 20 MiB (5 MiB parts, CRC32 per part), GetObject with checksum validation, HeadObject, "
     "ListObjectsV2, DeleteObject",
     "works"),
    ("awscli v2", "Debian `awscli`",
     "`s3 cp` 20 MiB up (multipart) and down, `s3 sync` (second run transfers nothing), `s3 mv`, `s3 ls`, "
     "`s3api head-object`, `s3api copy-object --metadata-directive REPLACE`",
     "works"),
    ("awscli v1", "PyPI `awscli`",
     "over HTTPS (aws-chunked, CRC32 trailers): `s3 cp` 20 MiB up and down, `s3 sync` with an empty file "
     "(second run transfers nothing), `s3 mv`, `s3api head-object`, `s3api copy-object --metadata-directive "
     "REPLACE`; over HTTP: test_encryption.py, test_multipart.py",
     "works"),
    ("boto3", "PyPI `boto3`",
     "over HTTPS with default settings: `put_object` (aws-chunked, CRC32 trailer; also of an empty body), "
     "`get_object` with checksum validation, `copy_object` onto itself with `REPLACE`, `delete_object`, "
     "`upload_file` 20 MiB (aws-chunked parts), `download_file`, `head_object`; over HTTP: the other test modules",
     "works"),
]


def matrix_markdown() -> str:
    lines = ["| client | from | operations | result |", "|---|---|---|---|"]
    for client, source, ops, result in MATRIX:
        lines.append(f"| {client} | {source} | {ops} | {result} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Installed clients


def status_file() -> Path:
    return gw.cache_dir() / "clients.status"


def read_status() -> dict[str, tuple[str, str]]:
    path = status_file()
    if not path.is_file():
        pytest.fail(f"{path} not found: run scripts/install_clients.sh (make test does)", pytrace=False)
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, state, detail = (line.split("\t") + ["", ""])[:3]
            out[name] = (state, detail)
    return out


def require_client(name: str) -> str:
    """The client's version; skips if the installer found it unavailable here."""
    state, detail = read_status().get(name, ("missing", ""))
    if state == "unavailable":
        pytest.skip(f"{name} is unavailable on this platform (scripts/install_clients.sh): {detail}")
    if state != "ok":
        pytest.fail(f"{name} is not in {status_file()}: run scripts/install_clients.sh", pytrace=False)
    return detail


# --------------------------------------------------------------------------
# Helpers


def run(argv: list, env: dict, *, timeout: float = 300, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(str(a) for a in argv)} exited with {r.returncode}:\n"
                             f"--- stderr ---\n{r.stderr[-6000:]}\n--- stdout ---\n{r.stdout[-3000:]}")
    return r


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_stored_ciphertext(backend_s3, data_dir: Path, bucket: str, key: str, plaintext: bytes) -> None:
    """The backend holds ciphertext of `plaintext` that the independent decoder opens."""
    envelope = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"].get("s3crypt")
    assert envelope, f"{bucket}/{key}: no envelope in the stored metadata"
    stored = (data_dir / bucket / key).read_bytes()
    assert len(stored) > len(plaintext), f"{bucket}/{key}: stored object is not longer than the plaintext"
    if len(plaintext) >= 64:
        assert plaintext[:64] not in stored, f"{bucket}/{key}: plaintext visible in the stored object"
    assert s3crypt_format.decrypt_object(bytes.fromhex(TEST_KEY_HEX), envelope, stored) == plaintext


def write_tree(root: Path, files: dict[str, int]) -> dict[str, bytes]:
    out = {}
    for rel, size in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        p.write_bytes(data)
        out[rel] = data
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------
# Fixtures


class _ShimmedBackend(gw.LocalBackend):
    """The session's s3s-fs, reached by the gateway through the shim."""

    def __init__(self, real: gw.LocalBackend, shim: S3sShim):
        super().__init__(real.data_dir, log=real.log)
        self.child, self.port, self.shim_port = real.child, real.port, shim.port
        self.access_key, self.secret_key = real.access_key, real.secret_key

    def upstream(self) -> gw.Upstream:
        return gw.Upstream("http", "127.0.0.1", self.shim_port)

    def start(self, timeout: float = 20.0) -> "_ShimmedBackend":
        return self

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def shim(backend):
    s = S3sShim(backend.port, backend.data_dir, backend.access_key, backend.secret_key)
    yield s
    s.close()


@pytest.fixture(scope="module")
def gwy(start_gateway, plugin_config, backend, shim):
    """The gateway (filter on, TEST_KEY_HEX) in front of s3s-fs-through-the-shim,
    with client authentication on: every client's SigV4 signatures (headers,
    presigned URLs, aws-chunked chunk signatures) are verified by the filter."""
    config = dict(plugin_config, clients=[{"access_key_id": CLIENT_KEY, "secret_access_key": CLIENT_SECRET,
                                           "grants": [{"bucket": "*", "actions": ["read", "write", "delete", "list"]}]}])
    return start_gateway(config, backend=_ShimmedBackend(backend, shim))


@pytest.fixture(scope="module")
def env(_aws_env) -> dict[str, str]:
    """Environment for client processes: no developer settings, test keys, HOME in tmp."""
    return dict(_aws_env)



# --------------------------------------------------------------------------
# HTTPS: boto3 and awscli v1 with their defaults send aws-chunked bodies


class TlsGateway(gw.Gateway):
    """The development gateway with a TLS listener (the rest of the config unchanged)."""

    def __init__(self, *args, cert: Path, key: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.cert, self.key = cert, key

    def render(self) -> str:
        import yaml
        doc = yaml.safe_load(super().render())
        listeners = [li for li in doc["static_resources"]["listeners"] if li["name"] == "s3crypt"]
        assert listeners, "no s3crypt listener in the rendered configuration"
        for chain in listeners[0]["filter_chains"]:
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {
                        "alpn_protocols": ["http/1.1"],
                        "tls_certificates": [{"certificate_chain": {"filename": str(self.cert)},
                                              "private_key": {"filename": str(self.key)}}],
                    },
                },
            }
        return yaml.safe_dump(doc, sort_keys=False)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.listen_port}"


@pytest.fixture(scope="module")
def tls_gateway(backend, plugin_config, tmp_path_factory):
    require_client("openssl")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", d / "key.pem", "-out", d / "cert.pem", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    wasm = gw.Settings.from_env().wasm
    if not Path(wasm).is_file():
        pytest.fail(f"wasm filter not built: {wasm} (run `make build`)", pytrace=False)
    g = TlsGateway(plugin_config, backend=backend, run_dir=d / "gw", listen="127.0.0.1:0",
                   admin="127.0.0.1:0", cert=d / "cert.pem", key=d / "key.pem").start()
    g.ca = d / "cert.pem"
    yield g
    g.stop()
