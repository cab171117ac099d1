// Placement hashes (CLU3): object → PG and the straw2 draw of (pool, pg, osd).
//
// CONTRACT — these functions are part of the on-disk and on-wire format. Every
// client computes objectToPg with them and every monitor places PGs with them;
// data already placed is found again only if they return the same values
// forever, on every platform and Node version. Never change a constant, the
// word order, or the arithmetic here. A new hash needs a new
// PLACEMENT_HASH_VERSION stored in the pool, and both versions kept.
//
// The algorithm is MurmurHash3 x86_32 (Austin Appleby, public domain) over a
// fixed number of 32-bit little-endian words, i.e. exactly murmur3_32 of the
// bytes of those words. Only Math.imul, shifts and xor are used, so the result
// is exact integer arithmetic (no floating point) and identical everywhere.
//
// Invariants:
//   - Inputs are non-negative safe integers (< 2^53); a value is fed as two
//     words (low 32 bits, high 21 bits) so ids above 2^32 never collide with
//     their low bits. Callers validate; this file only asserts.
//   - Each use has its own seed (domain separation), so the PG of an object and
//     the draw of a PG on an OSD are independent functions.
//   - hash32 returns an unsigned 32-bit integer; unitInterval53 returns a float
//     in (0, 1] with 53 random bits (never 0, so -ln(u) is finite).
import { assert, fail } from '../stdx/assert.js';

/** Version of the placement hashes below; stored with a pool so that a future change is explicit. */
export const PLACEMENT_HASH_VERSION = 1;

/** Seed for objectToPg. Frozen: see the contract above. */
export const SEED_OBJECT_TO_PG = 0x7e55e7a1;
/** Seeds for the two halves of the straw2 draw of (pool, pg, osd). Frozen. */
export const SEED_STRAW_HI = 0x51a3b2c7;
export const SEED_STRAW_LO = 0x2d6f0e91;
/** Seed for ranking an OSD's shards (cores) for a PG's primary. Frozen. */
export const SEED_SHARD = 0x6b43a9b5;

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const TWO_POW_32 = 0x100000000;

function rotl32(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** One murmur3 body step: mix the 32-bit block k into the state h. */
function mixBlock(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = rotl32(k, 15);
  k = Math.imul(k, C2);
  h ^= k;
  h = rotl32(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3 finalizer: full avalanche of a 32-bit state. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function assertId(x: number): void {
  if (!(Number.isSafeInteger(x) && x >= 0)) fail(`placement hash input must be a non-negative safe integer, got ${x}`);
}

/** Low 32 bits of a non-negative safe integer (exact: ToUint32 is modulo 2^32). */
function lo32(x: number): number {
  return x >>> 0;
}

/** High 21 bits of a non-negative safe integer. */
function hi32(x: number): number {
  return Math.floor(x / TWO_POW_32) >>> 0;
}

/**
 * murmur3_32 of the ids, each id written as two little-endian 32-bit words
 * (low, high). Allocation-free for the hot paths (fixed arities below).
 */
export function hashIds3(seed: number, a: number, b: number, c: number): number {
  assertId(a);
  assertId(b);
  assertId(c);
  let h = seed | 0;
  h = mixBlock(h, lo32(a));
  h = mixBlock(h, hi32(a));
  h = mixBlock(h, lo32(b));
  h = mixBlock(h, hi32(b));
  h = mixBlock(h, lo32(c));
  h = mixBlock(h, hi32(c));
  return fmix32(h ^ 24); // 24 = length in bytes, as murmur3 specifies
}

/** As hashIds3 with a fourth id; murmur3_32 of 32 bytes. */
export function hashIds4(seed: number, a: number, b: number, c: number, d: number): number {
  assertId(a);
  assertId(b);
  assertId(c);
  assertId(d);
  let h = seed | 0;
  h = mixBlock(h, lo32(a));
  h = mixBlock(h, hi32(a));
  h = mixBlock(h, lo32(b));
  h = mixBlock(h, hi32(b));
  h = mixBlock(h, lo32(c));
  h = mixBlock(h, hi32(c));
  h = mixBlock(h, lo32(d));
  h = mixBlock(h, hi32(d));
  return fmix32(h ^ 32);
}

/** The 32-bit hash that maps an object to a PG (masked by pgCount - 1 in placement.ts). */
export function objectHash32(poolId: number, volumeId: number, objectIndex: number): number {
  return hashIds3(SEED_OBJECT_TO_PG, poolId, volumeId, objectIndex);
}

/**
 * The straw2 draw u in (0, 1] of an OSD for a PG of a pool, with 53 random bits
 * (two independent murmur3 words: 21 high bits + 32 low bits). 53 bits keep ties
 * between OSDs negligible even for 65536 PGs × thousands of OSDs.
 */
export function strawUnit53(poolId: number, pg: number, osdId: number): number {
  const hi = hashIds3(SEED_STRAW_HI, poolId, pg, osdId) >>> 11; // 21 bits
  const lo = hashIds3(SEED_STRAW_LO, poolId, pg, osdId); // 32 bits
  return (hi * TWO_POW_32 + lo + 1) / 2 ** 53;
}

/** Rank key of shard `shard` of OSD `osdId` for a PG of a pool (higher wins). */
export function shardHash32(poolId: number, pg: number, osdId: number, shard: number): number {
  return hashIds4(SEED_SHARD, poolId, pg, osdId, shard);
}
