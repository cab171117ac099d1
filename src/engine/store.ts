// Opens (formatting if new) the local engine on a device file or block device:
// the one entry point daemons use. A new regular file is created sparse, so its
// data area reads as zeros and never-used chunks need no zeroing.
import { FileDevice, type DirectIoMode, type InlineWrites } from '../io/node/file-device.js';
import { sharedBlockCodec } from '../io/node/block-worker.js';
import { BufferPool } from '../stdx/buffer-pool.js';
import { TesseraError } from '../stdx/errors.js';
import type { VolumeStore } from '../volume/types.js';
import { LocalEngine, type LogFn } from './engine.js';

export interface LocalStoreOptions {
  devicePath: string;
  /** Size of a new device file; the device is created and formatted only if it does not exist. */
  createSizeBytes?: number;
  directIo?: DirectIoMode;
  /** Small buffered writes on the calling thread: see InlineWrites (default 'all'). */
  inlineWrites?: InlineWrites;
  objectSizeBytes?: number;
  log?: LogFn;
  onFatal?: (err: Error) => void;
  /**
   * Seal and check runs of 16+ blocks in a worker thread (io/node/block-worker.ts) over a
   * shared buffer pool; default on, off with TESSERA_BLOCK_WORKER=0.
   */
  blockWorker?: boolean;
}

export async function openLocalStore(opts: LocalStoreOptions): Promise<{ store: VolumeStore; engine: LocalEngine; created: boolean }> {
  let created = false;
  if (!(await FileDevice.exists(opts.devicePath))) {
    if (opts.createSizeBytes === undefined) throw new TesseraError('ERR_NOT_FOUND', `device ${opts.devicePath} does not exist`);
    // Format under a temporary name and rename it into place: a crash mid-format
    // leaves no half-formatted device under the real name.
    const tmpPath = `${opts.devicePath}.formatting`;
    await FileDevice.remove(tmpPath);
    await FileDevice.create(tmpPath, opts.createSizeBytes);
    try {
      const dev = await FileDevice.open(tmpPath, opts.directIo ?? 'auto');
      try {
        await LocalEngine.format(dev, { objectSizeBytes: opts.objectSizeBytes, dataZeroed: true });
      } finally {
        await dev.close();
      }
    } catch (err) {
      await FileDevice.remove(tmpPath); // e.g. a size too small for one object: leave nothing behind
      throw err;
    }
    await FileDevice.commitFile(tmpPath, opts.devicePath);
    created = true;
    opts.log?.('info', `formatted new device ${opts.devicePath} (${opts.createSizeBytes} bytes)`);
  }
  const device = await FileDevice.open(opts.devicePath, opts.directIo ?? 'auto', undefined, opts.inlineWrites ?? 'all');
  try {
    const offload = opts.blockWorker ?? process.env.TESSERA_BLOCK_WORKER !== '0';
    const engine = await LocalEngine.open(
      device,
      offload ? { log: opts.log, onFatal: opts.onFatal, bufferPool: new BufferPool(undefined, undefined, true), blockCodec: sharedBlockCodec(opts.log) } : { log: opts.log, onFatal: opts.onFatal },
    );
    return { store: engine, engine, created };
  } catch (err) {
    await device.close();
    throw err;
  }
}
