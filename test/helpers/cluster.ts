// A real replicated Tessera cluster of separate processes for the conformance
// tests (issue 3 parts 1, 5 and 7 "Real processes"): one monitor
// (`tessera mon`), N OSDs (`tessera osd run`) and one gateway
// (`tessera gateway`), all started from ONE shared cluster config file, each on
// 127.0.0.1 with its own free port and data dir under one temp dir. Tests kill
// -9, restart, SIGSTOP/SIGCONT individual daemons by PID, and read the cluster
// state from the monitor's HTTP API (/v1/status, /v1/map) or the CLI. The
// gateway serves iSCSI only when asked (opts.iscsi, on a free port); addGateway()
// starts more gateways on the same config, each with its own data dir and ports.
//
// Invariants:
// - Every process this file starts is tracked until it exits; dispose() SIGCONTs
//   and stops every one of them by PID (SIGTERM, then SIGKILL after a grace
//   period) and removes the temp dir, even after a failure; if the test process
//   exits first, survivors are SIGKILLed.
// - A daemon start resolves only after its ready line, and rejects with its
//   output tail if it exits first or misses its deadline.
// - Every wait (waitFor) has a deadline and fails naming what it waited for,
//   the last observed value, and the tail of every daemon's output (dump()).
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { RpcOsdTransport } from '../../src/io/node/osd-rpc.js';
import type { ClusterStatus } from '../../src/mon/api-types.js';
import type { ClusterMap } from '../../src/mon/map-types.js';
import { Method, Status } from '../../src/osd/proto.js';
import { freePort, makeTempDir, READY_LINE, REPO_ROOT, TESSERA_BIN } from './daemon.js';
import { run, tail, type RunResult } from './run.js';
import { TrackedChild, type ExitStatus } from './child.js';

const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 15_000;
const CLI_TIMEOUT_MS = 20_000;
const HTTP_TIMEOUT_MS = 3_000;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One daemon process (any tessera command that runs in the foreground). */
export class Proc extends TrackedChild {
  readonly startedAtMs = Date.now();

  constructor(
    /** For messages; an OSD's is renamed to its id once known. */
    public name: string,
    readonly args: string[],
    child: ChildProcess,
  ) {
    super(child);
  }

  protected override label(): string {
    return `${this.name} (pid ${this.pid})`;
  }

  /** SIGCONT (if stopped), SIGTERM, SIGKILL after graceMs. */
  override stop(graceMs = STOP_GRACE_MS): Promise<ExitStatus & { killed: boolean }> {
    return super.stop(graceMs);
  }

  describe(lines = 25): string {
    return `=== ${this.name} pid ${this.pid}: ${this.stateText()}\n$ node ${this.args.join(' ')}\n--- stdout (tail) ---\n${tail(this.stdout, lines)}\n--- stderr (tail) ---\n${tail(this.stderr, lines)}`;
  }
}

/** Spawns `node [NODE_ARGS] bin/tessera.js ARGS` and resolves once a stdout line matches `ready`. */
export async function startDaemon(
  name: string,
  args: string[],
  ready: RegExp,
  timeoutMs = READY_TIMEOUT_MS,
  nodeArgs: readonly string[] = [],
  env: Readonly<Record<string, string>> = {},
): Promise<{ proc: Proc; line: string }> {
  const fullArgs = [...nodeArgs, TESSERA_BIN, ...args];
  const child = spawn(process.execPath, fullArgs, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const proc = new Proc(name, fullArgs, child);
  const outcome = await new Promise<{ kind: 'ready'; line: string } | { kind: 'exited' | 'timeout' | 'error' }>((resolve) => {
    let buf = '';
    const timer = setTimeout(() => resolve({ kind: 'timeout' }), timeoutMs);
    child.stdout!.on('data', (s: string) => {
      buf += s;
      const line = buf.split('\n').find((l) => ready.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve({ kind: 'ready', line });
      }
    });
    child.on('error', () => {
      clearTimeout(timer);
      resolve({ kind: 'error' });
    });
    void proc.exited.then(() => {
      clearTimeout(timer);
      resolve({ kind: 'exited' });
    });
  });
  if (outcome.kind !== 'ready') {
    if (proc.alive) await proc.kill9();
    throw new Error(`${name} did not become ready (${outcome.kind === 'timeout' ? `no line matching ${ready} within ${timeoutMs} ms` : outcome.kind}):\n${proc.describe(40)}`);
  }
  return { proc, line: outcome.line };
}

export interface OsdSlot {
  /** Index in this fixture (1-based, start order). */
  index: number;
  /** OSD id assigned by the monitor (from the ready line). */
  id: number;
  port: number;
  dataDir: string;
  proc: Proc;
}

export interface ClusterOptions {
  osds: number;
  pgCount: number;
  deviceSize: string;
  osdDownAfterMs: number;
  osdOutAfterMs: number;
  recoveryBytesPerSec?: number;
  tickMs?: number;
  electionTicks?: number;
  /** Extra environment of every OSD process (e.g. TESSERA_OSD_STATS_MS). */
  osdEnv?: Readonly<Record<string, string>>;
  /**
   * Serve iSCSI from the gateway on a free port with this target portal group tag.
   * Default: none — the config says `"iscsi": {"port": "off"}`, since the default
   * port 3260 would collide between tests running in parallel.
   */
  iscsi?: { tpgt: number };
}

/** A gateway started with flags on top of the shared config (addGateway): its own data dir and ports. */
export interface GatewaySlot {
  /** 2-based: the config's own gateway (`fx.gateway`) is the first. */
  index: number;
  name: string;
  dataDir: string;
  nbdPort: number;
  /** null: `--iscsi-port off`. */
  iscsiPort: number | null;
  tpgt: number;
  proc: Proc;
}

/** Mon + OSDs + gateway from one shared config file. */
export class ClusterFixture {
  mon!: Proc;
  gateway!: Proc;
  readonly osds: OsdSlot[] = [];
  /** Gateways beyond the config's own one (addGateway). */
  readonly extraGateways: GatewaySlot[] = [];
  /** Every process ever started here (killed ones too), for dumps. */
  readonly history: Proc[] = [];
  readonly configPath: string;

  private constructor(
    readonly dir: string,
    readonly monPort: number,
    readonly nbdPort: number,
    readonly opts: ClusterOptions,
    /** The config gateway's iSCSI port; null unless opts.iscsi. */
    readonly iscsiPort: number | null = null,
  ) {
    this.configPath = path.join(dir, 'cluster.json');
  }

  get monAddr(): string {
    return `127.0.0.1:${this.monPort}`;
  }
  get gatewayDir(): string {
    return path.join(this.dir, 'gateway');
  }
  uri(volume = 'vol0'): string {
    return `nbd://127.0.0.1:${this.nbdPort}/${volume}`;
  }
  get config(): Record<string, unknown> {
    return {
      cluster: {
        monitors: [this.monAddr],
        osdDownAfterMs: this.opts.osdDownAfterMs,
        osdOutAfterMs: this.opts.osdOutAfterMs,
        defaultPool: { size: 3, minSize: 2, pgCount: this.opts.pgCount, failureDomain: 'osd' },
        ...(this.opts.tickMs !== undefined ? { tickMs: this.opts.tickMs } : {}),
        ...(this.opts.electionTicks !== undefined ? { electionTicks: this.opts.electionTicks } : {}),
        ...(this.opts.recoveryBytesPerSec !== undefined ? { recoveryBytesPerSec: this.opts.recoveryBytesPerSec } : {}),
      },
      mon: { port: this.monPort, dataDir: 'mon' },
      osd: { deviceSizeBytes: this.opts.deviceSize },
      gateway: {
        dataDir: 'gateway',
        nbd: { host: '127.0.0.1', port: this.nbdPort },
        iscsi: this.iscsiPort === null ? { port: 'off' } : { host: '127.0.0.1', port: this.iscsiPort, tpgt: this.opts.iscsi?.tpgt ?? 1 },
      },
    };
  }

  /** Writes the shared config and starts mon, `opts.osds` OSDs and the gateway. On failure everything started is stopped. */
  static async start(opts: ClusterOptions): Promise<ClusterFixture> {
    const fx = new ClusterFixture(await makeTempDir('tessera-cluster-'), await freePort(), await freePort(), opts, opts.iscsi ? await freePort() : null);
    try {
      await writeFile(fx.configPath, JSON.stringify(fx.config, null, 2) + '\n');
      await fx.startMon();
      await Promise.all(Array.from({ length: opts.osds }, () => fx.addOsd()));
      await fx.startGateway();
    } catch (err) {
      const dump = fx.dump();
      await fx.dispose();
      throw new Error(`${(err as Error).message}\n${dump}`);
    }
    return fx;
  }

  private track(p: Proc): Proc {
    this.history.push(p);
    return p;
  }

  async startMon(): Promise<void> {
    const { proc } = await startDaemon('mon', ['mon', '--config', this.configPath], /^tessera-mon: ready /);
    this.mon = this.track(proc);
  }

  /** (Re)starts the config's gateway (a restart reuses its ports: retried while the old sockets linger). */
  async startGateway(): Promise<void> {
    const proc = await startWithPortRetry(() => startDaemon('gateway', ['gateway', '--config', this.configPath], new RegExp(`^${READY_LINE}$`)));
    this.gateway = this.track(proc);
  }

  /**
   * Starts one more gateway on the shared config with its own data dir, free NBD
   * port and (unless iscsi is false) free iSCSI port with target portal group tag
   * `tpgt` (`tessera gateway --gateway-data-dir --nbd-port --iscsi-port --iscsi-tpgt`).
   */
  async addGateway(o: { iscsi?: boolean; tpgt?: number } = {}): Promise<GatewaySlot> {
    const index = this.extraGateways.length + 2;
    const slot = { index, name: `gateway.${index}`, dataDir: path.join(this.dir, `gateway.${index}`), nbdPort: 0, iscsiPort: null, tpgt: o.tpgt ?? index } as GatewaySlot;
    this.extraGateways.push(slot);
    slot.nbdPort = await freePort();
    if (o.iscsi !== false) slot.iscsiPort = await freePort();
    await this.runGateway(slot);
    return slot;
  }

  /** (Re)starts the gateway of `slot` on its data dir and ports. */
  async runGateway(slot: GatewaySlot): Promise<void> {
    const args = [
      'gateway',
      '--config',
      this.configPath,
      '--gateway-data-dir',
      slot.dataDir,
      '--nbd-port',
      String(slot.nbdPort),
      '--iscsi-port',
      slot.iscsiPort === null ? 'off' : String(slot.iscsiPort),
      '--iscsi-tpgt',
      String(slot.tpgt),
    ];
    slot.proc = this.track(await startWithPortRetry(() => startDaemon(slot.name, args, new RegExp(`^${READY_LINE}$`))));
  }

  /** Starts a new OSD (next index, new data dir, a free port). */
  async addOsd(): Promise<OsdSlot> {
    // Claim the index synchronously: several addOsd() calls may run concurrently.
    const index = this.osds.length + 1;
    const slot = { index, id: 0, port: 0, dataDir: path.join(this.dir, `osd.${index}`) } as OsdSlot;
    this.osds.push(slot);
    slot.port = await freePort();
    await this.runOsd(slot);
    return slot;
  }

  /** (Re)starts the OSD of `slot` on its data dir and port. */
  async runOsd(slot: OsdSlot): Promise<void> {
    const name = `osd[${slot.index}]`;
    const args = ['osd', 'run', '--config', this.configPath, '--osd-data-dir', slot.dataDir, '--osd-port', String(slot.port)];
    let started: { proc: Proc; line: string } | undefined;
    // A restart reuses the port: the killed process's socket may linger a moment.
    for (let attempt = 1; started === undefined; attempt++) {
      try {
        started = await startDaemon(name, args, /^tessera-osd: ready osd\.\d+ /, undefined, undefined, this.opts.osdEnv);
      } catch (err) {
        if (attempt >= 3 || !/EADDRINUSE|in use/i.test((err as Error).message)) throw err;
        await sleep(500 * attempt);
      }
    }
    this.track(started.proc);
    const id = Number(/osd\.(\d+)/.exec(started.line)![1]);
    if (slot.id !== 0 && slot.id !== id) throw new Error(`${name} restarted on ${slot.dataDir} as osd.${id}, expected osd.${slot.id}:\n${started.proc.describe()}`);
    slot.id = id;
    slot.proc = started.proc;
    started.proc.name = `osd.${id} (data dir osd.${slot.index})`;
  }

  osdById(id: number): OsdSlot {
    const s = this.osds.find((o) => o.id === id);
    if (!s) throw new Error(`no OSD with id ${id} in this fixture (have ${this.osds.map((o) => o.id).join(', ')})`);
    return s;
  }

  /** `node bin/tessera.js ARGS`. */
  cli(args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<RunResult> {
    return run(process.execPath, [TESSERA_BIN, ...args], { timeoutMs, cwd: REPO_ROOT });
  }

  async getJson<T>(route: string): Promise<T> {
    const res = await fetch(`http://${this.monAddr}${route}`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`GET ${route}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }
  status(): Promise<ClusterStatus> {
    return this.getJson<ClusterStatus>('/v1/status');
  }
  map(): Promise<ClusterMap> {
    return this.getJson<ClusterMap>('/v1/map');
  }

  /**
   * Polls `probe` every intervalMs until it returns a non-undefined value; after
   * deadlineMs throws naming `what`, the last value/error and every daemon's tail.
   */
  async waitFor<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>, intervalMs = 250): Promise<T> {
    const t0 = Date.now();
    let last = '(no probe finished)';
    for (;;) {
      try {
        const v = await probe();
        if (v !== undefined) return v;
        last = 'condition false';
      } catch (err) {
        last = `probe failed: ${(err as Error).message}`;
      }
      if (Date.now() - t0 > deadlineMs) {
        let status = '';
        try {
          status = JSON.stringify(await this.status());
        } catch (err) {
          status = `status unavailable: ${(err as Error).message}`;
        }
        throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}; last: ${last}\nlast status: ${status}\n${this.dump()}`);
      }
      await sleep(intervalMs);
    }
  }

  /** Waits for HEALTH_OK with every PG active (and `extra`, if given). */
  async waitHealthy(what: string, deadlineMs: number, extra?: (s: ClusterStatus) => boolean): Promise<ClusterStatus> {
    return this.waitFor(what, deadlineMs, async () => {
      const s = await this.status();
      const pgTotal = s.pools.reduce((n, p) => n + p.pgCount, 0);
      const ok = s.health === 'HEALTH_OK' && pgTotal > 0 && (s.pgStates.active ?? 0) === pgTotal && (extra === undefined || extra(s));
      return ok ? s : undefined;
    });
  }

  /**
   * Like waitFor, but `probe` must hold on every poll for holdMs in a row: the
   * monitor's PG states come from OSD reports sent every second, so right after
   * a map change a state can still describe the previous map. Returns the last
   * value and the changes of `describe(value)` seen meanwhile (for logs).
   */
  async waitStable<T>(what: string, deadlineMs: number, holdMs: number, probe: () => Promise<T | undefined>, describe: (v: T | undefined) => string): Promise<{ value: T; seen: string[] }> {
    const t0 = Date.now();
    const seen: string[] = [];
    let since: number | null = null;
    return this.waitFor(`${what} (held ${holdMs} ms)`, deadlineMs, async () => {
      let v: T | undefined;
      let label: string;
      try {
        v = await probe();
        label = describe(v);
      } catch (err) {
        label = `error: ${(err as Error).message}`;
      }
      const t = Date.now();
      if (seen.length === 0 || !seen[seen.length - 1].endsWith(` ${label}`)) seen.push(`+${((t - t0) / 1000).toFixed(1)}s ${label}`);
      if (v === undefined) {
        since = null;
        return undefined;
      }
      since ??= t;
      return t - since >= holdMs ? { value: v, seen } : undefined;
    }, 200);
  }

  /** The last lines of every daemon's output, for failure messages. */
  dump(lines = 25): string {
    return ['##### daemon output (tails) #####', ...this.history.map((p) => p.describe(lines))].join('\n');
  }

  /** Stops every process by PID (SIGCONT first if stopped) and removes the temp dir. Never throws. */
  async dispose(): Promise<void> {
    await Promise.all(this.history.map((p) => p.stop().catch(() => undefined)));
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
  }
}

/** Runs `start`, again (up to 3 times) while it fails with the port of a just-killed process still in use. */
async function startWithPortRetry(start: () => Promise<{ proc: Proc }>): Promise<Proc> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await start()).proc;
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|in use/i.test((err as Error).message)) throw err;
      await sleep(500 * attempt);
    }
  }
}

export interface LeaderProbe {
  /** The one OSD that answered OK as the PG's leader, else null. */
  leader: number | null;
  /** The most common leader hint of the others (may name a stopped or deposed leader). */
  hinted: number | null;
  /** Per OSD of the acting set: what it said (for failure messages). */
  answers: string[];
}

/**
 * Which OSD leads PG `pg` right now, asked of the OSDs themselves: a BlockStatus
 * request is answered only by the PG's raft leader (others say NotLeader with a
 * hint): `leader` is the one OSD that answered OK, null when none (or two: a
 * deposed leader not told yet) did, e.g. mid-election.
 */
export async function probeLeader(map: ClusterMap, poolId: number, pg: number, volumeId: number, objectOffsetBytes: number, timeoutMs = 1000): Promise<LeaderProbe> {
  const rec = map.pgs[String(poolId)]?.[pg];
  if (!rec) throw new Error(`PG ${poolId}.${pg} not in map epoch ${map.epoch}`);
  const hints = new Map<number, number>();
  // A fresh connection pool per probe: no state carried over from a killed OSD's old socket.
  const transport = new RpcOsdTransport();
  const answers: string[] = [];
  const oks = await Promise.all(
    rec.osds.map(async (id) => {
      const o = map.osds.find((x) => x.id === id);
      if (!o) {
        answers.push(`osd.${id}: not in map`);
        return null;
      }
      try {
        const resp = await transport.request(
          { id, addr: o.addr, port: o.port },
          { method: Method.BlockStatus, poolId, pg, pgEpoch: rec.epoch, volumeId, offsetBytes: objectOffsetBytes, lengthBytes: 4096 },
          timeoutMs,
        );
        if (resp.status === Status.Ok) {
          answers.push(`osd.${id}: OK (leader)`);
          return id;
        }
        answers.push(`osd.${id}: status ${resp.status} hint ${resp.leaderHint ?? '-'} (${resp.message})`);
        if (resp.status === Status.NotLeader && resp.leaderHint) hints.set(resp.leaderHint, (hints.get(resp.leaderHint) ?? 0) + 1);
      } catch (err) {
        answers.push(`osd.${id}: ${(err as Error).message}`);
      }
      return null;
    }),
  ).finally(() => transport.close().catch(() => undefined));
  const ok = oks.filter((a): a is number => a !== null);
  answers.sort();
  let hinted: number | null = null;
  for (const [id, n] of hints) if (hinted === null || n > (hints.get(hinted) ?? 0)) hinted = id;
  return { leader: ok.length === 1 ? ok[0] : null, hinted, answers };
}

/** PIDs of the live direct children of `pid` (Linux /proc). */
export async function childPids(pid: number): Promise<number[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may contain spaces, so parse after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === pid) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** True while a process with this PID exists and is not a zombie. */
export async function pidAlive(pid: number): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
