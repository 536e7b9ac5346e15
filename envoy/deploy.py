#!/usr/bin/env python3
"""Provider presets, settings checks and rendering for envoy/production.yaml.tmpl.

    python3 envoy/deploy.py presets
    python3 envoy/deploy.py check  --provider r2 --endpoint https://ACCOUNT.r2.cloudflarestorage.com
    python3 envoy/deploy.py render --provider aws --region eu-west-1 \\
        --plugin-config plugin.json --wasm /etc/s3crypt/s3crypt_filter.wasm \\
        --tls-cert /etc/s3crypt/tls/tls.crt --tls-key /etc/s3crypt/tls/tls.key \\
        [--mirror-provider wasabi --mirror-region eu-central-1 \\
         --mirror-credentials-file /etc/s3crypt/mirror/credentials] \\
        [--validate] -o envoy.yaml

`check` and `render` refuse impossible combinations (exit status 2, one line per
problem, e.g. virtual-hosted addressing with an IP endpoint, R2 with a region
other than `auto`) and print warnings for risky ones. `--validate` runs
`envoy --mode validate` on the result (the envoy binary from PATH, $ENVOY, or the
project's venv).

Python 3.10+, standard library only; the template syntax is the one of
scripts/gateway.py (render_template), imported from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATE = HERE / "production.yaml.tmpl"
sys.path.insert(0, str(REPO / "scripts"))
from gateway import env_names, render_template  # noqa: E402  (scripts/gateway.py)


class SettingsError(Exception):
    """One or more impossible settings; .problems lists them."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    endpoint: str                 # pattern shown in the table
    default_endpoint: str | None  # format string with {region} / {account_id}; None: required
    default_region: str | None    # None: --region required
    default_addressing: str
    addressings: tuple[str, ...]
    unsigned_payload: str         # what the table says
    https_only: bool
    note: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("aws", "AWS S3", "https://s3.<region>.amazonaws.com",
           "https://s3.{region}.amazonaws.com", None, "virtual", ("virtual", "path"),
           "yes", True,
           "region required and must match the endpoint; bucket names with dots need path addressing over https"),
    Preset("r2", "Cloudflare R2", "https://<account_id>.r2.cloudflarestorage.com (EU: <account_id>.eu.r2.cloudflarestorage.com)",
           "https://{account_id}.r2.cloudflarestorage.com", "auto", "path", ("path", "virtual"),
           "yes", True, "region is always `auto`"),
    Preset("minio", "MinIO", "http(s)://<host>:9000",
           None, "us-east-1", "path", ("path", "virtual"),
           "yes (boto3 sends it over https by default)", False,
           "virtual addressing only when the server sets MINIO_DOMAIN; region = MINIO_SITE_REGION"),
    Preset("wasabi", "Wasabi", "https://s3.<region>.wasabisys.com",
           "https://s3.{region}.wasabisys.com", None, "path", ("path", "virtual"),
           "yes (boto3 sends it over https by default)", True,
           "region required and must match the endpoint"),
    Preset("generic", "other S3-compatible", "any http(s)://host[:port]",
           None, "us-east-1", "path", ("path", "virtual"),
           "required: check with the provider", False,
           "the signer never hashes bodies; a backend that rejects UNSIGNED-PAYLOAD cannot be used"),
]}


def presets_table() -> str:
    rows = ["| provider | `--provider` | endpoint | region | addressing (default first) | UNSIGNED-PAYLOAD accepted | notes |",
            "|---|---|---|---|---|---|---|"]
    for p in PRESETS.values():
        region = f"`{p.default_region}`" if p.default_region else "required"
        if p.name == "r2":
            region = "`auto` (only)"
        rows.append(f"| {p.title} | `{p.name}` | `{p.endpoint}` | {region} | {', '.join(p.addressings)} | "
                    f"{p.unsigned_payload} | {p.note} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------
# Settings


@dataclass
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str, what: str) -> "Endpoint":
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SettingsError([f"{what}: expected http(s)://host[:port], got {url!r}"])
        if u.path not in ("", "/") or u.query or u.fragment or u.username:
            raise SettingsError([f"{what}: no path, query or user allowed, got {url!r}"])
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise SettingsError([f"{what}: bad port in {url!r}"]) from None
        return cls(u.scheme, u.hostname.lower(), port)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class Backend:
    """One S3 provider endpoint as the gateway uses it."""

    provider: str = "generic"
    endpoint: str | None = None
    region: str | None = None
    addressing: str | None = None
    account_id: str | None = None

    def resolved(self, what: str = "backend") -> tuple["Backend", list[str], list[str]]:
        """Defaults filled in, plus (errors, warnings)."""
        errors: list[str] = []
        warnings: list[str] = []
        p = PRESETS.get(self.provider)
        if p is None:
            return self, [f"{what}: unknown provider {self.provider!r} (one of {', '.join(PRESETS)})"], []
        b = dataclasses.replace(self)
        b.region = b.region or p.default_region
        if not b.region:
            errors.append(f"{what}: {p.title} needs --region")
            return b, errors, warnings
        if not re.fullmatch(r"[a-z0-9-]+", b.region):
            errors.append(f"{what}: not a region name: {b.region!r}")
        if not b.endpoint:
            if p.default_endpoint is None:
                errors.append(f"{what}: {p.title} needs --endpoint")
                return b, errors, warnings
            if "{account_id}" in p.default_endpoint and not b.account_id:
                errors.append(f"{what}: {p.title} needs --account-id (or --endpoint)")
                return b, errors, warnings
            b.endpoint = p.default_endpoint.format(region=b.region, account_id=b.account_id)
        b.addressing = b.addressing or p.default_addressing
        try:
            ep = Endpoint.parse(b.endpoint, f"{what} endpoint")
        except SettingsError as e:
            return b, errors + e.problems, warnings
        if b.addressing not in ("path", "virtual"):
            errors.append(f"{what}: addressing must be path or virtual, got {b.addressing!r}")
        elif b.addressing not in p.addressings:
            errors.append(f"{what}: {p.title} does not support {b.addressing} addressing")
        if b.addressing == "virtual" and ep.is_ip:
            errors.append(f"{what}: virtual-hosted addressing needs a host name, not the IP address {ep.host} "
                          "(bucket.<IP> is not a name); use path addressing")
        if b.addressing == "virtual" and ep.host == "localhost":
            warnings.append(f"{what}: virtual addressing on localhost needs bucket.localhost to resolve")
        if p.https_only and not ep.tls:
            errors.append(f"{what}: {p.title} is reached over https only, got {b.endpoint}")

        if p.name == "aws":
            if b.region == "auto":
                errors.append(f"{what}: AWS S3 has no region `auto` (that is R2's); give the bucket's region")
            if not re.search(r"\.amazonaws\.com(\.cn)?$", ep.host):
                errors.append(f"{what}: {ep.host} is not an AWS S3 endpoint (*.amazonaws.com); use --provider generic")
            m = re.fullmatch(r"s3[.-](?:fips\.)?(?:dualstack\.)?([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?", ep.host)
            if m and m.group(1) != b.region:
                errors.append(f"{what}: endpoint {ep.host} is in region {m.group(1)}, not {b.region}")
            if ep.host in ("s3.amazonaws.com", "s3-external-1.amazonaws.com") and b.region != "us-east-1":
                errors.append(f"{what}: the global endpoint {ep.host} signs for us-east-1, not {b.region}; "
                              f"use https://s3.{b.region}.amazonaws.com")
        elif p.name == "r2":
            if b.region != "auto":
                errors.append(f"{what}: Cloudflare R2 signs with region `auto`, not {b.region!r}")
            if not re.fullmatch(r"[a-z0-9]+(\.(eu|fedramp))?\.r2\.cloudflarestorage\.com", ep.host):
                errors.append(f"{what}: {ep.host} is not an R2 S3 endpoint "
                              "(<account_id>.r2.cloudflarestorage.com, or <account_id>.eu.r2...)")
        elif p.name == "wasabi":
            if b.region == "auto":
                errors.append(f"{what}: Wasabi has no region `auto`; give the bucket's region")
            if not ep.host.endswith("wasabisys.com"):
                errors.append(f"{what}: {ep.host} is not a Wasabi endpoint (s3.<region>.wasabisys.com)")
            m = re.fullmatch(r"s3\.([a-z0-9-]+)\.wasabisys\.com", ep.host)
            if m and m.group(1) != b.region:
                errors.append(f"{what}: endpoint {ep.host} is in region {m.group(1)}, not {b.region}")
            if ep.host == "s3.wasabisys.com" and b.region != "us-east-1":
                errors.append(f"{what}: s3.wasabisys.com is us-east-1, not {b.region}")
        elif p.name == "minio":
            if b.addressing == "virtual":
                warnings.append(f"{what}: MinIO serves virtual-hosted buckets only with MINIO_DOMAIN={ep.host}")
        elif p.name == "generic":
            warnings.append(f"{what}: generic provider: the gateway signs UNSIGNED-PAYLOAD; make sure the "
                            "backend accepts it (boto3 against it over https is a good sign)")
        if p.name in ("minio", "generic") and not ep.tls:
            try:
                loopback = ipaddress.ip_address(ep.host).is_loopback
            except ValueError:
                loopback = ep.host == "localhost"
            if not loopback:
                warnings.append(f"{what}: plain http to {ep.host}: credentials' signatures and metadata "
                                "travel unencrypted (object bodies are encrypted by the filter)")
        return b, errors, warnings

    def endpoint_obj(self) -> Endpoint:
        return Endpoint.parse(self.endpoint or "", "endpoint")


@dataclass
class Deployment:
    backend: Backend = field(default_factory=Backend)
    mirror: Backend | None = None
    # Listeners.
    listen: str = "0.0.0.0:8443"
    health: str = "0.0.0.0:8081"
    admin_port: int = 9901
    tls_cert: str = "/etc/s3crypt/tls/tls.crt"
    tls_key: str = "/etc/s3crypt/tls/tls.key"
    client_ca: str | None = None
    # Serve without client authentication (no "clients" in the plugin JSON,
    # no client certificates): only for a listener nobody untrusted reaches.
    allow_unauthenticated: bool = False
    # The filter.
    wasm: str = "/etc/s3crypt/filter/s3crypt_filter.wasm"
    plugin_config: dict | None = None
    # Upstream.
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    credentials_file: str | None = None       # None: environment variables
    credentials_profile: str = "default"
    mirror_credentials_file: str | None = None
    mirror_credentials_profile: str = "default"
    # Protection.
    rate_limit_burst: int = 200
    rate_limit_per_second: int = 100
    rate_limit_max_clients: int = 10000
    read_retries: int = 2
    xff_trusted_hops: int = 0
    max_connections: int = 10000
    max_heap_bytes: int = 1 << 30

    def check(self) -> tuple["Deployment", list[str]]:
        """Resolved settings and warnings; SettingsError listing every impossible setting."""
        errors: list[str] = []
        d = dataclasses.replace(self)
        d.backend, e, warnings = self.backend.resolved("backend")
        errors += e
        if self.mirror is not None:
            d.mirror, e, w = self.mirror.resolved("mirror")
            errors += e
            warnings += w
            if not e and not errors:
                if d.backend.addressing == "virtual" or d.mirror.addressing == "virtual":
                    errors.append("mirror: needs path addressing for both backends (a mirrored request gets "
                                  "one fixed Host; with virtual addressing the bucket is in the Host)")
                a, m = d.backend.endpoint_obj(), d.mirror.endpoint_obj()
                if (a.host, a.port) == (m.host, m.port):
                    errors.append("mirror: same endpoint as the backend: the mirror would overwrite the "
                                  "primary's objects (same bucket names); use the provider's replication")
            if not self.mirror_credentials_file:
                errors.append("mirror: --mirror-credentials-file is required (an AWS credentials file; the "
                              "environment variables are the primary's)")
        for name in ("listen", "health"):
            value = getattr(self, name)
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                errors.append(f"{name}: expected host:port, got {value!r}")
        ports = [self.listen.rpartition(":")[2], self.health.rpartition(":")[2], str(self.admin_port)]
        if len(set(ports)) != 3:
            errors.append(f"listen, health and admin ports must differ, got {ports}")
        if not 0 < self.admin_port < 65536:
            errors.append(f"admin port out of range: {self.admin_port}")
        if self.rate_limit_burst < 1 or self.rate_limit_per_second < 1:
            errors.append("rate limit: burst and per-second refill must be at least 1")
        if self.rate_limit_per_second > self.rate_limit_burst:
            errors.append("rate limit: the per-second refill cannot exceed the burst (the bucket size)")
        if not 0 <= self.read_retries <= 10:
            errors.append("read retries: 0 to 10")
        if self.plugin_config is None:
            errors.append("plugin config: required (--plugin-config FILE)")
        else:
            errors += plugin_config_problems(self.plugin_config)
            if (isinstance(self.plugin_config, dict) and "clients" not in self.plugin_config
                    and not self.client_ca and not self.allow_unauthenticated):
                errors.append("plugin config: clients: required: the gateway signs every request with the "
                              "provider's credentials, so without client authentication anyone who reaches it "
                              "can read and write everything (or --client-ca for mutual TLS, or "
                              "--allow-unauthenticated for a listener only trusted callers reach)")
        if errors:
            raise SettingsError(errors)
        return d, warnings

    def values(self) -> tuple[dict, dict]:
        d, _ = self.check()
        b, ep = d.backend, d.backend.endpoint_obj()
        lhost, _, lport = d.listen.rpartition(":")
        hhost, _, hport = d.health.rpartition(":")
        values = {
            "ADMIN_PORT": d.admin_port,
            "LISTEN_ADDRESS": lhost.strip("[]"), "LISTEN_PORT": int(lport),
            "HEALTH_ADDRESS": hhost.strip("[]"), "HEALTH_PORT": int(hport),
            "TLS_CERT": d.tls_cert, "TLS_KEY": d.tls_key, "CLIENT_CA": d.client_ca or "",
            "XFF_TRUSTED_HOPS": d.xff_trusted_hops,
            "MAX_CONNECTIONS": d.max_connections, "MAX_HEAP_BYTES": d.max_heap_bytes,
            "REGION": b.region,
            "CLUSTER_TYPE": "STATIC" if ep.is_ip else "LOGICAL_DNS",
            "UPSTREAM_ADDRESS": ep.host, "UPSTREAM_PORT": ep.port,
            "UPSTREAM_HOST": ep.host, "UPSTREAM_AUTHORITY": ep.authority,
            "VIRTUAL_HOST_SUBSTITUTION": "\\1." + ep.authority,
            "CA_BUNDLE": d.ca_bundle,
            "CREDENTIALS_FILE": d.credentials_file or "", "CREDENTIALS_PROFILE": d.credentials_profile,
            "WASM_PATH": d.wasm,
            "PLUGIN_CONFIG": json.dumps(filter_config(d.plugin_config, b), separators=(",", ":")),
            "VM_HOST_ENV_KEYS": env_names(d.plugin_config),
            "RATE_LIMIT_BURST": d.rate_limit_burst, "RATE_LIMIT_PER_SECOND": d.rate_limit_per_second,
            "RATE_LIMIT_MAX_CLIENTS": d.rate_limit_max_clients,
            "READ_RETRIES": d.read_retries,
        }
        flags = {"CLIENT_CA": bool(d.client_ca), "UPSTREAM_TLS": ep.tls, "VIRTUAL": b.addressing == "virtual",
                 "CREDENTIALS_FILE": bool(d.credentials_file), "MIRROR": d.mirror is not None, "MIRROR_TLS": False}
        if d.mirror is not None:
            m = d.mirror.endpoint_obj()
            values.update({
                "MIRROR_CLUSTER_TYPE": "STATIC" if m.is_ip else "LOGICAL_DNS",
                "MIRROR_ADDRESS": m.host, "MIRROR_PORT": m.port, "MIRROR_HOST": m.host,
                "MIRROR_AUTHORITY": m.authority, "MIRROR_REGION": d.mirror.region,
                "MIRROR_CREDENTIALS_FILE": d.mirror_credentials_file,
                "MIRROR_CREDENTIALS_PROFILE": d.mirror_credentials_profile,
            })
            flags["MIRROR_TLS"] = m.tls
        return values, flags

    def render(self) -> str:
        values, flags = self.values()
        # The mirror's markers sit inside #{if MIRROR}: without a mirror they
        # are dropped and need no value.
        for name in re.findall(r"\$\{(MIRROR_[A-Z_]+)\}", TEMPLATE.read_text()):
            values.setdefault(name, "")
        return render_template(TEMPLATE.read_text(), values, flags)


def filter_config(plugin: dict, backend: "Backend") -> dict:
    """The plugin JSON the filter gets: the user's, plus how the filter itself
    reaches the backend (the s3_backend cluster, which signs) unless the user's
    config says so: CopyObject with REPLACE metadata and empty aws-chunked
    uploads need it (README, plugin JSON `backend`)."""
    config = dict(plugin)
    config.setdefault("backend", {"cluster": "s3_backend", "authority": backend.endpoint_obj().authority,
                                  "addressing": backend.addressing})
    return config


def plugin_config_problems(config) -> list[str]:
    """Shape checks only (the filter checks everything when it loads)."""
    if not isinstance(config, dict):
        return ["plugin config: must be a JSON object"]
    keys = config.get("keys")
    if not isinstance(keys, list) or not keys:
        return ["plugin config: keys: at least one key is required"]
    problems = []
    for i, k in enumerate(keys):
        if isinstance(k, dict) and ("key_hex" in k or "password" in k):
            # Allowed by the filter, but this file ends up in a ConfigMap or on
            # disk next to the Envoy config: only warn through the CLI.
            continue
        if not isinstance(k, dict) or not ({"key_hex_env", "password_env"} & set(k)):
            problems.append(f"plugin config: keys[{i}]: needs key_hex(_env) or password(_env)")
    return problems


def inline_secrets(config) -> list[str]:
    if not isinstance(config, dict):
        return []
    return [f"keys[{i}]" for i, k in enumerate(config.get("keys") or [])
            if isinstance(k, dict) and ("key_hex" in k or "password" in k)]


def configmap(name: str, envoy_yaml: str, plugin: dict, summary: str, command: str = "") -> str:
    """A ConfigMap with envoy.yaml and plugin.json (block scalars, so it stays readable)."""
    def block(text: str) -> str:
        return "".join(f"    {line}\n" if line else "\n" for line in text.rstrip("\n").split("\n"))
    return ("# Generated by envoy/deploy.py render --configmap; regenerate rather than edit:\n"
            + (f"#   {command}\n" if command else "") +
            f"# {summary}\n"
            "apiVersion: v1\n"
            "kind: ConfigMap\n"
            "metadata:\n"
            f"  name: {name}\n"
            "  labels:\n"
            "    app.kubernetes.io/name: s3crypt\n"
            "data:\n"
            "  # The filter's configuration, also embedded in envoy.yaml below (with the\n"
            "  # \"backend\" the provider settings give, unless set here). Keys come from\n"
            "  # environment variables (key_hex_env): no secret in this ConfigMap.\n"
            "  plugin.json: |\n" + block(json.dumps(plugin, indent=2)) +
            "  envoy.yaml: |\n" + block(envoy_yaml))


# --------------------------------------------------------------------------
# Envoy


def envoy_binary() -> str | None:
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    cache = Path(os.environ.get("S3CRYPT_CACHE") or Path.home() / ".cache" / "s3cg")
    for candidate in sorted((cache / "venv" / "lib").glob("python3*/site-packages/envoy/_bin/envoy")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("envoy")


def envoy_validate(config_text: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """`envoy --mode validate` on a config text: (ok, Envoy's output)."""
    binary = envoy_binary()
    if not binary:
        return False, "envoy binary not found (set ENVOY=/path/to/envoy)"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(config_text)
        r = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "error",
                            "--disable-hot-restart"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **(env or {})})
    return r.returncode == 0, (r.stdout + r.stderr).strip()


# --------------------------------------------------------------------------
# Command line


def _add_backend_args(ap: argparse.ArgumentParser, prefix: str = "") -> None:
    dash = f"{prefix}-" if prefix else ""
    what = "the mirror's" if prefix else "the backend's"
    ap.add_argument(f"--{dash}provider", choices=list(PRESETS), default=None if prefix else "generic",
                    help=f"{what} provider preset")
    ap.add_argument(f"--{dash}endpoint", help=f"{what} S3 endpoint URL (default from the preset)")
    ap.add_argument(f"--{dash}region", help=f"{what} SigV4 region")
    ap.add_argument(f"--{dash}addressing", choices=["path", "virtual"], help=f"{what} addressing")
    ap.add_argument(f"--{dash}account-id", help=f"{what} account id (R2)")


def _backend(args, prefix: str = "") -> Backend | None:
    p = f"{prefix}_" if prefix else ""
    provider = getattr(args, f"{p}provider")
    if prefix and provider is None and not getattr(args, f"{p}endpoint"):
        return None
    return Backend(provider or "generic", getattr(args, f"{p}endpoint"), getattr(args, f"{p}region"),
                   getattr(args, f"{p}addressing"), getattr(args, f"{p}account_id"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="print the provider presets (markdown table)")
    for name in ("check", "render"):
        sp = sub.add_parser(name, help="check settings" if name == "check" else "check and render envoy.yaml")
        _add_backend_args(sp)
        _add_backend_args(sp, "mirror")
        sp.add_argument("--mirror-credentials-file")
        sp.add_argument("--mirror-credentials-profile", default="default")
        sp.add_argument("--credentials-file", help="AWS credentials file for the backend (default: "
                        "AWS_* environment variables of Envoy)")
        sp.add_argument("--credentials-profile", default="default")
        sp.add_argument("--plugin-config", help="plugin JSON file (keys via key_hex_env / password_env)")
        sp.add_argument("--wasm", default=Deployment.wasm)
        sp.add_argument("--tls-cert", default=Deployment.tls_cert)
        sp.add_argument("--tls-key", default=Deployment.tls_key)
        sp.add_argument("--client-ca", help="require client certificates from this CA (mutual TLS)")
        sp.add_argument("--allow-unauthenticated", action="store_true",
                        help="allow a plugin config without \"clients\" and no --client-ca: every caller "
                        "that reaches the listener can read and write everything")
        sp.add_argument("--ca-bundle", default=Deployment.ca_bundle, help="CAs for https backends")
        sp.add_argument("--listen", default=Deployment.listen)
        sp.add_argument("--health", default=Deployment.health)
        sp.add_argument("--admin-port", type=int, default=Deployment.admin_port)
        sp.add_argument("--rate-limit-burst", type=int, default=Deployment.rate_limit_burst)
        sp.add_argument("--rate-limit-per-second", type=int, default=Deployment.rate_limit_per_second)
        sp.add_argument("--rate-limit-max-clients", type=int, default=Deployment.rate_limit_max_clients)
        sp.add_argument("--read-retries", type=int, default=Deployment.read_retries)
        sp.add_argument("--xff-trusted-hops", type=int, default=Deployment.xff_trusted_hops)
        sp.add_argument("--max-connections", type=int, default=Deployment.max_connections)
        sp.add_argument("--max-heap-bytes", type=int, default=Deployment.max_heap_bytes)
        if name == "render":
            sp.add_argument("-o", "--output", help="output file (default: stdout)")
            sp.add_argument("--configmap", metavar="NAME",
                            help="write a Kubernetes ConfigMap NAME holding envoy.yaml and plugin.json")
            sp.add_argument("--validate", action="store_true", help="run envoy --mode validate on the result")
    args = ap.parse_args(argv)

    if args.command == "presets":
        print(presets_table())
        return 0

    plugin = None
    if args.plugin_config:
        try:
            plugin = json.loads(Path(args.plugin_config).read_text())
        except (OSError, ValueError) as e:
            print(f"deploy: error: --plugin-config {args.plugin_config}: {e}", file=sys.stderr)
            return 2
    elif args.command == "check":
        plugin = {"keys": [{"id": "check", "key_hex_env": "S3CRYPT_KEK"}]}
    d = Deployment(
        backend=_backend(args), mirror=_backend(args, "mirror"),
        listen=args.listen, health=args.health, admin_port=args.admin_port,
        tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca,
        # `check` without a plugin config checks the provider settings only.
        allow_unauthenticated=args.allow_unauthenticated or not args.plugin_config,
        wasm=args.wasm, plugin_config=plugin, ca_bundle=args.ca_bundle,
        credentials_file=args.credentials_file, credentials_profile=args.credentials_profile,
        mirror_credentials_file=args.mirror_credentials_file,
        mirror_credentials_profile=args.mirror_credentials_profile,
        rate_limit_burst=args.rate_limit_burst, rate_limit_per_second=args.rate_limit_per_second,
        rate_limit_max_clients=args.rate_limit_max_clients, read_retries=args.read_retries,
        xff_trusted_hops=args.xff_trusted_hops, max_connections=args.max_connections,
        max_heap_bytes=args.max_heap_bytes)
    try:
        resolved, warnings = d.check()
    except SettingsError as e:
        for p in e.problems:
            print(f"deploy: error: {p}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"deploy: warning: {w}", file=sys.stderr)
    for k in inline_secrets(plugin):
        print(f"deploy: warning: plugin config {k} holds a key inline; prefer key_hex_env/password_env "
              "so the rendered file holds no secret", file=sys.stderr)
    b = resolved.backend
    summary = f"backend: {b.provider} {b.endpoint} region {b.region}, {b.addressing} addressing"
    if resolved.mirror:
        m = resolved.mirror
        summary += f"; mirror: {m.provider} {m.endpoint} region {m.region}"
    if args.command == "check":
        print(f"ok: {summary}")
        return 0

    text = ("# Generated by envoy/deploy.py from envoy/production.yaml.tmpl.\n"
            f"# {summary}\n" + d.render())
    if args.validate:
        ok, out = envoy_validate(text)
        if not ok:
            print(f"deploy: error: envoy rejected the configuration:\n{out}", file=sys.stderr)
            return 1
        print("deploy: envoy --mode validate: OK", file=sys.stderr)
    if args.configmap:
        command = shlex.join(["python3", "envoy/deploy.py", *(sys.argv[1:] if argv is None else argv)])
        text = configmap(args.configmap, text, plugin, summary, command)
    if args.output:
        Path(args.output).write_text(text)
        print(f"deploy: wrote {args.output} ({summary})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
