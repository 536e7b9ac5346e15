// AWS SDK for JavaScript v3 through the gateway, as its users call it: default
// client settings (checksums on: WHEN_SUPPORTED for requests and responses),
// path-style addressing, the endpoint pointed at the gateway.
//
//   node sdk_v3.mjs ENDPOINT BUCKET WORKDIR
//
// WORKDIR holds the inputs integration/test_client_sdk_js.py wrote (small.bin,
// stream.bin, big.bin); downloads are written next to them (*.out). Prints one
// JSON object: what each call sent (the headers that show aws-chunked framing
// and checksums) and what it got back.
import { createReadStream, createWriteStream, statSync, readFileSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand,
  ListObjectsV2Command, DeleteObjectCommand,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";

const [endpoint, bucket, dir] = process.argv.slice(2);
if (!dir) {
  console.error("usage: node sdk_v3.mjs ENDPOINT BUCKET WORKDIR");
  process.exit(2);
}

const s3 = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  maxAttempts: 1,
});

// What went on the wire, per operation (after signing: the final headers).
const sent = [];
const SHOWN = ["content-encoding", "content-length", "transfer-encoding", "x-amz-content-sha256",
  "x-amz-decoded-content-length", "x-amz-trailer", "x-amz-sdk-checksum-algorithm",
  "x-amz-checksum-mode", "content-md5"];
s3.middlewareStack.add((next, context) => async (args) => {
  const h = args.request.headers || {};
  const shown = {};
  for (const [k, v] of Object.entries(h)) {
    const name = k.toLowerCase();
    if (SHOWN.includes(name) || name.startsWith("x-amz-checksum-")) shown[name] = v;
  }
  sent.push({ op: context.commandName, query: args.request.query || {}, headers: shown });
  return next(args);
}, { step: "finalizeRequest", priority: "low", name: "s3cryptRecordHeaders" });

const result = { sent };

async function download(key, out) {
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const checksums = Object.fromEntries(Object.entries(got).filter(([k]) => k.startsWith("Checksum")));
  // The SDK validates the response checksum while the body streams (it throws on a mismatch).
  await pipeline(got.Body, createWriteStream(join(dir, out)));
  return { contentLength: got.ContentLength, etag: got.ETag, checksums };
}

// 1. PutObject with a stream body (aws-chunked with a CRC32 trailer, even over http).
const streamSize = statSync(join(dir, "stream.bin")).size;
const putStream = await s3.send(new PutObjectCommand({
  Bucket: bucket, Key: "sdk/stream.bin", Body: createReadStream(join(dir, "stream.bin")),
  ContentLength: streamSize,
}));
result.putStream = { etag: putStream.ETag, checksumCRC32: putStream.ChecksumCRC32 };

// 1b. An empty stream: aws-chunked too, its CRC32 trailer all there is to check.
const putEmpty = await s3.send(new PutObjectCommand({
  Bucket: bucket, Key: "sdk/empty.bin", Body: Readable.from([]), ContentLength: 0,
}));
result.putEmpty = { etag: putEmpty.ETag, checksumCRC32: putEmpty.ChecksumCRC32 };
const gotEmpty = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "sdk/empty.bin" }));
result.getEmpty = { body: await gotEmpty.Body.transformToString(), checksumCRC32: gotEmpty.ChecksumCRC32 };
await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: "sdk/empty.bin" }));

// 2. PutObject with a Buffer body (the checksum as a header).
const putBuffer = await s3.send(new PutObjectCommand({
  Bucket: bucket, Key: "sdk/small.bin", Body: readFileSync(join(dir, "small.bin")),
  ContentType: "application/x-test", Metadata: { origin: "sdk-v3" },
}));
result.putBuffer = { etag: putBuffer.ETag, checksumCRC32: putBuffer.ChecksumCRC32 };

// 3. Multipart with lib-storage's Upload (default: 5 MiB parts, 4 at a time).
const upload = new Upload({
  client: s3,
  params: { Bucket: bucket, Key: "sdk/big.bin", Body: createReadStream(join(dir, "big.bin")) },
});
const done = await upload.done();
result.upload = { etag: done.ETag, checksumCRC32: done.ChecksumCRC32 };

// 4. GetObject (checksum validation on) and HeadObject.
result.getStream = await download("sdk/stream.bin", "stream.out");
result.getSmall = await download("sdk/small.bin", "small.out");
result.getBig = await download("sdk/big.bin", "big.out");
const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: "sdk/small.bin" }));
result.headSmall = {
  contentLength: head.ContentLength, contentType: head.ContentType, metadata: head.Metadata, etag: head.ETag,
};

// 5. ListObjectsV2 sizes.
const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "sdk/" }));
result.list = (listed.Contents || []).map((o) => ({ key: o.Key, size: o.Size, etag: o.ETag }));

// 6. DeleteObject.
await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: "sdk/small.bin" }));
const after = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "sdk/" }));
result.listAfterDelete = (after.Contents || []).map((o) => o.Key);

console.log(JSON.stringify(result));
