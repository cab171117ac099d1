// CLU3 placement, on seeded random maps: the hash is murmur3_32 and frozen
// (golden values); the failure-domain rule holds on 500 random maps; results are
// deterministic and independent of OSD order; replicas and primaries are
// balanced; weights are respected; adding an OSD moves at most 1/N + 5 % of the
// replicas and marking one out moves only its own; objectToPg is uniform.
// Each randomized test prints its seed; TESSERA_SEED=N replays it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { isTesseraError } from '../stdx/errors.js';
import { hashIds3, objectHash32, strawUnit53, PLACEMENT_HASH_VERSION } from './hash.js';
import {
  countMovedReplicas,
  objectToPg,
  placePgs,
  PlacementError,
  type PgPlacement,
  type PlacementErrorReason,
  type PlacementMap,
  type PlacementOsd,
  type PlacementPool,
} from './placement.js';

function seeded(name: string): { seed: number; prng: Prng } {
  const seed = seedFromEnv();
  console.log(`${name}: seed ${seed} (TESSERA_SEED=${seed} replays)`);
  return { seed, prng: new Prng(seed) };
}

/** Reference murmur3_32 over bytes, written from the published algorithm. */
function murmur3Bytes(bytes: Uint8Array, seed: number): number {
  let h = seed >>> 0;
  const blocks = bytes.length >>> 2;
  const mixK = (k: number): number => Math.imul(((Math.imul(k, 0xcc9e2d51) << 15) | (Math.imul(k, 0xcc9e2d51) >>> 17)), 0x1b873593);
  for (let b = 0; b < blocks; b++) {
    const k = bytes[4 * b] | (bytes[4 * b + 1] << 8) | (bytes[4 * b + 2] << 16) | (bytes[4 * b + 3] << 24);
    h ^= mixK(k);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  const tail = blocks * 4;
  const rest = bytes.length & 3;
  if (rest >= 3) k ^= bytes[tail + 2] << 16;
  if (rest >= 2) k ^= bytes[tail + 1] << 8;
  if (rest >= 1) {
    k ^= bytes[tail];
    h ^= mixK(k);
  }
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function idBytes(ids: number[]): Uint8Array {
  const buf = Buffer.alloc(ids.length * 8);
  ids.forEach((x, i) => {
    buf.writeUInt32LE(x >>> 0, 8 * i);
    buf.writeUInt32LE(Math.floor(x / 2 ** 32), 8 * i + 4);
  });
  return buf;
}

test('hash: the reference murmur3_32 matches the published test vectors', () => {
  assert.equal(murmur3Bytes(new Uint8Array(0), 0), 0);
  assert.equal(murmur3Bytes(new Uint8Array(0), 1), 0x514e28b7);
  assert.equal(murmur3Bytes(new Uint8Array(4), 0), 0x2362f9de);
  assert.equal(murmur3Bytes(Buffer.from('aaaa'), 0x9747b28c), 0x5a97808a);
  assert.equal(murmur3Bytes(Buffer.from('Hello, world!'), 0x9747b28c), 0x24884cba);
});

test('hash: hashIds3 is murmur3_32 of the ids as little-endian 64-bit words', () => {
  const { seed, prng } = seeded('hashIds3 = murmur3');
  for (let n = 0; n < 2000; n++) {
    const big = (): number => prng.int(2 ** 21) * 2 ** 32 + prng.u32();
    const ids = [prng.chance(0.5) ? prng.u32() : big(), big(), prng.int(100)];
    const s = prng.u32();
    assert.equal(hashIds3(s, ids[0], ids[1], ids[2]), murmur3Bytes(idBytes(ids), s), `seed ${seed} ids ${ids}`);
  }
});

test('hash: frozen golden values (on-disk contract; a change here loses data)', () => {
  assert.equal(PLACEMENT_HASH_VERSION, 1);
  const got = {
    obj: [objectHash32(0, 0, 0), objectHash32(1, 42, 7), objectHash32(3, 2 ** 40 + 5, 2 ** 33)],
    pg: [objectToPg(0, 0, 0, 256), objectToPg(1, 42, 7, 65536), objectToPg(3, 2 ** 40 + 5, 2 ** 33, 1024)],
    straw: [strawUnit53(0, 0, 0), strawUnit53(1, 17, 3), strawUnit53(9, 65535, 2 ** 31)],
  };
  assert.deepEqual(got, GOLDEN);
});

// Computed once with PLACEMENT_HASH_VERSION 1 and never to be edited.
const GOLDEN = {
  obj: [657139729, 19819038, 849859313],
  pg: [17, 27166, 753],
  straw: [0.22986436752724126, 0.8558701165112164, 0.08467095475496778],
};

/** A random cluster: 1-10 hosts with 1-4 OSDs each, random weights and states. */
function randomMap(prng: Prng): PlacementMap {
  const osds: PlacementOsd[] = [];
  const hosts = 1 + prng.int(10);
  let id = prng.int(5);
  for (let h = 0; h < hosts; h++) {
    const perHost = 1 + prng.int(4);
    for (let k = 0; k < perHost; k++) {
      osds.push({
        id,
        host: `host-${h}`,
        weight: prng.chance(0.1) ? 0 : Math.round(prng.float() * 400) / 100,
        up: prng.chance(0.85),
        in: prng.chance(0.85),
        shards: prng.chance(0.5) ? 1 + prng.int(8) : undefined,
      });
      id += 1 + prng.int(3);
    }
  }
  return { osds };
}

function uniformMap(osdCount: number, osdsPerHost: number, firstId = 0): PlacementMap {
  const osds: PlacementOsd[] = [];
  for (let i = 0; i < osdCount; i++) {
    osds.push({ id: firstId + i, host: `host-${Math.floor(i / osdsPerHost)}`, weight: 1, up: true, in: true });
  }
  return { osds };
}

test('never two replicas in one host, only in OSDs with weight, fewer replicas only when hosts run out (500 maps)', () => {
  const { seed, prng } = seeded('failure domains');
  for (let n = 0; n < 500; n++) {
    const map = randomMap(prng);
    const pool: PlacementPool = { id: prng.int(8), pgCount: 2 ** (4 + prng.int(5)), size: 1 + prng.int(5), failureDomain: 'host' };
    const byId = new Map(map.osds.map((o) => [o.id, o]));
    const eligibleHosts = new Set(map.osds.filter((o) => o.in && o.weight > 0).map((o) => o.host)).size;
    const placed = placePgs(map, pool);
    assert.equal(placed.length, pool.pgCount);
    for (const p of placed) {
      const ctx = `seed ${seed} map ${n} pg ${p.pg}`;
      const hosts = p.osds.map((id) => byId.get(id)!.host);
      assert.equal(new Set(hosts).size, hosts.length, `${ctx}: two replicas in one host ${hosts}`);
      for (const id of p.osds) assert.ok(byId.get(id)!.in && byId.get(id)!.weight > 0, `${ctx}: OSD ${id} is out or weightless`);
      assert.equal(p.osds.length, Math.min(pool.size, eligibleHosts), ctx);
      assert.equal(p.replicasMissing, pool.size - p.osds.length, ctx);
      // The primary is up whenever some replica is.
      if (p.osds.some((id) => byId.get(id)!.up)) assert.ok(byId.get(p.osds[0])!.up, `${ctx}: primary is down`);
      const primary = byId.get(p.osds[0]);
      if (primary?.shards !== undefined) {
        assert.ok(p.primaryShard !== undefined && p.primaryShard >= 0 && p.primaryShard < primary.shards, ctx);
      } else {
        assert.equal(p.primaryShard, undefined, ctx);
      }
    }
  }
});

test('two hosts and size 3: two replicas and replicasMissing 1, never two in one host', () => {
  const placed = placePgs(uniformMap(6, 3), { id: 1, pgCount: 64, size: 3, failureDomain: 'host' });
  for (const p of placed) {
    assert.equal(p.osds.length, 2);
    assert.equal(p.replicasMissing, 1);
    assert.notEqual(Math.floor(p.osds[0] / 3), Math.floor(p.osds[1] / 3));
  }
  // With failure domain 'osd' the same map gives three replicas.
  for (const p of placePgs(uniformMap(6, 3), { id: 1, pgCount: 64, size: 3, failureDomain: 'osd' })) {
    assert.equal(p.osds.length, 3);
    assert.equal(new Set(p.osds).size, 3);
  }
  // No eligible OSD at all: empty sets, all replicas missing.
  const none = placePgs({ osds: [] }, { id: 1, pgCount: 4, size: 2, failureDomain: 'host' });
  assert.deepEqual(none[0], { pg: 0, osds: [], replicasMissing: 2 });
});

test('deterministic: the same map gives the same placement, whatever the order of its OSDs', () => {
  const { seed, prng } = seeded('deterministic');
  for (let n = 0; n < 50; n++) {
    const map = randomMap(prng);
    const pool: PlacementPool = { id: 3, pgCount: 128, size: 3, failureDomain: prng.chance(0.5) ? 'host' : 'osd' };
    const a = placePgs(map, pool);
    const shuffled = [...map.osds];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = prng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    assert.deepEqual(placePgs({ osds: shuffled.map((o) => ({ ...o })) }, pool), a, `seed ${seed} map ${n}`);
  }
});

function counts(placed: PgPlacement[]): { replicas: Map<number, number>; primaries: Map<number, number> } {
  const replicas = new Map<number, number>();
  const primaries = new Map<number, number>();
  for (const p of placed) {
    for (const id of p.osds) replicas.set(id, (replicas.get(id) ?? 0) + 1);
    if (p.osds.length > 0) primaries.set(p.osds[0], (primaries.get(p.osds[0]) ?? 0) + 1);
  }
  return { replicas, primaries };
}

/** Largest |count / mean - 1| over the OSDs (OSDs with no entry count 0). */
function worstDeviation(ids: number[], count: Map<number, number>, total: number): number {
  const mean = total / ids.length;
  let worst = 0;
  for (const id of ids) worst = Math.max(worst, Math.abs((count.get(id) ?? 0) / mean - 1));
  return worst;
}

// Straw2 alone is a binomial draw per OSD: with 1024 PGs × 3 on 20 OSDs the
// worst OSD sits around ±17-23 % of the mean (sd ≈ 7 %) and at 4096 PGs around
// ±12-14 %, so replicas are held to ±15 % at 8192 PGs (sd ≈ 2.7 %, no flakes)
// and the 1024 and 4096 figures are printed, not asserted.
// Getting ±15 % at 1024 PGs needs a balancer that overrides a few PGs (Ceph's
// upmap), which gives up the exact movement locality tested below.
// Primaries are balanced by the bounded-load pass and are asserted at 1024.
test('balance: equal weights on 6-20 OSDs: replicas within ±15 % (8192 PGs × 3), primaries within ±25 % (1024-8192 PGs)', () => {
  const { seed, prng } = seeded('balance');
  const worst = { replicas1024: 0, primaries1024: 0, replicas4096: 0, primaries4096: 0, replicas8192: 0, primaries8192: 0 };
  for (let n = 0; n < 20; n++) {
    // Hosts of equal size: a host with fewer OSDs is a lighter failure domain and,
    // with size 3, picking without replacement favours light domains a little
    // (Ceph's multipick anomaly), which is not what this test measures.
    const perHost = prng.chance(0.5) ? 2 : 1;
    const osdCount = perHost * Math.ceil((6 + prng.int(15)) / perHost);
    const map = uniformMap(osdCount, perHost, prng.int(1000));
    const poolId = prng.int(100);
    const ids = map.osds.map((o) => o.id);
    for (const pgCount of [1024, 4096, 8192] as const) {
      const pool: PlacementPool = { id: poolId, pgCount, size: 3, failureDomain: 'host' };
      const { replicas, primaries } = counts(placePgs(map, pool));
      const r = worstDeviation(ids, replicas, 3 * pgCount);
      const p = worstDeviation(ids, primaries, pgCount);
      worst[`replicas${pgCount}`] = Math.max(worst[`replicas${pgCount}`], r);
      worst[`primaries${pgCount}`] = Math.max(worst[`primaries${pgCount}`], p);
      const ctx = `seed ${seed} map ${n} (${osdCount} OSDs, ${perHost}/host, pool ${poolId}, ${pgCount} PGs)`;
      if (pgCount === 8192) assert.ok(r <= 0.15, `${ctx}: replica deviation ${(r * 100).toFixed(1)} %`);
      assert.ok(p <= 0.25, `${ctx}: primary deviation ${(p * 100).toFixed(1)} %`);
    }
  }
  const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
  console.log(
    `balance over 20 maps, worst OSD: 1024 PGs replicas ${pct(worst.replicas1024)} primaries ${pct(worst.primaries1024)}; ` +
      `4096 PGs replicas ${pct(worst.replicas4096)} primaries ${pct(worst.primaries4096)}; ` +
      `8192 PGs replicas ${pct(worst.replicas8192)} primaries ${pct(worst.primaries8192)}`,
  );
});

test('weights: an OSD of weight 2 gets about twice the replicas of a weight-1 OSD', () => {
  const { seed, prng } = seeded('weights');
  const ratios: number[] = [];
  for (const size of [1, 3]) {
    for (let n = 0; n < 5; n++) {
      const map = uniformMap(20, 1, 0);
      const heavy = prng.int(20);
      map.osds[heavy].weight = 2;
      const pool: PlacementPool = { id: prng.int(100), pgCount: 16384, size, failureDomain: 'host' };
      const { replicas } = counts(placePgs(map, pool));
      const light = [...replicas].filter(([id]) => id !== heavy).map(([, c]) => c);
      const ratio = (replicas.get(heavy) ?? 0) / (light.reduce((s, c) => s + c, 0) / light.length);
      ratios.push(ratio);
      // Size 1 is exactly proportional in expectation; for size 3 picking without
      // replacement gives heavy OSDs slightly less than proportional (Ceph's
      // "multipick anomaly"). Measured over 680 maps (session 12): size 1 mean 2.00,
      // sd 0.053 (the sampling noise of ~1,560 PGs); size 3 mean 1.89, sd 0.027. The
      // bounds sit ~5 sd out: at 1.85 for size 1 (2.8 sd), seed 1621609769 failed
      // with 1.83, about one run in a hundred.
      const [low, high] = size === 1 ? [1.73, 2.27] : [1.75, 2.03];
      assert.ok(ratio >= low && ratio <= high, `seed ${seed} size ${size} map ${n}: ratio ${ratio.toFixed(2)}`);
    }
  }
  console.log(`weights: heavy/light ratios ${ratios.map((r) => r.toFixed(2)).join(' ')}`);
});

test('adding one OSD to N moves at most 1/N + 5 % of the replicas; primaries mostly stay', () => {
  const { seed, prng } = seeded('add OSD');
  let worstExcess = -1;
  const lines: string[] = [];
  for (let n = 0; n < 20; n++) {
    const osdCount = 6 + prng.int(15);
    const perHost = prng.chance(0.5) ? 1 : 2;
    const before = uniformMap(osdCount, perHost);
    const after = uniformMap(osdCount + 1, perHost);
    const pool: PlacementPool = { id: prng.int(100), pgCount: 1024, size: 3, failureDomain: 'host' };
    const a = placePgs(before, pool);
    const b = placePgs(after, pool);
    const movedFraction = countMovedReplicas(a, b) / (3 * pool.pgCount);
    const primaryMoved = a.filter((p, i) => p.osds[0] !== b[i].osds[0]).length / pool.pgCount;
    const bound = 1 / osdCount + 0.05;
    worstExcess = Math.max(worstExcess, movedFraction - 1 / osdCount);
    if (n < 5) lines.push(`${osdCount}→${osdCount + 1}: moved ${(movedFraction * 100).toFixed(1)} % (1/N ${(100 / osdCount).toFixed(1)} %), primaries changed ${(primaryMoved * 100).toFixed(1)} %`);
    assert.ok(movedFraction <= bound, `seed ${seed} map ${n}: ${osdCount}→${osdCount + 1} OSDs moved ${(movedFraction * 100).toFixed(1)} % > ${(bound * 100).toFixed(1)} %`);
    // Every moved replica lands on the new OSD (minimal movement).
    for (let pg = 0; pg < pool.pgCount; pg++) {
      for (const id of b[pg].osds) if (!a[pg].osds.includes(id)) assert.equal(id, osdCount, `seed ${seed} map ${n} pg ${pg}`);
    }
  }
  console.log(`add OSD: ${lines.join('; ')}; worst moved - 1/N = ${(worstExcess * 100).toFixed(1)} %`);
});

test('marking one OSD out moves only the PGs that had it', () => {
  const { seed, prng } = seeded('remove OSD');
  for (let n = 0; n < 20; n++) {
    const map = n < 10 ? uniformMap(6 + prng.int(15), 1 + prng.int(3)) : randomMap(prng);
    const pool: PlacementPool = { id: prng.int(100), pgCount: 512, size: 1 + prng.int(4), failureDomain: 'host' };
    const inOsds = map.osds.filter((o) => o.in && o.weight > 0);
    if (inOsds.length === 0) continue;
    const victim = inOsds[prng.int(inOsds.length)].id;
    const a = placePgs(map, pool);
    const b = placePgs({ osds: map.osds.map((o) => (o.id === victim ? { ...o, in: false } : o)) }, pool);
    let had = 0;
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const ctx = `seed ${seed} map ${n} pg ${pg} victim ${victim}`;
      const setA = [...a[pg].osds].sort((x, y) => x - y);
      const setB = [...b[pg].osds].sort((x, y) => x - y);
      if (!setA.includes(victim)) {
        assert.deepEqual(setB, setA, `${ctx}: a PG without the victim changed`);
      } else {
        had++;
        assert.ok(!setB.includes(victim), ctx);
        // Only the victim's slot changes: the other replicas stay.
        for (const id of setA) if (id !== victim) assert.ok(setB.includes(id), `${ctx}: replica ${id} lost`);
      }
    }
    assert.equal(countMovedReplicas(a, b), a.reduce((s, p, pg) => s + (p.osds.includes(victim) && b[pg].osds.length === p.osds.length ? 1 : 0), 0));
      }
});

test('objectToPg is uniform over 100k objects (chi-square over 256 PGs) and masks for PG splits', () => {
  const { seed, prng } = seeded('objectToPg uniform');
  const pgCount = 256;
  const objects = 100_000;
  const hist = new Float64Array(pgCount);
  const volumes = [prng.int(1000), prng.u32(), prng.int(2 ** 21) * 2 ** 32 + prng.u32()];
  for (let i = 0; i < objects; i++) {
    const volumeId = volumes[i % volumes.length];
    const pg = objectToPg(7, volumeId, Math.floor(i / volumes.length), pgCount);
    hist[pg]++;
    // Doubling pgCount splits PG p into p and p + pgCount: nothing else moves.
    assert.equal(objectToPg(7, volumeId, Math.floor(i / volumes.length), 2 * pgCount) % pgCount, pg);
  }
  const expected = objects / pgCount;
  let chi2 = 0;
  for (const c of hist) chi2 += ((c - expected) * (c - expected)) / expected;
  // 255 degrees of freedom: mean 255, sd sqrt(510) ≈ 22.6; accept ±5 sd.
  console.log(`objectToPg: chi-square ${chi2.toFixed(1)} with 255 degrees of freedom (seed ${seed})`);
  assert.ok(chi2 > 255 - 5 * 22.6 && chi2 < 255 + 5 * 22.6, `seed ${seed}: chi-square ${chi2}`);
});

test('shards: an OSD spreads the PGs it leads evenly over its shards', () => {
  const map = uniformMap(8, 1);
  for (const o of map.osds) o.shards = 3;
  const placed = placePgs(map, { id: 2, pgCount: 1024, size: 3, failureDomain: 'host' });
  const perShard = new Map<string, number>();
  const perOsd = new Map<number, number>();
  for (const p of placed) {
    perShard.set(`${p.osds[0]}/${p.primaryShard}`, (perShard.get(`${p.osds[0]}/${p.primaryShard}`) ?? 0) + 1);
    perOsd.set(p.osds[0], (perOsd.get(p.osds[0]) ?? 0) + 1);
  }
  for (const [key, c] of perShard) {
    const led = perOsd.get(Number(key.split('/')[0]))!;
    assert.ok(c <= Math.ceil(led / 3) && c >= led - 2 * Math.ceil(led / 3), `${key}: ${c} of ${led}`);
  }
  assert.equal(perShard.size, 24);
});

test('a down OSD keeps its replicas but leads no PG while another replica is up', () => {
  const map = uniformMap(8, 1);
  const up = placePgs(map, { id: 4, pgCount: 256, size: 3, failureDomain: 'host' });
  map.osds[3].up = false;
  const down = placePgs(map, { id: 4, pgCount: 256, size: 3, failureDomain: 'host' });
  for (let pg = 0; pg < 256; pg++) {
    assert.deepEqual([...down[pg].osds].sort(), [...up[pg].osds].sort());
    assert.notEqual(down[pg].osds[0], 3);
  }
});

test('invalid input fails with PlacementError (ERR_INVALID) and a reason', () => {
  const ok: PlacementPool = { id: 1, pgCount: 64, size: 3, failureDomain: 'host' };
  const osd = (id: number, extra: Partial<PlacementOsd> = {}): PlacementOsd => ({ id, host: `h${id}`, weight: 1, up: true, in: true, ...extra });
  const cases: Array<[PlacementErrorReason, () => unknown]> = [
    ['POOL_SIZE', () => placePgs({ osds: [osd(1)] }, { ...ok, size: 0 })],
    ['POOL_SIZE', () => placePgs({ osds: [osd(1)] }, { ...ok, size: 1.5 })],
    ['PG_COUNT', () => placePgs({ osds: [osd(1)] }, { ...ok, pgCount: 100 })],
    ['PG_COUNT', () => placePgs({ osds: [osd(1)] }, { ...ok, pgCount: 131072 })],
    ['PG_COUNT', () => placePgs({ osds: [osd(1)] }, { ...ok, pgCount: 0 })],
    ['PG_COUNT', () => objectToPg(1, 1, 1, 3)],
    ['DUPLICATE_OSD', () => placePgs({ osds: [osd(1), osd(2), osd(1, { host: 'other' })] }, ok)],
    ['WEIGHT', () => placePgs({ osds: [osd(1, { weight: -1 })] }, ok)],
    ['WEIGHT', () => placePgs({ osds: [osd(1, { weight: NaN })] }, ok)],
    ['OSD_ID', () => placePgs({ osds: [osd(-1)] }, ok)],
    ['HOST', () => placePgs({ osds: [osd(1, { host: '' })] }, ok)],
    ['SHARDS', () => placePgs({ osds: [osd(1, { shards: 0 })] }, ok)],
    ['POOL_ID', () => placePgs({ osds: [] }, { ...ok, id: -2 })],
    ['FAILURE_DOMAIN', () => placePgs({ osds: [] }, { ...ok, failureDomain: 'rack' as 'host' })],
    ['OBJECT_ID', () => objectToPg(1, -1, 0, 64)],
    ['OBJECT_ID', () => objectToPg(1, 1, 2 ** 53, 64)],
  ];
  for (const [reason, fn] of cases) {
    assert.throws(fn, (err: unknown) => err instanceof PlacementError && err.reason === reason && isTesseraError(err, 'ERR_INVALID'), reason);
  }
  // pgCount 65536 and size 1 are the valid limits.
  assert.equal(placePgs({ osds: [osd(1)] }, { ...ok, pgCount: 65536, size: 1 }).length, 65536);
});
