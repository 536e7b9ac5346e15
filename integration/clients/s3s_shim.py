"""A small HTTP/1.1 proxy between the gateway and s3s-fs that makes s3s-fs answer
like S3 where real clients depend on it (test_client_*.py):

* listings get their ETags: s3s-fs 0.14.1 lists objects without <ETag> (S3 always
  has one), and s3cmd's sync dies on that (KeyError: 'ETag') while rclone would
  never see the listing ETags it sees on S3. The shim asks s3s-fs for each listed
  object's ETag (HEAD) and puts it in, so the gateway's own listing rewrite runs
  on what S3 would send;
* an empty `delimiter=` means no delimiter: s3s-fs 0.14.1 groups keys by "" (one
  CommonPrefix per first character, no Contents), which empties every recursive
  listing of rclone and minio-py. The shim drops the empty parameter and signs the
  request again with the backend's keys;
* HEAD/GET of a key that is a folder on s3s-fs's disk (a "directory" prefix such
  as `photos` when `photos/a.jpg` exists) is 404 NoSuchKey, as on S3, not s3s-fs's
  500 (which rclone retries with back-off for a minute and a half).

Everything else is forwarded byte for byte (request and response bodies streamed,
the Host header and the gateway's signature untouched).
"""

from __future__ import annotations

import html
import http.client
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COPY = 1 << 16
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


class S3sShim:
    def __init__(self, backend_port: int, data_dir: Path, access_key: str, secret_key: str,
                 region: str = "us-east-1"):
        self.backend_port = backend_port
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self._local = threading.local()
        self.fixes = {"etags": 0, "delimiter": 0, "folder_404": 0}
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                try:
                    shim._forward(self)
                except (ConnectionError, socket.timeout, BrokenPipeError):
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="s3s-shim", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- helpers -------------------------------------------------------------

    def _client(self):
        """A boto3 client straight to s3s-fs (one per thread)."""
        c = getattr(self._local, "client", None)
        if c is None:
            import boto3
            from botocore.config import Config
            c = boto3.session.Session().client(
                "s3", endpoint_url=f"http://127.0.0.1:{self.backend_port}", region_name=self.region,
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
            self._local.client = c
        return c

    def _resign(self, method: str, path: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        host = next((v for k, v in headers if k.lower() == "host"), f"127.0.0.1:{self.backend_port}")
        sha = next((v for k, v in headers if k.lower() == "x-amz-content-sha256"), "UNSIGNED-PAYLOAD")
        req = AWSRequest(method=method, url=f"http://{host}{path}", headers={"X-Amz-Content-SHA256": sha})
        S3SigV4Auth(Credentials(self.access_key, self.secret_key), "s3", self.region).add_auth(req)
        drop = {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
        return [(k, v) for k, v in headers if k.lower() not in drop] + list(req.headers.items())

    @staticmethod
    def _split(path: str) -> tuple[str, str, str]:
        """(bucket, key, query) of a path-style request."""
        raw, _, query = path.partition("?")
        parts = raw.lstrip("/").split("/", 1)
        return urllib.parse.unquote(parts[0]), urllib.parse.unquote(parts[1]) if len(parts) > 1 else "", query

    def _add_etags(self, bucket: str, body: bytes) -> bytes:
        text = body.decode("utf-8")
        url_encoded = "<EncodingType>url</EncodingType>" in text

        def fill(m: re.Match) -> str:
            entry = m.group(0)
            if "<ETag>" in entry:
                return entry
            key = html.unescape(re.search(r"<Key>(.*?)</Key>", entry, re.S).group(1))
            if url_encoded:
                key = urllib.parse.unquote_plus(key)
            try:
                etag = self._client().head_object(Bucket=bucket, Key=key)["ETag"]
            except Exception:  # noqa: BLE001 - a listing race; leave it as s3s-fs sent it
                return entry
            self.fixes["etags"] += 1
            tag = f"<ETag>{html.escape(etag, quote=True)}</ETag>"
            anchor = "</LastModified>" if "</LastModified>" in entry else "</Key>"
            return entry.replace(anchor, anchor + tag, 1)

        return re.sub(r"<Contents>.*?</Contents>", fill, text, flags=re.S).encode("utf-8")

    # -- the proxy -------------------------------------------------------------

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        headers = list(h.headers.items())
        bucket, key, query = self._split(path)
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        is_listing = method == "GET" and bucket and not key and not any(
            k in ("uploads", "versions", "location", "policy", "acl", "tagging", "cors", "lifecycle",
                  "versioning", "encryption", "website", "notification", "logging", "replication",
                  "object-lock", "ownershipControls", "publicAccessBlock", "accelerate",
                  "requestPayment", "analytics", "metrics", "inventory", "intelligent-tiering")
            for k, _ in params)
        if is_listing and ("delimiter", "") in params:
            kept = [(k, v) for k, v in params if not (k == "delimiter" and v == "")]
            path = path.partition("?")[0] + ("?" + urllib.parse.urlencode(kept, quote_via=urllib.parse.quote)
                                             if kept else "")
            headers = self._resign(method, path, headers)
            self.fixes["delimiter"] += 1

        conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=300)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders()
            self._copy_request_body(h, conn)
            resp = conn.getresponse()
            status, reason = resp.status, resp.reason
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]

            if status == 500 and method in ("GET", "HEAD") and key and (self.data_dir / bucket / key).is_dir():
                resp.read()
                self.fixes["folder_404"] += 1
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
                        b"<Message>The specified key does not exist.</Message></Error>")
                self._reply(h, 404, "Not Found", [("Content-Type", "application/xml")],
                            b"" if method == "HEAD" else body, length=len(body))
                return
            if is_listing and status == 200:
                body = self._add_etags(bucket, resp.read())
                out = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
                self._reply(h, status, reason, out, body)
                return
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                self._reply(h, status, reason, out_headers, b"", raw_length=True)
                resp.read()
                return
            length = resp.getheader("Content-Length")
            h.send_response_only(status, reason)
            for k, v in out_headers:
                h.send_header(k, v)
            if length is None:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            while True:
                piece = resp.read1(COPY) if hasattr(resp, "read1") else resp.read(COPY)
                if not piece:
                    break
                if length is None:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    h.wfile.write(piece)
            if length is None:
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        finally:
            conn.close()

    @staticmethod
    def _copy_request_body(h: BaseHTTPRequestHandler, conn: http.client.HTTPConnection) -> None:
        length = h.headers.get("Content-Length")
        if length is not None:
            left = int(length)
            while left:
                piece = h.rfile.read(min(COPY, left))
                if not piece:
                    raise ConnectionError("client went away")
                conn.send(piece)
                left -= len(piece)
        elif "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            # Forward the chunked framing as it is.
            while True:
                line = h.rfile.readline()
                conn.send(line)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        t = h.rfile.readline()
                        conn.send(t)
                        if t in (b"\r\n", b"\n", b""):
                            return
                left = size + 2
                while left:
                    piece = h.rfile.read(min(COPY, left))
                    if not piece:
                        raise ConnectionError("client went away")
                    conn.send(piece)
                    left -= len(piece)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, reason: str, headers, body: bytes,
               length: int | None = None, raw_length: bool = False) -> None:
        h.send_response_only(status, reason)
        for k, v in headers:
            if raw_length or k.lower() != "content-length":
                h.send_header(k, v)
        if not raw_length:
            h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if body:
            h.wfile.write(body)
        h.wfile.flush()
