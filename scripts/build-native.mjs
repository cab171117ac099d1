// Builds the native crc32c kernel (src/native/crc32c.c, N-API) into dist/native/
// with the system C compiler and the N-API headers that come with Node. Run by
// `npm run build`, `npm test` (pretest), `npm run bench` and npm's prepare. Without a
// compiler, headers or an x86-64 CPU it prints why and exits 0: stdx/crc32c.ts then
// uses @node-rs/crc32 (slower, same results).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'native', 'crc32c.node');
const include = join(dirname(process.execPath), '..', 'include', 'node');
const skip = (why) => {
  rmSync(out, { force: true }); // never leave a stale build behind
  process.stderr.write(`build-native: not built (${why}); crc32c falls back to @node-rs/crc32\n`);
  process.exit(0);
};
if (process.arch !== 'x64') skip(`${process.arch} is not x64`);
if (!existsSync(join(include, 'node_api.h'))) skip(`no N-API headers in ${include}`);
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC ?? 'cc';
const r = spawnSync(cc, ['-O2', '-std=c11', '-Wall', '-fPIC', '-shared', `-I${include}`, join(root, 'src', 'native', 'crc32c.c'), '-o', out], { stdio: 'inherit' });
if (r.error || r.status !== 0) skip(`${cc} ${r.error ? r.error.message : `exited ${r.status}`}`);
