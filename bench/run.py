#!/usr/bin/env python3
"""s3crypt benchmark: end-to-end throughput, memory, latency, range reads,
the rclone crypt peer, and the codec alone (native and inside V8).

Run with the bootstrap venv's python after `make build` (`make bench` does
both) and write bench/RESULTS.md. bench/README.md explains every table.

Settings (environment):

  BENCH_QUICK=1        a ~3-minute subset: 16 MiB / 128 MiB objects, 16 x 8 MiB,
                       1 run, fewer small requests; writes .run/bench/RESULTS.quick.md
                       unless BENCH_OUT is set
  BENCH_RUNS           runs per throughput figure; the table shows the median (default 3;
                       quick 1)
  BENCH_LONG_S         a (setup, transfer, direction) whose first run took at least this
                       many seconds is not repeated (default 10): one such run already
                       averages over 160 000 chunks, and repeating the slow AES-256-GCM
                       and rclone transfers would add ~8 minutes
  BENCH_OBJECT_MIB     the "64 MiB" object size (default 64; quick 16)
  BENCH_LARGE_MIB      the "1 GiB" object size (default 1024; quick 128)
  BENCH_STREAMS        concurrent streams (default 16)
  BENCH_STREAM_MIB     object size per concurrent stream (default 64; quick 8)
  BENCH_SMALL_REQUESTS requests per small-object latency figure (default 2000; quick 300)
  BENCH_RANGE_REQUESTS requests per range-read figure (default 1000; quick 200)
  BENCH_THREADS        client threads for the latency and range tests (default 8)
  BENCH_CHUNK_SIZE     the filter's chunk_size (default 65536, the filter's default)
  BENCH_ONLY           comma list of sections to run: throughput, rclone, latency, range,
                       codec, wasm (default: all)
  BENCH_OUT            where to write the markdown (default bench/RESULTS.md; quick:
                       .run/bench/RESULTS.quick.md)
  BENCH_WORK           scratch folder (default /dev/shm/s3crypt-bench-<pid> when /dev/shm
                       exists, so the backend's files live in RAM; else .run/bench/work)
  BENCH_WAIT_LOAD      before starting, wait up to this many seconds for the 1-minute load
                       average to fall below BENCH_MAX_LOAD (defaults 0 s and 0.5 x nproc)
  BENCH_BACKEND        fast (default): s3s-fs 0.14.1 with bench/fast_s3s_fs.sh's two patches
                       (1 MiB GET reads, TCP_NODELAY), built once into the cache; the stock
                       binary is measured directly too, for reference; stock: the project's
                       s3s-fs for everything
  BENCH_PLUGIN_EXTRA   JSON object merged into every plugin configuration (e.g. client
                       credentials once the gateway enforces them)

Clients: plain HTTP/1.1 over http.client, one connection per stream, bodies
sent from memory-mapped files on tmpfs and received into a reused buffer, so
the client costs little beyond the kernel's copies. Requests are SigV4-signed
(UNSIGNED-PAYLOAD): with the backend's keys when talking to s3s-fs directly
(it checks signatures), with the test client keys through Envoy.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import mmap
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import gateway as gwmod  # noqa: E402  (scripts/gateway.py)

MiB = 1 << 20
MB = 1e6
HISTORY_MARK = "<!-- history: rows below are kept by bench/run.py; add notes freely -->"


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RUNS = env_int("BENCH_RUNS", 1 if QUICK else 3)
LONG_S = float(os.environ.get("BENCH_LONG_S") or 10)
OBJECT_MIB = env_int("BENCH_OBJECT_MIB", 16 if QUICK else 64)
LARGE_MIB = env_int("BENCH_LARGE_MIB", 128 if QUICK else 1024)
STREAMS = env_int("BENCH_STREAMS", 16)
STREAM_MIB = env_int("BENCH_STREAM_MIB", 8 if QUICK else 64)
SMALL_REQUESTS = env_int("BENCH_SMALL_REQUESTS", 300 if QUICK else 2000)
RANGE_REQUESTS = env_int("BENCH_RANGE_REQUESTS", 200 if QUICK else 1000)
THREADS = env_int("BENCH_THREADS", 8)
CHUNK_SIZE = env_int("BENCH_CHUNK_SIZE", 65536)
SECTIONS = ["throughput", "rclone", "latency", "range", "codec", "wasm"]
ONLY = [s.strip() for s in (os.environ.get("BENCH_ONLY") or ",".join(SECTIONS)).split(",") if s.strip()]
OUT = Path(os.environ.get("BENCH_OUT") or (REPO / ".run/bench/RESULTS.quick.md" if QUICK else REPO / "bench/RESULTS.md"))
PLUGIN_EXTRA = json.loads(os.environ.get("BENCH_PLUGIN_EXTRA") or "{}")
BACKEND = os.environ.get("BENCH_BACKEND") or "fast"
WASM_MIB = 8 if QUICK else 32
WASM_RUNS = 1 if QUICK else 3


def log(*a) -> None:
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def sh(cmd: list[str] | str, **kw) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, shell=isinstance(cmd, str), timeout=60, **kw)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable ({e.__class__.__name__})"


# --------------------------------------------------------------------------
# SigV4 (UNSIGNED-PAYLOAD), enough for the requests below


class Signer:
    def __init__(self, access: str, secret: str, region: str = "us-east-1"):
        self.access, self.secret, self.region = access, secret, region
        self._keys: dict[str, bytes] = {}

    def _key(self, date: str) -> bytes:
        if date not in self._keys:
            k = ("AWS4" + self.secret).encode()
            for part in (date, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys[date] = k
        return self._keys[date]

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str]) -> dict[str, str]:
        amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        h = {k.lower(): v for k, v in headers.items()}
        h.setdefault("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        h.update({"host": host, "x-amz-date": amz})
        names = sorted(n for n in h if n in ("host", "range", "content-md5") or n.startswith("x-amz-"))
        cq = "&".join(sorted(q if "=" in q else q + "=" for q in query.split("&") if q))
        creq = "\n".join([method, path, cq, "".join(f"{n}:{h[n].strip()}\n" for n in names), ";".join(names),
                          h["x-amz-content-sha256"]])
        scope = f"{amz[:8]}/{self.region}/s3/aws4_request"
        sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
        sig = hmac.new(self._key(amz[:8]), sts.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access}/{scope}, "
                              f"SignedHeaders={';'.join(names)}, Signature={sig}")
        return h


@dataclass
class Target:
    """Somewhere to send S3 requests: the backend itself or an Envoy in front of it."""

    name: str
    host: str
    port: int
    signer: Signer
    bucket: str
    gateway: "gwmod.Gateway | None" = None

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection(self.host, self.port, timeout=900)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def request(self, conn: http.client.HTTPConnection, method: str, key: str, body=None,
                headers: dict | None = None, query: str = "", sink: bytearray | None = None,
                keep: list | None = None) -> tuple[int, int]:
        """One request; returns (status, body bytes received). The body is read
        into `sink` (a reused buffer) unless `keep` is given (pieces appended)."""
        path = f"/{self.bucket}/{key}" if key is not None else f"/{self.bucket}"
        h = dict(headers or {})
        if body is not None:
            h["content-length"] = str(len(body))
        h = self.signer.sign(method, self.authority, path, query, h)
        conn.putrequest(method, path + ("?" + query if query else ""), skip_host=True, skip_accept_encoding=True)
        for k, v in h.items():
            conn.putheader(k, v)
        if body is not None and len(body) <= 256 * 1024:
            conn.endheaders(bytes(body))
        else:
            conn.endheaders()
            if body is not None:
                conn.send(body)
        resp = conn.getresponse()
        n = 0
        if keep is not None:
            while piece := resp.read(MiB):
                keep.append(piece)
                n += len(piece)
        else:
            buf = sink if sink is not None else bytearray(MiB)
            view = memoryview(buf)
            while (got := resp.readinto(view)) > 0:
                n += got
        if resp.status >= 300 and resp.status != 304:
            raise RuntimeError(f"{self.name}: {method} {path}?{query} -> {resp.status}")
        if resp.length:  # Content-Length not reached: the connection was cut
            raise http.client.IncompleteRead(b"", resp.length)
        return resp.status, n


# --------------------------------------------------------------------------
# Memory of the Envoy process


class RssWatch:
    """Peak RSS of a process during a block: VmHWM after resetting it
    (/proc/PID/clear_refs = 5), cross-checked by sampling VmRSS every 50 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def read(pid: int, field: str) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.peak = self.read(self.pid, "VmRSS")
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.read(self.pid, "VmRSS"))
            except OSError:
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        if self.hwm_reset:
            self.peak = max(self.peak, self.read(self.pid, "VmHWM"))


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU time of a process (all threads) so far; this process if pid is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU seconds used by Envoy, the backend and this client during a block."""

    def __init__(self, envoy_pid: int | None, backend_pid: int):
        self.pids = {"envoy": envoy_pid, "backend": backend_pid, "client": None}
        self.used: dict[str, float] = {}

    def __enter__(self):
        self._start = {k: cpu_seconds(p) for k, p in self.pids.items() if k == "client" or p}
        return self

    def __exit__(self, *exc):
        self.used = {k: cpu_seconds(self.pids[k]) - v for k, v in self._start.items()}


# --------------------------------------------------------------------------
# Data


class Data:
    """Random source files on the scratch folder (tmpfs), memory-mapped."""

    def __init__(self, root: Path):
        self.root = root / "src"
        self.parts_dir = self.root / "streams"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.large_path = self.root / "large.bin"
        self.object_path = self.root / "object.bin"
        self._write(self.large_path, LARGE_MIB * MiB)
        self._write(self.object_path, OBJECT_MIB * MiB)
        self.part_paths = [self.parts_dir / f"s{i:02d}.bin" for i in range(STREAMS)]
        for p in self.part_paths:
            self._write(p, STREAM_MIB * MiB)
        self.large = self._map(self.large_path)
        self.object = self._map(self.object_path)
        self.parts = [self._map(p) for p in self.part_paths]

    @staticmethod
    def _write(path: Path, size: int) -> None:
        if path.exists() and path.stat().st_size == size:
            return
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 64 * MiB)
                f.write(os.urandom(n))
                left -= n

    @staticmethod
    def _map(path: Path) -> memoryview:
        with open(path, "rb") as f:
            return memoryview(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))


# --------------------------------------------------------------------------
# Transfers


@dataclass
class Transfer:
    name: str            # "64 MiB", "1 GiB", "16 x 64 MiB"
    key: str
    bodies: list         # one memoryview per stream
    single: bool

    @property
    def total(self) -> int:
        return sum(len(b) for b in self.bodies)


def size_name(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def transfers(data: Data) -> list[Transfer]:
    return [
        Transfer(size_name(OBJECT_MIB), "obj", [data.object], True),
        Transfer(size_name(LARGE_MIB), "large", [data.large], True),
        Transfer(f"{STREAMS} x {size_name(STREAM_MIB)}", "streams", data.parts, False),
    ]


def run_streams(target: Target, method: str, keys: list[str], bodies: list) -> float:
    """PUT or GET one object per stream, all at once, one connection each;
    returns the wall time from the common start to the last byte."""
    conns = [target.connect() for _ in keys]
    barrier = threading.Barrier(len(keys) + 1)
    errors: list[BaseException] = []
    got = [0] * len(keys)

    def work(i: int):
        sink = bytearray(MiB)
        barrier.wait()
        try:
            if method == "PUT":
                target.request(conns[i], "PUT", keys[i], body=bodies[i])
            else:
                _, got[i] = target.request(conns[i], "GET", keys[i], sink=sink)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    if method == "GET" and got != [len(b) for b in bodies]:
        raise RuntimeError(f"{target.name}: GET returned {got} bytes, expected {[len(b) for b in bodies]}")
    return elapsed


def verify(target: Target, key: str, body) -> None:
    conn = target.connect()
    pieces: list[bytes] = []
    target.request(conn, "GET", key, keep=pieces)
    conn.close()
    if b"".join(pieces) != body:
        raise RuntimeError(f"{target.name}: {key} did not read back as written")


def delete(target: Target, keys: list[str]) -> None:
    conn = target.connect()
    for k in keys:
        target.request(conn, "DELETE", k)
    conn.close()


# --------------------------------------------------------------------------
# Setups


@dataclass
class Setup:
    key: str             # short id
    label: str           # table label
    kind: str            # direct | plain | chacha | aes
    workers: int | None  # Envoy workers; None for the backend itself
    single_streams: bool = True
    target: Target | None = None
    baseline_rss: int = 0
    idle_rss: int = 0


def plugin_config(kek_hex: str, cipher: str) -> dict:
    cfg = {"keys": [{"id": "bench", "key_hex": kek_hex}], "cipher": cipher, "chunk_size": CHUNK_SIZE}
    cfg.update(PLUGIN_EXTRA)
    return cfg


def make_bucket(backend_target: Target, bucket: str) -> None:
    conn = backend_target.connect()
    t = Target(backend_target.name, backend_target.host, backend_target.port, backend_target.signer, bucket)
    try:
        t.request(conn, "PUT", None)
    except RuntimeError as e:
        if "409" not in str(e):
            raise
    conn.close()


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.results: dict = {"throughput": [], "rss": [], "digests": [], "rclone": [], "latency": [], "range": [],
                              "codec": [], "wasm": [], "notes": []}
        self.kek = secrets.token_hex(32)
        self.stock_binary = gwmod.s3s_fs_binary()
        self.backend_binary = self.stock_binary
        if BACKEND == "fast":
            r = subprocess.run(["bash", str(REPO / "bench" / "fast_s3s_fs.sh")], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"bench/fast_s3s_fs.sh failed:\n{r.stderr}")
            self.backend_binary = Path(r.stdout.strip().splitlines()[-1])
        self.backend = self.start_backend(self.backend_binary, "data")
        self.stock_backend: gwmod.LocalBackend | None = None
        self.backend_signer = Signer(self.backend.access_key, self.backend.secret_key)
        self.client_signer = Signer(gwmod.CLIENT_ACCESS_KEY, gwmod.CLIENT_SECRET_KEY)
        self.gateways: list[gwmod.Gateway] = []
        self.setups: dict[str, Setup] = {}

    def start_backend(self, binary: Path, name: str) -> "gwmod.LocalBackend":
        saved = gwmod.s3s_fs_binary
        gwmod.s3s_fs_binary = lambda: binary
        try:
            return gwmod.LocalBackend(self.work / name, log=self.work / f"{name}.log",
                                      rust_log="s3s_fs=warn,s3s=warn").start()
        finally:
            gwmod.s3s_fs_binary = saved

    def backend_target(self, bucket: str) -> Target:
        return Target("backend", "127.0.0.1", self.backend.port, self.backend_signer, bucket)

    def setup(self, key: str, label: str, kind: str, workers: int | None, single_streams: bool = True) -> Setup:
        if key in self.setups:
            return self.setups[key]
        bucket = f"bench-{key}"
        if kind != "stock":
            make_bucket(self.backend_target(bucket), bucket)
        s = Setup(key, label, kind, workers, single_streams)
        if kind == "stock":
            self.stock_backend = self.start_backend(self.stock_binary, "data-stock")
            t = Target(label, "127.0.0.1", self.stock_backend.port, self.backend_signer, bucket)
            make_bucket(t, bucket)
            s.target = t
        elif kind == "direct":
            s.target = self.backend_target(bucket)
        else:
            cfg = None if kind == "plain" else plugin_config(
                self.kek, "aes-256-gcm" if kind == "aes" else "chacha20-poly1305")
            g = gwmod.Gateway(cfg, no_filter=kind == "plain", backend=self.backend, run_dir=self.work / f"gw-{key}",
                              listen="127.0.0.1:0", admin="127.0.0.1:0", concurrency=workers).start()
            self.gateways.append(g)
            s.target = Target(label, "127.0.0.1", g.listen_port, self.client_signer, bucket, g)
            s.idle_rss = RssWatch.read(g.envoy.proc.pid, "VmRSS")
            # Warm-up: a few 1 MiB round trips on several connections (every worker,
            # the V8 tiers, connection pools), then the baseline for memory growth.
            for _ in range(2):
                body = [memoryview(os.urandom(MiB)) for _ in range(4)]
                keys = [f"warm{i}" for i in range(4)]
                run_streams(s.target, "PUT", keys, body)
                run_streams(s.target, "GET", keys, body)
            delete(s.target, keys)
            time.sleep(0.3)
            s.baseline_rss = RssWatch.read(g.envoy.proc.pid, "VmRSS")
        self.setups[key] = s
        return s

    def stop(self) -> None:
        for g in self.gateways:
            g.stop()
        self.backend.stop()
        if self.stock_backend:
            self.stock_backend.stop()

    # -- throughput and memory -----------------------------------------------

    def throughput(self, data: Data) -> None:
        setups = [
            self.setup("direct", "backend directly", "direct", None),
            self.setup("plain1", "Envoy, no filter, 1 worker", "plain", 1),
            self.setup("chacha1", "gateway ChaCha20-Poly1305, 1 worker", "chacha", 1),
            self.setup("aes1", "gateway AES-256-GCM, 1 worker", "aes", 1),
        ] + ([self.setup("stock", "stock s3s-fs directly (unpatched)", "stock", None)] if BACKEND == "fast" else []) + [
            self.setup("plain2", "Envoy, no filter, 2 workers", "plain", 2, single_streams=False),
            self.setup("chacha2", "gateway ChaCha20-Poly1305, 2 workers", "chacha", 2, single_streams=False),
            self.setup("aes2", "gateway AES-256-GCM, 2 workers", "aes", 2, single_streams=False),
        ]
        xfers = transfers(data)
        times: dict[tuple, list[float]] = {}
        peaks: dict[tuple, int] = {}
        cpus: dict[tuple, dict[str, list[float]]] = {}
        verified: set[str] = set()
        # Runs are interleaved (run 1 of every setup, then run 2, ...) so a burst
        # of load from elsewhere on the machine does not land on one setup only.
        for run in range(RUNS):
            for s in setups:
                for x in xfers:
                    if x.single and not s.single_streams:
                        continue
                    keys = [f"{x.key}{i:02d}" for i in range(len(x.bodies))]
                    wanted = [m for m in ("PUT", "GET")
                              if not (times.get((s.key, x.name, m)) and times[(s.key, x.name, m)][0] >= LONG_S)]
                    if not wanted:
                        continue
                    if wanted == ["GET"]:  # the PUT is not repeated, but GET needs the objects
                        run_streams(s.target, "PUT", keys, x.bodies)
                    for method in wanted:
                        cell = (s.key, x.name, method)
                        pid = s.target.gateway.envoy.proc.pid if s.target.gateway else None
                        backend = self.stock_backend if s.kind == "stock" else self.backend
                        with CpuWatch(pid, backend.child.proc.pid) as cpu:
                            if pid and run == 0:
                                # Memory from the first run only: Envoy keeps what it
                                # allocated (tcmalloc, V8's wasm memory never shrinks), so
                                # in later runs every transfer would show the peak of the
                                # 16-stream transfer before it.
                                with RssWatch(pid) as w:
                                    t = run_streams(s.target, method, keys, x.bodies)
                                peaks[cell] = w.peak
                            else:
                                t = run_streams(s.target, method, keys, x.bodies)
                        times.setdefault(cell, []).append(t)
                        for k, v in cpu.used.items():
                            cpus.setdefault(cell, {}).setdefault(k, []).append(v)
                        log(f"run {run + 1}/{RUNS} {s.label}: {method} {x.name}: "
                            f"{x.total / t / MB:.0f} MB/s ({t:.2f} s)")
                    if x.single and x.name == size_name(OBJECT_MIB) and s.key not in verified:
                        verify(s.target, keys[0], x.bodies[0])
                        verified.add(s.key)
                    delete(s.target, keys)
        self.digest_puts(data)
        for (skey, xname, method), ts in times.items():
            x = next(x for x in xfers if x.name == xname)
            rates = [x.total / t / MB for t in ts]
            self.results["throughput"].append({
                "setup": skey, "label": self.setups[skey].label, "transfer": xname, "method": method,
                "bytes": x.total, "runs": len(ts), "mb_s": statistics.median(rates),
                "min": min(rates), "max": max(rates), "seconds": ts,
                # CPU seconds per GB moved, summed over the runs (Envoy: all its threads).
                "cpu_s_per_gb": {k: sum(v) / (x.total * len(v) / 1e9) for k, v in cpus.get((skey, xname, method), {}).items()}})
        for (skey, xname, method), peak in peaks.items():
            s = self.setups[skey]
            self.results["rss"].append({"setup": skey, "label": s.label, "transfer": xname, "method": method,
                                        "idle": s.idle_rss, "baseline": s.baseline_rss, "peak": peak,
                                        "growth": peak - s.baseline_rss})

    def digest_puts(self, data: Data) -> None:
        """PUTs carrying the integrity headers many clients send (the filter checks
        them against the plaintext in the VM) against the same PUT without them."""
        body = data.object
        raw = bytes(body)
        import base64
        import zlib
        variants = [
            ("UNSIGNED-PAYLOAD, no checksum", {}),
            ("Content-MD5 + hex x-amz-content-sha256 (rclone, s3cmd)",
             {"content-md5": base64.b64encode(hashlib.md5(raw).digest()).decode(),
              "x-amz-content-sha256": hashlib.sha256(raw).hexdigest()}),
            ("x-amz-checksum-crc32 (boto3, awscli defaults)",
             {"x-amz-checksum-crc32": base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode()}),
        ]
        del raw
        for key in ("plain1", "chacha1", "aes1"):
            s = self.setups.get(key)
            if not s:
                continue
            for vname, headers in variants:
                rates = []
                for _ in range(RUNS):
                    conn = s.target.connect()
                    t0 = time.perf_counter()
                    s.target.request(conn, "PUT", "digest", body=body, headers=headers)
                    rates.append(len(body) / (time.perf_counter() - t0) / MB)
                    conn.close()
                self.results["digests"].append({"setup": key, "label": s.label, "variant": vname,
                                                "size": len(body), "mb_s": statistics.median(rates), "runs": RUNS})
                log(f"{s.label}: PUT {size_name(len(body) // MiB)} with {vname}: {statistics.median(rates):.0f} MB/s")
            delete(s.target, ["digest"])

    # -- the peer: rclone crypt ----------------------------------------------

    def rclone(self, data: Data) -> None:
        rclone = shutil.which("rclone")
        if not rclone:
            self.results["notes"].append("rclone not installed (apt-get install rclone): peer not measured")
            return
        version = sh([rclone, "version"]).splitlines()[0]
        self.results["rclone_version"] = version
        gwsetup = self.setup("chacha1", "gateway ChaCha20-Poly1305, 1 worker", "chacha", 1)
        # Every remote is rooted at a bucket: s3s-fs answers a HEAD of a key that is
        # also a folder with 500 after tens of seconds, and rclone HEADs the root of
        # each remote it opens (shared/ENVOY_NOTES.md).
        for bucket in ("rc-crypt", "rc-crypt-streams"):
            make_bucket(self.backend_target(bucket), bucket)
        for bucket in ("rc-gw", "rc-gw-streams"):
            make_bucket(self.backend_target(bucket), bucket)
        rdir = self.work / "rclone"
        rdir.mkdir(exist_ok=True)
        conf = rdir / "rclone.conf"
        password = sh([rclone, "obscure", secrets.token_hex(16)])
        password2 = sh([rclone, "obscure", secrets.token_hex(16)])
        crypt = "\n".join(f"""[{name}]
type = crypt
remote = backend:{bucket}
password = {password}
password2 = {password2}
""" for name, bucket in (("crypt", "rc-crypt"), ("crypt-streams", "rc-crypt-streams")))
        conf.write_text(f"""[backend]
type = s3
provider = Other
endpoint = {self.backend.endpoint}
access_key_id = {self.backend.access_key}
secret_access_key = {self.backend.secret_key}
region = us-east-1
force_path_style = true

{crypt}
[gateway]
type = s3
provider = Other
endpoint = {gwsetup.target.gateway.endpoint}
access_key_id = {gwmod.CLIENT_ACCESS_KEY}
secret_access_key = {gwmod.CLIENT_SECRET_KEY}
region = us-east-1
force_path_style = true
""")
        self.results["rclone_conf"] = ("A temporary rclone.conf: remote `backend` (type s3, provider Other, the "
                                       "s3s-fs endpoint and keys, force_path_style) with a `crypt` remote on top "
                                       "(password and salt generated, via rclone obscure; default settings: "
                                       "XSalsa20-Poly1305 in 64 KiB blocks, standard file name encryption), and "
                                       "remote `gateway` (type s3) pointing at the s3crypt gateway "
                                       "(ChaCha20-Poly1305, 1 worker), so both ways of encrypting run with the "
                                       "same client. Each remote is rooted at a bucket")
        # Plain http on loopback: no AWS_* settings from this environment (an
        # AWS_CA_BUNDLE makes rclone's S3 SDK refuse its own transport).
        rclone_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        base = [rclone, "--config", str(conf), "-q", "--ignore-times", "--no-traverse"]
        remotes = [("rclone crypt -> backend", "crypt:", "crypt-streams:"),
                   ("rclone (plain S3) -> s3crypt gateway (ChaCha20-Poly1305, 1 worker)", "gateway:rc-gw/",
                    "gateway:rc-gw-streams")]
        out_dir = rdir / "out"
        cases = [(size_name(OBJECT_MIB), data.object_path, False), (size_name(LARGE_MIB), data.large_path, False),
                 (f"{STREAMS} x {size_name(STREAM_MIB)}", data.parts_dir, True)]
        times: dict[tuple, list[float]] = {}
        for run in range(RUNS):
            for rname, remote, dir_remote in remotes:
                for cname, src, is_dir in cases:
                    size = sum(p.stat().st_size for p in src.iterdir()) if is_dir else src.stat().st_size
                    dest = dir_remote if is_dir else remote + src.name
                    for method in ("PUT", "GET"):
                        cell = (rname, cname, method)
                        prev = times.get(cell, [])
                        if prev and prev[0] >= LONG_S:
                            continue
                        shutil.rmtree(out_dir, ignore_errors=True)
                        out_dir.mkdir()
                        if method == "PUT":
                            argv = base + (["copy", "--transfers", str(STREAMS), str(src), dest] if is_dir
                                           else ["copyto", str(src), dest])
                        else:
                            argv = base + (["copy", "--transfers", str(STREAMS), dest, str(out_dir / "d")] if is_dir
                                           else ["copyto", dest, str(out_dir / "f")])
                        t0 = time.perf_counter()
                        r = subprocess.run(argv, capture_output=True, text=True, env=rclone_env)
                        t = time.perf_counter() - t0
                        if r.returncode != 0:
                            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()[-2000:]}")
                        times.setdefault(cell, []).append(t)
                        log(f"run {run + 1}/{RUNS} {rname}: {method} {cname}: {size / t / MB:.0f} MB/s ({t:.2f} s)")
                        if method == "GET" and run == 0 and not is_dir:
                            if not filecmp_fast(out_dir / "f", src):
                                raise RuntimeError(f"{rname}: {cname} did not read back as written")
                shutil.rmtree(out_dir, ignore_errors=True)
        for (rname, cname, method), ts in times.items():
            src = next(c for c in cases if c[0] == cname)
            size = sum(p.stat().st_size for p in src[1].iterdir()) if src[2] else src[1].stat().st_size
            rates = [size / t / MB for t in ts]
            self.results["rclone"].append({"client": rname, "transfer": cname, "method": method, "runs": len(ts),
                                           "mb_s": statistics.median(rates), "min": min(rates), "max": max(rates)})

    # -- small objects ---------------------------------------------------------

    def latency_batch(self, target: Target, method: str, keys: list[str], body, headers=None,
                      n: int = SMALL_REQUESTS, nthreads: int = THREADS) -> dict:
        """n requests spread over `nthreads` threads (one keep-alive connection
        each); per-request latency in ms."""
        lat: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(nthreads + 1)
        errors: list[BaseException] = []
        failures: list[str] = []
        per = [n // nthreads + (1 if i < n % nthreads else 0) for i in range(nthreads)]

        def work(i: int):
            conn = target.connect()
            sink = bytearray(256 * 1024)
            mine: list[float] = []
            rnd = random.Random(i)
            barrier.wait()
            try:
                for j in range(per[i]):
                    # Thread i only ever uses keys i, i + nthreads, ...: no two PUTs of one key
                    # at once (s3s-fs writes an object's data and metadata in two files, so
                    # racing PUTs of one key can leave one PUT's data with the other's
                    # metadata, which the gateway then refuses to decrypt).
                    key = keys[(i + j * nthreads) % len(keys)]
                    h = headers(rnd) if callable(headers) else headers
                    t0 = time.perf_counter()
                    try:
                        target.request(conn, method, key, body=body if method == "PUT" else None, headers=h, sink=sink)
                    except (http.client.HTTPException, OSError) as e:
                        # Counted and reported, not fatal: a benchmark shows errors too.
                        with lock:
                            failures.append(f"{method} {key}: {e!r} after {(time.perf_counter() - t0) * 1e3:.1f} ms")
                        conn.close()
                        conn = target.connect()
                        continue
                    mine.append((time.perf_counter() - t0) * 1e3)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                conn.close()
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        if failures:
            log(f"{target.name}: {len(failures)} request(s) failed: {failures[:3]}")
            self.results["notes"].append(f"{target.name}: {len(failures)} of {n} {method} requests failed "
                                         f"(connection cut), e.g. {failures[0]}")
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
        return {"n": len(lat), "p50": q(0.50), "p99": q(0.99), "mean": statistics.fmean(lat), "rps": len(lat) / wall,
                "errors": len(failures)}

    def latency(self) -> None:
        setups = [self.setup("direct", "backend directly", "direct", None),
                  self.setup("plain1", "Envoy, no filter, 1 worker", "plain", 1),
                  self.setup("chacha1", "gateway ChaCha20-Poly1305, 1 worker", "chacha", 1),
                  self.setup("aes1", "gateway AES-256-GCM, 1 worker", "aes", 1)]
        for size in (1024, 64 * 1024):
            body = memoryview(os.urandom(size))
            keys = [f"small{size}/{i}" for i in range(64)]
            for s in setups:
                for method in ("PUT", "GET"):
                    r = self.latency_batch(s.target, method, keys, body)
                    r.update({"setup": s.key, "label": s.label, "size": size, "method": method})
                    self.results["latency"].append(r)
                    log(f"{s.label}: {method} {size} B: p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s")
                delete(s.target, keys)

    # -- range reads -------------------------------------------------------------

    def range_reads(self, data: Data) -> None:
        setups = [self.setup("plain1", "Envoy, no filter, 1 worker", "plain", 1),
                  self.setup("chacha1", "gateway ChaCha20-Poly1305, 1 worker", "chacha", 1)]
        large = len(data.large)
        small = memoryview(os.urandom(1024))
        for s in setups:
            run_streams(s.target, "PUT", ["range-large"], [data.large])
            run_streams(s.target, "PUT", ["range-small"], [small])
            # Correctness first: a few ranges compared with the source.
            conn = s.target.connect()
            for off in (0, CHUNK_SIZE - 512, large - 1024, 12345678 % (large - 1024)):
                pieces: list[bytes] = []
                s.target.request(conn, "GET", "range-large", headers={"range": f"bytes={off}-{off + 1023}"}, keep=pieces)
                if b"".join(pieces) != bytes(data.large[off:off + 1024]):
                    raise RuntimeError(f"{s.label}: range {off} did not match")
            conn.close()
            cases = [("1 KiB range of a " + size_name(LARGE_MIB) + " object", "range-large",
                      lambda rnd: (lambda o: {"range": f"bytes={o}-{o + 1023}"})(rnd.randrange(0, large - 1024))),
                     ("1 KiB GET of a 1 KiB object", "range-small", None)]
            for (cname, key, headers), threads in [(c, t) for t in (1, THREADS) for c in cases]:
                before = s.target.gateway.stats("cluster.s3_backend.")
                n = RANGE_REQUESTS if threads > 1 else RANGE_REQUESTS // 2
                r = self.latency_batch(s.target, "GET", [key], None, headers=headers, n=n, nthreads=threads)
                after = s.target.gateway.stats("cluster.s3_backend.")
                d = lambda name: after.get(name, 0) - before.get(name, 0)  # noqa: E731
                r.update({"setup": s.key, "label": s.label, "case": cname, "threads": threads,
                          "backend_bytes": d("cluster.s3_backend.upstream_cx_rx_bytes_total") / r["n"],
                          "backend_requests": d("cluster.s3_backend.upstream_rq_total") / r["n"]})
                self.results["range"].append(r)
                log(f"{s.label}: {cname}, {threads} thread(s): p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, "
                    f"{r['backend_bytes']:.0f} B from the backend per request")
            delete(s.target, ["range-large", "range-small"])

    # -- the codec alone -----------------------------------------------------------

    def codec(self) -> None:
        crit = REPO / "target" / "criterion" / "codec"
        shutil.rmtree(crit, ignore_errors=True)
        argv = ["cargo", "bench", "-p", "s3crypt-filter", "--bench", "codec"]
        if QUICK:
            argv += ["--", "/65536"]
        self.results["codec_command"] = " ".join(argv)
        log("native codec: " + " ".join(argv))
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, "CARGO_TERM_COLOR": "never"})
        (REPO / ".run" / "bench" / "criterion.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            self.results["notes"].append(f"cargo bench failed: {r.stderr.strip()[-1500:]}")
            return
        for est in sorted(crit.glob("*/*/new/estimates.json")):
            op_suite, chunk = est.parent.parent.parent.name, est.parent.parent.name
            op, _, suite = op_suite.partition("-")
            bench = json.loads((est.parent / "benchmark.json").read_text())
            nbytes = (bench.get("throughput") or {}).get("Bytes", 64 * MiB)
            ns = json.loads(est.read_text())["median"]["point_estimate"]
            self.results["codec"].append({"op": op, "suite": suite, "chunk": int(chunk), "mb_s": nbytes / ns * 1e9 / MB})

    def wasm(self) -> None:
        node = shutil.which("node")
        if not node:
            self.results["notes"].append("node not found: codec inside V8 not measured")
            return
        target_dir = REPO / "target" / "bench-wasm"
        crate = REPO / "bench" / "wasm-codec"
        argv = ["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path", str(crate / "Cargo.toml")]
        log("codec in V8: " + " ".join(argv))
        # From the repository root so .cargo/config.toml applies (+simd128, as for the filter).
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "CARGO_TARGET_DIR": str(target_dir), "CARGO_TERM_COLOR": "never"})
        if r.returncode != 0:
            self.results["notes"].append(f"wasm codec build failed: {r.stderr.strip()[-1500:]}")
            return
        wasm = target_dir / "wasm32-wasip1" / "release" / "s3crypt_wasm_codec_bench.wasm"
        r = subprocess.run([node, str(crate / "wasm_codec.mjs"), str(wasm), str(WASM_MIB), str(WASM_RUNS)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.results["notes"].append(f"wasm codec run failed: {r.stderr.strip()[-1500:]}")
            return
        self.results["wasm"] = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        self.results["node_version"] = sh([node, "--version"]) + " (V8 " + sh([node, "-p", "process.versions.v8"]) + ")"


def filecmp_fast(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


# --------------------------------------------------------------------------
# Machine


def machine_info() -> dict:
    def cpu_model() -> str:
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or "unknown"

    def mem() -> str:
        try:
            for line in open("/proc/meminfo"):
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        except OSError:
            pass
        return "unknown"

    flags = ""
    try:
        text = open("/proc/cpuinfo").read()
        f = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
        flags = ", ".join(x for x in ("aes", "pclmulqdq", "avx2", "avx512f", "sha_ni") if x in f)
    except (OSError, AttributeError):
        pass
    envoy = gwmod.envoy_binary()
    wasm = gwmod.default_wasm()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "memory": mem(),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "envoy": sh([str(envoy), "--version"]).split("version:")[-1].strip(),
        "rustc": sh(["rustc", "--version"]),
        "python": platform.python_version(),
        "s3s_fs": gwmod.S3S_FS_VERSION,
        "git": sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "git_dirty": sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "filter", "envoy", "scripts"]),
        "wasm_sha256": hashlib.sha256(wasm.read_bytes()).hexdigest()[:16] if wasm.exists() else "missing",
        "wasm_size": wasm.stat().st_size if wasm.exists() else 0,
    }


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def wait_for_load() -> tuple[str, float]:
    """(load average at invocation, seconds spent waiting for it to fall)."""
    limit = float(os.environ.get("BENCH_MAX_LOAD") or 0.5 * (os.cpu_count() or 1))
    wait = float(os.environ.get("BENCH_WAIT_LOAD") or 0)
    t0 = time.monotonic()
    first = loadavg()
    while wait and float(loadavg().split()[0]) > limit and time.monotonic() < t0 + wait:
        log(f"load average {loadavg()} above {limit}: waiting (up to {wait:.0f} s in all)")
        time.sleep(30)
    return first, time.monotonic() - t0


# --------------------------------------------------------------------------
# Report

from report import render  # noqa: E402  (bench/report.py)


def main() -> int:
    t_start = time.monotonic()
    unknown = [s for s in ONLY if s not in SECTIONS]
    if unknown:
        print(f"BENCH_ONLY: unknown section(s) {unknown}; known: {SECTIONS}", file=sys.stderr)
        return 2
    load_first, waited = wait_for_load()
    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine_info()
    info["load_before"] = loadavg()
    info["load_at_invocation"] = load_first
    info["waited_s"] = waited
    shm = Path("/dev/shm")
    work = Path(os.environ.get("BENCH_WORK") or (shm / f"s3crypt-bench-{os.getpid()}" if shm.is_dir()
                                                 else REPO / ".run" / "bench" / "work"))
    info["scratch"] = str(work) + (" (tmpfs)" if str(work).startswith("/dev/shm") else "")
    work.mkdir(parents=True, exist_ok=True)
    (REPO / ".run" / "bench").mkdir(parents=True, exist_ok=True)
    bench = None
    failed: list[str] = []
    try:
        data = Data(work) if {"throughput", "rclone", "range"} & set(ONLY) else None
        bench = Bench(work)
        info["backend"] = (f"s3s-fs {gwmod.S3S_FS_VERSION} with bench/fast_s3s_fs.sh's patches (1 MiB GET reads, "
                           f"TCP_NODELAY; the stock binary is the 'stock s3s-fs' row)" if BACKEND == "fast"
                           else f"stock s3s-fs {gwmod.S3S_FS_VERSION}")
        for section in SECTIONS:
            if section not in ONLY:
                continue
            t0 = time.monotonic()
            bench.results.setdefault("section_load", {})[section] = loadavg()
            log(f"== {section} (load average {loadavg()})")
            try:
                {"throughput": lambda: bench.throughput(data), "rclone": lambda: bench.rclone(data),
                 "latency": bench.latency, "range": lambda: bench.range_reads(data),
                 "codec": bench.codec, "wasm": bench.wasm}[section]()
            except Exception as e:  # noqa: BLE001 (reported; the other sections still run)
                import traceback
                traceback.print_exc()
                bench.results["notes"].append(f"**section {section} failed**: {e!r}")
                failed.append(section)
            bench.results.setdefault("section_seconds", {})[section] = time.monotonic() - t0
    finally:
        if bench:
            bench.stop()
        if not os.environ.get("BENCH_WORK"):
            shutil.rmtree(work, ignore_errors=True)
    info["load_after"] = loadavg()
    info["duration_s"] = time.monotonic() - t_start - waited
    info["date"] = started.strftime("%Y-%m-%d %H:%M UTC")
    settings = {"quick": QUICK, "runs": RUNS, "long_s": LONG_S, "object_mib": OBJECT_MIB, "large_mib": LARGE_MIB,
                "streams": STREAMS, "stream_mib": STREAM_MIB, "small_requests": SMALL_REQUESTS,
                "range_requests": RANGE_REQUESTS, "threads": THREADS, "chunk_size": CHUNK_SIZE, "sections": ONLY,
                "wasm_mib": WASM_MIB, "wasm_runs": WASM_RUNS}
    bench_env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    info["command"] = ((bench_env + " " if bench_env else "") +
                       ("make bench" if os.environ.get("MAKELEVEL") else " ".join([sys.executable] + sys.argv)))
    raw = {"info": info, "settings": settings, "results": bench.results}
    (REPO / ".run" / "bench" / ("results.quick.json" if QUICK else "results.json")).write_text(json.dumps(raw, indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = OUT.read_text() if OUT.exists() else ""
    OUT.write_text(render(raw, previous))
    log(f"wrote {OUT} ({info['duration_s'] / 60:.1f} min)" + (f"; FAILED sections: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
