// A simulated Tessera cluster for seeded fault tests (issue 3 §7): real OsdCore,
// LocalEngine, Wal and ClusterClient code, over a simulated network
// (network.ts), simulated devices and WAL segment stores with power cuts, and a
// virtual clock (scheduler.ts). An OSD "crash" stops its core, cuts the power of
// its device and WAL (unsynced writes dropped or torn) and later reopens both
// and recovers, exactly as the daemon does on restart. SIM_DEBUG=1 adds each
// boot's recovered groups and each crash's counters and segments to the log a
// failing seed prints.
import { MapCache } from '../../src/client/map-cache.js';
import { ClusterClient } from '../../src/client/client.js';
import type { OsdAddress, OsdTransport } from '../../src/client/transport.js';
import { SimSegmentStore } from '../../src/device/sim-segments.js';
import { SimDevice } from '../../src/device/sim-device.js';
import { LocalEngine } from '../../src/engine/engine.js';
import type { MonApi } from '../../src/mon/api-types.js';
import { createPool, createVolume, initialMap, osdBoot } from '../../src/mon/map.js';
import type { ClusterMap } from '../../src/mon/map-types.js';
import { ObjectStore } from '../../src/osd/objects.js';
import { OsdCore, type OsdConfig } from '../../src/osd/osd.js';
import { Status, type ClientRequest, type ClientResponse } from '../../src/osd/proto.js';
import { afterTurns, Wal, WAL_GATHER_TURNS } from '../../src/osd/wal.js';
import { TesseraError } from '../../src/stdx/errors.js';
import { Prng } from '../../src/stdx/prng.js';
import { Slab } from '../../src/stdx/slab.js';
import { decodeRaftBatch, decodeSnapshotChunk, encodeRaftBatch, encodeSnapshotChunk } from '../../src/rpc/messages.js';
import { PAYLOAD_PIECE_BYTES_MAX, PAYLOAD_SLAB_BYTES } from '../../src/io/node/rpc.js';
import { CLIENT_NODE, SimNetwork } from './network.js';
import { Scheduler } from './scheduler.js';

export const SIM_OBJECT_BYTES = 64 * 1024;

/** As io/node/rpc.ts: small frames are regions of shared slabs, larger ones buffers of their own. */
const frameSlab = new Slab(PAYLOAD_SLAB_BYTES, PAYLOAD_PIECE_BYTES_MAX);
function frameOf(parts: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const p of parts) total += p.length;
  const frame = total <= frameSlab.pieceBytesMax ? frameSlab.take(total) : Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const p of parts) {
    frame.set(p, at);
    at += p.length;
  }
  return frame;
}

const SIM_DEVICE_BYTES = 4 * 1024 * 1024;

export interface SimOsd {
  id: number;
  incarnation: number;
  device: SimDevice;
  segments: SimSegmentStore;
  core: OsdCore | null;
  engine: LocalEngine | null;
  store: ObjectStore | null;
  fatal: Error | null;
  /** WAL gather turns taken by every incarnation so far (WalOptions.gatherTurn: the busy-log path runs under faults). */
  walGatherTurns: number;
  wal: Wal | null;
}

export class SimCluster {
  readonly sched = new Scheduler();
  readonly net: SimNetwork;
  readonly prng: Prng;
  map: ClusterMap;
  readonly osds = new Map<number, SimOsd>();
  private mapWaiters: Array<{ after: number; resolve: (m: ClusterMap | null) => void }> = [];
  client!: ClusterClient;
  maps!: MapCache;
  readonly log: string[] = [];
  readonly osdConfig: Partial<OsdConfig>;

  constructor(
    readonly seed: number,
    opts: { osds: number; volumeBytes: number; pgCount: number; osdConfig?: Partial<OsdConfig>; poolObjectBytes?: number },
  ) {
    this.prng = new Prng(seed);
    this.net = new SimNetwork(this.sched, new Prng(seed ^ 0x5eed));
    this.osdConfig = opts.osdConfig ?? {};
    let map = initialMap(`sim-${seed}`);
    for (let i = 1; i <= opts.osds; i++) {
      map = osdBoot(map, { uuid: `u${i}`, host: `h${i}`, addr: `osd${i}`, port: 1000 + i, weight: 1, capacityBytes: SIM_DEVICE_BYTES }).map;
    }
    map = createPool(map, { name: 'rbd', size: 3, minSize: 2, pgCount: opts.pgCount, objectSizeBytes: opts.poolObjectBytes ?? SIM_OBJECT_BYTES }).map;
    map = createVolume(map, { name: 'v', sizeBytes: opts.volumeBytes }, '2026-01-01T00:00:00Z').map;
    this.map = map;
  }

  async start(): Promise<void> {
    for (const o of this.map.osds) {
      const device = new SimDevice(SIM_DEVICE_BYTES, new Prng(this.prng.u32()), `osd${o.id}`);
      await LocalEngine.format(device, { objectSizeBytes: SIM_OBJECT_BYTES, dataZeroed: true });
      const segments = new SimSegmentStore(new Prng(this.prng.u32()));
      const osd: SimOsd = { id: o.id, incarnation: 0, device, segments, core: null, engine: null, store: null, fatal: null, wal: null, walGatherTurns: 0 };
      this.osds.set(o.id, osd);
      await this.boot(osd);
    }
    // From now on (the scheduler runs), fdatasync takes 0–2 ms of virtual time, so
    // an OSD's passes overlap their WAL commits as they do on a disk.
    for (const osd of this.osds.values()) {
      const syncPrng = new Prng(this.prng.u32());
      osd.segments.faults.syncWait = () => this.sched.sleep(syncPrng.int(3));
      // An engine flush (checkpoints) takes 1–30 ms, so ticks, compaction and
      // snapshot installs happen while a checkpoint waits for it.
      const flushPrng = new Prng(this.prng.u32());
      osd.device.faults.flushWait = () => this.sched.sleep(1 + flushPrng.int(150));
    }
    const mon = this.monApi();
    this.maps = new MapCache({ mon, clock: this.sched.clock, waitMapMs: 1000 }, this.map);
    this.maps.startFollowing();
    const transport: OsdTransport = { request: (osd, req, timeoutMs) => this.request(osd, req, timeoutMs) };
    this.client = new ClusterClient({
      maps: this.maps,
      transport,
      clock: this.sched.clock,
      opTimeoutMs: 20_000,
      requestTimeoutMs: 500,
      retryBackoffMsMin: 5,
      retryBackoffMsMax: 200,
      seed: this.seed,
    });
  }

  /** (Re)opens an OSD's engine and WAL from its (possibly power-cut) devices and starts its core. */
  private async boot(osd: SimOsd): Promise<void> {
    osd.incarnation++;
    const inc = osd.incarnation;
    const engine = await LocalEngine.open(osd.device, { onFatal: (err) => this.onFatal(osd, inc, err) });
    // As the daemon: a batch that follows directly on the previous one waits WAL_GATHER_TURNS loop turns (WalOptions.gatherTurn).
    const { wal, groups, damage } = await Wal.open(osd.segments, { selfId: osd.id, gatherTurn: afterTurns(WAL_GATHER_TURNS, (run) => this.sched.defer(run)) });
    if (damage.length > 0) this.log.push(`osd.${osd.id}: WAL damage ${JSON.stringify(damage)}`);
    if (process.env.SIM_DEBUG) this.log.push(`${this.sched.nowMs.toFixed(1)} boot osd.${osd.id}: groups ${[...groups.entries()].map(([k, g]) => `${k & 0xffff}:last${g.entries.at(-1)?.index ?? g.snapshot?.index ?? 0}`).join(' ')}`);
    const store = new ObjectStore(engine);
    const core = new OsdCore({
      id: osd.id,
      store,
      wal,
      recovered: groups,
      clock: this.sched.clock,
      seed: (this.seed + osd.id * 7919 + inc * 104729) >>> 0,
      log: (level, msg) => {
        if (level !== 'info' || process.env.SIM_INFO) this.log.push(`${this.sched.nowMs.toFixed(1)} ${msg}`);
      },
      defer: this.sched.defer,
      onFatal: (err) => this.onFatal(osd, inc, err),
      config: this.osdConfig,
      net: {
        sendRaft: (to, batch) => {
          const target = () => this.osds.get(to);
          // Through the real codec, into memory laid out as the RPC layer's (a region
          // of a shared slab, or a buffer of its own for a large frame): a follower's
          // entries are decoded as in the daemon (the codec decides what to copy out),
          // never the leader's objects.
          const parts = encodeRaftBatch(batch);
          this.net.send(osd.id, to, () => {
            if (osd.incarnation === inc) target()?.core?.handleRaftBatch(decodeRaftBatch(frameOf(parts)));
          });
        },
        sendSnapshotChunk: (to, sent) =>
          new Promise<ClientResponse>((resolve, reject) => {
            // Through the real codec (its checks included), as between daemons.
            const chunk = decodeSnapshotChunk(Buffer.concat(encodeSnapshotChunk(sent)));
            const timer = this.sched.clock.setTimer(2000, () => reject(new TesseraError('ERR_TIMEOUT', 'snapshot chunk timed out')));
            this.net.send(osd.id, to, () => {
              const peer = this.osds.get(to);
              const peerInc = peer?.incarnation;
              if (!peer?.core) return;
              // As the daemon does: a failed chunk is answered with an IO error; a
              // peer that crashed meanwhile (power cut during its flush) answers nothing.
              const answer = (resp: ClientResponse) => {
                if (peer.incarnation !== peerInc) return;
                this.net.send(to, osd.id, () => {
                  timer.cancel();
                  resolve(resp);
                });
              };
              peer.core.handleSnapshotChunk(chunk).then(answer, (err: Error) => answer({ status: Status.Io, message: err.message }));
            });
          }),
      },
    });
    osd.engine = engine;
    osd.store = store;
    osd.core = core;
    osd.wal = wal;
    osd.fatal = null;
    core.setMap(this.map);
    core.start();
  }

  private onFatal(osd: SimOsd, inc: number, err: Error): void {
    if (osd.incarnation !== inc) return;
    this.log.push(`${this.sched.nowMs.toFixed(1)} osd.${osd.id} fatal: ${err.message}`);
    osd.fatal = err;
  }

  /** Client → OSD request over the network, FIFO per link (transport contract), with a timeout. */
  private request(addr: OsdAddress, req: ClientRequest, timeoutMs: number): Promise<ClientResponse> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = this.sched.clock.setTimer(timeoutMs, () => {
        if (settled) return;
        settled = true;
        reject(new TesseraError('ERR_TIMEOUT', `request to osd.${addr.id} timed out`));
      });
      const osd = this.osds.get(addr.id);
      if (!osd) {
        settled = true;
        timer.cancel();
        reject(new TesseraError('ERR_CLOSED', `no osd.${addr.id}`));
        return;
      }
      this.net.sendFifo(CLIENT_NODE, addr.id, () => {
        const core = osd.core;
        const inc = osd.incarnation;
        if (!core) return;
        core.handleClient(req, (resp) => {
          if (osd.incarnation !== inc) return;
          this.net.sendFifo(addr.id, CLIENT_NODE, () => {
            if (settled) return;
            settled = true;
            timer.cancel();
            resolve(resp);
          });
        });
      });
    });
  }

  private monApi(): MonApi {
    const unsupported = () => Promise.reject(new TesseraError('ERR_INVALID', 'not in the simulation'));
    return {
      getMap: async () => this.map,
      waitMap: (after, waitMs) =>
        new Promise((resolve) => {
          if (this.map.epoch > after) return resolve(this.map);
          const w = { after, resolve };
          this.mapWaiters.push(w);
          this.sched.clock.setTimer(waitMs, () => {
            const i = this.mapWaiters.indexOf(w);
            if (i >= 0) {
              this.mapWaiters.splice(i, 1);
              resolve(null);
            }
          });
        }),
      createVolume: unsupported,
      resizeVolume: unsupported,
      renameVolume: unsupported,
      deleteVolume: unsupported,
      createPool: unsupported,
      osdBoot: unsupported,
      osdReport: async () => {},
      osdOut: unsupported,
      osdIn: unsupported,
      osdRm: unsupported,
      status: unsupported,
    };
  }

  /** Publishes a new map to the client and every running OSD (each after a small random delay). */
  publish(map: ClusterMap): void {
    this.map = map;
    for (const w of this.mapWaiters.splice(0)) w.resolve(map);
    for (const osd of this.osds.values()) {
      const inc = osd.incarnation;
      this.sched.at(this.sched.nowMs + this.prng.float() * 50, () => {
        if (osd.incarnation === inc) osd.core?.setMap(this.map);
      });
    }
  }

  crash(id: number): void {
    const osd = this.osds.get(id) as SimOsd;
    this.log.push(`${this.sched.nowMs.toFixed(1)} crash osd.${id}${process.env.SIM_DEBUG ? ` counters ${JSON.stringify(osd.core?.counters)} segs ${JSON.stringify(osd.segments.counters)}` : ''}`);
    osd.incarnation++;
    osd.core?.stop();
    if (osd.wal) osd.walGatherTurns += osd.wal.stats.gatherTurns;
    osd.wal = null;
    osd.core = null;
    this.net.setDown(id, true);
    osd.device = osd.device.powerCut().device;
    const before = process.env.SIM_DEBUG ? osd.segments : null;
    osd.segments = osd.segments.powerCut().store;
    if (before) void Promise.all([before.list().catch(() => ['(dead)']), osd.segments.list()]).then(([a, b]) => this.log.push(`crash osd.${id}: segments ${a.join(',')} -> ${b.join(',')}`));
  }

  async restart(id: number): Promise<void> {
    const osd = this.osds.get(id) as SimOsd;
    this.log.push(`${this.sched.nowMs.toFixed(1)} restart osd.${id}`);
    this.net.setDown(id, false);
    await this.boot(osd);
  }

  isUp(id: number): boolean {
    return this.osds.get(id)?.core != null;
  }

  stop(): void {
    this.maps.close();
    void this.client.close();
    for (const osd of this.osds.values()) osd.core?.stop();
  }

  fatalErrors(): string[] {
    return [...this.osds.values()].filter((o) => o.fatal).map((o) => `osd.${o.id}: ${o.fatal?.message}`);
  }
}

export { Status };
