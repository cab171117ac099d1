// `tessera up`: the single-machine daemon, wiring only (SPEC CLU8). In order:
// data dir, PID file, local engine (formatting a new device and creating the
// default volume only then), NBD server, management API; then it prints the
// NBD URIs, a how-to, and the line `tessera: ready` that tests and scripts wait
// for. SIGINT/SIGTERM stop it: NBD server, API, flush + close the store,
// remove PID file, socket and token; exit 0 (1 if a step failed).
//
// Invariants: at most one daemon per data dir (the PID file, created O_EXCL,
// names a live process) and per API socket (a socket that answers is refused);
// whatever started is stopped again if a later step fails; the default volume
// is created only on the start that formatted the device, so a restart reopens
// the same volumes and a deleted vol0 stays deleted.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ApiClient } from '../api/client.js';
import { ApiServer } from '../api/server.js';
import type { DaemonStatus, IscsiAdmin, PoolAdmin } from '../api/types.js';
import {
  acquirePidFile,
  ensureDir,
  pathExists,
  releasePidFile,
  removeIfExists,
  writePrivateFile,
} from '../io/node/api-files.js';
import { TesseraError, isTesseraError } from '../stdx/errors.js';
import type { PrStore } from '../gateway/scsi/types.js';
import type { LogFn, Logger } from '../stdx/log.js';
import { formatSize } from '../stdx/size.js';
import { MultiStore } from '../volume/multi-store.js';
import type { VolumeStore } from '../volume/types.js';
import { DEFAULT_POOL } from '../pool/registry.js';
import type { PoolManagerOptions } from './pools.js';
import { IdlePoll } from '../gateway/idle-poll.js';
import { DEFAULTS, pidFilePath, type Config, type DirectIoMode } from './config.js';
import { TESSERA_VERSION } from './version.js';

/** How long one shutdown step (NBD, API, store) may take before we give up on it. */
const SHUTDOWN_STEP_MS_MAX = 30_000;
/** How long to probe an existing socket for a live daemon. */
const SOCKET_PROBE_MS = 1_000;
export const READY_LINE = 'tessera: ready';
export const API_TOKEN_FILE = 'api.token';

/** The parts `up` wires together; injected so tests can run it on MemoryVolumeStore. */
export interface UpDeps {
  openStore(opts: {
    devicePath: string;
    createSizeBytes?: number;
    directIo?: DirectIoMode;
    log?: LogFn;
    /** Called once if the engine hits a fatal error (a failed flush). */
    onFatal?: (err: Error) => void;
  }): Promise<{ store: VolumeStore; created: boolean }>;
  startNbd(opts: { host: string; port: number; store: VolumeStore; log?: LogFn; idlePoll?: IdlePoll }): Promise<NbdHandle>;
  /** Opens the disk pools of pools.json (main/pools.ts); without it the daemon has only its own device. */
  openPools?(opts: PoolManagerOptions): Promise<PoolService>;
  /** Starts the iSCSI portal (main/iscsi.ts); without it the daemon serves NBD only. */
  startIscsi?(opts: { dataDir: string; host: string; port: number; store: VolumeStore; log: LogFn; onFatal: (err: Error) => void; idlePoll?: IdlePoll }): Promise<IscsiHandle>;
}

export interface IscsiHandle extends IscsiAdmin {
  readonly host: string;
  readonly port: number;
  connectionCount(): number;
  close(): Promise<void>;
}

export interface PoolService extends PoolAdmin {
  close(): Promise<void>;
}

export interface NbdHandle {
  readonly host: string;
  readonly port: number;
  connectionCount(): number;
  close(): Promise<void>;
}

/**
 * The real engine and NBD server. Loaded on demand so that client commands
 * (`tessera volume list`) do not pay for loading the engine at startup.
 */
export async function loadRealDeps(): Promise<UpDeps> {
  const engine = await import('../engine/store.js');
  const nbd = await import('../gateway/nbd/server.js');
  const pools = await import('./pools.js');
  return {
    openStore: (opts) => engine.openLocalStore(opts),
    startNbd: (opts) => nbd.NbdServer.start(opts),
    openPools: (opts) => pools.PoolManager.open(opts),
    startIscsi: async (opts) => {
      const { IscsiService } = await import('./iscsi.js');
      const { LocalPrStore } = await import('../gateway/scsi/pr-store-local.js');
      const clusterId = await daemonId(opts.dataDir);
      const prStore = fatalOnFlushError(new LocalPrStore({ dataDir: opts.dataDir }), opts.onFatal);
      return IscsiService.start({ dataDir: opts.dataDir, host: opts.host, port: opts.port, store: opts.store, log: opts.log, prStore, clusterId, idlePoll: opts.idlePoll });
    },
  };
}

/** How the gateway's idle polling fared (logged at stop), for an operator weighing --idle-poll-us. */
export function idlePollSummary(p: IdlePoll): string {
  if (p.windowUs === 0) return 'gateway idle polling: off';
  const st = p.stats;
  return `gateway idle polling (${p.windowUs} us): ${st.windows} windows, ${st.hits} caught a request, ${st.misses} missed, ${st.skipped} pokes skipped while backed off`;
}

export interface UpIo {
  log: Logger;
  /** One line of operator-facing output (stdout). */
  out(line: string): void;
  /**
   * The engine stopped after a fatal error. Default: exit at once with status
   * 1 — after a failed fsync nothing unflushed can be trusted (GUIDE: crash and
   * recover); the next start recovers from what is on the device.
   */
  onFatal?: (err: Error) => void;
}

export class Daemon {
  private stopping: Promise<boolean> | undefined;

  private constructor(
    readonly config: Config,
    private readonly store: VolumeStore,
    private readonly pools: PoolService | undefined,
    private readonly nbd: NbdHandle,
    private readonly iscsi: IscsiHandle | undefined,
    private readonly api: ApiServer,
    private readonly io: UpIo,
    private readonly tokenPath: string | undefined,
    readonly idlePoll: IdlePoll,
  ) {}

  /** Start everything, or undo what started and throw. */
  static async start(config: Config, deps: UpDeps, io: UpIo): Promise<Daemon> {
    const log = io.log;
    const undo: Array<{ what: string; run: () => Promise<void> }> = [];
    try {
      await ensureDir(config.dataDir);
      const pidPath = pidFilePath(config);
      await acquirePidFile(pidPath, config.dataDir);
      undo.push({ what: 'PID file', run: () => releasePidFile(pidPath) });

      await refuseLiveSocket(config.api.socket);

      // Every engine (the data dir's device's and each pool's) ends the daemon the same way.
      const onFatal =
        io.onFatal ??
        ((err: Error) => {
          log.error(`fatal engine error, exiting without cleanup so that the next start recovers: ${err.message}`);
          process.exit(1);
        });
      const { store: ownStore, created } = await deps.openStore({
        devicePath: config.device.path,
        createSizeBytes: config.device.sizeBytes,
        directIo: config.device.directIo,
        log: log.child('engine').fn(),
        onFatal,
      });
      // One namespace over the data dir's own device and every disk pool.
      const store = new MultiStore(DEFAULT_POOL, ownStore);
      undo.push({ what: 'store', run: () => store.close() });
      let pools: PoolService | undefined;
      if (deps.openPools) {
        pools = await deps.openPools({
          dataDir: config.dataDir,
          store,
          log: log.child('pools'),
          defaultDevicePath: config.device.path,
          onFatal,
        });
        const p = pools;
        undo.push({ what: 'pools', run: () => p.close() });
      }
      if (created) {
        await store.create(config.defaultVolume.name, config.defaultVolume.sizeBytes);
        log.info(`created default volume ${config.defaultVolume.name} (${formatSize(config.defaultVolume.sizeBytes)})`);
      } else {
        log.info(`reopened device ${config.device.path} with ${store.list().length} volume(s)`);
      }

      // One poller for both protocols: a window opened by either keeps the whole loop awake.
      const idlePoll = new IdlePoll(config.gateway.idlePollUs);
      const nbd = await deps.startNbd({ host: config.nbd.host, port: config.nbd.port, store, log: log.child('gateway').fn(), idlePoll });
      undo.push({ what: 'NBD server', run: () => nbd.close() });
      let iscsi: IscsiHandle | undefined;
      if (deps.startIscsi && config.iscsi.port !== null) {
        const started = await deps.startIscsi({ dataDir: config.dataDir, host: config.iscsi.host, port: config.iscsi.port, store, log: log.child('gateway').fn(), onFatal, idlePoll });
        iscsi = started;
        undo.push({ what: 'iSCSI server', run: () => started.close() });
      }

      let tokenPath: string | undefined;
      let tcp: { port: number; token: string } | undefined;
      if (config.api.port !== undefined) {
        // Writes on the TCP listener need this token: any local user can reach 127.0.0.1.
        const token = randomBytes(24).toString('hex');
        tokenPath = path.join(config.dataDir, API_TOKEN_FILE);
        await writePrivateFile(tokenPath, `${token}\n`);
        const tp = tokenPath;
        undo.push({ what: 'API token', run: () => removeIfExists(tp) });
        tcp = { port: config.api.port, token };
      }
      let daemon: Daemon | undefined;
      const api = await ApiServer.start({
        store,
        pools,
        iscsi,
        log: log.child('api'),
        socketPath: config.api.socket,
        tcp,
        status: () => daemon?.daemonStatus(),
      });
      daemon = new Daemon(config, store, pools, nbd, iscsi, api, io, tokenPath, idlePoll);
      return daemon;
    } catch (err) {
      for (const step of undo.reverse()) {
        try {
          await step.run();
        } catch (undoErr) {
          log.error(`while undoing a failed start, closing the ${step.what} failed: ${(undoErr as Error).message}`);
        }
      }
      throw err;
    }
  }

  nbdUri(volumeName: string): string {
    const host = this.nbd.host.includes(':') ? `[${this.nbd.host}]` : this.nbd.host;
    return `nbd://${host}:${this.nbd.port}/${volumeName}`;
  }

  /** iscsi:// URIs of the default target's LUNs (what qemu-img and libiscsi tools take). */
  iscsiUris(): string[] {
    if (!this.iscsi) return [];
    const host = this.iscsi.host.includes(':') ? `[${this.iscsi.host}]` : this.iscsi.host;
    const def = this.iscsi.list().targets.find((t) => t.isDefault);
    return (def?.luns ?? []).map((l) => `iscsi://${host}:${this.iscsi!.port}/${def!.name}/${l.lun}`);
  }

  daemonStatus(): DaemonStatus {
    return {
      dataDir: this.config.dataDir,
      nbd: { host: this.nbd.host, port: this.nbd.port, uris: this.store.list().map((v) => this.nbdUri(v.name)) },
      ...(this.iscsi ? { iscsi: { host: this.iscsi.host, port: this.iscsi.port, uris: this.iscsiUris() } } : {}),
      api: { socket: this.api.socketPath, port: this.api.tcpPort },
      device: { path: this.config.device.path },
    };
  }

  /** The startup banner, ending with READY_LINE. */
  printReady(): void {
    const out = this.io.out;
    const volumes = this.store.list();
    out(`tessera ${TESSERA_VERSION} (pid ${process.pid}): data dir ${this.config.dataDir}, device ${this.config.device.path}`);
    if (volumes.length === 0) {
      out('NBD exports: none yet (create a volume: tessera volume create NAME --size 10G)');
    } else {
      out('NBD exports:');
      for (const v of volumes) out(`  ${this.nbdUri(v.name)}  (${formatSize(v.sizeBytes)})`);
    }
    if (this.iscsi) {
      const def = this.iscsi.list().targets.find((t) => t.isDefault);
      const uris = this.iscsiUris();
      out(uris.length === 0 ? `iSCSI portal ${this.iscsi.host}:${this.iscsi.port}: no LUNs yet` : 'iSCSI LUNs (default target):');
      uris.forEach((u, i) => out(`  ${u}  (${def!.luns[i].volume})`));
    }
    out(`Management API: unix socket ${this.api.socketPath}`);
    if (this.api.tcpPort !== undefined) {
      out(`                http://127.0.0.1:${this.api.tcpPort} (writes need the bearer token in ${this.tokenPath})`);
    }
    const example = this.nbdUri(volumes[0]?.name ?? this.config.defaultVolume.name);
    const dirFlag = cliLocationFlag(this.config);
    out('Try:');
    out(`  nbdinfo ${example}`);
    out(`  qemu-img info ${example}`);
    if (this.iscsi) out(`  iscsi-ls -s iscsi://${this.iscsi.host.includes(':') ? `[${this.iscsi.host}]` : this.iscsi.host}:${this.iscsi.port}`);
    out(`  tessera volume list${dirFlag}`);
    out(READY_LINE);
  }

  /** Idempotent; resolves true when every step succeeded. */
  stop(): Promise<boolean> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<boolean> {
    const log = this.io.log;
    let ok = true;
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await withTimeout(fn(), SHUTDOWN_STEP_MS_MAX, what);
      } catch (err) {
        ok = false;
        log.error(`shutdown: ${what} failed: ${(err as Error).message}`);
      }
    };
    log.info(`shutting down (${this.nbd.connectionCount()} NBD connection(s)${this.iscsi ? `, ${this.iscsi.connectionCount()} iSCSI connection(s)` : ''})`);
    if (this.iscsi) {
      const iscsi = this.iscsi;
      await step('closing the iSCSI server', () => iscsi.close());
    }
    await step('closing the NBD server', () => this.nbd.close());
    log.info(idlePollSummary(this.idlePoll));
    await step('closing the management API', () => this.api.close());
    if (this.pools) {
      const pools = this.pools;
      await step('stopping pool jobs', () => pools.close());
    }
    await step('flushing volumes', async () => {
      for (const v of this.store.list()) await this.store.open(v.name).flush();
    });
    await step('closing the store', () => this.store.close());
    await step('removing the API socket', () => removeIfExists(this.config.api.socket));
    if (this.tokenPath) {
      const tp = this.tokenPath;
      await step('removing the API token', () => removeIfExists(tp));
    }
    await step('removing the PID file', () => releasePidFile(pidFilePath(this.config)));
    log.info(ok ? 'stopped' : 'stopped with errors');
    return ok;
  }
}

/** What `tessera volume list`, run from the same directory, needs to find this daemon. */
function cliLocationFlag(config: Config): string {
  if (config.api.socket === path.resolve(DEFAULTS.dataDir, DEFAULTS.socketFile)) return '';
  if (config.api.socket === path.join(config.dataDir, DEFAULTS.socketFile)) return ` --data-dir ${config.dataDir}`;
  return ` --socket ${config.api.socket}`;
}

/** A socket file that still answers belongs to another daemon: refuse. One that does not is stale: remove it. */
async function refuseLiveSocket(socketPath: string): Promise<void> {
  if (!(await pathExists(socketPath))) return;
  const probe = new ApiClient({ target: { socketPath }, timeoutMs: SOCKET_PROBE_MS });
  let pid: number | undefined;
  try {
    pid = (await probe.status()).pid;
  } catch {
    await removeIfExists(socketPath); // nothing answers: left over from a daemon that died
    return;
  }
  throw new TesseraError('ERR_BUSY', `another tessera daemon (pid ${pid}) is serving the API socket ${socketPath}; stop it or use another --socket`);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TesseraError('ERR_TIMEOUT', `${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface SignalSource {
  on(signal: 'SIGINT' | 'SIGTERM', handler: () => void): void;
  off(signal: 'SIGINT' | 'SIGTERM', handler: () => void): void;
}

/**
 * Run the daemon in the foreground until SIGINT/SIGTERM; resolves with the
 * exit status (0 clean, 1 if a shutdown step failed). A second signal during
 * shutdown exits at once with status 1.
 */
export async function runUp(config: Config, deps: UpDeps, io: UpIo, signals: SignalSource = process): Promise<number> {
  const daemon = await Daemon.start(config, deps, io);
  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (): void => {
      if (signalled) {
        io.log.error('second signal during shutdown: exiting now');
        process.exit(1);
      }
      signalled = true;
      void daemon.stop().then((ok) => {
        signals.off('SIGINT', onSignal);
        signals.off('SIGTERM', onSignal);
        resolve(ok ? 0 : 1);
      });
    };
    signals.on('SIGINT', onSignal);
    signals.on('SIGTERM', onSignal);
    daemon.printReady();
  });
}

/**
 * A random id kept in <data-dir>/daemon.id: LU identities (INQUIRY VPD 0x83) are
 * derived from it and the volume id, so they survive restarts.
 */
async function daemonId(dataDir: string): Promise<string> {
  const { readStateFile, replaceStateFile } = await import('../io/node/registry-file.js');
  const file = path.join(dataDir, 'daemon.id');
  const text = await readStateFile(file);
  if (text !== undefined && /^[0-9a-f]{32}\n?$/.test(text)) return text.trim();
  if (text !== undefined) throw new TesseraError('ERR_FORMAT', `${file} is not a daemon id (32 hex digits)`);
  const id = randomBytes(16).toString('hex');
  await replaceStateFile(file, id + '\n');
  return id;
}

/**
 * A PR store whose failed fsync ends the daemon like the engine's does: a
 * reservation that may or may not be on disk must not be answered either way.
 */
export function fatalOnFlushError(store: PrStore, onFatal: (err: Error) => void): PrStore {
  const check = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err: unknown) => {
      if (isTesseraError(err, 'ERR_DEVICE_FLUSH')) onFatal(err);
      throw err;
    });
  return {
    current: (key) => store.current(key),
    load: (key) => check(store.load(key)),
    compareAndSet: (key, rev, state) => check(store.compareAndSet(key, rev, state)),
    subscribe: (key, fn) => store.subscribe(key, fn),
    close: () => store.close(),
  };
}
