// parseHostPort: the one host:port parser of configs, flags and the map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostPort } from './host-port.js';
import { isTesseraError } from './errors.js';

test('parseHostPort: names, IPv4, bracketed IPv6; bad forms are ERR_INVALID naming what was parsed', () => {
  assert.deepEqual(parseHostPort('mon-1.example.org:6780'), { host: 'mon-1.example.org', port: 6780 });
  assert.deepEqual(parseHostPort('10.0.0.1:1'), { host: '10.0.0.1', port: 1 });
  assert.deepEqual(parseHostPort('[fe80::1]:65535'), { host: 'fe80::1', port: 65535 });
  for (const bad of ['nohost', 'h:0', 'h:65536', ':80', '[::1]80', 'fe80::1:80', 'a b:1', 'h:-1']) {
    assert.throws(() => parseHostPort(bad, 'monitor address'), (e: unknown) => isTesseraError(e, 'ERR_INVALID') && /bad monitor address/.test((e as Error).message), bad);
  }
});
