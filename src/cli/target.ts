// Where the CLI finds the daemon's API socket. Precedence (first wins):
//   1. --socket PATH
//   2. --data-dir DIR            → the socket that config resolves for DIR
//   3. TESSERA_SOCKET env var
//   4. --config FILE             → its api.socket, or <its dataDir>/tessera.sock
//   5. ./tessera-data/tessera.sock (the default data dir)
// Flags beat the environment, and the environment beats files, as usual.
import path from 'node:path';
import { ApiClient } from '../api/client.js';
import { readConfigFileText } from '../io/node/api-files.js';
import { resolveConfig } from '../main/config.js';
import type { CliIo } from './io.js';

export interface GlobalOptions {
  dataDir?: string;
  socket?: string;
  config?: string;
}

export function resolveSocketPath(g: GlobalOptions, io: Pick<CliIo, 'env' | 'cwd'>): string {
  if (g.socket !== undefined) return path.resolve(io.cwd, g.socket);
  const envSocket = io.env.TESSERA_SOCKET;
  if (g.dataDir === undefined && envSocket !== undefined && envSocket !== '') return path.resolve(io.cwd, envSocket);
  const file = g.config === undefined ? undefined : { path: g.config, text: readConfigFileText(path.resolve(io.cwd, g.config)) };
  return resolveConfig({ cwd: io.cwd, file, flags: { dataDir: g.dataDir } }).api.socket;
}

export function clientFor(g: GlobalOptions, io: Pick<CliIo, 'env' | 'cwd'>): ApiClient {
  return new ApiClient({ target: { socketPath: resolveSocketPath(g, io) } });
}
