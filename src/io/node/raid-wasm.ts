// Loads the WebAssembly RAID kernels built from asm/raid6.ts
// (scripts/build-wasm.mjs writes dist/asm/raid6.wasm). The only file access of
// the RAID codec; src/raid/simd.ts stays pure.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SimdParity } from '../../raid/simd.js';
import { TesseraError } from '../../stdx/errors.js';

/** dist/src/io/node/raid-wasm.js -> dist/asm/raid6.wasm */
export const RAID_WASM_PATH = fileURLToPath(new URL('../../../asm/raid6.wasm', import.meta.url));

/** The SIMD codec; ERR_NOT_FOUND when the build did not produce the module (run `npm run build`). */
export function loadSimdParity(path = RAID_WASM_PATH): SimdParity {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(path);
  } catch (err) {
    throw new TesseraError('ERR_NOT_FOUND', `RAID kernels ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)} (run npm run build)`);
  }
  return new SimdParity(new WebAssembly.Module(new Uint8Array(bytes)));
}
