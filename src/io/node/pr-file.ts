// Small, durable state files of the single-machine iSCSI gateway's persistent
// reservations (gateway/scsi/pr-store-local.ts): read one, or replace one
// atomically — write a temporary file, fsync it, rename it over the old one,
// fsync the directory. A crash leaves the old or the new file, never a torn one.
//
// Invariants:
// - replacePrFile resolves only after both fsyncs; an fsync failure is
//   ERR_DEVICE_FLUSH (the caller treats it as fatal: what is on disk is then
//   unknown), any other write failure ERR_DEVICE_IO. Errors name the file.
// - Files larger than PR_FILE_BYTES_MAX are refused before they are read.
// - The temporary file is `<file>.tmp`: callers write one file at a time per path.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../stdx/errors.js';

export const PR_FILE_BYTES_MAX = 256 * 1024;

const errText = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** The file's text, or undefined when it does not exist. */
export async function readPrFile(filePath: string): Promise<string | undefined> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(filePath, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TesseraError('ERR_DEVICE_IO', `cannot open ${filePath}: ${errText(err)}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (st.size > PR_FILE_BYTES_MAX) throw new TesseraError('ERR_FORMAT', `${filePath} is ${st.size} bytes, larger than a PR record can be (${PR_FILE_BYTES_MAX})`);
    return await fh.readFile('utf8');
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw new TesseraError('ERR_DEVICE_IO', `cannot read ${filePath}: ${errText(err)}`, { cause: err });
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** mkdir -p, then fsync the parent so the new directory's entry is durable too. */
export async function ensurePrDir(dir: string): Promise<void> {
  try {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new TesseraError('ERR_DEVICE_IO', `cannot create directory ${dir}: ${errText(err)}`, { cause: err });
  }
  await syncDir(path.dirname(dir));
}

export async function replacePrFile(filePath: string, text: string): Promise<void> {
  const tmp = `${filePath}.tmp`;
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(tmp, 'w', 0o600);
  } catch (err) {
    throw new TesseraError('ERR_DEVICE_IO', `cannot create ${tmp}: ${errText(err)}`, { cause: err });
  }
  try {
    try {
      await fh.writeFile(text);
    } catch (err) {
      throw new TesseraError('ERR_DEVICE_IO', `cannot write ${tmp}: ${errText(err)}`, { cause: err });
    }
    try {
      await fh.sync();
    } catch (err) {
      throw new TesseraError('ERR_DEVICE_FLUSH', `fsync of ${tmp} failed: ${errText(err)}`, { cause: err });
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
  try {
    await fsp.rename(tmp, filePath);
  } catch (err) {
    throw new TesseraError('ERR_DEVICE_IO', `cannot rename ${tmp} to ${filePath}: ${errText(err)}`, { cause: err });
  }
  await syncDir(path.dirname(filePath));
}

async function syncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(dir, 'r');
  } catch (err) {
    throw new TesseraError('ERR_DEVICE_IO', `cannot open directory ${dir}: ${errText(err)}`, { cause: err });
  }
  try {
    await fh.sync();
  } catch (err) {
    throw new TesseraError('ERR_DEVICE_FLUSH', `fsync of directory ${dir} failed: ${errText(err)}`, { cause: err });
  } finally {
    await fh.close().catch(() => undefined);
  }
}
