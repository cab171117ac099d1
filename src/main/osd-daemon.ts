// `tessera osd`: one OSD process, wiring only. In order: data dir and identity
// (a uuid kept in <dataDir>/osd.json, so a restart gets the same OSD id), the
// local engine on <dataDir>/dev.img (formatted sparse on first start), the RPC
// listener, registration with the monitor (osdBoot → id and map), the WAL in
// <dataDir>/wal (recovery), then the OsdCore; afterwards it follows the map
// (long poll) and reports PG states every REPORT_INTERVAL_MS. A WAL or engine
// failure is fatal: the process exits 1 and recovers on restart (GUIDE habit 9).
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { openLocalStore } from '../engine/store.js';
import { acquirePidFile, ensureDir, releasePidFile, writePrivateFile } from '../io/node/api-files.js';
import { nodeClock } from '../io/node/clock.js';
import { RpcOsdNet } from '../io/node/osd-rpc.js';
import { RpcServer } from '../io/node/rpc.js';
import { NodeSegmentStore } from '../io/node/segment-store.js';
import { FileDevice } from '../io/node/file-device.js';
import { MonClient } from '../mon/client.js';
import type { ClusterMap } from '../mon/map-types.js';
import { ObjectStore } from '../osd/objects.js';
import { OSD_CONFIG_DEFAULTS, OsdCore } from '../osd/osd.js';
import { Method, Status, type ClientResponse } from '../osd/proto.js';
import { afterTurns, Wal, WAL_GATHER_TURNS } from '../osd/wal.js';
import { FRAME_HEADROOM_BYTES } from '../rpc/headroom.js';
import { decodeClientRequest, decodeRaftBatch, decodeSnapshotChunk, encodeClientResponse } from '../rpc/messages.js';
import { TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import type { ClusterConfig } from './cluster-config.js';

/** WAL flushes with at most this much appended since the previous one run on the loop thread (segment-store.ts)... */
const WAL_SYNC_INLINE_BYTES_MAX = 16 * 1024;
/**
 * ...when the previous flush ended at least this long ago: a QD1 write finds the
 * log quiet (one flush every ~700 us here), QD32 flushes back to back. Blocking the
 * loop there stalled peers and clients (session 18, 3-replica NBD, 1 GiB region:
 * rw4k-qd32 7,062 against 6,892 writes/s, rw4k-qd1 711 against 733 us, means of
 * 4 interleaved runs, inside the host's noise; docs/benchmarks.md "Session 18").
 */
const WAL_SYNC_INLINE_QUIET_US = 250;
/**
 * Old WAL segment files kept for reuse (recycling, io/segments.ts): overwriting a
 * file's blocks makes each fdatasync about half as costly as appending at its end
 * (no inode write, no block allocation), which took ~0.13 ms off a 3-replica QD1
 * write here. Six cover one checkpoint cycle (256 MiB of 64 MiB segments, plus
 * the checkpoint's own), at the price of up to 384 MiB of disk per OSD.
 */
const WAL_SPARE_SEGMENTS = 6;

export const REPORT_INTERVAL_MS = 1000;
export const OSD_READY_PREFIX = 'tessera-osd: ready';

export interface RunningOsd {
  id: number;
  port: number;
  core: OsdCore;
  stop(): Promise<void>;
}

async function loadIdentity(dataDir: string): Promise<{ uuid: string }> {
  const file = path.join(dataDir, 'osd.json');
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { uuid?: unknown };
    if (typeof parsed.uuid !== 'string' || parsed.uuid.length === 0) throw new TesseraError('ERR_FORMAT', `${file}: no uuid`);
    return { uuid: parsed.uuid };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const identity = { uuid: randomUUID() };
    await writePrivateFile(file, JSON.stringify(identity) + '\n');
    return identity;
  }
}

export async function runOsd(cfg: ClusterConfig, log: Logger, onFatal: (err: Error) => void): Promise<RunningOsd> {
  await ensureDir(cfg.osd.dataDir);
  // One OSD per data dir: two processes sharing a device file and WAL would corrupt both.
  const pidPath = path.join(cfg.osd.dataDir, 'osd.pid');
  await acquirePidFile(pidPath, cfg.osd.dataDir);
  // A start that fails half way (port taken, no monitor, WAL unreadable) releases
  // what it opened, last first, and the PID file.
  const undo: (() => Promise<unknown>)[] = [() => releasePidFile(pidPath)];
  try {
    return await startOsd(cfg, log, onFatal, pidPath, undo);
  } catch (err) {
    for (const u of undo.reverse()) await u().catch(() => undefined);
    throw err;
  }
}

async function startOsd(cfg: ClusterConfig, log: Logger, onFatal: (err: Error) => void, pidPath: string, undo: (() => Promise<unknown>)[]): Promise<RunningOsd> {
  const logFn = (level: 'info' | 'warn' | 'error', msg: string) => log[level](msg);
  const { uuid } = await loadIdentity(cfg.osd.dataDir);
  const { engine } = await openLocalStore({
    devicePath: path.join(cfg.osd.dataDir, 'dev.img'),
    createSizeBytes: cfg.osd.deviceSizeBytes,
    directIo: cfg.osd.directIo,
    // OSDs share the host's cores (several per host, all busy under load): the thread
    // pool's hand-off per write cost ~10 % more OSD CPU per replicated 4 KiB write than
    // writing inline (cluster bench, rw4k-qd32, session 10).
    inlineWrites: 'all',
    log: logFn,
    onFatal,
  });
  undo.push(() => engine.close());
  let core: OsdCore | null = null;
  let map: ClusterMap | null = null;
  const server = new RpcServer((conn, frame) => {
    const c = core;
    if (frame.method === Method.RaftBatch) {
      if (c) c.handleRaftBatch(decodeRaftBatch(frame.payload));
      return;
    }
    const reply = (resp: ClientResponse) => {
      // Headroom: the frame header goes into the response's own head buffer (one allocation, one iovec less).
      const enc = encodeClientResponse(frame.method, resp, FRAME_HEADROOM_BYTES);
      conn.reply(frame.requestId, enc.status, enc.parts, { headroom: true });
    };
    if (!c) return reply({ status: Status.NotReady, message: 'OSD starting' });
    try {
      if (frame.method === Method.SnapshotChunk) {
        // The chunk's data views a socket read: the receiver writes it before replying.
        c.handleSnapshotChunk(decodeSnapshotChunk(frame.payload)).then(reply, (err: Error) => reply({ status: Status.Io, message: err.message }));
        return;
      }
      // A write's data views the socket's read buffer; handleClient copies it into
      // the raft entry (encodeOp) within this turn, so no copy is needed here.
      c.handleClient(decodeClientRequest(frame.method, frame.payload), reply);
    } catch (err) {
      reply({ status: Status.Invalid, message: (err as Error).message });
    }
  }, { log: logFn });
  const port = await server.listen(cfg.osd.host, cfg.osd.port);
  undo.push(() => server.close());
  const mon = new MonClient({ addrs: cfg.monitors });
  const boot = await mon.osdBoot({ uuid, host: cfg.osd.hostName, addr: cfg.osd.host, port, weight: cfg.osd.weight, capacityBytes: cfg.osd.deviceSizeBytes });
  const osdId = boot.osdId;
  map = boot.map;
  // The WAL writes on the loop thread (cheaper in CPU than libuv's pool) and flushes
  // there too while little was appended since the last flush and the log was quiet, else on the pool (see
  // segment-store.ts); its writer starts in the check phase, after this turn's sends.
  const segments = await NodeSegmentStore.openDir(path.join(cfg.osd.dataDir, 'wal'), {
    blockingIo: true,
    syncInlineBytesMax: WAL_SYNC_INLINE_BYTES_MAX,
    syncInlineQuietUs: WAL_SYNC_INLINE_QUIET_US,
    spareSegmentsMax: WAL_SPARE_SEGMENTS,
  });
  const { wal, groups, damage, tornTail } = await Wal.open(segments, { selfId: osdId, schedule: (run) => setImmediate(run), gatherTurn: afterTurns(WAL_GATHER_TURNS, setImmediate) });
  undo.push(() => wal.close());
  if (damage.length > 0) log.warn(`osd.${osdId}: WAL damaged in the middle at ${damage.length} place(s); affected PGs stay out of elections until repaired from peers`);
  if (tornTail) log.info(`osd.${osdId}: dropped an unacknowledged torn WAL tail`);
  const net = new RpcOsdNet((id) => {
    const o = map?.osds.find((x) => x.id === id);
    return o ? `${o.addr}:${o.port}` : null;
  });
  const fatal = (err: Error) => {
    log.error(`osd.${osdId}: fatal: ${err.message}`);
    onFatal(err);
  };
  core = new OsdCore({
    id: osdId,
    store: new ObjectStore(engine),
    wal,
    recovered: groups,
    clock: nodeClock,
    net,
    seed: (Date.now() ^ (process.pid << 8)) >>> 0,
    log: logFn,
    defer: (cb) => setImmediate(cb),
    onFatal: fatal,
    config: { tickMs: cfg.tickMs, raft: { ...OSD_CONFIG_DEFAULTS.raft, electionTicks: cfg.electionTicks, heartbeatTicks: Math.max(1, Math.floor(cfg.electionTicks / 5)) }, recoveryBytesPerSec: cfg.recoveryBytesPerSec },
  });
  core.setMap(map);
  core.start();
  let stopped = false;
  const running = core;
  // Follow the map.
  void (async () => {
    while (!stopped) {
      try {
        const next = await mon.waitMap(map?.epoch ?? 0, 10_000);
        if (next && !stopped) {
          const before = map;
          map = next;
          running.setMap(next);
          for (const o of next.osds) {
            const was = before?.osds.find((x) => x.id === o.id);
            if (o.up && o.id !== osdId && (!was || !was.up || was.port !== o.port || was.addr !== o.addr)) net.peerUp(o.id);
          }
        }
      } catch (err) {
        if (!stopped) log.warn(`osd.${osdId}: map watch: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  })();
  // One report in flight at a time: during a monitor failover a report retries for
  // seconds, and a new one every interval would pile up.
  let reporting = false;
  const reportTimer = setInterval(() => {
    if (reporting) return;
    reporting = true;
    mon
      .osdReport({ ...running.report(), uuid })
      .catch((err: Error) => log.warn(`osd.${osdId}: report: ${err.message}`))
      .finally(() => (reporting = false));
  }, REPORT_INTERVAL_MS);
  // TESSERA_OSD_STATS_MS: log the loop's counters and CPU at this interval (benchmarks, debugging).
  const statsMs = Number(process.env.TESSERA_OSD_STATS_MS ?? 0);
  let statsTimer: NodeJS.Timeout | undefined;
  if (Number.isInteger(statsMs) && statsMs > 0) {
    let cpu0 = process.cpuUsage();
    statsTimer = setInterval(() => {
      const cpu = process.cpuUsage(cpu0);
      cpu0 = process.cpuUsage();
      const mem = process.memoryUsage();
      const mib = (n: number) => Math.round(n / 2 ** 20);
      const memMiB = { rss: mib(mem.rss), heapUsed: mib(mem.heapUsed), heapTotal: mib(mem.heapTotal), arrayBuffers: mib(mem.arrayBuffers) };
      const dev = engine.device;
      const devIos = dev instanceof FileDevice ? { sync: dev.syncIos, async: dev.asyncIos, pageAdvice: dev.pageAdvice.calls, pageAdviceErrors: dev.pageAdvice.errors } : null;
      log.info(`osd.${osdId}: stats ${JSON.stringify({ ...running.counters, raftFramesDropped: net.dropped, wal: wal.stats, devIos, cpuMs: Math.round((cpu.user + cpu.system) / 1000), memMiB })}`);
    }, statsMs);
  }
  log.info(`osd.${osdId} listening on ${cfg.osd.host}:${port}`);
  return {
    id: osdId,
    port,
    core: running,
    async stop() {
      stopped = true;
      clearInterval(reportTimer);
      clearInterval(statsTimer);
      running.stop();
      await server.close();
      await net.pool.close();
      await wal.close().catch(() => {});
      await engine.close().catch(() => {});
      await releasePidFile(pidPath).catch(() => {});
    },
  };
}
