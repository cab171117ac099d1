// RAID6 codec throughput on one core (issue 4, benchmarks): P+Q encode and
// two-data-block decode, for the WebAssembly SIMD codec (src/raid/simd.ts, on
// stripes resident in its memory, and through its copying API) and the
// TypeScript codec (src/raid/parity.ts). GB/s counts data bytes of the stripe
// (k blocks) per second of wall time, single-threaded; target >= 10 GB/s for
// SIMD encode.
//
// Usage: node dist/bench/raid.js [--seconds S] [--block BYTES]
//   --seconds 1     time per figure (default 1)
//   --block 65536   block (chunk strip) size in bytes, a multiple of 64
// Example: node dist/bench/raid.js --block 4096
import { loadSimdParity } from '../src/io/node/raid-wasm.js';
import { encodeParity, reconstruct } from '../src/raid/parity.js';
import { Prng } from '../src/stdx/prng.js';
import { printHeaderAndExit, stealPct, stealSample } from './harness.js';

interface Options {
  seconds: number;
  blockBytes: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 1, blockBytes: 65536 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') printHeaderAndExit(import.meta.url);
    const v = argv[++i];
    if (a === '--seconds') o.seconds = Number(v);
    else if (a === '--block') o.blockBytes = Number(v);
    else throw new Error(`unknown argument ${JSON.stringify(a)} (see --help)`);
  }
  if (!(o.seconds > 0 && o.seconds <= 60)) throw new Error('--seconds must be in (0, 60]');
  if (!(Number.isInteger(o.blockBytes) && o.blockBytes >= 64 && o.blockBytes % 64 === 0 && o.blockBytes <= 16 << 20)) {
    throw new Error('--block must be a multiple of 64 bytes up to 16 MiB');
  }
  return o;
}

/** Runs fn repeatedly for about `seconds`; returns data GB/s. */
function rate(seconds: number, dataBytesPerCall: number, fn: () => void): number {
  for (let i = 0; i < 20; i++) fn(); // warm up (JIT, Liftoff -> TurboFan)
  let calls = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < seconds * 1000) {
    for (let i = 0; i < 16; i++) fn();
    calls += 16;
    t = performance.now();
  }
  return (calls * dataBytesPerCall) / ((t - t0) / 1000) / 1e9;
}

function main(): number {
  const o = parseArgs(process.argv.slice(2));
  const simd = loadSimdParity();
  const rng = new Prng(1);
  const len = o.blockBytes;
  const s0 = stealSample();
  const rows: string[][] = [['stripe', 'SIMD encode', 'SIMD decode 2', 'SIMD encode (copying)', 'TS encode', 'TS decode 2']];
  for (const k of [4, 8, 10]) {
    const data = Array.from({ length: k }, () => {
      const b = new Uint8Array(len);
      rng.fill(b);
      return b;
    });
    const p = new Uint8Array(len);
    const q = new Uint8Array(len);
    const tsEnc = rate(o.seconds, k * len, () => encodeParity(data, p, q));
    const tsBlocks = [...data, p, q];
    const tsDec = rate(o.seconds, k * len, () => reconstruct(tsBlocks, k, 2, [0, k - 1]));
    const copyEnc = rate(o.seconds, k * len, () => simd.encodeParity(data, p, q));
    const s = simd.stripe(k, 2, len);
    data.forEach((d, i) => s.blocks[i].set(d));
    const simdEnc = rate(o.seconds, k * len, () => simd.encodeResident(s));
    const simdDec = rate(o.seconds, k * len, () => simd.reconstructResident(s, [0, k - 1]));
    const f = (x: number) => `${x.toFixed(2)} GB/s`;
    rows.push([`${k}+2 x ${len} B`, f(simdEnc), f(simdDec), f(copyEnc), f(tsEnc), f(tsDec)]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows) process.stdout.write(r.map((c, i) => c.padEnd(widths[i])).join('  ') + '\n');
  process.stdout.write(`one core, data bytes per second; steal ${stealPct(s0, stealSample())}\n`);
  return 0;
}

try {
  process.exit(main());
} catch (err) {
  process.stderr.write(`raid bench: ${(err as Error).message}\n`);
  process.exit(2);
}
