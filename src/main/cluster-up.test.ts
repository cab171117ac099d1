// `tessera up --osds N` hands its flags to the gateway through the cluster
// config file it writes: what the file says, and that the gateway's daemon
// config (cluster-config -> config) keeps it. Pure: no process is started.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveClusterConfig } from './cluster-config.js';
import { clusterUpConfigFile, gatewayDaemonConfig, type ClusterUpOptions } from './cluster-up.js';

function options(over: Partial<ClusterUpOptions> = {}): ClusterUpOptions {
  return {
    dataDir: '/srv/t',
    osds: 3,
    monPort: 6780,
    osdPortBase: 6800,
    nbd: { host: '127.0.0.1', port: 10809 },
    iscsi: { host: '127.0.0.1', port: 3260 },
    idlePollUs: 100,
    deviceSizeBytes: 2 ** 30,
    directIo: 'off',
    volume: { name: 'vol0', sizeBytes: 2 ** 30 },
    ...over,
  };
}

/** The file as the daemons read it: written as JSON, resolved relative to the data dir. */
function throughFile(o: ClusterUpOptions) {
  const text = JSON.stringify(clusterUpConfigFile(o));
  return resolveClusterConfig({ cwd: '/elsewhere', file: { path: `${o.dataDir}/cluster.json`, text } });
}

test('up --osds N: the gateway gets the idle polling window, the ports and the pool size from the file', () => {
  for (const idlePollUs of [0, 100, 2500]) {
    const cfg = throughFile(options({ idlePollUs, iscsi: { host: '127.0.0.1', port: null } }));
    assert.equal(cfg.gateway.idlePollUs, idlePollUs);
    assert.equal(cfg.gateway.iscsi.port, null, 'iSCSI off travels as "off"');
    assert.equal(cfg.gateway.dataDir, '/srv/t/gateway');
    const daemon = gatewayDaemonConfig(cfg, '/elsewhere');
    assert.equal(daemon.gateway.idlePollUs, idlePollUs);
    assert.equal(daemon.iscsi.port, null);
    assert.deepEqual(daemon.nbd, { host: '127.0.0.1', port: 10809 });
  }
  const one = throughFile(options({ osds: 1 }));
  assert.deepEqual([one.defaultPool.size, one.defaultPool.minSize], [1, 1]);
  const three = throughFile(options());
  assert.deepEqual([three.defaultPool.size, three.defaultPool.minSize, three.defaultPool.failureDomain], [3, 2, 'osd']);
});
