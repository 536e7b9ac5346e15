// Times GHASH alone inside V8 (node): the `ghash` crate (what aes-gcm uses,
// polyval's soft32 backend on wasm32) against filter/src/ghash.rs, both in
// the same module (bench/wasm-codec, built as wasm_codec.mjs says). Usage:
//   node bench/wasm-codec/ghash.mjs MODULE.wasm [MiB] [rounds] [chunk]
// Each round times the crate, then ours, over MiB of data hashed in messages
// of `chunk` bytes (default 65536, a fresh GHASH state per message), after a
// warm-up and a check that both give the same value. Prints one JSON line per
// timed run (CPU-time MB/s of the node process: the machine is shared) and a
// summary line with each one's range and median.
import { readFileSync } from "node:fs";

const [path, mibArg, roundsArg, chunkArg] = process.argv.slice(2);
const MIB = Number(mibArg || 32);
const ROUNDS = Number(roundsArg || 5);
const CHUNK = Number(chunkArg || 65536);
const module = new WebAssembly.Module(readFileSync(path));
const imports = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind === "function") (imports[imp.module] ||= {})[imp.name] = () => 0;
}
const ex = new WebAssembly.Instance(module, imports).exports;
if (ex._initialize) ex._initialize();

const len = MIB * 1024 * 1024;
ex.bench_setup(len);
const cpuMbS = (f) => {
  const c = process.cpuUsage();
  if (f() !== 0) throw new Error("bench call failed");
  const cpu = process.cpuUsage(c);
  return len / ((cpu.user + cpu.system) / 1e6) / 1e6;
};
if (ex.bench_ghash_check(CHUNK) !== 0) throw new Error("the two GHASH implementations disagree");
const names = ["ghash-crate", "s3crypt-ghash"];
const results = [[], []];
for (const which of [0, 1]) cpuMbS(() => ex.bench_ghash(which, CHUNK)); // warm-up (TurboFan)
for (let round = 0; round < ROUNDS; round++) {
  for (const which of [0, 1]) {
    const mbS = cpuMbS(() => ex.bench_ghash(which, CHUNK));
    results[which].push(mbS);
    console.log(JSON.stringify({ impl: names[which], round, chunk: CHUNK, mib: MIB, cpu_mb_s: Math.round(mbS) }));
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const COUNT = 2000;
ex.bench_ghash_new(COUNT); // warm-up
const c = process.cpuUsage();
ex.bench_ghash_new(COUNT);
const cpu = process.cpuUsage(c);
console.log(JSON.stringify({
  summary: Object.fromEntries(names.map((n, i) => [n, { min: Math.round(Math.min(...results[i])), median: Math.round(median(results[i])), max: Math.round(Math.max(...results[i])) }])),
  speedup_of_medians: Number((median(results[1]) / median(results[0])).toFixed(2)),
  new_us: Number(((cpu.user + cpu.system) / COUNT).toFixed(2)),
}));
