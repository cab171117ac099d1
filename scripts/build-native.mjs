// Builds the native modules (N-API, src/native/*.c) into dist/native/ with the
// system C compiler and the N-API headers that come with Node. Run by
// `npm run build`, `npm test` (pretest), `npm run bench` and npm's prepare. Each
// module is optional: without a compiler or headers (or, for crc32c, an x86-64
// CPU) this prints why and exits 0, and the code that loads it falls back:
// - crc32c.node (src/native/crc32c.c): stdx/crc32c.ts uses @node-rs/crc32
//   (slower, same results);
// - pagecache.node (src/native/pagecache.c): io/node/page-cache.ts gives no
//   page-cache advice (the writes it would warm up read their pages inline).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const include = join(dirname(process.execPath), '..', 'include', 'node');
const cc = process.env.CC ?? 'cc';

const modules = [
  { name: 'crc32c', fallback: 'crc32c falls back to @node-rs/crc32', needs: () => (process.arch !== 'x64' ? `${process.arch} is not x64` : null) },
  { name: 'pagecache', fallback: 'no page-cache advice before engine writes', needs: () => (process.platform !== 'linux' ? `${process.platform} is not linux` : null) },
];

for (const m of modules) {
  const out = join(root, 'dist', 'native', `${m.name}.node`);
  const skip = (why) => {
    rmSync(out, { force: true }); // never leave a stale build behind
    process.stderr.write(`build-native: ${m.name} not built (${why}); ${m.fallback}\n`);
  };
  const missing = m.needs() ?? (existsSync(join(include, 'node_api.h')) ? null : `no N-API headers in ${include}`);
  if (missing !== null) {
    skip(missing);
    continue;
  }
  mkdirSync(dirname(out), { recursive: true });
  const r = spawnSync(cc, ['-O2', '-std=c11', '-Wall', '-fPIC', '-shared', `-I${include}`, join(root, 'src', 'native', `${m.name}.c`), '-o', out, '-lm'], { stdio: 'inherit' });
  if (r.error || r.status !== 0) skip(`${cc} ${r.error ? r.error.message : `exited ${r.status}`}`);
}
