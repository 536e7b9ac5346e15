"""Large objects through real Envoy + s3s-fs: stateless multipart uploads,
authenticated range reads, partNumber reads, plaintext sizes in HEAD and
listings, conditional reads, and tampering with multipart objects.
"""

import hashlib
import os
import random
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import s3crypt_format  # noqa: E402
from conftest import TEST_KEY_HEX  # noqa: E402

MiB = 1024 * 1024
CHUNK = 65536
SEALED = CHUNK + 40


def decrypt_stored(backend_s3, data_dir, bucket, key):
    envelope = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["s3crypt"]
    return s3crypt_format.decrypt_object(bytes.fromhex(TEST_KEY_HEX), envelope, (data_dir / bucket / key).read_bytes())


def multipart_upload(s3, bucket, key, parts, order=None):
    """Uploads `parts` (list of bytes) as parts 1..n, in `order` (indexes)."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = {}
    for i in order or range(len(parts)):
        etags[i + 1] = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=i + 1, Body=parts[i])["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]})
    return upload


def test_boto3_upload_file_and_download_file_100_mib(gateway, make_s3, bucket, backend_s3, data_dir, tmp_path):
    s3 = make_s3(gateway)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(100 * MiB + 12345))
    s3.upload_file(str(src), bucket, "big")  # default TransferConfig: 8 MiB parts, threads
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == src.stat().st_size
    assert head["ETag"].endswith('-13"')
    dst = tmp_path / "dst"
    s3.download_file(bucket, "big", str(dst))  # parallel ranged GETs
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert decrypt_stored(backend_s3, data_dir, bucket, "big") == src.read_bytes()


def test_awscli_cp_100_mib_both_ways(gateway, aws, bucket, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(100 * MiB))
    aws(gateway, "s3", "cp", str(src), f"s3://{bucket}/cli-big")
    dst = tmp_path / "dst"
    aws(gateway, "s3", "cp", f"s3://{bucket}/cli-big", str(dst))
    assert dst.read_bytes() == src.read_bytes()


def test_parts_out_of_order_and_one_resent(gateway, make_s3, bucket, backend_s3, data_dir):
    s3 = make_s3(gateway)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="ooo")["UploadId"]
    etags = {}
    for n in [3, 1, 2]:
        etags[n] = s3.upload_part(Bucket=bucket, Key="ooo", UploadId=upload, PartNumber=n, Body=parts[n - 1])["ETag"]
    # Part 2 sent again, with other bytes: the new ones win, and no key/nonce pair is reused.
    parts[1] = os.urandom(5 * MiB)
    etags[2] = s3.upload_part(Bucket=bucket, Key="ooo", UploadId=upload, PartNumber=2, Body=parts[1])["ETag"]
    listed = s3.list_parts(Bucket=bucket, Key="ooo", UploadId=upload)
    assert listed["UploadId"] == upload
    # (s3s-fs lists parts in storage order, S3 by number.)
    assert sorted((p["PartNumber"], p["Size"]) for p in listed["Parts"]) == [(1, 5 * MiB), (2, 5 * MiB), (3, 1234)]
    s3.complete_multipart_upload(Bucket=bucket, Key="ooo", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]})
    whole = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="ooo")["Body"].read() == whole
    assert s3.head_object(Bucket=bucket, Key="ooo")["ContentLength"] == len(whole)
    assert decrypt_stored(backend_s3, data_dir, bucket, "ooo") == whole
    # partNumber reads give each part's plaintext where the backend serves
    # parts; s3s-fs ignores partNumber and sends the whole object, and so
    # must the gateway then. (filter/src/read.rs tests the 206 case.)
    backend_honours_parts = backend_s3.get_object(Bucket=bucket, Key="ooo", PartNumber=1)["ResponseMetadata"]["HTTPStatusCode"] == 206
    for n in (1, 2, 3):
        got = s3.get_object(Bucket=bucket, Key="ooo", PartNumber=n)
        want = parts[n - 1] if backend_honours_parts else whole
        assert got["Body"].read() == want, n
        assert s3.head_object(Bucket=bucket, Key="ooo", PartNumber=n)["ContentLength"] == len(want)


def test_abort_leaves_nothing(gateway, make_s3, bucket, backend_s3):
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=upload, PartNumber=1, Body=os.urandom(MiB))
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload)
    with pytest.raises(ClientError):
        backend_s3.head_object(Bucket=bucket, Key="aborted")
    # (s3s-fs has no ListMultipartUploads: ask for the upload's parts instead.)
    try:
        assert not s3.list_parts(Bucket=bucket, Key="aborted", UploadId=upload).get("Parts")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchUpload"


def test_upload_part_with_a_tampered_upload_id_is_refused(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    a = s3.create_multipart_upload(Bucket=bucket, Key="a")["UploadId"]
    b = s3.create_multipart_upload(Bucket=bucket, Key="b")["UploadId"]
    # a's wrapped key with b's backend id: the token is bound to its upload.
    forged = a.split(".", 1)[0] + "." + b.split(".", 1)[1]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="b", UploadId=forged, PartNumber=1, Body=b"x" * 100)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"


def test_upload_part_copy_is_refused(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    s3.put_object(Bucket=bucket, Key="src", Body=b"s" * 1000)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1, CopySource={"Bucket": bucket, "Key": "src"})
    assert e.value.response["Error"]["Code"] == "NotImplemented"


def test_random_ranges_single_and_multipart(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    rng = random.Random(1234)
    objects = {
        "r-single": [os.urandom(3 * CHUNK + 77)],
        "r-single-big": [os.urandom(2 * MiB + 5)],
        "r-mp-5mib": [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(100_001)],
        "r-mp-8mib": [os.urandom(8 * MiB), os.urandom(3 * MiB + 1)],
        "r-mp-one": [os.urandom(CHUNK * 3)],
    }
    for key, parts in objects.items():
        if key.startswith("r-mp"):
            multipart_upload(s3, bucket, key, parts)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=parts[0])
    checked = 0
    for key, parts in objects.items():
        data = b"".join(parts)
        n = len(data)
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == n
        boundaries = [0, n - 1, CHUNK - 1, CHUNK, 5 * MiB - 1, 5 * MiB, 8 * MiB - 1, 8 * MiB]
        for _ in range(60):
            kind = rng.choice(["span", "span", "from", "suffix", "edge"])
            if kind == "span":
                a = rng.randrange(n)
                b = min(n - 1, a + rng.choice([0, 1, 100, CHUNK, 3 * CHUNK, MiB]))
                spec, want = f"bytes={a}-{b}", (a, b)
            elif kind == "from":
                a = rng.randrange(max(1, n - 3 * CHUNK), n)
                spec, want = f"bytes={a}-", (a, n - 1)
            elif kind == "suffix":
                m = rng.randrange(1, min(n, 2 * CHUNK))
                spec, want = f"bytes=-{m}", (n - m, n - 1)
            else:
                a = rng.choice([x for x in boundaries if x < n])
                b = min(n - 1, a + rng.choice([0, 1, 2]))
                spec, want = f"bytes={a}-{b}", (a, b)
            got = s3.get_object(Bucket=bucket, Key=key, Range=spec)
            assert got["ContentRange"] == f"bytes {want[0]}-{want[1]}/{n}", (key, spec)
            assert got["Body"].read() == data[want[0]:want[1] + 1], (key, spec)
            checked += 1
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={n}-{n + 10}")
        assert e.value.response["Error"]["Code"] == "InvalidRange"
    assert checked >= 300


def test_suffix_ranges_of_small_objects(gateway, make_s3, bucket):
    """`bytes=-m` becomes whole chunks from the end, often more bytes than a
    small object has: S3 then sends the whole object, s3s-fs answers 500. The
    gateway asks for the stored length first and sends an absolute range."""
    s3 = make_s3(gateway)
    objects = {"s-one": os.urandom(1), "s-small": os.urandom(1000), "s-chunk": os.urandom(CHUNK + 7)}
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        n = len(data)
        for m in (1, 10, n, n + 1, 3 * CHUNK):
            want = data[-m:]
            got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{m}")
            assert got["ContentRange"] == f"bytes {n - len(want)}-{n - 1}/{n}", (key, m)
            assert got["Body"].read() == want, (key, m)
            assert s3.head_object(Bucket=bucket, Key=key, Range=f"bytes=-{m}")["ContentLength"] == len(want), (key, m)
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=bucket, Key=key, Range="bytes=-0")
        assert e.value.response["Error"]["Code"] == "InvalidRange"
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"].get("content-range") == f"bytes */{n}"
    # An empty object: a suffix gives it whole (200, as S3 does), a first byte cannot.
    s3.put_object(Bucket=bucket, Key="s-empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="s-empty", Range="bytes=-5")
    assert (got["ResponseMetadata"]["HTTPStatusCode"], got["Body"].read()) == (200, b"")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="s-empty", Range="bytes=0-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_small_range_fetches_only_covering_chunks(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    data = os.urandom(20 * MiB)
    multipart_upload(s3, bucket, "sparse", [data[:10 * MiB], data[10 * MiB:]])
    before = gateway.stats("cluster.s3_backend.upstream_cx_rx_bytes_total").get("cluster.s3_backend.upstream_cx_rx_bytes_total", 0)
    got = s3.get_object(Bucket=bucket, Key="sparse", Range=f"bytes={15 * MiB}-{15 * MiB + 1023}")
    assert got["Body"].read() == data[15 * MiB:15 * MiB + 1024]
    import time
    time.sleep(0.5)
    after = gateway.stats("cluster.s3_backend.upstream_cx_rx_bytes_total").get("cluster.s3_backend.upstream_cx_rx_bytes_total", 0)
    # One or two 64 KiB chunks plus headers came from the backend, not 20 MiB.
    assert 0 < after - before < 3 * SEALED, after - before


def test_sync_twice_and_listing_sizes(gateway, aws, make_s3, bucket, tmp_path):
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    sizes = {"empty": 0, "one": 1, "chunk": CHUNK, "sub/mid": 300_000, "sub/large": 20 * MiB + 3}
    for name, size in sizes.items():
        (folder / name).write_bytes(os.urandom(size))
    first = aws(gateway, "s3", "sync", str(folder), f"s3://{bucket}/tree").stdout.decode()
    assert first.count("upload:") == len(sizes)
    second = aws(gateway, "s3", "sync", str(folder), f"s3://{bucket}/tree").stdout.decode()
    assert "upload:" not in second, second
    s3 = make_s3(gateway)
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tree/")["Contents"]}
    assert listed == {f"tree/{k}": v for k, v in sizes.items()}
    v1 = {o["Key"]: o["Size"] for o in s3.list_objects(Bucket=bucket, Prefix="tree/")["Contents"]}
    assert v1 == listed
    ls = aws(gateway, "s3", "ls", "--recursive", f"s3://{bucket}/tree/").stdout.decode().splitlines()
    assert {line.split()[3]: int(line.split()[2]) for line in ls} == listed
    # Paged listings rewrite every page.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tree/", PaginationConfig={"PageSize": 2})
    assert {o["Key"]: o["Size"] for page in pages for o in page["Contents"]} == listed


def test_conditional_reads_use_the_etag_the_client_sees(gateway, make_s3, bucket):
    s3 = make_s3(gateway)
    s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional")
    head = s3.head_object(Bucket=bucket, Key="cond")
    etag, modified = head["ETag"], head["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="cond", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfMatch='"0123"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch='"0123"')["Body"].read() == b"conditional"
    import datetime
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfModifiedSince=modified + datetime.timedelta(seconds=5))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfUnmodifiedSince=modified - datetime.timedelta(days=1))
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    # If-Match true wins over If-Unmodified-Since false, as S3 documents.
    got = s3.get_object(Bucket=bucket, Key="cond", IfMatch=etag, IfUnmodifiedSince=modified - datetime.timedelta(days=1))
    assert got["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="cond", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def stored_path(data_dir, bucket, key):
    return data_dir / bucket / key


def get_fails_without_unauthenticated_plaintext(gateway, bucket, key, good):
    """GET must fail (an error status, or a body cut short of its
    Content-Length); whatever arrived is a prefix of `good`, the plaintext of
    the authenticated chunks the gateway may release before it meets the
    damage. Read with http.client, which keeps what arrived before the reset."""
    import http.client
    _, port = gateway.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    conn.request("GET", f"/{bucket}/{key}")
    resp = conn.getresponse()
    received = b""
    try:
        while piece := resp.read(65536):
            received += piece
    except (http.client.IncompleteRead, ConnectionError) as e:
        received += getattr(e, "partial", b"") or b""
    conn.close()
    if resp.status == 200:
        assert len(received) < int(resp.getheader("content-length")), f"tampered object decrypted to {len(received)} bytes"
        assert good.startswith(received), f"{len(received)} bytes released, not a prefix of the authenticated plaintext"
    else:
        assert resp.status >= 400


def test_tampered_multipart_objects(gateway, make_s3, bucket, data_dir):
    s3 = make_s3(gateway)
    part = 5 * MiB
    parts = [os.urandom(part), os.urandom(part), os.urandom(part)]
    data = b"".join(parts)
    sealed_part = part + 40 * (part // CHUNK)

    # Parts swapped in storage.
    multipart_upload(s3, bucket, "swapped", parts)
    path = stored_path(data_dir, bucket, "swapped")
    stored = path.read_bytes()
    path.write_bytes(stored[sealed_part:2 * sealed_part] + stored[:sealed_part] + stored[2 * sealed_part:])
    # The reader cannot know part 1 must come first (S3 lets an upload skip
    # part numbers): part 2's chunks, each authenticated, may be released
    # until part 1 shows up out of order.
    get_fails_without_unauthenticated_plaintext(gateway, bucket, "swapped", parts[1])

    # Part 2 replaced by part 2 of another upload (same sizes, other data key).
    multipart_upload(s3, bucket, "victim", parts)
    other = [os.urandom(part) for _ in range(3)]
    multipart_upload(s3, bucket, "donor", other)
    victim = stored_path(data_dir, bucket, "victim")
    donor = stored_path(data_dir, bucket, "donor").read_bytes()
    v = victim.read_bytes()
    victim.write_bytes(v[:sealed_part] + donor[sealed_part:2 * sealed_part] + v[2 * sealed_part:])
    get_fails_without_unauthenticated_plaintext(gateway, bucket, "victim", data[:part])
    # A range inside the foreign part fails too, without its plaintext.
    with pytest.raises(Exception):
        s3.get_object(Bucket=bucket, Key="victim", Range=f"bytes={part + 10}-{part + 20}")["Body"].read()

    # Truncated inside the last part, at a chunk boundary.
    multipart_upload(s3, bucket, "truncated", parts)
    path = stored_path(data_dir, bucket, "truncated")
    stored = path.read_bytes()
    path.write_bytes(stored[:2 * sealed_part + 10 * SEALED])
    get_fails_without_unauthenticated_plaintext(gateway, bucket, "truncated", data[:2 * part + 9 * CHUNK])


def test_complete_body_arriving_during_the_part_size_check_is_held_and_rewritten(gateway, make_s3, bucket, backend_s3, data_dir):
    """CompleteMultipartUpload waits for ListParts through the backend. Its
    body may arrive meanwhile, whole (boto3) or in pieces (a slow client):
    neither may let the request reach the backend before the check answers,
    and both pieces must still be rewritten (part ETags unmarked)."""
    import http.client
    import time
    s3 = make_s3(gateway)
    parts = [os.urandom(5 * MiB), os.urandom(777)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="slow-complete")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="slow-complete", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    body = ("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{t}</ETag></Part>" for n, t in enumerate(etags, 1))
        + "</CompleteMultipartUpload>").encode()
    _, port = gateway.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    conn.putrequest("POST", f"/{bucket}/slow-complete?uploadId={upload}", skip_accept_encoding=True)
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Content-Type", "application/xml")
    conn.endheaders(body[:40])
    time.sleep(0.5)
    conn.send(body[40:-30])
    time.sleep(0.5)
    conn.send(body[-30:])
    resp = conn.getresponse()
    answer = resp.read()
    conn.close()
    assert resp.status == 200, answer
    assert b"CompleteMultipartUploadResult" in answer
    got = s3.get_object(Bucket=bucket, Key="slow-complete")["Body"].read()
    assert got == b"".join(parts)
    assert decrypt_stored(backend_s3, data_dir, bucket, "slow-complete") == got


def test_parts_that_are_not_whole_chunks_are_refused_at_complete(gateway, make_s3, bucket):
    """Parts of 5,000,000 bytes (not a multiple of 64 KiB) would make an object
    whose size cannot be read from storage: Complete is refused, clearly, and
    the upload stays open for the client to redo; whole-chunk parts complete."""
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="odd-parts")["UploadId"]
    parts = [os.urandom(5_000_000), os.urandom(5_000_000), os.urandom(123)]
    etags = [s3.upload_part(Bucket=bucket, Key="odd-parts", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="odd-parts", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]})
    assert e.value.response["Error"]["Code"] == "InvalidPart"
    assert "multiple of" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="odd-parts")
    s3.abort_multipart_upload(Bucket=bucket, Key="odd-parts", UploadId=upload)
    # A short last part is fine.
    multipart_upload(s3, bucket, "whole-parts", [os.urandom(5 * MiB), os.urandom(4_999_999)])
    assert s3.head_object(Bucket=bucket, Key="whole-parts")["ContentLength"] == 5 * MiB + 4_999_999


def test_complete_by_the_backend_upload_id_checks_part_sizes_too(gateway, make_s3, bucket):
    """ListMultipartUploads shows the backend's upload ids (the gateway's own
    ids carry a wrapped key S3 cannot list). A Complete naming one is checked
    like any other: parts that are not whole chunks would make an object whose
    size cannot be read from storage."""
    s3 = make_s3(gateway)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="odd-by-backend-id")["UploadId"]
    parts = [os.urandom(5_300_000), os.urandom(10)]
    etags = [s3.upload_part(Bucket=bucket, Key="odd-by-backend-id", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    backend_id = upload.split(".", 1)[1]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="odd-by-backend-id", UploadId=backend_id, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]})
    assert e.value.response["Error"]["Code"] == "InvalidPart"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="odd-by-backend-id")
    s3.abort_multipart_upload(Bucket=bucket, Key="odd-by-backend-id", UploadId=backend_id)
    # Whole-chunk parts complete by either id.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="by-backend-id")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(10)]
    etags = [s3.upload_part(Bucket=bucket, Key="by-backend-id", UploadId=upload, PartNumber=n, Body=p)["ETag"] for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="by-backend-id", UploadId=upload.split(".", 1)[1], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]})
    assert s3.get_object(Bucket=bucket, Key="by-backend-id")["Body"].read() == b"".join(parts)
