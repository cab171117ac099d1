// Pure tests of the session's command window and of a task's Data-Out
// bookkeeping (RFC 7143 §4.2.2.1 command numbering, §11.7/§11.8 Data-Out and
// R2T), including serial-number wrap-around, with a seeded random test that
// delivers commands in random order and checks they run in CmdSN order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { isTesseraError } from '../../stdx/errors.js';
import type { ScsiCommandPdu } from './pdu-types.js';
import { TAG_NONE } from './pdu-types.js';
import { snAdd, snLe, snLt } from './serial.js';
import { IscsiSession, SessionTable } from './session.js';
import type { SessionLimits } from './session.js';
import { Task } from './task.js';

const LIMITS: SessionLimits = { initialR2t: true, immediateData: true, firstBurstBytes: 65536, maxBurstBytes: 262144, maxOutstandingR2t: 2, maxConnections: 2 };

function newSession(initialCmdSN: number, queueDepth = 8): IscsiSession {
  return new IscsiSession(1, 'Normal', 'iqn.2026-11.test:i', Buffer.alloc(6), null, null, LIMITS, initialCmdSN, queueDepth);
}

function cmd(o: Partial<ScsiCommandPdu> = {}): ScsiCommandPdu {
  return { immediate: false, final: true, read: false, write: true, attr: 1, lun: 0, itt: 1, expectedDataTransferLength: 0, cmdSN: 0, expStatSN: 0, cdb: Buffer.alloc(16), bidiReadLength: null, ...o };
}

test('RFC 1982 serial arithmetic across the 2^32 wrap', () => {
  assert.ok(snLt(0xffffffff, 0));
  assert.ok(snLt(0xfffffff0, 5));
  assert.ok(!snLt(5, 0xfffffff0));
  assert.ok(snLe(7, 7));
  assert.equal(snAdd(0xffffffff, 2), 1);
});

test('RFC 7143 §4.2.2.1: commands run in CmdSN order; out-of-window ones are dropped; immediate ones run at once', () => {
  const s = newSession(0xfffffffe, 8);
  const ran: number[] = [];
  const submit = (sn: number, immediate = false) => s.order(sn, immediate, () => ran.push(sn));
  assert.equal(submit(0), true); // ahead: held (wraps past 2^32)
  assert.equal(submit(0xffffffff), true);
  assert.deepEqual(ran, []);
  assert.equal(submit(0xfffffffe), true);
  assert.deepEqual(ran, [0xfffffffe, 0xffffffff, 0]);
  assert.equal(s.expCmdSN, 1);
  assert.equal(submit(0xfffffffe), false, 'an old CmdSN is dropped');
  assert.equal(submit(1 + 8 + 10), false, 'beyond MaxCmdSN is dropped');
  assert.equal(submit(0x1234, true), true, 'immediate: runs now, takes no CmdSN');
  assert.equal(ran.at(-1), 0x1234);
  assert.equal(s.expCmdSN, 1);
});

test('RFC 7143 §4.2.2.1: MaxCmdSN shrinks with open tasks but is never advertised lower than before', () => {
  const s = newSession(100, 4);
  assert.equal(s.maxCmdSN(), 103);
  for (let i = 0; i < 4; i++) {
    s.order(100 + i, false, () => undefined);
    s.addTask({ task: new Task(cmd({ itt: i }), 0, 0), conn: { cid: 0, close: () => undefined, abortTask: () => undefined }, lu: null });
  }
  assert.equal(s.expCmdSN, 104);
  assert.equal(s.maxCmdSN(), 103, 'a full queue opens no room (MaxCmdSN = ExpCmdSN - 1)');
  for (const t of s.tasksOn(null)) s.removeTask(t.task);
  assert.equal(s.maxCmdSN(), 107);
});

test('review #12: a command at ExpCmdSN beyond the advertised MaxCmdSN is dropped too', () => {
  const s = newSession(0, 2);
  const conn = { cid: 0, close: () => undefined, abortTask: () => undefined };
  for (let i = 0; i < 2; i++) {
    assert.ok(s.order(i, false, () => undefined));
    s.addTask({ task: new Task(cmd({ itt: i }), 0, 0), conn, lu: null });
  }
  assert.equal(s.maxCmdSN(), 1);
  assert.equal(s.order(2, false, () => assert.fail('must not run')), false);
});

test('review #2, RFC 7143 §11.5.1: a CmdSN an ABORT TASK named before it arrived counts as received; its late arrival is dropped', () => {
  const s = newSession(3, 8);
  assert.equal(s.tombstone(5), true);
  const ran: number[] = [];
  s.order(4, false, () => ran.push(4));
  s.order(3, false, () => ran.push(3));
  assert.deepEqual(ran, [3, 4]);
  assert.equal(s.expCmdSN, 6, 'the window moved past the aborted CmdSN');
  assert.equal(s.order(5, false, () => ran.push(5)), false, 'the late command is dropped');
  assert.equal(s.tombstone(100), false, 'outside the window');
  assert.ok(s.order(6, false, () => ran.push(6)));
  assert.deepEqual(ran, [3, 4, 6]);
});

test('a seeded random arrival order always runs commands in CmdSN order', () => {
  const seed = seedFromEnv();
  console.log(`session.test: TESSERA_SEED=${seed}`);
  const rng = new Prng(seed);
  for (let round = 0; round < 200; round++) {
    const start = rng.int(2) === 0 ? rng.int(0x100000000) >>> 0 : (0xffffffff - rng.int(20)) >>> 0;
    const n = 1 + rng.int(16);
    const s = newSession(start, 16);
    const order = Array.from({ length: n }, (_, i) => snAdd(start, i));
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const ran: number[] = [];
    for (const sn of order) assert.ok(s.order(sn, false, () => ran.push(sn)), `seed ${seed} round ${round}`);
    assert.deepEqual(ran, Array.from({ length: n }, (_, i) => snAdd(start, i)), `seed ${seed} round ${round}`);
    assert.equal(s.heldCount(), 0);
  }
});

test('SessionTable: TSIHs are non-zero, unique, and run out at the session limit', () => {
  const t = new SessionTable(3);
  const seen = new Set<number>();
  for (let i = 0; i < 3; i++) {
    const tsih = t.allocateTsih();
    assert.ok(tsih > 0 && !seen.has(tsih));
    seen.add(tsih);
    t.add(new IscsiSession(tsih, 'Normal', 'i', Buffer.from([i, 0, 0, 0, 0, 0]), null, null, LIMITS, 0, 8));
  }
  assert.equal(t.allocateTsih(), 0);
  assert.equal(t.find('i', Buffer.from([1, 0, 0, 0, 0, 0]), null)?.isid[0], 1);
});

test('RFC 7143 §11.8: R2Ts cover the buffer once, at most MaxOutstandingR2T open, each ≤ MaxBurstLength', () => {
  const task = new Task(cmd({ expectedDataTransferLength: 1_000_000 }), 1_000_000, 1_000_000);
  assert.equal(task.begin(Buffer.alloc(4096, 1), LIMITS), null);
  let ttt = 10;
  const first = task.nextR2ts(LIMITS, () => ttt++);
  assert.deepEqual(first.map((r) => [r.offsetBytes, r.lengthBytes, r.r2tSN]), [[4096, 262144, 0], [266240, 262144, 1]]);
  assert.deepEqual(task.nextR2ts(LIMITS, () => ttt++), [], 'no more than MaxOutstandingR2T');
  // Data for the first R2T in two PDUs; then the next R2T opens.
  task.acceptDataOut({ final: false, lun: 0, itt: 1, ttt: first[0].ttt, expStatSN: 0, dataSN: 0, bufferOffset: 4096 }, Buffer.alloc(131072, 2));
  assert.equal(task.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: first[0].ttt, expStatSN: 0, dataSN: 1, bufferOffset: 4096 + 131072 }, Buffer.alloc(131072, 2)), first[0].ttt);
  const next = task.nextR2ts(LIMITS, () => ttt++);
  assert.deepEqual(next.map((r) => [r.offsetBytes, r.r2tSN]), [[528384, 2]]);
  assert.equal(task.complete(), false);
});

test('RFC 7143 §11.7: wrong DataSN, offset, excess data or a missing F bit are protocol errors', () => {
  const mk = () => {
    const t = new Task(cmd({ expectedDataTransferLength: 8192 }), 8192, 8192);
    t.begin(Buffer.alloc(0), LIMITS);
    const [r] = t.nextR2ts(LIMITS, () => 7);
    return { t, r };
  };
  const bad = (f: (x: ReturnType<typeof mk>) => void) => assert.throws(() => f(mk()), (e) => isTesseraError(e, 'ERR_PROTOCOL'));
  bad(({ t, r }) => t.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 1, bufferOffset: 0 }, Buffer.alloc(8192)));
  bad(({ t, r }) => t.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 0, bufferOffset: 512 }, Buffer.alloc(8192)));
  bad(({ t, r }) => t.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, Buffer.alloc(8704)));
  bad(({ t, r }) => t.acceptDataOut({ final: false, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, Buffer.alloc(8192)));
  bad(({ t }) => t.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: 99, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, Buffer.alloc(8192)));
  bad(({ t }) => t.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: TAG_NONE, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, Buffer.alloc(8192)));
});

test('RFC 7143 §11.3.4: unsolicited Data-Out (InitialR2T=No, F=0) fills FirstBurstLength before any R2T', () => {
  const limits = { ...LIMITS, initialR2t: false, firstBurstBytes: 16384 };
  const task = new Task(cmd({ final: false, expectedDataTransferLength: 65536 }), 65536, 65536);
  assert.equal(task.begin(Buffer.alloc(4096, 1), limits), null);
  assert.deepEqual(task.nextR2ts(limits, () => 1), [], 'R2Ts wait for the unsolicited burst');
  task.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: TAG_NONE, expStatSN: 0, dataSN: 0, bufferOffset: 4096 }, Buffer.alloc(12288, 2));
  const r2ts = task.nextR2ts(limits, () => 5);
  assert.deepEqual(r2ts.map((r) => [r.offsetBytes, r.lengthBytes]), [[16384, 49152]]);
  assert.equal(task.begin(Buffer.alloc(70000), limits) !== null, true, 'immediate data beyond FirstBurstLength is refused');
});

test('review #1: a write larger than the buffering limit keeps the prefix the CDB can use, never nothing', () => {
  const task = new Task(cmd({ expectedDataTransferLength: 20_000 }), 20_000, 8192);
  task.begin(Buffer.alloc(4096, 1), LIMITS);
  const [r] = task.nextR2ts(LIMITS, () => 3);
  task.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 0, bufferOffset: 4096 }, Buffer.alloc(15_904, 2));
  assert.ok(task.complete());
  const d = task.dataOut()!;
  assert.equal(d.length, 8192);
  assert.ok(d.subarray(0, 4096).equals(Buffer.alloc(4096, 1)) && d.subarray(4096).equals(Buffer.alloc(4096, 2)));
});

test('a write whose data arrives in one piece keeps that buffer (no copy)', () => {
  const data = Buffer.alloc(4096, 9);
  const task = new Task(cmd({ expectedDataTransferLength: 4096 }), 4096, 4096);
  task.begin(data, LIMITS);
  assert.ok(task.complete());
  assert.equal(task.dataOut(), data);
});

test('Data-Out placed before acceptance: in-order segments get a view of the task buffer, accepted without a second copy', () => {
  const task = new Task(cmd({ expectedDataTransferLength: 32768 }), 32768, 32768);
  assert.equal(task.begin(Buffer.alloc(0), LIMITS), null);
  const [r] = task.nextR2ts(LIMITS, () => 9);
  assert.equal(task.dataOutTarget(4096, 4096), null, 'out of order: not placed');
  assert.equal(task.dataOutTarget(0, 0), null, 'an empty segment: not placed');
  const t0 = task.dataOutTarget(0, 16384)!;
  assert.equal(t0.length, 16384);
  t0.fill(3);
  task.acceptDataOut({ final: false, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 0, bufferOffset: 0 }, t0);
  assert.equal(task.dataOutTarget(0, 16384), null, 'already received');
  assert.equal(task.dataOutTarget(16384, 16385), null, 'beyond the kept bytes');
  const t1 = task.dataOutTarget(16384, 16384)!;
  assert.equal(t1.buffer, t0.buffer, 'the same task buffer');
  t1.fill(4);
  assert.equal(task.acceptDataOut({ final: true, lun: 0, itt: 1, ttt: r.ttt, expStatSN: 0, dataSN: 1, bufferOffset: 16384 }, t1), r.ttt);
  assert.ok(task.complete());
  const d = task.dataOut()!;
  assert.ok(d.subarray(0, 16384).equals(Buffer.alloc(16384, 3)) && d.subarray(16384).equals(Buffer.alloc(16384, 4)));
  // A segment carrying the whole write keeps the received buffer instead (no copy at all).
  const whole = new Task(cmd({ expectedDataTransferLength: 4096 }), 4096, 4096);
  whole.begin(Buffer.alloc(0), LIMITS);
  assert.equal(whole.dataOutTarget(0, 4096), null);
  // An aborted task places nothing.
  const aborted = new Task(cmd({ expectedDataTransferLength: 8192 }), 8192, 8192);
  aborted.begin(Buffer.alloc(0), LIMITS);
  aborted.aborted = true;
  assert.equal(aborted.dataOutTarget(0, 4096), null);
});
