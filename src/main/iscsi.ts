// The daemon's iSCSI side, wiring only: loads <data-dir>/iscsi.json (targets,
// LUN maps, ACLs, CHAP), starts the iSCSI server with a Portal over the
// daemon's VolumeStore and a PrStore, keeps the targets in step with the
// volume list, and implements the API's IscsiAdmin by editing the config
// (targets.ts), persisting it, then applying it.
//
// Invariants:
// - A change is on disk (atomic replace) before the API answers and before the
//   portal applies it; a damaged iscsi.json stops the start, naming the file.
// - New volumes appear as LUNs of the default target within refreshMs, and at
//   once after a change made through this daemon's API.
import type { IdlePoll } from '../gateway/idle-poll.js';
import path from 'node:path';
import type { IscsiAdmin, IscsiChapRequest, IscsiTargetInfo, IscsiTargetListResponse } from '../api/types.js';
import { readStateFile, replaceStateFile } from '../io/node/registry-file.js';
import { IscsiServer } from '../gateway/iscsi/server.js';
import { Portal } from '../gateway/iscsi/portal.js';
import type { LuHandle, LuSpec } from '../gateway/iscsi/portal.js';
import {
  DEFAULT_TARGET_NAME,
  ISCSI_CONFIG_FILE,
  createTarget,
  deleteTarget,
  emptyIscsiConfig,
  formatIscsiConfig,
  mapLun,
  parseIscsiConfig,
  setChap,
  setInitiators,
  unmapLun,
  type ChapCredentials,
  type IscsiConfig,
} from '../gateway/iscsi/targets.js';
import { ScsiLogicalUnit } from '../gateway/scsi/lu.js';
import { RangeLock } from '../gateway/scsi/range-lock.js';
import { Spc2Reservation } from '../gateway/scsi/reserve6.js';
import { PrGate } from '../gateway/scsi/pr-gate.js';
import type { PrStore } from '../gateway/scsi/types.js';
import { TesseraError } from '../stdx/errors.js';
import type { LogFn } from '../stdx/log.js';
import type { VolumeStore } from '../volume/types.js';

const REFRESH_MS_DEFAULT = 1_000;

export interface IscsiServiceOptions {
  dataDir: string;
  host: string;
  port: number;
  /** Target portal group tag; gateways exporting the same volumes should differ. */
  tpgt?: number;
  store: VolumeStore;
  prStore: PrStore | null;
  /** Stable id of the cluster or daemon: LU identities (VPD 0x83) derive from it. */
  clusterId: string;
  log: LogFn;
  refreshMs?: number;
  /** The process's idle poller (gateway/idle-poll.ts), shared with the NBD server. */
  idlePoll?: IdlePoll;
}

export class IscsiService implements IscsiAdmin {
  private cfg: IscsiConfig;
  private server!: IscsiServer;
  private timer: NodeJS.Timeout | null = null;
  private persisting: Promise<void> = Promise.resolve();
  readonly perVolume = new Map<number, { rangeLock: RangeLock; spc2Reservation: Spc2Reservation }>();

  private constructor(
    private readonly opts: IscsiServiceOptions,
    cfg: IscsiConfig,
    private readonly file: string,
  ) {
    this.cfg = cfg;
  }

  get host(): string {
    return this.server.host;
  }

  get port(): number {
    return this.server.port;
  }

  static async start(opts: IscsiServiceOptions): Promise<IscsiService> {
    const file = path.join(opts.dataDir, ISCSI_CONFIG_FILE);
    const text = await readStateFile(file);
    const cfg = text === undefined ? emptyIscsiConfig() : parseIscsiConfig(text, file);
    const svc = new IscsiService(opts, cfg, file);
    svc.server = await IscsiServer.start({
      host: opts.host,
      port: opts.port,
      log: opts.log,
      idlePoll: opts.idlePoll,
      portal: (address) =>
        new Portal(
          {
            address,
            tpgt: opts.tpgt ?? 1,
            store: opts.store,
            config: () => svc.cfg,
            onDefaultLunsChanged: (next) => {
              svc.cfg = next;
              svc.persistInBackground();
            },
            prStore: opts.prStore,
            onVolumeGone: (id) => svc.perVolume.delete(id),
            makeLu: (spec) => svc.makeLu(spec),
            log: opts.log,
          },
          (store, key, effects) => PrGate.open(store, key, effects, { log: opts.log }),
        ),
    });
    const refreshMs = opts.refreshMs ?? REFRESH_MS_DEFAULT;
    svc.timer = setInterval(() => svc.refresh(), refreshMs);
    svc.timer.unref();
    return svc;
  }

  private makeLu(spec: LuSpec): LuHandle {
    const target = () => this.server?.portal.target(spec.targetName);
    // LUs of one volume (on several targets) share the COMPARE AND WRITE range lock and
    // the SPC-2 reservation, so both hold across targets of this gateway.
    let shared = this.perVolume.get(spec.info.id);
    if (shared === undefined) {
      shared = { rangeLock: new RangeLock(), spc2Reservation: new Spc2Reservation() };
      this.perVolume.set(spec.info.id, shared);
    }
    const lu = new ScsiLogicalUnit({
      lun: spec.lun,
      volume: spec.volume,
      clusterId: this.opts.clusterId,
      gate: spec.gate,
      rangeLock: shared.rangeLock,
      spc2Reservation: shared.spc2Reservation,
      luns: () => target()?.luns() ?? [spec.lun],
      objectSizeBytes: spec.info.objectSizeBytes,
    });
    return { lu, queueUnitAttention: (nexusKey, asc, ascq) => lu.unitAttentionFor(nexusKey, asc, ascq) };
  }

  /** Applies the volume list (new and deleted volumes) to the targets. */
  refresh(): void {
    try {
      this.server?.portal.refresh();
    } catch (err) {
      this.opts.log('error', `refreshing targets failed: ${(err as Error).message}`);
    }
  }

  /** Runs config changes one at a time (the API's calls and the refresh's LUN assignments). */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.persisting.then(fn);
    this.persisting = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private persistInBackground(): void {
    void this.serialized(() => replaceStateFile(this.file, formatIscsiConfig(this.cfg))).catch((err: Error) => this.opts.log('error', `saving ${this.file} failed: ${err.message}`));
  }

  /**
   * Computes the new config from the current one inside the queue (so concurrent
   * changes never lose each other), persists it, then makes it current and applies it.
   */
  private commit(edit: (cfg: IscsiConfig) => IscsiConfig): Promise<void> {
    return this.serialized(async () => {
      const next = edit(this.cfg);
      await replaceStateFile(this.file, formatIscsiConfig(next));
      this.cfg = next;
      this.refresh();
    });
  }

  async close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.server.close();
    await this.persisting;
    await this.opts.prStore?.close();
  }

  connectionCount(): number {
    return this.server.connectionCount();
  }

  // ---- IscsiAdmin ----

  list(): IscsiTargetListResponse {
    this.refresh();
    const names = [DEFAULT_TARGET_NAME, ...this.cfg.targets.map((t) => t.name)];
    return { portal: { host: this.server.host, port: this.server.port }, targets: names.map((n) => this.info(n)) };
  }

  private info(name: string): IscsiTargetInfo {
    const byId = new Map(this.opts.store.list().map((v) => [v.id, v]));
    const isDefault = name === DEFAULT_TARGET_NAME;
    const t = isDefault ? null : this.cfg.targets.find((x) => x.name === name);
    if (!isDefault && t === undefined) throw new TesseraError('ERR_NOT_FOUND', `no target ${name}`);
    const luns = (isDefault ? this.cfg.defaultLuns : t!.luns).flatMap((m) => {
      const v = byId.get(m.volumeId);
      return v === undefined ? [] : [{ lun: m.lun, volume: v.name, sizeBytes: v.sizeBytes }];
    });
    const chap = isDefault ? this.cfg.defaultChap : t!.chap;
    return {
      name,
      ...(t?.alias !== undefined ? { alias: t.alias } : {}),
      isDefault,
      luns,
      initiators: isDefault ? this.cfg.defaultInitiators : t!.initiators,
      chap: chap === null ? null : { user: chap.user, ...(chap.mutualUser !== undefined ? { mutualUser: chap.mutualUser } : {}) },
      sessions: this.server.portal.sessionCount(name),
    };
  }

  async createTarget(req: { name: string; alias?: string; initiators?: string[]; chap?: IscsiChapRequest | null }): Promise<IscsiTargetInfo> {
    await this.commit((cfg) => createTarget(cfg, { name: req.name, ...(req.alias !== undefined ? { alias: req.alias } : {}), initiators: req.initiators ?? [], chap: chapOf(req.chap ?? null) }));
    this.opts.log('info', `created target ${req.name}`);
    return this.info(req.name);
  }

  async deleteTarget(name: string): Promise<void> {
    deleteTarget(this.cfg, name); // refuses the default target and unknown names before anything ends
    this.server.portal.closeSessions(name, `target ${name} deleted`);
    await this.commit((cfg) => deleteTarget(cfg, name));
    this.opts.log('info', `deleted target ${name}`);
  }

  async mapLun(target: string, volume: string, lun?: number): Promise<IscsiTargetInfo> {
    const info = this.opts.store.info(volume);
    let chosen = -1;
    await this.commit((cfg) => {
      const r = mapLun(cfg, target, info.id, lun);
      chosen = r.lun;
      return r.cfg;
    });
    this.opts.log('info', `${volume} is LUN ${chosen} of ${target}`);
    return this.info(target);
  }

  async unmapLun(target: string, lun: number): Promise<IscsiTargetInfo> {
    await this.commit((cfg) => unmapLun(cfg, target, lun));
    this.opts.log('info', `removed LUN ${lun} of ${target}`);
    return this.info(target);
  }

  async setInitiators(target: string, initiators: string[]): Promise<IscsiTargetInfo> {
    if (target !== DEFAULT_TARGET_NAME && !this.cfg.targets.some((t) => t.name === target)) throw new TesseraError('ERR_NOT_FOUND', `no target ${target}`);
    await this.commit((cfg) => setInitiators(cfg, target, initiators));
    // Sessions of initiators that are no longer allowed end now.
    const allowed = new Set(initiators);
    if (allowed.size > 0) this.server.portal.closeSessionsWhere(target, (initiator) => !allowed.has(initiator), 'initiator no longer allowed');
    return this.info(target);
  }

  async setChap(target: string, chap: IscsiChapRequest | null): Promise<IscsiTargetInfo> {
    if (target !== DEFAULT_TARGET_NAME && !this.cfg.targets.some((t) => t.name === target)) throw new TesseraError('ERR_NOT_FOUND', `no target ${target}`);
    await this.commit((cfg) => setChap(cfg, target, chapOf(chap)));
    return this.info(target);
  }
}

function chapOf(c: IscsiChapRequest | null): ChapCredentials | null {
  if (c === null) return null;
  return { user: c.user, secret: c.secret, ...(c.mutualUser !== undefined ? { mutualUser: c.mutualUser } : {}), ...(c.mutualSecret !== undefined ? { mutualSecret: c.mutualSecret } : {}) };
}
