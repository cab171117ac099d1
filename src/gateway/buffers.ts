// The gateways' large IO buffers (64 KiB and more), recycled and in shared memory:
// read results once the socket sent them, write payloads once the volume wrote
// them. Shared memory lets the local engine's block worker checksum the data where
// it lies and the device read or write it in place (engine/volume.ts, gathered IO);
// recycling keeps V8 from a full GC per few dozen fresh 1 MiB ArrayBuffers.
//
// Invariant: a buffer goes back only when nothing can touch it any more; after a
// failed IO it is dropped to the GC instead (a backend may still hold it).
import { BufferRecycler } from '../stdx/buffer-recycler.js';

/** IO buffers from this size on come from these recyclers (their smallest class). */
export const LARGE_BUFFER_BYTES = 64 * 1024;

/** Read results over the small-read slab size (iSCSI) or from LARGE_BUFFER_BYTES (NBD). */
export const largeReadBuffers = new BufferRecycler(undefined, LARGE_BUFFER_BYTES, true);

/** Write payloads that arrive in several socket chunks (NBD) or PDUs (iSCSI). */
export const writePayloadBuffers = new BufferRecycler(undefined, LARGE_BUFFER_BYTES, true);
