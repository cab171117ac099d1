// The iSCSI target configuration (targets.ts): validation, edits, the default
// target's stable LUNs, and iscsi.json parsing that names the bad field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isTesseraError } from '../../stdx/errors.js';
import { DEFAULT_TARGET_NAME, checkIscsiName, createTarget, deleteTarget, emptyIscsiConfig, formatIscsiConfig, mapLun, parseIscsiConfig, setChap, syncDefaultLuns, unmapLun } from './targets.js';

const code = (c: string) => (e: unknown) => isTesseraError(e) && e.code === c;

test('RFC 7143 §4.2.7: iqn., eui. and naa. names are accepted; others are not', () => {
  for (const ok of ['iqn.2026-11.io.tessera:default', 'iqn.1994-05.com.redhat:abc', 'eui.0123456789ABCDEF', 'naa.52004567BA64678D']) checkIscsiName(ok, 'target');
  for (const bad of ['', 'iqn.26-11.x', 'iqn.2026-11.Upper:x', 'target0', 'iqn.2026-11.x:has space', 'eui.123']) assert.throws(() => checkIscsiName(bad, 'target'), code('ERR_INVALID'), bad);
});

test('the default target keeps each volume’s LUN; new volumes get the next LUN up, so a deleted volume’s LUN is not reused (review #5)', () => {
  let { cfg, changed } = syncDefaultLuns(emptyIscsiConfig(), [30, 10, 20]);
  assert.ok(changed);
  assert.deepEqual(cfg.defaultLuns, [{ lun: 0, volumeId: 10 }, { lun: 1, volumeId: 20 }, { lun: 2, volumeId: 30 }]);
  ({ cfg, changed } = syncDefaultLuns(cfg, [10, 30]));
  assert.ok(changed);
  assert.deepEqual(cfg.defaultLuns, [{ lun: 0, volumeId: 10 }, { lun: 2, volumeId: 30 }], 'volume 30 keeps LUN 2');
  ({ cfg } = syncDefaultLuns(cfg, [10, 30, 40]));
  assert.deepEqual(cfg.defaultLuns.find((m) => m.volumeId === 40), { lun: 3, volumeId: 40 }, 'LUN 1 (volume 20) is not handed out again');
  assert.equal(syncDefaultLuns(cfg, [10, 30, 40]).changed, false);
  // Once every LUN was used, the lowest free one is reused.
  const full = syncDefaultLuns({ ...cfg, defaultNextLun: 16384 }, [10, 30, 40, 50]).cfg;
  assert.deepEqual(full.defaultLuns.find((m) => m.volumeId === 50), { lun: 1, volumeId: 50 });
});

test('targets: create, map, unmap, delete; duplicates, limits and the default target are refused with stable codes', () => {
  let cfg = createTarget(emptyIscsiConfig(), { name: 'iqn.2026-11.com.example:db', initiators: ['iqn.1994-05.com.redhat:h1', 'iqn.1994-05.com.redhat:h1'] });
  assert.deepEqual(cfg.targets[0].initiators, ['iqn.1994-05.com.redhat:h1']);
  assert.throws(() => createTarget(cfg, { name: 'iqn.2026-11.com.example:db' }), code('ERR_EXISTS'));
  assert.throws(() => createTarget(cfg, { name: DEFAULT_TARGET_NAME }), code('ERR_EXISTS'));
  let r = mapLun(cfg, 'iqn.2026-11.com.example:db', 7);
  assert.equal(r.lun, 0);
  r = mapLun(r.cfg, 'iqn.2026-11.com.example:db', 8, 5);
  assert.equal(r.lun, 5);
  assert.throws(() => mapLun(r.cfg, 'iqn.2026-11.com.example:db', 9, 5), code('ERR_EXISTS'));
  assert.throws(() => mapLun(r.cfg, 'iqn.2026-11.com.example:db', 7), code('ERR_EXISTS'));
  assert.throws(() => mapLun(r.cfg, 'iqn.2026-11.com.example:db', 9, 16384), code('ERR_INVALID'));
  cfg = unmapLun(r.cfg, 'iqn.2026-11.com.example:db', 0);
  assert.deepEqual(cfg.targets[0].luns, [{ lun: 5, volumeId: 8 }]);
  assert.throws(() => deleteTarget(cfg, DEFAULT_TARGET_NAME), code('ERR_INVALID'));
  assert.equal(deleteTarget(cfg, 'iqn.2026-11.com.example:db').targets.length, 0);
});

test('RFC 7143 §12.1.3: CHAP secrets under 12 bytes, mutual without a secret, and equal secrets are refused', () => {
  const cfg = createTarget(emptyIscsiConfig(), { name: 'iqn.2026-11.com.example:db' });
  assert.throws(() => setChap(cfg, 'iqn.2026-11.com.example:db', { user: 'u', secret: 'short' }), /at least 12/);
  assert.throws(() => setChap(cfg, 'iqn.2026-11.com.example:db', { user: 'u', secret: 'long-enough-1', mutualUser: 't' }), /both a user and a secret/);
  assert.throws(() => setChap(cfg, 'iqn.2026-11.com.example:db', { user: 'u', secret: 'long-enough-1', mutualUser: 't', mutualSecret: 'long-enough-1' }), /must differ/);
  assert.equal(setChap(cfg, DEFAULT_TARGET_NAME, { user: 'u', secret: 'long-enough-1' }).defaultChap?.user, 'u');
});

test('iscsi.json round-trips; damage is ERR_FORMAT naming the file and the field', () => {
  const cfg = mapLun(createTarget(emptyIscsiConfig(), { name: 'iqn.2026-11.com.example:db' }), 'iqn.2026-11.com.example:db', 3).cfg;
  assert.deepEqual(parseIscsiConfig(formatIscsiConfig(cfg), 'f'), cfg);
  assert.throws(() => parseIscsiConfig('{', '/d/iscsi.json'), (e) => code('ERR_FORMAT')(e) && /\/d\/iscsi\.json: not JSON/.test((e as Error).message));
  assert.throws(() => parseIscsiConfig(JSON.stringify({ ...cfg, targets: [{ ...cfg.targets[0], luns: [{ lun: 1, volumeId: 1 }, { lun: 1, volumeId: 2 }] }] }), 'f'), /LUN 1 is mapped twice/);
  assert.throws(() => parseIscsiConfig(JSON.stringify({ ...cfg, extra: 1 }), 'f'), code('ERR_FORMAT'));
});
