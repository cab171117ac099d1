// The Tessera version reported by `tessera --version` and GET /v1/status.
// Kept equal to package.json's "version" (a test checks it), so that no
// runtime code has to read package.json from disk.
export const TESSERA_VERSION = '0.1.0';
