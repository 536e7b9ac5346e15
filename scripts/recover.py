#!/usr/bin/env python3
"""Get your data back without the gateway: download objects straight from the
S3 backend and decrypt them with your key-encryption keys.

    python scripts/recover.py --endpoint https://s3.eu-west-1.amazonaws.com \\
        --config plugin.json BUCKET [PREFIX] --out ./restored

Needs only the backend's credentials (AWS_* variables), the plugin JSON (or
--key ID=HEX, repeatable) and this repository's decoder,
integration/s3crypt_format.py, which implements filter/FORMAT.md without any
of the gateway's code. Objects without an envelope are copied as they are.
Every object is authenticated before it is written; a damaged one is
reported and not written.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
import s3crypt_format  # noqa: E402


def keys_from_config(path: Path) -> dict[str, bytes]:
    """KEKs by id from the plugin JSON: key_hex(_env) and password(_env) + PBKDF2."""
    config = json.loads(path.read_text())
    keys = {}
    for k in config.get("keys", []):
        hex_key = k.get("key_hex") or (os.environ.get(k["key_hex_env"]) if k.get("key_hex_env") else None)
        password = k.get("password") or (os.environ.get(k["password_env"]) if k.get("password_env") else None)
        if hex_key:
            keys[k["id"]] = bytes.fromhex(hex_key.strip())
        elif password:
            keys[k["id"]] = hashlib.pbkdf2_hmac("sha256", password.encode(), k["pbkdf2_salt"].encode(),
                                                k.get("pbkdf2_iterations", 600_000), 32)
        else:
            raise SystemExit(f"key {k.get('id')!r}: no key material available (set its *_env variable)")
    return keys


def recover(s3, bucket: str, prefix: str, keys: dict[str, bytes], out: Path) -> tuple[int, list[str]]:
    done, failed = 0, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            got = s3.get_object(Bucket=bucket, Key=key)
            stored = got["Body"].read()
            envelope = got.get("Metadata", {}).get("s3crypt")
            try:
                if envelope is None:
                    plain = stored
                else:
                    key_id = s3crypt_format.parse_envelope(envelope)["key_id"]
                    if key_id not in keys:
                        raise s3crypt_format.FormatError(f"unknown_key_id {key_id}")
                    plain = s3crypt_format.decrypt_object(keys[key_id], envelope, stored)
            except s3crypt_format.FormatError as e:
                failed.append(f"{key}: {e.args[0]}")
                continue
            target = out / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(plain)
            done += 1
    return done, failed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="the S3 backend's URL (not the gateway)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--config", type=Path, help="the gateway's plugin JSON")
    p.add_argument("--key", action="append", default=[], help="ID=HEX, a raw key (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("bucket")
    p.add_argument("prefix", nargs="?", default="")
    args = p.parse_args(argv)
    keys = keys_from_config(args.config) if args.config else {}
    for item in args.key:
        kid, _, hex_key = item.partition("=")
        keys[kid] = bytes.fromhex(hex_key)
    s3 = boto3.session.Session().client("s3", endpoint_url=args.endpoint, region_name=args.region,
                                        config=Config(s3={"addressing_style": "path"}))
    done, failed = recover(s3, args.bucket, args.prefix, keys, args.out)
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    print(f"{done} recovered, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
