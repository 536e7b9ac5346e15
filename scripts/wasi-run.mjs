#!/usr/bin/env node
// Runs a wasm32-wasip1 program (a cargo test binary) in node's WASI, so tests
// of wasm-only code (the simd128 ChaCha20 in filter/src/chacha.rs) run in V8,
// the engine Envoy runs the filter in. Cargo calls it as the target runner:
//   (.cargo/config.toml sets it as the runner for wasm32-wasip1)
//   cargo test --target wasm32-wasip1 -p s3crypt-filter --lib chacha
// The current directory (cargo runs tests in the package's) is preopened as
// `.` and as its absolute path: tests find testdata/ via CARGO_MANIFEST_DIR.
// Imports outside WASI (the proxy-wasm host functions) throw if called.
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";
import { argv, env, exit, cwd } from "node:process";

const [path, ...args] = argv.slice(2);
if (!path) {
  console.error("usage: node scripts/wasi-run.mjs PROGRAM.wasm [ARGS...]");
  exit(2);
}
const wasi = new WASI({ version: "preview1", args: [path, ...args], env, preopens: { ".": cwd(), [cwd()]: cwd() }, returnOnExit: true });
const module = new WebAssembly.Module(readFileSync(path));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind !== "function" || imp.module === "wasi_snapshot_preview1") continue;
  (imports[imp.module] ||= {})[imp.name] = () => {
    throw new Error(`${imp.module}.${imp.name} is not available outside Envoy`);
  };
}
const instance = new WebAssembly.Instance(module, imports);
// A test binary of the filter also exports `_initialize` (the reactor entry
// point Envoy calls); node's WASI refuses a module with both, and `_start`
// is the one that runs the tests.
const { memory, _start } = instance.exports;
exit(wasi.start({ exports: { memory, _start } }));
