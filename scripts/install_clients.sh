#!/usr/bin/env bash
# Install the S3 clients that integration/test_client_*.py drives through the
# gateway (the compatibility matrix); idempotent, and about a second when
# everything is already there. Run after scripts/bootstrap.sh (it needs the venv).
#
#   rclone, s3cmd, openssl         Debian packages (apt-get)
#   awscli v2                      Debian package `awscli` (/usr/bin/aws), when the
#                                  Debian release offers a 2.x (bookworm: 2.9.19)
#   minio-py                       PyPI, pinned in integration/clients/requirements.txt,
#                                  into $S3CRYPT_CACHE/venv
#   @aws-sdk/client-s3, lib-storage  npm, pinned by integration/clients/package-lock.json,
#                                  `npm ci` into integration/clients/node_modules
#
# apt-get update runs only when the package lists do not know a package or an
# install from them fails. A failed install from a registry is an error (exit 1).
# A client this platform cannot have (no apt-get, a Debian release without
# awscli 2.x, no Node.js >= 20) is recorded as unavailable, with the reason, in
# $S3CRYPT_CACHE/clients.status; the tests skip exactly those clients and print
# the reason. Every other client is recorded with its version.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${S3CRYPT_CACHE:-$HOME/.cache/s3cg}
VENV=$CACHE/venv
CLIENTS=$REPO/integration/clients
REQUIREMENTS=$CLIENTS/requirements.txt
STATUS=$CACHE/clients.status
NODE_MIN_MAJOR=20

say() { echo "install_clients: $*" >&2; }
die() { echo "install_clients: error: $*" >&2; exit 1; }

# Run a command with its output in a log file; show the log's end if it fails.
logged() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "'$*' failed (full log: $log)"
  fi
}

mkdir -p "$CACHE"
[ -x "$VENV/bin/python" ] || die "$VENV not found: run scripts/bootstrap.sh (make build) first"

# One installer at a time (apt and pip do not like company), even from several checkouts.
exec 9>"$CACHE/clients.lock"
flock 9

declare -a LINES=()
record_ok() { LINES+=("$1	ok	$2"); }
record_unavailable() {
  LINES+=("$1	unavailable	$2")
  say "$1 is unavailable on this platform: $2 (its tests will be skipped)"
}

# --- Debian packages ----------------------------------------------------------
have_apt() { command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; }
APT_UPDATED=
apt_update() {
  [ -n "$APT_UPDATED" ] && return 0
  say "apt-get update"
  logged "$CACHE/apt.log" apt-get update
  APT_UPDATED=1
}
apt_candidate() {  # the version apt would install, or nothing
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v '^(none)$' || true
}
dpkg_version() {  # the installed version, or nothing
  dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "installed" {print $2}' || true
}
apt_install() {
  [ "$(id -u)" = 0 ] || die "missing Debian package(s) $*: install them (apt-get install $*) and run again"
  say "apt-get install $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$CACHE/apt.log" 2>&1; then
    # Stale lists (files gone from the mirror): update once, try again.
    [ -z "$APT_UPDATED" ] || { tail -n 30 "$CACHE/apt.log" >&2; die "apt-get install $* failed (log: $CACHE/apt.log)"; }
    apt_update
    DEBIAN_FRONTEND=noninteractive logged "$CACHE/apt.log" apt-get install -y --no-install-recommends "$@"
  fi
}
# CANDIDATE= the version apt would install, after updating the lists once if
# they do not know the package (not in a subshell: a failed update must exit).
candidate_or_update() {
  CANDIDATE=$(apt_candidate "$1")
  if [ -z "$CANDIDATE" ]; then
    apt_update
    CANDIDATE=$(apt_candidate "$1")
  fi
}

# rclone: Debian's package (any release has one).
if ! command -v rclone >/dev/null; then
  if have_apt; then
    candidate_or_update rclone
    [ -n "$CANDIDATE" ] || die "apt has no rclone package (after apt-get update)"
    apt_install rclone
  fi
fi
if command -v rclone >/dev/null; then
  v=$(dpkg_version rclone 2>/dev/null || true)
  record_ok rclone "${v:-$(rclone version 2>/dev/null | awk 'NR == 1 {print $2}')}"
else
  record_unavailable rclone "no apt-get here to install Debian's rclone"
fi

# s3cmd: Debian's package, as the matrix names it.
if ! command -v s3cmd >/dev/null; then
  if have_apt; then
    candidate_or_update s3cmd
    [ -n "$CANDIDATE" ] || die "apt has no s3cmd package (after apt-get update)"
    apt_install s3cmd
  fi
fi
if [ -x /usr/bin/s3cmd ]; then
  v=$(dpkg_version s3cmd 2>/dev/null || true)
  record_ok s3cmd "${v:-$(/usr/bin/s3cmd --version 2>/dev/null | awk '{print $3}')}"
else
  record_unavailable s3cmd "no apt-get here to install Debian's s3cmd"
fi

# openssl: makes the test certificate of the HTTPS rows (boto3 and awscli send
# aws-chunked bodies only over HTTPS).
if ! command -v openssl >/dev/null && have_apt; then
  candidate_or_update openssl
  [ -n "$CANDIDATE" ] || die "apt has no openssl package (after apt-get update)"
  apt_install openssl
fi
if command -v openssl >/dev/null; then
  record_ok openssl "$(openssl version | awk '{print $2}')"
else
  record_unavailable openssl "no apt-get here to install Debian's openssl (the HTTPS rows need it)"
fi

# awscli v2: Debian's `awscli` package is v2 from bookworm on (v1 before).
AWS2=/usr/bin/aws
if ! have_apt; then
  record_unavailable awscli-v2 "no apt-get here to install Debian's awscli v2"
else
  v=$(dpkg_version awscli)
  if [ -z "$v" ]; then
    candidate_or_update awscli
    if [[ $CANDIDATE == 2.* ]]; then apt_install awscli; fi
    v=$(dpkg_version awscli)
    [ -n "$v" ] || v="candidate:$CANDIDATE"
  fi
  case "$v" in
    2.*)
      [ -x "$AWS2" ] || die "Debian's awscli $v is installed but $AWS2 is missing"
      record_ok awscli-v2 "$v" ;;
    candidate:)
      record_unavailable awscli-v2 "Debian $(cat /etc/debian_version 2>/dev/null) has no awscli package" ;;
    candidate:*)
      record_unavailable awscli-v2 "Debian $(cat /etc/debian_version 2>/dev/null) offers awscli ${v#candidate:} (v1) only" ;;
    *)
      record_unavailable awscli-v2 "the installed Debian awscli is $v (v1), not v2" ;;
  esac
fi

# --- PyPI: minio-py (into the venv) ----------------------------------------------
STAMP=$VENV/.s3crypt-clients-requirements
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "pip install -r integration/clients/requirements.txt (into $VENV)"
  logged "$CACHE/pip-clients.log" "$VENV/bin/python" -m pip install --disable-pip-version-check \
    -r "$REQUIREMENTS"
  echo "$want" >"$STAMP"
fi
record_ok minio-py "$(sed -n 's/^minio==//p' "$REQUIREMENTS")"

# --- npm: AWS SDK for JavaScript v3 ------------------------------------------------
node_major=
if command -v node >/dev/null; then
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || true)
fi
if [ -z "$node_major" ]; then
  record_unavailable aws-sdk-js-v3 "Node.js is not installed"
elif [ "$node_major" -lt "$NODE_MIN_MAJOR" ]; then
  record_unavailable aws-sdk-js-v3 "Node.js $(node --version) is older than the SDK's minimum $NODE_MIN_MAJOR"
elif ! command -v npm >/dev/null; then
  record_unavailable aws-sdk-js-v3 "npm is not installed"
else
  NSTAMP=$CLIENTS/node_modules/.s3crypt-package-lock
  want=$( (sha256sum "$CLIENTS/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$NSTAMP" 2>/dev/null)" != "$want" ]; then
    say "npm ci (integration/clients/node_modules)"
    logged "$CACHE/npm-clients.log" npm ci --prefix "$CLIENTS" --no-audit --no-fund --loglevel=error
    echo "$want" >"$NSTAMP"
  fi
  v=$(node -p 'require(process.argv[1]).version' \
        "$CLIENTS/node_modules/@aws-sdk/client-s3/package.json" 2>/dev/null) \
    || die "@aws-sdk/client-s3 missing from $CLIENTS/node_modules after npm ci; delete $NSTAMP and run again"
  record_ok aws-sdk-js-v3 "$v"
fi

# --- the status the tests read ------------------------------------------------------
{
  echo "# written by scripts/install_clients.sh: client<TAB>ok|unavailable<TAB>version|reason"
  printf '%s\n' "${LINES[@]}"
} >"$STATUS.tmp"
mv "$STATUS.tmp" "$STATUS"
