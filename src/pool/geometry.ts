// Where the bytes of a container live (docs/raid.md "Containers"). A container
// of k data and m parity chunks holds k * chunkDataBytes of pool address space,
// striped: row r is one stripe of k data strips and m parity strips of
// stripBytes each, at byte r * stripBytes of every chunk's data region.
// Roles rotate with the row so parity IO spreads over the container's chunks:
// the strip of role j (0..k-1 data, k = P, k+1 = Q) of row r is on position
// (j + r) mod (k + m). Pure arithmetic.
//
// Invariants: stripBytes divides chunkDataBytes; a piece never crosses a strip.
import { assert, fail } from '../stdx/assert.js';

export interface ContainerShape {
  readonly dataCount: number;
  readonly parityCount: number;
  readonly stripBytes: number;
  readonly chunkDataBytes: number;
}

export function checkShape(s: ContainerShape): void {
  if (!(s.dataCount >= 1 && s.parityCount >= 0 && s.stripBytes > 0 && s.chunkDataBytes % s.stripBytes === 0)) fail(`bad container shape ${JSON.stringify(s)}`);
}

export function capacityBytes(s: ContainerShape): number {
  return s.dataCount * s.chunkDataBytes;
}

export function rowBytes(s: ContainerShape): number {
  return s.dataCount * s.stripBytes;
}

/** The position (chunk) holding role `role` of row `row`. */
export function positionOf(s: ContainerShape, role: number, row: number): number {
  const width = s.dataCount + s.parityCount;
  return (role + row) % width;
}

/** One piece of a container range: within one strip of one row. */
export interface Piece {
  row: number;
  /** Data role 0..k-1. */
  dataIndex: number;
  position: number;
  /** Byte offset in the chunk's data region. */
  chunkOffset: number;
  /** Offset within the strip. */
  stripOffset: number;
  lengthBytes: number;
  /** Offset of this piece in the caller's buffer. */
  bufOffset: number;
}

/** Splits the container range [offsetBytes, offsetBytes + lengthBytes) into per-strip pieces, in address order. */
export function pieces(s: ContainerShape, offsetBytes: number, lengthBytes: number): Piece[] {
  if (!(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= capacityBytes(s))) fail(`range ${offsetBytes}+${lengthBytes} outside the container`);
  const out: Piece[] = [];
  const rb = rowBytes(s);
  let pos = offsetBytes;
  const end = offsetBytes + lengthBytes;
  while (pos < end) {
    const row = Math.floor(pos / rb);
    const inRow = pos - row * rb;
    const dataIndex = Math.floor(inRow / s.stripBytes);
    const stripOffset = inRow - dataIndex * s.stripBytes;
    const len = Math.min(s.stripBytes - stripOffset, end - pos);
    out.push({ row, dataIndex, position: positionOf(s, dataIndex, row), chunkOffset: row * s.stripBytes + stripOffset, stripOffset, lengthBytes: len, bufOffset: pos - offsetBytes });
    pos += len;
  }
  return out;
}
