// The iSCSI target end to end over real TCP, in process: our test initiator
// (test/helpers/iscsi-initiator.ts) against IscsiServer + Portal + ScsiLogicalUnit
// over the local engine on a simulated device (so latency can be injected), with
// reservations in a MemoryPrStore. Covers what libiscsi's tools cannot drive:
// R2T sequences, header and data digests, several connections in one session with
// CmdSN ordering across them, task management of a command stuck on a slow
// device, logout, NOP, SendTargets in a Normal session, and a reservation conflict.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as net from 'node:net';
import { SimDevice } from '../../device/sim-device.js';
import { LocalEngine } from '../../engine/engine.js';
import { Prng } from '../../stdx/prng.js';
import { cdb, parseReadKeys, TestInitiator } from '../../../test/helpers/iscsi-initiator.js';
import { ScsiLogicalUnit } from '../scsi/lu.js';
import { PrGate } from '../scsi/pr-gate.js';
import { MemoryPrStore } from '../scsi/pr-store-memory.js';
import { Portal } from './portal.js';
import { IscsiServer } from './server.js';
import { IdlePoll } from '../idle-poll.js';
import { DEFAULT_TARGET_NAME, emptyIscsiConfig } from './targets.js';
import { encodeTextRequest } from './pdu.js';
import { TAG_NONE } from './pdu-types.js';
import { encodeTextKeys } from './text.js';

const MiB = 1024 * 1024;
const BLOCK = 512;
let dev: SimDevice;
let engine: LocalEngine;
let server: IscsiServer;
const errors: string[] = [];
/** The server's idle poller: 5 ms, so that the test client's next command lands inside a window even on a loaded machine. */
const idlePoll = new IdlePoll(5000);

before(async () => {
  dev = new SimDevice(64 * MiB, new Prng(7));
  await LocalEngine.format(dev, { objectSizeBytes: 64 * 1024, dataZeroed: true });
  engine = await LocalEngine.open(dev);
  await engine.create('vol0', 16 * MiB);
  const prStore = new MemoryPrStore();
  const cfg = emptyIscsiConfig();
  server = await IscsiServer.start({
    host: '127.0.0.1',
    port: 0,
    idlePoll,
    log: (level, msg) => {
      if (level === 'error') errors.push(msg);
    },
    portal: (address) =>
      new Portal(
        {
          address,
          tpgt: 1,
          store: engine,
          config: () => cfg,
          prStore,
          makeLu: (spec) => {
            const lu = new ScsiLogicalUnit({ lun: spec.lun, volume: spec.volume, clusterId: 'test', gate: spec.gate, objectSizeBytes: 64 * 1024 });
            return { lu, queueUnitAttention: (k, asc, ascq) => lu.unitAttentionFor(k, asc, ascq) };
          },
        },
        (store, key, effects) => PrGate.open(store, key, effects),
      ),
  });
});

after(async () => {
  await server.close();
  // Every connection's busy was matched by one quiet, whatever ended its tasks (aborts, resets, logouts, teardown).
  assert.equal(idlePoll.busyCount, 0, `idle poller left with ${idlePoll.busyCount} busy connection(s)`);
  await engine.close();
  assert.deepEqual(errors, [], 'no connection may end in an unexpected (non-operating) error');
});

async function session(o: Parameters<TestInitiator['login']>[0] = {}): Promise<TestInitiator> {
  const c = await TestInitiator.connect('127.0.0.1', server.port);
  const r = await c.login({ targetName: DEFAULT_TARGET_NAME, ...o });
  assert.equal(r.statusClass, 0, `login failed ${r.statusClass}/${r.statusDetail}`);
  return c;
}

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('RFC 7143 §11.8: a 1 MiB write without immediate data arrives through R2T sequences and reads back', async () => {
  const c = await session({ keys: [['ImmediateData', 'No'], ['MaxOutstandingR2T', '4']] });
  assert.equal(c.params.get('ImmediateData'), 'No');
  const data = pattern(MiB, 1);
  const w = await c.scsi(0, cdb.write10(0, MiB / BLOCK), { dataOut: data });
  assert.equal(w.status, 0);
  const r = await c.scsi(0, cdb.read10(0, MiB / BLOCK), { readBytes: MiB });
  assert.equal(r.status, 0);
  assert.ok(r.dataIn.equals(data));
  assert.equal(await c.logout(), 0);
  await c.closed;
});

test('idle polling (gateway/idle-poll.ts): every command that leaves the connection idle pokes the poller; the next command counts as a hit', async () => {
  const c = await session();
  const before = { ...idlePoll.stats };
  const commands = 20;
  for (let i = 0; i < commands; i++) {
    const r = await c.scsi(0, cdb.read10(i * 8, 8), { readBytes: 4096 });
    assert.equal(r.status, 0);
  }
  const after = idlePoll.stats;
  assert.ok(after.windows + after.skipped - (before.windows + before.skipped) >= commands, `pokes: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  assert.ok(after.hits - before.hits >= 1, `no command arrived inside a window: ${JSON.stringify(after)}`);
  assert.equal(await c.logout(), 0);
  await c.closed;
});

test('RFC 7143 §11.7: a Data-Out placed in its task buffer and then refused (wrong DataSN) ends the connection and writes nothing', async () => {
  const at = 8 * MiB;
  const before = pattern(MiB, 5); // Data-Out segments of 256 KiB (our MaxRecvDataSegmentLength): four
  const c0 = await session();
  assert.equal((await c0.scsi(0, cdb.write10(at / BLOCK, before.length / BLOCK), { dataOut: before })).status, 0);
  assert.equal(await c0.logout(), 0);
  // The second Data-Out continues at the right offset (so the reader places it in the
  // task buffer) but carries a wrong DataSN: acceptDataOut refuses it afterwards.
  const c = await session({ keys: [['ImmediateData', 'No']] });
  c.dataOutHook = (f, n) => {
    if (n === 1) f.dataSN += 5;
  };
  await assert.rejects(c.scsi(0, cdb.write10(at / BLOCK, before.length / BLOCK), { dataOut: pattern(before.length, 6) }), /closed/);
  await c.closed;
  const r = await session();
  const back = await r.scsi(0, cdb.read10(at / BLOCK, before.length / BLOCK), { readBytes: before.length });
  assert.equal(back.status, 0);
  assert.ok(back.dataIn.equals(before), 'the refused write left the old data');
  assert.equal(await r.logout(), 0);
  errors.length = 0; // the protocol error is logged as such; it is this test's point
});

test('RFC 7143 §13.1: header and data digests (CRC32C) on every full-feature PDU', async () => {
  const c = await session({ headerDigest: true, dataDigest: true });
  assert.equal(c.params.get('HeaderDigest'), 'CRC32C');
  assert.equal(c.params.get('DataDigest'), 'CRC32C');
  const data = pattern(300 * 1024, 2);
  assert.equal((await c.scsi(0, cdb.write10(4096, data.length / BLOCK), { dataOut: data })).status, 0);
  const r = await c.scsi(0, cdb.read10(4096, data.length / BLOCK), { readBytes: data.length });
  assert.ok(r.dataIn.equals(data));
  assert.deepEqual(await c.nop(Buffer.from('ping')), Buffer.from('ping'));
  c.close();
});

test('RFC 7143 §11.18/§11.19: NOP-Out is echoed; SendTargets in a Normal session names this target', async () => {
  const c = await session();
  assert.deepEqual(await c.nop(Buffer.from('hello')), Buffer.from('hello'));
  const pairs = await c.text([['SendTargets', '']]);
  assert.deepEqual(pairs[0], ['TargetName', DEFAULT_TARGET_NAME]);
  assert.match(pairs[1][1], new RegExp(`^127\\.0\\.0\\.1:${server.port},1$`));
  c.close();
});

test('RFC 7143 §4.2.2.1 / §6.1: two connections of one session; commands run in CmdSN order across them', async () => {
  const a = await session({ isid: Buffer.from([0x80, 0, 0, 0, 0, 0x42]) });
  const b = await TestInitiator.connect('127.0.0.1', server.port);
  const joined = await b.login({ targetName: DEFAULT_TARGET_NAME, isid: a.isid, tsih: a.tsih, cid: 1, initiatorName: a.initiatorName });
  assert.equal(joined.statusClass, 0, `second connection refused ${joined.statusClass}/${joined.statusDetail}`);
  assert.equal(b.tsih, a.tsih);
  // ITTs are unique per session, across its connections (RFC 7143 §11.2.1.8?).
  (b as unknown as { nextItt: number }).nextItt = 100_000;
  // b sends CmdSN n+1 before a sends n: b's write must wait for a's.
  const n = (a as unknown as { cmdSN: number }).cmdSN;
  (b as unknown as { cmdSN: number }).cmdSN = n + 1;
  const lba = 8192;
  const second = b.scsi(0, cdb.write10(lba, 1), { dataOut: Buffer.alloc(BLOCK, 0xbb) });
  await sleep(100);
  const probe = await TestInitiator.connect('127.0.0.1', server.port);
  await probe.login({ targetName: DEFAULT_TARGET_NAME });
  const before = await probe.scsi(0, cdb.read10(lba, 1), { readBytes: BLOCK });
  assert.ok(before.dataIn.equals(Buffer.alloc(BLOCK)), 'CmdSN n+1 must not run before CmdSN n arrived');
  const first = a.scsi(0, cdb.write10(lba, 1), { dataOut: Buffer.alloc(BLOCK, 0xaa) });
  assert.equal((await first).status, 0);
  assert.equal((await second).status, 0);
  const after = await probe.scsi(0, cdb.read10(lba, 1), { readBytes: BLOCK });
  assert.ok(after.dataIn.equals(Buffer.alloc(BLOCK, 0xbb)), 'the later CmdSN wrote last');
  // CmdSN is per session: a's next command follows b's.
  (a as unknown as { cmdSN: number }).cmdSN = n + 2;
  // Logging out one connection leaves the other working.
  assert.equal(await b.logout(1), 0);
  await b.closed;
  assert.equal((await a.scsi(0, cdb.testUnitReady())).status, 0);
  a.close();
  probe.close();
});

test('RFC 7143 §11.5.1 + SAM-5 7.2: ABORT TASK of a READ stuck on a slow device answers at once; of a WRITE, once the write settled', async () => {
  const c = await session();
  dev.faults.latencyMs = 1500;
  try {
    const readItt = 0x1000;
    let readAnswered = false;
    void c.scsiWithItt(readItt, 0, cdb.read10(0, 8), { readBytes: 8 * BLOCK }).then(
      () => (readAnswered = true),
      () => undefined,
    );
    await sleep(50);
    const t0 = Date.now();
    assert.equal(await c.tmf(1, 0, readItt, 0), 0, 'function complete');
    assert.ok(Date.now() - t0 < 1000, `the abort of a read must not wait for the device (${Date.now() - t0} ms)`);
    const writeItt = 0x2000;
    void c.scsiWithItt(writeItt, 0, cdb.write10(64, 1), { dataOut: Buffer.alloc(BLOCK, 0x5a) }).catch(() => undefined);
    await sleep(50);
    const t1 = Date.now();
    assert.equal(await c.tmf(1, 0, writeItt, 0), 0);
    assert.ok(Date.now() - t1 >= 1000, 'the abort of a write answers only once the write can no longer land');
    await sleep(1600);
    assert.equal(readAnswered, false, 'an aborted task gets no status');
  } finally {
    dev.faults.latencyMs = 0;
  }
  // The session keeps working; an unknown task tag is "task does not exist".
  assert.equal((await c.scsi(0, cdb.testUnitReady())).status, 0);
  assert.equal(await c.tmf(1, 0, 0xdead, 0), 1);
  c.close();
});

test('SAM-5 7.7: LU RESET aborts the LU’s tasks and raises a unit attention (29/03) on other nexuses', async () => {
  const a = await session();
  const b = await session();
  assert.equal((await b.scsi(0, cdb.testUnitReady())).status, 0);
  assert.equal(await a.tmf(5, 0), 0);
  const r = await b.scsi(0, cdb.testUnitReady());
  assert.equal(r.status, 2);
  assert.equal(r.sense![2] & 0x0f, 0x06, 'UNIT ATTENTION');
  assert.deepEqual([r.sense![12], r.sense![13]], [0x29, 0x03]);
  assert.equal((await b.scsi(0, cdb.testUnitReady())).status, 0, 'the attention is reported once');
  assert.equal(await a.tmf(5, 9), 2, 'LUN does not exist');
  a.close();
  b.close();
});

test('SPC-4 5.9: a Write Exclusive reservation makes another nexus’s write a RESERVATION CONFLICT; reads pass', async () => {
  const holder = await session();
  const other = await session();
  const reg = cdb.prOut(0x00, 0, 0n, 0xabcn);
  assert.equal((await holder.scsi(0, reg.cdb, { dataOut: reg.params })).status, 0);
  const res = cdb.prOut(0x01, 1, 0xabcn, 0n);
  assert.equal((await holder.scsi(0, res.cdb, { dataOut: res.params })).status, 0);
  assert.equal((await other.scsi(0, cdb.write10(100, 1), { dataOut: Buffer.alloc(BLOCK) })).status, 0x18);
  assert.equal((await other.scsi(0, cdb.read10(100, 1), { readBytes: BLOCK })).status, 0);
  assert.equal((await holder.scsi(0, cdb.write10(100, 1), { dataOut: Buffer.alloc(BLOCK) })).status, 0);
  const keys = await other.scsi(0, cdb.prIn(0x00), { readBytes: 8192 });
  assert.deepEqual(parseReadKeys(keys.dataIn).keys, [0xabcn]);
  const clear = cdb.prOut(0x03, 0, 0xabcn, 0n);
  assert.equal((await holder.scsi(0, clear.cdb, { dataOut: clear.params })).status, 0);
  assert.equal((await other.scsi(0, cdb.write10(100, 1), { dataOut: Buffer.alloc(BLOCK) })).status, 0, 'after CLEAR anyone may write');
  holder.close();
  other.close();
});

test('review #9: after ABORT TASK of a running READ its ITT may be reused at once', async () => {
  const c = await session();
  dev.faults.latencyMs = 400;
  try {
    void c.scsiWithItt(0x77, 0, cdb.read10(0, 1), { readBytes: BLOCK }).catch(() => undefined);
    await sleep(30);
    assert.equal(await c.tmf(1, 0, 0x77, 0), 0);
    const again = await c.scsiWithItt(0x77, 0, cdb.testUnitReady());
    assert.equal(again.status, 0);
    assert.equal((await c.scsi(0, cdb.testUnitReady())).status, 0, 'the window keeps moving');
  } finally {
    dev.faults.latencyMs = 0;
  }
  c.close();
});

test('review #4: LU RESET from one session aborts another session’s task even when their ITTs are equal', async () => {
  const a = await session();
  const b = await session();
  assert.equal((await b.scsi(0, cdb.testUnitReady())).status, 0);
  dev.faults.latencyMs = 300;
  let answered = false;
  try {
    void b.scsiWithItt(0x300, 0, cdb.write10(200, 1), { dataOut: Buffer.alloc(BLOCK, 1) }).then(
      () => (answered = true),
      () => undefined,
    );
    await sleep(30);
    (a as unknown as { nextItt: number }).nextItt = 0x300;
    assert.equal(await a.tmf(5, 0), 0);
    await sleep(400);
    assert.equal(answered, false, 'the write was aborted: no status');
  } finally {
    dev.faults.latencyMs = 0;
  }
  a.close();
  b.close();
});

test('review #8: a Logout is answered even while a command waits for a missing CmdSN', async () => {
  const c = await session();
  c.skipCmdSN(1);
  void c.scsi(0, cdb.testUnitReady()).catch(() => undefined); // held: CmdSN n+1 without n
  await sleep(30);
  assert.equal(await c.logout(0), 0);
  await c.closed;
});

test('review #7: a connection closed while a write waits for its data is forgotten (no leak of connection slots)', async () => {
  const c = await session({ keys: [['ImmediateData', 'No']] });
  void c.scsi(0, cdb.write10(0, 128), { dataOut: Buffer.alloc(128 * BLOCK) }).catch(() => undefined);
  await sleep(30);
  const before = server.connectionCount();
  c.close();
  for (let i = 0; i < 50 && server.connectionCount() >= before; i++) await sleep(20);
  assert.ok(server.connectionCount() < before, `connection count stayed at ${server.connectionCount()}`);
});

test('review #11: when the task limit pauses reading, PDUs already received are processed after it lifts', async () => {
  const c = await session();
  dev.faults.latencyMs = 100;
  try {
    // 300 immediate READs (no CmdSN window) arrive together; the target pauses at 256 open tasks.
    const all = Array.from({ length: 300 }, (_, i) => c.scsi(0, cdb.read10(i, 1), { readBytes: BLOCK, immediate: true }));
    const replies = await Promise.all(all);
    assert.equal(replies.filter((r) => r.status === 0).length, 300);
  } finally {
    dev.faults.latencyMs = 0;
  }
  c.close();
});

test('review #3: session reinstatement answers the new login only after the old session’s running write settled', async () => {
  const old = await session();
  dev.faults.latencyMs = 500;
  try {
    void old.scsi(0, cdb.write10(300, 1), { dataOut: Buffer.alloc(BLOCK, 0x3c) }).catch(() => undefined);
    await sleep(50);
    const t0 = Date.now();
    const fresh = await TestInitiator.connect('127.0.0.1', server.port);
    const r = await fresh.login({ targetName: DEFAULT_TARGET_NAME, isid: old.isid, initiatorName: old.initiatorName });
    assert.equal(r.statusClass, 0);
    assert.ok(Date.now() - t0 >= 350, `the login was answered after ${Date.now() - t0} ms, before the old write settled`);
    dev.faults.latencyMs = 0;
    const back = await fresh.scsi(0, cdb.read10(300, 1), { readBytes: BLOCK });
    assert.ok(back.dataIn.equals(Buffer.alloc(BLOCK, 0x3c)), 'the old write landed before the new session started');
    fresh.close();
  } finally {
    dev.faults.latencyMs = 0;
  }
});

test('SPC-4 5.9.11.5 (review of PR coherence #1): PREEMPT AND ABORT answers only after the preempted nexus’s running write settled', async () => {
  const x = await session();
  const y = await session();
  const regY = cdb.prOut(0x00, 0, 0n, 0xbn);
  assert.equal((await y.scsi(0, regY.cdb, { dataOut: regY.params })).status, 0);
  const resY = cdb.prOut(0x01, 1, 0xbn, 0n);
  assert.equal((await y.scsi(0, resY.cdb, { dataOut: resY.params })).status, 0);
  const regX = cdb.prOut(0x00, 0, 0n, 0xan);
  assert.equal((await x.scsi(0, regX.cdb, { dataOut: regX.params })).status, 0);
  dev.faults.latencyMs = 500;
  let yAnswered = false;
  try {
    void y.scsi(0, cdb.write10(400, 1), { dataOut: Buffer.alloc(BLOCK, 0x99) }).then(
      () => (yAnswered = true),
      () => undefined,
    );
    await sleep(50);
    const t0 = Date.now();
    const pa = cdb.prOut(0x05, 1, 0xan, 0xbn);
    assert.equal((await x.scsi(0, pa.cdb, { dataOut: pa.params })).status, 0);
    assert.ok(Date.now() - t0 >= 350, `PREEMPT AND ABORT answered after ${Date.now() - t0} ms, while the preempted write could still land`);
  } finally {
    dev.faults.latencyMs = 0;
  }
  await sleep(100);
  assert.equal(yAnswered, false, 'the preempted write gets no status');
  const clear = cdb.prOut(0x03, 0, 0xan, 0n);
  assert.equal((await x.scsi(0, clear.cdb, { dataOut: clear.params })).status, 0);
  x.close();
  y.close();
});

test('RFC 7143 §11.10: a Text Request with the C bit, or a continuation with a foreign ITT, is rejected', async () => {
  const c = await session();
  const raw = c as unknown as { call(itt: number, kind: string, bhs: Buffer, data: Buffer | null): Promise<unknown>; cmdSN: number; expStatSN: number };
  const data = encodeTextKeys([['SendTargets', '']]);
  const cont = encodeTextRequest({ immediate: true, final: false, cont: true, lun: 0, itt: 0x501, ttt: TAG_NONE, cmdSN: raw.cmdSN, expStatSN: raw.expStatSN }, data.length);
  await assert.rejects(raw.call(0x501, 'text', cont, data), /rejected with reason 0x5/);
  const foreign = encodeTextRequest({ immediate: true, final: true, cont: false, lun: 0, itt: 0x502, ttt: 1234, cmdSN: raw.cmdSN, expStatSN: raw.expStatSN }, 0);
  await assert.rejects(raw.call(0x502, 'text', foreign, null), /rejected with reason 0x9/);
  assert.equal((await c.text([['SendTargets', '']]))[0][1], DEFAULT_TARGET_NAME, 'the connection still works');
  c.close();
});

test('garbage instead of a login closes that connection only; logins with bad names are refused', async () => {
  const good = await session();
  const sock = net.connect({ host: '127.0.0.1', port: server.port });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(Buffer.alloc(48, 0xff));
  await new Promise<void>((r) => sock.once('close', () => r()));
  assert.equal((await good.scsi(0, cdb.testUnitReady())).status, 0);
  const bad = await TestInitiator.connect('127.0.0.1', server.port);
  const r = await bad.login({ targetName: 'iqn.2026-11.io.tessera:nope' });
  assert.deepEqual([r.statusClass, r.statusDetail], [2, 3], 'target not found');
  good.close();
});
