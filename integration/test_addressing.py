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
