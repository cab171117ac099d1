// A directory of append-only segment files: the storage under the OSD's shared
// write-ahead log (src/osd/wal.ts). Implementations: io/node/segment-store.ts
// (real files, node:fs) and device/sim-segments.ts (in memory, with power cuts
// and injected faults, for seeded crash tests).
//
// Model (what a caller may rely on, and nothing more):
// - append() writes its buffers, in order, at the current end of the segment in
//   one positional write (writev). A resolved append is visible to read() but is
//   durable only after a sync() that started after it resolved.
// - sync() is fdatasync: it makes the segment's appended bytes (and its size)
//   durable. It does NOT make the segment's name durable: a created segment may
//   vanish, and a removed one reappear, after a crash unless syncDir() completed
//   after the create/remove.
// - After a crash, each segment holds its synced bytes intact followed by some
//   part of its unsynced tail, possibly torn: any 512-byte sector of the tail may
//   be missing, zero or garbage. Callers must checksum what they write.
// - Errors are TesseraErrors: ERR_DEVICE_FLUSH from sync()/syncDir() (fatal: what
//   reached the disk is unknown, the caller must stop and recover from a reopen),
//   ERR_DEVICE_IO / ERR_NO_SPACE from append() (also fatal to an append-only log),
//   ERR_DEVICE_IO from read(), ERR_RANGE for reads past the end, ERR_EXISTS when
//   creating an existing name, ERR_NOT_FOUND when opening a missing one,
//   ERR_CLOSED after close() (or, in the simulation, after a power cut).
// - One writer per segment: the caller never issues two appends to the same
//   segment concurrently (append is "at the end", so they could not be ordered).
// - Recycling (optional, per store): remove() may keep a segment's file as a
//   spare, and create() may hand a spare out under the new name instead of a
//   new file. Overwriting blocks a file already owns is much cheaper than
//   appending at a file's end, where every fdatasync must also write the inode
//   (the new size) and allocate blocks (docs/ARCHITECTURE.md "Replication").
//   A recycled segment starts with sizeBytes 0 like a new one, but its file
//   still holds the bytes of its earlier life beyond what was appended: open()
//   after a crash returns them (the file's size is at least its old size), and
//   a torn tail may mix new, zero, garbage and old sectors. An append into
//   those old bytes may also overwrite the rest of its last file block with
//   zeros (io/node/segment-store.ts: it saves the kernel a disk read), so part
//   of what follows the end may read zero even without a crash. seal() cuts
//   them off. Spares are not listed, and their names are the store's own.
//   A caller must syncDir() after create() and before writing into the segment:
//   a crash can undo an unsynced rename yet keep the data written through it, so
//   the data would lie in a spare that a later create() hands out again.

/** Segment names: a letter or digit, then letters, digits, '.', '_' or '-'; no path separators. */
export const SEGMENT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface Segment {
  readonly name: string;
  /** Bytes appended so far: the offset of the next append. */
  readonly sizeBytes: number;
  /** Appends the buffers, in order, at offset sizeBytes (one writev). */
  append(buffers: readonly Uint8Array[]): Promise<void>;
  /** fdatasync: every append that resolved before this call started is durable when it resolves. */
  sync(): Promise<void>;
  /**
   * Ends the segment at sizeBytes: drops any bytes a recycled file still holds
   * beyond it, then makes the segment durable (ftruncate + fdatasync). No
   * append may follow. Errors as sync().
   */
  seal(): Promise<void>;
  /** Reads exactly lengthBytes at offsetBytes (within sizeBytes) into a new Buffer. */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  close(): Promise<void>;
}

export interface SegmentStore {
  /** Names of the segments present, sorted in ascending code-unit order. */
  list(): Promise<string[]>;
  /**
   * Creates an empty segment (fails with ERR_EXISTS if the name is taken), possibly
   * on a recycled file (see the header). The name is durable only after syncDir().
   */
  create(name: string): Promise<Segment>;
  /** Opens an existing segment for reading and appending at its end. */
  open(name: string): Promise<Segment>;
  /** Removes a segment (no-op if absent), or keeps its file as a spare for a later create(). Durable only after syncDir(). */
  remove(name: string): Promise<void>;
  /** fsync of the directory: makes every completed create and remove durable. */
  syncDir(): Promise<void>;
}
