"""Clients addressing buckets virtual-hosted style (Host: bucket.<gateway>).

*.localhost does not resolve on every machine, so the requests go to the
gateway's address with the Host header a virtual-hosted client sends.
"""

import http.client
import os

from conftest import TEST_KEY_HEX


def request(gw, method, host, path, body=b"", headers=None):
    _, port = gw.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_virtual_hosted_clients_are_served_in_path_style(start_gateway, new_bucket, backend_s3):
    gw = start_gateway({"keys": [{"id": "default", "key_hex": TEST_KEY_HEX}], "virtual_host_suffixes": ["s3.gateway.test"]})
    bucket = new_bucket("vhost")
    host = f"{bucket}.s3.gateway.test:{gw.endpoint.rsplit(':', 1)[1]}"
    data = os.urandom(200_000)
    resp, _ = request(gw, "PUT", host, "/dir/obj", data)
    assert resp.status == 200
    resp, body = request(gw, "GET", host, "/dir/obj")
    assert resp.status == 200 and body == data
    resp, body = request(gw, "GET", host, "/dir/obj", headers={"Range": "bytes=5-9"})
    assert resp.status == 206 and body == data[5:10]
    resp, body = request(gw, "GET", host, "/?list-type=2")
    assert resp.status == 200 and f"<Size>{len(data)}</Size>".encode() in body
    stored = backend_s3.get_object(Bucket=bucket, Key="dir/obj")
    assert "s3crypt" in stored["Metadata"] and stored["ContentLength"] > len(data)


def test_virtual_hosted_copy_multipart_and_batch_delete(start_gateway, new_bucket, backend_s3):
    import base64
    import hashlib
    import re
    gw = start_gateway({"keys": [{"id": "default", "key_hex": TEST_KEY_HEX}], "virtual_host_suffixes": ["s3.gateway.test"]})
    bucket = new_bucket("vhost-more")
    host = f"{bucket}.s3.gateway.test:{gw.endpoint.rsplit(':', 1)[1]}"
    data = os.urandom(100_000)
    assert request(gw, "PUT", host, "/src", data, {"Content-Type": "text/a"})[0].status == 200
    resp, text = request(gw, "PUT", host, "/dst", b"", {"x-amz-copy-source": f"{bucket}/src", "x-amz-metadata-directive": "REPLACE",
                                                         "Content-Type": "text/b", "x-amz-meta-k": "v"})
    assert resp.status == 200, text
    resp, body = request(gw, "GET", host, "/dst")
    assert body == data and resp.getheader("content-type") == "text/b" and resp.getheader("x-amz-meta-k") == "v"
    resp, text = request(gw, "POST", host, "/mp?uploads")
    upload = re.search(rb"<UploadId>(.*?)</UploadId>", text).group(1).decode()
    parts, etags = [os.urandom(5 * 1024 * 1024), os.urandom(999)], []
    for n, part in enumerate(parts, 1):
        resp, text = request(gw, "PUT", host, f"/mp?partNumber={n}&uploadId={upload}", part)
        assert resp.status == 200, text
        etags.append(resp.getheader("etag"))
    xml = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
    resp, text = request(gw, "POST", host, f"/mp?uploadId={upload}", f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode())
    assert resp.status == 200, text
    assert request(gw, "GET", host, "/mp")[1] == b"".join(parts)
    delete = b"<Delete><Object><Key>src</Key></Object><Object><Key>mp</Key></Object></Delete>"
    resp, text = request(gw, "POST", host, "/?delete", delete, {"Content-MD5": base64.b64encode(hashlib.md5(delete).digest()).decode()})
    assert resp.status == 200 and text.count(b"<Deleted>") == 2, text
    assert [o["Key"] for o in backend_s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dst"]
