// Chunk allocation for a pool's containers (SPEC ENG7, FlashRAID 2.4-2.8):
// weighted pseudo-random choice of k + m distinct members, weighted by free
// chunks and remaining life to the 4th power (global wear levelling); inverse wear levelling
// (one old member is deliberately worn faster when all are old and even, so
// they do not fail together); variable stripe width (a narrower stripe when
// fewer than k + m members have room). Pure: state in, choice out, with an
// injected PRNG, so a seed replays a simulation.
//
// Invariants: a container never gets two chunks on one member, nor on two
// members of one failure domain (partitions of one disk); only usable
// members with free chunks are chosen; the data count never drops below 1
// and the parity count never changes (protection is not weakened, only the
// stripe narrowed; with allowDegraded, positions may stay unplaced when
// fewer than 1 + m members are usable); the sacrificial member, once chosen, stays chosen until it
// is no longer usable (hysteresis: otherwise levelling would pull it back).
import { assert, fail } from '../stdx/assert.js';
import { TesseraError } from '../stdx/errors.js';
import type { Prng } from '../stdx/prng.js';

export interface MemberState {
  /** Position in the pool's member list. */
  readonly index: number;
  readonly freeChunks: number;
  readonly totalChunks: number;
  /** Bytes written over the member's endurance: 0 new, 1 at its rated end of life. */
  readonly wear: number;
  /** False for failed, removed or draining members: never allocated on. */
  readonly usable: boolean;
  /** Members sharing a failure domain (partitions of one disk) never hold two chunks of one container. Default: its own. */
  readonly domain?: string;
}

function domainOf(m: MemberState): string {
  return m.domain ?? `#${m.index}`;
}

export interface WearPolicy {
  /** Every member at or past this wear counts as old (inverse wear levelling). */
  readonly oldWear: number;
  /** Old members whose wear differs by at most this are "near-equal". */
  readonly nearEqualWear: number;
  /** Weight multiplier of the sacrificial member. */
  readonly sacrificeFactor: number;
}

export const DEFAULT_WEAR_POLICY: WearPolicy = { oldWear: 0.7, nearEqualWear: 0.05, sacrificeFactor: 4 };

/** Remaining life below this still counts, so that worn-out members are used when nothing else has room. */
const MIN_LIFE = 0.01;

export interface Allocation {
  /** Member index of each position: dataCount data chunks, then the parity chunks. */
  readonly members: number[];
  readonly dataCount: number;
  readonly parityCount: number;
  /** True when fewer data chunks than wanted (variable stripe width): to be widened later. */
  readonly narrowed: boolean;
  /**
   * With allowDegraded, positions at the end of `members` that got no member
   * (-1): the container starts degraded and rebuild places them later.
   */
  readonly unplaced: number;
}

/**
 * The member to wear out first, or null. Keeps `current` while it is usable;
 * otherwise picks the most worn member once every usable member is old and all
 * are within nearEqualWear of each other (ties: the lowest index).
 */
export function chooseSacrificial(members: readonly MemberState[], current: number | null, policy: WearPolicy = DEFAULT_WEAR_POLICY): number | null {
  const usable = members.filter((m) => m.usable);
  if (current !== null && usable.some((m) => m.index === current)) return current;
  if (usable.length < 2) return null;
  let min = Infinity;
  let max = -Infinity;
  let most: MemberState | null = null;
  for (const m of usable) {
    min = Math.min(min, m.wear);
    if (m.wear > max) {
      max = m.wear;
      most = m;
    }
  }
  if (min < policy.oldWear || max - min > policy.nearEqualWear) return null;
  return most!.index;
}

/**
 * How strongly remaining life steers allocation: weight ~ life^WEAR_EXPONENT, so
 * a member with 70 % of its life left gets (0.7)^4 = 0.24 of the new chunks a
 * new member gets (with equal free space), and wear converges.
 */
export const WEAR_EXPONENT = 4;

function lifeTerm(wear: number): number {
  return Math.max(1 - wear, MIN_LIFE) ** WEAR_EXPONENT;
}

/** Allocation weight of each member (by position in `members`): 0 when it cannot take a chunk. */
export function memberWeights(members: readonly MemberState[], sacrificial: number | null, policy: WearPolicy = DEFAULT_WEAR_POLICY): number[] {
  let youngest = 0;
  for (const m of members) if (m.usable) youngest = Math.max(youngest, lifeTerm(m.wear));
  return members.map((m) => {
    if (!m.usable || m.freeChunks <= 0) return 0;
    // The sacrificial member weighs sacrificeFactor times the youngest member.
    if (m.index === sacrificial) return m.freeChunks * youngest * policy.sacrificeFactor;
    return m.freeChunks * lifeTerm(m.wear);
  });
}

/**
 * Chooses the members of a new container of dataCount + parityCount chunks.
 * `exclude` members are not chosen (used when replacing a lost chunk: the
 * container's surviving members). Throws ERR_NO_SPACE when fewer than
 * 1 + parityCount members can take a chunk.
 */
export function allocateContainer(
  members: readonly MemberState[],
  want: { dataCount: number; parityCount: number },
  rng: Prng,
  options: { sacrificial?: number | null; policy?: WearPolicy; exclude?: ReadonlySet<number>; allowDegraded?: boolean } = {},
): Allocation {
  const { dataCount, parityCount } = want;
  if (!(dataCount >= 1 && parityCount >= 0 && dataCount + parityCount <= 255)) fail(`bad container shape ${dataCount}+${parityCount}`);
  const weights = memberWeights(members, options.sacrificial ?? null, options.policy ?? DEFAULT_WEAR_POLICY);
  const candidates: number[] = [];
  for (let i = 0; i < members.length; i++) if (weights[i] > 0 && !options.exclude?.has(members[i].index)) candidates.push(i);
  const domains = new Set(candidates.map((i) => domainOf(members[i]))).size;
  const width = Math.min(dataCount + parityCount, domains);
  if (width < 1 + parityCount && options.allowDegraded && candidates.length >= 1) {
    // Writes go on in a pool with members missing: the narrowest container,
    // with the positions no member can take left for rebuild.
    const chosen = pickWeighted(candidates, weights, domains, rng, members);
    const unplaced = 1 + parityCount - chosen.length;
    return { members: [...chosen.map((i) => members[i].index), ...new Array<number>(unplaced).fill(-1)], dataCount: 1, parityCount, narrowed: dataCount > 1, unplaced };
  }
  if (width < 1 + parityCount) {
    throw new TesseraError('ERR_NO_SPACE', `a ${dataCount}+${parityCount} container needs at least ${1 + parityCount} members with free chunks in distinct failure domains; ${domains} have room`);
  }
  const chosen = pickWeighted(candidates, weights, width, rng, members);
  return {
    members: chosen.map((i) => members[i].index),
    dataCount: width - parityCount,
    parityCount,
    narrowed: width < dataCount + parityCount,
    unplaced: 0,
  };
}

/**
 * `count` distinct positions from `candidates`, each draw proportional to its
 * weight among those left; a member drawn takes the rest of its failure domain
 * out of the draw. The caller ensures `count` domains are available.
 */
function pickWeighted(candidates: number[], weights: readonly number[], count: number, rng: Prng, members: readonly MemberState[]): number[] {
  let left = [...candidates];
  const out: number[] = [];
  while (out.length < count) {
    let total = 0;
    for (const i of left) total += weights[i];
    let r = rng.float() * total;
    let at = left.length - 1;
    for (let j = 0; j < left.length; j++) {
      r -= weights[left[j]];
      if (r < 0) {
        at = j;
        break;
      }
    }
    const picked = left[at];
    out.push(picked);
    const d = domainOf(members[picked]);
    left = left.filter((i) => domainOf(members[i]) !== d);
  }
  return out;
}
