// Portal: a volume's reservation gate that could not be loaded (monitor down at
// start) is retried, so the LU answers NOT READY only until the store answers —
// not until the gateway restarts (review of PR coherence #4).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TesseraError } from '../../stdx/errors.js';
import { MemoryVolumeStore } from '../../volume/memory.js';
import { ScsiLogicalUnit } from '../scsi/lu.js';
import { PrGate } from '../scsi/pr-gate.js';
import { MemoryPrStore } from '../scsi/pr-store-memory.js';
import type { PrRecord } from '../scsi/types.js';
import { Portal } from './portal.js';
import { DEFAULT_TARGET_NAME, emptyIscsiConfig } from './targets.js';

class FlakyStore extends MemoryPrStore {
  failuresLeft = 1;
  override async load(key: string): Promise<PrRecord> {
    if (this.failuresLeft > 0) {
      this.failuresLeft--;
      throw new TesseraError('ERR_TIMEOUT', 'monitor unreachable (test)');
    }
    return super.load(key);
  }
}

test('a reservation gate whose first load failed is retried; IO answers NOT READY until then', async () => {
  const store = new MemoryVolumeStore();
  await store.create('v', 1024 * 1024);
  const prStore = new FlakyStore();
  const logs: string[] = [];
  const portal = new Portal(
    {
      address: { host: '127.0.0.1', port: 3260 },
      tpgt: 1,
      store,
      config: () => emptyIscsiConfig(),
      prStore,
      log: (_l, m) => logs.push(m),
      makeLu: (spec) => {
        const lu = new ScsiLogicalUnit({ lun: spec.lun, volume: spec.volume, clusterId: 't', gate: spec.gate });
        return { lu, queueUnitAttention: (k, a, q) => lu.unitAttentionFor(k, a, q) };
      },
    },
    (s, key, effects) => PrGate.open(s, key, effects),
  );
  const lu = portal.target(DEFAULT_TARGET_NAME)!.lu(0)!;
  const nexus = portal.makeNexus('iqn.2026-11.test:i', Buffer.from([0x80, 1, 2, 3, 4, 5]), DEFAULT_TARGET_NAME);
  const tur = () => lu.execute({ nexus, lun: 0, cdb: Buffer.alloc(6), dataOut: null, expectedInBytes: 0, taskTag: 1 });
  await new Promise((r) => setTimeout(r, 50));
  const first = await tur();
  assert.equal(first.status, 2, 'NOT READY while the reservations are unknown');
  assert.equal(first.sense![2] & 0x0f, 0x02);
  assert.ok(logs.some((l) => /could not be loaded \(retrying/.test(l)), logs.join('\n'));
  let ok = false;
  for (let i = 0; i < 40 && !ok; i++) {
    await new Promise((r) => setTimeout(r, 50));
    ok = (await tur()).status === 0;
  }
  assert.ok(ok, 'the gate was loaded on a retry');
  await portal.close();
});
