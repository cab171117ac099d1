// Allocation (SPEC ENG7, issue 4 part 4): distinct members, only usable members
// with room, choice in proportion to weight, variable stripe width, and two
// seeded simulations of a pool under churn: global wear levelling brings a new
// member's wear up to the old ones', and inverse wear levelling makes one of
// several old, evenly worn members wear out first. Seeds print and replay
// (TESSERA_SEED).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocateContainer, chooseSacrificial, memberWeights, DEFAULT_WEAR_POLICY, type MemberState } from './allocator.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';

const SEED = seedFromEnv();
console.log(`allocator.test seed: TESSERA_SEED=${SEED}`);

function member(index: number, over: Partial<MemberState> = {}): MemberState {
  return { index, freeChunks: 100, totalChunks: 100, wear: 0, usable: true, ...over };
}

test('containers get distinct usable members with room, on random pools', () => {
  const rng = new Prng(SEED);
  for (let round = 0; round < 2000; round++) {
    const n = 1 + rng.int(12);
    const members = Array.from({ length: n }, (_, i) =>
      member(i * 3 + 1, { freeChunks: rng.chance(0.2) ? 0 : 1 + rng.int(50), usable: !rng.chance(0.15), wear: rng.float() * 1.2 }),
    );
    const m = rng.int(3);
    const k = 1 + rng.int(8);
    const able = members.filter((x) => x.usable && x.freeChunks > 0).length;
    if (able < 1 + m) {
      assert.throws(() => allocateContainer(members, { dataCount: k, parityCount: m }, rng), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_NO_SPACE');
      continue;
    }
    const a = allocateContainer(members, { dataCount: k, parityCount: m }, rng);
    assert.equal(new Set(a.members).size, a.members.length, 'two chunks on one member');
    assert.equal(a.members.length, a.dataCount + a.parityCount);
    assert.equal(a.parityCount, m, 'parity count never changes');
    assert.ok(a.dataCount >= 1 && a.dataCount <= k);
    assert.equal(a.narrowed, a.dataCount < k);
    assert.equal(a.dataCount, Math.min(k, able - m), 'as wide as the members allow');
    for (const idx of a.members) {
      const mem = members.find((x) => x.index === idx)!;
      assert.ok(mem.usable && mem.freeChunks > 0, `member ${idx} cannot take a chunk`);
    }
  }
});

test('variable stripe width: 4+1 falls back to 3+1 with four members, never below 1+m', () => {
  const rng = new Prng(SEED ^ 1);
  const four = [0, 1, 2, 3].map((i) => member(i));
  const a = allocateContainer(four, { dataCount: 4, parityCount: 1 }, rng);
  assert.deepEqual([a.dataCount, a.parityCount, a.narrowed], [3, 1, true]);
  const b = allocateContainer([...four, member(4)], { dataCount: 4, parityCount: 1 }, rng);
  assert.deepEqual([b.dataCount, b.narrowed], [4, false]);
  // RAID6 with two members left: no container (would be unprotected against two losses).
  assert.throws(() => allocateContainer([member(0), member(1), member(2, { usable: false })], { dataCount: 4, parityCount: 2 }, rng), /at least 3 members/);
  // mirror2 on one member with room: no.
  assert.throws(() => allocateContainer([member(0), member(1, { freeChunks: 0 })], { dataCount: 1, parityCount: 1 }, rng), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_NO_SPACE');
  // allowDegraded (a pool with members missing keeps taking writes): the rest is left for rebuild.
  const d = allocateContainer([member(0), member(1), member(2, { usable: false })], { dataCount: 1, parityCount: 2 }, rng, { allowDegraded: true });
  assert.deepEqual([d.members.length, d.members.filter((x) => x === -1).length, d.unplaced, d.dataCount], [3, 1, 1, 1]);
  assert.deepEqual(new Set(d.members.slice(0, 2)), new Set([0, 1]));
  assert.throws(() => allocateContainer([member(0, { usable: false })], { dataCount: 1, parityCount: 1 }, rng, { allowDegraded: true }), /0 have room/);
  // exclude (replacing a lost chunk): the container's survivors are not chosen.
  const r = allocateContainer(four, { dataCount: 1, parityCount: 0 }, rng, { exclude: new Set([0, 1, 3]) });
  assert.deepEqual(r.members, [2]);
});

test('members are chosen in proportion to free chunks times remaining life', () => {
  const rng = new Prng(SEED ^ 2);
  // (1 - 0.1591)^4 = 0.5: member 2 weighs as much as member 0.
  const members = [member(0, { freeChunks: 100 }), member(1, { freeChunks: 200 }), member(2, { freeChunks: 200, wear: 1 - 0.5 ** 0.25 })];
  assert.deepEqual(memberWeights(members, null).map((w) => Math.round(w)), [100, 200, 100]);
  assert.equal(memberWeights([member(0, { wear: 0.3 })], null)[0].toFixed(2), (100 * 0.7 ** 4).toFixed(2));
  const counts = [0, 0, 0];
  const draws = 40_000;
  for (let i = 0; i < draws; i++) counts[allocateContainer(members, { dataCount: 1, parityCount: 0 }, rng).members[0]]++;
  const expected = [0.25, 0.5, 0.25];
  counts.forEach((c, i) => assert.ok(Math.abs(c / draws - expected[i]) < 0.02, `member ${i}: ${c / draws} vs ${expected[i]}`));
});

test('the sacrificial member: chosen only when all are old and near-equal, then kept while usable', () => {
  const old = [member(0, { wear: 0.8 }), member(1, { wear: 0.82 }), member(2, { wear: 0.79 })];
  assert.equal(chooseSacrificial(old, null), 1, 'the most worn');
  assert.equal(chooseSacrificial([...old, member(3, { wear: 0.5 })], null), null, 'one member is still young');
  assert.equal(chooseSacrificial([member(0, { wear: 0.8 }), member(1, { wear: 0.9 })], null), null, 'not near-equal');
  assert.equal(chooseSacrificial([member(0, { wear: 0.8 }), member(1, { wear: 0.95 })], 0), 0, 'kept once chosen (hysteresis)');
  assert.equal(chooseSacrificial([member(0, { wear: 0.8, usable: false }), ...old.slice(1)], 0), 1, 'replaced when it fails');
  // Sacrificed: sacrificeFactor times the youngest member's weight.
  assert.equal(memberWeights(old, 1)[1], memberWeights(old, null)[2] * DEFAULT_WEAR_POLICY.sacrificeFactor);
});

/**
 * A pool under churn: containers (4+2 unless said) are allocated (each chunk
 * written once, adding wear) and freed at random, the pool staying about 60 %
 * full. A member can take at most one chunk of each container, which bounds how
 * much faster any member can wear: (members / container width) times the mean.
 */
function simulate(start: number[], steps: number, rng: Prng, inverse: boolean, shape = { dataCount: 4, parityCount: 2 }): { wear: number[]; sacrificial: number | null } {
  const total = 300;
  const wearPerChunk = 0.00001;
  const wear = [...start];
  const free = start.map(() => total);
  const containers: number[][] = [];
  let sacrificial: number | null = null;
  const state = (): MemberState[] => wear.map((w, i) => ({ index: i, freeChunks: free[i], totalChunks: total, wear: w, usable: true }));
  for (let s = 0; s < steps; s++) {
    const used = free.reduce((a, f) => a + total - f, 0) / (total * free.length);
    if (used > 0.6 && containers.length > 0) {
      const [gone] = containers.splice(rng.int(containers.length), 1);
      for (const i of gone) free[i]++;
      continue;
    }
    if (inverse) sacrificial = chooseSacrificial(state(), sacrificial);
    const a = allocateContainer(state(), shape, rng, { sacrificial });
    for (const i of a.members) {
      free[i]--;
      wear[i] += wearPerChunk;
    }
    containers.push(a.members);
  }
  return { wear, sacrificial };
}

test('simulation: global wear levelling brings a new member up to the worn ones', () => {
  const rng = new Prng(SEED ^ 3);
  const start = [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.0];
  // 2+1 containers on 8 members. Only new writes are steered: how much more a
  // member takes is bounded by its free space (a member that holds more data
  // also loses more to frees), so the gap closes gradually.
  const { wear } = simulate(start, 250_000, rng, false, { dataCount: 2, parityCount: 1 });
  const spread = Math.max(...wear) - Math.min(...wear);
  const oldGain = wear[0] - start[0];
  console.log(`global wear levelling: wear ${wear.map((w) => w.toFixed(3)).join(' ')}, spread ${spread.toFixed(3)} (was 0.200); new member wore x${(wear[7] / oldGain).toFixed(2)} as fast`);
  assert.ok(spread < 0.6 * 0.2, `spread ${spread} did not shrink`);
  assert.ok(wear[7] > 1.25 * oldGain, 'the new member took clearly more of the writes');
  assert.ok(Math.max(...wear) < 0.9, 'the simulation stayed within the members\' life');
});

test('simulation: inverse wear levelling makes one old member wear out first', () => {
  const start = [0.7, 0.705, 0.69, 0.7, 0.695, 0.7, 0.7, 0.7];
  const steps = 40_000;
  const withInverse = simulate(start, steps, new Prng(SEED ^ 4), true);
  const without = simulate(start, steps, new Prng(SEED ^ 4), false);
  const s = withInverse.sacrificial!;
  assert.equal(s, 1, 'the most worn member is sacrificed');
  const gain = withInverse.wear.map((w, i) => w - start[i]);
  const othersGain = gain.filter((_, i) => i !== s);
  const meanOthers = othersGain.reduce((a, b) => a + b, 0) / othersGain.length;
  const others = withInverse.wear.filter((_, i) => i !== s);
  const spreadWithout = Math.max(...without.wear) - Math.min(...without.wear);
  console.log(
    `inverse wear levelling: sacrificial member ${s} ${start[s]} -> ${withInverse.wear[s].toFixed(3)} (x${(gain[s] / meanOthers).toFixed(2)} the others' rate), ` +
      `others ${Math.min(...others).toFixed(3)}-${Math.max(...others).toFixed(3)}; without it every member ends within ${spreadWithout.toFixed(3)}`,
  );
  // In every 4+2 container of 8 members it wears at most 8/6 = 1.33 times the mean.
  assert.ok(gain[s] > 1.25 * meanOthers, `the sacrificial member wore only ${(gain[s] / meanOthers).toFixed(2)} times as fast`);
  assert.ok(Math.max(...others) - Math.min(...others) < 0.02, 'the others stay together');
  assert.ok(spreadWithout < 0.02, 'without inverse levelling they wear out together');
  assert.ok(Math.max(...withInverse.wear) < 1, 'the simulation stayed within the members\' life');
});

test('failure domains: never two chunks of a container in one domain; the stripe narrows to the domains with room', () => {
  const rng = new Prng(SEED ^ 0x51);
  for (let round = 0; round < 2000; round++) {
    const disks = 1 + rng.int(6);
    const members: MemberState[] = [];
    for (let d = 0; d < disks; d++) {
      const parts = 1 + rng.int(3);
      for (let p = 0; p < parts; p++) members.push(member(members.length, { domain: `disk${d}`, freeChunks: rng.chance(0.2) ? 0 : 1 + rng.int(9) }));
    }
    const m = rng.int(3);
    const k = 1 + rng.int(6);
    const domains = new Set(members.filter((x) => x.freeChunks > 0).map((x) => x.domain)).size;
    if (domains < 1 + m) {
      assert.throws(() => allocateContainer(members, { dataCount: k, parityCount: m }, rng), /distinct failure domains/);
      continue;
    }
    const a = allocateContainer(members, { dataCount: k, parityCount: m }, rng);
    const used = a.members.map((i) => members[i].domain);
    assert.equal(new Set(used).size, used.length, `round ${round}: two chunks in one domain (${used.join(',')}) TESSERA_SEED=${SEED}`);
    assert.equal(a.members.length, Math.min(k + m, domains));
  }
});
