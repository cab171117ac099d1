// End-to-end tests of the NBD server over real loopback TCP with the in-memory
// store: real clients (libnbd's nbdsh and nbdinfo, QEMU's qemu-io) and a raw Node
// socket for garbage, disconnects and oversized requests. Several clients run at
// once to show that one client's garbage does not disturb another's IO.
// Randomized parts print their seed (TESSERA_SEED replays them).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as net from 'node:net';
import { promisify } from 'node:util';
import { Prng, seedFromEnv } from '../../stdx/prng.js';
import { MemoryVolumeStore } from '../../volume/memory.js';
import * as C from './constants.js';
import { NbdServer } from './server.js';
import { IdlePoll } from '../idle-poll.js';
import type { LogLevel } from './session.js';
import { waitFor } from '../../../test/helpers/wait.js';

const execFileAsync = promisify(execFile);
// nbdsh runs `python3 -m nbd`; the system python has the libnbd bindings.
const CLIENT_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' };
// The real clients are required (npm test installs them): a missing one fails the run, never skips it.
for (const tool of ['/usr/bin/nbdsh', '/usr/bin/nbdinfo', '/usr/bin/qemu-io']) {
  if (!existsSync(tool)) throw new Error(`${tool} is missing: run scripts/ensure-system-deps.sh`);
}
const CLIENT_TIMEOUT_MS = 120_000;
const VOL_BYTES = 64 * 1024 * 1024;
const SEED = seedFromEnv();
console.log(`server.test seed: TESSERA_SEED=${SEED}`);

let store: MemoryVolumeStore;
let server: NbdServer;
const logs: Array<{ level: LogLevel; msg: string }> = [];

/** The server's idle poller (gateway/idle-poll.ts): 5 ms, so that a client's next request lands inside a window on a loaded machine. */
const idlePoll = new IdlePoll(5000);

before(async () => {
  store = new MemoryVolumeStore();
  await store.create('vol0', VOL_BYTES);
  await store.create('small', 1024 * 1024);
  server = await NbdServer.start({ host: '127.0.0.1', port: 0, store, idlePoll, log: (level, msg) => logs.push({ level, msg }) });
});

after(async () => {
  await server.close();
  // Every connection's busy was matched by one quiet, whatever ended it (garbage, resets, close with requests in flight).
  assert.equal(idlePoll.busyCount, 0, `idle poller left with ${idlePoll.busyCount} busy connection(s)`);
  assert.equal(logs.filter((l) => l.level === 'error').length, 0, JSON.stringify(logs.filter((l) => l.level === 'error')));
});

function uri(exportName = 'vol0'): string {
  return `nbd://127.0.0.1:${server.port}/${exportName}`;
}

async function nbdsh(script: string, opts: { exportName?: string; baseAllocation?: boolean } = {}): Promise<string> {
  const args = [...(opts.baseAllocation ? ['--base-allocation'] : []), '-u', uri(opts.exportName), '-c', script];
  const { stdout } = await execFileAsync('nbdsh', args, { env: CLIENT_ENV, timeout: CLIENT_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

// --- A raw client for abuse cases ------------------------------------------------------

class RawClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }
  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }
  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const start = performance.now();
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`closed with ${this.buf.length} of ${n} bytes`);
      if (performance.now() - start > timeoutMs) throw new Error(`timeout reading ${n} bytes`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  async waitClosed(timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.closed, 'server to close the connection', timeoutMs);
  }
  write(b: Buffer): Promise<void> {
    return new Promise((resolve) => this.socket.write(b, () => resolve()));
  }
  /** Greeting, flags, NBD_OPT_GO "vol0"; returns with the connection in transmission. */
  async handshakeGo(): Promise<void> {
    await this.read(18);
    const name = Buffer.from('vol0');
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    await this.write(Buffer.concat([u32(3), optionBytes(C.NBD_OPT_GO, data)]));
    for (;;) {
      const h = await this.read(20);
      await this.read(h.readUInt32BE(16));
      if (h.readUInt32BE(12) === C.NBD_REP_ACK) return;
      assert.equal(h.readUInt32BE(12), C.NBD_REP_INFO);
    }
  }
  destroy(): void {
    this.socket.destroy();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
function optionBytes(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from('IHAVEOPT'), u32(opt), u32(data.length), data]);
}
function requestBytes(type: number, cookie: bigint, offset: number, lengthBytes: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(lengthBytes, 24);
  return h;
}

// --- Real clients ------------------------------------------------------------------------

test('nbdinfo --list: both exports with base:allocation, block sizes and flags', async () => {
  const { stdout } = await execFileAsync('nbdinfo', ['--json', '--list', `nbd://127.0.0.1:${server.port}/`], { env: CLIENT_ENV, timeout: CLIENT_TIMEOUT_MS });
  const info = JSON.parse(stdout) as { protocol: string; structured: boolean; exports: Array<Record<string, unknown>> };
  assert.equal(info.protocol, 'newstyle-fixed');
  assert.equal(info.structured, true);
  const byName = new Map(info.exports.map((e) => [e['export-name'], e]));
  assert.deepEqual([...byName.keys()].sort(), ['small', 'vol0']);
  const vol0 = byName.get('vol0')!;
  assert.equal(vol0['export-size'], VOL_BYTES);
  assert.deepEqual(vol0.contexts, ['base:allocation']);
  for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_multi_conn', 'can_df', 'can_cache']) assert.equal(vol0[flag], true, flag);
  assert.equal(vol0.is_read_only, false);
  assert.deepEqual([vol0.block_size_minimum, vol0.block_size_preferred, vol0.block_size_maximum], [512, 4096, 32 * 1024 * 1024]);
});

test('nbdsh: every command through libnbd (read, write, FUA, flush, trim, zero, cache, block status)', async () => {
  const out = await nbdsh(
    `
assert h.get_size() == ${VOL_BYTES}
assert h.can_multi_conn() and h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero() and h.can_fast_zero() and h.can_df()
assert (h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM)) == (512, 4096, 33554432)
base = 48 * 1024 * 1024
h.pwrite(b"\\xab" * 131072, base, nbd.CMD_FLAG_FUA)
assert h.pread(131072, base) == b"\\xab" * 131072
h.flush()
ents = []
h.block_status(262144, base, lambda meta, off, e, err: ents.append((meta, off, list(e))))
assert ents == [("base:allocation", base, [131072, 0, 131072, 3])], ents
one = []
h.block_status(262144, base, lambda meta, off, e, err: one.append(list(e)), nbd.CMD_FLAG_REQ_ONE)
assert one == [[131072, 0]], one
h.zero(65536, base, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, base) == bytes(65536)
h.zero(65536, base + 65536, nbd.CMD_FLAG_FAST_ZERO)
h.trim(65536, base)
assert h.pread(131072, base) == bytes(131072)
h.cache(65536, base)
h.pwrite(b"\\x01" * 4096, base + 4096)
assert h.pread_structured(4096, base + 4096, lambda buf, off, st, err: 0, nbd.CMD_FLAG_DF) == b"\\x01" * 4096
h.set_strict_mode(0)
for (count, off, errname) in [(4096, ${VOL_BYTES}, "EINVAL"), (512, 100, "EINVAL")]:
    try:
        h.pread(count, off)
        raise AssertionError("expected an error")
    except nbd.Error as e:
        assert e.errno == errname, (count, off, e.errno)
try:
    h.pwrite(b"x" * 512, ${VOL_BYTES})
    raise AssertionError("expected ENOSPC")
except nbd.Error as e:
    assert e.errno == "ENOSPC", e.errno
print("ok")
`,
    { baseAllocation: true },
  );
  assert.equal(out.trim(), 'ok');
});

test('nbdsh: the empty export name is the default export vol0', async () => {
  const out = await nbdsh('print(h.get_canonical_export_name(), h.get_size())', { exportName: '' });
  assert.equal(out.trim(), `vol0 ${VOL_BYTES}`);
});

test('nbdinfo --map: allocation map through base:allocation', async () => {
  await nbdsh('h.pwrite(b"\\x07" * 65536, 0); h.pwrite(b"\\x07" * 65536, 524288)', { exportName: 'small' });
  const { stdout } = await execFileAsync('nbdinfo', ['--map', uri('small')], { env: CLIENT_ENV, timeout: CLIENT_TIMEOUT_MS });
  const rows = stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number));
  assert.deepEqual(rows, [
    [0, 65536, 0],
    [65536, 524288 - 65536, 3],
    [524288, 65536, 0],
    [524288 + 65536, 1048576 - 524288 - 65536, 3],
  ]);
});

test('qemu-io: QEMU\'s NBD client writes and reads back a pattern', async () => {
  const args = ['-f', 'raw', '-c', 'write -P 0x5a 8M 256k', '-c', 'read -P 0x5a 8M 256k', '-c', 'flush', uri()];
  const { stdout } = await execFileAsync('qemu-io', args, { env: CLIENT_ENV, timeout: CLIENT_TIMEOUT_MS });
  assert.match(stdout, /wrote 262144\/262144 bytes/);
  assert.match(stdout, /read 262144\/262144 bytes/);
  assert.doesNotMatch(stdout, /Pattern verification failed/);
});

test('idle polling: QEMU\'s sequential requests open windows that catch the next request (hits), and the poller ends balanced', async () => {
  const before = { ...idlePoll.stats };
  const args = ['-f', 'raw', '-c', 'read 0 4k', '-c', 'read 4k 4k', '-c', 'read 8k 4k', '-c', 'read 12k 4k', '-c', 'read 16k 4k', uri()];
  await execFileAsync('qemu-io', args, { env: CLIENT_ENV, timeout: CLIENT_TIMEOUT_MS });
  const after = idlePoll.stats;
  assert.ok(after.windows + after.skipped - (before.windows + before.skipped) >= 5, `pokes: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  assert.ok(after.hits > before.hits, `no request arrived inside a window: ${JSON.stringify(after)}`);
  await waitFor(() => idlePoll.busyCount === 0, 'no connection busy after qemu-io exits');
});

// --- Raw-socket abuse --------------------------------------------------------------------

test('raw: garbage instead of client flags is dropped; garbage option magic closes', async () => {
  const a = await RawClient.connect(server.port);
  assert.equal((await a.read(18)).toString('latin1', 0, 16), 'NBDMAGICIHAVEOPT');
  await a.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await a.waitClosed();
  const b = await RawClient.connect(server.port);
  await b.read(18);
  await b.write(Buffer.concat([u32(3), Buffer.from('NOTAMAGIC-------')]));
  await b.waitClosed();
});

test('raw: disconnecting at every handshake stage leaves no connection behind', async () => {
  const stream = Buffer.concat([u32(3), optionBytes(C.NBD_OPT_STRUCTURED_REPLY), optionBytes(C.NBD_OPT_LIST)]);
  const cuts = [0, 1, 3, 4, 5, 12, 19, 20, 21, stream.length];
  for (const cut of cuts) {
    const c = await RawClient.connect(server.port);
    await c.read(18);
    if (cut > 0) await c.write(stream.subarray(0, cut));
    c.destroy();
  }
  await waitFor(() => server.connectionCount() === 0, 'all connections to close');
});

test('raw: an oversized write is answered EINVAL, its payload streamed away, and the connection keeps working', async () => {
  const c = await RawClient.connect(server.port);
  await c.handshakeGo();
  const lengthBytes = C.PAYLOAD_BYTES_MAX + 65536;
  await c.write(requestBytes(C.NBD_CMD_WRITE, 1n, 0, lengthBytes));
  const piece = Buffer.alloc(1024 * 1024, 0xee);
  for (let sent = 0; sent < lengthBytes; sent += piece.length) await c.write(piece.subarray(0, Math.min(piece.length, lengthBytes - sent)));
  const r1 = await c.read(16);
  assert.deepEqual([r1.readUInt32BE(4), r1.readBigUInt64BE(8)], [C.NBD_EINVAL, 1n]);
  await c.write(requestBytes(C.NBD_CMD_READ, 2n, VOL_BYTES - 512, 512));
  const r2 = await c.read(16 + 512);
  assert.deepEqual([r2.readUInt32BE(4), r2.readBigUInt64BE(8)], [0, 2n]);
  await c.write(requestBytes(C.NBD_CMD_DISC, 3n, 0, 0));
  await c.waitClosed();
});

test('raw: a bad request magic closes the connection; a disconnect mid-payload is harmless', async () => {
  const a = await RawClient.connect(server.port);
  await a.handshakeGo();
  const bad = requestBytes(C.NBD_CMD_READ, 1n, 0, 512);
  bad.writeUInt32BE(0xdeadbeef, 0);
  await a.write(bad);
  await a.waitClosed();
  const b = await RawClient.connect(server.port);
  await b.handshakeGo();
  await b.write(Buffer.concat([requestBytes(C.NBD_CMD_WRITE, 1n, 0, 1024 * 1024), Buffer.alloc(1000)]));
  b.destroy();
  await waitFor(() => server.connectionCount() === 0, 'connections to close');
});

test('concurrent: three pipelined libnbd clients keep correct data while others send garbage', async () => {
  const rng = new Prng(SEED);
  const clientScript = (index: number, seed: number): string => `
import random
rng = random.Random(${seed})
bs = 4096; n = 512; base = ${index} * 4 * 1024 * 1024
data = [rng.randbytes(bs) for i in range(n)]
for i in range(n):
    h.aio_pwrite(data[i], base + i * bs, flags=nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
    while h.aio_in_flight() >= 32: h.poll(-1)
while h.aio_in_flight() > 0: h.poll(-1)
h.flush()
bufs = []
for i in range(n):
    b = nbd.Buffer(bs)
    bufs.append((h.aio_pread(b, base + i * bs), b))
    while h.aio_in_flight() >= 32: h.poll(-1)
while h.aio_in_flight() > 0: h.poll(-1)
for i, (c, b) in enumerate(bufs):
    assert h.aio_command_completed(c)
    assert b.to_bytearray() == data[i], "mismatch at block %d" % i
print("ok")
`;
  const clients = [0, 1, 2].map((i) => nbdsh(clientScript(i, (SEED + i) >>> 0)));
  let garbageDone = false;
  const garbage = (async () => {
    let n = 0;
    while (!garbageDone || n < 20) {
      const c = await RawClient.connect(server.port);
      const inTransmission = rng.chance(0.5);
      if (inTransmission) await c.handshakeGo();
      else await c.read(18);
      const junk = Buffer.alloc(1 + rng.int(4096));
      rng.fill(junk);
      if (inTransmission && rng.chance(0.5)) junk.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
      await c.write(junk);
      if (rng.chance(0.5)) c.destroy();
      else await c.waitClosed(2000).catch(() => c.destroy());
      c.destroy();
      n++;
    }
    return n;
  })();
  const outs = await Promise.all(clients);
  garbageDone = true;
  const garbageConnections = await garbage;
  assert.deepEqual(outs.map((o) => o.trim()), ['ok', 'ok', 'ok']);
  assert.ok(garbageConnections >= 20);
  await waitFor(() => server.connectionCount() === 0, 'all connections to close');
});

// --- Server lifecycle ----------------------------------------------------------------------

test('server: maxConnections refuses extra clients; close() ends live connections; default host is loopback', async () => {
  const s = await NbdServer.start({ host: '', port: 0, store, maxConnections: 1 });
  assert.equal(s.host, '127.0.0.1');
  const a = await RawClient.connect(s.port);
  await a.handshakeGo();
  const b = await RawClient.connect(s.port);
  await b.waitClosed();
  assert.equal(s.connectionCount(), 1);
  await a.write(requestBytes(C.NBD_CMD_FLUSH, 1n, 0, 0));
  assert.equal((await a.read(16)).readUInt32BE(4), 0);
  await s.close();
  await a.waitClosed();
  assert.equal(s.connectionCount(), 0);
  await assert.rejects(RawClient.connect(s.port));
});
