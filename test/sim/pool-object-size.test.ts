// An OSD serves only pools whose object size is its engine's (src/osd/osd.ts
// checkRequest): a PG's data is a set of whole engine objects, which recovery
// copies and PG removal drops. A pool of another object size (the monitor's API
// accepts 64 KiB to 64 MiB) would put several PGs' data in one engine object,
// and a copy or a drop of one PG would take other PGs' data with it. Such IO is
// refused with a clear error, before anything is written. Seeded cluster sim.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SIM_OBJECT_BYTES, SimCluster } from './cluster.js';

/** Starts c, writes 4 KiB to its volume and gives how that ended ('ok' or the error's code and message). */
async function firstWrite(c: SimCluster): Promise<string> {
  await c.start();
  const vol = c.map.volumes[0];
  let outcome: string | null = null;
  c.client.write({ id: vol.id, poolId: vol.poolId }, 0, Buffer.alloc(4096, 7)).then(
    () => (outcome = 'ok'),
    (err: Error & { code?: string }) => (outcome = `${err.code}: ${err.message}`),
  );
  await c.sched.runUntil(c.sched.nowMs + 20_000, () => outcome !== null);
  return outcome ?? 'no answer';
}

test('sim: IO to a pool whose object size is not the OSDs\' engine object size is refused, nothing written', async () => {
  const seed = Number(process.env.TESSERA_SEED ?? 1) >>> 0;
  // (Smaller pool objects are refused the same way; the sim engine already has the smallest the monitor allows.)
  for (const poolObjectBytes of [SIM_OBJECT_BYTES * 2, SIM_OBJECT_BYTES * 16]) {
    const c = new SimCluster(seed, { osds: 3, volumeBytes: 8 * SIM_OBJECT_BYTES, pgCount: 4, poolObjectBytes });
    try {
      const outcome = await firstWrite(c);
      assert.match(outcome, new RegExp(`has ${poolObjectBytes}-byte objects; this OSD stores ${SIM_OBJECT_BYTES}-byte objects`), `seed ${seed}, pool objects of ${poolObjectBytes} bytes`);
      for (const [id, osd] of c.osds) assert.deepEqual(osd.store!.volumeIds(), [], `osd.${id} stored data`);
      assert.deepEqual(c.fatalErrors(), []);
    } finally {
      c.stop();
    }
  }
});

test('sim: IO to a pool of the engine object size is served (the check above passes it)', async () => {
  const c = new SimCluster(1, { osds: 3, volumeBytes: 8 * SIM_OBJECT_BYTES, pgCount: 4 });
  try {
    assert.equal(await firstWrite(c), 'ok');
  } finally {
    c.stop();
  }
});
