// Reads and atomically replaces small state files of the daemon (the pool
// registry, pools.json): write a temporary file, fsync it, rename it over the
// old one, fsync the directory. A crash leaves the old or the new file, never
// a torn one.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../stdx/errors.js';

/** State files are small; refuse anything larger before reading it. */
const STATE_FILE_BYTES_MAX = 1024 * 1024;

/** The file's text, or undefined when it does not exist. */
export async function readStateFile(filePath: string): Promise<string | undefined> {
  try {
    const st = await fsp.stat(filePath);
    if (st.size > STATE_FILE_BYTES_MAX) throw new TesseraError('ERR_FORMAT', `${filePath} is larger than ${STATE_FILE_BYTES_MAX} bytes`);
    return await fsp.readFile(filePath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function replaceStateFile(filePath: string, text: string): Promise<void> {
  const tmp = `${filePath}.tmp`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, filePath);
  const dir = await fsp.open(path.dirname(filePath), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
