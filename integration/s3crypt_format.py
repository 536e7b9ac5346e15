"""An independent decoder of the s3crypt v1 stored-object format, written from
filter/FORMAT.md (not from the Rust code), using pycryptodome.

Used by the integration tests to check that what the backend stores is
ciphertext that decrypts per the spec, and by hand as a recovery tool:

    python s3crypt_format.py KEK_HEX ENVELOPE_VALUE < stored_object > plaintext
"""

import base64
import hashlib
import struct
import sys

from Crypto.Cipher import AES, ChaCha20_Poly1305
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

SUITES = {"chacha20-poly1305": 1, "aes-256-gcm": 2}
HEADER_LEN = 24
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN


class FormatError(Exception):
    """The object does not decrypt; args[0] is the FORMAT.md error name."""


def parse_envelope(value):
    fields = value.strip().split(";")
    parsed = {}
    order = ["v", "s", "c", "k", "n", "w", "kms", "e"]
    i = 0
    for f in fields:
        name, _, val = f.partition("=")
        while i < len(order) and order[i] != name:
            if order[i] in ("v", "s", "c", "k"):
                raise FormatError("malformed")
            i += 1
        if i == len(order):
            raise FormatError("malformed")
        parsed[name] = val
        i += 1
    if parsed.get("v") != "1":
        raise FormatError("unsupported_version")
    for required in ("s", "c", "k"):
        if required not in parsed:
            raise FormatError("malformed")
    if ("w" in parsed) == ("kms" in parsed):
        raise FormatError("malformed")
    b64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # noqa: E731
    env = {
        "suite": parsed["s"],
        "chunk_size": int(parsed["c"]),
        "key_id": parsed["k"],
        "plaintext_len": int(parsed["n"]) if "n" in parsed else None,
        "wrapped": b64(parsed["w"]) if "w" in parsed else None,
        # Strict KMS mode: the data key's KMS CiphertextBlob.
        "kms_blob": b64(parsed["kms"]) if "kms" in parsed else None,
        # Everything before the wrapped key: the "s3crypt" encryption context entry.
        "prefix": value.strip().split(";w=")[0].split(";kms=")[0],
    }
    if env["suite"] not in SUITES or (env["wrapped"] is not None and len(env["wrapped"]) != 72):
        raise FormatError("malformed")
    if env["kms_blob"] is not None and not 1 <= len(env["kms_blob"]) <= 1024:
        raise FormatError("malformed")
    return env


def kms_context(bucket, key, envelope_value):
    """The KMS encryption context of a strict-mode object's data key (FORMAT.md)."""
    return {"bucket": bucket, "key": key, "s3crypt": parse_envelope(envelope_value)["prefix"]}


def unwrap_dek(kek, env):
    n = env["plaintext_len"]
    key_id = env["key_id"].encode()
    aad = (
        b"s3crypt v1 dek\x00"
        + bytes([SUITES[env["suite"]]])
        + struct.pack(">I", env["chunk_size"])
        + (b"\x01" + struct.pack(">Q", n) if n is not None else b"\x00" + b"\x00" * 8)
        + bytes([len(key_id)])
        + key_id
    )
    w = env["wrapped"]
    cipher = ChaCha20_Poly1305.new(key=kek, nonce=w[:24])  # 24-byte nonce: XChaCha20-Poly1305
    cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(w[24:56], w[56:72])
    except ValueError:
        raise FormatError("unwrap_failed")


def segment_cipher(suite, dek, salt, part, nonce):
    info = b"s3crypt v1 segment key" + bytes([SUITES[suite]]) + struct.pack(">I", part)
    key = HKDF(dek, 32, salt, SHA256, context=info)
    if suite == "chacha20-poly1305":
        return ChaCha20_Poly1305.new(key=key, nonce=nonce)
    return AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)


def ciphertext_len(p, c):
    return p + OVERHEAD * (-(-p // c))


def plaintext_len(t, c):
    chunks = -(-t // (c + OVERHEAD))
    p = t - OVERHEAD * chunks
    if p < 0 or ciphertext_len(p, c) != t:
        return None
    return p


def decrypt_object(kek, envelope_value, stored, dek=None):
    """Decrypts a whole stored object; raises FormatError on any violation.
    `dek`: the data key itself (a strict-mode object's, from KMS Decrypt)."""
    env = parse_envelope(envelope_value)
    if dek is None:
        if env["wrapped"] is None:
            raise FormatError("unwrap_failed")
        dek = unwrap_dek(kek, env)
    c = env["chunk_size"]
    p = plaintext_len(len(stored), c)
    if p is None or (env["plaintext_len"] is not None and env["plaintext_len"] != p):
        raise FormatError("length_mismatch")
    out = bytearray()
    pos = 0
    prev = None
    while pos < len(stored):
        header = stored[pos : pos + HEADER_LEN]
        if len(header) < HEADER_LEN:
            raise FormatError("truncated")
        salt, part, index, flags = header[:12], *struct.unpack(">IIB", header[12:21])
        length = int.from_bytes(header[21:24], "big")
        last = flags == 1
        if flags not in (0, 1) or length == 0 or length > c or (not last and length != c):
            raise FormatError("bad_chunk_header")
        end = pos + HEADER_LEN + length + TAG_LEN
        if end > len(stored) or (end == len(stored) and not last):
            raise FormatError("truncated")
        if last and part == 0 and end != len(stored):
            raise FormatError("trailing_data")
        if prev is None:
            ok = index == 0
        elif not prev[3]:
            ok = (salt, part, index) == (prev[0], prev[1], prev[2] + 1)
        else:
            ok = prev[1] != 0 and part > prev[1] and index == 0
        if not ok:
            raise FormatError("chunk_out_of_order")
        nonce = b"\x00" * 7 + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
        cipher = segment_cipher(env["suite"], dek, salt, part, nonce)
        cipher.update(header)
        try:
            out += cipher.decrypt_and_verify(stored[pos + HEADER_LEN : end - TAG_LEN], stored[end - TAG_LEN : end])
        except ValueError:
            raise FormatError("chunk_auth_failed")
        prev = (salt, part, index, last)
        pos = end
    return bytes(out)


def read_vector(path):
    """Reads a FORMAT.md test vector file: (header dict, stored bytes)."""
    data = open(path, "rb").read()
    split = data.index(b"\n\n")
    header = dict(line.split(": ", 1) for line in data[:split].decode().splitlines())
    return header, data[split + 2 :]


def check_vector(path):
    header, stored = read_vector(path)
    # kms_* vectors: the DEK is what the KMS would unwrap from the blob.
    dek = bytes.fromhex(header["dek"]) if "kms_context" in header else None
    try:
        plain = decrypt_object(bytes.fromhex(header["kek"]), header["envelope"], stored, dek=dek)
    except FormatError as e:
        return e.args[0] == header["expect"], e.args[0]
    ok = header["expect"] == "ok" and hashlib.sha256(plain).hexdigest() == header["plaintext_sha256"]
    return ok, "ok"


if __name__ == "__main__":
    kek_hex, envelope = sys.argv[1], sys.argv[2]
    sys.stdout.buffer.write(decrypt_object(bytes.fromhex(kek_hex), envelope, sys.stdin.buffer.read()))
