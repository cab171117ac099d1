// Seeded CDB fuzzing of the LU (types.ts contract: execute() never rejects for an
// operating error). Random opcodes — mostly supported ones, with plausible LBAs and
// lengths half the time — random bytes, Data-Out and buffer sizes, several nexuses,
// a gate that sometimes conflicts or is unavailable, UAs, LU resets (which release an
// SPC-2 reservation the fuzz took with RESERVE (6)) and a resize mid-run; batches
// run concurrently so the CAW range lock is exercised. Every answer must be a known
// SAM status, well-formed sense exactly with CHECK CONDITION (SPC-4 4.5.3), and data
// no longer than the initiator's buffer. Replay a run with TESSERA_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { supportedCommands } from './rsoc.js';
import { assertWellFormedSense, makeNexus, makeTestLu, scsiCmd } from './testing.js';
import type { ReservationGate, ScsiCommand } from './types.js';

const ITERATIONS = 4000;
const BATCH = 8;

function randomCdb(prng: Prng, opcodes: readonly number[]): Buffer {
  const opcode = prng.chance(0.85) ? opcodes[prng.int(opcodes.length)] : prng.int(256);
  const len = prng.chance(0.95) ? [6, 10, 12, 16][prng.int(4)] : prng.int(20);
  const cdb = Buffer.alloc(Math.max(len, 1));
  prng.fill(cdb);
  cdb[0] = opcode;
  if (prng.chance(0.6) && cdb.length >= 6) {
    // Plausible fields: small LBAs near the 2048-block capacity, small lengths, clean bits.
    cdb[1] &= prng.chance(0.5) ? 0x1f : 0x0f;
    cdb[cdb.length - 1] = 0;
    const lba = prng.int(2100);
    const blocks = prng.int(24);
    if (cdb.length === 10) {
      cdb.writeUInt32BE(lba, 2);
      cdb.writeUInt16BE(blocks, 7);
    } else if (cdb.length === 16) {
      cdb.writeBigUInt64BE(BigInt(lba), 2);
      cdb.writeUInt32BE(blocks, 10);
    } else if (cdb.length === 12) {
      cdb.writeUInt32BE(lba, 2);
      cdb.writeUInt32BE(blocks, 6);
    } else if (cdb.length === 6) {
      cdb[4] = blocks;
    }
  }
  return cdb;
}

test('SPC-4 4.5.3 / SAM-5 5.3: random CDBs always get a valid status and well-formed sense', async (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  let gateMood: 'ok' | 'conflict' | 'unavailable' = 'ok';
  const gate: ReservationGate = {
    checkAccess: (_n, access) => (access === 'always' && gateMood === 'conflict' ? 'ok' : gateMood),
    prIn: async () => ({ status: 0, sense: null, dataIn: null }),
    prOut: async () => ({ status: 0, sense: null, dataIn: null }),
  };
  const { lu, store } = await makeTestLu({ gate, maxCompareAndWriteBlocks: 8, maxWriteSameBytes: 512 * 1024 });
  const opcodes = [...new Set(supportedCommands(true).map((c) => c.opcode))];
  const nexuses = [makeNexus(1), makeNexus(2), makeNexus(3)];
  const statuses = new Map<number, number>();
  for (let i = 0; i < ITERATIONS; i += BATCH) {
    if (prng.chance(0.02)) lu.raiseUnitAttention(0x2a, prng.int(10));
    // LU resets now and then: a random RESERVE (6) would otherwise leave two of the
    // three nexuses in RESERVATION CONFLICT until its holder happens to RELEASE.
    if (prng.chance(0.1)) lu.reset();
    if (prng.chance(0.005)) await store.resize('v', (1 + prng.int(2)) * 1024 * 1024, { discardData: true });
    gateMood = prng.chance(0.9) ? 'ok' : prng.chance(0.5) ? 'conflict' : 'unavailable';
    const cmds: ScsiCommand[] = [];
    for (let j = 0; j < BATCH; j++) {
      const cdb = randomCdb(prng, opcodes);
      const dataBytes = prng.chance(0.3) ? 0 : prng.int(24 * 512 + 100);
      const dataOut = prng.chance(0.1) ? null : Buffer.alloc(dataBytes, prng.int(3));
      const expectedInBytes = prng.chance(0.2) ? prng.int(64) : prng.int(40000);
      cmds.push({ ...scsiCmd(cdb, { nexus: nexuses[prng.int(3)], dataOut, expectedInBytes }), taskTag: i + j });
    }
    const results = await Promise.all(cmds.map((c) => lu.execute(c)));
    results.forEach((r, j) => {
      const label = `seed ${seed} iteration ${i + j} cdb ${cmds[j].cdb.toString('hex')}`;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      assert.ok([0x00, 0x02, 0x08, 0x18].includes(r.status), `${label}: status ${r.status}`);
      if (r.status === 0x02) {
        assert.ok(r.sense !== null, `${label}: CHECK CONDITION without sense`);
        assertWellFormedSense(r.sense);
        assert.ok([0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xe].includes(r.sense[2] & 0x0f), `${label}: sense key`);
      } else {
        assert.equal(r.sense, null, label);
      }
      if (r.dataIn !== null) assert.ok(r.dataIn.length <= cmds[j].expectedInBytes, `${label}: ${r.dataIn.length} bytes of data-in`);
    });
  }
  assert.equal(lu.lock.size, 0, 'every range hold was released');
  t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}`);
  assert.ok((statuses.get(0) ?? 0) > ITERATIONS / 20, 'a fair share of commands succeed');
});
