// Replayer fed synthetic scan items (no segment store): how a long bad region is
// attributed to groups. The end-to-end cases (real records, torn and flipped
// bytes) are in wal.test.ts and wal-crash.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Replayer, type ReplayResult } from './wal-replay.js';
import { RecordType, checkpointSegmentTag, type RecordHeader, type ScanItem, type WalBody } from './wal-format.js';

const SEGMENT = 'wal-0000000000000001.seg';

function header(type: RecordType, seq: number, group: number, syncedSeq: number): RecordHeader {
  return { type, flags: 0, bodyBytes: 0, group, seq, syncedSeq, bodyCrc: 0 };
}

function record(offsetBytes: number, h: RecordHeader, body: WalBody): ScanItem {
  return { kind: 'record', offsetBytes, header: h, body };
}

function entryRecord(offsetBytes: number, seq: number, group: number, index: number, syncedSeq: number): ScanItem {
  return record(offsetBytes, header(RecordType.Entries, seq, group, syncedSeq), { type: 'entries', entries: [{ term: 1, index, data: new Uint8Array(8) }] });
}

/** A bad span that is exactly one record with an intact header (a body bit flip). */
function flipped(offsetBytes: number, seq: number, group: number): ScanItem {
  return { kind: 'bad', offsetBytes, lengthBytes: 64, header: header(RecordType.Entries, seq, group, seq - 1) };
}

/**
 * An empty checkpoint, one good entry for groups 1 and 2, then `spans` bad spans
 * (made by badAt(i, seq)), then a record whose syncedSeq proves the region had
 * been synced: DAMAGE.
 */
function replayDamage(spans: number, badAt: (i: number, seq: number) => ScanItem): ReplayResult {
  const r = new Replayer(1);
  let off = 0;
  const feed = (item: ScanItem): void => {
    r.feed(item, 0, SEGMENT);
    off += 64;
  };
  feed(record(0, header(RecordType.CkptBegin, 1, checkpointSegmentTag(1), 0), { type: 'checkpointBegin', groupCount: 0, recordCount: 0 }));
  feed(record(off, header(RecordType.CkptEnd, 2, 0, 1), { type: 'checkpointEnd', groupCount: 0, recordCount: 0 }));
  feed(entryRecord(off, 3, 1, 1, 2));
  feed(entryRecord(off, 4, 2, 1, 3));
  let seq = 5;
  for (let i = 0; i < spans; i++) feed(badAt(i, seq++));
  feed(entryRecord(off, seq, 3, 1, seq - 1));
  return r.finish();
}

test('a long run of flipped records is attributed to exactly their groups (folded in as they come)', () => {
  const spans = 200_000;
  const res = replayDamage(spans, (i, seq) => flipped(0, seq, i % 2 === 0 ? 1 : 2));
  assert.equal(res.damage.length, 1);
  const d = res.damage[0];
  assert.deepEqual(d.groups, [1, 2]);
  assert.equal(d.lastGoodSeq, 4);
  assert.equal(d.firstSeqAfter, 5 + spans);
  assert.equal(res.groups.get(1)?.damaged, true);
  assert.equal(res.groups.get(2)?.damaged, true);
  assert.equal(res.groups.get(3)?.damaged, false, 'group 3 only has records after the region');
  assert.equal(res.tornTail, null);
});

test('one span that breaks the chain anywhere in a long region makes it unattributable (all groups)', () => {
  const spans = 50_000;
  for (const breakAt of [0, 1, spans / 2, spans - 1]) {
    // At breakAt: bytes with no readable header, then the flipped records resume at the next seq.
    const res = replayDamage(spans, (i, seq) => (i === breakAt ? { kind: 'bad', offsetBytes: 0, lengthBytes: 64, header: null } : flipped(0, seq, 1)));
    assert.equal(res.damage.length, 1, `break at ${breakAt}`);
    assert.equal(res.damage[0].groups, 'all', `break at ${breakAt}`);
    assert.equal(res.groups.get(3)?.damaged, true, `break at ${breakAt}: unattributable damage makes later groups suspect too`);
  }
});

test('a flipped record whose seq does not follow makes the region unattributable; so does a flipped checkpoint record', () => {
  const skip = replayDamage(10, (i, seq) => flipped(0, i === 7 ? seq + 1 : seq, 1));
  assert.equal(skip.damage[0].groups, 'all');
  const ckpt = replayDamage(10, (i, seq) => (i === 3 ? { kind: 'bad', offsetBytes: 0, lengthBytes: 64, header: header(RecordType.GroupState, seq, 1, seq - 1) } : flipped(0, seq, 1)));
  assert.equal(ckpt.damage[0].groups, 'all');
  const ok = replayDamage(10, (_i, seq) => flipped(0, seq, 2));
  assert.deepEqual(ok.damage[0].groups, [2]);
});

test('damage extent: bounded for a group with an entries or snapshot record after the damage, unknown for one without (a hard state does not bound it); a checkpoint carries it', () => {
  const r = new Replayer(1);
  let seq = 0;
  const feed = (item: ScanItem): void => r.feed(item, 0, SEGMENT);
  const hs = (group: number, term: number) => record(0, header(RecordType.HardState, ++seq, group, seq - 1), { type: 'hardState', hardState: { term, vote: 0, commit: 0 } });
  feed(record(0, header(RecordType.CkptBegin, ++seq, checkpointSegmentTag(1), 0), { type: 'checkpointBegin', groupCount: 1, recordCount: 1 }));
  // Group 9 was damaged before, with nothing bounding it: the mark says so.
  feed(record(0, header(RecordType.GroupState, ++seq, 9, seq - 1), { type: 'groupState', state: { hardState: { term: 2, vote: 0, commit: 0 }, damaged: { maxIndexSeen: 4, maxTermSeen: 2, extentUnknown: true } } }));
  feed(record(0, header(RecordType.CkptEnd, ++seq, 0, seq - 1), { type: 'checkpointEnd', groupCount: 1, recordCount: 1 }));
  for (const g of [1, 2, 3, 4]) feed(entryRecord(0, ++seq, g, 1, seq - 1));
  for (const g of [1, 2, 3, 4]) feed(flipped(0, ++seq, g));
  feed(entryRecord(0, ++seq, 1, 3, seq - 1)); // group 1: an append after the damage bounds it
  feed(hs(2, 5)); // group 2: only a hard state after it
  feed(record(0, header(RecordType.Snapshot, ++seq, 3, seq - 1), { type: 'snapshot', snapshot: { index: 7, term: 1, conf: { voters: [1, 2, 3], learners: [] } } }));
  feed(entryRecord(0, ++seq, 9, 5, seq - 1)); // group 9: its old mark stays unknown
  const res = r.finish();
  assert.deepEqual(res.damage[0].groups, [1, 2, 3, 4]);
  const g = (k: number) => res.groups.get(k)!;
  assert.deepEqual([g(1).damaged, g(1).damageExtentUnknown, g(1).maxIndexSeen], [true, false, 3]);
  assert.deepEqual([g(2).damaged, g(2).damageExtentUnknown], [true, true]);
  assert.deepEqual([g(3).damaged, g(3).damageExtentUnknown, g(3).maxIndexSeen], [true, false, 7]);
  assert.deepEqual([g(4).damaged, g(4).damageExtentUnknown, g(4).maxIndexSeen], [true, true, 1]);
  assert.deepEqual([g(9).damaged, g(9).damageExtentUnknown], [true, true]);
});

test('memory: a stale tail of a million bad spans (a recycled segment) is scanned without keeping anything per span', () => {
  // Before, every span before the first held record was kept for attribution: ~176 bytes
  // each, so a 64-128 MiB stale tail of small records could cost hundreds of MB.
  const spans = 1_000_000;
  const r = new Replayer(1);
  r.feed(record(0, header(RecordType.CkptBegin, 1, checkpointSegmentTag(1), 0), { type: 'checkpointBegin', groupCount: 0, recordCount: 0 }), 0, SEGMENT);
  r.feed(record(64, header(RecordType.CkptEnd, 2, 0, 1), { type: 'checkpointEnd', groupCount: 0, recordCount: 0 }), 0, SEGMENT);
  const before = heapAfterGc();
  for (let i = 0; i < spans; i++) r.feed(flipped(128 + 64 * i, 3 + i, i % 7), 0, SEGMENT);
  const grownBytes = heapAfterGc() - before;
  assert.ok(grownBytes < 16 * 1024 * 1024, `heap grew by ${(grownBytes / 1e6).toFixed(1)} MB while scanning ${spans} bad spans`);
  const res = r.finish();
  assert.deepEqual(res.tornTail, { segment: SEGMENT, offsetBytes: 128, lastGoodSeq: 2, droppedRecords: 0 });
  assert.equal(res.damage.length, 0);
});

function heapAfterGc(): number {
  gc();
  return process.memoryUsage().heapUsed;
}

/** V8's gc(), without starting the test process with --expose-gc. */
const gc: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();
