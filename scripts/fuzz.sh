#!/usr/bin/env bash
# Builds the fuzz targets (filter/fuzz, cargo fuzz + libFuzzer) and runs each
# for a set time. See FUZZING.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   every (or the named) target, SECONDS each (default 60)
#   scripts/fuzz.sh --smoke [TARGET...]     the short run of `make test`: each target from its
#                                           checked-in seeds only, fixed seed, at most
#                                           SMOKE_RUNS inputs or 15 s, so a CI run is repeatable
#   scripts/fuzz.sh --build                 build only
#
# cargo-fuzz passes rustc flags that only nightly accepts (-Zsanitizer, the
# sancov passes); RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. The
# targets are built without a sanitizer (-s none): the filter is safe Rust,
# where AddressSanitizer finds nothing the Rust checks miss, and it would
# double the build time and halve the speed. Debug assertions and overflow
# checks are on (cargo fuzz's default), so an arithmetic overflow is a crash.
#
# The checked-in seeds (filter/fuzz/corpus/<target>) are only read; what the
# fuzzer adds goes to $S3CRYPT_FUZZ_WORK/corpus/<target> (default
# target/fuzz, ignored by git) and is reused by later runs. Crashes are
# written to $S3CRYPT_FUZZ_WORK/artifacts/<target>/; reproduce one with
#   filter/fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>
# The script exits 1 if any target crashed.
#
# Environment: S3CRYPT_FUZZ_NICE (default 19), S3CRYPT_FUZZ_WORK, S3CRYPT_FUZZ_ARGS
# (extra libFuzzer flags, e.g. "-jobs=2 -workers=2").

set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

TARGETS=(stream_open aws_chunked sigv4_parse range_parse xml_rewrite envelope_parse upload_id_parse config_parse)
FUZZ_DIR=filter/fuzz
WORK=${S3CRYPT_FUZZ_WORK:-target/fuzz}
NICE=${S3CRYPT_FUZZ_NICE:-19}
CARGO_FUZZ_VERSION=0.13.2

seconds=60
build_only=0
smoke=0
SMOKE_RUNS=${S3CRYPT_FUZZ_SMOKE_RUNS:-20000}
case "${1:-}" in
    --smoke) seconds=15; smoke=1; shift ;;
    --build) build_only=1; shift ;;
    ''|-*) ;;
    *[!0-9]*) ;;
    *) seconds=$1; shift ;;
esac
if [ $# -gt 0 ]; then
    for t in "$@"; do
        [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (one of: ${TARGETS[*]})" >&2; exit 2; }
    done
    TARGETS=("$@")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
command -v c++ >/dev/null || { echo "fuzz.sh: libFuzzer needs a C++ compiler (apt-get install g++)" >&2; exit 1; }

export RUSTC_BOOTSTRAP=1
start=$(date +%s)
nice -n "$NICE" cargo fuzz build --fuzz-dir "$FUZZ_DIR" -s none
echo "fuzz.sh: built ${#TARGETS[@]} targets in $(( $(date +%s) - start )) s"
[ "$build_only" = 1 ] && exit 0

BIN=$FUZZ_DIR/target/x86_64-unknown-linux-gnu/release
limits=()
if [ "$smoke" = 1 ]; then
    # A fresh corpus and a fixed seed: the same inputs on every CI run.
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/s3crypt-fuzz-smoke.XXXXXX")
    limits=(-seed=1 -runs="$SMOKE_RUNS")
fi
mkdir -p "$WORK"
summary=$WORK/summary.txt
printf '%-16s %8s %12s %10s %8s %8s  %s\n' target seconds executions exec/s cov ft result > "$summary"
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    log=$WORK/$t.log
    echo "fuzz.sh: $t for $seconds s (log: $log)"
    # -timeout: one input taking 10 s is a finding (a quadratic path, a hang).
    # shellcheck disable=SC2086
    if nice -n "$NICE" "$BIN/$t" "$WORK/corpus/$t" "$FUZZ_DIR/corpus/$t" \
        -max_total_time="$seconds" "${limits[@]}" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$WORK/artifacts/$t/" ${S3CRYPT_FUZZ_ARGS:-} > "$log" 2>&1; then
        result=ok
    else
        result="CRASH: $(ls -t "$WORK/artifacts/$t" | head -1)"
        failed+=("$t")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf '%-16s %8s %12s %10s %8s %8s  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result" >> "$summary"
    if [ "$result" != ok ]; then
        grep -m1 -A3 'panicked at' "$log" >&2 || tail -20 "$log" >&2
    fi
done
cat "$summary"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in ${failed[*]}; inputs in $WORK/artifacts/" >&2
    exit 1
fi
