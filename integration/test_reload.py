"""Changing the configuration of a running gateway (scripts/gateway.py
Gateway.reload and Gateway.hot_restart; README "Operations: reload and
restart"), through real Envoy, real s3s-fs and real HTTP clients:

- requests in flight when the configuration changes (a slow download and a
  slow upload) finish byte-exact, on the old configuration;
- requests after the change use the new one (the envelope's `k=` names the new
  write key) and objects written before still read;
- a new configuration the filter refuses is refused as a whole, the error names
  the field, and the gateway serves on with the old one (no 5xx);
- a hot restart during parallel uploads leaves every object whole or absent.
"""

from __future__ import annotations

import http.client
import os
import threading
import time

import pytest

from conftest import TEST_KEY_HEX, gw as gateway

MiB = 1024 * 1024
NEW_KEY_HEX = "a7" * 32
OLD = {"keys": [{"id": "old", "key_hex": TEST_KEY_HEX}]}
NEW = {"keys": [{"id": "old", "key_hex": TEST_KEY_HEX}, {"id": "new", "key_hex": NEW_KEY_HEX}],
       "write_key": "new"}
# Back to writing under "old", still reading "new" (never drop a key in use).
BACK = {**NEW, "write_key": "old"}
# Long enough for the slow transfers below to finish after the switch.
DRAIN_TIME = 30


def key_id(backend_s3, bucket, key):
    """The `k=` field of the stored object's envelope (FORMAT.md): its key id."""
    envelope = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"]
    return dict(field.split("=", 1) for field in envelope.split(";"))["k"]


def server_errors(gw):
    return gw.stats("http.s3crypt.downstream_rq_5xx").get("http.s3crypt.downstream_rq_5xx", 0)


class SlowTransfer(threading.Thread):
    """A GET that reads, or a PUT that sends, `size` bytes over one connection
    made now (so it belongs to the configuration of now): at `rate` bytes/s up
    to `hold_at` of the way, then at a trickle (one piece every half second)
    until release(), then at `rate` again -- so it spans a change however long
    the change takes, and keeps moving bytes during it."""

    PIECE = 128 * 1024

    def __init__(self, gw, method, path, rate, body=None, size=None, hold_at=0.25):
        super().__init__(daemon=True)
        host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.method, self.path, self.rate, self.body = method, path, rate, body
        self.size = len(body) if body is not None else size
        self.hold_at = int(self.size * hold_at)
        self.released = threading.Event()
        self.moved = 0
        self.status = None
        self.received = bytearray()
        self.error = None
        if method == "PUT":
            self.conn.putrequest("PUT", path)
            self.conn.putheader("Content-Length", str(self.size))
            self.conn.endheaders()
        else:
            self.conn.request("GET", path)

    def run(self):
        try:
            if self.method == "PUT":
                while self.moved < self.size:
                    self.conn.send(self.body[self.moved:self.moved + self.PIECE])
                    self.moved = min(self.size, self.moved + self.PIECE)
                    self._pace()
                resp = self.conn.getresponse()
                resp.read()
            else:
                resp = self.conn.getresponse()
                while piece := resp.read(self.PIECE):
                    self.received += piece
                    self.moved = len(self.received)
                    self._pace()
            self.status = resp.status
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.conn.close()

    def _pace(self):
        held = self.moved >= self.hold_at and not self.released.is_set()
        time.sleep(0.5 if held else self.PIECE / self.rate)

    def wait_held(self, timeout=30):
        deadline = time.monotonic() + timeout
        while self.moved < self.hold_at:
            assert self.is_alive() and time.monotonic() < deadline, (self.moved, self.error)
            time.sleep(0.02)

    def release(self):
        self.released.set()


@pytest.fixture(scope="module")
def steady(start_gateway):
    """One gateway on OLD that every refused change is tried against."""
    return start_gateway(OLD, drain_time=DRAIN_TIME)


@pytest.mark.parametrize("change", ["reload", "hot_restart"])
def test_in_flight_transfers_finish_and_new_requests_use_the_new_config(
        change, start_gateway, make_s3, backend_s3, new_bucket):
    gw = start_gateway(OLD, drain_time=DRAIN_TIME)
    bucket = new_bucket(f"inflight-{change}")
    s3 = make_s3(gw)
    # 32 MiB: far more than the socket buffers between Envoy and the client
    # hold, so Envoy itself still has most of the bytes to move after the change.
    stored = os.urandom(32 * MiB)
    s3.put_object(Bucket=bucket, Key="stored", Body=stored)
    uploaded = os.urandom(32 * MiB)
    pid = gw.envoy.proc.pid

    get = SlowTransfer(gw, "GET", f"/{bucket}/stored", rate=8 * MiB, size=len(stored), hold_at=0.15)
    put = SlowTransfer(gw, "PUT", f"/{bucket}/uploaded", rate=8 * MiB, body=uploaded, hold_at=0.15)
    get.start()
    put.start()
    get.wait_held()
    put.wait_held()
    during = (get.moved, put.moved)
    getattr(gw, change)(NEW)
    assert get.is_alive() and put.is_alive(), (get.error, put.error)
    assert get.moved > during[0] and put.moved > during[1], "no bytes moved during the change"

    # After the change: new objects are written under the new key at once,
    # while the transfers that began before it are still running.
    s3 = make_s3(gw)
    s3.put_object(Bucket=bucket, Key="after", Body=b"after the change")
    assert key_id(backend_s3, bucket, "after") == "new"
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"after the change"
    if change == "hot_restart":
        assert gw.epoch == 1 and gw.envoy.proc.pid != pid
    else:
        assert gw.epoch == 0 and gw.envoy.proc.pid == pid
        # Envoy either swaps the filter chains in place or replaces the whole
        # listener; either way the old one drains.
        updates = gw.stats("listener_manager.listener_")
        assert updates["listener_manager.listener_in_place_updated"] + updates["listener_manager.listener_modified"] == 1
    assert get.is_alive() and put.is_alive() and get.moved < get.size and put.moved < put.size
    get.release()
    put.release()

    get.join(60)
    put.join(60)
    assert get.error is None and get.status == 200, get.error
    assert bytes(get.received) == stored
    assert put.error is None and put.status == 200, put.error
    # The upload ran on the configuration it started with, and decrypts.
    assert key_id(backend_s3, bucket, "uploaded") == "old"
    assert s3.get_object(Bucket=bucket, Key="uploaded")["Body"].read() == uploaded
    assert s3.get_object(Bucket=bucket, Key="stored")["Body"].read() == stored
    assert server_errors(gw) == 0


def test_an_upload_outlasting_the_drain_time_is_cut_and_stores_nothing(start_gateway, backend_s3, new_bucket):
    """The drain time is a deadline: a request still running on the old
    listener then is cut, and fails like any interrupted upload."""
    gw = start_gateway(OLD, drain_time=2)
    bucket = new_bucket("drained")
    put = SlowTransfer(gw, "PUT", f"/{bucket}/cut", rate=8 * MiB, body=os.urandom(8 * MiB), hold_at=0.25)
    put.start()
    put.wait_held()
    gw.reload(NEW)  # the upload is never released: it trickles past the drain time
    put.join(30)
    assert not put.is_alive() and put.error is not None and put.status is None, (put.status, put.error)
    with pytest.raises(backend_s3.exceptions.ClientError, match="404"):
        backend_s3.head_object(Bucket=bucket, Key="cut")


BROKEN = [
    pytest.param({"keys": [*OLD["keys"], {"id": "new", "key_hex": "not-hex"}], "write_key": "new"},
                 "keys[1].key_hex: must be 64 hex digits", id="bad-key-hex"),
    pytest.param({**NEW, "colour": "blue"}, "unknown field `colour`", id="unknown-field"),
]


@pytest.mark.parametrize("config,reason", BROKEN)
@pytest.mark.parametrize("change", ["reload", "hot_restart"])
def test_a_broken_config_is_refused_and_the_old_one_serves_on(
        change, config, reason, steady, make_s3, backend_s3, new_bucket):
    bucket = new_bucket("refused")
    pid, epoch, before = steady.envoy.proc.pid, steady.epoch, server_errors(steady)
    with pytest.raises(gateway.GatewayError) as refused:
        getattr(steady, change)(config)
    assert "invalid configuration: " in str(refused.value) and reason in str(refused.value), str(refused.value)

    assert (steady.envoy.proc.pid, steady.epoch) == (pid, epoch)
    assert "colour" not in steady.config_path.read_text() and "not-hex" not in steady.config_path.read_text()
    s3 = make_s3(steady)
    s3.put_object(Bucket=bucket, Key="still-old", Body=b"x" * 100_000)
    assert key_id(backend_s3, bucket, "still-old") == "old"
    assert s3.get_object(Bucket=bucket, Key="still-old")["Body"].read() == b"x" * 100_000
    assert server_errors(steady) == before


def test_a_reload_naming_a_missing_write_key_is_refused(steady):
    with pytest.raises(gateway.GatewayError, match=r'invalid configuration: write_key: no key with id "missing"'):
        steady.reload({**OLD, "write_key": "missing"})
    assert steady.plugin_config() == OLD


def test_envoy_itself_rejects_a_broken_listener_update(steady, make_s3, backend_s3, new_bucket):
    """Without the launcher's check (someone edits the LDS file): Envoy runs the
    filter's on_configure for the new listener, which refuses, and Envoy rejects
    the whole update: nothing half-applied, the old listener serves on."""
    bucket = new_bucket("rejected")
    rejected = steady.stats("listener_manager.lds.update_rejected")["listener_manager.lds.update_rejected"]
    broken = BROKEN[0].values[0]
    with pytest.raises(gateway.GatewayError, match=r"update_rejected[\s\S]*keys\[1\]\.key_hex"):
        steady.reload(broken, check=False)
    assert steady.stats("listener_manager.lds.update_rejected")["listener_manager.lds.update_rejected"] == rejected + 1
    s3 = make_s3(steady)
    s3.put_object(Bucket=bucket, Key="served", Body=b"served")
    assert key_id(backend_s3, bucket, "served") == "old"
    # The launcher put the last good listener back in the file, and a valid
    # change still goes through afterwards. A request on a connection opened
    # before the change still runs on the old listener, which then closes that
    # connection (drain); the client's next request reconnects and is new.
    assert steady.reload(NEW) is True
    s3.put_object(Bucket=bucket, Key="old-connection", Body=b"old")
    assert key_id(backend_s3, bucket, "old-connection") == "old"
    s3.put_object(Bucket=bucket, Key="then-new", Body=b"new")
    assert key_id(backend_s3, bucket, "then-new") == "new"
    steady.reload(OLD)


def test_hot_restart_during_parallel_uploads(start_gateway, make_s3, new_bucket):
    gw = start_gateway(OLD, drain_time=DRAIN_TIME)
    bucket = new_bucket("hotputs")
    stop = threading.Event()
    written: dict[str, bytes] = {}
    failed: dict[str, Exception] = {}

    def uploader(n):
        s3 = make_s3(gw)
        i = 0
        while not stop.is_set():
            key, body = f"w{n}-{i}", os.urandom(MiB + n * 1000 + i)
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
                written[key] = body
            except Exception as e:  # noqa: BLE001 - checked below
                failed[key] = e
                written[key] = body
            i += 1
            time.sleep(0.2)  # steady traffic, not so many objects to check

    threads = [threading.Thread(target=uploader, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    gw.hot_restart(NEW)
    time.sleep(0.5)
    gw.hot_restart(BACK)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert gw.epoch == 2
    assert len(written) >= 8

    s3 = make_s3(gw)
    for key, body in written.items():
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            assert key in failed, f"{key}: the upload succeeded but the object is missing"
            continue
        assert got == body, key  # whole, and it decrypts, whichever key wrote it
    # Envoy's hot restart hands the socket over: no upload should even fail.
    assert not failed, failed
    s3.put_object(Bucket=bucket, Key="later", Body=b"later")
    assert s3.get_object(Bucket=bucket, Key="later")["Body"].read() == b"later"
    assert server_errors(gw) == 0


def test_an_unchecked_broken_hot_restart_falls_back_to_the_old_listener(steady, make_s3, backend_s3, new_bucket):
    """Without the launcher's check, the new Envoy rejects its listener, but it
    has already told the old process to drain and exit: so the launcher hands
    it the previous listener, and the gateway serves on with the old config."""
    bucket = new_bucket("fallback")
    epoch = steady.epoch
    broken = BROKEN[0].values[0]
    with pytest.raises(gateway.GatewayError, match=r"serves with the previous one[\s\S]*keys\[1\]\.key_hex"):
        steady.hot_restart(broken, check=False)
    assert steady.epoch == epoch + 1 and steady.running()
    s3 = make_s3(steady)
    s3.put_object(Bucket=bucket, Key="served", Body=b"served")
    assert key_id(backend_s3, bucket, "served") == "old"
    assert s3.get_object(Bucket=bucket, Key="served")["Body"].read() == b"served"
