// Tests of PrGate over MemoryPrStore: two gates on one store stand for two gateways
// exporting one volume. Checks that a reservation made through one gateway binds
// IO at the other as soon as PR OUT answers (SPC-4 5.12.1, and the coherence rule of
// docs/iscsi.md §7), that concurrent PR OUTs through both serialize without losing a
// registration, that an unavailable store means 'unavailable' / NOT READY, that unit
// attentions and PREEMPT AND ABORT aborts reach every gateway exactly once and old
// ones are not replayed, and the compare-and-set bound. Also the MemoryPrStore
// contract other tests rely on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TesseraError } from '../../stdx/errors.js';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { PrGate, prUnavailableResult } from './pr-gate.js';
import { MemoryPrStore } from './pr-store-memory.js';
import {
  ASCQ_REGISTRATIONS_PREEMPTED,
  ASCQ_RESERVATIONS_RELEASED,
  ASC_PR_CHANGED,
  OPCODE_PR_IN,
  OPCODE_PR_OUT,
  PR_IN_READ_KEYS,
  PR_OUT_PREEMPT,
  PR_OUT_PREEMPT_AND_ABORT,
  PR_OUT_REGISTER,
  PR_OUT_REGISTER_AND_IGNORE,
  PR_OUT_RELEASE,
  PR_OUT_RESERVE,
  PR_TYPE_EA,
  PR_TYPE_WE,
  PR_TYPE_WE_RO,
} from './pr.js';
import type { Nexus, PrCasResult, PrEffects, PrRecord, PrStore, ScsiResult } from './types.js';
import { SAM_BUSY, SAM_CHECK_CONDITION, SAM_GOOD, SAM_RESERVATION_CONFLICT } from './types.js';

const VOLUME = '42';
const TARGET = 'iqn.2026-01.io.tessera:vol42';

function makeNexus(initiator: string, isid: number, tpgt: number): Nexus {
  const initiatorPort = `${initiator},i,0x${isid.toString(16).padStart(12, '0')}`;
  const targetPort = `${TARGET},t,0x${tpgt.toString(16).padStart(4, '0')}`;
  return { key: `${initiatorPort}|${targetPort}`, initiatorPort, initiatorName: initiator, targetPort, relativeTargetPortId: tpgt + 1 };
}

// Gateway A serves TPGT 1, gateway B serves TPGT 2.
const HOST_1_AT_A = makeNexus('iqn.1994-05.com.example:host1', 1, 1);
const HOST_2_AT_B = makeNexus('iqn.1994-05.com.example:host2', 2, 2);
const HOST_3_AT_B = makeNexus('iqn.1994-05.com.example:host3', 3, 2);

function outCdb(serviceAction: number, type = 0): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = OPCODE_PR_OUT;
  cdb[1] = serviceAction;
  cdb[2] = type;
  cdb.writeUInt32BE(24, 5);
  return cdb;
}

function params(reservationKey: bigint, serviceActionKey: bigint): Buffer {
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(reservationKey, 0);
  p.writeBigUInt64BE(serviceActionKey, 8);
  return p;
}

function readKeysCdb(): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = OPCODE_PR_IN;
  cdb[1] = PR_IN_READ_KEYS;
  cdb.writeUInt16BE(8192, 7);
  return cdb;
}

class RecordingEffects implements PrEffects {
  readonly log: string[] = [];
  unitAttention(nexusKey: string, asc: number, ascq: number): void {
    this.log.push(`ua ${nexusKey} ${asc.toString(16)}/${ascq.toString(16).padStart(2, '0')}`);
  }
  abortNexus(nexusKey: string): void {
    this.log.push(`abort ${nexusKey}`);
  }
}

async function twoGateways(): Promise<{ store: MemoryPrStore; a: PrGate; b: PrGate; fxA: RecordingEffects; fxB: RecordingEffects }> {
  const store = new MemoryPrStore();
  const fxA = new RecordingEffects();
  const fxB = new RecordingEffects();
  const a = await PrGate.open(store, VOLUME, fxA);
  const b = await PrGate.open(store, VOLUME, fxB);
  return { store, a, b, fxA, fxB };
}

function expectGood(r: ScsiResult): void {
  assert.equal(r.status, SAM_GOOD, `status 0x${r.status.toString(16)} sense ${r.sense?.toString('hex')}`);
}

async function register(gate: PrGate, nexus: Nexus, key: bigint): Promise<void> {
  expectGood(await gate.prOut(nexus, outCdb(PR_OUT_REGISTER_AND_IGNORE), params(0n, key)));
}

async function readKeys(gate: PrGate): Promise<{ generation: number; keys: bigint[] }> {
  const r = await gate.prIn(HOST_1_AT_A, readKeysCdb(), 8192);
  expectGood(r);
  const data = r.dataIn as Buffer;
  const count = data.readUInt32BE(4) / 8;
  return { generation: data.readUInt32BE(0), keys: Array.from({ length: count }, (_, i) => data.readBigUInt64BE(8 + 8 * i)) };
}

test('SPC-4 5.12.1 across gateways: RESERVE WE through A binds writes at B as soon as PR OUT answers', async () => {
  const { a, b } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  assert.equal(b.checkAccess(HOST_2_AT_B, 'write'), 'ok');
  const reserve = a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x10n, 0n));
  expectGood(await reserve);
  // No await between the answer and the check: B already has the new record.
  assert.equal(b.checkAccess(HOST_2_AT_B, 'write'), 'conflict');
  assert.equal(b.checkAccess(HOST_2_AT_B, 'read'), 'ok');
  assert.equal(a.checkAccess(HOST_1_AT_A, 'write'), 'ok');
  // Upgrading to EA by another nexus through B conflicts; the reservation holds.
  await register(b, HOST_2_AT_B, 0x20n);
  const conflict = await b.prOut(HOST_2_AT_B, outCdb(PR_OUT_RESERVE, PR_TYPE_EA), params(0x20n, 0n));
  assert.equal(conflict.status, SAM_RESERVATION_CONFLICT);
  expectGood(await a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RELEASE, PR_TYPE_WE), params(0x10n, 0n)));
  assert.equal(b.checkAccess(HOST_2_AT_B, 'write'), 'ok');
});

test('concurrent PR OUT through two gateways serialize: 50 REGISTERs, no registration lost', async (t) => {
  const { store, a, b } = await twoGateways();
  const nexuses = Array.from({ length: 50 }, (_, i) => makeNexus(`iqn.1994-05.com.example:host${i}`, i + 1, i % 2 === 0 ? 1 : 2));
  const results = await Promise.all(nexuses.map((n, i) => register(i % 2 === 0 ? a : b, n, BigInt(1000 + i))));
  assert.equal(results.length, 50);
  t.diagnostic(`${store.casCommits} commits, ${store.casConflicts} lost compare-and-set races`);
  for (const gate of [a, b]) {
    const { generation, keys } = await readKeys(gate);
    assert.equal(generation, 50);
    assert.deepEqual([...keys].sort((x, y) => Number(x - y)), nexuses.map((_, i) => BigInt(1000 + i)));
  }
  // Each gate group-commits what queued up while its previous write was in flight.
  assert.equal(store.peek(VOLUME).rev, store.casCommits);
  assert.ok(store.casCommits < 50, `${store.casCommits} writes for 50 commands`);
});

test('staggered PR OUTs from both gateways (seeded): every REGISTER lands, none answered BUSY', async (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (replay with TESSERA_SEED=${seed})`);
  const prng = new Prng(seed);
  const { store, a, b } = await twoGateways();
  const nexuses = Array.from({ length: 50 }, (_, i) => makeNexus(`iqn.1994-05.com.example:host${i}`, i + 1, 1 + (i % 2)));
  const delays = nexuses.map(() => prng.int(30));
  const results = await Promise.all(
    nexuses.map(async (n, i) => {
      for (let turn = 0; turn < delays[i]; turn++) await new Promise((resolve) => setImmediate(resolve));
      return (i % 2 === 0 ? a : b).prOut(n, outCdb(PR_OUT_REGISTER_AND_IGNORE), params(0n, BigInt(1000 + i)));
    }),
  );
  t.diagnostic(`${store.casCommits} commits, ${store.casConflicts} lost compare-and-set races`);
  results.forEach((r, i) => assert.equal(r.status, SAM_GOOD, `seed ${seed}: command ${i}`));
  const { generation, keys } = await readKeys(b);
  assert.equal(generation, 50, `seed ${seed}`);
  assert.equal(new Set(keys).size, 50, `seed ${seed}`);
});

test('a group commit answers each command as if alone, in order, and ends at a command that raised events', async () => {
  const { store, a, b, fxB } = await twoGateways();
  await register(b, HOST_2_AT_B, 0x20n);
  const commits = store.casCommits;
  const queued = [
    a.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0n, 0x10n)),
    a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x99n, 0n)), // wrong key
    a.prOut(HOST_1_AT_A, outCdb(PR_OUT_PREEMPT, PR_TYPE_WE), params(0x10n, 0x20n)), // removes B: raises a UA
    a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_EA), params(0x10n, 0n)),
    a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x10n, 0n)), // holder, other type
    a.prOut(HOST_3_AT_B, outCdb(PR_OUT_REGISTER), params(0n, 0x30n)),
  ];
  const statuses = (await Promise.all(queued)).map((r) => r.status);
  assert.deepEqual(statuses, [SAM_GOOD, SAM_RESERVATION_CONFLICT, SAM_GOOD, SAM_GOOD, SAM_RESERVATION_CONFLICT, SAM_GOOD]);
  assert.deepEqual(fxB.log, [`ua ${HOST_2_AT_B.key} 2a/05`]);
  assert.deepEqual((await readKeys(b)).keys, [0x10n, 0x30n]);
  assert.equal(b.checkAccess(HOST_3_AT_B, 'read'), 'conflict', 'EA held by A');
  assert.ok(store.casCommits - commits >= 2 && store.casCommits - commits <= 3, `${store.casCommits - commits} writes`);
});

test('an unavailable store: checkAccess says unavailable (even for \'always\'), PR IN and PR OUT answer NOT READY', async () => {
  const { store, a } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  store.setUnavailable(true, VOLUME);
  assert.equal(a.checkAccess(HOST_1_AT_A, 'read'), 'unavailable');
  assert.equal(a.checkAccess(HOST_1_AT_A, 'write'), 'unavailable');
  assert.equal(a.checkAccess(HOST_1_AT_A, 'always'), 'unavailable');
  const notReady = prUnavailableResult();
  const prIn = await a.prIn(HOST_1_AT_A, readKeysCdb(), 8192);
  assert.equal(prIn.status, SAM_CHECK_CONDITION);
  assert.deepEqual(prIn.sense, notReady.sense);
  assert.deepEqual([(prIn.sense as Buffer)[2], (prIn.sense as Buffer)[12], (prIn.sense as Buffer)[13]], [0x02, 0x04, 0x0a]);
  const prOut = await a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x10n, 0n));
  assert.deepEqual(prOut.sense, notReady.sense);
  store.setUnavailable(false, VOLUME);
  assert.equal(a.checkAccess(HOST_1_AT_A, 'write'), 'ok');
  expectGood(await a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x10n, 0n)));
});

test('a gate that was never started (key not loaded) is unavailable, not permissive', () => {
  const gate = new PrGate(new MemoryPrStore(), VOLUME, new RecordingEffects());
  assert.equal(gate.checkAccess(HOST_1_AT_A, 'write'), 'unavailable');
});

test('SPC-4 5.12.11.4: PREEMPT through B delivers REGISTRATIONS PREEMPTED to the preempted nexus at every gateway, once', async () => {
  const { a, b, fxA, fxB } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  await register(b, HOST_2_AT_B, 0x20n);
  expectGood(await a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0x10n, 0n)));
  assert.deepEqual([fxA.log, fxB.log], [[], []]);
  expectGood(await b.prOut(HOST_2_AT_B, outCdb(PR_OUT_PREEMPT, PR_TYPE_WE), params(0x20n, 0x10n)));
  const expected = [`ua ${HOST_1_AT_A.key} ${ASC_PR_CHANGED.toString(16)}/0${ASCQ_REGISTRATIONS_PREEMPTED}`];
  assert.deepEqual(fxA.log, expected, 'gateway A, which hosts the preempted nexus');
  assert.deepEqual(fxB.log, expected, 'gateway B (delivers every event; only A\'s LU will be asked)');
  assert.equal(a.checkAccess(HOST_1_AT_A, 'write'), 'conflict');
});

test('SPC-4 5.12.11.5: PREEMPT AND ABORT aborts the preempted nexus\'s tasks on every gateway', async () => {
  const { a, b, fxA, fxB } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  await register(b, HOST_2_AT_B, 0x20n);
  await register(b, HOST_3_AT_B, 0x30n);
  expectGood(await a.prOut(HOST_1_AT_A, outCdb(PR_OUT_RESERVE, PR_TYPE_WE_RO), params(0x10n, 0n)));
  expectGood(await b.prOut(HOST_2_AT_B, outCdb(PR_OUT_PREEMPT_AND_ABORT, PR_TYPE_EA), params(0x20n, 0x10n)));
  const expected = [
    `ua ${HOST_1_AT_A.key} 2a/05`,
    `abort ${HOST_1_AT_A.key}`,
    `ua ${HOST_3_AT_B.key} 2a/0${ASCQ_RESERVATIONS_RELEASED}`, // type changed WE-RO -> EA
  ];
  assert.deepEqual(fxA.log, expected);
  assert.deepEqual(fxB.log, expected);
});

test('a gate opened later does not replay old events, and delivers new ones', async () => {
  const { store, a, b } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  await register(b, HOST_2_AT_B, 0x20n);
  expectGood(await b.prOut(HOST_2_AT_B, outCdb(PR_OUT_PREEMPT, PR_TYPE_WE), params(0x20n, 0x10n)));
  const fxC = new RecordingEffects();
  const c = await PrGate.open(store, VOLUME, fxC);
  assert.deepEqual(fxC.log, []);
  await register(a, HOST_1_AT_A, 0x11n);
  expectGood(await c.prOut(HOST_1_AT_A, outCdb(PR_OUT_PREEMPT, PR_TYPE_WE), params(0x11n, 0x20n)));
  assert.deepEqual(fxC.log, [`ua ${HOST_2_AT_B.key} 2a/05`]);
  c.close();
  await register(b, HOST_3_AT_B, 0x30n);
  expectGood(await b.prOut(HOST_3_AT_B, outCdb(PR_OUT_PREEMPT, PR_TYPE_WE), params(0x30n, 0x11n)));
  assert.deepEqual(fxC.log, [`ua ${HOST_2_AT_B.key} 2a/05`], 'closed gates hear nothing');
});

test('a command that changes nothing (conflict, PR IN) writes nothing', async () => {
  const { store, a } = await twoGateways();
  await register(a, HOST_1_AT_A, 0x10n);
  const commits = store.casCommits;
  const r = await a.prOut(HOST_2_AT_B, outCdb(PR_OUT_RESERVE, PR_TYPE_WE), params(0n, 0n));
  assert.equal(r.status, SAM_RESERVATION_CONFLICT);
  await readKeys(a);
  assert.equal(store.casCommits, commits);
});

/** A store that always loses the race, or throws, to test the gate's bounds. */
class HostileStore implements PrStore {
  casCalls = 0;
  constructor(private readonly mode: 'lose' | 'throw') {}
  private rec: PrRecord = { rev: 0, state: null };
  current(): PrRecord {
    return this.rec;
  }
  async load(): Promise<PrRecord> {
    return this.rec;
  }
  async compareAndSet(): Promise<PrCasResult> {
    this.casCalls += 1;
    if (this.mode === 'throw') throw new TesseraError('ERR_TIMEOUT', 'monitor did not answer');
    // Someone else always wrote first (a fresh rev, the same empty state).
    this.rec = { rev: this.rec.rev + 1, state: null };
    return { ok: false, current: this.rec };
  }
  subscribe(): () => void {
    return () => {};
  }
  async close(): Promise<void> {}
}

test('compare-and-set: bounded retries, then BUSY; a failing store write is NOT READY', async () => {
  const losing = new HostileStore('lose');
  const gate = await PrGate.open(losing, VOLUME, new RecordingEffects(), { casRetriesMax: 3 });
  const busy = await gate.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0n, 5n));
  assert.equal(busy.status, SAM_BUSY);
  assert.equal(losing.casCalls, 4);
  const throwing = new HostileStore('throw');
  const logs: string[] = [];
  const gate2 = await PrGate.open(throwing, VOLUME, new RecordingEffects(), { log: (_level, msg) => logs.push(msg) });
  const notReady = await gate2.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0n, 5n));
  assert.deepEqual(notReady, prUnavailableResult());
  assert.equal(logs.length, 1);
});

test('a record that is not a PR state makes the gate unavailable (no IO under an unknown state)', async () => {
  const store = new MemoryPrStore();
  await store.load(VOLUME);
  await store.compareAndSet(VOLUME, 0, { generation: 'x' });
  const logs: string[] = [];
  const gate = new PrGate(store, VOLUME, new RecordingEffects(), { log: (_l, m) => logs.push(m) });
  await assert.rejects(gate.start(), (err) => err instanceof TesseraError && err.code === 'ERR_FORMAT');
  assert.equal(gate.checkAccess(HOST_1_AT_A, 'read'), 'unavailable');
  const r = await gate.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0n, 5n));
  assert.deepEqual(r, prUnavailableResult());
  assert.ok(logs.length > 0);
});

test('PR OUTs through one gate run one at a time, in call order', async () => {
  const { a } = await twoGateways();
  const first = a.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0n, 0x10n));
  const second = a.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0x10n, 0x11n));
  const third = a.prOut(HOST_1_AT_A, outCdb(PR_OUT_REGISTER), params(0x11n, 0x12n));
  for (const r of await Promise.all([first, second, third])) expectGood(r);
  assert.deepEqual((await readKeys(a)).keys, [0x12n]);
});

// ---- MemoryPrStore contract ------------------------------------------------------------------------

test('MemoryPrStore: compare-and-set on rev, subscribers see every new record before it resolves, records are frozen', async () => {
  const store = new MemoryPrStore();
  assert.equal(store.current('7'), 'unavailable', 'not loaded yet');
  assert.deepEqual(await store.load('7'), { rev: 0, state: null });
  const seen: number[] = [];
  const unsubscribe = store.subscribe('7', (rec) => seen.push(rec.rev));
  const ok = await store.compareAndSet('7', 0, { n: 1 });
  assert.deepEqual(ok, { ok: true, rev: 1 });
  assert.deepEqual(seen, [1]);
  const stale = await store.compareAndSet('7', 0, { n: 2 });
  assert.deepEqual(stale, { ok: false, current: { rev: 1, state: { n: 1 } } });
  const rec = store.current('7') as PrRecord;
  assert.ok(Object.isFrozen(rec) && Object.isFrozen(rec.state));
  // Two racing writers with the same expected rev: exactly one wins.
  const [x, y] = await Promise.all([store.compareAndSet('7', 1, { n: 3 }), store.compareAndSet('7', 1, { n: 4 })]);
  assert.equal([x.ok, y.ok].filter(Boolean).length, 1);
  assert.deepEqual(seen, [1, 2]);
  unsubscribe();
  await store.compareAndSet('7', 2, { n: 5 });
  assert.deepEqual(seen, [1, 2]);
  await store.close();
  assert.equal(store.current('7'), 'unavailable');
  await assert.rejects(store.load('7'), (err) => err instanceof TesseraError && err.code === 'ERR_CLOSED');
});
