#!/usr/bin/env bash
# Builds (once) the benchmark's backend: s3s-fs 0.14.1, the project's local
# backend, with two bench-only patches, into
# ${S3CRYPT_CACHE:-~/.cache/s3cg}/s3s-fs-0.14.1-bench/bin/s3s-fs, and prints its path.
#
# Why: stock s3s-fs reads objects for GET in 4 KiB pieces through tokio's
# blocking pool (~60-75 MB/s on this machine kind, below Envoy's own speed, so
# every GET figure would measure the backend), and does not set TCP_NODELAY,
# so on keep-alive connections small responses wait ~40 ms for delayed ACKs.
# The patches: 1 MiB read buffer for GetObject/CopyObject bodies, and
# TCP_NODELAY on accepted connections. Nothing else changes (SigV4 checks,
# storage layout, MD5 on PUT are the stock code).
set -euo pipefail
VERSION=0.14.1
CACHE=${S3CRYPT_CACHE:-$HOME/.cache/s3cg}
ROOT=$CACHE/s3s-fs-$VERSION-bench
BIN=$ROOT/bin/s3s-fs
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
mkdir -p "$ROOT"
exec 9>"$ROOT.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
SRC=$ROOT/src-$VERSION
rm -rf "$SRC"
FOUND=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/s3s-fs-$VERSION 2>/dev/null | head -1 || true)
if [ -n "$FOUND" ]; then
  cp -r "$FOUND" "$SRC"
else
  mkdir -p "$SRC"
  curl -fsSL "https://static.crates.io/crates/s3s-fs/s3s-fs-$VERSION.crate" | tar xz -C "$SRC" --strip-components=1
fi
chmod -R u+w "$SRC"
grep -q 'ReaderStream::with_capacity(file, 4096)' "$SRC/src/s3.rs"
sed -i 's/ReaderStream::with_capacity(\(file\|src_file\), 4096)/ReaderStream::with_capacity(\1, 1 << 20)/' "$SRC/src/s3.rs"
grep -q 'let conn = http_server.serve_connection(TokioIo::new(socket)' "$SRC/src/main.rs"
sed -i 's/        let conn = http_server.serve_connection(TokioIo::new(socket)/        let _ = socket.set_nodelay(true);\n&/' "$SRC/src/main.rs"
echo "building the benchmark backend (patched s3s-fs $VERSION; a few minutes, once; log: $ROOT/build.log)" >&2
( cd "$SRC" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --locked --features binary --bin s3s-fs ) >"$ROOT/build.log" 2>&1 \
  || { tail -30 "$ROOT/build.log" >&2; exit 1; }
mkdir -p "$ROOT/bin"
cp "$ROOT/target/release/s3s-fs" "$BIN"
rm -rf "$ROOT/target"
echo "$BIN"
