# s3crypt: build, run and test the gateway.
#
#   make build   install tools if missing (scripts/bootstrap.sh), build the wasm filter
#   make run     build, then start Envoy + filter (+ local s3s-fs backend unless
#                S3CRYPT_UPSTREAM is set); settings: see scripts/gateway.py.
#                Extra launcher options: make run ARGS=--no-filter
#   make tool    build the recovery and admin tool: target/release/s3crypt (see README.md)
#   make test    build, cargo test (native, then the filter's tests again as wasm in node),
#                a short fuzz run (every target from its seeds, fixed seed: scripts/fuzz.sh
#                --smoke), integration tests (pytest, real Envoy)
#                Extra pytest options: make test PYTEST_ARGS="-k passthrough -x"
#   make check   render .run/envoy.yaml and validate it with Envoy (make check ARGS=--no-filter
#                before the filter is built)
#   make bench   benchmarks (~15 min; BENCH_QUICK=1 for ~3), results in bench/RESULTS.md:
#                see bench/README.md. Not part of make test.
#   make soak    10-minute soak (~11 min): 64 concurrent boto3 clients, mixed workload, every
#                byte checked, Envoy RSS must stay flat; own gateway + s3s-fs on tmpfs. Not part
#                of make test (integration/test_soak.py runs 60 s of it).
#                Extra options: make soak ARGS="--clients 32 --out .run/soak.json"
#   make fuzz    every fuzz target for 60 s (FUZZ_SECONDS=...), see FUZZING.md. make test runs
#                the short, repeatable version (make fuzz-smoke).
#   make clean   remove build output and generated files; keeps .run/master.key (the
#                default key) and .run/data (the local backend's objects)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

export S3CRYPT_CACHE ?= $(HOME)/.cache/s3cg
PYTHON := $(S3CRYPT_CACHE)/venv/bin/python
WASM := target/wasm32-wasip1/release/s3crypt_filter.wasm
# cargo may only be on PATH through rustup's env file (fresh CI shells).
CARGO_ENV := if ! command -v cargo >/dev/null && [ -f "$$HOME/.cargo/env" ]; then . "$$HOME/.cargo/env"; fi

.PHONY: bootstrap build build-fault tool run test cargo-test fuzz-smoke integration-test check clean bench soak fuzz

bootstrap:
	@bash scripts/bootstrap.sh

build: bootstrap
	@$(CARGO_ENV); cargo build --release --target wasm32-wasip1 -p s3crypt-filter
	@test -f $(WASM) || { echo "make: $(WASM) was not produced" >&2; exit 1; }

# The native recovery and admin tool (tool/), built from the same core.
tool: bootstrap
	@$(CARGO_ENV); cargo build --release -p s3crypt-tool

run: build
	$(PYTHON) scripts/gateway.py $(ARGS)

test: build cargo-test fuzz-smoke integration-test

# Then the same tests compiled to wasm32-wasip1 (+simd128, as the filter) and run
# in node's V8 (scripts/wasi-run.mjs, the runner set in .cargo/config.toml): the
# filter's wasm-only code (the simd128 ChaCha20 of filter/src/chacha.rs) is
# tested there, against the RustCrypto crate and the FORMAT.md vectors.
cargo-test: bootstrap
	@$(CARGO_ENV); cargo test --workspace
	@command -v node >/dev/null || { echo "make: node (>= 20, for WASI) is needed to run the wasm tests" >&2; exit 1; }
	@$(CARGO_ENV); cargo test --target wasm32-wasip1 -p s3crypt-filter --lib --test vectors --test stream_codec

# A test-only build with the `fault-injection` feature (integration/test_faults.py).
FAULT_WASM := target/fault/wasm32-wasip1/release/s3crypt_filter.wasm
build-fault: bootstrap
	@$(CARGO_ENV); CARGO_TARGET_DIR=target/fault cargo build --release --target wasm32-wasip1 -p s3crypt-filter --features fault-injection

# pytest exits 5 when it collects no tests: that is a failure here too.
integration-test: build build-fault tool
	@bash scripts/install_clients.sh
	$(PYTHON) -m pytest -ra integration $(PYTEST_ARGS)

bench: build
	@$(CARGO_ENV); $(PYTHON) bench/run.py

fuzz:
	bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

fuzz-smoke: bootstrap
	bash scripts/fuzz.sh --smoke

soak: build
	$(PYTHON) integration/soak.py --seconds 600 $(ARGS)

check: bootstrap
	$(PYTHON) scripts/gateway.py --check $(ARGS)

clean:
	@$(CARGO_ENV); cargo clean
	rm -rf .pytest_cache integration/__pycache__ scripts/__pycache__
	rm -f .run/envoy.yaml .run/envoy.next.yaml .run/plugin.json .run/admin.address .run/*.log
	rm -rf .run/epoch-*
