#!/usr/bin/env python3
"""Move objects to the gateway's active key (KEK rotation), moving no data.

For every object under s3://BUCKET/PREFIX, asks the gateway to copy the
object onto itself with its own metadata (x-amz-metadata-directive REPLACE).
The gateway re-wraps the object's data key under the active KEK and writes
the new envelope; the backend copies the body server-side, so no object body
passes through the gateway or this script.

    python scripts/rotate.py --endpoint http://127.0.0.1:10000 BUCKET [PREFIX]

Run it against a gateway configured with the new key as `write_key` and the
old key still in `keys`. Once it reports no failures, the old key can be
removed from the configuration. Objects above 5 GiB cannot be copied in one
request and are reported, not rotated. Credentials: the usual AWS_* variables
(the gateway's client credentials).
"""

import argparse
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

KEPT = {  # HEAD response field -> copy_object parameter
    "ContentType": "ContentType",
    "ContentEncoding": "ContentEncoding",
    "ContentDisposition": "ContentDisposition",
    "ContentLanguage": "ContentLanguage",
    "CacheControl": "CacheControl",
    "Expires": "Expires",
    "WebsiteRedirectLocation": "WebsiteRedirectLocation",
}
MAX_COPY = 5 * 1024**3


def rotate(s3, bucket: str, prefix: str, out=sys.stdout) -> tuple[int, list[str]]:
    rotated, failed = 0, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                if head["ContentLength"] > MAX_COPY:
                    failed.append(f"{key}: larger than 5 GiB, cannot be copied in one request")
                    continue
                extra = {param: head[field] for field, param in KEPT.items() if field in head}
                s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                               MetadataDirective="REPLACE", Metadata=head.get("Metadata", {}),
                               CopySourceIfMatch=head["ETag"], **extra)
                rotated += 1
                print(f"rotated: s3://{bucket}/{key}", file=out)
            except ClientError as e:
                failed.append(f"{key}: {e.response['Error'].get('Code')} {e.response['Error'].get('Message')}")
    return rotated, failed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="http://127.0.0.1:10000", help="the gateway's URL")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("bucket")
    p.add_argument("prefix", nargs="?", default="")
    args = p.parse_args(argv)
    s3 = boto3.session.Session().client("s3", endpoint_url=args.endpoint, region_name=args.region,
                                        config=Config(s3={"addressing_style": "path"}))
    rotated, failed = rotate(s3, args.bucket, args.prefix)
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    print(f"{rotated} rotated, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
