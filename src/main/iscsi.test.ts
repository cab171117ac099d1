// IscsiService (main/iscsi.ts): target changes are in iscsi.json before they are
// answered and survive a restart; bad requests change nothing; a damaged
// iscsi.json stops the start naming the file and is left as it was.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LocalPrStore } from '../gateway/scsi/pr-store-local.js';
import { isTesseraError } from '../stdx/errors.js';
import { MemoryVolumeStore } from '../volume/memory.js';
import { IscsiService } from './iscsi.js';

const code = (c: string) => (e: unknown) => isTesseraError(e) && e.code === c;

async function start(dir: string, store: MemoryVolumeStore): Promise<IscsiService> {
  return IscsiService.start({ dataDir: dir, host: '127.0.0.1', port: 0, store, prStore: new LocalPrStore({ dataDir: dir }), clusterId: 'test', log: () => {} });
}

test('target changes persist across a restart; bad requests are refused with stable codes and change nothing', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-iscsi-svc-'));
  const store = new MemoryVolumeStore();
  await store.create('db', 1 << 20);
  try {
    let svc = await start(dir, store);
    await svc.createTarget({ name: 'iqn.2026-11.com.example:db', initiators: ['iqn.1994-05.com.redhat:h1'], chap: { user: 'h1', secret: 'a-long-enough-secret' } });
    await svc.mapLun('iqn.2026-11.com.example:db', 'db', 4);
    const before = readFileSync(path.join(dir, 'iscsi.json'), 'utf8');
    await assert.rejects(svc.createTarget({ name: 'not-an-iqn' }), code('ERR_INVALID'));
    await assert.rejects(svc.createTarget({ name: 'iqn.2026-11.com.example:db' }), code('ERR_EXISTS'));
    await assert.rejects(svc.mapLun('iqn.2026-11.com.example:db', 'nope'), code('ERR_NOT_FOUND'));
    await assert.rejects(svc.mapLun('iqn.2026-11.com.example:other', 'db'), code('ERR_NOT_FOUND'));
    await assert.rejects(svc.setChap('iqn.2026-11.com.example:db', { user: 'h1', secret: 'short' }), code('ERR_INVALID'));
    await assert.rejects(svc.deleteTarget('iqn.2026-11.io.tessera:default'), code('ERR_INVALID'));
    assert.equal(readFileSync(path.join(dir, 'iscsi.json'), 'utf8'), before, 'refused requests left iscsi.json as it was');
    // Concurrent changes do not lose each other.
    await Promise.all([svc.setInitiators('iqn.2026-11.com.example:db', ['iqn.1994-05.com.redhat:h2']), svc.unmapLun('iqn.2026-11.com.example:db', 4)]);
    await svc.close();
    svc = await start(dir, store);
    const t = svc.list().targets.find((x) => x.name === 'iqn.2026-11.com.example:db')!;
    assert.deepEqual([t.luns, t.initiators, t.chap], [[], ['iqn.1994-05.com.redhat:h2'], { user: 'h1' }]);
    assert.deepEqual(svc.list().targets.find((x) => x.isDefault)?.luns.map((l) => l.volume), ['db']);
    await svc.close();
    // A damaged file stops the start, names the file, and is not rewritten.
    writeFileSync(path.join(dir, 'iscsi.json'), '{"version": 1, "targets": [');
    await assert.rejects(start(dir, store), (e) => code('ERR_FORMAT')(e) && (e as Error).message.includes(path.join(dir, 'iscsi.json')));
    assert.equal(readFileSync(path.join(dir, 'iscsi.json'), 'utf8'), '{"version": 1, "targets": [');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
