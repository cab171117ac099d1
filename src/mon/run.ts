// startMonitor: wiring for one monitor daemon (`tessera mon`, SPEC CLU1/CLU8) —
// opens its MetaStore (embedded file in dataDir, or etcd), listens for the HTTP
// API, then stands for election. Logic lives in service.ts; this file only
// connects the parts and tears them down in reverse order.
//
// Stored keys: see map-repo.ts. The embedded store's file is
// <dataDir>/EMBEDDED_STORE_FILE.
//
// Invariants:
// - The API listens before the monitor campaigns, so the address it advertises
//   in the election (and hands to clients in 503 answers) is already serving.
// - close() stops the HTTP server, leaves the election (a standby takes over
//   at once), then closes the store; it is idempotent.
// - A failure while starting releases whatever was already opened.
import * as os from 'node:os';
import { join } from 'node:path';
import { TesseraError } from '../stdx/errors.js';
import type { Logger } from '../stdx/log.js';
import type { Clock } from '../io/clock.js';
import { ensureDir } from '../io/node/api-files.js';
import type { MetaStore } from './store.js';
import { EmbeddedStore } from './embedded-store.js';
import { EtcdStore } from './etcd-store.js';
import type { PoolCreateRequest } from './api-types.js';
import { MonService } from './service.js';
import { listenMonHttp, type MonHttpServer } from './http.js';

export const EMBEDDED_STORE_FILE = 'mon-store.log';

export interface StartMonitorOptions {
  /** Monitor id (unique among the cluster's monitors). */
  id: string;
  /** Listen address; default 127.0.0.1 (loopback unless configured otherwise). */
  host?: string;
  /** Listen port; 0 picks a free one (see the returned port). */
  port: number;
  /** Address other daemons use to reach this monitor; default host (127.0.0.1 for a wildcard host). */
  advertiseHost?: string;
  /** Embedded store: its directory (single-monitor clusters). Used when etcdEndpoints is empty or absent. */
  dataDir?: string;
  /** etcd store: client URLs such as http://127.0.0.1:2379. Non-empty: etcd is used (and dataDir is not). */
  etcdEndpoints?: string[];
  /** Key prefix in etcd; default 'tessera/'. */
  etcdPrefix?: string;
  osdDownAfterMs?: number;
  osdOutAfterMs?: number;
  tickMs?: number;
  electionTtlMs?: number;
  /** Gateway lease for persistent reservations; default 3000 ms (pr-service.ts). */
  prLeaseMs?: number;
  /** Created with the first map of a new cluster; default rbd, size 3, minSize 2, 64 PGs; null for none. */
  initialPool?: PoolCreateRequest | null;
  /** When set, every API request needs `Authorization: Bearer <authToken>`. */
  authToken?: string;
  clock?: Clock;
  log?: Logger;
}

export interface RunningMonitor {
  readonly port: number;
  /** "host:port" advertised to clients. */
  readonly addr: string;
  readonly service: MonService;
  readonly store: MetaStore;
  close(): Promise<void>;
}

export async function startMonitor(opts: StartMonitorOptions): Promise<RunningMonitor> {
  const useEtcd = opts.etcdEndpoints !== undefined && opts.etcdEndpoints.length > 0;
  if (!useEtcd && opts.dataDir === undefined) {
    throw new TesseraError('ERR_INVALID', 'a monitor needs a dataDir (embedded store) or etcd endpoints');
  }
  const log = opts.log;
  let store: MetaStore;
  if (useEtcd) {
    store = await EtcdStore.connect({ endpoints: opts.etcdEndpoints ?? [], prefix: opts.etcdPrefix });
  } else {
    const dataDir = opts.dataDir ?? '';
    await ensureDir(dataDir);
    store = await EmbeddedStore.open(join(dataDir, EMBEDDED_STORE_FILE));
  }
  const storeDesc = useEtcd ? `etcd ${opts.etcdEndpoints?.join(',')}` : `embedded store in ${opts.dataDir}`;
  let service: MonService | undefined;
  let http: MonHttpServer | undefined;
  try {
    service = new MonService({
      store,
      id: opts.id,
      clock: opts.clock,
      osdDownAfterMs: opts.osdDownAfterMs,
      osdOutAfterMs: opts.osdOutAfterMs,
      tickMs: opts.tickMs,
      electionTtlMs: opts.electionTtlMs,
      prLeaseMs: opts.prLeaseMs,
      initialPool: opts.initialPool,
      log,
    });
    http = await listenMonHttp({ service, host: opts.host, port: opts.port, authToken: opts.authToken, log });
    const wildcard = http.host === '0.0.0.0' || http.host === '::';
    const advertiseHost = opts.advertiseHost ?? (wildcard ? firstExternalAddress() ?? '127.0.0.1' : http.host);
    const addr = advertiseHost.includes(':') ? `[${advertiseHost}]:${http.port}` : `${advertiseHost}:${http.port}`;
    service.start(addr);
    log?.info(`monitor ${opts.id} listening on ${http.host}:${http.port} (${storeDesc})`);
    let closing: Promise<void> | null = null;
    const svc = service;
    const srv = http;
    return {
      port: srv.port,
      addr,
      service: svc,
      store,
      close: () => {
        closing ??= (async () => {
          await srv.close().catch(() => undefined);
          await svc.close();
          await store.close();
          log?.info(`monitor ${opts.id} stopped`);
        })();
        return closing;
      },
    };
  } catch (err) {
    await http?.close().catch(() => undefined);
    await service?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }
}

/**
 * A monitor listening on every address advertises (to standbys' clients, as the
 * active monitor's address) this machine's first non-loopback IPv4 address, so
 * that a client on another machine is not sent to 127.0.0.1; `mon.advertiseHost`
 * in the cluster config overrides it.
 */
function firstExternalAddress(): string | null {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return null;
}
