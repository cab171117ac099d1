// File-system helpers of the management plane (config file, data dir, PID file,
// API socket, API token). Kept in io/node because only io/ touches node:fs; the
// daemon wiring (main/) and the API call these instead of importing node:fs.
//
// Invariants: the PID file is created with O_EXCL, so two `tessera up` racing on
// one data dir cannot both win; a PID file is only removed by the process it
// names (or replaced when the process it names is gone).
import { constants as fsConstants, promises as fsp, readFileSync } from 'node:fs';
import { TesseraError } from '../../stdx/errors.js';

/** Config files are small; refuse anything larger before reading it. */
const CONFIG_FILE_BYTES_MAX = 1024 * 1024;

export function readConfigFileText(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TesseraError('ERR_INVALID', `cannot read config file ${path}: ${errText(err)}`, { cause: err });
  }
  if (Buffer.byteLength(text) > CONFIG_FILE_BYTES_MAX) throw new TesseraError('ERR_INVALID', `config file ${path} is larger than ${CONFIG_FILE_BYTES_MAX} bytes`);
  return text;
}

/** mkdir -p; a new data dir is private to its owner (it holds the device image and the API socket). */
export async function ensureDir(path: string): Promise<void> {
  try {
    await fsp.mkdir(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new TesseraError('ERR_INVALID', `cannot create directory ${path}: ${errText(err)}`, { cause: err });
  }
}

export async function removeIfExists(path: string): Promise<void> {
  try {
    await fsp.unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export async function chmodPrivate(path: string): Promise<void> {
  await fsp.chmod(path, 0o600);
}

export async function writePrivateFile(path: string, text: string): Promise<void> {
  await fsp.writeFile(path, text, { mode: 0o600 });
  await fsp.chmod(path, 0o600); // writeFile keeps the mode of an existing file
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await fsp.access(path, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `pid` is a running process that could be a tessera daemon. On Linux
 * the command line is checked too, because after a reboot a stale PID file may
 * name an unrelated process that reused the number.
 */
export function isLiveTesseraProcess(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to another user — still alive.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (pid === process.pid) return true;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('tessera');
  } catch {
    return true; // no /proc (not Linux) or unreadable: trust kill(0)
  }
}

/**
 * Create the PID file for this process, or throw ERR_BUSY naming the live
 * daemon that owns it. A PID file naming a dead process is replaced.
 */
export async function acquirePidFile(path: string, dataDir: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fsp.open(path, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new TesseraError('ERR_INVALID', `cannot create PID file ${path}: ${errText(err)}`, { cause: err });
      }
    }
    const owner = await readPidFile(path);
    if (owner !== undefined && isLiveTesseraProcess(owner)) {
      throw new TesseraError(
        'ERR_BUSY',
        `tessera is already running on data dir ${dataDir} (pid ${owner}, PID file ${path}); stop it first (kill ${owner}) or use another --data-dir`,
      );
    }
    await removeIfExists(path); // stale: its process is gone
  }
  throw new TesseraError('ERR_BUSY', `another tessera is starting on data dir ${dataDir} (PID file ${path} keeps reappearing)`);
}

export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const text = await fsp.readFile(path, 'utf8');
    const pid = Number.parseInt(text.trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Remove the PID file only if it still names this process. */
export async function releasePidFile(path: string): Promise<void> {
  if ((await readPidFile(path)) === process.pid) await removeIfExists(path);
}

function errText(err: unknown): string {
  // Node's fs messages already start with the code ("ENOENT: no such file ...").
  return err instanceof Error ? err.message : String(err);
}
