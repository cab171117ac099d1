// A minimal JSON-over-HTTP client on node:http, for the management API: it
// talks to the daemon over its unix socket (or 127.0.0.1:PORT). Kept in io/node
// because only io/ touches the network. api/client.ts builds typed calls on it.
//
// Invariants: every request has a timeout; a response body larger than
// RESPONSE_BYTES_MAX is refused before it is buffered; connection failures reach
// the caller as the raw Node error (code ENOENT, ECONNREFUSED, ...) so the
// caller can tell "daemon not running" apart from an API error.
import http from 'node:http';

const RESPONSE_BYTES_MAX = 16 * 1024 * 1024;

export type HttpTarget = { socketPath: string } | { host: string; port: number };

export interface HttpJsonResponse {
  status: number;
  /** Parsed JSON, or undefined for an empty body. */
  body: unknown;
}

export class HttpTransportError extends Error {
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HttpTransportError';
  }
}

export function httpJson(
  target: HttpTarget,
  method: string,
  path: string,
  body: unknown,
  opts: { timeoutMs: number; headers?: Record<string, string> },
): Promise<HttpJsonResponse> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let total = 0;
      res.on('data', (chunk: Buffer) => {
        total += chunk.length;
        if (total > RESPONSE_BYTES_MAX) {
          req.destroy(new HttpTransportError(`response larger than ${RESPONSE_BYTES_MAX} bytes`, 'ERESPONSETOOLARGE'));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (text.length === 0) return resolve({ status: res.statusCode ?? 0, body: undefined });
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
        } catch (err) {
          reject(new HttpTransportError(`response is not JSON (HTTP ${res.statusCode}): ${text.slice(0, 200)}`, 'EBADRESPONSE', { cause: err }));
        }
      });
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs, () => req.destroy(new HttpTransportError(`no answer within ${opts.timeoutMs} ms`, 'ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(err instanceof HttpTransportError ? err : new HttpTransportError(err.message, err.code ?? 'EUNKNOWN', { cause: err }));
    });
    req.end(payload);
  });
}
