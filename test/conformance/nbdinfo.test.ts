// Conformance with nbdinfo (libnbd) against a real `tessera up` daemon: what a
// client learns during negotiation must match what Tessera means to offer.
//
// - NBD_OPT_LIST (proto.md "NBD_OPT_LIST") names every volume, including one
//   created after startup through the CLI (the API and NBD see one store).
// - NBD_OPT_GO/NBD_OPT_INFO (proto.md "NBD_INFO_EXPORT", "NBD_INFO_BLOCK_SIZE")
//   report the volume's size, NBD_FLAG_CAN_MULTI_CONN (nbdcopy and qemu rely on
//   it to open several connections safely) and block sizes 512/4096/32 MiB.
// - NBD_CMD_BLOCK_STATUS with base:allocation (proto.md "base:allocation
//   metadata context"): an unwritten volume is one hole; a written region is
//   data; trimming whole objects makes them holes again. A map that calls
//   written data a hole would make nbdcopy/qemu-img skip it: data loss on copy.
// - `tessera up` stops with exit 0 on SIGTERM and removes its PID file.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DaemonFixture } from '../helpers/daemon.js';
import { mustSucceed, requireCommands, run, runNbdsh } from '../helpers/run.js';

const MiB = 1024 * 1024;
const VOL0_BYTES = 64 * MiB;
const MAPVOL_BYTES = 64 * MiB;
const SECOND_BYTES = 32 * MiB;
const TOOL_TIMEOUT_MS = 20_000;

interface NbdinfoExport {
  'export-name': string;
  'export-size': number;
  can_multi_conn: boolean;
  can_flush: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fua: boolean;
  is_read_only: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}

interface MapExtent {
  offset: number;
  length: number;
  type: number;
  description: string;
}

/** base:allocation bits (proto.md): 1 = NBD_STATE_HOLE, 2 = NBD_STATE_ZERO. */
const STATE_HOLE = 1;

describe('nbdinfo against tessera up', () => {
  let fx: DaemonFixture;
  let objectBytes = 0;

  before(async () => {
    requireCommands('nbdinfo', 'nbdsh');
    fx = await DaemonFixture.create({ deviceSize: '2G', volumeSize: '64M' });
    mustSucceed(await fx.cli(['volume', 'create', 'second', '--size', '32M']), 'tessera volume create second', () => fx.describe());
    mustSucceed(await fx.cli(['volume', 'create', 'mapvol', '--size', '64M']), 'tessera volume create mapvol', () => fx.describe());
    const info = mustSucceed(await fx.cli(['volume', 'info', 'mapvol', '--json']), 'tessera volume info mapvol');
    objectBytes = (JSON.parse(info.stdout) as { objectSizeBytes: number }).objectSizeBytes;
    assert.ok(objectBytes > 0 && objectBytes % 4096 === 0, `objectSizeBytes ${objectBytes}`);
  });

  after(async () => {
    await fx?.dispose();
  });

  async function nbdinfoJson<T>(args: string[]): Promise<T> {
    const r = mustSucceed(await run('nbdinfo', ['--json', ...args], { timeoutMs: TOOL_TIMEOUT_MS }), 'nbdinfo', () => fx.describe());
    try {
      return JSON.parse(r.stdout) as T;
    } catch (err) {
      throw new Error(`nbdinfo printed invalid JSON (${(err as Error).message}):\n${r.stdout}`);
    }
  }

  async function map(volume: string): Promise<MapExtent[]> {
    const extents = await nbdinfoJson<MapExtent[]>(['--map', fx.uri(volume)]);
    // The map must tile the export: contiguous, no gaps, no overlap, ending at the size.
    let pos = 0;
    for (const e of extents) {
      assert.equal(e.offset, pos, `map is not contiguous at ${pos}: ${JSON.stringify(extents)}`);
      assert.ok(e.length > 0, `empty extent in ${JSON.stringify(extents)}`);
      pos += e.length;
    }
    assert.equal(pos, MAPVOL_BYTES, `map covers ${pos} bytes, the export has ${MAPVOL_BYTES}`);
    return extents;
  }

  /** The extents of `extents` overlapping [offset, offset+length). */
  function overlapping(extents: MapExtent[], offset: number, length: number): MapExtent[] {
    return extents.filter((e) => e.offset < offset + length && offset < e.offset + e.length);
  }

  test('nbdinfo --list shows vol0 and a volume created with the CLI (proto.md NBD_OPT_LIST)', async () => {
    const listing = await nbdinfoJson<{ exports: NbdinfoExport[] }>(['--list', fx.serverUri()]);
    const byName = new Map(listing.exports.map((e) => [e['export-name'], e]));
    assert.deepEqual([...byName.keys()].sort(), ['mapvol', 'second', 'vol0'], `exports listed: ${[...byName.keys()].join(', ')}`);
    assert.equal(byName.get('vol0')!['export-size'], VOL0_BYTES);
    assert.equal(byName.get('second')!['export-size'], SECOND_BYTES);
  });

  test('nbdinfo shows size, flags and block sizes of vol0 (proto.md NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE)', async () => {
    const info = await nbdinfoJson<{ exports: NbdinfoExport[] }>([fx.uri('vol0')]);
    assert.equal(info.exports.length, 1);
    const e = info.exports[0];
    assert.equal(e['export-name'], 'vol0');
    assert.equal(e['export-size'], VOL0_BYTES);
    assert.equal(e.can_multi_conn, true, 'NBD_FLAG_CAN_MULTI_CONN must be set');
    assert.equal(e.can_flush, true, 'NBD_FLAG_SEND_FLUSH');
    assert.equal(e.can_fua, true, 'NBD_FLAG_SEND_FUA');
    assert.equal(e.can_trim, true, 'NBD_FLAG_SEND_TRIM');
    assert.equal(e.can_zero, true, 'NBD_FLAG_SEND_WRITE_ZEROES');
    assert.equal(e.is_read_only, false);
    assert.equal(e.block_size_minimum, 512);
    assert.equal(e.block_size_preferred, 4096);
    assert.equal(e.block_size_maximum, 33554432);
  });

  test('nbdinfo on an unknown export fails (proto.md NBD_REP_ERR_UNKNOWN)', async () => {
    const r = await run('nbdinfo', [fx.uri('no-such-volume')], { timeoutMs: TOOL_TIMEOUT_MS });
    assert.notEqual(r.code, 0, `nbdinfo of a missing export must fail:\n${r.stdout}`);
    assert.equal(r.timedOut, false);
  });

  test('nbdinfo --map: hole when unwritten, data after a write, hole after trim (proto.md base:allocation)', async () => {
    const fresh = await map('mapvol');
    assert.ok(
      fresh.every((e) => (e.type & STATE_HOLE) !== 0),
      `an unwritten volume must map as holes: ${JSON.stringify(fresh)}`,
    );

    // Write 1 MiB inside the third object and 8 KiB straddling the 5th/6th objects.
    const aOff = 2 * objectBytes + 64 * 1024;
    const aLen = MiB;
    const bOff = 5 * objectBytes - 4096;
    const bLen = 8192;
    mustSucceed(
      await runNbdsh(fx.uri('mapvol'), [`h.pwrite(b'\\xab' * ${aLen}, ${aOff})`, `h.pwrite(b'\\xcd' * ${bLen}, ${bOff})`, 'h.flush()'], TOOL_TIMEOUT_MS),
      'nbdsh pwrite',
      () => fx.describe(),
    );
    const written = await map('mapvol');
    for (const [off, len] of [
      [aOff, aLen],
      [bOff, bLen],
    ]) {
      for (const e of overlapping(written, off, len)) {
        assert.equal(e.type, 0, `written range ${off}+${len} overlaps extent ${JSON.stringify(e)}, which is not plain data: ${JSON.stringify(written)}`);
      }
    }
    // Objects that were never written stay holes (the map is not "all data").
    const untouched = [0, 1, 3, 6, 7, 15].map((i) => i * objectBytes);
    for (const off of untouched) {
      for (const e of overlapping(written, off, objectBytes)) {
        if (e.offset <= off && e.offset + e.length >= off + objectBytes) {
          assert.ok((e.type & STATE_HOLE) !== 0, `never-written object at ${off} maps as ${e.description}: ${JSON.stringify(written)}`);
        }
      }
    }

    // Trim the objects that hold data, whole: they must become holes again.
    mustSucceed(
      await runNbdsh(
        fx.uri('mapvol'),
        [`h.trim(${objectBytes}, ${2 * objectBytes})`, `h.trim(${2 * objectBytes}, ${4 * objectBytes})`, 'h.flush()'],
        TOOL_TIMEOUT_MS,
      ),
      'nbdsh trim',
      () => fx.describe(),
    );
    const trimmed = await map('mapvol');
    assert.ok(trimmed.every((e) => (e.type & STATE_HOLE) !== 0), `after trimming every written object the map must be all holes: ${JSON.stringify(trimmed)}`);
    // And the data reads as zeros.
    mustSucceed(
      await runNbdsh(fx.uri('mapvol'), [`assert h.pread(${aLen}, ${aOff}) == bytes(${aLen}), 'trimmed range A is not zero'`, `assert h.pread(${bLen}, ${bOff}) == bytes(${bLen}), 'trimmed range B is not zero'`], TOOL_TIMEOUT_MS),
      'read back trimmed ranges',
    );
  });

  test('nbdinfo --map after a partial trim: trimmed bytes read as zeros and are never called a hole wrongly', async () => {
    const off = 8 * objectBytes;
    mustSucceed(
      await runNbdsh(fx.uri('mapvol'), [`h.pwrite(b'\\x11' * ${2 * MiB}, ${off})`, `h.trim(${MiB}, ${off})`, 'h.flush()'], TOOL_TIMEOUT_MS),
      'nbdsh write + partial trim',
    );
    const m = await map('mapvol');
    // The object still holds 1 MiB of data, so no extent covering it may say hole/zero.
    for (const e of overlapping(m, off + MiB, MiB)) {
      assert.equal(e.type & 3, 0, `range holding data maps as ${e.description}: ${JSON.stringify(m)}`);
    }
    mustSucceed(
      await runNbdsh(fx.uri('mapvol'), [`assert h.pread(${MiB}, ${off}) == bytes(${MiB}), 'partially trimmed range is not zero'`, `assert h.pread(${MiB}, ${off + MiB}) == b'\\x11' * ${MiB}, 'untrimmed half changed'`], TOOL_TIMEOUT_MS),
      'read back after partial trim',
    );
  });

  test('tessera up exits 0 on SIGTERM and removes its PID file', async () => {
    const status = await fx.daemon.stop();
    assert.deepEqual({ code: status.code, signal: status.signal, killed: status.killed }, { code: 0, signal: null, killed: false }, fx.describe());
    assert.equal(existsSync(path.join(fx.dataDir, 'tessera.pid')), false, 'PID file left behind after a clean stop');
    assert.equal(existsSync(path.join(fx.dataDir, 'tessera.sock')), false, 'API socket left behind after a clean stop');
  });
});
