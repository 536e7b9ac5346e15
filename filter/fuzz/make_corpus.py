"""Builds the seed corpora of the fuzz targets (filter/fuzz/corpus/<target>/).

Run from anywhere with the project's venv (pycryptodome, botocore, boto3):

    ~/.cache/s3cg/venv/bin/python filter/fuzz/make_corpus.py

Seeds are real traffic where we have it and independent encoders otherwise:

* stream_open: the FORMAT.md vectors (filter/testdata/v1/*.vec), and small
  chunk-size objects sealed by an encoder written here from FORMAT.md
  (pycryptodome), which tests/fuzz_regressions.rs decodes with the filter;
* aws_chunked: bodies made by botocore's AwsChunkedWrapper (what boto3 and
  the AWS CLI send), the AWS documentation's signed examples, minio-go's and
  the documentation's trailer layouts;
* sigv4_parse: the botocore-signed requests of filter/testdata/sigv4;
* xml_rewrite: S3 XML captured from a real S3 server (s3s-fs, the local
  backend of `make run`) driven by boto3: ListObjects(V2), ListParts,
  CreateMultipartUpload, CopyObject responses and the
  CompleteMultipartUpload request body;
* envelope_parse, upload_id_parse: the vectors' envelopes; upload ids sealed
  here (independently) around s3s-fs and AWS-shaped backend upload ids;
* range_parse, config_parse: the headers and configs the tests use.

The header bytes in front of each seed follow each target's doc comment.
"""

import base64
import hashlib
import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from Crypto.Cipher import AES, ChaCha20_Poly1305
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

HERE = Path(__file__).resolve().parent
FILTER = HERE.parent
CORPUS = HERE / "corpus"
CACHE = Path(os.environ.get("S3CRYPT_CACHE", Path.home() / ".cache" / "s3cg"))

DEK = bytes([0xD0]) * 32
KEK = bytes([0x0B]) * 32
KEK_ID = "vector-kek"
SUITES = {"chacha20-poly1305": 1, "aes-256-gcm": 2}
STREAM_CHUNK_SIZES = [16, 64, 1024, 16384]  # fuzz_targets/stream_open.rs
VARIANTS = ["STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"]
TRAILERS = ["x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-meta-extra"]
RANGE_CHUNK_SIZES = [16384, 65536, 262144, 1048576]  # fuzz_targets/range_parse.rs

rng = random.Random(20260115)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def u64(n):
    return struct.pack("<Q", n)


# ---------------------------------------------------------------------------
# stream_open: chunks sealed per FORMAT.md, independently of the Rust code


def seal_segment(suite, part, c, salt, plaintext, dek=DEK):
    info = b"s3crypt v1 segment key" + bytes([SUITES[suite]]) + struct.pack(">I", part)
    key = HKDF(dek, 32, salt, SHA256, context=info)
    pieces = [plaintext[i : i + c] for i in range(0, len(plaintext), c)]
    out = b""
    for index, chunk in enumerate(pieces):
        last = index == len(pieces) - 1
        header = salt + struct.pack(">IIB", part, index, 1 if last else 0) + len(chunk).to_bytes(3, "big")
        nonce = b"\x00" * 7 + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
        if suite == "chacha20-poly1305":
            cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
        else:
            cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
        cipher.update(header)
        ct, tag = cipher.encrypt_and_digest(chunk)
        out += header + ct + tag
    return out


def stream_raw(suite, c, body, whole=True, seed=0x5EED):
    cfg = (1 if suite == "aes-256-gcm" else 0) | (STREAM_CHUNK_SIZES.index(c) << 1)
    # Whole object, or (fuzz_targets/stream_open.rs, `raw`) a read from chunk 1
    # to the end of the object, releasing 102 bytes from offset 3 of chunk 1.
    window = b"\x01" + b"\x00" * 12 if whole else b"\x00" + struct.pack("<III", 1, 102 << 8, 3)
    return b"\x00" + bytes([cfg]) + u64(seed) + window + body


def stream_open():
    for vec in sorted((FILTER / "testdata" / "v1").glob("*.vec")):
        data = vec.read_bytes()
        head, stored = data.split(b"\n\n", 1)
        meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
        suite = meta["envelope"].split(";")[1].split("=")[1]
        write("stream_open", f"raw-vector-{vec.stem}", stream_raw(suite, 16384, stored))
    for suite in SUITES:
        for c in (16, 64):
            for n in (0, 1, c - 1, c, c + 1, 3 * c + 5):
                plain = bytes(i % 251 for i in range(n))
                name = f"raw-{suite}-c{c}-single-{n}-ok"
                write("stream_open", name, stream_raw(suite, c, seal_segment(suite, 0, c, bytes([1]) * 12, plain)))
            parts = [seal_segment(suite, p, c, bytes([p]) * 12, bytes([p]) * size) for p, size in ((1, 2 * c), (2, c), (4, c // 2))]
            write("stream_open", f"raw-{suite}-c{c}-multipart-ok", stream_raw(suite, c, b"".join(parts)))
            # A range read starting at chunk 1 of a single-part object.
            obj = seal_segment(suite, 0, c, bytes([1]) * 12, bytes(i % 7 for i in range(4 * c)))
            write("stream_open", f"raw-{suite}-c{c}-range-from-chunk1", stream_raw(suite, c, obj[c + 40 :], whole=False))
    # Structured modes: the bytes are read by arbitrary::Unstructured.
    for i in range(12):
        write("stream_open", f"sealed-{i}", b"\x01" + bytes(rng.randrange(256) for _ in range(rng.randrange(16, 200))))
        write("stream_open", f"range-{i}", b"\x02" + bytes(rng.randrange(256) for _ in range(rng.randrange(16, 200))))


# ---------------------------------------------------------------------------
# aws_chunked


DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_SEEDS = ["4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9", "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def hmac_sha256(key, msg):
    import hmac

    return hmac.new(key, msg, hashlib.sha256).digest()


class Chain:
    """The chunk-signature chain of sigv4-streaming.html."""

    def __init__(self, seed):
        k = hmac_sha256(("AWS4" + DOC_SECRET).encode(), b"20130524")
        for part in (b"us-east-1", b"s3", b"aws4_request"):
            k = hmac_sha256(k, part)
        self.key, self.previous = k, seed

    def _sign(self, sts):
        self.previous = hmac_sha256(self.key, sts.encode()).hex()
        return self.previous

    def chunk(self, data):
        return self._sign(f"AWS4-HMAC-SHA256-PAYLOAD\n{DOC_TIME}\n{DOC_SCOPE}\n{self.previous}\n{EMPTY_SHA256}\n{hashlib.sha256(data).hexdigest()}")

    def trailer(self, canonical):
        return self._sign(f"AWS4-HMAC-SHA256-TRAILER\n{DOC_TIME}\n{DOC_SCOPE}\n{self.previous}\n{hashlib.sha256(canonical.encode()).hexdigest()}")


def signed_body(payload, size, seed, trailers=(), lf_trailers=False, empty_before_trailers=False):
    chain = Chain(seed)
    body = b""
    for i in range(0, len(payload), size):
        data = payload[i : i + size]
        body += f"{len(data):x};chunk-signature={chain.chunk(data)}\r\n".encode() + data + b"\r\n"
    body += f"0;chunk-signature={chain.chunk(b'')}\r\n".encode()
    if empty_before_trailers:
        body += b"\r\n"
    eol = b"\n" if lf_trailers else b"\r\n"
    canonical = ""
    for name, value in trailers:
        body += f"{name}:{value}".encode() + eol
        canonical += f"{name}:{value}\n"
    if trailers:
        if lf_trailers:
            body += b"\r\n"
        body += f"x-amz-trailer-signature:{chain.trailer(canonical)}\r\n".encode()
    return body + b"\r\n"


def chunked_raw(variant, trailers, decoded_len, body, verifier=0):
    mask = sum(1 << TRAILERS.index(t) for t in trailers)
    return b"\x00" + bytes([VARIANTS.index(variant), mask]) + u64(decoded_len) + bytes([verifier]) + u64(0xC0FFEE) + body


def aws_chunked():
    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum

    unsigned = VARIANTS[0]
    for n in (0, 11, 1000, 70000):
        payload = bytes(rng.randrange(256) for _ in range(n))
        for cls, name in ((Crc32Checksum, "x-amz-checksum-crc32"), (Sha256Checksum, "x-amz-checksum-sha256"), (Sha1Checksum, "x-amz-checksum-sha1")):
            if n == 70000 and cls is not Crc32Checksum:
                continue
            body = AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=cls, checksum_name=name).read()
            write("aws_chunked", f"raw-botocore-{name.rsplit('-', 1)[1]}-{n}", chunked_raw(unsigned, [name], n, body))
    # The AWS documentation's examples: 64 KiB + 1 KiB of 'a'.
    doc = b"a" * 66560
    write("aws_chunked", "raw-aws-doc-signed", chunked_raw(VARIANTS[1], [], len(doc), signed_body(doc, 65536, DOC_SEEDS[0]), verifier=1))
    crc32c = [("x-amz-checksum-crc32c", "sOO8/Q==")]
    write("aws_chunked", "raw-aws-doc-signed-trailer", chunked_raw(VARIANTS[2], ["x-amz-checksum-crc32c"], len(doc), signed_body(doc, 65536, DOC_SEEDS[1], crc32c), verifier=2))
    small = b"hello, aws-chunked world"
    crc = [("x-amz-checksum-crc32", base64.b64encode(struct.pack(">I", __import__("zlib").crc32(small))).decode())]
    write("aws_chunked", "raw-signed-small", chunked_raw(VARIANTS[1], [], len(small), signed_body(small, 7, DOC_SEEDS[0]), verifier=1))
    write("aws_chunked", "raw-signed-trailer-small", chunked_raw(VARIANTS[2], ["x-amz-checksum-crc32"], len(small), signed_body(small, 10, DOC_SEEDS[1], crc), verifier=2))
    write("aws_chunked", "raw-minio-go-trailer", chunked_raw(VARIANTS[2], ["x-amz-checksum-crc32"], len(small), signed_body(small, 16, DOC_SEEDS[1], crc, lf_trailers=True), verifier=2))
    write("aws_chunked", "raw-doc-empty-line-before-trailer", chunked_raw(VARIANTS[2], ["x-amz-checksum-crc32"], len(small), signed_body(small, 64, DOC_SEEDS[1], crc, empty_before_trailers=True), verifier=2))
    write("aws_chunked", "raw-crt-upper-hex", chunked_raw(unsigned, ["x-amz-checksum-crc32"], 300, b"12C\r\n" + b"x" * 300 + b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"))
    for i in range(8):
        write("aws_chunked", f"encoded-{i}", b"\x01" + bytes(rng.randrange(256) for _ in range(rng.randrange(16, 300))))


# ---------------------------------------------------------------------------
# sigv4_parse, range_parse, config_parse


def sigv4():
    for f in sorted((FILTER / "testdata" / "sigv4").glob("*.txt")):
        shutil.copy(f, CORPUS / "sigv4_parse" / f.stem)


def ranges():
    for i, (c, length, text) in enumerate(
        [
            (0, 100, "bytes=0-9"), (1, 70000, "bytes=65535-65536"), (0, 5, "bytes=5-"), (2, 10, "bytes=-5"), (3, 0, "bytes=-0"),
            (0, 33000, "bytes=16384-"), (1, 1, "bytes=0-0"), (0, 10, "bytes=9-0"), (0, 10, "bytes=0-1,3-4"), (0, 10, "bytes= 1 - 2 "),
            (0, 10, "bytes=18446744073709551615-"), (0, 10, "bytes=-18446744073709551615"), (0, 10, "bytes 0-9/10"), (0, 10, "bytes */10"),
            (1, 2**40, "bytes 0-65575/131152"), (0, 10, "items=0-1"),
        ]
    ):
        write("range_parse", f"range-{i}", bytes([c]) + u64(length) + text.encode())


HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def configs():
    key = {"id": "main", "key_hex": HEX}
    samples = [
        {"keys": [key]},
        {"keys": [key, {"id": "old-1", "key_hex_env": "KEK_HEX"}], "write_key": "main", "cipher": "aes-256-gcm", "chunk_size": 16384, "unencrypted_objects": "refuse"},
        {"keys": [key], "virtual_host_suffixes": ["s3.example.com"], "backend": {"cluster": "s3_backend", "authority": "127.0.0.1:9000", "addressing": "virtual"}},
        {
            "keys": [key],
            "clients": [{"access_key_id": "AKIAGATEWAYTEST0001", "secret_access_key_env": "SECRET", "grants": [{"bucket": "photos-*", "prefix": "alice/", "actions": ["read", "list"]}]}],
            "anonymous": {"grants": [{"bucket": "public", "actions": ["read"]}]},
        },
        {"keys": [{"id": "kms1", "kms": {"ciphertext_blob": "AQIDBA==", "authority": "kms.eu-west-1.amazonaws.com"}}, key], "write_key": "kms1"},
        {"keys": [{"id": "a", "key_hex": "abcd"}]},
        {"keys": [], "bogus": 1},
    ]
    for i, sample in enumerate(samples):
        write("config_parse", f"config-{i}", json.dumps(sample).encode())


# ---------------------------------------------------------------------------
# envelope_parse, upload_id_parse


def seal_upload_id(suite, c, backend_id, kek=KEK, kek_id=KEK_ID, dek=DEK):
    """FORMAT.md "Multipart uploads", written here independently."""
    kid = kek_id.encode()
    aad = b"s3crypt v1 upload\x00" + bytes([SUITES[suite]]) + struct.pack(">I", c) + bytes([len(kid)]) + kid + backend_id.encode()
    nonce = bytes(rng.randrange(256) for _ in range(24))
    cipher = ChaCha20_Poly1305.new(key=kek, nonce=nonce)
    cipher.update(aad)
    ct, tag = cipher.encrypt_and_digest(dek)
    token = bytes([SUITES[suite], c.bit_length() - 1, len(kid)]) + kid + nonce + ct + tag
    return "s3c1" + base64.urlsafe_b64encode(token).decode().rstrip("=") + "." + backend_id


def seal_kms_upload_id(suite, c, backend_id, blob=b"stand-in for a KMS CiphertextBlob", dek=DEK):
    """FORMAT.md "Multipart uploads", strict KMS mode, written here independently."""
    import hmac
    tag = hmac.new(dek, b"s3crypt v1 kms upload\x00" + bytes([SUITES[suite]]) + struct.pack(">I", c) + backend_id.encode(),
                   hashlib.sha256).digest()[:16]
    token = bytes([SUITES[suite], c.bit_length() - 1]) + tag + blob
    return "s3k1" + base64.urlsafe_b64encode(token).decode().rstrip("=") + "." + backend_id


def kms_ids(backend_ids):
    for i, backend_id in enumerate(backend_ids):
        suite = "aes-256-gcm" if i % 2 else "chacha20-poly1305"
        write("upload_id_parse", f"kms-id-{i}", b"\x00" + seal_kms_upload_id(suite, 65536 if i % 3 else 16384, backend_id).encode())


def envelopes_and_ids(backend_ids):
    for vec in sorted((FILTER / "testdata" / "v1").glob("*.vec")):
        head = vec.read_bytes().split(b"\n\n", 1)[0]
        meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
        write("envelope_parse", f"vector-{vec.stem}", b"\x00" + meta["envelope"].encode())
    for i in range(4):
        write("envelope_parse", f"structured-{i}", b"\x01" + bytes(rng.randrange(256) for _ in range(120)))
    ids = list(backend_ids) + [
        "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA",  # the AWS documentation's example
        "2~iCw_lDY8VsCJmL4BrZnvFuhkOrbEIn8",
        "a.b.c",
    ]
    for i, backend_id in enumerate(ids):
        suite = "aes-256-gcm" if i % 2 else "chacha20-poly1305"
        write("upload_id_parse", f"id-{i}", b"\x00" + seal_upload_id(suite, 65536 if i % 3 else 16384, backend_id).encode())
    write("upload_id_parse", "foreign-id", b"\x00" + ids[-2].encode())
    kms_ids(ids[-3:])
    for i in range(4):
        write("upload_id_parse", f"structured-{i}", b"\x01" + bytes(rng.randrange(256) for _ in range(80)))


# ---------------------------------------------------------------------------
# xml_rewrite: real S3 XML from s3s-fs, driven by boto3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def xml_kind(kind, seed, body):
    return bytes([kind]) + u64(seed) + body


def capture_xml():
    """Returns {name: (kind, body)} and the backend upload ids seen."""
    import boto3
    from botocore.config import Config

    binary = CACHE / "s3s-fs-0.14.1" / "bin" / "s3s-fs"
    if not binary.is_file():
        print(f"make_corpus: {binary} missing (scripts/bootstrap.sh): no captured XML", file=sys.stderr)
        return {}, []
    data_dir = Path(tempfile.mkdtemp(prefix="s3crypt-corpus-"))
    port = free_port()
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")
    child = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port), "--access-key", "AKIACORPUS", "--secret-key", "corpus-secret", str(data_dir)], stdout=log, stderr=log)
    captured, upload_ids = {}, []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="AKIACORPUS", aws_secret_access_key="corpus-secret",
            config=Config(s3={"addressing_style": "path"}),
        )
        last = {}

        def keep(operation_model, response_dict, **_):
            last[operation_model.name] = response_dict["body"]

        def keep_request(request, operation_name=None, **_):
            if request.body and b"CompleteMultipartUpload" in (request.body if isinstance(request.body, bytes) else b""):
                last["CompleteMultipartUploadRequest"] = request.body

        s3.meta.events.register("before-parse.s3.*", keep)
        s3.meta.events.register("before-send.s3.*", keep_request)
        s3.create_bucket(Bucket="bkt")
        for key, size in (("a.txt", 41), ("dir/b&c <odd>.bin", 65617), ("plain", 3), ("empty", 0)):
            s3.put_object(Bucket="bkt", Key=key, Body=b"x" * size)
        s3.list_objects_v2(Bucket="bkt")
        captured["list-objects-v2"] = (2, last["ListObjectsV2"])
        s3.list_objects_v2(Bucket="bkt", Prefix="dir/", Delimiter="/", EncodingType="url")
        captured["list-objects-v2-prefix"] = (3, last["ListObjectsV2"])
        s3.list_objects(Bucket="bkt", MaxKeys=2)
        captured["list-objects-v1"] = (2, last["ListObjects"])
        mpu = s3.create_multipart_upload(Bucket="bkt", Key="big")
        captured["create-multipart-upload"] = (7, last["CreateMultipartUpload"])
        upload_ids.append(mpu["UploadId"])
        parts = []
        for n in (1, 2):
            r = s3.upload_part(Bucket="bkt", Key="big", UploadId=mpu["UploadId"], PartNumber=n, Body=b"p" * (5 * 1024 * 1024 if n == 1 else 41), ChecksumAlgorithm="CRC32")
            parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r.get("ChecksumCRC32", "AAAAAA==")})
        s3.list_parts(Bucket="bkt", Key="big", UploadId=mpu["UploadId"])
        captured["list-parts"] = (4, last["ListParts"])
        try:
            s3.complete_multipart_upload(Bucket="bkt", Key="big", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts})
        except Exception as e:  # the request body is what is wanted
            print(f"make_corpus: complete_multipart_upload: {e}", file=sys.stderr)
        if "CompleteMultipartUploadRequest" in last:
            captured["complete-multipart-upload-request"] = (5, last["CompleteMultipartUploadRequest"])
        s3.copy_object(Bucket="bkt", Key="copy", CopySource={"Bucket": "bkt", "Key": "a.txt"})
        captured["copy-object"] = (6, last["CopyObject"])
        s3.list_objects_v2(Bucket="bkt")
        captured["list-objects-v2-after-multipart"] = (2, last["ListObjectsV2"])
    finally:
        child.terminate()
        child.wait(timeout=10)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return captured, upload_ids


def xml(captured):
    for name, (kind, body) in captured.items():
        write("xml_rewrite", f"{name}", xml_kind(kind, 0x1234, body))
        # The same bytes through the bare RecordRewriter (records: kind >> 3).
        record_set = {2: 0, 3: 0, 4: 1, 5: 3, 6: 2, 7: 1}[kind]  # RECORD_SETS in xml_rewrite.rs
        write("xml_rewrite", f"records-{name}", xml_kind(1 | (record_set << 3), 0x77, body))
    # What AWS itself sends (the S3 API reference examples), for servers we cannot run here.
    aws = {
        "aws-list-object-versions": (2, b'<?xml version="1.0" encoding="UTF-8"?>\n<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name><Prefix>my</Prefix><KeyMarker/><VersionIdMarker/><MaxKeys>5</MaxKeys><IsTruncated>false</IsTruncated><Version><Key>my-image.jpg</Key><VersionId>3/L4kqtJl40Nr8X8gdRQBpUMLUo</VersionId><IsLatest>true</IsLatest><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>"fba9dede5f27731c9771645a39863328"</ETag><Size>434234</Size><StorageClass>STANDARD</StorageClass><Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID><DisplayName>mtd@amazon.com</DisplayName></Owner></Version><DeleteMarker><Key>my-second-image.jpg</Key><VersionId>03jpff543dhffds434rfdsFDN943fdsFkdmqnh892</VersionId><IsLatest>true</IsLatest><LastModified>2009-11-12T17:50:30.000Z</LastModified></DeleteMarker></ListVersionsResult>'),
        "aws-list-parts-checksums": (4, b'<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>example-bucket</Bucket><Key>example-object</Key><UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId><PartNumberMarker>1</PartNumberMarker><NextPartNumberMarker>3</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated><Part><PartNumber>2</PartNumber><LastModified>2010-11-10T20:48:34.000Z</LastModified><ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag><ChecksumCRC32>DUoRhQ==</ChecksumCRC32><Size>10485760</Size></Part><Part><PartNumber>3</PartNumber><LastModified>2010-11-10T20:48:33.000Z</LastModified><ETag>"aaaa18db4cc2f85cedef654fccc4a4x8"</ETag><Size>10485800</Size></Part></ListPartsResult>'),
    }
    for name, (kind, body) in aws.items():
        write("xml_rewrite", name, xml_kind(kind, 0x99, body))


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for t in ("stream_open", "aws_chunked", "sigv4_parse", "range_parse", "xml_rewrite", "envelope_parse", "upload_id_parse", "config_parse"):
        (CORPUS / t).mkdir(parents=True)
    stream_open()
    aws_chunked()
    sigv4()
    ranges()
    configs()
    captured, upload_ids = capture_xml()
    xml(captured)
    envelopes_and_ids(upload_ids)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"make_corpus: {count} seeds, {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
