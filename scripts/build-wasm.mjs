// Builds the WebAssembly kernels (asm/*.ts, AssemblyScript) into dist/asm/.
// Run by `npm run build`, `npm test` (pretest) and `npm run bench`. The output
// is deterministic for a given assemblyscript version (package-lock.json).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const asc = join(root, 'node_modules', '.bin', 'asc');
mkdirSync(join(root, 'dist', 'asm'), { recursive: true });
for (const name of ['raid6']) {
  const r = spawnSync(
    asc,
    [join('asm', `${name}.ts`), '--enable', 'simd', '-O3', '--runtime', 'stub', '--noAssert', '--initialMemory', '2', '--outFile', join('dist', 'asm', `${name}.wasm`)],
    { cwd: root, stdio: 'inherit' },
  );
  if (r.status !== 0) {
    process.stderr.write(`build-wasm: asc failed for asm/${name}.ts (${r.error?.message ?? `exit ${r.status}`})\n`);
    process.exit(1);
  }
}
