// Parity updates of a partial stripe (read-modify-write): with the old and new
// contents of a byte range of data strip i, P' = P + (old + new) and
// Q' = Q + g^i (old + new) over GF(2^8) (docs/raid.md). Pure, in place.
import { assert } from '../stdx/assert.js';
import { cachedMulTable, gfPow2 } from '../raid/gf256.js';

const tableFor = cachedMulTable;

/** Updates p (and q) for data strip dataIndex changing from oldData to newData over the same range. */
export function applyParityDelta(oldData: Uint8Array, newData: Uint8Array, dataIndex: number, p: Uint8Array, q: Uint8Array | null): void {
  const n = oldData.length;
  assert(newData.length === n && p.length === n && (q === null || q.length === n), 'parity delta ranges differ in length');
  const t = q ? tableFor(gfPow2(dataIndex)) : null;
  for (let i = 0; i < n; i++) {
    const d = oldData[i] ^ newData[i];
    p[i] ^= d;
    if (q) q[i] ^= t![d];
  }
}
