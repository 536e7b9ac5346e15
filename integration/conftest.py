"""Fixtures for the integration tests: real Envoy, real clients, s3s-fs as the backend.

Everything runs on loopback with free ports, in pytest's temporary directories.
The processes come from scripts/gateway.py (LocalBackend, Gateway); see its
docstring for what they do.

Session fixtures:
  backend              LocalBackend: one s3s-fs for the session (path-style, IP Host)
  data_dir             its folder: an object is the plain file data_dir/bucket/key
  backend_s3           boto3 client straight to s3s-fs with the backend's keys:
                       put or read raw stored bytes
  plugin_config        the filter configuration dict `gateway` runs with (fixed test key)
  start_gateway        start_gateway(plugin_config=None, *, no_filter=False, backend=None,
                       **Gateway kwargs) -> a started Gateway on the session backend
                       (or the given one); stopped at the end of the session. Start a
                       second one with another config (e.g. a wrong key) at any time.
  start_backend        start_backend(**LocalBackend kwargs) -> another s3s-fs (e.g.
                       virtual=True, or on the same data_dir); stopped at session end
  gateway              a Gateway with the filter and plugin_config (needs the wasm)
  passthrough_gateway  a Gateway without the filter (--no-filter)
  make_s3              make_s3(gateway, **botocore Config kwargs) -> boto3 client with
                       default settings, path-style addressing, us-east-1, test/test
  aws                  aws(gateway, *args, check=True, input=None) -> CompletedProcess:
                       runs the venv's awscli against the gateway (test/test keys)
  new_bucket           new_bucket(prefix="t") -> name of a fresh bucket on the backend

Module fixture:
  bucket               a bucket created for the test module, unique name

The tests never see the developer's AWS configuration: AWS_* variables are
dropped and AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE point to empty files.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import gateway as gw  # noqa: E402  (scripts/gateway.py)

Gateway = gw.Gateway
LocalBackend = gw.LocalBackend

CLIENT_KEY, CLIENT_SECRET = gw.CLIENT_ACCESS_KEY, gw.CLIENT_SECRET_KEY
REGION = "us-east-1"
# A fixed key for the filter under test (32 bytes, hex).
TEST_KEY_HEX = "5e" * 32


def _isolate_aws_environment(tmp: Path) -> dict[str, str]:
    """Drop the developer's AWS_* settings; return the env for awscli runs."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    empty = tmp / "aws-empty"
    empty.write_text("")
    os.environ["AWS_CONFIG_FILE"] = str(empty)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(empty)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    cli_config = tmp / "aws-cli-config"
    cli_config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": CLIENT_KEY,
        "AWS_SECRET_ACCESS_KEY": CLIENT_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(cli_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }


@pytest.fixture(scope="session")
def _aws_env(tmp_path_factory) -> dict[str, str]:
    return _isolate_aws_environment(tmp_path_factory.mktemp("aws"))


@pytest.fixture(scope="session")
def start_backend(tmp_path_factory, _aws_env):
    started: list[LocalBackend] = []

    def start(data_dir: Path | None = None, **kwargs) -> LocalBackend:
        run = tmp_path_factory.mktemp("backend")
        b = LocalBackend(data_dir or run / "data", log=run / "s3s-fs.log", **kwargs)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.stop()


@pytest.fixture(scope="session")
def backend(start_backend) -> LocalBackend:
    return start_backend()


@pytest.fixture(scope="session")
def data_dir(backend) -> Path:
    return backend.data_dir


@pytest.fixture(scope="session")
def backend_s3(backend):
    return backend.client()


@pytest.fixture(scope="session")
def plugin_config() -> dict:
    return gw.default_plugin_config(TEST_KEY_HEX)


@pytest.fixture(scope="session")
def start_gateway(backend, tmp_path_factory):
    session_backend = backend
    started: list[Gateway] = []

    def start(plugin_config: dict | None = None, *, no_filter: bool = False,
              backend: LocalBackend | str | None = None, **kwargs) -> Gateway:
        if not no_filter and plugin_config is None:
            raise ValueError("start_gateway: give a plugin_config, or no_filter=True")
        if not no_filter:
            wasm = Path(kwargs.get("wasm") or gw.Settings.from_env().wasm)
            if not wasm.is_file():
                pytest.fail(f"wasm filter not built: {wasm} (run `make build`)", pytrace=False)
        g = Gateway(plugin_config, no_filter=no_filter, backend=backend or session_backend,
                    run_dir=tmp_path_factory.mktemp("gateway"),
                    listen="127.0.0.1:0", admin="127.0.0.1:0", **kwargs)
        started.append(g)
        return g.start()

    yield start
    for g in started:
        g.stop()


@pytest.fixture(scope="session")
def gateway(start_gateway, plugin_config) -> Gateway:
    return start_gateway(plugin_config)


@pytest.fixture(scope="session")
def passthrough_gateway(start_gateway) -> Gateway:
    return start_gateway(no_filter=True)


@pytest.fixture(scope="session")
def make_s3(_aws_env):
    import boto3
    from botocore.config import Config

    def make(gateway: Gateway, **config) -> "boto3.client":
        config.setdefault("s3", {"addressing_style": "path"})
        return boto3.session.Session().client(
            "s3", endpoint_url=gateway.endpoint, region_name=REGION,
            aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
            config=Config(**config))

    return make


@pytest.fixture(scope="session")
def aws(_aws_env):
    exe = Path(sys.executable).parent / "aws"
    if not exe.exists():
        pytest.fail(f"awscli not found next to {sys.executable}: run scripts/bootstrap.sh", pytrace=False)

    def run(gateway: Gateway, *args: str, check: bool = True, input: bytes | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        argv = [str(exe), "--endpoint-url", gateway.endpoint, *args]
        r = subprocess.run(argv, env=_aws_env, input=input, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv[1:])} failed with status {r.returncode}:\n"
                                 f"{r.stderr.decode(errors='replace')}{r.stdout.decode(errors='replace')}")
        return r

    return run


def _bucket_name(prefix: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "t"
    return f"{base}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def new_bucket(backend_s3):
    def make(prefix: str = "t") -> str:
        name = _bucket_name(prefix)
        backend_s3.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture(scope="module")
def bucket(request, new_bucket) -> str:
    return new_bucket(request.module.__name__.rpartition(".")[2].removeprefix("test_"))
