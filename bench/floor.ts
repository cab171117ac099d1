// The floor of a 3-replica write on this machine: what the processes, loopback
// TCP and fdatasync alone cost, with no storage logic at all. It answers "how
// fast could any Node implementation of Tessera's write path be here?", so that
// a benchmark target can be judged against what the machine allows.
//
// The path is the one a Tessera write takes (docs/ARCHITECTURE.md "Replication"):
//   client -> gateway -> PG leader -> 2 followers -> leader -> gateway -> client
// Five processes. Followers append each batch of requests to a pre-zeroed log
// file (cheapest fdatasync: no metadata) and fdatasync, then ack each request.
// The leader forwards at once, appends and fdatasyncs the batch itself on the
// next turn of its loop, and answers a request when its own write and one
// follower ack are in (majority of 3). 4 KiB + 32-byte requests.
//
// Usage: node dist/bench/floor.js [--qd N,...] [--seconds S] [--no-gateway]
//   --qd 1,32       queue depths to run (default 1,32)
//   --seconds 8     measured seconds per depth, after a 2 s ramp
//   --no-gateway    client talks to the leader directly (bounds a design with
//                   the NBD server inside the leader OSD)
// Prints writes/s, mean latency, the leader's and followers' CPU per write, and
// the hypervisor's steal share during the run (steal inflates every figure).
// Example: node dist/bench/floor.js --qd 1 --seconds 15
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, printHeaderAndExit, stealPct, stealSample } from './harness.js';

const REQUEST_BYTES = 4096 + 32;
const ACK_BYTES = 16;
const LOG_FILE_BYTES = 64 * 1024 * 1024;
const LOG_WRAP_BYTES = 60 * 1024 * 1024;

type BatchHandler = (batch: Buffer[]) => void;

/** Splits a stream into fixed-size messages, handing over every complete one of a read at once. */
function onFixedMessages(sock: net.Socket, sizeBytes: number, onBatch: BatchHandler): void {
  let acc: Buffer = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    acc = acc.length > 0 ? Buffer.concat([acc, d]) : d;
    const n = Math.floor(acc.length / sizeBytes);
    if (n === 0) return;
    const batch: Buffer[] = [];
    for (let i = 0; i < n; i++) batch.push(acc.subarray(i * sizeBytes, (i + 1) * sizeBytes));
    acc = acc.subarray(n * sizeBytes);
    onBatch(batch);
  });
}

/** A pre-zeroed log file: overwrites need no metadata, so fdatasync flushes data only. */
function openLog(dir: string, name: string): (bufs: Buffer[]) => void {
  const fd = fs.openSync(path.join(dir, `${name}.log`), 'w+');
  const zeros = Buffer.alloc(1 << 20);
  for (let off = 0; off < LOG_FILE_BYTES; off += zeros.length) fs.writeSync(fd, zeros, 0, zeros.length, off);
  fs.fsyncSync(fd);
  let pos = 0;
  return (bufs) => {
    let len = 0;
    for (const b of bufs) len += b.length;
    if (pos + len > LOG_WRAP_BYTES) pos = 0;
    fs.writevSync(fd, bufs, pos);
    pos += len;
    fs.fdatasyncSync(fd);
  };
}

function listen(onConn: (c: net.Socket) => void): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer((c) => {
      c.setNoDelay(true);
      onConn(c);
    });
    srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port));
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => resolve(c));
    c.setNoDelay(true);
    c.once('error', reject);
  });
}

async function follower(dir: string, name: string): Promise<number> {
  const append = openLog(dir, name);
  return listen((c) =>
    onFixedMessages(c, REQUEST_BYTES, (batch) => {
      append(batch);
      c.write(Buffer.concat(batch.map((m) => m.subarray(0, ACK_BYTES))));
    }),
  );
}

async function leader(dir: string, f1Port: number, f2Port: number): Promise<number> {
  const append = openLog(dir, 'leader');
  const followers = [await connect(f1Port), await connect(f2Port)];
  const pending = new Map<number, { conn: net.Socket; ack: Buffer; followerAcks: number; own: boolean }>();
  const maybeAnswer = (id: number): void => {
    const p = pending.get(id);
    if (p && p.own && p.followerAcks >= 1) {
      pending.delete(id);
      p.conn.write(p.ack);
    }
  };
  for (const f of followers) {
    onFixedMessages(f, ACK_BYTES, (acks) => {
      for (const a of acks) {
        const id = a.readUInt32LE(0);
        const p = pending.get(id);
        if (p) p.followerAcks++;
        maybeAnswer(id);
      }
    });
  }
  let queued: Buffer[] = [];
  let scheduled = false;
  const writeOwn = (): void => {
    scheduled = false;
    const batch = queued;
    queued = [];
    append(batch);
    for (const m of batch) {
      const id = m.readUInt32LE(0);
      const p = pending.get(id);
      if (p) p.own = true;
      maybeAnswer(id);
    }
  };
  return listen((c) =>
    onFixedMessages(c, REQUEST_BYTES, (batch) => {
      for (const m of batch) pending.set(m.readUInt32LE(0), { conn: c, ack: Buffer.from(m.subarray(0, ACK_BYTES)), followerAcks: 0, own: false });
      const data = Buffer.concat(batch);
      for (const f of followers) f.write(data);
      queued.push(...batch);
      if (!scheduled) {
        scheduled = true;
        setImmediate(writeOwn);
      }
    }),
  );
}

async function gateway(leaderPort: number): Promise<number> {
  const up = await connect(leaderPort);
  let client: net.Socket | null = null;
  onFixedMessages(up, ACK_BYTES, (acks) => client?.write(Buffer.concat(acks)));
  return listen((c) => {
    client = c;
    onFixedMessages(c, REQUEST_BYTES, (batch) => up.write(Buffer.concat(batch)));
  });
}

/** A role process: starts, reports its port, answers CPU queries, exits with its parent. */
async function runRole(role: string, args: string[]): Promise<void> {
  process.on('message', (m) => {
    if (m === 'cpu') process.send!({ cpu: process.cpuUsage() });
  });
  process.on('disconnect', () => process.exit(0));
  let port: number;
  if (role === 'follower') port = await follower(args[0], args[1]);
  else if (role === 'leader') port = await leader(args[0], Number(args[1]), Number(args[2]));
  else port = await gateway(Number(args[0]));
  process.send!({ port });
}

interface Options {
  depths: number[];
  seconds: number;
  gateway: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { depths: [1, 32], seconds: 8, gateway: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') printHeaderAndExit(import.meta.url);
    else if (a === '--no-gateway') o.gateway = false;
    else if (a === '--qd' || a === '--seconds') {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      if (a === '--seconds') {
        o.seconds = Number(v);
        if (!(o.seconds > 0 && o.seconds <= 600)) throw new Error(`--seconds must be a number in (0, 600], not ${JSON.stringify(v)}`);
      } else {
        o.depths = v.split(',').map(Number);
        if (o.depths.some((d) => !Number.isInteger(d) || d < 1 || d > 256)) throw new Error(`--qd must be integers 1-256, not ${JSON.stringify(v)}`);
      }
    } else throw new Error(`unknown argument ${JSON.stringify(a)} (see --help)`);
  }
  return o;
}

export interface FloorResult {
  depth: number;
  writesPerSec: number;
  meanLatencyUs: number;
  cpuUsPerWrite: number;
  steal: string;
}

function startRole(children: ChildProcess[], role: string, args: (string | number)[]): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(import.meta.url), ['--role', role, ...args.map(String)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve({ child, port: m.port }));
    child.once('exit', (code) => reject(new Error(`floor ${role} exited with ${code}`)));
  });
}

function cpuUs(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu.user + m.cpu.system));
    child.send('cpu');
  });
}

async function runDepth(depth: number, o: Options): Promise<FloorResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-floor-'));
  const children: ChildProcess[] = [];
  try {
    const f1 = await startRole(children, 'follower', [dir, 'f1']);
    const f2 = await startRole(children, 'follower', [dir, 'f2']);
    const ld = await startRole(children, 'leader', [dir, f1.port, f2.port]);
    const entry = o.gateway ? (await startRole(children, 'gateway', [ld.port])).port : ld.port;
    const sock = await connect(entry);
    const sentAt = new Map<number, number>();
    const latencies: number[] = [];
    let nextId = 1;
    let stopping = false;
    let outstanding = 0;
    let drained: () => void = () => undefined;
    const send = (): void => {
      const req = Buffer.alloc(REQUEST_BYTES, 5);
      req.writeUInt32LE(nextId, 0);
      sentAt.set(nextId++, performance.now());
      outstanding++;
      sock.write(req);
    };
    onFixedMessages(sock, ACK_BYTES, (acks) => {
      for (const a of acks) {
        const id = a.readUInt32LE(0);
        latencies.push(performance.now() - sentAt.get(id)!);
        sentAt.delete(id);
        outstanding--;
        if (!stopping) send();
        else if (outstanding === 0) drained();
      }
    });
    for (let i = 0; i < depth; i++) send();
    await new Promise((r) => setTimeout(r, 2000));
    latencies.length = 0;
    const replicas = [ld.child, f1.child, f2.child];
    const cpu0 = await Promise.all(replicas.map(cpuUs));
    const s0 = stealSample();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, o.seconds * 1000));
    const cpu1 = await Promise.all(replicas.map(cpuUs));
    const elapsedSec = (performance.now() - t0) / 1000;
    const steal = stealPct(s0, stealSample());
    const n = latencies.length;
    const sum = latencies.reduce((a, b) => a + b, 0);
    stopping = true;
    await new Promise<void>((r) => {
      drained = r;
      if (outstanding === 0) r();
    });
    sock.destroy();
    const cpu = cpu1.reduce((a, b, i) => a + b - cpu0[i], 0);
    return { depth, writesPerSec: n / elapsedSec, meanLatencyUs: (sum / n) * 1000, cpuUsPerWrite: cpu / n, steal };
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  log(`floor: ${o.gateway ? 'client -> gateway -> leader' : 'client -> leader'} -> 2 followers, ${o.seconds} s per depth`);
  for (const depth of o.depths) {
    const r = await runDepth(depth, o);
    process.stdout.write(
      `floor QD${r.depth}: ${r.writesPerSec.toFixed(0)} writes/s, mean latency ${r.meanLatencyUs.toFixed(0)} us, ` +
        `leader+followers CPU ${r.cpuUsPerWrite.toFixed(0)} us per write (steal ${r.steal})\n`,
    );
  }
  return 0;
}

if (process.argv[2] === '--role') {
  runRole(process.argv[3], process.argv.slice(4)).catch((err: Error) => {
    process.stderr.write(`floor role ${process.argv[3]}: ${err.message}\n`);
    process.exit(1);
  });
} else {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`floor: ${err.message}\n`);
      process.exit(2);
    },
  );
}
