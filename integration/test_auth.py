"""Client authentication (SigV4 headers, presigned URLs, signed streaming
bodies), per-key bucket/prefix policies and the audit log, through real Envoy
with real clients."""

import hashlib
import hmac
import http.client
import json
import os
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import TEST_KEY_HEX

ALICE = ("AKIAALICE000000001", "alice-secret-key-0000000000000000000000")
BOB = ("AKIABOB00000000002", "bob-secret-key-00000000000000000000000")
# Carol's secret reaches the filter through the VM's environment only.
CAROL = ("AKIACAROL0000000003", "carol-secret-key-from-the-environment0")


@pytest.fixture(scope="module")
def authed(start_gateway, new_bucket):
    bucket = new_bucket("auth")
    other = new_bucket("auth-other")
    os.environ["S3CRYPT_TEST_CAROL_SECRET"] = CAROL[1]
    config = {
        "keys": [{"id": "default", "key_hex": TEST_KEY_HEX}],
        "clients": [
            {"access_key_id": ALICE[0], "secret_access_key": ALICE[1],
             "grants": [{"bucket": "auth-*", "actions": ["read", "write", "delete", "list"]}]},
            {"access_key_id": BOB[0], "secret_access_key": BOB[1],
             "grants": [{"bucket": bucket, "prefix": "shared/", "actions": ["read", "list"]}]},
            {"access_key_id": CAROL[0], "secret_access_key_env": "S3CRYPT_TEST_CAROL_SECRET",
             "grants": [{"bucket": bucket, "prefix": "shared/", "actions": ["read", "write", "delete", "list"]}]},
        ],
        "anonymous": {"grants": [{"bucket": bucket, "prefix": "public/", "actions": ["read"]}]},
    }
    return start_gateway(config), bucket, other


def client(gw, creds, **config):
    return boto3.session.Session().client(
        "s3", endpoint_url=gw.endpoint, region_name="us-east-1", aws_access_key_id=creds[0],
        aws_secret_access_key=creds[1], config=Config(s3={"addressing_style": "path"}, **config))


def code(e):
    return e.value.response["Error"]["Code"]


def test_signed_clients_work_and_policies_apply(authed):
    gw, bucket, other = authed
    alice, bob = client(gw, ALICE), client(gw, BOB)
    data = os.urandom(300_000)
    alice.put_object(Bucket=bucket, Key="shared/doc", Body=data)
    alice.put_object(Bucket=bucket, Key="private/doc", Body=b"alice only")
    alice.upload_fileobj(__import__("io").BytesIO(os.urandom(9 * 1024 * 1024)), bucket, "private/big")
    assert alice.get_object(Bucket=bucket, Key="shared/doc")["Body"].read() == data
    # Bob: read and list under shared/ only.
    assert bob.get_object(Bucket=bucket, Key="shared/doc")["Body"].read() == data
    assert [o["Key"] for o in bob.list_objects_v2(Bucket=bucket, Prefix="shared/")["Contents"]] == ["shared/doc"]
    with pytest.raises(ClientError) as e:
        bob.get_object(Bucket=bucket, Key="private/doc")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        bob.put_object(Bucket=bucket, Key="shared/new", Body=b"x")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        bob.list_objects_v2(Bucket=bucket)  # no prefix: more than his grant
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        bob.list_objects(Bucket=bucket, Prefix="private/")  # ListObjects V1 too
    assert code(e) == "AccessDenied"
    # Two prefixes: which one a backend lists is not the gateway's to guess.
    resp, text = send(gw, signed_request(gw, BOB, "GET", f"/{bucket}?list-type=2&prefix=shared%2F&prefix=t", b"",
                                         {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()}))
    assert resp.status == 403 and b"<Code>AccessDenied</Code>" in text, text
    with pytest.raises(ClientError) as e:
        bob.delete_object(Bucket=bucket, Key="shared/doc")
    assert code(e) == "AccessDenied"
    # Copy needs read on the source and write on the target.
    alice.copy_object(Bucket=other, Key="copy", CopySource={"Bucket": bucket, "Key": "shared/doc"})
    with pytest.raises(ClientError) as e:
        bob.copy_object(Bucket=bucket, Key="shared/copy", CopySource={"Bucket": bucket, "Key": "shared/doc"})
    assert code(e) == "AccessDenied"
    # Carol reads and writes under shared/ only, also through "..".
    carol = client(gw, CAROL)
    carol.copy_object(Bucket=bucket, Key="shared/copy", CopySource={"Bucket": bucket, "Key": "shared/doc"})
    for call in [lambda: carol.copy_object(Bucket=bucket, Key="shared/stolen", CopySource=f"{bucket}/shared/../private/doc"),
                 lambda: carol.get_object(Bucket=bucket, Key="shared/../private/doc"),
                 lambda: carol.put_object(Bucket=bucket, Key="shared/../private/doc", Body=b"overwritten"),
                 lambda: carol.list_objects_v2(Bucket=bucket, Prefix="shared/../")]:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert alice.get_object(Bucket=bucket, Key="private/doc")["Body"].read() == b"alice only"


def test_bad_signatures_and_unknown_keys(authed):
    gw, bucket, _ = authed
    with pytest.raises(ClientError) as e:
        client(gw, (ALICE[0], "wrong-secret")).get_object(Bucket=bucket, Key="shared/doc")
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        client(gw, ("AKIAUNKNOWN0000000", "whatever")).list_objects_v2(Bucket=bucket)
    assert code(e) == "InvalidAccessKeyId"
    # A signed request that lost its date header: S3's "missing a required
    # header"; a date that does not parse: S3's AccessDenied.
    req = signed_request(gw, ALICE, "GET", f"/{bucket}/shared/doc", b"", {})
    del req.headers["X-Amz-Date"]
    resp, data = send(gw, req)
    assert resp.status == 400 and b"<Code>MissingSecurityHeader</Code>" in data, data
    req = signed_request(gw, ALICE, "GET", f"/{bucket}/shared/doc", b"", {})
    req.headers.replace_header("X-Amz-Date", "yesterday")
    resp, data = send(gw, req)
    assert resp.status == 403 and b"<Code>AccessDenied</Code>" in data, data


def test_anonymous_only_where_granted(authed):
    gw, bucket, _ = authed
    client(gw, ALICE).put_object(Bucket=bucket, Key="public/page", Body=b"hello world")
    with urllib.request.urlopen(f"{gw.endpoint}/{bucket}/public/page") as r:
        assert r.read() == b"hello world"
    # (s3s-fs resolves "..": the first two would read private/doc.)
    for method, path in [("GET", f"/{bucket}/public/../private/doc"), ("GET", f"/{bucket}/public//%2E%2E/private/doc"),
                         ("GET", f"/{bucket}/private/doc"), ("PUT", f"/{bucket}/public/new"), ("GET", f"/{bucket}?list-type=2")]:
        req = urllib.request.Request(f"{gw.endpoint}{path}", method=method, data=b"x" if method == "PUT" else None)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 403 and b"<Code>AccessDenied</Code>" in e.value.read()


def test_presigned_urls(authed):
    gw, bucket, _ = authed
    alice = client(gw, ALICE, signature_version="s3v4")
    alice.put_object(Bucket=bucket, Key="private/presigned", Body=b"via a link")
    # botocore's default presigner is SigV2: refused clearly.
    v2 = client(gw, ALICE, signature_version="s3").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "private/presigned"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(v2)
    assert e.value.code == 400 and b"AWS4-HMAC-SHA256" in e.value.read()
    url = alice.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "private/presigned"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"via a link"
    put_url = alice.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "private/uploaded"}, ExpiresIn=300)
    with urllib.request.urlopen(urllib.request.Request(put_url, data=b"uploaded by link", method="PUT")) as r:
        assert r.status == 200
    assert alice.get_object(Bucket=bucket, Key="private/uploaded")["Body"].read() == b"uploaded by link"
    for bad in [url.replace("private/presigned", "private/other"), url[:-4] + "0000"]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad)
        assert e.value.code == 403
    expired = alice.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "private/presigned"}, ExpiresIn=1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired)
    assert e.value.code == 403
    # Refused or not, a URL's signature never reaches the logs.
    time.sleep(0.5)
    assert expired.split("X-Amz-Signature=")[1] not in gw.log.read_text(errors="replace")
    # More than 7 days: S3 refuses, and so does the gateway.
    week_plus = alice.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "private/presigned"}, ExpiresIn=8 * 24 * 3600)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(week_plus)
    assert e.value.code in (400, 403) and b"AuthorizationQueryParametersError" in e.value.read()


class StreamingSigner(S3SigV4Auth):
    """botocore's S3 signer, signing the streaming payload constant."""

    def payload(self, request):
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


class StreamingTrailerSigner(S3SigV4Auth):
    """botocore's S3 signer, signing the streaming-with-trailer constant."""

    def payload(self, request):
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"


def signed_request(gw, creds, method, path, body, headers, streaming=False):
    """A request signed by botocore's SigV4 signer exactly as boto3 would
    (streaming: True, or "trailer" for the signed-trailer variant)."""
    url = f"{gw.endpoint}{path}"
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    signer = {False: S3SigV4Auth, True: StreamingSigner, "trailer": StreamingTrailerSigner}[streaming]
    signer(Credentials(*creds), "s3", "us-east-1").add_auth(req)
    return req


def send(gw, req, body=None):
    host, port = gw.endpoint.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    path = req.url.split(gw.endpoint, 1)[1]
    conn.request(req.method, path, body=body if body is not None else req.body, headers=dict(req.headers))
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_signed_payload_hash_is_enforced(authed):
    """A body the filter passes on (here DeleteObjects) must match its signed hash."""
    gw, bucket, _ = authed
    alice = client(gw, ALICE)
    alice.put_object(Bucket=bucket, Key="private/a", Body=b"a")
    alice.put_object(Bucket=bucket, Key="private/b", Body=b"b")
    body = b"<Delete><Object><Key>private/a</Key></Object></Delete>"
    altered = b"<Delete><Object><Key>private/b</Key></Object></Delete>"
    import base64
    req = signed_request(gw, ALICE, "POST", f"/{bucket}?delete", body,
                         {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "Content-MD5": base64.b64encode(hashlib.md5(altered).digest()).decode()})
    resp, text = send(gw, req, altered)
    assert resp.status == 400 and b"XAmzContentSHA256Mismatch" in text, text
    assert alice.get_object(Bucket=bucket, Key="private/b")["Body"].read() == b"b"  # not deleted
    req = signed_request(gw, ALICE, "POST", f"/{bucket}?delete", body,
                         {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
    resp, text = send(gw, req)
    assert resp.status == 200 and b"<Deleted>" in text, text


def streaming_body(creds, req, payload, chunk=65536, trailer=None):
    """Signs an STREAMING-AWS4-HMAC-SHA256-PAYLOAD body after botocore signed the
    headers; with `trailer` ("name:value"), a -TRAILER body with its signed trailer."""
    seed = req.headers["Authorization"].split("Signature=")[1]
    amz_date = req.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = ("AWS4" + creds[1]).encode()
    for part in (amz_date[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    empty = hashlib.sha256(b"").hexdigest()
    previous, out = seed, b""
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for piece in pieces:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty, hashlib.sha256(piece).hexdigest()])
        previous = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + (b"\r\n" if piece or not trailer else b"")
    if trailer:
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, hashlib.sha256(f"{trailer}\n".encode()).hexdigest()])
        out += f"{trailer}\r\nx-amz-trailer-signature:{hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()}\r\n\r\n".encode()
    return out


def test_signed_streaming_upload_chunks_are_verified(authed):
    gw, bucket, _ = authed
    payload = os.urandom(150_000)
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(payload))}
    req = signed_request(gw, ALICE, "PUT", f"/{bucket}/private/streamed", b"", headers, streaming=True)
    body = streaming_body(ALICE, req, payload)
    req.headers["Content-Length"] = str(len(body))
    resp, text = send(gw, req, body)
    assert resp.status == 200, text
    assert client(gw, ALICE).get_object(Bucket=bucket, Key="private/streamed")["Body"].read() == payload
    # One flipped payload byte: the chunk signature fails, nothing is stored.
    req = signed_request(gw, ALICE, "PUT", f"/{bucket}/private/streamed-bad", b"", headers, streaming=True)
    body = bytearray(streaming_body(ALICE, req, payload))
    body[70_000] ^= 1
    req.headers["Content-Length"] = str(len(body))
    resp, text = send(gw, req, bytes(body))
    assert resp.status == 403 and b"SignatureDoesNotMatch" in text, text
    with pytest.raises(ClientError):
        client(gw, ALICE).head_object(Bucket=bucket, Key="private/streamed-bad")
    # With a signed trailer (a CRC32 checksum): a good one stores, a wrong
    # trailer signature stores nothing.
    import base64
    import zlib
    trailer = "x-amz-checksum-crc32:" + base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    headers = dict(headers, **{"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "x-amz-trailer": "x-amz-checksum-crc32"})
    for key, tamper in [("private/trailer", False), ("private/trailer-bad", True)]:
        req = signed_request(gw, ALICE, "PUT", f"/{bucket}/{key}", b"", headers, streaming="trailer")
        body = streaming_body(ALICE, req, payload, trailer=trailer)
        if tamper:
            at = body.rindex(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
            body = body[:at] + (b"1" if body[at:at + 1] == b"0" else b"0") + body[at + 1:]
        req.headers["Content-Length"] = str(len(body))
        resp, text = send(gw, req, body)
        if tamper:
            assert resp.status == 403 and b"SignatureDoesNotMatch" in text, text
            with pytest.raises(ClientError):
                client(gw, ALICE).head_object(Bucket=bucket, Key=key)
        else:
            assert resp.status == 200, text
            assert client(gw, ALICE).get_object(Bucket=bucket, Key=key)["Body"].read() == payload


def test_delete_objects_checks_every_key(authed, new_bucket):
    gw, bucket, _ = authed
    alice, bob, carol = client(gw, ALICE), client(gw, BOB), client(gw, CAROL)
    alice.put_object(Bucket=bucket, Key="shared/keep", Body=b"1")
    alice.put_object(Bucket=bucket, Key="private/keep", Body=b"2")
    with pytest.raises(ClientError) as e:
        bob.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "shared/keep"}]})
    assert code(e) == "AccessDenied"
    # Carol may delete under shared/ only: one key outside refuses the batch.
    with pytest.raises(ClientError) as e:
        carol.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "shared/keep"}, {"Key": "private/keep"}]})
    assert code(e) == "AccessDenied"
    # A key the backend's XML parser reads but a search for <Key> misses.
    import base64
    for body in [b"<Delete><Object><Key >private/keep</Key></Object></Delete>",
                 b'<Delete><s3:Object xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Key>private/keep</s3:Key></s3:Object></Delete>',
                 b"<Delete><Object><Key>shared/<![CDATA[x]]></Key></Object></Delete>"]:
        req = signed_request(gw, CAROL, "POST", f"/{bucket}?delete", body,
                             {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
        resp, text = send(gw, req)
        assert resp.status == 400 and b"<Code>MalformedXML</Code>" in text, (body, text)
    assert alice.get_object(Bucket=bucket, Key="shared/keep")["Body"].read() == b"1"
    assert alice.get_object(Bucket=bucket, Key="private/keep")["Body"].read() == b"2"
    assert carol.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "shared/keep"}]})["Deleted"] == [{"Key": "shared/keep"}]
    alice.put_object(Bucket=bucket, Key="shared/keep", Body=b"1")
    out = alice.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "shared/keep"}]})
    assert [d["Key"] for d in out.get("Deleted", [])] == ["shared/keep"]


def test_upload_part_copy_in_a_plaintext_bucket_needs_read_on_the_source(start_gateway, new_bucket):
    """Refused in encrypted buckets, UploadPartCopy is passed on in plaintext
    ones: there it must be checked like CopyObject."""
    bucket = new_bucket("plain")
    gw = start_gateway({
        "keys": [{"id": "default", "key_hex": TEST_KEY_HEX}],
        "buckets": [{"match": bucket, "encrypt": False}],
        "clients": [{"access_key_id": ALICE[0], "secret_access_key": ALICE[1],
                     "grants": [{"bucket": bucket, "actions": ["read", "write", "delete", "list"]}]},
                    {"access_key_id": BOB[0], "secret_access_key": BOB[1],
                     "grants": [{"bucket": bucket, "prefix": "shared/", "actions": ["read", "write", "list"]}]}],
    })
    alice, bob = client(gw, ALICE), client(gw, BOB)
    alice.put_object(Bucket=bucket, Key="private/big", Body=b"p" * (5 * 1024 * 1024 + 1))
    alice.put_object(Bucket=bucket, Key="shared/big", Body=b"s" * (5 * 1024 * 1024 + 1))
    upload = bob.create_multipart_upload(Bucket=bucket, Key="shared/assembled")["UploadId"]
    with pytest.raises(ClientError) as e:
        bob.upload_part_copy(Bucket=bucket, Key="shared/assembled", UploadId=upload, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "private/big"})
    assert code(e) == "AccessDenied"
    part = bob.upload_part_copy(Bucket=bucket, Key="shared/assembled", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "shared/big"})
    bob.complete_multipart_upload(Bucket=bucket, Key="shared/assembled", UploadId=upload,
                                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert bob.get_object(Bucket=bucket, Key="shared/assembled")["Body"].read() == b"s" * (5 * 1024 * 1024 + 1)


def test_every_decision_is_audited(authed):
    gw, bucket, _ = authed
    with pytest.raises(ClientError):
        client(gw, BOB).get_object(Bucket=bucket, Key="private/doc")
    time.sleep(0.5)
    lines = [json.loads(line[line.index("{"):]) for line in gw.log.read_text(errors="replace").splitlines() if '"audit":"s3crypt"' in line]
    assert any(rec["principal"] == BOB[0] and rec["decision"] == "deny" and rec["resource"] == f"/{bucket}/private/doc" for rec in lines)
    assert any(rec["principal"] == ALICE[0] and rec["decision"] == "allow" for rec in lines)
    assert ALICE[1] not in gw.log.read_text(errors="replace")
    # The access log carries who, from where, and the decision, per request.
    denied = [r for r in gw.access_log() if r.get("principal") == BOB[0] and r.get("path", "").endswith("/private/doc")]
    assert denied and denied[-1]["decision"] == "deny" and denied[-1]["client"].startswith("127.0.0.1")
    assert denied[-1]["status"] == 403
    assert (denied[-1]["operation"], denied[-1]["bucket"], denied[-1]["key"]) == ("GetObject", bucket, "private/doc")
    assert "private/doc" in denied[-1]["reason"] and "bytes_in" in denied[-1] and "bytes_out" in denied[-1]
    # A refused signature: the record names the key that was tried.
    with pytest.raises(ClientError):
        client(gw, (BOB[0], "not-bob's-secret")).get_object(Bucket=bucket, Key="shared/doc")
    time.sleep(0.5)
    refused = [r for r in gw.access_log() if r.get("path", "").endswith("/shared/doc") and r.get("status") == 403]
    assert refused[-1]["principal"] == BOB[0] and refused[-1]["decision"] == "deny"
    assert "SignatureDoesNotMatch" in refused[-1]["reason"]
    # A refused upload's signed payload hash (a hash of its plaintext) is not logged.
    secret_body = b"guessable plaintext"
    digest = hashlib.sha256(secret_body).hexdigest()
    req = signed_request(gw, BOB, "PUT", f"/{bucket}/private/guess", secret_body, {"x-amz-content-sha256": digest})
    resp, _ = send(gw, req)
    assert resp.status == 403
    time.sleep(0.5)
    assert any(r.get("path", "").endswith("/private/guess") for r in gw.access_log())
    assert digest not in gw.log.read_text(errors="replace")
    stats = gw.stats("wasmcustom.")
    assert stats["wasmcustom.s3crypt_requests_denied"] > 0 and stats["wasmcustom.s3crypt_requests_allowed"] > 0
    assert stats.get("wasmcustom.s3crypt_errors_AccessDenied", 0) > 0


def signed_trailer_body(creds, req, payload, trailer, chunk=65536):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: signed chunks, then the
    trailer and its signature (AWS sigv4-streaming-trailers)."""
    framed = streaming_body(creds, req, payload, chunk)
    seed = framed.rsplit(b"chunk-signature=", 1)[1][:64].decode()
    amz_date = req.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = ("AWS4" + creds[1]).encode()
    for part in (amz_date[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    name, value = trailer
    sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, seed, hashlib.sha256(f"{name}:{value}\n".encode()).hexdigest()])
    signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    # streaming_body ends with the final chunk's CRLF: the trailer section replaces it.
    return framed[:-2] + f"{name}:{value}\r\nx-amz-trailer-signature:{signature}\r\n\r\n".encode()


@pytest.mark.parametrize("size", [0, 100_000])
def test_signed_streaming_upload_with_signed_trailer(authed, size):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: chunk and trailer signatures
    verified, the trailing CRC32 checked against the plaintext; a wrong
    checksum (correctly signed) or a wrong trailer signature stores nothing.
    Empty bodies too: their trailer is all there is to check."""
    import base64
    import zlib
    gw, bucket, _ = authed
    payload = os.urandom(size)
    right = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(size), "x-amz-trailer": "x-amz-checksum-crc32"}

    class TrailerSigner(S3SigV4Auth):
        def payload(self, request):
            return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"

    def put(key, crc, damage_signature=False):
        req = AWSRequest(method="PUT", url=f"{gw.endpoint}/{bucket}/private/{key}", data=b"", headers=headers)
        TrailerSigner(Credentials(*ALICE), "s3", "us-east-1").add_auth(req)
        body = signed_trailer_body(ALICE, req, payload, ("x-amz-checksum-crc32", crc))
        if damage_signature:
            at = body.rindex(b"x-amz-trailer-signature:") + len("x-amz-trailer-signature:")
            body = body[:at] + (b"0" if body[at:at + 1] != b"0" else b"1") + body[at + 1:]
        req.headers["Content-Length"] = str(len(body))
        return send(gw, req, body)

    alice = client(gw, ALICE)
    resp, text = put(f"bad-crc-{size}", "AAAAAQ==")
    assert resp.status == 400 and b"BadDigest" in text, text
    resp, text = put(f"bad-sig-{size}", right, damage_signature=True)
    assert resp.status == 403 and b"SignatureDoesNotMatch" in text, text
    for key in (f"bad-crc-{size}", f"bad-sig-{size}"):
        with pytest.raises(ClientError):
            alice.head_object(Bucket=bucket, Key=f"private/{key}")
    resp, text = put(f"good-{size}", right)
    assert resp.status == 200 and resp.getheader("x-amz-checksum-crc32") == right, text
    assert alice.get_object(Bucket=bucket, Key=f"private/good-{size}")["Body"].read() == payload
