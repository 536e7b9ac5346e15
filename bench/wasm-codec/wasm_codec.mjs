// Times the s3crypt codec inside V8 (node's WebAssembly), the engine Envoy
// runs the filter in. Usage:
//   node bench/wasm-codec/wasm_codec.mjs MODULE.wasm [MiB] [runs]
//   WASM_CODEC_SUITES=chacha20-poly1305 WASM_CODEC_CHUNKS=65536 node ... (one row)
// Prints one JSON line per (op, suite, chunk): median MB/s over `runs` runs
// (MB = 10^6 bytes), after one warm-up run (V8 tiers up from Liftoff to
// TurboFan on hot functions).
import { readFileSync } from "node:fs";
import { webcrypto } from "node:crypto";

const [path, mibArg, runsArg] = process.argv.slice(2);
const MIB = Number(mibArg || 64);
const RUNS = Number(runsArg || 3);
const bytes = readFileSync(path);
const module = new WebAssembly.Module(bytes);

let memory;
// Every import gets a stub returning 0 (success for WASI); only random_get
// matters to the codec's callers (not used here: salts are fixed).
const stub = (mod, name) => (...args) => {
  if (name === "random_get") {
    const [ptr, len] = args;
    webcrypto.getRandomValues(new Uint8Array(memory.buffer, ptr, len));
  }
  return 0;
};
const imports = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind !== "function") continue;
  (imports[imp.module] ||= {})[imp.name] = stub(imp.module, imp.name);
}
const instance = new WebAssembly.Instance(module, imports);
const ex = instance.exports;
memory = ex.memory;
if (ex._initialize) ex._initialize();

const len = MIB * 1024 * 1024;
ex.bench_setup(len);
// WASM_CODEC_SUITES / WASM_CODEC_CHUNKS (comma-separated) narrow the run.
const only = (name, all, key) => { const v = process.env[name]; return v ? all.filter((x) => v.split(",").includes(String(key(x)))) : all; };
const suites = only("WASM_CODEC_SUITES", [[1, "chacha20-poly1305"], [2, "aes-256-gcm"]], (s) => s[1]);
const chunks = only("WASM_CODEC_CHUNKS", [16384, 65536, 262144, 1048576], (c) => c);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
// Wall time, and the process's CPU time (user + system): on a shared machine
// the CPU time is the steadier of the two (cpu_mb_s in the output).
const cpuTimes = [];
const time = (f) => {
  const t = process.hrtime.bigint();
  const c = process.cpuUsage();
  const r = f();
  const ns = Number(process.hrtime.bigint() - t);
  const cpu = process.cpuUsage(c);
  cpuTimes.push((cpu.user + cpu.system) * 1000);
  if (r !== 0) throw new Error(`bench returned ${r}`);
  return ns;
};

for (const [id, name] of suites) {
  for (const chunk of chunks) {
    time(() => ex.bench_seal(id, chunk, 0)); // warm-up
    const seal = [];
    cpuTimes.length = 0;
    for (let i = 0; i < RUNS; i++) seal.push(time(() => ex.bench_seal(id, chunk, 0)));
    const sealCpu = [...cpuTimes];
    time(() => ex.bench_seal(id, chunk, 1));
    time(() => ex.bench_open(id, chunk, 1)); // warm-up + correctness check
    const open = [];
    cpuTimes.length = 0;
    for (let i = 0; i < RUNS; i++) open.push(time(() => ex.bench_open(id, chunk, 0)));
    const openCpu = [...cpuTimes];
    for (const [op, ns, cpuNs] of [["seal", seal, sealCpu], ["open", open, openCpu]]) {
      const mbS = (t) => len / (t / 1e9) / 1e6;
      console.log(JSON.stringify({ op, suite: name, chunk, mib: MIB, runs: RUNS, mb_s: mbS(median(ns)), cpu_mb_s: mbS(median(cpuNs)) }));
    }
  }
}
