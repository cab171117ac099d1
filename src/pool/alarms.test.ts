// Capacity alarms (SPEC ENG12, issue 4 part 7): levels at the thresholds, no
// flapping around them (hysteresis), bad thresholds refused, and a pool that
// fills (or loses a member) raises its alarms through onAlarm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CapacityWatch, HYSTERESIS, checkThresholds, type AlarmLevel } from './alarms.js';
import { PoolDevice } from './pool-device.js';
import { SimDevice } from '../device/sim-device.js';
import { Prng } from '../stdx/prng.js';
import { TesseraError } from '../stdx/errors.js';

test('levels at the thresholds, cleared only below them by the hysteresis margin', () => {
  const changes: string[] = [];
  const w = new CapacityWatch({ warning: 0.8, critical: 0.95 }, (level, used, was) => changes.push(`${was}->${level}@${used}`));
  assert.equal(w.update(0.5), 'ok');
  assert.equal(w.update(0.8), 'warning');
  assert.equal(w.update(0.8 - HYSTERESIS / 2), 'warning', 'no flapping just below the threshold');
  assert.equal(w.update(0.96), 'critical');
  assert.equal(w.update(0.94), 'critical');
  assert.equal(w.update(0.9), 'warning');
  assert.equal(w.update(0.1), 'ok');
  assert.deepEqual(changes, ['ok->warning@0.8', 'warning->critical@0.96', 'critical->warning@0.9', 'warning->ok@0.1']);
  for (const bad of [{ warning: 0.9, critical: 0.8 }, { warning: 0, critical: 0.5 }, { warning: 0.5, critical: 1.5 }]) {
    assert.throws(() => checkThresholds(bad), (e: unknown) => e instanceof TesseraError && e.code === 'ERR_INVALID' && /warning < critical/.test(e.message));
  }
});

test('a filling pool raises warning then critical through onAlarm; info shows the level', async () => {
  const KiB = 1024;
  const MiB = 1024 * KiB;
  let n = 0;
  const newUuid = () => (++n).toString(16).padStart(32, '0');
  const devs = Array.from({ length: 3 }, (_, i) => new SimDevice(4 * MiB, new Prng(i + 1)));
  await PoolDevice.format(devs, { protection: 'mirror2', stripBytes: 4 * KiB, chunkDataBytes: 256 * KiB, journalBytes: 512 * KiB, dataZeroed: true, newUuid });
  const alarms: AlarmLevel[] = [];
  const pool = await PoolDevice.open(devs, { rng: new Prng(1), newUuid, thresholds: { warning: 0.5, critical: 0.9 }, onAlarm: (level) => alarms.push(level) });
  assert.equal(pool.capacity().alarm, 'ok');
  const chunk = Buffer.alloc(256 * KiB, 1);
  let off = 0;
  while (pool.capacity().usedFraction < 0.9) {
    await pool.write(chunk, off);
    off += chunk.length;
  }
  assert.deepEqual(alarms, ['warning', 'critical']);
  assert.equal(pool.capacity().alarm, 'critical');
});
