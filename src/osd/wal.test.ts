// Tests of the OSD write-ahead log: record format (golden bytes, codec, scanner),
// round trips through close/reopen, truncation and snapshot semantics, group
// commit (one append + one sync for many groups, coalescing), rollover,
// checkpoints, recovery on real files, mid-log corruption (damage reported, never
// silently truncated), torn tails, fsync/append failures, limits. The seeded
// crash test is wal-crash.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import { SimSegmentStore } from '../device/sim-segments.js';
import { NodeSegmentStore } from '../io/node/segment-store.js';
import type { Segment, SegmentStore } from '../io/segments.js';
import { Prng, seedFromEnv } from '../stdx/prng.js';
import { isTesseraError } from '../stdx/errors.js';
import type { Entry, HardState, SnapshotMeta } from '../raft/types.js';
import {
  ENTRY_DATA_BYTES_MAX,
  FLAG_MORE,
  RECORD_HEADER_BYTES,
  RecordType,
  checkpointBelongsTo,
  checkpointSegmentTag,
  countsBody,
  decodeBody,
  entriesBody,
  groupStateBody,
  hardStateBody,
  makeRecord,
  parseHeader,
  scanSegment,
  sealRecord,
  snapshotBody,
  type ScanItem,
} from './wal-format.js';
import { afterTurns, Wal, type RecoveredGroup, type WalOptions } from './wal.js';

const SELF = 9;
const CONF = { voters: [1, 2, 3], learners: [] };

function ent(index: number, term: number, text = `i${index}t${term}`): Entry {
  return { index, term, data: Buffer.from(text) };
}

function sealed(rec: ReturnType<typeof makeRecord>, syncedSeq: number): Buffer {
  const out: Uint8Array[] = [];
  sealRecord(rec, syncedSeq, out);
  return Buffer.concat(out);
}

function newStore(seed = 1, jitterTurns = 0): SimSegmentStore {
  const s = new SimSegmentStore(new Prng(seed));
  s.faults.jitterTurns = jitterTurns;
  return s;
}

async function open(store: SegmentStore, opts: Partial<WalOptions> = {}) {
  return Wal.open(store, { selfId: SELF, ...opts });
}

/** A comparable view of a recovered group. */
function view(g: RecoveredGroup | undefined) {
  if (!g) return undefined;
  return {
    hardState: g.hardState,
    snapshot: g.snapshot,
    entries: g.entries.map((e) => `${e.index}/${e.term}${e.type === 'conf' ? 'c' : ''}:${Buffer.from(e.data).toString('hex')}`),
    damaged: g.damaged,
  };
}

function entriesView(es: Entry[]): string[] {
  return es.map((e) => `${e.index}/${e.term}${e.type === 'conf' ? 'c' : ''}:${Buffer.from(e.data).toString('hex')}`);
}

async function items(store: SegmentStore, name: string, windowBytes?: number): Promise<ScanItem[]> {
  const seg = await store.open(name);
  const out: ScanItem[] = [];
  await scanSegment(seg, (it) => void out.push(it), windowBytes);
  await seg.close();
  return out;
}

/** Segment name and offset of the record with `seq`. */
async function locate(store: SimSegmentStore, seq: number): Promise<{ name: string; offsetBytes: number; bodyBytes: number }> {
  for (const name of store.names()) {
    for (const it of await items(store, name)) {
      if (it.kind === 'record' && it.header.seq === seq) return { name, offsetBytes: it.offsetBytes, bodyBytes: it.header.bodyBytes };
    }
  }
  throw new Error(`no record ${seq}`);
}

// ---------------------------------------------------------------- format

test('record format: golden bytes of one HARD_STATE record', () => {
  const rec = makeRecord(RecordType.HardState, 0, 7, 5, [hardStateBody({ term: 2, vote: 1, commit: 4 })]);
  const bytes = sealed(rec, 3);
  const golden =
    '5457414c' + // magic "TWAL"
    '01' + // version
    '02' + // type HARD_STATE
    '0000' + // flags
    '18000000' + // bodyBytes 24
    '07000000' + // group 7
    '0500000000000000' + // seq 5
    '0300000000000000' + // syncedSeq 3
    '90909926' + // bodyCrc
    'b5e629e7' + // headerCrc
    '020000000000000001000000000000000400000000000000'; // term 2, vote 1, commit 4
  assert.equal(bytes.toString('hex'), golden);
  // The CRCs, recomputed with the native library directly.
  assert.equal(bytes.readUInt32LE(32), nativeCrc32c(bytes.subarray(40)) >>> 0);
  assert.equal(bytes.readUInt32LE(36), nativeCrc32c(bytes.subarray(0, 36)) >>> 0);
  const h = parseHeader(bytes, 0);
  assert.deepEqual(h, { type: RecordType.HardState, flags: 0, bodyBytes: 24, group: 7, seq: 5, syncedSeq: 3, bodyCrc: 0x26999090 });
  assert.deepEqual(decodeBody(h!, bytes.subarray(40)), { type: 'hardState', hardState: { term: 2, vote: 1, commit: 4 } });
});

test('record codec: every record type round-trips, padded to 8 bytes; chained CRCs equal one CRC', () => {
  const snap: SnapshotMeta = { index: 40, term: 3, conf: { voters: [1, 2, 3], learners: [7] } };
  const big = Buffer.alloc(10_000, 0xab); // referenced, not copied
  const entries: Entry[] = [ent(41, 3), { index: 42, term: 4, data: big }, { index: 43, term: 4, data: Buffer.from('cc'), type: 'conf' }];
  const cases: Array<[ReturnType<typeof makeRecord>, unknown]> = [
    [makeRecord(RecordType.Entries, FLAG_MORE, 3, 10, entriesBody(entries, 0, 3)), { type: 'entries', entries }],
    [makeRecord(RecordType.Snapshot, 0, 3, 11, [snapshotBody(snap)]), { type: 'snapshot', snapshot: snap }],
    [makeRecord(RecordType.DropGroup, 0, 3, 12, []), { type: 'dropGroup' }],
    [makeRecord(RecordType.AwaitSnapshot, 0, 3, 12, []), { type: 'awaitSnapshot' }],
    [
      makeRecord(RecordType.GroupState, 0, 3, 19, groupStateBody({ hardState: { term: 2, vote: 1, commit: 7 }, snapshot: snap, awaitingSnapshot: true })),
      { type: 'groupState', state: { hardState: { term: 2, vote: 1, commit: 7 }, snapshot: snap, awaitingSnapshot: true } },
    ],
    [makeRecord(RecordType.SyncMark, 0, 0, 13, []), { type: 'syncMark' }],
    [makeRecord(RecordType.CkptBegin, 0, 0, 14, [countsBody(2, 5)]), { type: 'checkpointBegin', groupCount: 2, recordCount: 5 }],
    [makeRecord(RecordType.CkptEnd, 0, 0, 15, [countsBody(2, 5)]), { type: 'checkpointEnd', groupCount: 2, recordCount: 5 }],
    [
      makeRecord(RecordType.GroupState, 0, 3, 16, groupStateBody({ hardState: { term: 4, vote: 2, commit: 40 }, snapshot: snap, damaged: { maxIndexSeen: 50, maxTermSeen: 5 } })),
      { type: 'groupState', state: { hardState: { term: 4, vote: 2, commit: 40 }, snapshot: snap, damaged: { maxIndexSeen: 50, maxTermSeen: 5 } } },
    ],
    [makeRecord(RecordType.GroupState, 0, 3, 17, groupStateBody({ hardState: { term: 1, vote: 0, commit: 0 } })), { type: 'groupState', state: { hardState: { term: 1, vote: 0, commit: 0 } } }],
    [
      makeRecord(RecordType.GroupState, 0, 3, 18, groupStateBody({ hardState: { term: 4, vote: 2, commit: 9 }, damaged: { maxIndexSeen: 12, maxTermSeen: 4, extentUnknown: true } })),
      { type: 'groupState', state: { hardState: { term: 4, vote: 2, commit: 9 }, damaged: { maxIndexSeen: 12, maxTermSeen: 4, extentUnknown: true } } },
    ],
  ];
  for (const [rec, want] of cases) {
    const bytes = sealed(rec, rec.seq - 1);
    assert.equal(bytes.length % 8, 0);
    assert.equal(bytes.length, rec.totalBytes);
    const h = parseHeader(bytes, 0)!;
    assert.ok(h, `type ${rec.header[5]}`);
    const body = bytes.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + h.bodyBytes);
    assert.equal(nativeCrc32c(body) >>> 0, h.bodyCrc, 'chained CRC over parts equals the CRC of the whole body');
    const got = decodeBody(h, Buffer.from(body));
    assert.deepEqual(JSON.parse(JSON.stringify(got)), JSON.parse(JSON.stringify(want)));
  }
});

test('record codec: a GROUP_STATE flag "damage extent unknown" without "damaged", or an unknown flag, is rejected', () => {
  const body = Buffer.concat(groupStateBody({ hardState: { term: 1, vote: 0, commit: 0 } }));
  const h = { type: RecordType.GroupState, flags: 0, bodyBytes: body.length, group: 3, seq: 2, syncedSeq: 1, bodyCrc: 0 } as const;
  assert.ok(decodeBody(h, body));
  for (const flags of [4, 16]) {
    const bad = Buffer.from(body);
    bad[0] = flags;
    assert.equal(decodeBody(h, bad), null, `flags ${flags}`);
  }
});

test('record codec: headers are rejected for bad magic, version, CRC, type, oversized length or unsafe seq; bodies never read past their length', () => {
  const good = sealed(makeRecord(RecordType.HardState, 0, 1, 9, [hardStateBody({ term: 1, vote: 1, commit: 0 })]), 8);
  assert.ok(parseHeader(good, 0));
  const mutate = (at: number, fn: (b: Buffer) => void, fixCrc: boolean): Buffer => {
    const b = Buffer.from(good);
    fn(b);
    if (fixCrc) b.writeUInt32LE(nativeCrc32c(b.subarray(0, 36)) >>> 0, 36);
    void at;
    return b;
  };
  assert.equal(parseHeader(mutate(0, (b) => (b[0] ^= 1), true), 0), null, 'magic');
  assert.equal(parseHeader(mutate(4, (b) => (b[4] = 2), true), 0), null, 'version');
  assert.equal(parseHeader(mutate(12, (b) => (b[12] ^= 1), false), 0), null, 'header CRC');
  assert.equal(parseHeader(mutate(5, (b) => (b[5] = 99), true), 0), null, 'unknown type');
  assert.equal(parseHeader(mutate(8, (b) => b.writeUInt32LE(0xffffffff, 8), true), 0), null, 'length over the limit, rejected before any allocation');
  assert.equal(parseHeader(mutate(16, (b) => b.writeUInt32LE(0x00200000, 20), true), 0), null, 'seq beyond 2^53');
  assert.equal(parseHeader(mutate(24, (b) => b.writeUInt32LE(9, 24), true), 0), null, 'syncedSeq not below seq');
  assert.equal(parseHeader(good.subarray(0, 39), 0), null, 'short buffer');
  // Entries body claiming more entries or data than it holds.
  const body = Buffer.concat(entriesBody([ent(1, 1, 'abcdef')], 0, 1));
  const h = { type: RecordType.Entries, flags: 0, bodyBytes: body.length, group: 1, seq: 2, syncedSeq: 1, bodyCrc: 0 } as const;
  assert.ok(decodeBody(h, body));
  const lying = Buffer.from(body);
  lying.writeUInt32LE(1000, 0);
  assert.equal(decodeBody(h, lying), null, 'count beyond the body');
  const longData = Buffer.from(body);
  longData.writeUInt32LE(7, 8 + 20);
  assert.equal(decodeBody(h, longData), null, 'data length beyond the body');
  assert.equal(decodeBody(h, body.subarray(0, body.length - 1)), null, 'truncated body');
  assert.equal(decodeBody({ ...h, type: RecordType.HardState }, Buffer.alloc(23)), null, 'short hard state');
  const snap = snapshotBody({ index: 1, term: 1, conf: CONF });
  snap.writeUInt32LE(100, 16);
  assert.equal(decodeBody({ ...h, type: RecordType.Snapshot }, snap), null, 'conf count beyond the body');
});

test('scanner: valid records, a bad body under an intact header, junk, and a record cut by the end, through windows of any size', async () => {
  const store = newStore();
  const seg = await store.create('x');
  const r1 = sealed(makeRecord(RecordType.HardState, 0, 1, 1, [hardStateBody({ term: 1, vote: 1, commit: 0 })]), 0);
  const r2 = sealed(makeRecord(RecordType.Entries, 0, 2, 2, entriesBody([ent(1, 1, 'x'.repeat(300))], 0, 1)), 1);
  const r3 = sealed(makeRecord(RecordType.DropGroup, 0, 3, 3, []), 2);
  const r4 = sealed(makeRecord(RecordType.HardState, 0, 4, 4, [hardStateBody({ term: 2, vote: 1, commit: 0 })]), 3);
  r2[RECORD_HEADER_BYTES + 50] ^= 0x10; // body flip: header still intact
  const junk = Buffer.alloc(24, 0x5a);
  await seg.append([r1, r2, junk, r3, r4.subarray(0, 50)]);
  for (const windowBytes of [40, 64, 100, 1000, 1 << 20]) {
    const got = (await items(store, 'x', windowBytes)).map((i) => (i.kind === 'record' ? `rec@${i.offsetBytes}:${i.header.seq}` : `bad@${i.offsetBytes}+${i.lengthBytes}:${i.header?.seq ?? '-'}`));
    const o2 = r1.length;
    const o3 = o2 + r2.length;
    const o4 = o3 + junk.length;
    const o5 = o4 + r3.length;
    assert.deepEqual(got, [`rec@0:1`, `bad@${o2}+${r2.length}:2`, `bad@${o3}+${junk.length}:-`, `rec@${o4}:3`, `bad@${o5}+50:4`], `window ${windowBytes}`);
  }
});

// ---------------------------------------------------------------- behaviour

test('round trip: entries, hard states, snapshots and drops of many groups survive close and reopen', async () => {
  const store = newStore(2, 3);
  const first = await open(store);
  assert.equal(first.groups.size, 0);
  const wal = first.wal;
  const conf: Entry = { index: 3, term: 2, data: Buffer.from('conf'), type: 'conf' };
  for (let g = 0; g < 20; g++) {
    wal.entries(g, [ent(1, 1), ent(2, 1)]);
    wal.hardState(g, { term: 1, vote: 1, commit: 2 });
  }
  await wal.commit();
  wal.entries(5, [conf, ent(4, 2)]);
  wal.hardState(5, { term: 2, vote: 3, commit: 4 });
  wal.snapshot(6, { index: 2, term: 1, conf: CONF });
  wal.dropGroup(7);
  wal.entries(0xffffffff, [ent(1, 1)]);
  await wal.commit();
  await wal.close();
  await assert.rejects(wal.commit(), (err) => isTesseraError(err, 'ERR_CLOSED'));

  const { wal: wal2, groups, damage, tornTail } = await open(store);
  assert.deepEqual(damage, []);
  assert.equal(tornTail, null);
  assert.equal(groups.size, 20);
  assert.deepEqual([...groups.keys()], [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0xffffffff]);
  assert.deepEqual(view(groups.get(0)), { hardState: { term: 1, vote: 1, commit: 2 }, snapshot: undefined, entries: entriesView([ent(1, 1), ent(2, 1)]), damaged: false });
  assert.deepEqual(view(groups.get(5)), { hardState: { term: 2, vote: 3, commit: 4 }, snapshot: undefined, entries: entriesView([ent(1, 1), ent(2, 1), conf, ent(4, 2)]), damaged: false });
  assert.deepEqual(view(groups.get(6)), { hardState: { term: 1, vote: 1, commit: 2 }, snapshot: { index: 2, term: 1, conf: CONF }, entries: [], damaged: false });
  assert.equal(groups.get(5)!.maxIndexSeen, 4);
  assert.equal(groups.get(5)!.maxTermSeen, 2);
  // The reopened log accepts more and keeps everything.
  wal2.entries(5, [ent(5, 2)]);
  await wal2.commit();
  await wal2.close();
  const third = await open(store);
  assert.deepEqual(third.groups.get(5)!.entries.map((e) => e.index), [1, 2, 3, 4, 5]);
  await third.wal.close();
});

test('entries drop a conflicting suffix; a snapshot keeps the log after it only if the log matches there', async () => {
  const store = newStore(3);
  const { wal } = await open(store);
  wal.entries(1, [ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)]);
  wal.entries(1, [ent(3, 2, 'new3')]); // drops 3 and 4
  wal.entries(2, [ent(1, 1), ent(2, 1), ent(3, 1)]);
  wal.snapshot(2, { index: 2, term: 1, conf: CONF }); // matches: keeps 3
  wal.entries(3, [ent(1, 1), ent(2, 1), ent(3, 1)]);
  wal.snapshot(3, { index: 2, term: 5, conf: CONF }); // does not match: drops everything
  wal.entries(3, [ent(3, 5)]);
  wal.entries(4, [ent(1, 1)]);
  wal.snapshot(4, { index: 10, term: 3, conf: CONF }); // beyond the log
  await wal.commit();
  await wal.close();
  const { groups, wal: w2 } = await open(store);
  assert.deepEqual(groups.get(1)!.entries.map((e) => `${e.index}/${e.term}`), ['1/1', '2/1', '3/2']);
  assert.equal(Buffer.from(groups.get(1)!.entries[2].data).toString(), 'new3');
  assert.equal(groups.get(1)!.maxIndexSeen, 4, 'maxIndexSeen counts the overwritten entries too');
  assert.deepEqual(groups.get(2)!.entries.map((e) => e.index), [3]);
  assert.deepEqual(groups.get(3)!.entries.map((e) => `${e.index}/${e.term}`), ['3/5']);
  assert.equal(groups.get(3)!.snapshot!.term, 5);
  assert.deepEqual(groups.get(4)!.entries, []);
  assert.equal(groups.get(4)!.snapshot!.index, 10);
  // The writer refuses a gap or an overwrite of the snapshot (programmer errors).
  assert.throws(() => w2.entries(4, [ent(12, 3)]), /do not follow/);
  assert.throws(() => w2.entries(4, [ent(10, 3)]), /do not follow/);
  await w2.close();
});

/** Counts what the Wal asks of its store. */
class CountingStore implements SegmentStore {
  appends: number[] = [];
  syncs = 0;
  constructor(private readonly inner: SegmentStore) {}
  list(): Promise<string[]> {
    return this.inner.list();
  }
  async create(name: string): Promise<Segment> {
    return this.wrap(await this.inner.create(name));
  }
  async open(name: string): Promise<Segment> {
    return this.wrap(await this.inner.open(name));
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  syncDir(): Promise<void> {
    return this.inner.syncDir();
  }
  private wrap(seg: Segment): Segment {
    return {
      name: seg.name,
      get sizeBytes() {
        return seg.sizeBytes;
      },
      append: (bufs) => {
        this.appends.push(bufs.reduce((n, b) => n + b.length, 0));
        return seg.append(bufs);
      },
      sync: () => {
        this.syncs++;
        return seg.sync();
      },
      seal: () => {
        this.syncs++;
        return seg.seal();
      },
      read: (o, l) => seg.read(o, l),
      close: () => seg.close(),
    };
  }
}

test('group commit: 200 concurrent commits from 100 groups cost one append and one sync', async () => {
  const counting = new CountingStore(newStore(4, 5));
  const { wal } = await open(counting);
  wal.entries(0, [ent(1, 1)]); // give the log a current segment first
  await wal.commit();
  counting.appends = [];
  counting.syncs = 0;
  const commits: Array<Promise<void>> = [];
  for (let g = 1; g <= 100; g++) {
    wal.entries(g, [ent(1, 1), ent(2, 1)]);
    commits.push(wal.commit());
    wal.hardState(g, { term: 1, vote: 1, commit: 2 });
    commits.push(wal.commit());
  }
  await Promise.all(commits);
  // When they resolve: exactly one append (all 200 records) and one sync.
  assert.equal(counting.syncs, 1);
  assert.equal(counting.appends.filter((b) => b > 40).length, 1, `appends ${JSON.stringify(counting.appends)}`);
  await wal.close();
  // The only other append is the unsynced 40-byte SYNC_MARK written once the log went idle.
  assert.ok(counting.appends.length <= 2 && counting.appends.slice(1).every((b) => b === 40), `appends ${JSON.stringify(counting.appends)}`);
  assert.equal(counting.syncs, 2, 'one sync for the batch, one for the seal at close (which makes the mark durable)');
  const { groups } = await open(counting);
  assert.equal(groups.size, 101);
});

test('commits made while a batch is in flight coalesce into exactly one more batch', async () => {
  const counting = new CountingStore(newStore(5, 20));
  const { wal } = await open(counting, { syncMarks: false });
  counting.appends = [];
  counting.syncs = 0;
  wal.entries(1, [ent(1, 1)]);
  const firstCommit = wal.commit();
  await Promise.resolve();
  await Promise.resolve(); // the first batch is now in flight
  const late: Array<Promise<void>> = [];
  for (let g = 2; g < 50; g++) {
    wal.entries(g, [ent(1, 1)]);
    late.push(wal.commit());
  }
  await Promise.all([firstCommit, ...late]);
  assert.equal(counting.appends.length, 2, 'one append for the first commit, one for every commit that arrived during it');
  assert.equal(counting.syncs, 2);
  assert.equal(await wal.commit(), undefined, 'nothing queued: resolves at once');
  assert.equal(counting.syncs, 2);
  await wal.close();
});

test('gatherTurn: a batch that follows directly on the previous one waits one turn, so records queued during that turn join it; an idle log writes at once', async () => {
  const counting = new CountingStore(newStore(6, 20));
  const turns: Array<() => void> = [];
  const { wal } = await open(counting, { syncMarks: false, gatherTurn: (resume) => turns.push(resume) });
  counting.appends = [];
  counting.syncs = 0;
  // Idle log: the first batch is written without a turn.
  wal.entries(1, [ent(1, 1)]);
  const first = wal.commit();
  await Promise.resolve();
  await Promise.resolve(); // the first batch is in flight
  wal.entries(2, [ent(1, 1)]);
  const second = wal.commit(); // arrives during the first batch: the log is busy
  await first;
  assert.equal(wal.stats.gatherTurns, 0);
  assert.equal(counting.appends.length, 1);
  await waitUntil(() => turns.length === 1);
  assert.equal(counting.appends.length, 1, 'the writer waits for its turn before taking the queue');
  // What arrives during the turn joins the same batch.
  wal.entries(3, [ent(1, 1)]);
  const third = wal.commit();
  turns.shift()!();
  await Promise.all([second, third]);
  assert.equal(wal.stats.gatherTurns, 1);
  assert.equal(counting.appends.length, 2, 'groups 2 and 3 in one append');
  assert.equal(counting.syncs, 2);
  // Idle again: the next commit is written without a turn.
  wal.entries(4, [ent(1, 1)]);
  await wal.commit();
  assert.equal(turns.length, 0);
  assert.equal(wal.stats.gatherTurns, 1);
  assert.equal(counting.appends.length, 3);
  await wal.close();
});

test('afterTurns: resumes after exactly count turns of its defer', () => {
  const deferred: Array<() => void> = [];
  const defer = (run: () => void): void => void deferred.push(run);
  for (const count of [1, 2, 3]) {
    let resumed = 0;
    afterTurns(count, defer)(() => resumed++);
    for (let turn = 1; turn <= count; turn++) {
      assert.equal(resumed, 0, `count ${count}: not before turn ${turn}`);
      assert.equal(deferred.length, 1, 'one turn pending at a time');
      deferred.shift()!();
    }
    assert.equal(resumed, 1, `count ${count}: resumed after ${count} turns`);
    assert.equal(deferred.length, 0);
  }
  assert.throws(() => afterTurns(0, defer), /positive integer/);
  assert.throws(() => afterTurns(1.5, defer), /positive integer/);
});

test('gatherTurn of two turns: records queued in either turn join the next batch', async () => {
  const counting = new CountingStore(newStore(7, 20));
  const turns: Array<() => void> = [];
  const { wal } = await open(counting, { syncMarks: false, gatherTurn: afterTurns(2, (run) => void turns.push(run)) });
  counting.appends = [];
  wal.entries(1, [ent(1, 1)]);
  const first = wal.commit();
  await Promise.resolve();
  await Promise.resolve(); // the first batch is in flight
  wal.entries(2, [ent(1, 1)]);
  const second = wal.commit();
  await first;
  await waitUntil(() => turns.length === 1);
  wal.entries(3, [ent(1, 1)]); // during the first turn
  const third = wal.commit();
  turns.shift()!();
  assert.equal(turns.length, 1, 'a second turn before the batch');
  assert.equal(counting.appends.length, 1);
  wal.entries(4, [ent(1, 1)]); // during the second turn: what one turn would have left for the batch after
  const fourth = wal.commit();
  turns.shift()!();
  await Promise.all([second, third, fourth]);
  assert.equal(counting.appends.length, 2, 'groups 2, 3 and 4 in one append');
  assert.equal(wal.stats.gatherTurns, 1, 'one gather (of two turns)');
  await wal.close();
});

async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise<void>((r) => setImmediate(r));
  assert.ok(cond(), 'condition never held');
}

test('rollover: segments roll at segmentBytesMax and every record is recovered across them', async () => {
  const store = newStore(6, 2);
  const { wal } = await open(store, { segmentBytesMax: 2048 });
  for (let i = 1; i <= 60; i++) {
    wal.entries(i % 3, [ent(Math.floor((i - 1) / 3) + 1, 1, 'x'.repeat(100))]);
    await wal.commit();
  }
  await wal.close();
  assert.ok(store.names().length > 3, `segments: ${store.names().join(' ')}`);
  const { groups, damage, wal: w2 } = await open(store, { segmentBytesMax: 2048 });
  assert.deepEqual(damage, []);
  assert.ok(w2.bytesSinceCheckpoint() > 60 * 100, 'after a restart, the log still to replay counts towards the next checkpoint');
  for (let g = 0; g < 3; g++) assert.deepEqual(groups.get(g)!.entries.map((e) => e.index), Array.from({ length: 20 }, (_, k) => k + 1));
  await w2.close();
});

test('awaiting a snapshot: an AWAIT_SNAP record marks its group until a later snapshot record; a checkpoint carries the mark; other groups are untouched', async () => {
  const store = newStore(11, 2);
  const { wal } = await open(store);
  for (const g of [1, 2]) {
    wal.entries(g, [ent(1, 1), ent(2, 1)]);
    wal.hardState(g, { term: 1, vote: 1, commit: 2 });
  }
  wal.awaitSnapshot(1);
  await wal.commit();
  await wal.close();
  let r = await open(store);
  assert.equal(r.groups.get(1)!.awaitingSnapshot, true);
  assert.deepEqual(r.groups.get(1)!.entries.map((e) => e.index), [1, 2], 'the log is kept: it still votes');
  assert.equal(r.groups.get(2)!.awaitingSnapshot, false);
  // Carried by a checkpoint (the OSD passes the flag), then cleared by the snapshot record of an install.
  await r.wal.checkpoint(
    new Map([
      [1, { hardState: { term: 1, vote: 1, commit: 2 }, snapshot: { index: 0, term: 0, conf: CONF }, entries: [ent(1, 1), ent(2, 1)], awaitingSnapshot: true }],
      [2, { hardState: { term: 1, vote: 1, commit: 2 }, snapshot: { index: 2, term: 1, conf: CONF }, entries: [] }],
    ]),
  );
  await r.wal.close();
  r = await open(store);
  assert.equal(r.groups.get(1)!.awaitingSnapshot, true, 'carried by the checkpoint');
  assert.equal(r.groups.get(2)!.awaitingSnapshot, false);
  r.wal.snapshot(1, { index: 9, term: 2, conf: CONF });
  await r.wal.commit();
  await r.wal.close();
  r = await open(store);
  assert.equal(r.groups.get(1)!.awaitingSnapshot, false, 'installed');
  assert.deepEqual(r.groups.get(1)!.snapshot?.index, 9);
  await r.wal.close();
});

test('checkpoint: older segments are removed, bytesSinceCheckpoint resets, and recovery starts from it', async () => {
  const store = newStore(7, 2);
  const { wal } = await open(store, { segmentBytesMax: 1500 });
  for (let i = 1; i <= 30; i++) {
    wal.entries(1, [ent(i, 1, 'y'.repeat(80))]);
    wal.hardState(1, { term: 1, vote: 1, commit: i });
    await wal.commit();
  }
  assert.ok(store.names().length > 3);
  assert.ok(wal.bytesSinceCheckpoint() > 3000);
  // The object store applied up to 25: the checkpoint keeps 26..30. Group 2 is carried as damaged.
  const snap = { index: 25, term: 1, conf: CONF };
  const log1 = Array.from({ length: 5 }, (_, k) => ent(26 + k, 1, 'y'.repeat(80)));
  wal.entries(1, [ent(31, 1, 'queued before the checkpoint')]); // queued before: committed first, superseded by the state below
  const ckpt = wal.checkpoint(
    new Map([
      [1, { hardState: { term: 1, vote: 1, commit: 30 }, snapshot: snap, entries: [...log1, ent(31, 1, 'queued before the checkpoint')] }],
      [2, { hardState: { term: 4, vote: SELF, commit: 3 }, snapshot: { index: 3, term: 2, conf: CONF }, entries: [], damaged: { maxIndexSeen: 9, maxTermSeen: 4 } }],
    ]),
  );
  wal.entries(1, [ent(32, 2, 'after')]); // queued after: lands after the checkpoint
  const after = wal.commit();
  await ckpt;
  await after;
  assert.equal(store.names().length, 1, `segments left: ${store.names().join(' ')}`);
  assert.ok(wal.bytesSinceCheckpoint() < 200);
  await wal.close();
  const { groups, wal: w2 } = await open(store);
  const g1 = groups.get(1)!;
  assert.deepEqual(g1.snapshot, snap);
  assert.deepEqual(g1.entries.map((e) => e.index), [26, 27, 28, 29, 30, 31, 32]);
  assert.equal(g1.damaged, false);
  const g2 = groups.get(2)!;
  assert.deepEqual({ damaged: g2.damaged, maxIndexSeen: g2.maxIndexSeen, maxTermSeen: g2.maxTermSeen, hs: g2.hardState }, { damaged: true, maxIndexSeen: 9, maxTermSeen: 4, hs: { term: 4, vote: SELF, commit: 3 } });
  // A checkpoint without the mark clears it.
  await w2.checkpoint(new Map([[2, { hardState: g2.hardState, snapshot: g2.snapshot, entries: [] }]]));
  await w2.close();
  const third = await open(store);
  assert.deepEqual([...third.groups.keys()], [2]);
  assert.equal(third.groups.get(2)!.damaged, false);
  await third.wal.close();
});

test('a checkpoint copied to the start of another segment (a recycled block) never starts replay or replaces the log, even with a higher seq', async () => {
  // The copy: a checkpoint of another log with a much higher sequence number, as
  // stale bytes of a recycled block could put it at the unsynced start of a new
  // segment. Before CKPT_BEGIN named its segment, open started replay at the copy
  // (the highest complete checkpoint) and removed the real log.
  const other = newStore(11);
  const { wal: donor } = await open(other);
  for (let round = 0; round < 4; round++) {
    for (let i = 1; i <= 10; i++) {
      donor.entries(7, [ent(round * 10 + i, 1)]);
      await donor.commit();
    }
    await donor.checkpoint(new Map([[7, { hardState: { term: 1, vote: 1, commit: round * 10 + 10 }, snapshot: { index: round * 10 + 10, term: 1, conf: CONF }, entries: [] }]]));
  }
  const donorSegment = other.names().at(-1)!;
  const copy = other.contents(donorSegment);
  const copied = (await items(other, donorSegment)).find((it) => it.kind === 'record')!;
  assert.ok(copied.kind === 'record' && copied.header.type === RecordType.CkptBegin && copied.header.group !== 0, 'the donor checkpoint names its segment');
  await donor.close();

  const store = newStore(12);
  const { wal } = await open(store);
  for (let i = 1; i <= 3; i++) {
    wal.entries(1, [ent(i, 1)]);
    wal.hardState(1, { term: 1, vote: 1, commit: i });
    await wal.commit();
  }
  await wal.close();
  const last = store.names().at(-1)!;
  const alien = `wal-${(parseInt(last.slice(4, 20), 16) + 1).toString(16).padStart(16, '0')}.seg`;
  assert.notEqual(alien, donorSegment, 'the copy sits in a segment other than its own');
  const seg = await store.create(alien);
  await seg.append([copy]);
  await seg.sync();
  await seg.close();
  await store.syncDir();
  assert.ok((copied as { header: { seq: number } }).header.seq > 10, 'the copy has the higher seq');

  const res = await open(store);
  // Replay starts at the real checkpoint and keeps every acknowledged entry. The copy's
  // later records claim (syncedSeq) that seqs past the real log's end were synced, so
  // recovery reports damage (repair from peers) rather than call them a torn tail; a
  // log identity in every record would be needed to tell a foreign record apart.
  // Nothing of the copy is presented as valid.
  const g1 = res.groups.get(1)!;
  assert.deepEqual(g1.entries.map((e) => e.index), [1, 2, 3], 'the real log was replayed, not the copy');
  assert.equal(g1.hardState.commit, 3);
  for (const [key, g] of res.groups) {
    if (key !== 1) assert.ok(g.damaged && g.entries.length === 0 && g.snapshot === undefined, `group ${key} of the copy is not presented as valid`);
  }
  assert.ok(res.damage.length > 0);
  await res.wal.close();
  // The copy alone at a segment's start is refused too: a log whose only checkpoint is a copy cannot start anywhere.
  const lone = newStore(13);
  const s2 = await lone.create(alien);
  await s2.append([copy]);
  await s2.sync();
  await s2.close();
  await lone.syncDir();
  await assert.rejects(open(lone), (err: unknown) => isTesseraError(err) && err.code === 'ERR_FORMAT');
});

test('checkpoint segment tags: never 0, wrap at 2^32 - 1, and a tag of 0 (a log written before tags) is accepted anywhere', () => {
  assert.equal(checkpointSegmentTag(1), 1);
  assert.equal(checkpointSegmentTag(0xffffffff), 0xffffffff);
  assert.equal(checkpointSegmentTag(0x100000000), 1);
  assert.throws(() => checkpointSegmentTag(0));
  assert.equal(checkpointBelongsTo(0, 5), true);
  assert.equal(checkpointBelongsTo(5, 5), true);
  assert.equal(checkpointBelongsTo(4, 5), false);
});

test('recovery after restart on real files (NodeSegmentStore): rollover, checkpoint, reopen', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-wal-'));
  try {
    const store = await NodeSegmentStore.openDir(dir);
    const { wal } = await open(store, { segmentBytesMax: 4096 });
    const big = Buffer.alloc(ENTRY_DATA_BYTES_MAX, 7);
    wal.entries(1, [{ index: 1, term: 1, data: big }]);
    for (let i = 2; i <= 50; i++) {
      wal.entries(1, [ent(i, 1)]);
      wal.entries(2, [ent(i - 1, 1)]);
      await wal.commit();
    }
    await wal.checkpoint(new Map([[1, { hardState: { term: 1, vote: 1, commit: 40 }, snapshot: { index: 40, term: 1, conf: CONF }, entries: Array.from({ length: 10 }, (_, k) => ent(41 + k, 1)) }]]));
    wal.entries(1, [ent(51, 2)]);
    wal.hardState(1, { term: 2, vote: 2, commit: 45 });
    await wal.commit();
    // The process exits (its IO done) without a checkpoint; a new one opens the directory.
    await wal.close();
    const reopened = await open(await NodeSegmentStore.openDir(dir));
    assert.deepEqual([...reopened.groups.keys()], [1]);
    const g1 = reopened.groups.get(1)!;
    assert.deepEqual(g1.hardState, { term: 2, vote: 2, commit: 45 });
    assert.deepEqual(g1.entries.map((e) => e.index), Array.from({ length: 11 }, (_, k) => 41 + k));
    reopened.wal.entries(1, [ent(52, 2)]);
    await reopened.wal.commit();
    await reopened.wal.close();
    const again = await open(store);
    assert.equal(again.groups.get(1)!.entries.at(-1)!.index, 52);
    assert.deepEqual(again.damage, []);
    await again.wal.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('recycled segment files (NodeSegmentStore spares): the log recovers whole, every rolled-over segment ends at its last record, stale records after the end are dropped as a tail', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-wal-'));
  try {
    const store = await NodeSegmentStore.openDir(dir, { blockingIo: true, spareSegmentsMax: 3 });
    const { wal } = await open(store, { segmentBytesMax: 8192 });
    let index = 0;
    const write = async (n: number, bytes: number) => {
      for (let i = 0; i < n; i++) {
        index++;
        wal.entries(1, [ent(index, 1, `${index}`.padEnd(bytes, '.'))]);
        await wal.commit();
      }
    };
    // Three checkpoint cycles: the segments of each are removed into spares, which the
    // next reuses. Then smaller records: segments overshoot 8 KiB less than before, so
    // the recycled files they roll over from still hold stale records after their end.
    for (let cycle = 0; cycle < 3; cycle++) {
      await write(40, 2500);
      await wal.checkpoint(new Map([[1, { hardState: { term: 1, vote: 1, commit: index }, snapshot: { index: index - 5, term: 1, conf: CONF }, entries: Array.from({ length: 5 }, (_, k) => ent(index - 4 + k, 1, `${index - 4 + k}`.padEnd(700, '.'))) }]]));
    }
    await write(60, 700); // rolls over into recycled files, the last one left with stale bytes after the log's end
    await wal.close();
    assert.ok(store.recycledCreates >= 3, `recycled creates: ${store.recycledCreates}`);
    const names = await store.list();
    assert.ok(names.length >= 3, `segments: ${names.join(' ')}`);
    const reopened = await open(await NodeSegmentStore.openDir(dir, { spareSegmentsMax: 3 }));
    assert.deepEqual(reopened.damage, []);
    // A rolled-over segment holding stale bytes after its last record would read as a
    // region cut by the next segment's start (an abandoned tail): seal() prevents that.
    assert.equal(reopened.abandonedRegions, 0, 'no stale bytes between segments');
    const g1 = reopened.groups.get(1)!;
    assert.equal(g1.entries.at(-1)!.index, index);
    assert.deepEqual(g1.entries.map((e) => e.index), Array.from({ length: g1.entries.length }, (_, k) => index - g1.entries.length + 1 + k));
    assert.ok(Buffer.from(g1.entries.at(-1)!.data).toString().startsWith(`${index}.`));
    assert.ok(reopened.tornTail === null || reopened.tornTail.segment === names.at(-1), 'stale bytes only after the newest segment\'s last record');
    reopened.wal.entries(1, [ent(index + 1, 2)]);
    await reopened.wal.commit();
    await reopened.wal.close();
    const again = await open(await NodeSegmentStore.openDir(dir, { spareSegmentsMax: 3 }));
    assert.deepEqual(again.damage, []);
    assert.equal(again.groups.get(1)!.entries.at(-1)!.index, index + 1);
    await again.wal.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Passes through to a SimSegmentStore; the first create() served by a spare makes the next syncDir() fail. */
class FailDirSyncAfterRecycle implements SegmentStore {
  fired = false;
  constructor(readonly inner: SimSegmentStore) {}
  list(): Promise<string[]> {
    return this.inner.list();
  }
  async create(name: string): Promise<Segment> {
    const before = this.inner.counters.recycles;
    const seg = await this.inner.create(name);
    if (!this.fired && this.inner.counters.recycles > before) {
      this.inner.faults.failNextSyncDir = true;
      this.fired = true;
    }
    return seg;
  }
  open(name: string): Promise<Segment> {
    return this.inner.open(name);
  }
  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }
  syncDir(): Promise<void> {
    return this.inner.syncDir();
  }
}

test('recycling: a crash that undoes the rename of a spare never lets the dead life\'s records continue the next life\'s log (session 12 review)', async () => {
  // Life A rolls into a recycled file; the directory sync of its new name fails and
  // the power goes. If A had written (and fdatasynced) records into the file before
  // the name was durable, the cut would keep them under the spare's name; life B
  // takes the same spare for the same segment name and the same sequence numbers,
  // writes one record of the same size, and its unsynced tail is lost: A's second
  // record then sits exactly where B's log ends and was replayed as B's next entry.
  const sim = new SimSegmentStore(new Prng(42), { spareSegmentsMax: 2 });
  const store = new FailDirSyncAfterRecycle(sim);
  const opts = { segmentBytesMax: 1024 };
  const a = (await open(store, opts)).wal;
  let index = 0;
  const data = (who: string, i: number) => `${who}${i}`.padEnd(120, '.');
  for (let i = 0; i < 12; i++) {
    a.entries(1, [ent(++index, 1, data('a', index))]);
    await a.commit();
  }
  await a.checkpoint(new Map([[1, { hardState: { term: 1, vote: 1, commit: index }, snapshot: { index, term: 1, conf: CONF }, entries: [] }]]));
  assert.ok(sim.spareNames().length > 0, 'the checkpoint left spares');
  const base = index;
  // Write until a roll lands on a spare: that batch's directory sync fails.
  while (!store.fired) {
    a.entries(1, [ent(index + 1, 1, data('A', index + 1))]);
    a.entries(1, [ent(index + 2, 1, data('A', index + 2))]);
    a.entries(1, [ent(index + 3, 1, data('A', index + 3))]);
    const done = await a.commit().then(() => true, () => false);
    if (!done) break;
    index += 3;
  }
  assert.ok(store.fired && a.failed !== null, 'the roll onto a spare failed');
  const committed = index;
  const simB = sim.powerCut({ names: 'revert', tails: 'drop' }).store;
  const b = await open(simB, opts);
  assert.deepEqual(b.damage, []);
  assert.equal(b.groups.get(1)!.entries.at(-1)?.index ?? b.groups.get(1)!.snapshot!.index, committed);
  b.wal.entries(1, [ent(committed + 1, 2, data('B', committed + 1))]);
  await b.wal.commit();
  // B's commit is acknowledged; its later unsynced bytes (the sync mark) are lost.
  const c = await open(simB.powerCut({ names: 'apply', tails: 'drop' }).store, opts);
  assert.deepEqual(c.damage, []);
  const entries = c.groups.get(1)!.entries;
  assert.equal(entries.at(-1)!.index, committed + 1, `recovered up to ${entries.at(-1)!.index}: records of the dead life were replayed after B's`);
  assert.equal(Buffer.from(entries.at(-1)!.data).toString(), data('B', committed + 1));
  assert.ok(committed >= base);
  await c.wal.close();
});

test('a large append is split into pieces that recover atomically; a maximal entry round-trips', async () => {
  const store = newStore(8);
  const { wal } = await open(store);
  const es = Array.from({ length: 40 }, (_, k) => ({ index: k + 1, term: 1, data: Buffer.alloc(100_000, k) }));
  wal.entries(1, es);
  wal.entries(2, [{ index: 1, term: 1, data: Buffer.alloc(ENTRY_DATA_BYTES_MAX, 9) }]);
  await wal.commit();
  await wal.close();
  const pieces = (await items(store, store.names()[0])).filter((i) => i.kind === 'record' && i.header.type === RecordType.Entries && i.header.group === 1);
  assert.ok(pieces.length >= 4, `pieces ${pieces.length}`);
  const { groups, wal: w2 } = await open(store);
  assert.equal(groups.get(1)!.entries.length, 40);
  assert.ok(groups.get(1)!.entries.every((e, k) => e.data.length === 100_000 && e.data[0] === k));
  assert.equal(groups.get(2)!.entries[0].data.length, ENTRY_DATA_BYTES_MAX);
  await w2.close();
});

// ---------------------------------------------------------------- damage and tears

/** A log of three batches over groups 1..3, idle afterwards. Returns the seqs of batch 2's records. */
async function threeBatches(store: SimSegmentStore, syncMarks = true) {
  const { wal } = await open(store, { syncMarks });
  const seqs: Record<string, number> = {};
  wal.entries(1, [ent(1, 1), ent(2, 1)]);
  wal.entries(2, [ent(1, 1)]);
  wal.hardState(1, { term: 1, vote: 1, commit: 0 });
  wal.hardState(3, { term: 1, vote: 0, commit: 0 });
  await wal.commit();
  seqs.g1e = wal.entries(1, [ent(3, 2), ent(4, 2)]);
  seqs.g2e = wal.entries(2, [ent(2, 1)]);
  seqs.g1hs = wal.hardState(1, { term: 2, vote: 1, commit: 2 });
  await wal.commit();
  seqs.g1late = wal.entries(1, [ent(5, 3)]);
  seqs.g2late = wal.hardState(2, { term: 3, vote: 0, commit: 1 });
  seqs.g3late = wal.entries(3, [ent(1, 1)]);
  await wal.commit();
  await wal.close();
  return seqs;
}

test('mid-log bit flip in a body: damage reported for that group only, its log kept up to the damage, maxima from later records', async () => {
  const store = newStore(10);
  const seqs = await threeBatches(store);
  const at = await locate(store, seqs.g1e);
  store.flipBit(at.name, at.offsetBytes + RECORD_HEADER_BYTES + 10, 3);
  const { groups, damage, tornTail, wal } = await open(store);
  assert.equal(tornTail, null);
  assert.equal(damage.length, 1);
  assert.deepEqual({ ...damage[0], reason: undefined }, { segment: at.name, offsetBytes: at.offsetBytes, lastGoodSeq: seqs.g1e - 1, firstSeqAfter: seqs.g1e + 1, groups: [1], reason: undefined });
  const g1 = groups.get(1)!;
  assert.equal(g1.damaged, true);
  assert.deepEqual(g1.entries.map((e) => e.index), [1, 2], 'only the entries before the damage, contiguous; 5 (after it) is not presented');
  assert.equal(g1.maxIndexSeen, 5);
  assert.equal(g1.maxTermSeen, 3);
  // Highest term seen is 3 (entry 5) but the last hard state is term 2: the vote in term 3 is unknown.
  assert.deepEqual(g1.hardState, { term: 3, vote: SELF, commit: 2 });
  // Other groups are intact, including their records after the damage.
  assert.equal(groups.get(2)!.damaged, false);
  assert.deepEqual(groups.get(2)!.entries.map((e) => e.index), [1, 2]);
  assert.deepEqual(groups.get(2)!.hardState, { term: 3, vote: 0, commit: 1 });
  assert.equal(groups.get(3)!.damaged, false);
  // Writing on and reopening: the damage is still reported, never turned into a silent truncation.
  wal.entries(2, [ent(3, 3)]);
  await wal.commit();
  await wal.close();
  const again = await open(store);
  assert.deepEqual(again.damage.map((d) => [d.lastGoodSeq, d.firstSeqAfter, d.groups]), [[seqs.g1e - 1, seqs.g1e + 1, [1]]]);
  assert.equal(again.groups.get(1)!.damaged, true);
  assert.deepEqual(again.groups.get(2)!.entries.map((e) => e.index), [1, 2, 3]);
  await again.wal.close();
});

test('mid-log header flip: the bytes cannot be attributed, so every group is damaged; the vote is kept only when certain', async () => {
  const store = newStore(11);
  const seqs = await threeBatches(store);
  const at = await locate(store, seqs.g2e);
  store.flipBit(at.name, at.offsetBytes + 13, 0); // the group field: the header CRC fails
  const { groups, damage, wal } = await open(store);
  assert.equal(damage.length, 1);
  assert.equal(damage[0].groups, 'all');
  assert.equal(damage[0].lastGoodSeq, seqs.g2e - 1);
  assert.equal(damage[0].firstSeqAfter, seqs.g2e + 1);
  for (const g of [1, 2, 3]) assert.equal(groups.get(g)!.damaged, true, `group ${g}`);
  assert.deepEqual(groups.get(1)!.entries.map((e) => e.index), [1, 2, 3, 4]);
  assert.deepEqual(groups.get(2)!.entries.map((e) => e.index), [1], 'entry 2 was in the damaged record');
  assert.equal(groups.get(2)!.maxIndexSeen, 1, 'nothing after the damage names a higher index of group 2');
  // Group 2's last hard state (after the damage) is term 3 with no vote: certain, kept.
  assert.deepEqual(groups.get(2)!.hardState, { term: 3, vote: 0, commit: 1 });
  // Group 3: hard state term 1 with no vote before the damage; the damaged record might have set one.
  assert.deepEqual(groups.get(3)!.hardState, { term: 1, vote: SELF, commit: 0 });
  assert.deepEqual(groups.get(3)!.entries, [], 'group 3 entry 1 came after the damage');
  assert.equal(groups.get(3)!.maxIndexSeen, 1);
  await wal.close();
});

test('a flip in the last synced batch is caught by the sync mark; without the mark it reads as a torn tail (documented limit)', async () => {
  for (const syncMarks of [true, false]) {
    const store = newStore(12);
    const seqs = await threeBatches(store, syncMarks);
    const at = await locate(store, seqs.g1late);
    store.flipBit(at.name, at.offsetBytes + RECORD_HEADER_BYTES + 4, 1);
    const { groups, damage, tornTail, wal } = await open(store);
    if (syncMarks) {
      assert.deepEqual(damage.map((d) => d.groups), [[1]]);
      assert.equal(tornTail, null);
      assert.equal(groups.get(1)!.maxIndexSeen, 4, 'the damaged record itself is unreadable');
    } else {
      assert.deepEqual(damage, []);
      assert.equal(tornTail!.lastGoodSeq, seqs.g1late - 1);
      assert.equal(tornTail!.droppedRecords, 2);
    }
    await wal.close();
  }
});

test('torn tail: a power cut before the sync drops the unsynced batch silently; acknowledged batches stay', async () => {
  let torn = 0;
  for (let seed = 100; seed < 160; seed++) {
    const store = newStore(seed);
    const { wal } = await open(store);
    for (let i = 1; i <= 3; i++) {
      wal.entries(1, [ent(i, 1, 'z'.repeat(700))]);
      await wal.commit();
    }
    store.faults.failNextSync = true; // keep the next batch unsynced without failing the test's premise
    wal.entries(1, [ent(4, 1, 'q'.repeat(3000))]);
    wal.entries(2, [ent(1, 1, 'q'.repeat(3000))]);
    await wal.commit().catch(() => undefined);
    const cut = store.powerCut();
    torn += cut.torn;
    const { groups, damage, tornTail, wal: w2 } = await open(cut.store);
    assert.deepEqual(damage, [], `seed ${seed}`);
    const idx = groups.get(1)!.entries.map((e) => e.index);
    assert.ok(idx.length === 3 || idx.length === 4, `seed ${seed}: ${idx}`);
    if (idx.length === 3) assert.ok(tornTail !== null || cut.dropped > 0 || cut.torn > 0, `seed ${seed}`);
    await w2.close();
  }
  assert.ok(torn > 0);
});

test('fsync failure: the Wal fails permanently; pending and later calls reject with ERR_DEVICE_FLUSH', async () => {
  const store = newStore(13, 2);
  const { wal } = await open(store);
  wal.entries(1, [ent(1, 1)]);
  await wal.commit();
  store.faults.failNextSync = true;
  wal.entries(1, [ent(2, 1)]);
  const a = wal.commit();
  const b = wal.commit();
  await assert.rejects(a, (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  await assert.rejects(b, (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  assert.ok(isTesseraError(wal.failed, 'ERR_DEVICE_FLUSH'));
  // The device works again, but the Wal stays failed: what reached the disk is unknown.
  assert.throws(() => wal.entries(1, [ent(3, 1)]), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  assert.throws(() => wal.hardState(1, { term: 1, vote: 1, commit: 1 }), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  await assert.rejects(wal.commit(), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  await assert.rejects(wal.checkpoint(new Map()), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  await wal.close();
  // A new process recovers what was acknowledged.
  const { groups, wal: w2 } = await open(store);
  assert.ok(groups.get(1)!.entries.length >= 1);
  await w2.close();
});

test('append and directory-sync failures also fail the Wal permanently', async () => {
  const s1 = newStore(14);
  const o1 = await open(s1);
  o1.wal.entries(1, [ent(1, 1)]);
  s1.faults.failNextAppend = true;
  await assert.rejects(o1.wal.commit(), (err) => isTesseraError(err, 'ERR_DEVICE_IO'));
  assert.throws(() => o1.wal.entries(1, [ent(2, 1)]), (err) => isTesseraError(err, 'ERR_DEVICE_IO'));
  const s2 = newStore(15);
  const o2 = await open(s2, { segmentBytesMax: 200 });
  o2.wal.entries(1, [ent(1, 1, 'x'.repeat(300))]);
  await o2.wal.commit();
  o2.wal.entries(1, [ent(2, 1)]); // rolls over: the new segment's name must be synced
  s2.faults.failNextSyncDir = true;
  await assert.rejects(o2.wal.commit(), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
  await assert.rejects(o2.wal.commit(), (err) => isTesseraError(err, 'ERR_DEVICE_FLUSH'));
});

test('limits: oversized entries and a full queue are refused with ERR_LIMIT; needsCommit signals backpressure', async () => {
  const { wal } = await open(newStore(16), { commitThresholdBytes: 10_000, bufferedBytesMax: 50_000 });
  assert.throws(() => wal.entries(1, [{ index: 1, term: 1, data: Buffer.alloc(ENTRY_DATA_BYTES_MAX + 1) }]), (err) => isTesseraError(err, 'ERR_LIMIT'));
  assert.equal(wal.needsCommit, false);
  wal.entries(1, [ent(1, 1, 'a'.repeat(12_000))]);
  assert.equal(wal.needsCommit, true);
  wal.entries(1, [ent(2, 1, 'a'.repeat(30_000))]);
  assert.throws(() => wal.entries(1, [ent(3, 1, 'a'.repeat(20_000))]), (err) => isTesseraError(err, 'ERR_LIMIT'));
  // The refused call consumed nothing: the log continues without a gap.
  await wal.commit();
  assert.equal(wal.needsCommit, false);
  assert.equal(wal.bufferedBytes, 0);
  wal.entries(1, [ent(3, 1)]);
  await wal.commit();
  await wal.close();
});

test('a fresh log whose creation was cut opens empty; a log with records but no checkpoint is refused', async () => {
  let reopened = 0;
  for (let seed = 200; seed < 230; seed++) {
    const store = newStore(seed, 4);
    const opening = open(store).catch(() => null);
    for (let t = 0; t < seed % 20; t++) await Promise.resolve();
    const cut = store.powerCut();
    await opening;
    const { groups, wal } = await open(cut.store);
    assert.equal(groups.size, 0);
    wal.entries(1, [ent(1, 1)]);
    await wal.commit();
    await wal.close();
    const again = await open(cut.store);
    assert.equal(again.groups.get(1)!.entries.length, 1);
    await again.wal.close();
    reopened++;
  }
  assert.equal(reopened, 30);
  // Lose the only checkpoint of a used log: refused, not silently empty.
  const store = newStore(17);
  const { wal } = await open(store);
  wal.entries(1, [ent(1, 1)]);
  await wal.commit();
  await wal.close();
  const name = store.names()[0];
  store.flipBit(name, 20, 0); // the checkpoint's first header
  await assert.rejects(open(store), (err) => isTesseraError(err, 'ERR_FORMAT'));
});

test('scanner and replay survive random garbage appended to a healthy log (fuzz, seeded)', async () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  for (let round = 0; round < 40; round++) {
    const store = newStore(prng.u32());
    const { wal } = await open(store);
    const hs: HardState = { term: 1, vote: 1, commit: 0 };
    for (let i = 1; i <= 5; i++) {
      wal.entries(1, [ent(i, 1)]);
      wal.hardState(1, hs);
      await wal.commit();
    }
    await wal.close();
    const name = store.names().at(-1)!;
    const seg = await store.open(name);
    const junk = Buffer.alloc(1 + prng.int(3000));
    prng.fill(junk);
    if (prng.chance(0.5)) junk.write('TWAL', prng.int(Math.max(1, junk.length - 4)) & ~7, 'latin1');
    await seg.append([junk]);
    const { groups, damage, wal: w2 } = await open(store);
    assert.deepEqual(damage, [], `seed ${seed} round ${round}`);
    assert.equal(groups.get(1)!.entries.length, 5, `seed ${seed} round ${round}`);
    await w2.close();
  }
});

test('seeded bit flips anywhere in a synced record: always reported, attributed, and nothing after the damage presented as contiguous', async () => {
  const seed = seedFromEnv();
  const prng = new Prng(seed);
  const groupsKeys = [1, 2, 3, 4];
  let attributed = 0;
  for (let round = 0; round < 150; round++) {
    const ctx = `seed ${seed} round ${round}`;
    const store = newStore(prng.u32());
    const { wal } = await open(store, { segmentBytesMax: 1 << (10 + prng.int(4)) });
    type Op = { seq: number; group: number; entries?: Entry[]; hs?: HardState };
    const ops: Op[] = [];
    const last = new Map<number, number>();
    const term = new Map<number, number>();
    const batches = 4 + prng.int(8);
    for (let b = 0; b < batches; b++) {
      for (let n = 1 + prng.int(4); n > 0; n--) {
        const g = groupsKeys[prng.int(groupsKeys.length)];
        const t = (term.get(g) ?? 1) + (prng.chance(0.2) ? 1 : 0);
        term.set(g, t);
        const l = last.get(g) ?? 0;
        if (prng.chance(0.7)) {
          const first = l === 0 || prng.chance(0.7) ? l + 1 : 1 + prng.int(l);
          const es = Array.from({ length: 1 + prng.int(3) }, (_, k) => ent(first + k, t, 'd'.repeat(prng.int(600))));
          ops.push({ seq: wal.entries(g, es), group: g, entries: es });
          last.set(g, es[es.length - 1].index);
        } else {
          const hs = { term: t, vote: prng.int(3), commit: prng.int(l + 1) };
          ops.push({ seq: wal.hardState(g, hs), group: g, hs });
        }
      }
      await wal.commit();
    }
    await wal.close();
    // Any record (the last batch too: the sync mark after it proves it was synced), and a byte
    // inside its header or body (padding carries nothing).
    const victim = ops[prng.int(ops.length)];
    const at = await locate(store, victim.seq);
    const inHeader = prng.chance(0.3);
    const byte = inHeader ? prng.int(RECORD_HEADER_BYTES) : RECORD_HEADER_BYTES + prng.int(at.bodyBytes);
    store.flipBit(at.name, at.offsetBytes + byte, prng.int(8));
    const res = await open(store);
    assert.equal(res.tornTail, null, ctx);
    assert.equal(res.damage.length, 1, `${ctx}: ${JSON.stringify(res.damage)}`);
    const d = res.damage[0];
    assert.equal(d.lastGoodSeq, victim.seq - 1, ctx);
    assert.equal(d.firstSeqAfter, victim.seq + 1, ctx);
    if (d.groups !== 'all') {
      assert.deepEqual(d.groups, [victim.group], ctx);
      attributed++;
    }
    assert.ok(inHeader || d.groups !== 'all', `${ctx}: a body flip must be attributed to its record's group`);
    for (const g of groupsKeys) {
      const mine = ops.filter((o) => o.group === g);
      if (mine.length === 0 && d.groups !== 'all') {
        assert.equal(res.groups.get(g), undefined, ctx);
        continue;
      }
      const damaged: boolean = d.groups === 'all' || d.groups.includes(g);
      const applied = damaged ? mine.filter((o) => o.seq < victim.seq) : mine;
      const want: Entry[] = [];
      let hs: HardState = { term: 0, vote: 0, commit: 0 };
      for (const o of applied) {
        if (o.entries) {
          const cut = want.findIndex((e) => e.index >= o.entries![0].index);
          if (cut >= 0) want.length = cut;
          want.push(...o.entries);
        } else hs = o.hs!;
      }
      const got = res.groups.get(g);
      if (!got) {
        assert.ok(damaged && applied.length === 0 && mine.every((o) => o.seq === victim.seq), `${ctx}: group ${g} missing`);
        continue;
      }
      assert.deepEqual(entriesView(got.entries), entriesView(want), `${ctx}: group ${g} entries`);
      assert.equal(got.damaged, damaged, `${ctx}: group ${g} damaged`);
      const seen = mine.filter((o) => o.seq !== victim.seq);
      const maxIndex = Math.max(0, ...seen.flatMap((o) => (o.entries ?? []).map((e) => e.index)));
      const maxTerm = Math.max(0, ...seen.flatMap((o) => (o.entries ?? []).map((e) => e.term)));
      assert.equal(got.maxIndexSeen, Math.max(maxIndex, want.at(-1)?.index ?? 0), `${ctx}: group ${g} maxIndexSeen`);
      assert.equal(got.maxTermSeen, maxTerm, `${ctx}: group ${g} maxTermSeen`);
      if (!damaged) {
        assert.deepEqual(got.hardState, hs, `${ctx}: group ${g} hard state`);
        continue;
      }
      const hsTerms = seen.filter((o) => o.hs).map((o) => o.hs!.term);
      const wantTerm = Math.max(maxTerm, ...hsTerms, 0);
      assert.equal(got.hardState.term, wantTerm, `${ctx}: group ${g} term`);
      const lastHs = seen.filter((o) => o.hs).at(-1)?.hs;
      // The vote: the latest one seen if it is certain for that term, else this node's own id.
      if (got.hardState.vote !== SELF) assert.ok(lastHs && lastHs.term === wantTerm && lastHs.vote === got.hardState.vote, `${ctx}: group ${g} vote`);
      assert.ok(got.hardState.commit <= (got.entries.at(-1)?.index ?? 0), `${ctx}: group ${g} commit beyond its contiguous log`);
    }
    await res.wal.close();
  }
  assert.ok(attributed > 50, `attributed ${attributed}`);
});

test('record buffers from the slab are zero where the format says 0 (ENTRIES reserved bytes), however dirty the memory they came from', () => {
  // Slab regions are uninitialized memory (Buffer.allocUnsafeSlow): freed 0xff-filled
  // blocks of the slab's size make a fresh slab likely to reuse such memory.
  for (let round = 0; round < 8; round++) {
    const junk: Buffer[] = [];
    for (let i = 0; i < 32; i++) junk.push(Buffer.allocUnsafeSlow(64 * 1024).fill(0xff));
    junk.length = 0;
    for (let i = 0; i < 3000; i++) {
      const rec = makeRecord(RecordType.Entries, 0, 7, 1 + i, entriesBody([ent(1 + i, 1, 'abc')], 0, 1));
      const body = Buffer.concat(rec.parts);
      assert.equal(body.readUInt32LE(4), 0, `record ${i}: ENTRIES u32 after the count`);
      assert.equal(body.readUIntLE(8 + 17, 3), 0, `record ${i}: entry reserved bytes`);
    }
  }
});
