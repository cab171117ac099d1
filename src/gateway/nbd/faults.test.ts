// DEV2 + ENG5 through NBD (proto.md "Error values"): device read/write errors and
// checksum mismatches become EIO replies for the affected request only; the
// server stays up, other requests and other clients are served, and the engine
// counts the errors. Real client: libnbd's nbdsh. The engine runs on the
// simulated device so faults can be injected at exact offsets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SimDevice } from '../../device/sim-device.js';
import { LocalEngine } from '../../engine/engine.js';
import { Prng } from '../../stdx/prng.js';
import { NbdServer } from './server.js';

const execFileAsync = promisify(execFile);
// nbdsh runs `python3 -m nbd`: the system python (not a pyenv one earlier in PATH) has the libnbd bindings.
const CLIENT_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };
const MiB = 1024 * 1024;
const OBJECT = 64 * 1024;
let dev: SimDevice;
let engine: LocalEngine;
let server: NbdServer;
const errors: string[] = [];

before(async () => {
  dev = new SimDevice(32 * MiB, new Prng(42));
  await LocalEngine.format(dev, { objectSizeBytes: OBJECT, dataZeroed: true });
  engine = await LocalEngine.open(dev);
  await engine.create('vol0', 8 * MiB);
  server = await NbdServer.start({ host: '127.0.0.1', port: 0, store: engine, log: (level, msg) => level === 'error' && errors.push(msg) });
});

after(async () => {
  await server.close();
  await engine.close();
  assert.deepEqual(errors, [], 'no request may reach the server as an unexpected (non-operating) error');
});

/** Run a Python snippet in nbdsh; `h` is connected to vol0. Prints go to the returned stdout. */
async function nbdsh(script: string): Promise<string> {
  const { stdout } = await execFileAsync('nbdsh', ['-u', `nbd://127.0.0.1:${server.port}/vol0`, '-c', script], { timeout: 60_000, env: CLIENT_ENV });
  return stdout;
}

// Prints "EIO" when the call fails with errno EIO, "OK" when it succeeds.
const tryCall = (call: string): string => `
try:
    ${call}
    print("OK")
except nbd.Error as e:
    print("EIO" if e.errno in (errno.EIO, "EIO") else "ERR %s" % e.errno)
`;

function chunkDataOffset(chunk: number, block: number): number {
  return engine.layout.dataOffset + chunk * engine.layout.chunkStrideBytes + block * 4608;
}

test('a device read error fails only the request that touches it, with EIO; the daemon counts it', async () => {
  await nbdsh(`h.pwrite(b"\\x11" * ${2 * OBJECT}, 0); h.flush()`);
  // Object 1 lives in chunk 1 (allocation order); break its block 3.
  dev.faults.readErrors.push({ offsetBytes: chunkDataOffset(1, 3), lengthBytes: 4608 });
  const before = engine.devices()[0].ioErrors;
  const out = await nbdsh(`import errno
${tryCall(`h.pread(4096, ${OBJECT + 3 * 4096})`)}
${tryCall(`h.pread(4096, ${OBJECT + 2 * 4096})`)}
assert h.pread(4096, 0) == b"\\x11" * 4096
${tryCall(`h.pread(${OBJECT}, ${OBJECT})`)}
`);
  assert.deepEqual(out.trim().split('\n'), ['EIO', 'OK', 'EIO']);
  assert.equal(engine.devices()[0].ioErrors, before + 2);
  dev.faults.readErrors.length = 0;
});

test('a device write error fails only that write with EIO; a later write to the same place succeeds', async () => {
  dev.faults.writeErrors.push({ offsetBytes: chunkDataOffset(0, 5), lengthBytes: 4608 });
  const out = await nbdsh(`import errno
${tryCall(`h.pwrite(b"\\x22" * 4096, ${5 * 4096})`)}
${tryCall(`h.pwrite(b"\\x22" * 4096, ${6 * 4096})`)}
`);
  assert.deepEqual(out.trim().split('\n'), ['EIO', 'OK']);
  dev.faults.writeErrors.length = 0;
  const again = await nbdsh(`h.pwrite(b"\\x33" * 4096, ${5 * 4096}); print(h.pread(4096, ${5 * 4096}) == b"\\x33" * 4096)`);
  assert.equal(again.trim(), 'True');
});

test('ENG5: a flipped bit is an EIO reply, never data; other clients keep working', async () => {
  await nbdsh(`h.pwrite(b"\\x44" * 4096, ${9 * 4096})`);
  dev.flipBit(chunkDataOffset(0, 9) + 1234, 6);
  const before = engine.devices()[0].checksumErrors;
  const [bad, good] = await Promise.all([
    nbdsh(`import errno\n${tryCall(`h.pread(4096, ${9 * 4096})`)}`),
    nbdsh(`print(h.pread(4096, ${6 * 4096}) == b"\\x22" * 4096)`),
  ]);
  assert.equal(bad.trim(), 'EIO');
  assert.equal(good.trim(), 'True');
  assert.equal(engine.devices()[0].checksumErrors, before + 1);
});

test('latency on the device does not stall other connections beyond it, and replies stay correct', async () => {
  dev.faults.latencyMs = 20;
  try {
    const outs = await Promise.all(
      [0, 1, 2].map((i) => nbdsh(`h.pwrite(bytes([${i + 1}]) * 65536, ${(20 + i) * OBJECT}, nbd.CMD_FLAG_FUA); print(h.pread(65536, ${(20 + i) * OBJECT}) == bytes([${i + 1}]) * 65536)`)),
    );
    assert.deepEqual(outs.map((o) => o.trim()), ['True', 'True', 'True']);
  } finally {
    dev.faults.latencyMs = 0;
  }
});
